//! From what the operator observes to planner input, for one reconcile: pure.
//!
//! Every reconcile plans the whole estate, so that capacity and budgets shared with other
//! deployments are respected; other deployments keep the replicas their status records, so the
//! planner's stability keeps them where they are.

use crate::api::{ComputePool, ModelDeployment};
use crate::estate::{Estate, component_key, component_request, pool_view};
use crate::planner::{
    Budget, ComponentKey, ComponentPlan, Headroom, PlanInput, PlannerOptions, plan,
};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// The pool as the planner sees it: spec capacity bounded by what the operator observed.
pub fn observed_pool_view(pool: &ComputePool) -> crate::planner::PoolView {
    let mut view = pool_view(pool);
    if let Some(observed) = pool
        .status
        .as_ref()
        .and_then(|s| s.observed_capacity.as_ref())
    {
        view.capacity = Headroom {
            gpus: view.capacity.gpus.min(observed.gpus),
            ..view.capacity
        };
    }
    view
}

/// Replicas per pool a deployment's status records for a component.
fn recorded(md: &ModelDeployment, component: &str) -> (Option<u32>, BTreeMap<String, u32>) {
    let Some(status) = md
        .status
        .as_ref()
        .and_then(|s| s.components.iter().find(|c| c.name == component))
    else {
        return (None, BTreeMap::new());
    };
    let current = status
        .placements
        .iter()
        .map(|p| (p.pool.clone(), p.replicas))
        .collect();
    (Some(status.desired_replicas), current)
}

/// Plans the estate with `md`'s components wanting `desired` (others keep their recorded
/// decision), and returns `md`'s part of the plan, one entry per component in spec order.
pub fn plan_deployment(
    estate: &Estate,
    md: &ModelDeployment,
    desired: &BTreeMap<String, u32>,
    hold_public: &BTreeMap<String, bool>,
) -> Vec<ComponentPlan> {
    let mut components = Vec::new();
    let this = (md.namespace().unwrap_or_default(), md.name_any());
    for (key, other) in &estate.deployments {
        if *key == this || other.metadata.deletion_timestamp.is_some() {
            continue;
        }
        for component in &other.spec.components {
            let (recorded_desired, current) = recorded(other, &component.name);
            let mut request = component_request(
                estate,
                other,
                component,
                recorded_desired.unwrap_or(component.replicas.min),
            );
            request.current = current;
            // Other deployments are not being reconciled now: nothing of theirs moves.
            request.rebalance = false;
            components.push(request);
        }
    }
    for component in &md.spec.components {
        let (recorded_desired, current) = recorded(md, &component.name);
        let want = desired
            .get(&component.name)
            .copied()
            .or(recorded_desired)
            .unwrap_or(component.replicas.min);
        let mut request = component_request(estate, md, component, want);
        request.current = current;
        request.rebalance = !hold_public.get(&component.name).copied().unwrap_or(false);
        components.push(request);
    }
    let budgets = estate
        .policies
        .iter()
        .map(|(name, p)| {
            let burst = &p.spec.burst;
            (
                name.clone(),
                Budget {
                    max_public_replicas: burst.max_public_replicas,
                    max_cost_per_hour: burst.max_cost_per_hour,
                },
            )
        })
        .collect();
    let input = PlanInput {
        pools: estate.pools.values().map(observed_pool_view).collect(),
        components,
        budgets,
        options: PlannerOptions::default(),
    };
    let keys: Vec<ComponentKey> = md
        .spec
        .components
        .iter()
        .map(|c| component_key(md, c))
        .collect();
    let mut plans: BTreeMap<ComponentKey, ComponentPlan> = plan(&input)
        .components
        .into_iter()
        .filter(|p| keys.contains(&p.key))
        .map(|p| (p.key.clone(), p))
        .collect();
    keys.iter().filter_map(|k| plans.remove(k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Cloud, ComponentStatus, ModelDeploymentStatus, PlacementStatus};
    use crate::estate::parse_documents;

    fn estate() -> Estate {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/ecommerce/pools.yaml"
        ))
        .unwrap()
            + "\n---\n"
            + &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/ecommerce/policies.yaml"
            ))
            .unwrap()
            + "\n---\n"
            + &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/ecommerce/recommendation.yaml"
            ))
            .unwrap();
        let mut estate = Estate::default();
        for object in parse_documents(&text) {
            match object.unwrap() {
                crate::estate::Object::Pool(p) => {
                    estate.pools.insert(p.name_any(), *p);
                }
                crate::estate::Object::Policy(p) => {
                    estate.policies.insert(p.name_any(), *p);
                }
                crate::estate::Object::Deployment(d) => {
                    estate
                        .deployments
                        .insert((d.namespace().unwrap(), d.name_any()), *d);
                }
            }
        }
        estate
    }

    #[test]
    fn other_deployments_keep_their_capacity() {
        let mut estate = estate();
        // multitask already holds 20 of the 24 private L4s.
        let key = ("recsys".to_string(), "multitask".to_string());
        let multitask = estate.deployments.get_mut(&key).unwrap();
        let placed = |name: &str, n: u32| ComponentStatus {
            name: name.into(),
            desired_replicas: n,
            ready_replicas: n,
            placements: vec![PlacementStatus {
                pool: "dc1-l4".into(),
                cloud: Cloud::Private,
                replicas: n,
                ready_replicas: n,
                reason: "r".into(),
            }],
            ..Default::default()
        };
        multitask.status = Some(ModelDeploymentStatus {
            components: vec![
                placed("search-head", 20),
                placed("recommendation-head", 2),
                placed("ads-head", 1),
            ],
            ..Default::default()
        });
        let ranker = estate.deployment("recsys", "ctr-ranker").unwrap().clone();
        let plans = plan_deployment(
            &estate,
            &ranker,
            &BTreeMap::from([("ranker".to_string(), 10)]),
            &BTreeMap::new(),
        );
        let ranker_plan = plans.iter().find(|p| p.key.component == "ranker").unwrap();
        let private: u32 = ranker_plan.replicas_in(Cloud::Private);
        // 24 L4s - 20 (search-head) - 2 (rec-head) - 1 (ads-head) leaves 1 private L4.
        assert_eq!(private, 1, "{ranker_plan:?}");
        assert_eq!(ranker_plan.replicas_in(Cloud::Public), 9);
    }
}
