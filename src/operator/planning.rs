//! From what the operator observes to planner input, for one reconcile: pure.
//!
//! Every reconcile plans the whole estate, so that capacity and budgets shared with other
//! deployments are respected; other deployments keep the replicas their status records, so the
//! planner's stability keeps them where they are.

use crate::api::{ComputePool, ModelDeployment};
use crate::burst::{
    BurstController, ControllerConfig, ControllerState, Event as BurstEvent, Observation,
    private_capacity, reconcile,
};
use crate::estate::{Estate, component_request, pool_view};
use crate::planner::{ComponentPlan, Headroom, PlanInput, PlannerOptions};
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

/// What one reconcile decided for a deployment.
pub struct Decided {
    /// The deployment's part of the plan, one entry per component in spec order.
    pub plans: Vec<ComponentPlan>,
    /// New burst-controller state per component with a policy.
    pub states: BTreeMap<String, ControllerState>,
    /// What the burst controller has to say (scale steps, bursts, failbacks, budget hits).
    pub events: Vec<(String, BurstEvent)>,
}

/// Plans the estate for one reconcile of `md`: its components with a burst policy run a tick of
/// the shared burst controller on `demand` (`None`: the metric could not be read), the others
/// want their `min`; other deployments keep the decision and placement their status records,
/// so the planner's stability keeps them where they are. Pure: the operator fetches `demand`
/// and keeps `states`.
pub fn decide(
    estate: &Estate,
    md: &ModelDeployment,
    demand: &BTreeMap<String, Option<f64>>,
    states: &BTreeMap<String, ControllerState>,
    now: i64,
) -> Decided {
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
    let first = components.len();
    for component in &md.spec.components {
        let (_, current) = recorded(md, &component.name);
        let mut request = component_request(estate, md, component, component.replicas.min);
        request.current = current;
        components.push(request);
    }
    let budgets = crate::estate::budgets(estate);
    let input = PlanInput {
        pools: estate
            .pools
            .values()
            .map(|p| observed_pool_view(p))
            .collect(),
        components,
        budgets,
        options: PlannerOptions::default(),
    };

    // One burst controller per component with a valid policy.
    let mut controllers = Vec::new();
    for (offset, component) in md.spec.components.iter().enumerate() {
        let index = first + offset;
        let Some(policy) = component
            .burst_policy
            .as_ref()
            .and_then(|p| estate.policies.get(p))
        else {
            continue;
        };
        let Ok(config) = ControllerConfig::new(
            &policy.spec,
            &component.replicas,
            &input.components[index],
            &input.pools,
        ) else {
            continue;
        };
        let request = &input.components[index];
        let observation = Observation {
            demand: demand.get(&component.name).copied().flatten(),
            current_replicas: request.current.values().sum(),
            public_replicas: request
                .current
                .iter()
                .filter(|(pool, _)| {
                    estate
                        .pools
                        .get(*pool)
                        .is_some_and(|p| p.spec.cloud == crate::api::Cloud::Public)
                })
                .map(|(_, n)| n)
                .sum(),
            private_capacity: private_capacity(&input, index, component.replicas.max),
        };
        let state = states.get(&component.name).cloned().unwrap_or_default();
        controllers.push((
            index,
            component.name.clone(),
            BurstController::new(config),
            state,
            observation,
        ));
    }
    let controlled: Vec<_> = controllers
        .iter()
        .map(|(i, _, c, s, o)| (*i, c, s, *o))
        .collect();
    let (new_states, planned, decisions) = reconcile(&input, &controlled, now);
    let mut events = Vec::new();
    for ((_, name, _, _, _), decision) in controllers.iter().zip(&decisions) {
        events.extend(decision.events.iter().cloned().map(|e| (name.clone(), e)));
    }
    let states = controllers
        .iter()
        .map(|(_, name, _, _, _)| name.clone())
        .zip(new_states)
        .collect();
    let plans = planned.components.into_iter().skip(first).collect();
    Decided {
        plans,
        states,
        events,
    }
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
                    estate.pools.insert(p.name_any(), std::sync::Arc::new(*p));
                }
                crate::estate::Object::Policy(p) => {
                    estate
                        .policies
                        .insert(p.name_any(), std::sync::Arc::new(*p));
                }
                crate::estate::Object::Deployment(d) => {
                    estate.deployments.insert(
                        (d.namespace().unwrap(), d.name_any()),
                        std::sync::Arc::new(*d),
                    );
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
        let multitask = std::sync::Arc::make_mut(estate.deployments.get_mut(&key).unwrap());
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
        // 4,000 req/s at 400 per replica: the burst controller asks for more than the one private
        // L4 left, within its first scale-up step.
        let demand = BTreeMap::from([("ranker".to_string(), Some(4000.0))]);
        let decided = decide(&estate, &ranker, &demand, &BTreeMap::new(), 1_700_000_000);
        let ranker_plan = decided
            .plans
            .iter()
            .find(|p| p.key.component == "ranker")
            .unwrap();
        // 24 L4s - 20 (search-head) - 2 (rec-head) - 1 (ads-head) leaves 1 private L4.
        assert_eq!(
            ranker_plan.replicas_in(Cloud::Private),
            1,
            "{ranker_plan:?}"
        );
        assert!(
            ranker_plan.desired_replicas >= 4,
            "at least the minimum: {ranker_plan:?}"
        );
        assert_eq!(ranker_plan.unplaced, 0);
        assert_eq!(
            ranker_plan.replicas_in(Cloud::Public),
            ranker_plan.desired_replicas - 1
        );
        assert!(
            decided.states.contains_key("ranker"),
            "the controller's state is returned"
        );
        // feature-transform's metric was not read: its policy's fallback (a floor) applies, and says so.
        assert_eq!(decided.states.len(), 2);
        assert!(
            decided.events.iter().any(|(c, e)| c == "feature-transform"
                && e.kind == crate::burst::EventKind::MetricUnavailable),
            "{:?}",
            decided.events
        );
    }
}
