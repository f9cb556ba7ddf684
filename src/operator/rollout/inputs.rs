//! The rollout decision's input from what a reconcile knows (issue #17): the plan, the pools,
//! the replicas of each version seen, and where the new model cannot be fetched yet. Pure; not
//! called by the reconcile yet (see `docs/architecture.md`, "Rollouts").

use crate::api::{Cloud, ComputePool, DataClass, ModelDeployment};
use crate::planner::ComponentPlan;
use crate::rollout::{ComponentInput, PoolInput, VersionCount};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// (component, pool).
pub type Key = (String, String);

/// What a reconcile observed and decided, besides the plan, for the rollout decision.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Replicas of the old and the new version per (component, pool), as the children watches
    /// see them (missing: none).
    pub counts: BTreeMap<Key, (VersionCount, VersionCount)>,
    /// Replicas beyond the plan each pool has room for (missing: none).
    pub spare: BTreeMap<String, u32>,
    /// Pools whose store does not hold the new model, verified, yet, with the reason (the
    /// artifact stage's holds). During a rollout these hold the new version only: the old one
    /// keeps serving there.
    pub new_model_unfetchable: BTreeMap<String, String>,
}

/// One [`ComponentInput`] per component of `md`: every pool the plan places it in, and every
/// pool where either version still has replicas (so that the decision scales those in). `class`:
/// the class of `md`'s model (`ModelClasses::class_of`, which covers every version this
/// deployment reads, since it is keyed by deployment). A pool missing from `pools` is taken as
/// public: what is not known to be private is never trusted with sensitive data.
pub fn component_inputs(
    md: &ModelDeployment,
    plans: &[ComponentPlan],
    pools: &BTreeMap<String, Arc<ComputePool>>,
    class: DataClass,
    seen: &Seen,
) -> Vec<ComponentInput> {
    md.spec
        .components
        .iter()
        .map(|component| {
            let sensitive =
                class == DataClass::Sensitive || component.data_class == DataClass::Sensitive;
            let planned: BTreeMap<&str, u32> = plans
                .iter()
                .filter(|plan| plan.key.component == component.name)
                .flat_map(|plan| &plan.placements)
                .map(|p| (p.pool.as_str(), p.replicas))
                .collect();
            let with_replicas = seen
                .counts
                .iter()
                .filter(|((c, _), (old, new))| {
                    *c == component.name && (old.current > 0 || new.current > 0)
                })
                .map(|((_, pool), _)| pool.as_str());
            let names: BTreeSet<&str> = planned.keys().copied().chain(with_replicas).collect();
            let pools = names
                .into_iter()
                .map(|pool| {
                    let cloud = pools.get(pool).map_or(Cloud::Public, |p| p.spec.cloud);
                    let (old, new) = seen
                        .counts
                        .get(&(component.name.clone(), pool.to_string()))
                        .copied()
                        .unwrap_or_default();
                    let resident = !(sensitive && cloud == Cloud::Public);
                    let held = seen.new_model_unfetchable.contains_key(pool);
                    PoolInput {
                        pool: pool.to_string(),
                        cloud,
                        planned: planned.get(pool).copied().unwrap_or(0),
                        spare: seen.spare.get(pool).copied().unwrap_or(0),
                        old,
                        new,
                        new_model_verified: resident && !held,
                    }
                })
                .collect();
            ComponentInput {
                name: component.name.clone(),
                sensitive,
                drain_seconds: component.traffic.as_ref().map_or(0, |t| t.drain_seconds),
                pools,
            }
        })
        .collect()
}
