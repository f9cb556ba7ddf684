//! Apply, the fourth step of a reconcile: the desired children go to their pools' clusters
//! through the one applier (memo, server-side apply), stranded workloads outside the plan are
//! scaled in, and one sweep deletes the labelled children of the deployment that the desired set
//! does not keep, Deployments, Services and Secrets alike. A cluster that fails does not stop the
//! others; pools cut off are sent nothing and not swept.

use super::build::Desired;
use super::decide::Decision;
use super::observe::Observed;
use super::stranded::StrandedOutcome;
use crate::api::{ComputePool, ModelDeployment};
use crate::estate::Estate;
use crate::operator::context::Context;
use crate::operator::error::Error;
use crate::operator::kubernetes::applier::{
    Applier, ChildId, SweepMode, SweepTarget, sweep_cluster,
};
use crate::operator::kubernetes::clusters::ClusterClient;
use crate::operator::kubernetes::memo::content_hash;
use crate::operator::kubernetes::metrics::PoolLabels;
use crate::operator::kubernetes::names::{DEPLOYMENT_MANAGER, children_selector, target_namespace};
use crate::operator::kubernetes::retry::idempotent;
use crate::operator::kubernetes::views::Written;
use crate::operator::rollout::step::Serving;
use crate::operator::traffic::decide::VersionSplit;
use crate::operator::traffic::{Io, TrafficReport};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How long a child's watch may lag behind this operator's own apply of it before the apply is
/// repeated.
const WATCH_GRACE: Duration = Duration::from_secs(10);

/// What failed while applying; the first failure is the reconcile's error (after its report).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the cluster of pool {pool}")]
    Cluster {
        pool: String,
        #[source]
        source: Error,
    },
    #[error("applying {kind} {namespace}/{name} in pool {pool}'s cluster")]
    Child {
        kind: &'static str,
        namespace: String,
        name: String,
        pool: String,
        #[source]
        source: Error,
    },
    #[error("scaling in the stranded workload of {component} in pool {pool}")]
    Scale {
        pool: String,
        component: String,
        #[source]
        source: Error,
    },
    #[error("sweeping the children of a deleted deployment")]
    Sweep(#[source] Error),
}

impl ApplyError {
    /// The underlying error.
    pub fn cause(&self) -> &Error {
        match self {
            ApplyError::Cluster { source, .. }
            | ApplyError::Child { source, .. }
            | ApplyError::Scale { source, .. }
            | ApplyError::Sweep(source) => source,
        }
    }
}

/// What applying did.
pub struct Applied {
    /// Ready replicas per (component, pool) of the children applied (or unchanged).
    pub ready: BTreeMap<(String, String), u32>,
    /// The first failure.
    pub error: Option<ApplyError>,
    /// Cross-cluster traffic written after the children (exports, routes): backends, route
    /// outcomes, Events to tell, and when to look again.
    pub traffic: TrafficReport,
}

/// Applies `desired`, scales stranded workloads in, and sweeps what is not kept.
pub async fn apply(
    ctx: &Context,
    md: &ModelDeployment,
    observed: &Observed,
    decision: &Decision,
    desired: &Desired,
) -> Applied {
    let pools = &decision.estate.pools;
    let answering = |pool: &str| observed.reachability.get(pool).is_none_or(Option::is_none);
    let mut clusters: BTreeMap<String, ClusterClient> = BTreeMap::new();
    let mut first_error: Option<ApplyError> = None;
    let wanted: BTreeSet<&str> = desired
        .children
        .iter()
        .map(|c| c.pool.as_str())
        .filter(|pool| answering(pool))
        .collect();
    for pool_name in wanted {
        let Some(pool) = pools.get(pool_name) else {
            continue;
        };
        match ctx.clusters.for_pool(pool).await {
            Ok(cluster) => {
                clusters.insert(pool_name.to_string(), cluster);
            }
            Err(source) => {
                count_remote_error(ctx, pool);
                first_error.get_or_insert(ApplyError::Cluster {
                    pool: pool_name.to_string(),
                    source,
                });
            }
        }
    }
    let to_apply: Vec<(usize, &_, &ClusterClient)> = desired
        .children
        .iter()
        .enumerate()
        .filter_map(|(i, child)| Some((i, child, clusters.get(&child.pool)?)))
        .collect();
    let applier = Applier {
        memo: &ctx.applied,
        field_manager: DEPLOYMENT_MANAGER,
        watch_grace: WATCH_GRACE,
    };
    let pairs: Vec<_> = to_apply
        .iter()
        .map(|(_, child, cluster)| (*child, *cluster))
        .collect();
    let outcomes = applier.apply_children(&pairs).await;
    let mut ready = BTreeMap::new();
    for ((i, child, _), outcome) in to_apply.iter().zip(outcomes) {
        match outcome {
            Ok(n) => {
                // During a rollout both versions' Deployments count for their placement.
                if let Some(placement) = desired.placements.get(i) {
                    *ready.entry(placement.clone()).or_insert(0) += n;
                }
            }
            Err(source) => {
                warn!(pool = child.pool, kind = child.kind.name(), child = child.name, err = %source, "applying to the pool's cluster failed");
                if let Some(pool) = pools.get(&child.pool) {
                    count_remote_error(ctx, pool);
                }
                first_error.get_or_insert(ApplyError::Child {
                    kind: child.kind.name(),
                    namespace: child.namespace.clone(),
                    name: child.name.clone(),
                    pool: child.pool.clone(),
                    source,
                });
            }
        }
    }
    // Rollouts: the route's weights shared between the versions.
    let split = match &decision.rollout.serving {
        Serving::Two {
            old,
            new,
            replicas,
            share,
            ..
        } => Some(VersionSplit {
            old_label: old.label_value().to_string(),
            new: new.clone(),
            share: *share,
            replicas: replicas.clone(),
            ready: observed
                .rollout
                .counts
                .iter()
                .map(|(key, (o, n))| (key.clone(), (o.ready, n.ready)))
                .collect(),
        }),
        Serving::One { .. } => None,
    };
    // Traffic: exports and routes, after the children (their readiness), before the sweep.
    let traffic = ctx
        .traffic
        .after_apply(
            &Io {
                clusters: &ctx.clusters,
                metrics: &ctx.metrics,
            },
            md,
            ctx.traffic_memory(&Estate::key_of(md)),
            pools,
            &decision.plans,
            &decision.traffic.placed,
            &ready,
            &decision.traffic.holds,
            &observed.reachability,
            split.as_ref(),
            Timestamp::now(),
        )
        .await;
    ctx.set_traffic_memory(&Estate::key_of(md), traffic.memory.clone());
    if let Some(err) = scale_stranded(md, ctx, pools, &decision.stranded).await {
        first_error.get_or_insert(err);
    }
    let cut_off: BTreeSet<String> = observed
        .reachability
        .iter()
        .filter(|(_, why)| why.is_some())
        .map(|(pool, _)| pool.clone())
        .collect();
    let swept = sweep(ctx, md, pools, &desired.keep, &cut_off, decision.sweep).await;
    match swept {
        Ok(true) => ctx.set_swept(&Estate::key_of(md), Some(decision.signature)),
        Ok(false) => {}
        Err(err) => warn!(%err, "orphan sweep incomplete; retrying on the next reconcile"),
    }
    Applied {
        ready,
        error: first_error,
        traffic,
    }
}

fn count_remote_error(ctx: &Context, pool: &ComputePool) {
    ctx.metrics
        .remote_errors
        .get_or_create(&PoolLabels {
            pool: pool.name_any(),
            cloud: pool.spec.cloud.to_string(),
        })
        .inc();
}

/// Deletes `md`'s children that `keep` (per pool) does not keep, in every pool's cluster, with
/// `mode` (see `SweepMode`); the clusters of pools in `cut_off` are left alone (their workloads
/// may still be serving; see `stranded`). Clusters are swept at once, each request within its
/// deadline, so one that does not answer holds up neither the others nor the reconcile for
/// long. Returns whether every cluster was swept completely; with `SweepMode::Everything` (a
/// deletion, which must not finish while children may remain) the first error.
pub async fn sweep(
    ctx: &Context,
    md: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    keep: &BTreeMap<String, BTreeSet<ChildId>>,
    cut_off: &BTreeSet<String>,
    mode: SweepMode,
) -> Result<bool, Error> {
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    let labels = children_selector(&namespace, &name);
    // Per cluster: its client, the children kept there, the namespaces where its Secrets may
    // be (those of pools whose store has credentials), and whether a pool there is cut off.
    struct Target {
        cluster: ClusterClient,
        keep: BTreeSet<ChildId>,
        namespaces: BTreeSet<String>,
        cut_off: bool,
    }
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut first_error = None;
    for (pool_name, pool) in pools {
        match ctx.clusters.for_pool(pool).await {
            Ok(cluster) => {
                let target = targets.entry(cluster.id.clone()).or_insert_with(|| Target {
                    cluster,
                    keep: BTreeSet::new(),
                    namespaces: BTreeSet::new(),
                    cut_off: false,
                });
                target.cut_off |= cut_off.contains(pool_name);
                target
                    .keep
                    .extend(keep.get(pool_name).into_iter().flatten().cloned());
                if pool
                    .spec
                    .artifact_store
                    .as_ref()
                    .is_some_and(|s| s.credentials_secret_ref.is_some())
                {
                    target.namespaces.insert(target_namespace(md, pool));
                }
            }
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    let sweeps = targets.values().map(|target| {
        let labels = &labels;
        let owner = (namespace.as_str(), name.as_str());
        async move {
            if target.cut_off && mode != SweepMode::Everything {
                return Ok(false);
            }
            let sweep = SweepTarget {
                cluster: &target.cluster,
                owner,
                selector: labels,
                keep: &target.keep,
                namespaces: &target.namespaces,
            };
            sweep_cluster(&ctx.applied, &sweep, mode).await
        }
    });
    let mut complete = true;
    for result in futures::future::join_all(sweeps).await {
        match result {
            Ok(swept) => complete &= swept,
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) if mode == SweepMode::Everything => Err(err),
        Some(err) => {
            warn!(%err, "orphan sweep incomplete; retrying on the next reconcile");
            Ok(false)
        }
        None => Ok(complete),
    }
}

/// Field manager of the replica changes of stranded workloads outside the plan.
const SCALE_IN_MANAGER: &str = "skybridge.io/stranded-scale-in";

/// Scales the stranded workloads outside the plan to the replicas decided for them (`scale`):
/// only `spec.replicas` changes, so the replicas kept go on serving. Returns the first error.
async fn scale_stranded(
    md: &ModelDeployment,
    ctx: &Context,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    stranded: &StrandedOutcome,
) -> Option<ApplyError> {
    let mut first_error = None;
    for ((component, pool_name), &replicas) in &stranded.scale {
        let Some(pool) = pools.get(pool_name) else {
            continue;
        };
        let result = async {
            let cluster = ctx.clusters.for_pool(pool).await?;
            let namespace = target_namespace(md, pool);
            let name = crate::operator::rollout::children::VersionNames::stable(md)
                .deployment_name(md, component, pool_name);
            let key = (
                cluster.id.clone(),
                "Deployment",
                namespace.clone(),
                name.clone(),
            );
            let content = content_hash(&("scale", replicas));
            if ctx.applied.unchanged(&key, content).is_some() {
                return Ok(());
            }
            info!(
                child = name,
                pool = pool_name,
                replicas,
                "scaling in a stranded workload"
            );
            let api: Api<Written<Deployment>> = Api::namespaced(cluster.client().await, &namespace);
            let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
            let params = PatchParams {
                field_manager: Some(SCALE_IN_MANAGER.into()),
                ..Default::default()
            };
            ctx.applied.forget(&key);
            let scaled = cluster
                .send(idempotent(|| api.patch(&name, &params, &patch)))
                .await;
            match scaled {
                Ok(written) => {
                    ctx.applied
                        .record(key, content, written.metadata.generation);
                    Ok(())
                }
                // Gone meanwhile: the next reconcile ends the entry.
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(err) => Err(Error::from(err)),
            }
        }
        .await;
        if let Err(source) = result {
            warn!(pool = pool_name, err = %source, "scaling in a stranded workload failed");
            first_error.get_or_insert(ApplyError::Scale {
                pool: pool_name.clone(),
                component: component.clone(),
                source,
            });
        }
    }
    first_error
}
