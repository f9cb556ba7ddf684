//! The rollout decision: examples of each rule, then properties over random rollouts.

use super::*;
use crate::api::{
    AnalysisMetric, CanaryStep, Comparison, NoDataPolicy, RolloutAnalysis, RolloutPause,
    RolloutStrategy,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;

fn step(weight: u32, seconds: Option<Option<u32>>) -> CanaryStep {
    CanaryStep {
        set_weight: weight,
        pause: seconds.map(|s| RolloutPause { seconds: s }),
    }
}

fn analysis(failure_limit: u32, no_data: NoDataPolicy) -> RolloutAnalysis {
    RolloutAnalysis {
        prometheus_url: "http://prom".into(),
        metrics: vec![AnalysisMetric {
            name: "error-rate".into(),
            query: "q".into(),
            comparison: Comparison::LessThan,
            threshold: 0.01,
        }],
        interval_seconds: 10,
        failure_limit,
        no_data,
    }
}

fn canary(steps: Vec<CanaryStep>, analysis: Option<RolloutAnalysis>) -> RolloutSpec {
    RolloutSpec {
        strategy: RolloutStrategy::Canary,
        steps,
        max_surge: Some(IntOrString::Int(1)),
        analysis,
        paused: false,
    }
}

fn pool(name: &str, cloud: Cloud, planned: u32, old: (u32, u32), new: (u32, u32)) -> PoolInput {
    PoolInput {
        pool: name.into(),
        cloud,
        planned,
        spare: 100,
        old: VersionCount {
            current: old.0,
            ready: old.1,
        },
        new: VersionCount {
            current: new.0,
            ready: new.1,
        },
        new_model_verified: true,
    }
}

fn component(sensitive: bool, pools: Vec<PoolInput>) -> ComponentInput {
    ComponentInput {
        name: "ranker".into(),
        sensitive,
        drain_seconds: 30,
        pools,
    }
}

fn run(
    spec: &RolloutSpec,
    state: &RolloutState,
    components: &[ComponentInput],
    action: Option<Action>,
    round: Option<Vec<AnalysisOutcome>>,
    now: i64,
) -> RolloutDecision {
    decide(RolloutInput {
        spec,
        previous: state,
        components,
        action,
        round,
        now,
    })
}

/// Replays the decision's replica counts as if every replica asked for were ready at once.
fn all_ready(components: &[ComponentInput], decision: &RolloutDecision) -> Vec<ComponentInput> {
    components
        .iter()
        .zip(&decision.components)
        .map(|(c, d)| ComponentInput {
            pools: c
                .pools
                .iter()
                .zip(&d.pools)
                .map(|(p, r)| PoolInput {
                    old: VersionCount {
                        current: r.old,
                        ready: r.old,
                    },
                    new: VersionCount {
                        current: r.new,
                        ready: r.new,
                    },
                    ..p.clone()
                })
                .collect(),
            ..c.clone()
        })
        .collect()
}

#[test]
fn a_full_pool_makes_room_for_the_surge_from_the_old_version() {
    let spec = canary(vec![step(25, None)], None);
    let mut full = pool("dc1", Cloud::Private, 12, (12, 12), (0, 0));
    full.spare = 0;
    let mut spec3 = spec.clone();
    spec3.max_surge = Some(IntOrString::Int(3));
    let components = [component(false, vec![full])];
    let d = run(&spec3, &RolloutState::start(0), &components, None, None, 0);
    // First the old version makes the room, and only once it is seen gone does the new one
    // start into it: no order of the two writes asks for more than the pool holds.
    assert_eq!(
        (d.components[0].pools[0].old, d.components[0].pools[0].new),
        (9, 0)
    );
    assert_eq!(d.state.traffic_percent, 0);
    let room_made = all_ready(&components, &d);
    let d = run(&spec3, &d.state, &room_made, None, None, 1);
    assert_eq!(
        (d.components[0].pools[0].old, d.components[0].pools[0].new),
        (9, 3)
    );
    assert_eq!(d.state.traffic_percent, 0);
    let _ = spec;
}

#[test]
fn new_replicas_start_within_the_surge_before_any_traffic_moves() {
    let spec = canary(vec![step(25, Some(Some(60)))], None);
    let components = [component(
        false,
        vec![pool("dc1", Cloud::Private, 4, (4, 4), (0, 0))],
    )];
    let d = run(&spec, &RolloutState::start(0), &components, None, None, 0);
    assert_eq!(
        d.state.traffic_percent, 0,
        "nothing ready on the new version"
    );
    assert_eq!(
        (d.components[0].pools[0].old, d.components[0].pools[0].new),
        (4, 1)
    );
    assert_eq!(d.reason, "StartingReplicas");
}

#[test]
fn a_canary_passes_its_steps_in_order_and_the_old_version_goes_at_the_end() {
    let spec = canary(
        vec![step(25, Some(Some(60))), step(50, Some(Some(60)))],
        None,
    );
    let mut components = vec![component(
        false,
        vec![pool("dc1", Cloud::Private, 4, (4, 4), (0, 0))],
    )];
    let mut state = RolloutState::start(0);
    let mut shares = Vec::new();
    let mut now = 0;
    for _ in 0..200 {
        let d = run(&spec, &state, &components, None, None, now);
        shares.push((d.state.step, d.state.traffic_percent));
        components = all_ready(&components, &d);
        state = d.state;
        if state.phase == RolloutPhase::Succeeded {
            break;
        }
        now += 5;
    }
    assert_eq!(state.phase, RolloutPhase::Succeeded, "{shares:?}");
    let reached: Vec<u32> = shares.iter().map(|s| s.1).collect();
    assert!(reached.contains(&25) && reached.contains(&50) && reached.contains(&100));
    assert!(
        shares.windows(2).all(|w| w[1].0 <= w[0].0 + 1),
        "{shares:?}"
    );
    let pools = &components[0].pools[0];
    assert_eq!((pools.old.current, pools.new.current), (0, 4));
    // Each pause was held: 60 s at 25 and at 50.
    let at_25 = shares.iter().filter(|s| s.1 == 25).count() as i64 * 5;
    assert!(at_25 >= 60, "{shares:?}");
}

#[test]
fn a_failed_analysis_rolls_back_at_once_and_the_new_replicas_go_after_the_drain() {
    let spec = canary(
        vec![step(50, Some(Some(300)))],
        Some(analysis(1, NoDataPolicy::Inconclusive)),
    );
    let components = [component(
        false,
        vec![pool("dc1", Cloud::Private, 4, (2, 2), (2, 2))],
    )];
    let mut state = RolloutState::start(0);
    state.traffic_percent = 50;
    state.step_started_at = Some(0);
    state.traffic_changed_at = Some(0);
    let d = run(
        &spec,
        &state,
        &components,
        None,
        Some(vec![AnalysisOutcome::Fail]),
        100,
    );
    assert_eq!(d.state.phase, RolloutPhase::RolledBack);
    assert_eq!(d.state.traffic_percent, 0, "traffic returns at once");
    assert_eq!(d.reason, "AnalysisFailed");
    let p = &d.components[0].pools[0];
    assert_eq!(
        (p.old, p.new),
        (4, 2),
        "old back to the plan, new kept while draining"
    );
    assert!(d.events.iter().any(|e| e.0 == "RolloutRolledBack" && e.2));
    let after = run(&spec, &d.state, &components, None, None, 131);
    assert_eq!(after.components[0].pools[0].new, 0, "the drain is over");
    assert_eq!(after.state.traffic_percent, 0);
}

#[test]
fn rounds_without_data_hold_the_step_and_never_pass_it() {
    let spec = canary(
        vec![step(20, Some(Some(10))), step(60, None)],
        Some(analysis(2, NoDataPolicy::Inconclusive)),
    );
    let components = [component(
        false,
        vec![pool("dc1", Cloud::Private, 5, (4, 4), (1, 1))],
    )];
    let mut state = RolloutState::start(0);
    state.traffic_percent = 20;
    state.step_started_at = Some(0);
    for t in (0..600).step_by(10) {
        let d = run(
            &spec,
            &state,
            &components,
            None,
            Some(vec![AnalysisOutcome::Inconclusive]),
            t,
        );
        assert_eq!(d.state.step, 0, "at {t}");
        state = d.state;
    }
    assert_eq!(state.inconclusive_rounds, 60);
    let d = run(
        &spec,
        &state,
        &components,
        None,
        Some(vec![AnalysisOutcome::Pass]),
        600,
    );
    assert_eq!(d.state.step, 1);
    // With noData: Fail, the same rounds fail the step.
    let strict = canary(spec.steps.clone(), Some(analysis(2, NoDataPolicy::Fail)));
    let mut state = RolloutState::start(0);
    state.traffic_percent = 20;
    state.step_started_at = Some(0);
    for t in [0, 10] {
        state = run(
            &strict,
            &state,
            &components,
            None,
            Some(vec![AnalysisOutcome::Inconclusive]),
            t,
        )
        .state;
    }
    assert_eq!(state.phase, RolloutPhase::RolledBack);
}

#[test]
fn a_pause_without_seconds_waits_for_resume() {
    let spec = canary(vec![step(30, Some(None)), step(70, None)], None);
    let components = [component(
        false,
        vec![pool("dc1", Cloud::Private, 10, (7, 7), (3, 3))],
    )];
    let mut state = RolloutState::start(0);
    state.traffic_percent = 30;
    let d = run(&spec, &state, &components, None, None, 1000);
    assert_eq!(
        (d.state.step, d.state.phase, d.reason),
        (0, RolloutPhase::Paused, "WaitingForResume")
    );
    let d = run(&spec, &d.state, &components, None, None, 100_000);
    assert_eq!(d.state.step, 0, "time alone does not resume");
    let d = run(
        &spec,
        &d.state,
        &components,
        Some(Action::Resume),
        None,
        100_001,
    );
    assert_eq!(
        (d.state.step, d.state.phase),
        (1, RolloutPhase::Progressing)
    );
    assert!(!d.state.resumed, "a resume ends one pause only");
}

#[test]
fn paused_by_spec_freezes_share_and_step() {
    let mut spec = canary(vec![step(30, Some(Some(0))), step(70, None)], None);
    spec.paused = true;
    let components = [component(
        false,
        vec![pool("dc1", Cloud::Private, 10, (7, 7), (7, 7))],
    )];
    let mut state = RolloutState::start(0);
    state.traffic_percent = 10;
    let d = run(&spec, &state, &components, None, None, 50);
    assert_eq!((d.state.step, d.state.traffic_percent), (0, 10));
    assert_eq!(
        (d.state.phase, d.reason),
        (RolloutPhase::Paused, "PausedBySpec")
    );
}

#[test]
fn abort_and_retry() {
    let spec = canary(vec![step(30, Some(Some(600)))], None);
    let components = [component(
        false,
        vec![pool("dc1", Cloud::Private, 10, (7, 7), (3, 3))],
    )];
    let mut state = RolloutState::start(0);
    state.traffic_percent = 30;
    let d = run(&spec, &state, &components, Some(Action::Abort), None, 10);
    assert_eq!(
        (d.state.phase, d.state.traffic_percent, d.reason),
        (RolloutPhase::Aborted, 0, "Aborted")
    );
    let again = run(&spec, &d.state, &components, Some(Action::Abort), None, 11);
    assert_eq!(
        again.state.finished_at,
        Some(10),
        "an ended rollout stays ended"
    );
    let retried = run(&spec, &d.state, &components, Some(Action::Retry), None, 20);
    assert_eq!(
        (retried.state.phase, retried.state.step),
        (RolloutPhase::Progressing, 0)
    );
}

#[test]
fn a_store_without_the_verified_model_holds_its_pool_and_the_step() {
    let spec = canary(vec![step(50, None)], None);
    let mut public = pool("aws", Cloud::Public, 4, (4, 4), (0, 0));
    public.new_model_verified = false;
    let components = [component(
        false,
        vec![pool("dc1", Cloud::Private, 4, (2, 2), (2, 2)), public],
    )];
    let d = run(&spec, &RolloutState::start(0), &components, None, None, 0);
    assert_eq!(d.components[0].pools[1].new, 0);
    assert!(
        d.components[0].pools[1]
            .held
            .as_deref()
            .unwrap()
            .contains("store")
    );
    assert_eq!(
        d.state.traffic_percent, 25,
        "what the ready new replicas carry, short of 50"
    );
    assert_eq!(d.reason, "WaitingForArtifacts");
    assert!(d.message.contains("ranker/aws"), "{}", d.message);
}

#[test]
fn a_burst_mid_rollout_starts_public_replicas_of_both_versions_at_the_share_reached() {
    let spec = canary(vec![step(25, Some(Some(600))), step(50, None)], None);
    let mut state = RolloutState::start(0);
    state.traffic_percent = 25;
    state.step_started_at = Some(0);
    let private = pool("dc1", Cloud::Private, 8, (6, 6), (2, 2));
    let burst = pool("aws", Cloud::Public, 8, (0, 0), (0, 0));
    let d = run(
        &spec,
        &state,
        &[component(false, vec![private.clone(), burst.clone()])],
        None,
        None,
        60,
    );
    let aws = &d.components[0].pools[1];
    assert_eq!(
        d.state.traffic_percent, 12,
        "the new replicas carry 2 of 16 until the burst's are ready"
    );
    assert_eq!(
        (aws.old, aws.new),
        (7, 2),
        "the burst splits at the share reached (12%)"
    );
    let ready = pool("aws", Cloud::Public, 8, (7, 7), (2, 2));
    let d = run(
        &spec,
        &d.state,
        &[component(false, vec![private.clone(), ready])],
        None,
        None,
        120,
    );
    assert_eq!(
        d.state.traffic_percent, 25,
        "back to the step's share once they are ready"
    );
    assert_eq!(
        d.components[0].pools[1].old, 7,
        "the old version drains before it shrinks"
    );
    let drained = pool("aws", Cloud::Public, 8, (7, 7), (2, 2));
    let d = run(
        &spec,
        &d.state,
        &[component(false, vec![private.clone(), drained])],
        None,
        None,
        200,
    );
    let aws = &d.components[0].pools[1];
    assert_eq!(
        (aws.old, aws.new),
        (6, 2),
        "a quarter of the burst on the new version"
    );
    // Failback: the public pool's plan drops to 0; both versions go there once the drain is over.
    let ready_burst = pool("aws", Cloud::Public, 0, (6, 6), (2, 2));
    let mut settled = state.clone();
    settled.traffic_changed_at = Some(0);
    let d = run(
        &spec,
        &settled,
        &[component(false, vec![private.clone(), ready_burst.clone()])],
        None,
        None,
        120,
    );
    let aws = &d.components[0].pools[1];
    assert_eq!((aws.old, aws.new), (0, 0));
    // A sensitive component never bursts either version.
    let d = run(
        &spec,
        &state,
        &[component(true, vec![private, burst])],
        None,
        None,
        60,
    );
    assert_eq!(
        (d.components[0].pools[1].old, d.components[0].pools[1].new),
        (0, 0)
    );
    assert_eq!(
        d.state.traffic_percent, 25,
        "the private pool alone carries the share"
    );
}

#[test]
fn split_weights_give_each_version_its_share_on_ready_replicas_only() {
    let backends = [
        VersionedBackend {
            backend: "local".into(),
            weight: 600,
            public: false,
            old_ready: 6,
            new_ready: 2,
        },
        VersionedBackend {
            backend: "aws".into(),
            weight: 400,
            public: true,
            old_ready: 4,
            new_ready: 0,
        },
    ];
    let w = split_weights(&backends, 20, false);
    assert_eq!((w[0].new, w[1].new), (200, 0));
    assert_eq!(w[0].old + w[1].old, 800);
    assert_eq!((w[0].old, w[1].old), (480, 320));
    let rollback = split_weights(&backends, 0, false);
    assert!(rollback.iter().all(|b| b.new == 0));
    let sensitive = split_weights(&backends, 20, true);
    assert_eq!((sensitive[1].old, sensitive[1].new), (0, 0));
}

// ---- properties ----

fn arb_spec() -> impl Strategy<Value = RolloutSpec> {
    (
        proptest::collection::btree_set(1u32..=100, 1..5),
        proptest::collection::vec(
            prop_oneof![
                Just(None),
                Just(Some(None)),
                (0u32..40).prop_map(|s| Some(Some(s)))
            ],
            5,
        ),
        1i32..4,
        proptest::option::of((
            1u32..4,
            prop_oneof![Just(NoDataPolicy::Inconclusive), Just(NoDataPolicy::Fail)],
        )),
        any::<bool>(),
    )
        .prop_map(
            |(weights, pauses, surge, analysed, percent_surge)| RolloutSpec {
                strategy: RolloutStrategy::Canary,
                steps: weights
                    .into_iter()
                    .zip(pauses)
                    .map(|(w, p)| step(w, p))
                    .collect(),
                max_surge: Some(if percent_surge {
                    IntOrString::String(format!("{}%", surge * 20))
                } else {
                    IntOrString::Int(surge)
                }),
                analysis: analysed.map(|(limit, no_data)| analysis(limit, no_data)),
                paused: false,
            },
        )
}

fn arb_pool(i: usize) -> impl Strategy<Value = PoolInput> {
    (
        any::<bool>(),
        0u32..12,
        0u32..4,
        0u32..12,
        0u32..12,
        prop::bool::weighted(0.8),
    )
        .prop_map(
            move |(public, planned, spare, old, new, verified)| PoolInput {
                pool: format!("p{i}"),
                cloud: if public {
                    Cloud::Public
                } else {
                    Cloud::Private
                },
                planned,
                spare,
                old: VersionCount {
                    current: old,
                    ready: old,
                },
                new: VersionCount {
                    current: new,
                    ready: new,
                },
                new_model_verified: verified,
            },
        )
}

fn arb_components() -> impl Strategy<Value = Vec<ComponentInput>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            0u32..60,
            (0..3usize).prop_flat_map(|n| (0..=n).map(arb_pool).collect::<Vec<_>>()),
        )
            .prop_map(|(sensitive, drain, pools)| ComponentInput {
                name: "c".into(),
                sensitive,
                drain_seconds: drain,
                pools,
            }),
        1..3,
    )
}

/// One tick of the world: what was asked for, with random readiness (never more ready than
/// exist) and random events.
#[derive(Clone, Debug)]
struct Tick {
    ready_fraction: Vec<u8>,
    action: Option<Action>,
    round: Option<AnalysisOutcome>,
    paused: bool,
    dt: i64,
    planned_change: Option<(usize, u32)>,
}

fn arb_tick() -> impl Strategy<Value = Tick> {
    (
        proptest::collection::vec(0u8..=4, 6),
        prop_oneof![8 => Just(None), 1 => Just(Some(Action::Resume)), 1 => Just(Some(Action::Abort)), 1 => Just(Some(Action::Retry))],
        prop_oneof![3 => Just(None), 4 => Just(Some(AnalysisOutcome::Pass)), 1 => Just(Some(AnalysisOutcome::Fail)), 1 => Just(Some(AnalysisOutcome::Inconclusive))],
        prop::bool::weighted(0.1),
        1i64..40,
        proptest::option::of((0usize..6, 0u32..12)),
    )
        .prop_map(|(ready_fraction, action, round, paused, dt, planned_change)| Tick {
            ready_fraction,
            action,
            round,
            paused,
            dt,
            planned_change,
        })
}

fn step_weight(spec: &RolloutSpec, step: u32) -> u32 {
    spec.effective_steps()[step as usize].set_weight
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn rollouts_keep_every_rule(
        spec in arb_spec(),
        mut components in arb_components(),
        ticks in proptest::collection::vec(arb_tick(), 1..40),
    ) {
        let mut state = RolloutState::start(0);
        let mut now = 0i64;
        for tick in ticks {
            let mut spec = spec.clone();
            spec.paused = tick.paused;
            let round = tick.round.map(|o| vec![o]).filter(|_| round_due_at(&spec, &state).is_some_and(|due| due <= now));
            let d = run(&spec, &state, &components, tick.action, round, now);
            let prev = state.clone();
            let next = &d.state;

            // No step skipped: one step at a time, and only from a step whose share was reached.
            if next.phase != RolloutPhase::Progressing || tick.action != Some(Action::Retry) || !matches!(prev.phase, RolloutPhase::RolledBack | RolloutPhase::Aborted) {
                prop_assert!(next.step <= prev.step + 1, "{prev:?} -> {next:?}");
                if next.step == prev.step + 1 {
                    prop_assert_eq!(next.traffic_percent, step_weight(&spec, prev.step));
                }
            }
            // The share is never above the step's, nor above what ready new replicas carry.
            prop_assert!(next.traffic_percent <= step_weight(&spec, next.step).max(step_weight(&spec, prev.step)));
            for c in &components {
                prop_assert!(next.traffic_percent <= carried_share(c) || next.traffic_percent == 0);
            }
            // Rollback and abort return all traffic at once.
            if matches!(next.phase, RolloutPhase::RolledBack | RolloutPhase::Aborted) {
                prop_assert_eq!(next.traffic_percent, 0);
            }
            for (c, out) in components.iter().zip(&d.components) {
                for (p, r) in c.pools.iter().zip(&out.pools) {
                    // Residency: neither version of a sensitive component in a public pool.
                    if c.sensitive && p.cloud == Cloud::Public {
                        prop_assert_eq!((r.old, r.new), (0, 0));
                    }
                    // A store without the verified new model holds its pool.
                    if !p.new_model_verified {
                        prop_assert_eq!(r.new, 0);
                        prop_assert!(r.held.is_some());
                    }
                    // Within the surge, but for a version keeping what it has while it drains.
                    let surge = spec.max_surge_for(p.planned).min(p.spare);
                    // The new version grows only into room the old one has left, as observed.
                    if r.new > p.new.current {
                        prop_assert!(
                            r.new + r.old.max(p.old.current) <= p.planned + surge,
                            "{p:?} -> {r:?}"
                        );
                    }
                    let draining = next.traffic_changed_at.is_some_and(|t| now < t + i64::from(c.drain_seconds));
                    if !draining {
                        prop_assert!(r.old + r.new <= p.planned + surge, "{p:?} -> {r:?}");
                    } else {
                        // While a version keeps what it has for the drain, the other grows only
                        // into the surge's room beside it, or to what carries the share reached.
                        let (old_share, new_share) =
                            crate::rollout::replicas_for_share(p.planned, next.traffic_percent);
                        let full_surge = p.planned + spec.max_surge_for(p.planned);
                        let bound = full_surge
                            .max(p.old.current + new_share)
                            .max(p.new.current + old_share);
                        prop_assert!(r.old + r.new <= bound, "{p:?} -> {r:?} (bound {bound})");
                    }
                }
                // Route weights: only on ready replicas, the share kept, residency kept.
                let backends: Vec<VersionedBackend> = c.pools.iter().map(|p| VersionedBackend {
                    backend: p.pool.clone(),
                    weight: p.old.ready + p.new.ready,
                    public: p.cloud == Cloud::Public,
                    old_ready: p.old.ready,
                    new_ready: if p.new_model_verified { p.new.ready } else { 0 },
                }).collect();
                let weights = split_weights(&backends, next.traffic_percent, c.sensitive);
                let (mut old_total, mut new_total) = (0u32, 0u32);
                for (b, w) in backends.iter().zip(&weights) {
                    if b.new_ready == 0 { prop_assert_eq!(w.new, 0); }
                    if b.old_ready == 0 { prop_assert_eq!(w.old, 0); }
                    if c.sensitive && b.public { prop_assert_eq!((w.old, w.new), (0, 0)); }
                    old_total += w.old;
                    new_total += w.new;
                }
                if old_total > 0 {
                    prop_assert!(new_total * 100 <= next.traffic_percent * (old_total + new_total) + 100,
                        "new {new_total} old {old_total} at {}%", next.traffic_percent);
                }
                if next.traffic_percent == 0 && old_total > 0 {
                    prop_assert_eq!(new_total, 0);
                }
            }

            // The world follows: replicas become what was asked, some of them ready.
            let mut k = 0;
            for (c, out) in components.iter_mut().zip(&d.components) {
                for (p, r) in c.pools.iter_mut().zip(&out.pools) {
                    let f = u32::from(tick.ready_fraction[k % tick.ready_fraction.len()]);
                    k += 1;
                    p.old = VersionCount { current: r.old, ready: r.old.min(p.old.ready.max(r.old * f / 4)) };
                    p.new = VersionCount { current: r.new, ready: r.new * f / 4 };
                }
            }
            if let Some((i, n)) = tick.planned_change {
                let all: Vec<&mut PoolInput> = components.iter_mut().flat_map(|c| c.pools.iter_mut()).collect();
                let len = all.len();
                if len > 0 {
                    let mut all = all;
                    all[i % len].planned = n;
                }
            }
            state = d.state;
            now += tick.dt;
        }
    }

    #[test]
    fn split_weights_never_exceed_the_share_nor_touch_unready(
        backends in proptest::collection::vec((0u32..1000, any::<bool>(), 0u32..20, 0u32..20), 0..6),
        percent in 0u32..=100,
        sensitive in any::<bool>(),
    ) {
        let backends: Vec<VersionedBackend> = backends.into_iter().enumerate().map(|(i, (weight, public, old_ready, new_ready))| VersionedBackend {
            backend: format!("b{i}"), weight, public, old_ready, new_ready,
        }).collect();
        let weights = split_weights(&backends, percent, sensitive);
        let eligible_ready = backends.iter().any(|b| b.weight > 0 && !(sensitive && b.public) && b.old_ready + b.new_ready > 0);
        let total: u32 = weights.iter().map(|w| w.old + w.new).sum();
        prop_assert_eq!(total, if eligible_ready { WEIGHT_SCALE } else { 0 });
        let old_ready_any = backends.iter().any(|b| b.weight > 0 && !(sensitive && b.public) && b.old_ready > 0);
        let new_total: u32 = weights.iter().map(|w| w.new).sum();
        if old_ready_any {
            prop_assert!(new_total <= WEIGHT_SCALE * percent / 100);
        }
        for (b, w) in backends.iter().zip(&weights) {
            if b.weight == 0 || b.new_ready == 0 { prop_assert_eq!(w.new, 0); }
            if b.weight == 0 || b.old_ready == 0 { prop_assert_eq!(w.old, 0); }
            if sensitive && b.public { prop_assert_eq!((w.old, w.new), (0, 0)); }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Liveness: with replicas ready as soon as asked, passing analysis and every pause timed,
    /// a rollout always succeeds, whatever the pools' spare room (a full pool too).
    #[test]
    fn a_rollout_whose_replicas_become_ready_always_finishes(
        spec in arb_spec(),
        pools in proptest::collection::vec((1u32..20, 0u32..4, any::<bool>()), 1..4),
    ) {
        let mut spec = spec;
        for s in &mut spec.steps {
            if let Some(p) = &mut s.pause {
                p.seconds.get_or_insert(30);
            }
        }
        let mut components = vec![ComponentInput {
            name: "c".into(),
            sensitive: false,
            drain_seconds: 30,
            pools: pools.iter().enumerate().map(|(i, &(planned, spare, public))| PoolInput {
                pool: format!("p{i}"),
                cloud: if public { Cloud::Public } else { Cloud::Private },
                planned,
                spare,
                old: VersionCount { current: planned, ready: planned },
                new: VersionCount::default(),
                new_model_verified: true,
            }).collect(),
        }];
        let mut state = RolloutState::start(0);
        let mut now = 0;
        for _ in 0..2000 {
            let round = round_due_at(&spec, &state).filter(|due| *due <= now).map(|_| vec![AnalysisOutcome::Pass]);
            let d = run(&spec, &state, &components, None, round, now);
            components = all_ready(&components, &d);
            state = d.state;
            if state.phase == RolloutPhase::Succeeded {
                break;
            }
            now += 10;
        }
        prop_assert_eq!(state.phase, RolloutPhase::Succeeded, "{:?}", components);
        for p in &components[0].pools {
            prop_assert_eq!((p.old.current, p.new.current), (0, p.planned));
        }
    }
}
