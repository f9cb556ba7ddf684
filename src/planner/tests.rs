//! Unit and property tests of the planner.

use super::*;
use crate::api::{Cloud, DataClass};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn pool(name: &str, cloud: Cloud, gpus: u32, gpu_hour: f64) -> PoolView {
    PoolView {
        name: name.into(),
        cloud,
        admits: match cloud {
            Cloud::Private => DataClass::ALL.to_vec(),
            Cloud::Public => vec![DataClass::Public, DataClass::Internal],
        },
        gpu_type: (gpus > 0).then(|| "l4".to_string()),
        capacity: Headroom {
            gpus,
            cpu_milli: Some(1_000_000),
            memory_bytes: None,
            replicas: None,
        },
        health: PoolHealth::Healthy,
        price: Price {
            gpu_hour,
            cpu_hour: 0.0,
            gib_hour: 0.0,
        },
        startup_seconds: 60,
        cluster: "local".into(),
        exports_traffic: false,
    }
}

fn component(name: &str, class: DataClass, min: u32, desired: u32) -> ComponentRequest {
    ComponentRequest {
        key: ComponentKey {
            namespace: "ns".into(),
            deployment: "md".into(),
            component: name.into(),
        },
        data_class: class,
        model_data_class: class,
        per_replica: Resources {
            gpus: 1,
            cpu_milli: 1000,
            memory_bytes: 0,
        },
        gpu_type: None,
        min,
        desired,
        allowed_pools: None,
        policy: None,
        burst: BurstPreference::default(),
        current: BTreeMap::new(),
        rebalance: true,
        traffic_home_cluster: None,
    }
}

fn input(pools: Vec<PoolView>, components: Vec<ComponentRequest>) -> PlanInput {
    PlanInput {
        pools,
        components,
        budgets: BTreeMap::new(),
        options: PlannerOptions::default(),
    }
}

fn replicas_by_pool(plan: &ComponentPlan) -> BTreeMap<String, u32> {
    plan.placements
        .iter()
        .map(|p| (p.pool.clone(), p.replicas))
        .collect()
}

#[test]
fn private_first_then_public_overflow() {
    let plan = plan(&input(
        vec![
            pool("priv", Cloud::Private, 4, 1.0),
            pool("pub", Cloud::Public, 10, 0.5),
        ],
        vec![component("ranker", DataClass::Internal, 1, 7)],
    ));
    let c = &plan.components[0];
    assert_eq!(
        replicas_by_pool(c),
        BTreeMap::from([("priv".into(), 4), ("pub".into(), 3)])
    );
    assert_eq!(c.unplaced, 0);
    assert!(
        c.placements[1].reason.contains("burst"),
        "{}",
        c.placements[1].reason
    );
}

#[test]
fn sensitive_stays_private_and_reports_the_shortfall() {
    let plan = plan(&input(
        vec![
            pool("priv", Cloud::Private, 2, 1.0),
            pool("pub", Cloud::Public, 10, 0.1),
        ],
        vec![component("encoder", DataClass::Sensitive, 1, 5)],
    ));
    let c = &plan.components[0];
    assert_eq!(c.replicas_in(Cloud::Public), 0);
    assert_eq!(c.placed(), 2);
    assert_eq!(c.unplaced, 3);
    assert!(
        c.reasons
            .iter()
            .any(|r| r.contains("residency") && r.contains("pub")),
        "{:?}",
        c.reasons
    );
    assert!(
        c.reasons
            .iter()
            .any(|r| r.contains("full (gpu)") && r.contains("priv")),
        "{:?}",
        c.reasons
    );
}

#[test]
fn sensitive_stays_private_even_when_a_public_pool_claims_to_admit_it() {
    let mut public = pool("pub", Cloud::Public, 10, 0.1);
    public.admits = DataClass::ALL.to_vec();
    let mut encoder = component("encoder", DataClass::Sensitive, 1, 3);
    encoder.allowed_pools = Some(BTreeSet::from(["pub".to_string()]));
    let plan = plan(&input(vec![public], vec![encoder]));
    assert_eq!(plan.components[0].placed(), 0);
    assert_eq!(plan.components[0].unplaced, 3);
}

#[test]
fn components_of_a_sensitive_model_never_burst() {
    let mut head = component("head", DataClass::Internal, 1, 4);
    head.model_data_class = DataClass::Sensitive;
    let plan = plan(&input(
        vec![
            pool("priv", Cloud::Private, 1, 1.0),
            pool("pub", Cloud::Public, 10, 0.1),
        ],
        vec![head],
    ));
    assert_eq!(plan.components[0].replicas_in(Cloud::Public), 0);
    assert_eq!(plan.components[0].unplaced, 3);
}

#[test]
fn public_pools_follow_the_policy_order_else_cheapest() {
    let pools = vec![
        pool("priv", Cloud::Private, 0, 1.0),
        pool("pub-cheap", Cloud::Public, 10, 0.5),
        pool("pub-dear", Cloud::Public, 10, 2.0),
    ];
    let cheapest = plan(&input(
        pools.clone(),
        vec![component("r", DataClass::Public, 0, 1)],
    ));
    assert_eq!(cheapest.components[0].placements[0].pool, "pub-cheap");
    let mut ordered = component("r", DataClass::Public, 0, 1);
    ordered.burst.order = vec!["pub-dear".into(), "pub-cheap".into()];
    let ordered = plan(&input(pools, vec![ordered]));
    assert_eq!(ordered.components[0].placements[0].pool, "pub-dear");
}

#[test]
fn disabled_burst_keeps_replicas_private() {
    let mut c = component("r", DataClass::Internal, 0, 5);
    c.burst.enabled = false;
    let plan = plan(&input(
        vec![
            pool("priv", Cloud::Private, 2, 1.0),
            pool("pub", Cloud::Public, 10, 0.5),
        ],
        vec![c],
    ));
    assert_eq!(plan.components[0].placed(), 2);
    assert!(
        plan.components[0]
            .reasons
            .iter()
            .any(|r| r.contains("disabled"))
    );
}

#[test]
fn gpu_type_and_allow_list_are_hard_rules() {
    let mut a100 = pool("a100", Cloud::Private, 8, 1.0);
    a100.gpu_type = Some("a100".into());
    let l4 = pool("l4", Cloud::Private, 8, 0.3);
    let mut wants_a100 = component("enc", DataClass::Internal, 1, 2);
    wants_a100.gpu_type = Some("a100".into());
    let mut only_l4 = component("rank", DataClass::Internal, 1, 2);
    only_l4.allowed_pools = Some(BTreeSet::from(["l4".to_string()]));
    let plan = plan(&input(vec![a100, l4], vec![wants_a100, only_l4]));
    assert!(
        plan.components[0]
            .placements
            .iter()
            .all(|p| p.pool == "a100")
    );
    assert!(plan.components[1].placements.iter().all(|p| p.pool == "l4"));
}

#[test]
fn unhealthy_pools_get_nothing() {
    let mut sick = pool("priv-a", Cloud::Private, 8, 0.1);
    sick.health = PoolHealth::Unhealthy("cluster unreachable".into());
    let plan = plan(&input(
        vec![sick, pool("priv-b", Cloud::Private, 8, 1.0)],
        vec![component("r", DataClass::Internal, 1, 3)],
    ));
    assert_eq!(
        replicas_by_pool(&plan.components[0]),
        BTreeMap::from([("priv-b".into(), 3)])
    );
}

#[test]
fn spreads_min_two_over_two_pools_of_one_cloud() {
    let plan = plan(&input(
        vec![
            pool("a", Cloud::Private, 8, 0.5),
            pool("b", Cloud::Private, 8, 1.0),
            pool("p", Cloud::Public, 8, 0.1),
        ],
        vec![component("r", DataClass::Internal, 2, 4)],
    ));
    let by_pool = replicas_by_pool(&plan.components[0]);
    assert_eq!(by_pool.len(), 2, "{by_pool:?}");
    assert!(!by_pool.contains_key("p"), "never bursts just to spread");
}

#[test]
fn a_cpu_only_component_does_not_spread_onto_a_gpu_pool() {
    // One CPU pool with room, and an A100 pool: spreading the CPU component there would take
    // GPU-pool room for nothing.
    let mut a100 = pool("dc1-a100", Cloud::Private, 16, 0.0);
    a100.gpu_type = Some("nvidia-a100-80gb".into());
    let mut cpu = pool("dc1-cpu", Cloud::Private, 0, 0.0);
    cpu.capacity.cpu_milli = Some(64_000);
    let mut transform = component("feature-transform", DataClass::Internal, 2, 4);
    transform.per_replica = Resources {
        gpus: 0,
        cpu_milli: 4000,
        memory_bytes: 0,
    };
    let plan = plan(&input(vec![a100, cpu], vec![transform]));
    assert_eq!(
        replicas_by_pool(&plan.components[0]),
        BTreeMap::from([("dc1-cpu".into(), 4)])
    );
}

#[test]
fn a_cpu_only_component_spreads_over_two_cpu_pools() {
    let mut a100 = pool("dc1-a100", Cloud::Private, 16, 0.0);
    a100.gpu_type = Some("nvidia-a100-80gb".into());
    let cpu_pool = |name: &str| {
        let mut p = pool(name, Cloud::Private, 0, 0.0);
        p.capacity.cpu_milli = Some(64_000);
        p
    };
    let mut transform = component("feature-transform", DataClass::Internal, 2, 4);
    transform.per_replica = Resources {
        gpus: 0,
        cpu_milli: 4000,
        memory_bytes: 0,
    };
    let plan = plan(&input(
        vec![a100, cpu_pool("dc1-cpu-a"), cpu_pool("dc1-cpu-b")],
        vec![transform],
    ));
    let by_pool = replicas_by_pool(&plan.components[0]);
    assert_eq!(by_pool.len(), 2, "{by_pool:?}");
    assert!(!by_pool.contains_key("dc1-a100"), "{by_pool:?}");
}

#[test]
fn mins_win_over_extras() {
    // One private pool of 4 GPUs: the sensitive floor must get in before the internal extras.
    let plan = plan(&input(
        vec![pool("priv", Cloud::Private, 4, 1.0)],
        vec![
            component("extra", DataClass::Internal, 1, 4),
            component("enc", DataClass::Sensitive, 3, 3),
        ],
    ));
    assert_eq!(plan.components[1].placed(), 3);
    assert_eq!(plan.components[0].placed(), 1);
}

#[test]
fn a_sensitive_floor_displaces_burstable_replicas_to_public() {
    let pools = vec![
        pool("priv", Cloud::Private, 4, 1.0),
        pool("pub", Cloud::Public, 8, 2.0),
    ];
    let mut ranker = component("ranker", DataClass::Internal, 2, 6);
    ranker.current = BTreeMap::from([("priv".into(), 4), ("pub".into(), 2)]);
    ranker.rebalance = false;
    let encoder = component("encoder", DataClass::Sensitive, 3, 3);
    let plan = plan(&input(pools, vec![ranker, encoder]));
    assert_eq!(
        replicas_by_pool(&plan.components[1]),
        BTreeMap::from([("priv".into(), 3)])
    );
    assert_eq!(
        replicas_by_pool(&plan.components[0]),
        BTreeMap::from([("priv".into(), 1), ("pub".into(), 5)])
    );
}

#[test]
fn keeps_existing_placements_unless_moving_clearly_pays() {
    let pools = vec![
        pool("a", Cloud::Private, 8, 1.0),
        pool("b", Cloud::Private, 8, 0.9),
    ];
    let mut c = component("r", DataClass::Internal, 1, 3);
    c.current = BTreeMap::from([("a".into(), 3)]);
    let kept = plan(&input(pools.clone(), vec![c.clone()]));
    assert_eq!(
        replicas_by_pool(&kept.components[0]),
        BTreeMap::from([("a".into(), 3)])
    );
    let mut much_cheaper = pools;
    much_cheaper[1].price.gpu_hour = 0.5;
    let moved = plan(&input(much_cheaper, vec![c]));
    assert_eq!(
        replicas_by_pool(&moved.components[0]),
        BTreeMap::from([("b".into(), 3)])
    );
}

#[test]
fn failback_waits_while_rebalance_is_off() {
    let pools = vec![
        pool("priv", Cloud::Private, 8, 1.0),
        pool("pub", Cloud::Public, 8, 2.0),
    ];
    let mut c = component("r", DataClass::Internal, 1, 4);
    c.current = BTreeMap::from([("priv".into(), 1), ("pub".into(), 3)]);
    c.rebalance = false;
    let held = plan(&input(pools.clone(), vec![c.clone()]));
    assert_eq!(held.components[0].replicas_in(Cloud::Public), 3);
    assert!(
        held.components[0].placements[1]
            .reason
            .contains("hysteresis")
    );
    c.rebalance = true;
    let back = plan(&input(pools, vec![c]));
    assert_eq!(back.components[0].replicas_in(Cloud::Public), 0);
}

#[test]
fn failback_brings_every_replica_home_even_with_min_two() {
    let pools = vec![
        pool("priv", Cloud::Private, 8, 1.0),
        pool("pub", Cloud::Public, 8, 2.0),
    ];
    let mut c = component("r", DataClass::Internal, 2, 4);
    c.current = BTreeMap::from([("priv".into(), 3), ("pub".into(), 1)]);
    let plan = plan(&input(pools, vec![c]));
    assert_eq!(
        replicas_by_pool(&plan.components[0]),
        BTreeMap::from([("priv".into(), 4)])
    );
}

#[test]
fn scale_down_removes_public_replicas_first() {
    let pools = vec![
        pool("priv", Cloud::Private, 8, 1.0),
        pool("pub", Cloud::Public, 8, 2.0),
    ];
    let mut c = component("r", DataClass::Internal, 1, 3);
    c.current = BTreeMap::from([("priv".into(), 3), ("pub".into(), 3)]);
    c.rebalance = false;
    let plan = plan(&input(pools, vec![c]));
    assert_eq!(
        replicas_by_pool(&plan.components[0]),
        BTreeMap::from([("priv".into(), 3)])
    );
}

#[test]
fn budgets_bind_across_components_of_a_policy() {
    let pools = vec![
        pool("priv", Cloud::Private, 0, 1.0),
        pool("pub", Cloud::Public, 100, 1.0),
    ];
    let mut a = component("a", DataClass::Internal, 0, 5);
    let mut b = component("b", DataClass::Internal, 0, 5);
    a.policy = Some("p".into());
    b.policy = Some("p".into());
    let mut input = input(pools, vec![a, b]);
    input.budgets.insert(
        "p".into(),
        Budget {
            max_public_replicas: Some(6),
            max_cost_per_hour: Some(5.5),
        },
    );
    let plan = plan(&input);
    let public: u32 = plan
        .components
        .iter()
        .map(|c| c.replicas_in(Cloud::Public))
        .sum();
    assert_eq!(
        public, 5,
        "the cost budget (5.5/h at 1.0/h each) binds before the replica budget"
    );
    assert!(
        plan.components
            .iter()
            .any(|c| c.reasons.iter().any(|r| r.contains("maxCostPerHour")))
    );
}

#[test]
fn no_eligible_pool_is_explained() {
    let mut c = component("cpu", DataClass::Internal, 1, 1);
    c.per_replica.gpus = 1;
    let plan = plan(&input(
        vec![pool("cpu-pool", Cloud::Private, 0, 1.0)],
        vec![c],
    ));
    assert_eq!(plan.components[0].unplaced, 1);
    assert_eq!(
        plan.components[0].reasons,
        vec!["no eligible pool", "no GPUs: cpu-pool"]
    );
}

// ---- properties ----

fn arb_pool(index: usize) -> impl Strategy<Value = PoolView> {
    (
        any::<bool>(),
        0u32..12,
        1u32..40,
        prop::option::of(0u32..10),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(public, gpus, cost, max_replicas, lists_sensitive, healthy, typed)| {
                let cloud = if public {
                    Cloud::Public
                } else {
                    Cloud::Private
                };
                let mut p = pool(
                    &format!("pool-{index}"),
                    cloud,
                    gpus,
                    f64::from(cost) / 10.0,
                );
                // Misconfiguration on purpose: the planner must hold residency even when a public
                // pool's admitted classes wrongly include `sensitive`.
                if lists_sensitive {
                    p.admits = DataClass::ALL.to_vec();
                }
                if typed && gpus > 0 {
                    p.gpu_type = Some("a100".into());
                }
                p.capacity.replicas = max_replicas;
                p.capacity.cpu_milli = Some(u64::from(gpus) * 4000 + 8000);
                if !healthy {
                    p.health = PoolHealth::Unhealthy("probe failed".into());
                }
                p
            },
        )
}

fn arb_component(index: usize, pools: usize) -> impl Strategy<Value = ComponentRequest> {
    (
        0usize..3,
        0u32..3,
        0u32..4,
        0u32..8,
        0u32..3,
        prop::collection::btree_map(0..pools, 0u32..4, 0..3),
        any::<bool>(),
        prop::option::of(0usize..2),
    )
        .prop_map(
            move |(class, gpus, min, extra, cpus, current, rebalance, policy)| {
                let class = DataClass::ALL[class];
                let mut c = component(&format!("c{index}"), class, min, min + extra);
                c.per_replica = Resources {
                    gpus,
                    cpu_milli: u64::from(cpus) * 1000,
                    memory_bytes: 0,
                };
                c.current = current
                    .into_iter()
                    .map(|(p, n)| (format!("pool-{p}"), n))
                    .collect();
                c.rebalance = rebalance;
                c.policy = policy.map(|p| format!("policy-{p}"));
                c
            },
        )
}

fn arb_input() -> impl Strategy<Value = PlanInput> {
    (1usize..7, 1usize..6)
        .prop_flat_map(|(pools, components)| {
            let pools_s: Vec<_> = (0..pools).map(arb_pool).collect();
            let components_s: Vec<_> = (0..components).map(|i| arb_component(i, pools)).collect();
            (
                pools_s,
                components_s,
                prop::option::of(0u32..6),
                prop::option::of(0u32..30),
            )
        })
        .prop_map(|(pools, components, max_public, max_cost)| {
            let mut input = input(pools, components);
            input.budgets.insert(
                "policy-0".into(),
                Budget {
                    max_public_replicas: max_public,
                    max_cost_per_hour: max_cost.map(f64::from),
                },
            );
            input
        })
}

/// Random pools, random GPU components, and last a CPU-only component without a policy (so no
/// budget), all planned afresh: GPU components never compete for a pool without GPUs.
fn arb_estate_with_a_cpu_component() -> impl Strategy<Value = PlanInput> {
    (1usize..7, 0usize..4)
        .prop_flat_map(|(pools, gpu_components)| {
            let pools_s: Vec<_> = (0..pools).map(arb_pool).collect();
            let gpu_s: Vec<_> = (0..gpu_components)
                .map(|i| arb_component(i, pools))
                .collect();
            (pools_s, gpu_s, 0u32..6, 0u32..8, 1u64..4, 0usize..3)
        })
        .prop_map(|(pools, mut components, min, extra, cpus, class)| {
            for c in &mut components {
                c.per_replica.gpus = c.per_replica.gpus.max(1);
                c.current.clear();
            }
            let mut cpu_only = component("cpu-only", DataClass::ALL[class], min, min + extra);
            cpu_only.per_replica = Resources {
                gpus: 0,
                cpu_milli: cpus * 1000,
                memory_bytes: 0,
            };
            cpu_only.policy = None;
            components.push(cpu_only);
            input(pools, components)
        })
}

fn usage(input: &PlanInput, plan: &Plan) -> BTreeMap<String, (u32, u64, u32)> {
    let mut used: BTreeMap<String, (u32, u64, u32)> = BTreeMap::new();
    for (c, p) in input.components.iter().zip(&plan.components) {
        for placement in &p.placements {
            let e = used.entry(placement.pool.clone()).or_default();
            e.0 += c.per_replica.gpus * placement.replicas;
            e.1 += c.per_replica.cpu_milli * u64::from(placement.replicas);
            e.2 += placement.replicas;
        }
    }
    used
}

/// Feeds a plan back as the current state, as the operator does on its next reconcile.
fn as_current(input: &PlanInput, plan: &Plan) -> PlanInput {
    let mut next = input.clone();
    for (c, p) in next.components.iter_mut().zip(&plan.components) {
        c.current = p
            .placements
            .iter()
            .map(|pl| (pl.pool.clone(), pl.replicas))
            .collect();
    }
    next
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn residency_is_never_violated(input in arb_input()) {
        let plan = plan(&input);
        for (c, p) in input.components.iter().zip(&plan.components) {
            if c.data_class == DataClass::Sensitive || c.model_data_class == DataClass::Sensitive {
                prop_assert_eq!(p.replicas_in(Cloud::Public), 0);
            }
            for placement in &p.placements {
                let pool = input.pools.iter().find(|x| x.name == placement.pool).unwrap();
                prop_assert_eq!(pool.cloud, placement.cloud);
                prop_assert!(ineligibility(pool, c).is_none(), "placed on an ineligible pool");
            }
        }
    }

    #[test]
    fn capacity_and_budgets_are_never_exceeded(input in arb_input()) {
        let plan = plan(&input);
        for (pool, (gpus, cpu, replicas)) in usage(&input, &plan) {
            let view = input.pools.iter().find(|p| p.name == pool).unwrap();
            prop_assert!(gpus <= view.capacity.gpus);
            prop_assert!(view.capacity.cpu_milli.is_none_or(|c| cpu <= c));
            prop_assert!(view.capacity.replicas.is_none_or(|r| replicas <= r));
        }
        let budget = input.budgets["policy-0"];
        let mut public = 0;
        let mut cost = 0.0;
        for (c, p) in input.components.iter().zip(&plan.components) {
            if c.policy.as_deref() == Some("policy-0") {
                for placement in p.placements.iter().filter(|x| x.cloud == Cloud::Public) {
                    public += placement.replicas;
                    let pool = input.pools.iter().find(|x| x.name == placement.pool).unwrap();
                    cost += f64::from(placement.replicas) * pool.price.per_replica_hour(&c.per_replica);
                }
            }
        }
        prop_assert!(budget.max_public_replicas.is_none_or(|m| public <= m));
        prop_assert!(budget.max_cost_per_hour.is_none_or(|m| cost <= m + 1e-6));
    }

    #[test]
    fn a_cpu_only_component_is_on_a_gpu_pool_only_when_no_cpu_pool_of_that_cloud_has_room(
        input in arb_estate_with_a_cpu_component()
    ) {
        let plan = plan(&input);
        let mut room: Vec<Headroom> = input.pools.iter().map(|p| p.capacity).collect();
        for (c, p) in input.components.iter().zip(&plan.components) {
            for placement in &p.placements {
                let pi = input.pools.iter().position(|x| x.name == placement.pool).unwrap();
                room[pi].take(&c.per_replica, placement.replicas);
            }
        }
        let cpu_only = input.components.last().unwrap();
        let placed = plan.components.last().unwrap();
        for placement in &placed.placements {
            let on = input.pools.iter().find(|x| x.name == placement.pool).unwrap();
            if on.gpu_type.is_none() {
                continue;
            }
            for (pi, other) in input.pools.iter().enumerate() {
                let cpu_pool = other.gpu_type.is_none() && other.cloud == on.cloud;
                if cpu_pool && ineligibility(other, cpu_only).is_none() {
                    prop_assert_eq!(
                        room[pi].fits(&cpu_only.per_replica).0,
                        0,
                        "{} replicas on GPU pool {} while CPU pool {} has room: {:?}",
                        placement.replicas, on.name, other.name, placed.placements
                    );
                }
            }
        }
    }

    #[test]
    fn every_replica_is_accounted_for(input in arb_input()) {
        let plan = plan(&input);
        for (c, p) in input.components.iter().zip(&plan.components) {
            prop_assert_eq!(p.placed() + p.unplaced, c.desired);
            if p.unplaced > 0 {
                prop_assert!(!p.reasons.is_empty());
            }
        }
    }

    #[test]
    fn planning_is_deterministic_and_stable(input in arb_input()) {
        let first = plan(&input);
        prop_assert_eq!(&first, &plan(&input));
        // Re-planning the outcome with nothing else changed gives the same plan.
        let next = as_current(&input, &first);
        let second = plan(&next);
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(&second, &plan(&as_current(&next, &second)));
    }

    #[test]
    fn a_lone_component_gets_its_min_when_one_pool_can_hold_it(
        pools in (1usize..5).prop_flat_map(|n| (0..n).map(arb_pool).collect::<Vec<_>>()),
        component in arb_component(0, 4),
    ) {
        let mut component = component;
        component.policy = None;
        let input = input(pools, vec![component.clone()]);
        let plan = plan(&input);
        let floor = component.min.min(component.desired);
        let fits_somewhere = input.pools.iter().any(|p| {
            ineligibility(p, &component).is_none() && p.capacity.fits(&component.per_replica).0 >= floor
        });
        if fits_somewhere {
            prop_assert!(plan.components[0].placed() >= floor);
        }
    }
}

fn in_cluster(mut pool: PoolView, cluster: &str, exports_traffic: bool) -> PoolView {
    pool.cluster = cluster.into();
    pool.exports_traffic = exports_traffic;
    pool
}

#[test]
fn a_routed_component_uses_remote_pools_only_where_they_export_traffic() {
    let pools = vec![
        in_cluster(pool("dc1", Cloud::Private, 2, 1.0), "local", false),
        in_cluster(pool("dc1-b", Cloud::Private, 1, 1.0), "local", false),
        in_cluster(pool("dc2", Cloud::Private, 4, 1.0), "dc2", false),
        in_cluster(pool("aws", Cloud::Public, 10, 0.1), "aws", false),
        in_cluster(pool("gcp", Cloud::Public, 2, 0.9), "gcp", true),
    ];
    let mut routed = component("ranker", DataClass::Internal, 1, 7);
    routed.traffic_home_cluster = Some("local".into());
    let plan = plan(&input(pools.clone(), vec![routed.clone()]));
    let c = &plan.components[0];
    assert_eq!(
        replicas_by_pool(c),
        BTreeMap::from([("dc1".into(), 2), ("dc1-b".into(), 1), ("gcp".into(), 2)]),
        "home-cluster pools serve locally; only gcp exports"
    );
    assert_eq!(c.unplaced, 2);
    assert!(
        c.reasons
            .iter()
            .any(|r| r.contains("receives no cross-cluster traffic")
                && r.contains("aws")
                && r.contains("dc2")),
        "{:?}",
        c.reasons
    );
    assert_eq!(
        ineligibility(&pools[3], &routed).as_deref(),
        Some(
            "traffic: outside the component's home cluster and receives no cross-cluster traffic (traffic.export is None)"
        )
    );
    assert_eq!(ineligibility(&pools[0], &routed), None);
    // Without traffic, every pool is eligible as before: dc2 first, then the cheapest public.
    let unrouted = plan_for(pools, component("ranker", DataClass::Internal, 1, 9));
    assert_eq!(unrouted.unplaced, 0);
    assert_eq!(
        replicas_by_pool(&unrouted),
        BTreeMap::from([
            ("aws".into(), 2),
            ("dc1".into(), 2),
            ("dc1-b".into(), 1),
            ("dc2".into(), 4)
        ])
    );
}

fn plan_for(pools: Vec<PoolView>, component: ComponentRequest) -> ComponentPlan {
    plan(&input(pools, vec![component])).components.remove(0)
}
