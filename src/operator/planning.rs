//! From what the operator observes to planner input, for one reconcile: pure.
//!
//! Every reconcile plans the whole estate, so that capacity and budgets shared with other
//! deployments are respected; other deployments keep the replicas their status records, so the
//! planner's stability keeps them where they are.

use crate::api::{ComputePool, ModelDeployment};
use crate::burst::{
    BurstController, ControllerConfig, ControllerState, Event as BurstEvent, Observation,
    private_capacity, reconcile_owned,
};
use crate::estate::{Estate, ModelClasses, component_request, pool_view};
use crate::planner::{ComponentPlan, Headroom, PlanInput, PlannerOptions};
use std::collections::{BTreeMap, BTreeSet};

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

/// One deployment to decide, with what the operator read for it.
pub struct Request<'a> {
    pub deployment: &'a ModelDeployment,
    /// Demand per component with a burst policy (`None`: the metric could not be read).
    pub demand: &'a BTreeMap<String, Option<f64>>,
    /// The burst controller's state per component, from the previous decision.
    pub states: &'a BTreeMap<String, ControllerState>,
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
    let request = Request {
        deployment: md,
        demand,
        states,
    };
    decide_together(estate, &[request], now)
        .pop()
        .expect("one decision per request")
}

/// `decide` for several deployments in one planning pass: each is planned as in `decide`, and
/// they share the capacity the other deployments leave as the planner sees fit. One decision
/// per request, in order. Every requested deployment must be in `estate`.
pub fn decide_together(estate: &Estate, requests: &[Request<'_>], now: i64) -> Vec<Decided> {
    let deciding: BTreeSet<(String, String)> = requests
        .iter()
        .map(|r| Estate::key_of(r.deployment))
        .collect();
    // A model's class is shared by every deployment that reads it, deciding or not.
    let classes = ModelClasses::of(estate);
    let mut components = Vec::new();
    for (key, other) in &estate.deployments {
        if deciding.contains(key) || other.metadata.deletion_timestamp.is_some() {
            continue;
        }
        for component in &other.spec.components {
            let (recorded_desired, current) = recorded(other, &component.name);
            let mut request = component_request(
                estate,
                &classes,
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
    let frozen = components.len();
    // Where each requested deployment's components start in the input.
    let mut starts = Vec::with_capacity(requests.len());
    for request in requests {
        starts.push(components.len());
        let md = request.deployment;
        for component in &md.spec.components {
            let (_, current) = recorded(md, &component.name);
            let mut planned =
                component_request(estate, &classes, md, component, component.replicas.min);
            planned.current = current;
            components.push(planned);
        }
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

    // One burst controller per component with a valid policy: (request, input index, name,
    // controller, state, observation).
    let mut controllers = Vec::new();
    for (r, request) in requests.iter().enumerate() {
        for (offset, component) in request.deployment.spec.components.iter().enumerate() {
            let index = starts[r] + offset;
            let Some(policy) = estate.policy_of(component) else {
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
            let planned = &input.components[index];
            let observation = Observation {
                demand: request.demand.get(&component.name).copied().flatten(),
                current_replicas: planned.current.values().sum(),
                public_replicas: planned
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
            let state = request
                .states
                .get(&component.name)
                .cloned()
                .unwrap_or_default();
            controllers.push((
                r,
                index,
                component.name.clone(),
                BurstController::new(config),
                state,
                observation,
            ));
        }
    }
    let controlled: Vec<_> = controllers
        .iter()
        .map(|(_, i, _, c, s, o)| (*i, c, s, *o))
        .collect();
    let (new_states, mut planned, decisions) = reconcile_owned(input, &controlled, now);
    let mut decided: Vec<Decided> = Vec::with_capacity(requests.len());
    let mut plans = planned.components.split_off(frozen).into_iter();
    for request in requests {
        decided.push(Decided {
            plans: plans
                .by_ref()
                .take(request.deployment.spec.components.len())
                .collect(),
            states: BTreeMap::new(),
            events: Vec::new(),
        });
    }
    for (((r, _, name, _, _, _), state), decision) in
        controllers.iter().zip(new_states).zip(decisions)
    {
        let out = &mut decided[*r];
        out.states.insert(name.clone(), state);
        out.events
            .extend(decision.events.into_iter().map(|e| (name.clone(), e)));
    }
    decided
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Cloud, ComponentStatus, ModelDeploymentStatus, PlacementStatus};
    use crate::estate::parse_documents;
    use kube::ResourceExt;

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

    #[test]
    fn deployments_decided_together_share_capacity_and_each_gets_its_own_plans() {
        let estate = estate();
        let ranker = estate.deployment("recsys", "ctr-ranker").unwrap().clone();
        let multitask = estate.deployment("recsys", "multitask").unwrap().clone();
        // Demand for the ranker far beyond the private L4s, so both compete for them.
        let demand = BTreeMap::from([("ranker".to_string(), Some(40_000.0))]);
        let none = BTreeMap::new();
        let no_demand = BTreeMap::new();
        let requests = [
            Request {
                deployment: &ranker,
                demand: &demand,
                states: &none,
            },
            Request {
                deployment: &multitask,
                demand: &no_demand,
                states: &none,
            },
        ];
        let decided = decide_together(&estate, &requests, 1_700_000_000);
        assert_eq!(decided.len(), 2);
        for (request, decision) in requests.iter().zip(&decided) {
            let planned: Vec<_> = decision.plans.iter().map(|p| &p.key).collect();
            let wanted: Vec<_> = request
                .deployment
                .spec
                .components
                .iter()
                .map(|c| crate::estate::component_key(request.deployment, c))
                .collect();
            assert_eq!(planned, wanted.iter().collect::<Vec<_>>(), "spec order");
        }
        // No pool is promised more GPUs than it has, across both.
        for (name, pool) in &estate.pools {
            let capacity = pool.spec.capacity.gpu.as_ref().map_or(0, |g| g.count);
            let used: u32 = requests
                .iter()
                .zip(&decided)
                .flat_map(|(request, decision)| {
                    request
                        .deployment
                        .spec
                        .components
                        .iter()
                        .zip(&decision.plans)
                })
                .flat_map(|(component, plan)| {
                    let gpus = component.resources.gpu.as_ref().map_or(0, |g| g.count);
                    plan.placements
                        .iter()
                        .filter(|p| p.pool == *name)
                        .map(move |p| p.replicas * gpus)
                })
                .sum();
            assert!(
                used <= capacity,
                "{name}: {used} GPUs promised, {capacity} exist"
            );
        }
        // Each gets the controller states of its own components with a policy, and no others.
        for (request, decision) in requests.iter().zip(&decided) {
            let with_policy: BTreeSet<&String> = request
                .deployment
                .spec
                .components
                .iter()
                .filter(|c| c.burst_policy.is_some())
                .map(|c| &c.name)
                .collect();
            assert_eq!(decision.states.keys().collect::<BTreeSet<_>>(), with_policy);
        }
        // Deciding one alone is what `decide` does.
        let alone = decide(&estate, &ranker, &demand, &none, 1_700_000_000);
        let together = decide_together(&estate, &requests[..1], 1_700_000_000);
        assert_eq!(alone.plans, together[0].plans);
    }

    /// Issue #18: the operator's planning took a model's class from the deciding deployment
    /// only. A deployment in another namespace naming a sensitive model with a trailing slash,
    /// pinned to a public pool, must not be planned there.
    #[test]
    fn a_model_shared_with_a_sensitive_reader_is_never_planned_public() {
        use crate::api::{DataClass, GpuRequest};
        let mut estate = estate();
        let (public_pool, gpu_type) = estate
            .pools
            .iter()
            .find(|(_, p)| p.spec.cloud == Cloud::Public && p.spec.capacity.gpu.is_some())
            .map(|(name, p)| {
                (
                    name.clone(),
                    p.spec.capacity.gpu.as_ref().unwrap().gpu_type.clone(),
                )
            })
            .unwrap();
        let reader = |namespace: &str,
                      name: &str,
                      uri: &str,
                      class: DataClass,
                      pins: Option<Vec<String>>| {
            let mut md = estate.deployments.values().next().unwrap().as_ref().clone();
            md.metadata.namespace = Some(namespace.into());
            md.metadata.name = Some(name.into());
            md.status = None;
            md.spec.model.source.uri = uri.into();
            md.spec.components.truncate(1);
            let component = &mut md.spec.components[0];
            component.data_class = class;
            component.burst_policy = None;
            component.pools = pins;
            component.resources.gpu = Some(GpuRequest {
                count: 1,
                gpu_type: Some(gpu_type.clone()),
            });
            component.replicas.min = 2;
            component.replicas.max = 2;
            md
        };
        let uri = "s3://shop-models/risk/fraud/v1";
        let fraud = reader("risk", "fraud", uri, DataClass::Sensitive, None);
        let copycat = reader(
            "elsewhere",
            "copycat",
            &format!("{uri}/"),
            DataClass::Internal,
            Some(vec![public_pool]),
        );
        for md in [&fraud, &copycat] {
            estate
                .deployments
                .insert(Estate::key_of(md), std::sync::Arc::new(md.clone()));
        }
        let decided = decide(
            &estate,
            &copycat,
            &BTreeMap::new(),
            &BTreeMap::new(),
            1_700_000_000,
        );
        let plan = &decided.plans[0];
        assert_eq!(plan.replicas_in(Cloud::Public), 0, "{plan:?}");
        assert_eq!(plan.unplaced, 2, "{plan:?}");
        assert!(
            plan.reasons.iter().any(|r| r.contains("residency")),
            "{plan:?}"
        );
    }
}
