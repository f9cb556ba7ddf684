//! A deployment's rollout (issue #17) in the reconcile's steps: what observe reads for it (each
//! version's Deployments per pool, an analysis round when one is due) and the room each pool
//! has for the surge. The decision is `operator::rollout::step::decide_rollout` (pure, over the
//! pure `crate::rollout`); build, apply and report act on its outcome.

use crate::api::{ComputePool, ModelDeployment};
use crate::demand::Prometheus;
use crate::estate::{Estate, per_replica};
use crate::operator::context::Context;
use crate::operator::kubernetes::names::{children_selector, target_namespace};
use crate::operator::rollout::children::VersionNames;
use crate::operator::rollout::inputs::Key;
use crate::operator::rollout::{Intent, canary, intent, measure_round, refused, state_of};
use crate::rollout::{VersionCount, round_due_at};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// What observe reads for a rollout under way.
#[derive(Clone, Debug, Default)]
pub struct RolloutObserved {
    /// Replicas of the old and the new version per (component, pool), by Deployment name (the
    /// own-named Deployment's selector also matches the other version's pods: pods are never
    /// counted by label).
    pub counts: BTreeMap<Key, (VersionCount, VersionCount)>,
    /// The pools whose cluster could not be listed: their counts are unknown (taken as none
    /// ready; the decision then moves no traffic there).
    pub unlisted: Vec<String>,
    /// An analysis round measured now, when one was due.
    pub measured: Vec<crate::api::AnalysisResult>,
}

/// (spec replicas, ready replicas) of each Deployment, by name.
type ReplicasByName = BTreeMap<String, (u32, u32)>;

fn prometheus() -> &'static Prometheus {
    static CLIENT: OnceLock<Prometheus> = OnceLock::new();
    CLIENT.get_or_init(Prometheus::default)
}

/// Whether `md` is in a rollout that runs (or ended and waits) on two versions: the case in which
/// both versions' children are counted and the new model's holds apply to the new version only.
pub fn rolling_out(md: &ModelDeployment) -> bool {
    canary(md).is_some()
        && match intent(md) {
            Intent::Rollout { from, to, previous } => {
                previous.is_some() || refused(&from, &to).is_none()
            }
            Intent::Steady { .. } => false,
        }
}

/// Reads each version's Deployments in every reachable pool's cluster and measures an analysis
/// round if one is due. Nothing is read without a rollout under way.
pub async fn observe(
    ctx: &Context,
    md: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    reachability: &BTreeMap<String, Option<String>>,
) -> RolloutObserved {
    let mut seen = RolloutObserved::default();
    let Intent::Rollout { from, to, previous } = intent(md) else {
        return seen;
    };
    if !rolling_out(md) {
        return seen;
    }
    let old = VersionNames::stable(md);
    let new = VersionNames::keyed(&to);
    let namespace = md.namespace().unwrap_or_default();
    let selector = children_selector(&namespace, &md.name_any());
    // One list per (cluster, namespace): pools may share both.
    let mut listed: BTreeMap<(String, String), Option<ReplicasByName>> = BTreeMap::new();
    for (pool_name, pool) in pools {
        if reachability.get(pool_name).is_some_and(Option::is_some) {
            seen.unlisted.push(pool_name.clone());
            continue;
        }
        let Ok(cluster) = ctx.clusters.for_pool(pool).await else {
            seen.unlisted.push(pool_name.clone());
            continue;
        };
        let target = target_namespace(md, pool);
        let key = (cluster.id.clone(), target.clone());
        if !listed.contains_key(&key) {
            let api: Api<Deployment> = Api::namespaced(cluster.client().await, &target);
            let list = cluster
                .send(api.list(&ListParams::default().labels(&selector)))
                .await
                .ok()
                .map(|list| {
                    list.items
                        .iter()
                        .map(|d| {
                            let replicas = d.spec.replicas.unwrap_or(1).max(0) as u32;
                            let ready = d
                                .status
                                .as_ref()
                                .and_then(|s| s.ready_replicas)
                                .unwrap_or(0)
                                .max(0) as u32;
                            (d.name_any(), (replicas, ready.min(replicas)))
                        })
                        .collect()
                });
            listed.insert(key.clone(), list);
        }
        let Some(Some(deployments)) = listed.get(&key) else {
            seen.unlisted.push(pool_name.clone());
            continue;
        };
        for component in &md.spec.components {
            let count = |names: &VersionNames| {
                deployments
                    .get(&names.deployment_name(md, &component.name, pool_name))
                    .map(|&(current, ready)| VersionCount { current, ready })
                    .unwrap_or_default()
            };
            let (o, n) = (count(&old), count(&new));
            if o.current > 0 || n.current > 0 || o.ready > 0 || n.ready > 0 {
                seen.counts
                    .insert((component.name.clone(), pool_name.clone()), (o, n));
            }
        }
    }
    // An analysis round, when the step being analysed is due one.
    if let (Some(spec), Some(previous)) = (canary(md), previous.as_deref()) {
        let state = state_of(previous);
        let now = Timestamp::now();
        if let (Some(analysis), Some(due)) = (&spec.analysis, round_due_at(spec, &state))
            && due <= now.as_second()
        {
            seen.measured =
                measure_round(prometheus(), analysis, md, &from, &to, state.step, now).await;
        }
    }
    seen
}

/// Replicas beyond what every deployment's decided placements use that each pool has room for,
/// in replicas of `md`'s largest component: the room for a rollout's surge. Not the pool's free
/// GPUs: those shrink as the surge starts, and the decision would then take the surge back.
pub fn spare_replicas(estate: &Estate, md: &ModelDeployment) -> BTreeMap<String, u32> {
    let largest = md
        .spec
        .components
        .iter()
        .map(per_replica)
        .max_by_key(|r| (r.gpus, r.cpu_milli, r.memory_bytes))
        .unwrap_or_default();
    estate
        .pools
        .iter()
        .map(|(name, pool)| (name.clone(), spare_in(estate, name, pool, &largest)))
        .collect()
}

fn spare_in(
    estate: &Estate,
    name: &str,
    pool: &Arc<ComputePool>,
    per: &crate::planner::Resources,
) -> u32 {
    // The spec's capacity bounded by what the pool controller observed (as the planner sees
    // it), less what every deployment's decided placements take.
    let mut room = super::planning::observed_pool_view(pool).capacity;
    for deployment in estate.deployments.values() {
        let Some(status) = &deployment.status else {
            continue;
        };
        for component in &status.components {
            let Some(spec) = deployment
                .spec
                .components
                .iter()
                .find(|c| c.name == component.name)
            else {
                continue;
            };
            let each = per_replica(spec);
            for placement in component.placements.iter().filter(|p| p.pool == name) {
                let n = placement.replicas;
                room.gpus = room.gpus.saturating_sub(each.gpus.saturating_mul(n));
                room.cpu_milli = room
                    .cpu_milli
                    .map(|c| c.saturating_sub(each.cpu_milli.saturating_mul(u64::from(n))));
                room.memory_bytes = room
                    .memory_bytes
                    .map(|m| m.saturating_sub(each.memory_bytes.saturating_mul(u64::from(n))));
                room.replicas = room.replicas.map(|r| r.saturating_sub(n));
            }
        }
    }
    room.fits(per).0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    /// Both versions built through the deployment builder: the own-named Deployment is today's but
    /// for its pods' version label, the other one has its own name, model and a selector that
    /// cannot match the own-named pods; each version's Service selects that version's pods only.
    #[test]
    fn the_two_versions_deployments_and_services_select_disjoint_pods() {
        use crate::api::{Cloud, RolloutVersion};
        use crate::operator::deployment::build::{Placement, build_deployment, build_service};
        use crate::operator::rollout::children::{
            LABEL_VERSION_KEY, OWN_NAMES_KEY, VersionNames, model_at, version_key,
        };
        use crate::operator::rollout::glue_tests::{deployment, pool, version};
        let md = deployment("shop", "internal");
        let pool = pool("dc1", Cloud::Private);
        let owner = version("1", "s3://models/m/1");
        let next = version("2", "s3://models/m/2");
        let build = |v: &RolloutVersion, names: &VersionNames| {
            let at = model_at(&md, v);
            let deployment = build_deployment(&Placement {
                deployment: &at,
                component: &md.spec.components[1],
                pool_name: "dc1",
                pool: &pool.spec,
                replicas: 2,
                namespace: "web",
                model: None,
                owner: None,
            });
            names.apply_to(deployment, &md, "rank", "dc1", true)
        };
        let (own, keyed) = (VersionNames::default(), VersionNames::keyed(&next));
        let (old, new) = (build(&owner, &own), build(&next, &keyed));
        let today = build_deployment(&Placement {
            deployment: &md,
            component: &md.spec.components[1],
            pool_name: "dc1",
            pool: &pool.spec,
            replicas: 2,
            namespace: "web",
            model: None,
            owner: None,
        });
        assert_eq!(old.metadata.name, today.metadata.name);
        assert_eq!(
            old.spec.selector, today.spec.selector,
            "a selector is immutable: the own-named Deployment keeps it"
        );
        assert_eq!(
            new.metadata.name.as_deref(),
            Some(keyed.deployment_name(&md, "rank", "dc1").as_str())
        );
        let selects = |selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        let selector = |d: &k8s_openapi::api::apps::v1::Deployment| {
            d.spec.selector.match_labels.clone().unwrap()
        };
        let pods = |d: &k8s_openapi::api::apps::v1::Deployment| {
            d.spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .clone()
                .unwrap()
        };
        assert!(selects(&selector(&old), &pods(&old)));
        assert!(selects(&selector(&new), &pods(&new)));
        assert!(!selects(&selector(&new), &pods(&old)));
        assert_eq!(pods(&old)[LABEL_VERSION_KEY], OWN_NAMES_KEY);
        assert_eq!(pods(&new)[LABEL_VERSION_KEY], version_key(&next));
        let annotations = new.metadata.annotations.clone().unwrap();
        assert_eq!(annotations["skybridge.io/model-version"], "2");
        // Each version's Service selects its own pods and not the other's.
        let service = build_service(&md, &md.spec.components[1], "web", None);
        let old_service = own.narrow(service.clone(), own.service_name(&md, "rank"));
        let new_service = keyed.narrow(service, keyed.service_name(&md, "rank"));
        let service_selector = |s: &k8s_openapi::api::core::v1::Service| {
            s.spec.as_ref().unwrap().selector.clone().unwrap()
        };
        assert!(selects(&service_selector(&old_service), &pods(&old)));
        assert!(!selects(&service_selector(&old_service), &pods(&new)));
        assert!(selects(&service_selector(&new_service), &pods(&new)));
        assert!(!selects(&service_selector(&new_service), &pods(&old)));
        assert_ne!(old_service.metadata.name, new_service.metadata.name);
    }
}
