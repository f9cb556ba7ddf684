//! The traffic decision: examples of each rule, then properties over random histories.

use super::*;
use proptest::prelude::*;

const HOME: &str = "local";

fn pool(
    name: &str,
    cluster: &str,
    cloud: Cloud,
    placed: u32,
    current: u32,
    ready: u32,
) -> PoolObservation {
    PoolObservation {
        pool: name.into(),
        cluster: cluster.into(),
        cloud,
        placed,
        current,
        ready,
        reachable: true,
    }
}

fn decide_at(
    data_class: DataClass,
    pools: &[PoolObservation],
    previous: &[PreviousBackend],
    now: i64,
) -> TrafficDecision {
    decide(&TrafficInput {
        data_class,
        home_pool: "dc1",
        home_cluster: HOME,
        pools,
        previous,
        drain_seconds: 30,
        now,
    })
}

/// What the operator persists after writing the route.
fn persisted(decision: &TrafficDecision) -> Vec<PreviousBackend> {
    decision
        .backends
        .iter()
        .map(|b| PreviousBackend {
            pool: b.pool.clone(),
            state: b.state,
            since: b.since,
            weight: b.weight,
        })
        .collect()
}

fn backend<'a>(decision: &'a TrafficDecision, pool: &str) -> &'a BackendDecision {
    decision
        .backends
        .iter()
        .find(|b| b.pool == pool)
        .unwrap_or_else(|| panic!("no backend {pool} in {decision:#?}"))
}

#[test]
fn a_new_public_backend_warms_at_weight_zero_then_serves_its_share() {
    let mut pools = vec![
        pool("dc1", HOME, Cloud::Private, 3, 3, 3),
        pool("aws", "shop/aws", Cloud::Public, 1, 1, 0),
    ];
    let first = decide_at(DataClass::Internal, &pools, &[], 0);
    assert!(first.rewrite);
    assert_eq!(backend(&first, "dc1").kind, BackendKind::Service);
    assert_eq!(backend(&first, "dc1").weight, 1000);
    let aws = backend(&first, "aws");
    assert_eq!(
        (aws.kind, aws.state, aws.weight),
        (BackendKind::ServiceImport, BackendState::Warming, 0)
    );
    pools[1].ready = 1;
    let second = decide_at(DataClass::Internal, &pools, &persisted(&first), 10);
    assert!(second.rewrite, "Warming to Serving rewrites the route");
    assert_eq!(backend(&second, "aws").state, BackendState::Serving);
    assert_eq!(backend(&second, "aws").since, 10);
    assert_eq!(backend(&second, "aws").weight, 250);
    assert_eq!(backend(&second, "dc1").weight, 750);
    assert_eq!(
        backend(&second, "dc1").since,
        0,
        "unchanged state keeps its time"
    );
}

#[test]
fn failback_drains_at_weight_zero_for_the_drain_period_before_release() {
    let serving = vec![
        pool("dc1", HOME, Cloud::Private, 3, 3, 3),
        pool("aws", "shop/aws", Cloud::Public, 2, 2, 2),
    ];
    let before = persisted(&decide_at(DataClass::Internal, &serving, &[], 0));
    let mut failback = serving.clone();
    failback[1].placed = 0;
    let start = decide_at(DataClass::Internal, &failback, &before, 100);
    let aws = backend(&start, "aws");
    assert_eq!(
        (aws.state, aws.weight, aws.since),
        (BackendState::Draining, 0, 100)
    );
    assert!(start.rewrite);
    assert_eq!(
        start.hold("aws").unwrap().keep,
        2,
        "replicas kept while draining"
    );
    assert!(!start.hold("aws").unwrap().released);
    assert_eq!(start.next_change_at, Some(130));
    let during = decide_at(DataClass::Internal, &failback, &persisted(&start), 129);
    assert!(!during.hold("aws").unwrap().released);
    assert!(!during.rewrite, "nothing changed");
    let after = decide_at(DataClass::Internal, &failback, &persisted(&during), 130);
    assert_eq!(after.hold("aws").unwrap().keep, 0);
    assert!(after.hold("aws").unwrap().released);
    assert_eq!(after.next_change_at, None);
    // Once the replicas are gone the backend leaves the route.
    failback[1].current = 0;
    failback[1].ready = 0;
    let gone = decide_at(DataClass::Internal, &failback, &persisted(&after), 140);
    assert!(gone.rewrite);
    assert_eq!(gone.backends.len(), 1);
}

#[test]
fn a_drain_is_not_released_when_the_weight_was_never_published_as_zero() {
    // The status says Draining but with weight (kept because nothing else served): the drain
    // clock starts only when the weight drops to 0.
    let pools = vec![
        pool("dc1", HOME, Cloud::Private, 3, 3, 3),
        pool("aws", "shop/aws", Cloud::Public, 0, 2, 2),
    ];
    let previous = vec![
        PreviousBackend {
            pool: "dc1".into(),
            state: BackendState::Warming,
            since: 0,
            weight: 0,
        },
        PreviousBackend {
            pool: "aws".into(),
            state: BackendState::Draining,
            since: 0,
            weight: 1000,
        },
    ];
    let decision = decide_at(DataClass::Internal, &pools, &previous, 500);
    let aws = backend(&decision, "aws");
    assert_eq!((aws.weight, aws.since), (0, 500));
    assert!(!decision.hold("aws").unwrap().released);
}

#[test]
fn draining_backends_keep_weight_while_nothing_else_is_ready() {
    let pools = vec![
        pool("dc1", HOME, Cloud::Private, 3, 3, 0),
        pool("aws", "shop/aws", Cloud::Public, 0, 2, 2),
    ];
    let decision = decide_at(DataClass::Internal, &pools, &[], 0);
    let aws = backend(&decision, "aws");
    assert_eq!((aws.state, aws.weight), (BackendState::Draining, 1000));
    assert!(aws.reason.contains("no other backend"), "{}", aws.reason);
    assert_eq!(decision.hold("aws").unwrap().keep, 2);
}

#[test]
fn partial_scale_in_weights_the_replicas_that_stay_and_releases_after_the_drain() {
    let pools = vec![
        pool("dc1", HOME, Cloud::Private, 2, 2, 2),
        pool("aws", "shop/aws", Cloud::Public, 2, 6, 6),
    ];
    let start = decide_at(DataClass::Internal, &pools, &[], 0);
    let aws = backend(&start, "aws");
    assert_eq!((aws.state, aws.weight), (BackendState::Draining, 500));
    assert_eq!(start.hold("aws").unwrap().keep, 6);
    let end = decide_at(DataClass::Internal, &pools, &persisted(&start), 30);
    assert_eq!(end.hold("aws").unwrap().keep, 2);
    assert!(end.hold("aws").unwrap().released);
}

#[test]
fn an_unreachable_cluster_gets_weight_zero_at_once_and_keeps_its_replicas() {
    let mut pools = vec![
        pool("dc1", HOME, Cloud::Private, 2, 2, 2),
        pool("aws", "shop/aws", Cloud::Public, 4, 4, 4),
    ];
    let serving = decide_at(DataClass::Internal, &pools, &[], 0);
    pools[1].reachable = false;
    pools[1].placed = 0;
    let cut = decide_at(DataClass::Internal, &pools, &persisted(&serving), 1);
    let aws = backend(&cut, "aws");
    assert_eq!((aws.state, aws.weight), (BackendState::Unreachable, 0));
    assert_eq!(backend(&cut, "dc1").weight, 1000);
    assert_eq!(cut.hold("aws").unwrap().keep, 4);
    assert!(cut.rewrite);
    pools[1].reachable = true;
    pools[1].placed = 4;
    let back = decide_at(DataClass::Internal, &pools, &persisted(&cut), 2);
    assert_eq!(backend(&back, "aws").state, BackendState::Serving);
    assert_eq!(backend(&back, "aws").weight, 667);
}

#[test]
fn a_sensitive_component_never_gets_a_public_backend() {
    let pools = vec![
        pool("dc1", HOME, Cloud::Private, 2, 2, 2),
        pool("dc2", "dc2", Cloud::Private, 2, 2, 2),
        pool("aws", "shop/aws", Cloud::Public, 4, 4, 4),
        pool("gpu-public-local", HOME, Cloud::Public, 1, 1, 1),
    ];
    let decision = decide_at(DataClass::Sensitive, &pools, &[], 0);
    assert_eq!(
        decision
            .backends
            .iter()
            .map(|b| b.pool.as_str())
            .collect::<Vec<_>>(),
        ["dc1", "dc2"]
    );
    assert_eq!(
        backend(&decision, "dc1").ready,
        2,
        "the public local pool is not counted"
    );
    assert_eq!(decision.excluded.len(), 2);
    assert!(decision.excluded[0].reason.contains("sensitive"));
}

#[test]
fn small_flaps_keep_the_route_and_large_moves_rewrite_it() {
    let mut pools = vec![
        pool("dc1", HOME, Cloud::Private, 10, 10, 10),
        pool("aws", "shop/aws", Cloud::Public, 10, 10, 10),
    ];
    let first = decide_at(DataClass::Internal, &pools, &[], 0);
    pools[1].ready = 9; // 526/474: 26 per mille from 500/500
    let flap = decide_at(DataClass::Internal, &pools, &persisted(&first), 1);
    assert!(!flap.rewrite);
    assert_eq!(
        backend(&flap, "aws").weight,
        500,
        "the route's weight stands"
    );
    assert_eq!(backend(&flap, "aws").ready, 9);
    pools[1].ready = 7; // 588/412: 88 per mille
    let moved = decide_at(DataClass::Internal, &pools, &persisted(&flap), 2);
    assert!(moved.rewrite);
    assert_eq!(backend(&moved, "aws").weight, 412);
    pools[1].ready = 0;
    let empty = decide_at(DataClass::Internal, &pools, &persisted(&moved), 3);
    assert!(
        empty.rewrite,
        "a backend with no ready replica loses its weight at once"
    );
    assert_eq!(backend(&empty, "aws").weight, 0);
    assert_eq!(backend(&empty, "aws").state, BackendState::Warming);
}

#[test]
fn per_mille_sums_to_the_scale_and_never_zeroes_a_ready_backend() {
    assert_eq!(per_mille(&[1, 1, 1]), vec![334, 333, 333]);
    assert_eq!(per_mille(&[0, 0]), vec![0, 0]);
    assert_eq!(per_mille(&[5000, 1]), vec![1000, 1]);
    assert_eq!(per_mille(&[]), Vec::<u32>::new());
}

#[test]
fn the_guard_rejects_a_public_or_unknown_backend_of_a_sensitive_route() {
    let known = vec![
        (
            "svc".to_string(),
            BackendKind::Service,
            "dc1".to_string(),
            Cloud::Private,
        ),
        (
            "svc-aws".to_string(),
            BackendKind::ServiceImport,
            "aws".to_string(),
            Cloud::Public,
        ),
    ];
    let local = RouteBackend {
        kind: "Service",
        name: "svc",
    };
    let public = RouteBackend {
        kind: "ServiceImport",
        name: "svc-aws",
    };
    let unknown = RouteBackend {
        kind: "ServiceImport",
        name: "other",
    };
    assert!(guard("c", DataClass::Sensitive, [local.clone()], &known).is_ok());
    assert!(matches!(
        guard(
            "c",
            DataClass::Sensitive,
            [local.clone(), public.clone()],
            &known
        ),
        Err(GuardError::PublicBackend { .. })
    ));
    assert!(matches!(
        guard("c", DataClass::Sensitive, [unknown], &known),
        Err(GuardError::UnknownBackend { .. })
    ));
    assert!(guard("c", DataClass::Internal, [local, public], &known).is_ok());
}

#[test]
fn planned_traffic_weights_every_placed_replica() {
    let placements = vec![
        ("dc1".to_string(), HOME.to_string(), Cloud::Private, 3),
        ("aws".to_string(), "shop/aws".to_string(), Cloud::Public, 1),
    ];
    let plan = planned(DataClass::Internal, "dc1", HOME, &placements);
    assert_eq!(
        plan.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [750, 250]
    );
    assert!(
        plan.backends
            .iter()
            .all(|b| b.state == BackendState::Serving)
    );
}

// ---- Properties over random histories -------------------------------------------------------

/// One pool's situation at one step of a random history.
#[derive(Clone, Debug)]
struct PoolStep {
    placed: u32,
    /// Of the replicas that exist, how many are ready (scaled to `current`).
    ready_per_8: u32,
    reachable: bool,
}

#[derive(Clone, Debug)]
struct Step {
    pools: Vec<PoolStep>,
    dt: i64,
}

#[derive(Clone, Debug)]
struct History {
    data_class: DataClass,
    drain_seconds: u32,
    /// Cluster (0 = home) and cloud of each pool.
    layout: Vec<(usize, Cloud)>,
    steps: Vec<Step>,
}

fn history() -> impl Strategy<Value = History> {
    (1usize..=4)
        .prop_flat_map(|n| {
            (
                prop_oneof![
                    Just(DataClass::Public),
                    Just(DataClass::Internal),
                    Just(DataClass::Sensitive)
                ],
                prop_oneof![Just(0u32), Just(5), Just(30), Just(90)],
                proptest::collection::vec(
                    (
                        0usize..3,
                        prop_oneof![Just(Cloud::Private), Just(Cloud::Public)],
                    ),
                    n,
                ),
                proptest::collection::vec(
                    (
                        proptest::collection::vec(
                            (0u32..6, 0u32..=8, proptest::bool::weighted(0.85)).prop_map(
                                |(placed, ready_per_8, reachable)| PoolStep {
                                    placed,
                                    ready_per_8,
                                    reachable,
                                },
                            ),
                            n,
                        ),
                        0i64..60,
                    )
                        .prop_map(|(pools, dt)| Step { pools, dt }),
                    1..10,
                ),
            )
        })
        .prop_map(|(data_class, drain_seconds, mut layout, steps)| {
            // The home pool is in the home cluster, by definition.
            layout[0].0 = 0;
            (data_class, drain_seconds, layout, steps)
        })
        .prop_map(|(data_class, drain_seconds, layout, steps)| History {
            data_class,
            drain_seconds,
            layout,
            steps,
        })
}

/// Replays a history as the operator would (write the route, persist its status, scale as
/// the holds allow), checking every property at every step.
fn check(history: &History) -> Result<(), TestCaseError> {
    let names: Vec<String> = (0..history.layout.len()).map(|i| format!("p{i}")).collect();
    let clusters = ["local", "east", "west"];
    let mut current = vec![0u32; history.layout.len()];
    let mut previous: Vec<PreviousBackend> = Vec::new();
    // When each pool's backend was last seen entering an unbroken run of published decisions
    // in Draining (at weight 0 for `zero`): the replicas may go only after the drain.
    let mut draining_since: BTreeMap<String, i64> = BTreeMap::new();
    let mut zero_since: BTreeMap<String, i64> = BTreeMap::new();
    let mut now = 1_000_000i64;
    for step in &history.steps {
        now += step.dt;
        let pools: Vec<PoolObservation> = history
            .layout
            .iter()
            .zip(&step.pools)
            .enumerate()
            .map(|(i, (&(cluster, cloud), s))| {
                // New replicas exist at once (not ready); removals wait for the hold.
                current[i] = current[i].max(s.placed);
                PoolObservation {
                    pool: names[i].clone(),
                    cluster: clusters[cluster].into(),
                    cloud,
                    placed: s.placed,
                    current: current[i],
                    ready: current[i] * s.ready_per_8 / 8,
                    reachable: s.reachable,
                }
            })
            .collect();
        let decision = decide(&TrafficInput {
            data_class: history.data_class,
            home_pool: "p0",
            home_cluster: "local",
            pools: &pools,
            previous: &previous,
            drain_seconds: history.drain_seconds,
            now,
        });
        let ready_of = |b: &BackendDecision| -> u32 {
            pools
                .iter()
                .filter(|p| {
                    history.data_class.may_reside_in(p.cloud)
                        && if b.kind == BackendKind::Service {
                            p.cluster == "local"
                        } else {
                            p.pool == b.pool
                        }
                })
                .map(|p| p.ready)
                .sum()
        };
        for b in &decision.backends {
            // Never weight on a backend with no ready replica.
            prop_assert!(b.weight == 0 || ready_of(b) > 0, "{b:?}");
            // Never a public backend for a sensitive component.
            prop_assert!(history.data_class.may_reside_in(b.cloud), "{b:?}");
            prop_assert!(
                pools
                    .iter()
                    .filter(|p| if b.kind == BackendKind::Service {
                        p.cluster == "local"
                    } else {
                        p.pool == b.pool
                    })
                    .all(|p| !p.reachable
                        <= (b.state == BackendState::Unreachable && b.weight == 0)
                        || !history.data_class.may_reside_in(p.cloud)),
                "an unreachable pool's backend has weight 0 at once: {b:?}"
            );
        }
        let route: Vec<RouteBackend> = decision
            .backends
            .iter()
            .map(|b| RouteBackend {
                kind: b.kind.as_str(),
                name: &b.pool,
            })
            .collect();
        let known: Vec<(String, BackendKind, String, Cloud)> = decision
            .backends
            .iter()
            .map(|b| (b.pool.clone(), b.kind, b.pool.clone(), b.cloud))
            .collect();
        prop_assert!(guard("c", history.data_class, route, &known).is_ok());
        // Some weight whenever a reachable, admissible replica is ready.
        let ready_anywhere = pools
            .iter()
            .any(|p| p.reachable && p.ready > 0 && history.data_class.may_reside_in(p.cloud));
        let home_unreachable = pools.iter().any(|p| p.cluster == "local" && !p.reachable);
        if ready_anywhere && !home_unreachable {
            prop_assert!(decision.total_weight() > 0, "{decision:#?}");
        }
        // Proportional once stable: every backend serving, the route just written.
        if decision.rewrite
            && decision
                .backends
                .iter()
                .all(|b| b.state == BackendState::Serving)
        {
            let total: u64 = decision
                .backends
                .iter()
                .map(|b| u64::from(ready_of(b)))
                .sum();
            for b in &decision.backends {
                let exact = u64::from(ready_of(b)) * 1000;
                let weight = u64::from(b.weight) * total;
                prop_assert!(weight.abs_diff(exact) <= total, "{b:?} of {total}");
            }
        }
        // Replicas go only after the drain (remote pools; the local Service does not drain).
        for (i, p) in pools.iter().enumerate() {
            let hold = decision.hold(&p.pool).unwrap();
            prop_assert!(hold.keep >= p.placed);
            if !p.reachable {
                prop_assert!(hold.keep >= p.current, "nothing removed while unreachable");
            }
            // Pools a sensitive component is never routed to carry no requests to drain.
            let routed = history.data_class.may_reside_in(p.cloud);
            if hold.keep < p.current && p.cluster != "local" && routed {
                let drained_for = now - draining_since.get(&p.pool).copied().unwrap_or(now);
                prop_assert!(
                    drained_for >= i64::from(history.drain_seconds),
                    "{p:?} {hold:?}"
                );
                if p.placed == 0 {
                    let zero_for = now - zero_since.get(&p.pool).copied().unwrap_or(now);
                    prop_assert!(
                        zero_for >= i64::from(history.drain_seconds),
                        "all replicas released after {zero_for}s at weight 0: {p:?}"
                    );
                }
            }
            if hold.keep < p.current {
                current[i] = hold.keep;
            }
        }
        for b in &decision.backends {
            if b.state == BackendState::Draining {
                draining_since.entry(b.pool.clone()).or_insert(now);
            } else {
                draining_since.remove(&b.pool);
            }
            if b.state == BackendState::Draining && b.weight == 0 {
                zero_since.entry(b.pool.clone()).or_insert(now);
            } else {
                zero_since.remove(&b.pool);
            }
        }
        for name in &names {
            if !decision.backends.iter().any(|b| &b.pool == name) {
                draining_since.remove(name);
                zero_since.remove(name);
            }
        }
        previous = persisted(&decision);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100_000))]

    /// Over random histories of placements, readiness, reachability and time: no weight on a
    /// backend without ready replicas, never a public backend for sensitive, unreachable means
    /// weight 0 at once, replicas released only after the drain (at weight 0 when all go), and
    /// weights proportional to ready replicas once stable.
    #[test]
    fn traffic_decisions_hold_their_rules_over_random_histories(history in history()) {
        check(&history)?;
    }
}
