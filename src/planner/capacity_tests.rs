//! The planner with elastic, short and spot pools (issue #19): unit tests per rule and
//! properties over random estates.

use super::*;
use crate::api::{CapacityType, Cloud, DataClass};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn pool(name: &str, cloud: Cloud, gpus: u32, gpu_hour: f64) -> PoolView {
    PoolView {
        name: name.into(),
        cloud,
        admits: match cloud {
            Cloud::Private => DataClass::ALL.to_vec(),
            Cloud::Public => vec![DataClass::Public, DataClass::Internal],
        },
        gpu_type: Some("l4".into()),
        capacity: Headroom {
            gpus,
            cpu_milli: None,
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
        capacity_type: CapacityType::OnDemand,
        addable: None,
        node_startup_seconds: 0,
        short: None,
    }
}

fn spot(mut pool: PoolView) -> PoolView {
    pool.capacity_type = CapacityType::Spot;
    pool
}

fn elastic(mut pool: PoolView, addable_gpus: u32, node_startup: u32) -> PoolView {
    pool.addable = Some(Headroom {
        gpus: addable_gpus,
        cpu_milli: None,
        memory_bytes: None,
        replicas: None,
    });
    pool.node_startup_seconds = node_startup;
    pool
}

fn short(mut pool: PoolView) -> PoolView {
    pool.short = Some("stockout: 2 replica(s) unschedulable for more than 180s".into());
    pool
}

fn component(name: &str, class: DataClass, desired: u32) -> ComponentRequest {
    ComponentRequest {
        key: ComponentKey {
            namespace: "shop".into(),
            deployment: "recs".into(),
            component: name.into(),
        },
        data_class: class,
        model_data_class: class,
        per_replica: Resources {
            gpus: 1,
            cpu_milli: 0,
            memory_bytes: 0,
        },
        gpu_type: None,
        min: 0,
        desired,
        allowed_pools: None,
        policy: None,
        burst: BurstPreference::default(),
        current: BTreeMap::new(),
        rebalance: true,
        traffic_home_cluster: None,
        replace: BTreeMap::new(),
        on_demand_floor_percent: 0,
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

fn by_pool(plan: &ComponentPlan) -> BTreeMap<&str, u32> {
    plan.placements
        .iter()
        .map(|p| (p.pool.as_str(), p.replicas))
        .collect()
}

fn reason_of<'p>(plan: &'p ComponentPlan, pool: &str) -> &'p str {
    &plan
        .placements
        .iter()
        .find(|p| p.pool == pool)
        .expect("placed there")
        .reason
}

#[test]
fn free_capacity_is_used_before_nodes_that_must_be_added() {
    let pools = vec![
        elastic(pool("karpenter-l4", Cloud::Public, 2, 1.0), 6, 420),
        pool("fixed-l4", Cloud::Public, 2, 3.0),
    ];
    let plan = plan(&input(
        pools,
        vec![component("ranker", DataClass::Internal, 6)],
    ));
    let ranker = &plan.components[0];
    assert_eq!(
        by_pool(ranker),
        BTreeMap::from([("fixed-l4", 2), ("karpenter-l4", 4)]),
        "free now on both pools first, then two on nodes the autoscaler adds"
    );
    let reason = reason_of(ranker, "karpenter-l4");
    assert!(reason.contains("2 wait for nodes: +420s"), "{reason}");
    assert!(!reason_of(ranker, "fixed-l4").contains("wait for nodes"));
}

#[test]
fn an_elastic_pool_with_free_capacity_makes_nobody_wait() {
    let pools = vec![elastic(pool("karpenter-l4", Cloud::Public, 4, 1.0), 8, 420)];
    let plan = plan(&input(
        pools,
        vec![component("ranker", DataClass::Internal, 3)],
    ));
    let reason = reason_of(&plan.components[0], "karpenter-l4");
    assert!(!reason.contains("wait for nodes"), "{reason}");
}

/// Chosen where the issue is silent: growing a private pool comes before bursting, as private
/// pools always come first; the wait is stated in the reason.
#[test]
fn a_private_elastic_pool_grows_before_anything_bursts() {
    let pools = vec![
        elastic(pool("dc-elastic", Cloud::Private, 0, 0.5), 2, 300),
        pool("cloud", Cloud::Public, 8, 2.0),
    ];
    let plan = plan(&input(
        pools,
        vec![component("ranker", DataClass::Internal, 3)],
    ));
    let ranker = &plan.components[0];
    assert_eq!(
        by_pool(ranker),
        BTreeMap::from([("cloud", 1), ("dc-elastic", 2)])
    );
    assert!(reason_of(ranker, "dc-elastic").contains("+300s"));
}

#[test]
fn a_short_pool_keeps_what_runs_and_its_shortfall_goes_to_the_next_pool_in_order() {
    let pools = vec![
        short(spot(pool("spot-l4", Cloud::Public, 8, 1.0))),
        pool("ondemand-l4", Cloud::Public, 8, 3.0),
    ];
    let mut ranker = component("ranker", DataClass::Internal, 4);
    ranker.burst.order = vec!["spot-l4".into(), "ondemand-l4".into()];
    ranker.current = BTreeMap::from([("spot-l4".into(), 4)]);
    ranker.replace = BTreeMap::from([("spot-l4".into(), 1)]);
    let plan = plan(&input(pools, vec![ranker]));
    let ranker = &plan.components[0];
    assert_eq!(
        by_pool(ranker),
        BTreeMap::from([("ondemand-l4", 1), ("spot-l4", 3)])
    );
    let reason = reason_of(ranker, "ondemand-l4");
    assert!(
        reason.contains("better pools short (stockout): spot-l4"),
        "{reason}"
    );
}

#[test]
fn a_short_pool_takes_no_new_replica_even_with_room() {
    let pools = vec![short(pool("spot-l4", Cloud::Public, 8, 1.0))];
    let plan = plan(&input(
        pools,
        vec![component("ranker", DataClass::Internal, 2)],
    ));
    let ranker = &plan.components[0];
    assert_eq!(ranker.placed(), 0);
    assert_eq!(ranker.unplaced, 2);
    assert!(
        ranker
            .reasons
            .iter()
            .any(|r| r.contains("short (stockout)") && r.contains("spot-l4")),
        "{:?}",
        ranker.reasons
    );
}

#[test]
fn replicas_on_a_doomed_node_are_replaced_on_another_pool() {
    // The spot pool's capacity no longer counts the doomed node: 2 GPUs left of 4 replicas.
    let pools = vec![
        spot(pool("spot-l4", Cloud::Public, 2, 1.0)),
        pool("ondemand-l4", Cloud::Public, 8, 3.0),
    ];
    let mut ranker = component("ranker", DataClass::Internal, 4);
    ranker.current = BTreeMap::from([("spot-l4".into(), 4)]);
    ranker.replace = BTreeMap::from([("spot-l4".into(), 2)]);
    let plan = plan(&input(pools, vec![ranker]));
    assert_eq!(
        by_pool(&plan.components[0]),
        BTreeMap::from([("ondemand-l4", 2), ("spot-l4", 2)])
    );
}

#[test]
fn a_stockout_of_every_private_pool_never_sends_sensitive_work_public() {
    let pools = vec![
        short(pool("dc1", Cloud::Private, 8, 0.5)),
        short(pool("dc2", Cloud::Private, 8, 0.5)),
        pool("cloud", Cloud::Public, 64, 1.0),
    ];
    let mut encoder = component("encoder", DataClass::Sensitive, 3);
    encoder.current = BTreeMap::from([("dc1".into(), 3)]);
    encoder.replace = BTreeMap::from([("dc1".into(), 3)]);
    let plan = plan(&input(pools, vec![encoder]));
    let encoder = &plan.components[0];
    assert_eq!(encoder.replicas_in(Cloud::Public), 0);
    assert_eq!(encoder.unplaced, 3);
    assert!(
        encoder.reasons.iter().any(|r| r.contains("residency")),
        "{:?}",
        encoder.reasons
    );
}

#[test]
fn the_on_demand_floor_keeps_a_share_of_public_replicas_off_spot() {
    let pools = vec![
        spot(pool("spot-l4", Cloud::Public, 10, 1.0)),
        pool("ondemand-l4", Cloud::Public, 10, 3.0),
    ];
    let mut ranker = component("ranker", DataClass::Internal, 5);
    let without = plan(&input(pools.clone(), vec![ranker.clone()]));
    assert_eq!(
        by_pool(&without.components[0]),
        BTreeMap::from([("spot-l4", 5)])
    );
    ranker.on_demand_floor_percent = 50;
    let with = plan(&input(pools.clone(), vec![ranker.clone()]));
    let placed = &with.components[0];
    assert_eq!(
        by_pool(placed),
        BTreeMap::from([("ondemand-l4", 3), ("spot-l4", 2)]),
        "50 % of 5 rounds up to 3"
    );
    assert!(reason_of(placed, "ondemand-l4").contains("on-demand floor"));
    // Stable: planned again from its own outcome, nothing moves back to the cheaper spot pool.
    let mut again = input(pools, vec![ranker]);
    again.components[0].current = placed
        .placements
        .iter()
        .map(|p| (p.pool.clone(), p.replicas))
        .collect();
    assert_eq!(plan(&again), with);
}

#[test]
fn an_unmet_floor_is_reported_and_spot_capacity_is_not_given_up_for_it() {
    let pools = vec![
        spot(pool("spot-l4", Cloud::Public, 10, 1.0)),
        pool("ondemand-l4", Cloud::Public, 1, 3.0),
    ];
    let mut ranker = component("ranker", DataClass::Internal, 4);
    ranker.on_demand_floor_percent = 50;
    let plan = plan(&input(pools, vec![ranker]));
    let ranker = &plan.components[0];
    assert_eq!(
        by_pool(ranker),
        BTreeMap::from([("ondemand-l4", 1), ("spot-l4", 3)])
    );
    assert_eq!(ranker.unplaced, 0);
    assert!(
        ranker
            .reasons
            .iter()
            .any(|r| r.contains("on-demand floor 50% not held: 1 of 4")),
        "{:?}",
        ranker.reasons
    );
}

#[test]
fn the_floor_never_breaks_a_budget() {
    let pools = vec![
        spot(pool("spot-l4", Cloud::Public, 10, 1.0)),
        pool("ondemand-l4", Cloud::Public, 10, 3.0),
    ];
    let mut ranker = component("ranker", DataClass::Internal, 4);
    ranker.on_demand_floor_percent = 100;
    ranker.policy = Some("burst".into());
    let mut estate = input(pools, vec![ranker]);
    estate.budgets.insert(
        "burst".into(),
        Budget {
            max_public_replicas: None,
            max_cost_per_hour: Some(6.0),
        },
    );
    let plan = plan(&estate);
    let ranker = &plan.components[0];
    assert!(
        ranker.cost_per_hour <= 6.0 + 1e-9,
        "{}",
        ranker.cost_per_hour
    );
    // 4 on spot cost 4; each move to on-demand adds 2: one move fits the budget of 6.
    assert_eq!(
        by_pool(ranker),
        BTreeMap::from([("ondemand-l4", 1), ("spot-l4", 3)])
    );
}

// ---- properties -------------------------------------------------------------------------

fn arb_pool(index: usize) -> impl Strategy<Value = PoolView> {
    (
        any::<bool>(),
        0u32..8,
        1u32..40,
        any::<bool>(),
        prop::option::of(0u32..8),
        prop::bool::weighted(0.25),
        any::<bool>(),
    )
        .prop_map(
            move |(public, gpus, cost, is_spot, addable, is_short, lists_sensitive)| {
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
                if is_spot && public {
                    p = spot(p);
                }
                if let Some(added) = addable {
                    p = elastic(p, added, 400);
                }
                if is_short {
                    p = short(p);
                }
                // Misconfiguration on purpose: residency must hold even then.
                if lists_sensitive {
                    p.admits = DataClass::ALL.to_vec();
                }
                p
            },
        )
}

fn arb_component(index: usize, pools: usize) -> impl Strategy<Value = ComponentRequest> {
    (
        0usize..3,
        1u32..3,
        0u32..3,
        0u32..8,
        prop::collection::btree_map(0..pools, 0u32..4, 0..3),
        prop::collection::btree_map(0..pools, 0u32..3, 0..2),
        prop::option::of(0u32..=100),
        any::<bool>(),
    )
        .prop_map(
            move |(class, gpus, min, extra, current, replace, floor, policy)| {
                let mut c = component(&format!("c{index}"), DataClass::ALL[class], min + extra);
                c.min = min;
                c.per_replica.gpus = gpus;
                c.current = current
                    .into_iter()
                    .map(|(p, n)| (format!("pool-{p}"), n))
                    .collect();
                c.replace = replace
                    .into_iter()
                    .map(|(p, n)| (format!("pool-{p}"), n))
                    .collect();
                c.on_demand_floor_percent = floor.unwrap_or(0);
                c.policy = policy.then(|| "policy-0".to_string());
                c
            },
        )
}

fn arb_input() -> impl Strategy<Value = PlanInput> {
    (1usize..7, 1usize..5)
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
            let mut estate = input(pools, components);
            estate.budgets.insert(
                "policy-0".into(),
                Budget {
                    max_public_replicas: max_public,
                    max_cost_per_hour: max_cost.map(f64::from),
                },
            );
            estate
        })
}

/// The next reconcile: what was planned now runs, and nothing is left to replace.
fn as_current(input: &PlanInput, plan: &Plan) -> PlanInput {
    let mut next = input.clone();
    for (c, p) in next.components.iter_mut().zip(&plan.components) {
        c.current = p
            .placements
            .iter()
            .map(|pl| (pl.pool.clone(), pl.replicas))
            .collect();
        c.replace.clear();
    }
    next
}

fn pool_named<'i>(input: &'i PlanInput, name: &str) -> &'i PoolView {
    input.pools.iter().find(|p| p.name == name).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    /// A stockout or spot loss anywhere never sends sensitive work (or work on a sensitive
    /// model) to a public pool, and nothing lands on an ineligible pool.
    #[test]
    fn residency_holds_with_elastic_short_and_spot_pools(input in arb_input()) {
        let plan = plan(&input);
        for (c, p) in input.components.iter().zip(&plan.components) {
            if c.data_class == DataClass::Sensitive || c.model_data_class == DataClass::Sensitive {
                prop_assert_eq!(p.replicas_in(Cloud::Public), 0);
            }
            for placement in &p.placements {
                prop_assert!(ineligibility(pool_named(&input, &placement.pool), c).is_none());
            }
            prop_assert_eq!(p.placed() + p.unplaced, c.desired);
        }
    }

    /// Capacity (free now plus what can be added) and every budget hold; a short pool holds no
    /// more of a component than it ran and was not asked to replace.
    #[test]
    fn capacity_budgets_and_short_pools_are_respected(input in arb_input()) {
        let plan = plan(&input);
        let mut gpus: BTreeMap<&str, u32> = BTreeMap::new();
        let (mut public, mut cost) = (0u32, 0.0f64);
        for (c, p) in input.components.iter().zip(&plan.components) {
            for placement in &p.placements {
                let view = pool_named(&input, &placement.pool);
                *gpus.entry(view.name.as_str()).or_default() += c.per_replica.gpus * placement.replicas;
                if view.short.is_some() {
                    let ran = c.current.get(&view.name).copied().unwrap_or(0);
                    let lost = c.replace.get(&view.name).copied().unwrap_or(0);
                    prop_assert!(placement.replicas <= ran.saturating_sub(lost),
                        "{} new replicas on short pool {}", placement.replicas, view.name);
                }
                if view.cloud == Cloud::Public && c.policy.as_deref() == Some("policy-0") {
                    public += placement.replicas;
                    cost += f64::from(placement.replicas) * view.price.per_replica_hour(&c.per_replica);
                }
            }
        }
        for (name, used) in gpus {
            let view = pool_named(&input, name);
            let most = view.capacity.gpus + view.addable.map_or(0, |a| a.gpus);
            prop_assert!(used <= most, "{name}: {used} GPUs of {most}");
        }
        let budget = input.budgets["policy-0"];
        prop_assert!(budget.max_public_replicas.is_none_or(|m| public <= m));
        prop_assert!(budget.max_cost_per_hour.is_none_or(|m| cost <= m + 1e-6));
    }

    /// No oscillation: the plan, fed back as the running state, is planned again unchanged,
    /// tick after tick.
    #[test]
    fn no_oscillation_with_elastic_short_and_spot_pools(input in arb_input()) {
        let first = plan(&input);
        prop_assert_eq!(&first, &plan(&input));
        let next = as_current(&input, &first);
        let second = plan(&next);
        let third = plan(&as_current(&next, &second));
        prop_assert_eq!(&second, &third);
        prop_assert_eq!(&plan(&as_current(&next, &third)), &third);
    }

    /// Without budgets in the way, the floor holds whenever an eligible on-demand public pool
    /// still has room for one of the component's spot replicas.
    #[test]
    fn the_on_demand_floor_holds_whenever_on_demand_capacity_exists(input in arb_input()) {
        let mut input = input;
        for c in &mut input.components {
            c.policy = None;
        }
        let plan = plan(&input);
        let mut left: BTreeMap<String, u32> = input
            .pools
            .iter()
            .map(|p| (p.name.clone(), p.capacity.gpus + p.addable.map_or(0, |a| a.gpus)))
            .collect();
        for (c, p) in input.components.iter().zip(&plan.components) {
            for placement in &p.placements {
                *left.get_mut(&placement.pool).unwrap() -= c.per_replica.gpus * placement.replicas;
            }
        }
        for (c, p) in input.components.iter().zip(&plan.components) {
            let public = p.replicas_in(Cloud::Public);
            let on_demand: u32 = p
                .placements
                .iter()
                .filter(|x| x.cloud == Cloud::Public
                    && pool_named(&input, &x.pool).capacity_type == CapacityType::OnDemand)
                .map(|x| x.replicas)
                .sum();
            let needed = (u64::from(public) * u64::from(c.on_demand_floor_percent)).div_ceil(100) as u32;
            if on_demand >= needed {
                continue;
            }
            prop_assert!(p.reasons.iter().any(|r| r.contains("on-demand floor")), "{:?}", p.reasons);
            for view in &input.pools {
                let usable = view.cloud == Cloud::Public
                    && view.capacity_type == CapacityType::OnDemand
                    && view.short.is_none()
                    && ineligibility(view, c).is_none();
                if usable {
                    prop_assert!(left[&view.name] < c.per_replica.gpus,
                        "floor not held while {} has {} GPUs left", view.name, left[&view.name]);
                }
            }
        }
    }
}
