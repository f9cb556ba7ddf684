//! A deployment's part of the pools' capacity assessments (issue #19), pure: which of its
//! replicas the planner places anew (a short pool's shortfall, replicas on nodes about to be
//! reclaimed), which workloads keep their doomed replicas until the node goes, and the Events.
//!
//! Replicas on a doomed node are replaced *ahead*: the plan puts their replacements elsewhere
//! (another pool, or another node of the same pool) at once, while the workload on the doomed
//! pool keeps its doomed replicas on top of what the plan puts there until the node is gone. So ready replicas do not drop while the
//! replacements start, as long as the notice is longer than their start-up; and the traffic
//! decision, which sees the doomed pool planned lower than it runs, weights that pool by the
//! replicas that stay (`Draining`) before the node goes.

use super::stranded::Key;
use crate::api::ModelDeployment;
use crate::capacity::observed::PoolCapacity;
use crate::estate::Estate;
use crate::planner::{ComponentKey, ComponentPlan};
use kube::runtime::events::EventType;
use std::collections::BTreeMap;

/// Event reason on a ModelDeployment whose replicas are replaced ahead of a reclamation.
pub const REPLACING_AHEAD: &str = "ReplacingAhead";

fn key_of(md: &ModelDeployment, component: &str) -> ComponentKey {
    let (namespace, deployment) = Estate::key_of(md);
    ComponentKey {
        namespace,
        deployment,
        component: component.to_string(),
    }
}

/// Replicas per component and pool the planner must place anew, from the replicas `md`'s
/// status (or last decision) records per pool and each pool's last assessment.
pub fn replacements(
    md: &ModelDeployment,
    pools: &BTreeMap<String, PoolCapacity>,
) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut out: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for component in md.status.iter().flat_map(|s| &s.components) {
        let key = key_of(md, &component.name);
        for placement in &component.placements {
            let Some(pool) = pools.get(&placement.pool) else {
                continue;
            };
            let n = pool.to_replace(&key, placement.replicas);
            if n > 0 {
                out.entry(component.name.clone())
                    .or_default()
                    .insert(placement.pool.clone(), n);
            }
        }
    }
    out
}

/// Replicas kept per (component, pool):
/// - while some of them are on nodes about to be reclaimed: the plan's replicas there plus the
///   doomed ones. The plan never counts the doomed replicas (see `to_replace`), so replacements
///   it puts on the pool's other nodes start next to them (the doomed node is tainted: nothing
///   new lands there);
/// - while some of the component's replicas, anywhere, wait out of the endpoints to be put
///   back (their node's reclamation was cancelled): every pool's workload keeps what it runs.
///   A scale-in then could remove a replica still serving while the drained ones are out (the
///   ready endpoints would drop below what the component wants); it waits for the put-back,
///   one pool period, or longer if the label cannot be written. Not during a rollout, whose
///   decision sizes each version (what a pool runs counts both).
pub fn holds(
    md: &ModelDeployment,
    plans: &[ComponentPlan],
    pools: &BTreeMap<String, PoolCapacity>,
    rolling_out: bool,
) -> BTreeMap<Key, u32> {
    let mut holds = BTreeMap::new();
    for component in &md.spec.components {
        let key = key_of(md, &component.name);
        let plan = plans.iter().find(|p| p.key.component == component.name);
        let planned_on = |pool: &str| {
            plan.map_or(0, |p| {
                p.placements
                    .iter()
                    .filter(|x| x.pool == pool)
                    .map(|x| x.replicas)
                    .sum::<u32>()
            })
        };
        let putting_back = !rolling_out
            && pools
                .values()
                .any(|c| c.awaiting_put_back.get(&key).is_some_and(|n| *n > 0));
        for (pool, capacity) in pools {
            let doomed = capacity.doomed(&key);
            let running = if putting_back {
                capacity.bound.get(&key).copied().unwrap_or(0)
            } else {
                0
            };
            if doomed == 0 && running == 0 {
                continue;
            }
            let held = planned_on(pool).saturating_add(doomed).max(running);
            holds.insert((component.name.clone(), pool.clone()), held);
        }
    }
    holds
}

/// Event reason on a ModelDeployment whose replicas stuck in a short pool are placed anew.
pub const SHORTFALL_REPLACED: &str = "ShortfallReplaced";

/// The Events of one decision's replacements (`replaced`, from [`replacements`]): told once,
/// on the decision that places them anew (the next one finds them moved).
pub fn notes(
    replaced: &BTreeMap<String, BTreeMap<String, u32>>,
    pools: &BTreeMap<String, PoolCapacity>,
) -> Vec<(EventType, &'static str, String)> {
    let mut notes = Vec::new();
    for (component, per_pool) in replaced {
        for (pool, &n) in per_pool {
            let Some(capacity) = pools.get(pool) else {
                continue;
            };
            if capacity.assessment.is_short() {
                notes.push((
                    EventType::Warning,
                    SHORTFALL_REPLACED,
                    format!(
                        "component {component}: {n} replica(s) could not be scheduled on pool {pool}, which is short (stockout); placed on the next eligible pool"
                    ),
                ));
            } else {
                notes.push((
                    EventType::Normal,
                    REPLACING_AHEAD,
                    format!(
                        "component {component}: {n} replica(s) on pool {pool} are on nodes about to be reclaimed ({}); replacements start elsewhere first, and they are kept until the nodes go",
                        capacity.assessment.reclaiming_nodes.join(", ")
                    ),
                ));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Cloud, ComponentStatus, ComputePoolStatus, DataClass, ModelDeploymentStatus,
        PlacementStatus,
    };
    use crate::capacity::{
        NodeObservation, PendingCause, PendingReplica, PoolObservation, PoolSettings, TrackerState,
        assess,
    };
    use crate::operator::deployment::planning::{Request, decide_together};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A private pool of `private_gpus` L4s, a spot and an on-demand public pool of 8 each, a
    /// policy bursting spot first, and two deployments: `ranker` (internal, bursts) and
    /// `encoder` (sensitive).
    fn estate(private_gpus: u32, floor: u32) -> Estate {
        let text = format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: dc}}
spec: {{cloud: private, provider: onprem, region: fra, capacity: {{gpu: {{type: l4, count: {private_gpus}}}}}, cost: {{gpuHour: 0.2}}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: spot}}
spec: {{cloud: public, provider: aws, region: euc1, capacityType: Spot, capacity: {{gpu: {{type: l4, count: 8}}}}, cost: {{gpuHour: 0.4}}, stockout: {{unschedulableSeconds: 10, backoffSeconds: 30, recoverySeconds: 10}}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: ondemand}}
spec: {{cloud: public, provider: aws, region: euc1, capacity: {{gpu: {{type: l4, count: 8}}}}, cost: {{gpuHour: 0.9}}}}
---
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {{name: burst}}
spec:
  metric: {{prometheusUrl: "http://127.0.0.1:1", query: q, targetPerReplica: 100}}
  burst: {{enabled: true, pools: [spot, ondemand], onDemandFloorPercent: {floor}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: recs, namespace: shop}}
spec:
  model: {{source: {{uri: "s3://models/recs", pool: dc}}, version: "1"}}
  components:
  - {{name: ranker, dataClass: internal, image: "serve:1", resources: {{gpu: {{count: 1, type: l4}}}}, replicas: {{min: 6, max: 6}}, burstPolicy: burst}}
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: enc, namespace: shop}}
spec:
  model: {{source: {{uri: "s3://models/enc", pool: dc}}, version: "1"}}
  components:
  - {{name: encoder, dataClass: sensitive, image: "serve:1", resources: {{gpu: {{count: 1, type: l4}}}}, replicas: {{min: 3, max: 3}}, burstPolicy: burst}}
"#
        );
        let mut estate = Estate::default();
        for object in crate::estate::parse_documents(&text) {
            estate.insert(object.unwrap());
        }
        estate
    }

    fn with_placements(
        md: &ModelDeployment,
        component: &str,
        pools: &[(&str, u32)],
    ) -> ModelDeployment {
        let mut md = md.clone();
        md.status = Some(ModelDeploymentStatus {
            components: vec![ComponentStatus {
                name: component.into(),
                desired_replicas: pools.iter().map(|p| p.1).sum(),
                placements: pools
                    .iter()
                    .map(|&(pool, replicas)| PlacementStatus {
                        pool: pool.into(),
                        cloud: if pool == "dc" {
                            Cloud::Private
                        } else {
                            Cloud::Public
                        },
                        replicas,
                        ready_replicas: replicas,
                        reason: String::new(),
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        });
        md
    }

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn key(deployment: &str, component: &str) -> ComponentKey {
        ComponentKey {
            namespace: "shop".into(),
            deployment: deployment.into(),
            component: component.into(),
        }
    }

    /// The pool `name` of `estate` after `stuck` replicas of `component` waited `waited` s and
    /// `doomed` of them sit on a node about to go; `healthy` run elsewhere in it. Marks the pool
    /// `Short` in its status when the tracker says so, as the pool controller does.
    fn assessed(
        estate: &mut Estate,
        name: &str,
        component: &ComponentKey,
        stuck: u32,
        waited: i64,
        doomed: u32,
        healthy: u32,
    ) -> PoolCapacity {
        let pool = estate.pools.get_mut(name).unwrap();
        let observation = PoolObservation {
            at: t(waited),
            pending: (0..stuck)
                .map(|_| PendingReplica {
                    component: component.clone(),
                    since: t(0),
                    cause: PendingCause::Unschedulable,
                })
                .collect(),
            nodes: (doomed > 0)
                .then(|| NodeObservation {
                    name: format!("{name}-a"),
                    reclamation: crate::capacity::signals::taint_signal(
                        "karpenter.sh/disrupted",
                        None,
                    ),
                    replicas: BTreeMap::from([(component.clone(), doomed)]),
                })
                .into_iter()
                .collect(),
        };
        let assessment = assess(
            &PoolSettings::of(&pool.spec),
            &TrackerState::default(),
            &observation,
        );
        if assessment.is_short() {
            let (status, reason, message) = assessment.short_condition();
            Arc::make_mut(pool).status = Some(ComputePoolStatus {
                conditions: vec![Condition {
                    type_: crate::api::SHORT_CONDITION.into(),
                    status: status.into(),
                    reason: reason.into(),
                    message,
                    observed_generation: None,
                    last_transition_time: Time(t(waited)),
                }],
                ..Default::default()
            });
        }
        PoolCapacity {
            assessment,
            healthy: BTreeMap::from([(component.clone(), healthy)]),
            serving: BTreeMap::from([(component.clone(), healthy)]),
            bound: BTreeMap::new(),
            awaiting_put_back: BTreeMap::new(),
            drain: Default::default(),
        }
    }

    fn plan_for(
        estate: &Estate,
        md: &ModelDeployment,
        pools: &BTreeMap<String, PoolCapacity>,
    ) -> crate::planner::ComponentPlan {
        let replace = replacements(md, pools);
        let mut estate = estate.clone();
        estate
            .deployments
            .insert(Estate::key_of(md), Arc::new(md.clone()));
        let request = Request {
            deployment: md,
            demand: &BTreeMap::new(),
            states: &BTreeMap::new(),
            replace: &replace,
        };
        decide_together(&estate, &[request], 1_800_000_000)
            .pop()
            .unwrap()
            .plans
            .remove(0)
    }

    fn on(plan: &crate::planner::ComponentPlan, pool: &str) -> u32 {
        plan.placements
            .iter()
            .filter(|p| p.pool == pool)
            .map(|p| p.replicas)
            .sum()
    }

    #[test]
    fn a_stockout_on_the_spot_pool_moves_its_shortfall_to_on_demand() {
        // No private GPU: the ranker's 6 replicas burst; 4 run on spot, 2 are stuck there.
        let mut estate = estate(0, 0);
        let md = with_placements(
            &estate.deployments[&("shop".into(), "recs".into())],
            "ranker",
            &[("spot", 6)],
        );
        let ranker = key("recs", "ranker");
        let spot = assessed(&mut estate, "spot", &ranker, 2, 20, 0, 4);
        assert!(spot.assessment.is_short());
        let pools = BTreeMap::from([("spot".to_string(), spot)]);
        let replace = replacements(&md, &pools);
        assert_eq!(replace["ranker"]["spot"], 2);
        let plan = plan_for(&estate, &md, &pools);
        assert_eq!(
            (on(&plan, "spot"), on(&plan, "ondemand")),
            (4, 2),
            "{plan:?}"
        );
        let told = notes(&replace, &pools);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1, SHORTFALL_REPLACED);
        // Once decided, the same assessment moves nothing more.
        let decided = with_placements(&md, "ranker", &[("spot", 4), ("ondemand", 2)]);
        assert!(replacements(&decided, &pools).is_empty());
        let plan = plan_for(&estate, &decided, &pools);
        assert_eq!(
            (on(&plan, "spot"), on(&plan, "ondemand")),
            (4, 2),
            "{plan:?}"
        );
    }

    #[test]
    fn replicas_on_a_doomed_node_are_replaced_ahead_and_kept_until_it_goes() {
        let mut estate = estate(0, 0);
        let md = with_placements(
            &estate.deployments[&("shop".into(), "recs".into())],
            "ranker",
            &[("spot", 6)],
        );
        let ranker = key("recs", "ranker");
        let spot = assessed(&mut estate, "spot", &ranker, 0, 0, 2, 4);
        assert!(!spot.assessment.is_short());
        // The pool controller counts no capacity on the doomed node: 4 GPUs, all in use.
        Arc::make_mut(estate.pools.get_mut("spot").unwrap()).status = Some(ComputePoolStatus {
            observed_capacity: Some(crate::api::ObservedCapacity {
                gpus: 4,
                ..Default::default()
            }),
            ..Default::default()
        });
        let pools = BTreeMap::from([("spot".to_string(), spot)]);
        let plan = plan_for(&estate, &md, &pools);
        assert_eq!(
            (on(&plan, "spot"), on(&plan, "ondemand")),
            (4, 2),
            "{plan:?}"
        );
        // The workload on spot keeps its 6 until the node goes: planned 4 + doomed 2.
        let held = holds(&md, std::slice::from_ref(&plan), &pools, false);
        assert_eq!(
            held.get(&("ranker".to_string(), "spot".to_string())),
            Some(&(on(&plan, "spot") + 2))
        );
        assert_eq!(
            notes(&replacements(&md, &pools), &pools)[0].1,
            REPLACING_AHEAD
        );
        // The node gone (no doomed replicas left): nothing held.
        let gone = BTreeMap::from([(
            "spot".to_string(),
            assessed(&mut estate, "spot", &ranker, 0, 0, 0, 4),
        )]);
        assert!(holds(&md, std::slice::from_ref(&plan), &gone, false).is_empty());
    }

    #[test]
    fn no_workload_of_a_component_scales_in_while_its_drained_replicas_wait_to_be_put_back() {
        let mut estate = estate(0, 0);
        let md = estate.deployments[&("shop".into(), "recs".into())].clone();
        let ranker = key("recs", "ranker");
        // The reclamation was cancelled: spot runs 4 (2 of them still labelled out), on-demand
        // runs 2; the plan now wants spot 3, on-demand 1.
        let mut spot = assessed(&mut estate, "spot", &ranker, 0, 0, 0, 4);
        spot.bound = BTreeMap::from([(ranker.clone(), 4)]);
        spot.awaiting_put_back = BTreeMap::from([(ranker.clone(), 2)]);
        let mut ondemand = assessed(&mut estate, "ondemand", &ranker, 0, 0, 0, 2);
        ondemand.bound = BTreeMap::from([(ranker.clone(), 2)]);
        let mut pools = BTreeMap::from([
            ("spot".to_string(), spot),
            ("ondemand".to_string(), ondemand),
        ]);
        let placement = |pool: &str, replicas| crate::planner::Placement {
            pool: pool.into(),
            cloud: Cloud::Public,
            replicas,
            reason: String::new(),
        };
        let plan = crate::planner::ComponentPlan {
            key: ranker.clone(),
            data_class: DataClass::Internal,
            desired_replicas: 4,
            placements: vec![placement("spot", 3), placement("ondemand", 1)],
            unplaced: 0,
            reasons: Vec::new(),
            cost_per_hour: 0.0,
        };
        let held = holds(&md, std::slice::from_ref(&plan), &pools, false);
        assert_eq!(
            held,
            BTreeMap::from([
                (("ranker".to_string(), "ondemand".to_string()), 2),
                (("ranker".to_string(), "spot".to_string()), 4),
            ])
        );
        // A hold never grows a workload beyond the plan: the plan wanting more wins.
        let mut more = plan.clone();
        more.placements = vec![placement("spot", 6), placement("ondemand", 1)];
        let held = holds(&md, std::slice::from_ref(&more), &pools, false);
        assert_eq!(held[&("ranker".to_string(), "spot".to_string())], 6);
        // During a rollout the rollout decision sizes each version: no put-back hold.
        assert!(holds(&md, std::slice::from_ref(&plan), &pools, true).is_empty());
        // Put back: the scale-in goes ahead.
        pools.get_mut("spot").unwrap().awaiting_put_back.clear();
        assert!(holds(&md, std::slice::from_ref(&plan), &pools, false).is_empty());
    }

    #[test]
    fn replacements_on_the_pools_other_nodes_start_next_to_the_doomed_replicas() {
        let mut estate = estate(0, 0);
        let md = estate.deployments[&("shop".into(), "recs".into())].clone();
        let ranker = key("recs", "ranker");
        // 1 healthy + 2 doomed run on spot; the plan keeps the healthy one and puts one
        // replacement on spot's other node: the workload runs 2 + the 2 doomed until they go.
        let spot = assessed(&mut estate, "spot", &ranker, 0, 0, 2, 1);
        let pools = BTreeMap::from([("spot".to_string(), spot)]);
        let placement = |pool: &str, replicas| crate::planner::Placement {
            pool: pool.into(),
            cloud: Cloud::Public,
            replicas,
            reason: String::new(),
        };
        let plan = crate::planner::ComponentPlan {
            key: ranker.clone(),
            data_class: DataClass::Internal,
            desired_replicas: 3,
            placements: vec![placement("spot", 2), placement("ondemand", 1)],
            unplaced: 0,
            reasons: Vec::new(),
            cost_per_hour: 0.0,
        };
        let held = holds(&md, &[plan], &pools, false);
        assert_eq!(
            held,
            BTreeMap::from([(("ranker".to_string(), "spot".to_string()), 4)])
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever is short or doomed in the private pool, and whatever the public pools say,
        /// a sensitive component's replicas never go public, and the internal one never places
        /// more than it wants.
        #[test]
        fn a_stockout_or_a_reclamation_never_sends_a_sensitive_replica_public(
            private_gpus in 0u32..=8,
            running in 0u32..=3,
            stuck in 0u32..=3,
            waited in 0i64..=60,
            doomed in 0u32..=3,
            spot_short in any::<bool>(),
            floor in prop_oneof![Just(0u32), Just(50), Just(100)],
        ) {
            let mut estate = estate(private_gpus, floor);
            let encoder = key("enc", "encoder");
            let enc = with_placements(
                &estate.deployments[&("shop".into(), "enc".into())],
                "encoder",
                &[("dc", running + stuck.min(3 - running.min(3)))],
            );
            let dc = assessed(&mut estate, "dc", &encoder, stuck, waited, doomed.min(running), running - doomed.min(running));
            let mut pools = BTreeMap::from([("dc".to_string(), dc)]);
            if spot_short {
                let ranker = key("recs", "ranker");
                pools.insert("spot".into(), assessed(&mut estate, "spot", &ranker, 2, 60, 0, 0));
            }
            let plan = plan_for(&estate, &enc, &pools);
            prop_assert_eq!(plan.replicas_in(Cloud::Public), 0, "{:?}", plan);
            prop_assert!(plan.placements.iter().all(|p| p.pool == "dc"));
            prop_assert!(plan.placements.iter().map(|p| p.replicas).sum::<u32>() <= 3);

            let recs = with_placements(&estate.deployments[&("shop".into(), "recs".into())], "ranker", &[("spot", 4)]);
            let plan = plan_for(&estate, &recs, &pools);
            prop_assert!(plan.placements.iter().map(|p| p.replicas).sum::<u32>() <= 6);
        }
    }
}
