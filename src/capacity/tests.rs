//! One test per rule of the tracker, and properties over random noisy observation sequences.

use super::signals::{reclamation_signal, taint_signal, unschedulable_since};
use super::*;
use crate::api::{AutoscalerKind, Cloud, DataClass, ElasticNodes, GpuCapacity, PoolCapacity};
use crate::planner::{BurstPreference, Headroom, PoolHealth, Price, Resources};
use k8s_openapi::api::core::v1::{Node, Pod};
use proptest::prelude::*;

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn key(component: &str) -> ComponentKey {
    ComponentKey {
        namespace: "shop".into(),
        deployment: "recs".into(),
        component: component.into(),
    }
}

/// A fixed pool: 180 s unschedulable, 600 s back-off, 300 s recovery.
fn fixed() -> PoolSettings {
    PoolSettings {
        capacity_type: CapacityType::Spot,
        node_startup_seconds: None,
        stockout: StockoutHandling::default(),
    }
}

fn elastic(node_startup: u32) -> PoolSettings {
    PoolSettings {
        node_startup_seconds: Some(node_startup),
        ..fixed()
    }
}

fn pending(component: &str, since: i64, cause: PendingCause) -> PendingReplica {
    PendingReplica {
        component: key(component),
        since: t(since),
        cause,
    }
}

fn observe(at: i64, pending: Vec<PendingReplica>) -> PoolObservation {
    PoolObservation {
        at: t(at),
        pending,
        nodes: Vec::new(),
    }
}

#[test]
fn a_replica_within_its_limit_does_not_make_the_pool_short() {
    let seen = assess(
        &fixed(),
        &TrackerState::default(),
        &observe(179, vec![pending("ranker", 0, PendingCause::Unschedulable)]),
    );
    assert!(!seen.is_short());
    assert_eq!(seen.transition, None);
    assert_eq!(
        seen.shortfall_replicas(),
        0,
        "still within its limit: not re-placed"
    );
    assert_eq!(seen.short_condition().0, "False");
}

#[test]
fn a_replica_stuck_past_the_limit_makes_the_pool_short() {
    let seen = assess(
        &fixed(),
        &TrackerState::default(),
        &observe(
            180,
            vec![
                pending("ranker", 0, PendingCause::Unschedulable),
                pending("ranker", 170, PendingCause::Unschedulable),
                pending("encoder", 100, PendingCause::Unschedulable),
            ],
        ),
    );
    assert!(seen.is_short());
    assert_eq!(seen.transition, Some(Transition::BecameShort));
    // Every unscheduled replica of a short pool is re-placed, not only the one past its limit.
    assert_eq!(seen.shortfall.get(&key("ranker")), Some(&2));
    assert_eq!(seen.shortfall.get(&key("encoder")), Some(&1));
    let (status, reason, message) = seen.short_condition();
    assert_eq!((status, reason), ("True", "Stockout"));
    assert!(
        message.contains("1 replica(s) unschedulable for more than 180s"),
        "{message}"
    );
    let shortage = seen.shortage_status().unwrap();
    assert_eq!(shortage.since.0, t(180));
    assert_eq!(shortage.backoff_until.0, t(780));
    assert_eq!(shortage.shortfall_replicas, 3);
    assert_eq!(seen.eligible_not_before, Some(t(1080)));
}

#[test]
fn an_elastic_pool_waits_for_its_nodes_unless_the_autoscaler_gave_up() {
    let settings = elastic(420);
    let waiting = assess(
        &settings,
        &TrackerState::default(),
        &observe(599, vec![pending("ranker", 0, PendingCause::Unschedulable)]),
    );
    assert!(
        !waiting.is_short(),
        "180 s plus 420 s of node start-up allowed"
    );
    let late = assess(
        &settings,
        &TrackerState::default(),
        &observe(600, vec![pending("ranker", 0, PendingCause::Unschedulable)]),
    );
    assert!(late.is_short());
    let gave_up = assess(
        &settings,
        &TrackerState::default(),
        &observe(180, vec![pending("ranker", 0, PendingCause::NoNodeComing)]),
    );
    assert!(gave_up.is_short(), "no node is coming: no start-up grace");
}

/// Short at 180 s: back-off until 780 s.
fn short_at_180() -> TrackerState {
    assess(
        &fixed(),
        &TrackerState::default(),
        &observe(180, vec![pending("ranker", 0, PendingCause::Unschedulable)]),
    )
    .state
}

#[test]
fn a_short_pool_stays_short_through_the_backoff_however_it_looks() {
    let mut state = short_at_180();
    for at in [200, 400, 779, 1079] {
        let seen = assess(&fixed(), &state, &observe(at, Vec::new()));
        assert!(seen.is_short(), "at {at}");
        assert_eq!(seen.shortfall_replicas(), 0, "nothing left to re-place");
        state = seen.state;
    }
    let seen = assess(&fixed(), &state, &observe(1080, Vec::new()));
    assert!(
        !seen.is_short(),
        "clean since before the back-off ended, 300 s after it"
    );
    assert_eq!(seen.transition, Some(Transition::Recovered));
    assert_eq!(seen.short_condition().0, "False");
}

#[test]
fn an_unschedulable_replica_restarts_the_recovery_count() {
    let mut state = short_at_180();
    for (at, dirty) in [(800, false), (1000, true), (1100, false), (1399, false)] {
        let pending = if dirty {
            vec![pending("ranker", 990, PendingCause::Unschedulable)]
        } else {
            Vec::new()
        };
        let seen = assess(&fixed(), &state, &observe(at, pending));
        assert!(seen.is_short(), "at {at}");
        state = seen.state;
    }
    let seen = assess(&fixed(), &state, &observe(1400, Vec::new()));
    assert!(!seen.is_short(), "300 s clean from 1100 s");
}

#[test]
fn after_a_recovery_a_replica_waits_its_full_limit_again() {
    let mut state = short_at_180();
    state = assess(&fixed(), &state, &observe(780, Vec::new())).state;
    state = assess(&fixed(), &state, &observe(1080, Vec::new())).state;
    assert!(state.shortage.is_none());
    // A replica pending since long before, which the clean observations missed (noise).
    let missed = pending("ranker", 100, PendingCause::Unschedulable);
    let seen = assess(&fixed(), &state, &observe(1100, vec![missed.clone()]));
    assert!(
        !seen.is_short(),
        "its wait counts from the recovery at 1080 s"
    );
    let seen = assess(&fixed(), &seen.state, &observe(1260, vec![missed]));
    assert!(seen.is_short());
}

fn node(
    name: &str,
    taint: Option<(&str, Option<&str>)>,
    replicas: &[(&str, u32)],
) -> NodeObservation {
    NodeObservation {
        name: name.into(),
        reclamation: taint.and_then(|(k, v)| taint_signal(k, v)),
        replicas: replicas.iter().map(|(c, n)| (key(c), *n)).collect(),
    }
}

#[test]
fn replicas_on_a_reclaimed_node_are_replaced_ahead_without_making_the_pool_short() {
    let observation = PoolObservation {
        at: t(0),
        pending: Vec::new(),
        nodes: vec![
            node(
                "spot-a",
                Some(("karpenter.sh/disrupted", None)),
                &[("ranker", 2), ("encoder", 1)],
            ),
            node("spot-b", None, &[("ranker", 3)]),
            node(
                "spot-c",
                Some(("aws-node-termination-handler/spot-itn", Some("1700000000"))),
                &[("ranker", 1)],
            ),
        ],
    };
    let seen = assess(&fixed(), &TrackerState::default(), &observation);
    assert!(!seen.is_short());
    assert_eq!(seen.doomed.get(&key("ranker")), Some(&3));
    assert_eq!(seen.doomed.get(&key("encoder")), Some(&1));
    assert_eq!(seen.reclaiming_nodes, ["spot-a", "spot-c"]);
    assert!(
        seen.reasons
            .iter()
            .any(|r| r.contains("spot-a") && r.contains("Karpenter")),
        "{:?}",
        seen.reasons
    );
}

#[test]
fn the_supported_reclamation_taints_and_only_those() {
    for key in [
        "karpenter.sh/disrupted",
        "aws-node-termination-handler/spot-itn",
        "aws-node-termination-handler/rebalance-recommendation",
        "aws-node-termination-handler/scheduled-maintenance",
        "aws-node-termination-handler/asg-lifecycle-termination",
        "cloud.google.com/impending-node-termination",
        "ToBeDeletedByClusterAutoscaler",
    ] {
        assert!(taint_signal(key, None).is_some(), "{key}");
        assert!(
            taint_signal(key, Some("1700000000")).is_some(),
            "{key} with a value"
        );
    }
    assert!(taint_signal("karpenter.sh/disruption", Some("disrupting")).is_some());
    assert!(taint_signal("karpenter.sh/disruption", None).is_none());
    for other in [
        "node.kubernetes.io/unschedulable",
        "DeletionCandidateOfClusterAutoscaler",
        "nvidia.com/gpu",
        "karpenter.sh/unregistered",
    ] {
        assert!(taint_signal(other, None).is_none(), "{other}");
    }
}

#[test]
fn nodes_and_pods_are_read_from_their_objects() {
    let tainted: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"},
            {"key": "cloud.google.com/impending-node-termination", "effect": "NoSchedule"}]}
    }))
    .unwrap();
    assert_eq!(
        reclamation_signal(&tainted).unwrap().signal,
        "cloud.google.com/impending-node-termination"
    );
    let cordoned: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n2"}, "spec": {"unschedulable": true}
    }))
    .unwrap();
    assert_eq!(
        reclamation_signal(&cordoned),
        None,
        "a cordon is not a reclamation"
    );
    let deleting: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n3", "deletionTimestamp": "2026-12-03T10:00:00Z"}
    }))
    .unwrap();
    assert_eq!(
        reclamation_signal(&deleting).unwrap().signal,
        "deletionTimestamp"
    );

    let pod = |phase: &str, node: Option<&str>, status: &str, reason: Option<&str>| -> Pod {
        let mut spec = serde_json::json!({"containers": []});
        if let Some(node) = node {
            spec["nodeName"] = serde_json::json!(node);
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": spec,
            "status": {"phase": phase, "conditions": [{"type": "PodScheduled", "status": status,
                "reason": reason, "lastTransitionTime": "2026-12-03T10:00:00Z"}]}
        }))
        .unwrap()
    };
    let stuck = pod("Pending", None, "False", Some("Unschedulable"));
    let (since, cause) = unschedulable_since(&stuck).unwrap();
    assert_eq!(since, "2026-12-03T10:00:00Z".parse::<Timestamp>().unwrap());
    assert_eq!(cause, PendingCause::Unschedulable);
    assert_eq!(
        unschedulable_since(&pod("Running", Some("n1"), "True", None)),
        None
    );
    assert_eq!(
        unschedulable_since(&pod("Pending", Some("n1"), "True", None)),
        None,
        "bound, pulling its image: not waiting for capacity"
    );
    assert_eq!(
        unschedulable_since(&pod("Pending", None, "False", Some("SchedulingGated"))),
        None
    );
}

fn pool_spec(gpus: u32, elastic: Option<ElasticNodes>) -> ComputePoolSpec {
    serde_json::from_value::<ComputePoolSpec>(serde_json::json!({
        "cloud": "public", "provider": "aws", "region": "us-east-1",
        "capacity": {"gpu": {"type": "l4", "count": gpus}}
    }))
    .map(|mut spec| {
        spec.elastic = elastic;
        spec.capacity = PoolCapacity {
            gpu: Some(GpuCapacity {
                gpu_type: "l4".into(),
                count: gpus,
            }),
            ..Default::default()
        };
        spec
    })
    .unwrap()
}

#[test]
fn addable_capacity_is_bounded_by_the_pool_and_its_node_maximum() {
    assert_eq!(
        addable_capacity(&pool_spec(64, None), 2, 16),
        None,
        "fixed pool"
    );
    let karpenter = |max_nodes, gpus_per_node| ElasticNodes {
        autoscaler: AutoscalerKind::Karpenter,
        node_group: None,
        node_startup_seconds: 400,
        max_nodes,
        gpus_per_node,
    };
    let by_capacity = addable_capacity(&pool_spec(64, Some(karpenter(None, None))), 2, 16).unwrap();
    assert_eq!(
        (
            by_capacity.gpus,
            by_capacity.nodes,
            by_capacity.after_seconds
        ),
        (48, None, 400)
    );
    let by_nodes =
        addable_capacity(&pool_spec(64, Some(karpenter(Some(5), Some(8)))), 2, 16).unwrap();
    assert_eq!((by_nodes.gpus, by_nodes.nodes), (24, Some(3)));
    let observed_size =
        addable_capacity(&pool_spec(64, Some(karpenter(Some(3), None))), 2, 16).unwrap();
    assert_eq!(
        observed_size.gpus, 8,
        "one more node of the 8 GPUs observed per node"
    );
    let from_zero = addable_capacity(&pool_spec(64, Some(karpenter(Some(3), None))), 0, 0).unwrap();
    assert_eq!(
        from_zero.gpus, 64,
        "from zero, node size unknown: the pool's maximum bounds it"
    );
    let full = addable_capacity(&pool_spec(16, Some(karpenter(Some(4), Some(8)))), 2, 16).unwrap();
    assert_eq!(full.gpus, 0);
}

fn view(name: &str) -> PoolView {
    PoolView {
        name: name.into(),
        cloud: Cloud::Public,
        admits: vec![DataClass::Public, DataClass::Internal],
        gpu_type: Some("l4".into()),
        capacity: Headroom::default(),
        health: PoolHealth::Healthy,
        price: Price::default(),
        startup_seconds: 60,
        cluster: "local".into(),
        exports_traffic: false,
        capacity_type: CapacityType::Spot,
        addable: None,
        node_startup_seconds: 0,
        short: None,
    }
}

fn request(component: &str) -> ComponentRequest {
    ComponentRequest {
        key: key(component),
        data_class: DataClass::Internal,
        model_data_class: DataClass::Internal,
        per_replica: Resources::default(),
        gpu_type: None,
        min: 0,
        desired: 0,
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

#[test]
fn an_assessment_becomes_planner_input() {
    let observation = PoolObservation {
        at: t(200),
        pending: vec![pending("ranker", 0, PendingCause::Unschedulable)],
        nodes: vec![node(
            "spot-a",
            Some(("karpenter.sh/disrupted", None)),
            &[("ranker", 1), ("encoder", 2)],
        )],
    };
    let seen = assess(&fixed(), &TrackerState::default(), &observation);
    let mut pool = view("spot");
    let mut components = vec![request("ranker"), request("encoder"), request("other")];
    apply_to_plan(&mut pool, &mut components, &seen);
    assert!(
        pool.short
            .as_deref()
            .is_some_and(|r| r.contains("stockout"))
    );
    assert_eq!(
        components[0].replace.get("spot"),
        Some(&2),
        "one stuck, one doomed"
    );
    assert_eq!(components[1].replace.get("spot"), Some(&2));
    assert!(components[2].replace.is_empty());
}

/// A random observation stream: times move forward by 1 to 240 s; each observation carries
/// up to three pending replicas with random ages, or none (noise: replicas come and go, and an
/// observation can miss them).
fn stream() -> impl Strategy<Value = Vec<(i64, Vec<(i64, bool)>)>> {
    prop::collection::vec(
        (
            1i64..240,
            prop::collection::vec((0i64..900, any::<bool>()), 0..4),
        ),
        1..120,
    )
}

fn settings_strategy() -> impl Strategy<Value = PoolSettings> {
    (
        10u32..400,
        0u32..900,
        0u32..900,
        prop::option::of(0u32..600),
    )
        .prop_map(
            |(unschedulable, backoff, recovery, node_startup)| PoolSettings {
                capacity_type: CapacityType::Spot,
                node_startup_seconds: node_startup,
                stockout: StockoutHandling {
                    unschedulable_seconds: unschedulable,
                    backoff_seconds: backoff,
                    recovery_seconds: recovery,
                },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No flapping: transitions alternate; a short pool stays out at least the back-off and
    /// the recovery hysteresis; an eligible pool turns short again only after a replica waited
    /// its full limit since the recovery; and every recovery follows `recoverySeconds` of
    /// observations without an unschedulable replica, all after the back-off.
    #[test]
    fn no_flapping_and_recovery_only_after_the_hysteresis(
        settings in settings_strategy(),
        steps in stream(),
    ) {
        let mut state = TrackerState::default();
        let mut now = 0i64;
        let mut last_short: Option<i64> = None;
        let mut last_recovered: Option<i64> = None;
        let mut last_dirty: Option<i64> = None;
        let min_wait = i64::from(settings.stockout.unschedulable_seconds);
        for (step, replicas) in steps {
            now += step;
            let pending: Vec<PendingReplica> = replicas
                .iter()
                .map(|&(age, no_node)| pending(
                    "c",
                    now - age,
                    if no_node { PendingCause::NoNodeComing } else { PendingCause::Unschedulable },
                ))
                .collect();
            if !pending.is_empty() {
                last_dirty = Some(now);
            }
            let seen = assess(&settings, &state, &observe(now, pending.clone()));
            match seen.transition {
                Some(Transition::BecameShort) => {
                    prop_assert!(last_short.is_none() || last_recovered.is_some_and(|r| r >= last_short.unwrap()));
                    if let Some(recovered) = last_recovered {
                        prop_assert!(now - recovered >= min_wait, "short again {}s after recovery", now - recovered);
                    }
                    last_short = Some(now);
                }
                Some(Transition::Recovered) => {
                    let since = last_short.expect("recovered without being short");
                    let needed = i64::from(settings.stockout.backoff_seconds)
                        + i64::from(settings.stockout.recovery_seconds);
                    prop_assert!(now - since >= needed, "recovered {}s after onset", now - since);
                    if let Some(dirty) = last_dirty {
                        prop_assert!(
                            now - dirty >= i64::from(settings.stockout.recovery_seconds),
                            "recovered {}s after an unschedulable replica", now - dirty
                        );
                    }
                    prop_assert!(pending.is_empty());
                    last_recovered = Some(now);
                }
                None => {}
            }
            prop_assert_eq!(seen.is_short(), seen.state.shortage.is_some());
            if !seen.is_short() {
                prop_assert_eq!(seen.shortfall_replicas(), 0);
            } else {
                prop_assert_eq!(seen.shortfall_replicas(), pending.len() as u32);
            }
            state = seen.state;
        }
    }
}
