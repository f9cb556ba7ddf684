//! From what the operator observes to planner input, for one reconcile: pure. The burst
//! controllers and the planner are composed once, in `burst::step` (`tick` through
//! `EstatePlacement`, wrapped by `reconcile_owned`), which `skybridge simulate` runs too: what
//! is tuned offline is what runs.
//!
//! Every reconcile plans the whole estate, so that capacity and budgets shared with other
//! deployments are respected; other deployments keep the replicas their status records, so the
//! planner's stability keeps them where they are.

use crate::api::{ComputePool, ModelDeployment};
use crate::burst::step::reconcile_owned;
use crate::burst::{
    BurstController, ControllerConfig, ControllerState, Event as BurstEvent, Observation,
    private_capacity,
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
    /// Replicas per component and pool to place anew (issue #19): stuck in a short pool or on a
    /// node about to be reclaimed (see `capacity::observed::PoolCapacity::to_replace`).
    pub replace: &'a BTreeMap<String, BTreeMap<String, u32>>,
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
        replace: &BTreeMap::new(),
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
            if let Some(replace) = request.replace.get(&component.name) {
                planned.replace = replace.clone();
            }
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

    // What each component holds going into this tick, for the private capacity left to the
    // others: see `holding_input`.
    let capacity_input = holding_input(estate, requests, &starts, &input);

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
                private_capacity: private_capacity(&capacity_input, index, component.replicas.max),
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

/// `input` with every component of the requests wanting what it holds going into the tick: a
/// component with a burst policy its last decision (its observed replicas before its first), the
/// others their `min`. The private capacity of one component is what the private pools can hold
/// next to the others *as they are*; planning it with its siblings at their `min` would count
/// room they occupy as free, and start a component's failback hold while the pool is still full.
fn holding_input(
    estate: &Estate,
    requests: &[Request<'_>],
    starts: &[usize],
    input: &PlanInput,
) -> PlanInput {
    let mut holding = input.clone();
    for (request, &start) in requests.iter().zip(starts) {
        for (offset, component) in request.deployment.spec.components.iter().enumerate() {
            if estate.policy_of(component).is_none() {
                continue;
            }
            let planned = &mut holding.components[start + offset];
            let observed: u32 = planned.current.values().sum();
            let last = request
                .states
                .get(&component.name)
                .and_then(|s| s.desired)
                .unwrap_or(observed);
            planned.desired = last.clamp(component.replicas.min, component.replicas.max);
        }
    }
    holding
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
            estate.insert(object.unwrap());
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
                replace: &BTreeMap::new(),
            },
            Request {
                deployment: &multitask,
                demand: &no_demand,
                states: &none,
                replace: &BTreeMap::new(),
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

#[cfg(test)]
mod failback_hold_tests {
    //! Two components of one deployment share a private pool that is full, so both burst; then
    //! private capacity returns. Each may move back only after its policy's
    //! `failbackAfterSeconds` counted from then: while the pool was full, neither could fit.
    use super::*;
    use crate::api::{
        Cloud, ComponentStatus, ComputePoolStatus, ModelDeploymentStatus, ObservedCapacity,
        PlacementStatus,
    };
    use crate::estate::parse_documents;
    use proptest::prelude::*;
    use std::sync::Arc;

    const START: i64 = 1_700_000_000;

    fn estate(min: [u32; 2], failback_seconds: u32) -> Estate {
        let component = |name: &str, min: u32| {
            format!(
                "    - name: {name}\n      dataClass: internal\n      image: i\n      resources: {{gpu: {{count: 1, type: l4}}, cpu: \"1\", memory: 1Gi}}\n      replicas: {{min: {min}, max: 8}}\n      burstPolicy: p\n"
            )
        };
        let text = format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: dc1}}
spec:
  cloud: private
  provider: onprem
  region: r
  capacity: {{gpu: {{type: l4, count: 64}}}}
  cost: {{gpuHour: 0.3}}
  startupSeconds: 30
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: cloud}}
spec:
  cloud: public
  provider: aws
  region: r
  capacity: {{gpu: {{type: l4, count: 64}}}}
  cost: {{gpuHour: 0.9}}
  startupSeconds: 60
---
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {{name: p}}
spec:
  metric: {{prometheusUrl: "http://prom", query: q, targetPerReplica: 100, intervalSeconds: 5}}
  scaleUp: {{stabilizationWindowSeconds: 0, periodSeconds: 1}}
  scaleDown: {{stabilizationWindowSeconds: 0, periodSeconds: 1}}
  burst: {{enabled: true, failbackAfterSeconds: {failback_seconds}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: pair, namespace: shop}}
spec:
  model: {{source: {{uri: "s3://models/pair", pool: dc1}}, version: "1"}}
  components:
{}{}"#,
            component("a", min[0]),
            component("b", min[1])
        );
        let mut estate = Estate::default();
        for object in parse_documents(&text) {
            estate.insert(object.expect("the test's estate parses"));
        }
        estate
    }

    /// The pool controller's report: `gpus` GPUs on the private pool's Nodes.
    fn set_private_gpus(estate: &mut Estate, gpus: u32) {
        let pool = Arc::make_mut(estate.pools.get_mut("dc1").unwrap());
        pool.status = Some(ComputePoolStatus {
            observed_capacity: Some(ObservedCapacity {
                gpus,
                gpus_free: Some(gpus),
                cpu_free: None,
                memory_free: None,
            }),
            ..Default::default()
        });
    }

    /// Private and public replicas of each component after one tick.
    type Placed = [(u32, u32); 2];

    /// Runs the operator's decisions every `interval` seconds with constant demand (`replicas`
    /// worth, 100 per replica), the private pool at `before` GPUs until `returns_at` seconds,
    /// then at `after`. Each tick's plan becomes the status the next tick starts from.
    fn run(
        min: [u32; 2],
        replicas: [u32; 2],
        (before, after): (u32, u32),
        returns_at: i64,
        interval: i64,
        ticks: usize,
        failback_seconds: u32,
    ) -> Vec<(i64, Placed)> {
        let mut estate = estate(min, failback_seconds);
        set_private_gpus(&mut estate, before);
        let key = ("shop".to_string(), "pair".to_string());
        let demand = BTreeMap::from([
            ("a".to_string(), Some(f64::from(replicas[0]) * 100.0)),
            ("b".to_string(), Some(f64::from(replicas[1]) * 100.0)),
        ]);
        let mut states = BTreeMap::new();
        let mut out = Vec::new();
        for tick in 0..ticks {
            let now = START + tick as i64 * interval;
            if now - START >= returns_at {
                set_private_gpus(&mut estate, after);
            }
            let md = estate.deployments[&key].clone();
            let decided = decide(&estate, &md, &demand, &states, now);
            states = decided.states;
            let placed = [0, 1].map(|i| {
                let plan = &decided.plans[i];
                (
                    plan.replicas_in(Cloud::Private),
                    plan.replicas_in(Cloud::Public),
                )
            });
            let md = Arc::make_mut(estate.deployments.get_mut(&key).unwrap());
            md.status = Some(ModelDeploymentStatus {
                components: decided
                    .plans
                    .iter()
                    .map(|plan| ComponentStatus {
                        name: plan.key.component.clone(),
                        desired_replicas: plan.desired_replicas,
                        placements: plan
                            .placements
                            .iter()
                            .map(|p| PlacementStatus {
                                pool: p.pool.clone(),
                                cloud: p.cloud,
                                replicas: p.replicas,
                                ready_replicas: p.replicas,
                                reason: p.reason.clone(),
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
            out.push((now - START, placed));
        }
        out
    }

    /// Seconds (from the start) at which each component moved replicas from public to private.
    fn failbacks(run: &[(i64, Placed)]) -> [Vec<i64>; 2] {
        let mut moves = [Vec::new(), Vec::new()];
        for pair in run.windows(2) {
            let ((_, was), (at, now)) = (pair[0], pair[1]);
            for i in 0..2 {
                if now[i].1 < was[i].1 && now[i].0 > was[i].0 {
                    moves[i].push(at);
                }
            }
        }
        moves
    }

    /// Both burst while the pool is full; the hold of each starts when capacity returns.
    fn assert_each_waits(run: &[(i64, Placed)], returns_at: i64, window: i64, interval: i64) {
        let before = run.iter().rfind(|(t, _)| *t < returns_at).unwrap().1;
        assert!(
            before.iter().all(|&(_, public)| public > 0),
            "both burst while the pool is full: {run:?}"
        );
        let moves = failbacks(run);
        for (component, at) in moves.iter().enumerate() {
            let first = at
                .first()
                .copied()
                .unwrap_or_else(|| panic!("component {component} never failed back: {run:?}"));
            assert!(
                first >= returns_at + window,
                "component {component} failed back at {first} s, capacity returned at {returns_at} s, \
                 the hold is {window} s: {run:?}"
            );
            assert!(
                first <= returns_at + window + interval,
                "component {component} failed back at {first} s, a tick after its hold ended: {run:?}"
            );
        }
        let (_, last) = run.last().unwrap();
        assert!(last.iter().all(|&(_, public)| public == 0), "{run:?}");
    }

    #[test]
    fn a_component_whose_sibling_fills_the_pool_waits_its_hold_from_the_return() {
        // a wants 4, b 3; the pool holds 4 until 100 s, then 12. Before the fix, b's capacity
        // was planned with a at its min (1), so b "fitted" from the first tick and moved back
        // 20 s after the return instead of 120.
        let run = run([1, 1], [4, 3], (4, 12), 100, 5, 70, 120);
        assert_each_waits(&run, 100, 120, 5);
    }

    #[test]
    fn a_component_bursting_within_its_floor_waits_its_hold_from_the_return() {
        // Floors 3 + 3 on 4 GPUs: b's floor is partly public. Before the fix, b's capacity was
        // planned with bursting disabled, which put its floor before a's private replicas, so b
        // "fitted" while the pool was full.
        let run = run([3, 3], [4, 3], (4, 8), 60, 3, 80, 90);
        assert_each_waits(&run, 60, 90, 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn no_component_fails_back_before_its_hold_counted_from_the_return(
            min_a in 1u32..=4,
            min_b in 1u32..=4,
            extra_a in 0u32..=3,
            extra_b in 0u32..=3,
            short in 1u32..=4,
            returns_after in 2i64..=10,
            interval in 1i64..=6,
            window in prop::sample::select(vec![10u32, 30, 60]),
        ) {
            let replicas = [min_a + extra_a, min_b + extra_b];
            let total = replicas[0] + replicas[1];
            // Full: both cannot fit; at least one replica of each fits, so both burst only when
            // the other holds the rest.
            let before = total.saturating_sub(short).max(2);
            prop_assume!(before < total);
            let returns_at = returns_after * interval;
            let ticks = (returns_at + i64::from(window)) / interval + 4;
            let run = run(
                [min_a, min_b],
                replicas,
                (before, total),
                returns_at,
                interval,
                ticks as usize,
                window,
            );
            let moves = failbacks(&run);
            for (component, at) in moves.iter().enumerate() {
                for &t in at {
                    prop_assert!(
                        t >= returns_at + i64::from(window),
                        "component {} failed back at {} s, capacity returned at {} s, hold {} s: {:?}",
                        component, t, returns_at, window, run
                    );
                }
            }
            let (_, last) = run.last().unwrap();
            prop_assert!(last.iter().all(|&(_, public)| public == 0), "all home: {:?}", run);
        }
    }
}
