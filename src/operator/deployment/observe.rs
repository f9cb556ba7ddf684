//! Observe, the first step of a reconcile: everything read from the world before deciding
//! (the estate from the caches, validation, demand from Prometheus, which clusters answer,
//! what the children watches see, store credentials). What the demand means for replicas is
//! decided by the shared burst controller (`crate::burst`), in the decide step.

use super::stranded;
use crate::api::{ComputePool, ModelDeployment, StrandedReplicas};
use crate::demand::{Prometheus, expand_query};
use crate::estate::{Estate, validate_deployment};
use crate::operator::context::Context;
use crate::operator::kubernetes::names::target_namespace;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

/// Demand per component with a policy, and what went wrong reading it.
pub struct DemandReading {
    /// `None` for a component whose metric could not be read: the controller's fallback applies.
    pub demand: BTreeMap<String, Option<f64>>,
    /// Failed reads, for Events and logs.
    pub failures: Vec<(String, String)>,
    /// When demand should be read again: the shortest policy interval.
    pub next_read: Duration,
}

fn prometheus() -> &'static Prometheus {
    static CLIENT: OnceLock<Prometheus> = OnceLock::new();
    CLIENT.get_or_init(Prometheus::default)
}

/// Reads the demand of every component of `md` with a policy; at most every `period`.
pub async fn read(period: Duration, estate: &Estate, md: &ModelDeployment) -> DemandReading {
    let mut reading = DemandReading {
        demand: BTreeMap::new(),
        failures: Vec::new(),
        next_read: period,
    };
    let namespace = md.namespace().unwrap_or_default();
    for component in &md.spec.components {
        let Some(policy) = estate.policy_of(component) else {
            continue;
        };
        let metric = &policy.spec.metric;
        reading.next_read = reading
            .next_read
            .min(Duration::from_secs(u64::from(metric.interval_seconds)));
        let query = expand_query(&metric.query, &namespace, &md.name_any(), &component.name);
        match prometheus().instant(&metric.prometheus_url, &query).await {
            Ok(value) => {
                reading.demand.insert(component.name.clone(), Some(value));
            }
            Err(err) => {
                reading.demand.insert(component.name.clone(), None);
                reading
                    .failures
                    .push((component.name.clone(), err.to_string()));
            }
        }
    }
    reading
}

/// What one reconcile reads from the world before it decides: the estate's pools and policies,
/// the deployment's demand, which pools' clusters answer, what the children watches see of its
/// stranded workloads, and the store credentials its pods may need. The only I/O of a
/// reconcile before it applies.
pub struct Observed {
    /// Pools and policies as the caches see them now.
    pub estate: Estate,
    /// What the schema could not check, as `field: message`; empty when valid.
    pub invalid: Vec<String>,
    pub demand: DemandReading,
    /// Per pool, `Some(why)` when its cluster does not answer (see [`reachability`]).
    pub reachability: BTreeMap<String, Option<String>>,
    /// The stranded replicas last decided (memory first, else the status).
    pub stranded_before: Vec<StrandedReplicas>,
    /// Ready replicas per (component, pool) as the children watches see them; `None` where no
    /// watch knows (the status then tells). Read only while stranded replicas are unresolved.
    pub watched_ready: BTreeMap<stranded::Key, Option<u32>>,
    /// The (component, pool)s of unresolved stranded entries in reachable pools whose workload
    /// the children watch knows to be gone (deleted behind the operator's back).
    pub stranded_gone: BTreeSet<stranded::Key>,
    /// The store-credential Secrets pools name, by name in the operator's namespace, as read
    /// (each at most every `CREDENTIALS_RECHECK`); only with managed artifacts.
    pub credentials: BTreeMap<String, Result<Arc<SecretData>, String>>,
    /// Each version's replicas and an analysis round, while a rollout is under way.
    pub rollout: super::rollout::RolloutObserved,
}

/// The data of a Secret.
pub type SecretData = BTreeMap<String, k8s_openapi::ByteString>;

/// Observes everything the decision for `md` needs.
pub async fn observe(ctx: &Context, md: &ModelDeployment) -> Observed {
    let estate = ctx.pools_and_policies();
    let invalid: Vec<String> = validate_deployment(&estate, md)
        .into_iter()
        .map(|i| format!("{}: {}", i.field, i.message))
        .collect();
    if !invalid.is_empty() {
        return Observed {
            estate,
            invalid,
            demand: DemandReading {
                demand: BTreeMap::new(),
                failures: Vec::new(),
                next_read: ctx.settings.period,
            },
            reachability: BTreeMap::new(),
            stranded_before: Vec::new(),
            watched_ready: BTreeMap::new(),
            stranded_gone: BTreeSet::new(),
            credentials: BTreeMap::new(),
            rollout: Default::default(),
        };
    }
    let demand = read(ctx.settings.period, &estate, md).await;
    let reachability = reachability(ctx, &estate.pools).await;
    let stranded_before = ctx.stranded(&Estate::key_of(md)).unwrap_or_else(|| {
        md.status
            .as_ref()
            .map(|s| s.stranded.clone())
            .unwrap_or_default()
    });
    // Readiness matters only to scale stranded workloads in: looked up only then.
    let watched_ready = if stranded_before.iter().any(|e| !stranded::resolved(e)) {
        watched_ready(ctx, md, &estate.pools, &reachability).await
    } else {
        BTreeMap::new()
    };
    let stranded_gone =
        stranded_gone(ctx, md, &estate.pools, &stranded_before, &reachability).await;
    let credentials = match ctx.artifacts {
        Some(_) => credentials(ctx, &estate.pools).await,
        None => BTreeMap::new(),
    };
    let rollout = super::rollout::observe(ctx, md, &estate.pools, &reachability).await;
    Observed {
        estate,
        invalid,
        demand,
        reachability,
        stranded_before,
        watched_ready,
        stranded_gone,
        credentials,
        rollout,
    }
}

/// Per pool, `Some(why)` when its cluster does not answer: the pool controller found it
/// unreachable, or a request of this operator did less than a period ago (the pool's status
/// may lag by up to a period and a probe).
async fn reachability(
    ctx: &Context,
    pools: &BTreeMap<String, Arc<ComputePool>>,
) -> BTreeMap<String, Option<String>> {
    let hold = ctx.settings.period.max(Duration::from_secs(1));
    let mut reachability = BTreeMap::new();
    for (name, pool) in pools {
        let reported = pool
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Reachable"))
            .filter(|c| c.status == "False")
            .map(|c| {
                if c.message.is_empty() {
                    c.reason.clone()
                } else {
                    c.message.clone()
                }
            });
        let why = match reported {
            Some(why) => Some(why),
            None => match ctx.clusters.for_pool(pool).await {
                Ok(cluster) => cluster.down_within(hold),
                Err(_) => None,
            },
        };
        reachability.insert(name.clone(), why);
    }
    reachability
}

/// Ready replicas of each (component, pool) workload as the children watches see them: `None`
/// where no watch knows; none in a pool cut off.
async fn watched_ready(
    ctx: &Context,
    md: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    reachability: &BTreeMap<String, Option<String>>,
) -> BTreeMap<stranded::Key, Option<u32>> {
    let mut ready = BTreeMap::new();
    for (pool_name, pool) in pools {
        let cut_off = reachability.get(pool_name).is_some_and(Option::is_some);
        let observed = match cut_off {
            true => None,
            false => ctx
                .clusters
                .for_pool(pool)
                .await
                .ok()
                .and_then(|c| c.observed.clone()),
        };
        for component in &md.spec.components {
            let key = (component.name.clone(), pool_name.clone());
            let seen = match (&observed, cut_off) {
                (_, true) => Some(0),
                (Some(observed), false) => {
                    let name = crate::operator::rollout::children::VersionNames::stable(md)
                        .deployment_name(md, &component.name, pool_name);
                    Some(
                        observed
                            .get(&target_namespace(md, pool), &name)
                            .map_or(0, |s| s.ready_replicas),
                    )
                }
                (None, false) => None,
            };
            ready.insert(key, seen);
        }
    }
    ready
}

/// The (component, pool)s of unresolved stranded entries in reachable pools whose workload the
/// children watch knows to be gone (deleted behind the operator's back).
async fn stranded_gone(
    ctx: &Context,
    md: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    entries: &[StrandedReplicas],
    reachability: &BTreeMap<String, Option<String>>,
) -> BTreeSet<stranded::Key> {
    let mut gone = BTreeSet::new();
    for entry in entries.iter().filter(|e| !stranded::resolved(e)) {
        let (Some(pool), Some(None)) = (pools.get(&entry.pool), reachability.get(&entry.pool))
        else {
            continue;
        };
        let Ok(cluster) = ctx.clusters.for_pool(pool).await else {
            continue;
        };
        let Some(observed) = cluster.observed.as_ref().filter(|o| o.complete()) else {
            continue;
        };
        let name = crate::operator::rollout::children::VersionNames::stable(md).deployment_name(
            md,
            &entry.component,
            &entry.pool,
        );
        if observed.get(&target_namespace(md, pool), &name).is_none() {
            gone.insert((entry.component.clone(), entry.pool.clone()));
        }
    }
    gone
}

/// The store-credential Secrets the pools name, read from the operator's namespace through the
/// context's short-lived cache. A reference to another namespace is not followed (the build
/// step refuses the copy, see `may_copy_store_credentials`).
async fn credentials(
    ctx: &Context,
    pools: &BTreeMap<String, Arc<ComputePool>>,
) -> BTreeMap<String, Result<Arc<SecretData>, String>> {
    let operator_ns = ctx.clusters.operator_namespace().to_string();
    let names: BTreeSet<String> = pools
        .values()
        .filter_map(|p| {
            p.spec
                .artifact_store
                .as_ref()?
                .credentials_secret_ref
                .as_ref()
        })
        .filter(|r| r.namespace.as_deref().is_none_or(|ns| ns == operator_ns))
        .map(|r| r.name.clone())
        .collect();
    let mut read = BTreeMap::new();
    for name in names {
        let data = ctx
            .source_secrets
            .read(ctx.clusters.local(), &operator_ns, &name)
            .await;
        read.insert(name, data);
    }
    read
}
