//! The rollout decision, pure: from a canary spec, where the rollout was, what each pool of each
//! component runs of the old and the new version (and whether its store holds the verified new
//! model), the analysis round just measured, a one-shot action and the time, to how many
//! replicas of each version each pool runs, the new version's share of the traffic, the next
//! step (or a hold, or a rollback), why, and when to look again.
//!
//! Rules:
//! 1. A step's share `w` is the most the new version takes. The share published is
//!    `min(w, what the ready new replicas can carry)`, the latter being the ready new replicas
//!    over the planned replicas of the component (per component; the smallest counts). So
//!    traffic never goes ahead of ready replicas, and a pool that cannot run the new version
//!    (its store lacks the verified model, residency, no room for the surge) holds the step
//!    visibly below its share.
//! 2. Replicas per pool with `N` planned: the new version wants `ceil(N·w/100)`; the old one
//!    keeps `N·(100−s)/100` (to the nearest replica) for the published share `s`. The new version starts into the
//!    room of `maxSurge` beside them; old plus new stay within `N + min(maxSurge, spare)`: where
//!    the pool lacks spare capacity for the surge, old replicas make the room (a dip in capacity
//!    of at most `maxSurge`, as `maxUnavailable` would), or a full pool would never roll. A
//!    version whose share just dropped keeps the replicas it has until the drain is over
//!    (requests in flight); the new version grows only into the surge's room beside them, and
//!    only into room the old version has already left as observed (a full pool first scales
//!    the old version in, then starts the new one), so no order of the two writes exceeds it.
//! 3. A step is reached when the published share is `w`; it passes when its pause is over (or it
//!    was resumed, for a pause without seconds) and, with an analysis, at least one round passed
//!    and fewer than `failureLimit` failed. Rounds without data are inconclusive: the step holds.
//!    Steps advance one at a time.
//! 4. `failureLimit` failed rounds roll back; `abort` aborts: either way the share goes to 0 at
//!    once (all traffic to the old version), the old version is scaled back to the plan, and the
//!    new replicas go after the drain. `retry` starts again from the first step.
//! 5. `paused` freezes the share (it may only fall with readiness) and the step.
//! 6. A sensitive component (or a component of a sensitive model) never runs either version in a
//!    public pool.
//! 7. At the last step reached and passed, the old version drains and goes; the rollout has
//!    succeeded once no old replica is left.

use crate::api::{AnalysisOutcome, Cloud, RolloutPhase, RolloutSpec};

#[cfg(test)]
mod tests;

/// Weights of a route sum to about this, as in the traffic decision.
pub const WEIGHT_SCALE: u32 = crate::traffic::WEIGHT_SCALE;

/// Replicas of one version in one pool, as observed now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VersionCount {
    /// Replicas that exist, ready or not.
    pub current: u32,
    /// Of which ready.
    pub ready: u32,
}

/// One pool of a component during a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInput {
    pub pool: String,
    pub cloud: Cloud,
    /// Replicas the plan places in this pool for the component (both versions together).
    pub planned: u32,
    /// Replicas beyond `planned` this pool has room for (capacity, budgets): the surge is at most
    /// this.
    pub spare: u32,
    pub old: VersionCount,
    pub new: VersionCount,
    /// Whether this pool's store holds the new version's model, verified by digest.
    pub new_model_verified: bool,
}

/// One component during a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentInput {
    pub name: String,
    /// The component's data class, or its model's, is `sensitive`: never a public pool.
    pub sensitive: bool,
    /// Seconds a version that lost share keeps its replicas (the traffic drain).
    pub drain_seconds: u32,
    pub pools: Vec<PoolInput>,
}

/// A one-shot action asked for through the annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Resume,
    Abort,
    Retry,
}

impl Action {
    /// The action an annotation value names, if any.
    pub fn parse(value: &str) -> Option<Action> {
        match value.trim() {
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            "retry" => Some(Action::Retry),
            _ => None,
        }
    }
}

/// Where a rollout is, as remembered between decisions (`status.rollout`); times in seconds
/// since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutState {
    pub step: u32,
    pub phase: RolloutPhase,
    /// The new version's published share, in percent.
    pub traffic_percent: u32,
    pub previous_traffic_percent: u32,
    pub traffic_changed_at: Option<i64>,
    /// When the current step's share was reached.
    pub step_started_at: Option<i64>,
    pub resumed: bool,
    pub passed_rounds: u32,
    pub failed_rounds: u32,
    pub inconclusive_rounds: u32,
    pub last_round_at: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

impl RolloutState {
    /// A rollout beginning now.
    pub fn start(now: i64) -> RolloutState {
        RolloutState {
            step: 0,
            phase: RolloutPhase::Progressing,
            traffic_percent: 0,
            previous_traffic_percent: 0,
            traffic_changed_at: None,
            step_started_at: None,
            resumed: false,
            passed_rounds: 0,
            failed_rounds: 0,
            inconclusive_rounds: 0,
            last_round_at: None,
            started_at: now,
            finished_at: None,
        }
    }

    /// Whether the rollout has ended (succeeded, rolled back or aborted).
    pub fn ended(&self) -> bool {
        !matches!(self.phase, RolloutPhase::Progressing | RolloutPhase::Paused)
    }
}

/// Everything one rollout decision needs.
#[derive(Clone, Debug)]
pub struct RolloutInput<'a> {
    pub spec: &'a RolloutSpec,
    pub previous: &'a RolloutState,
    pub components: &'a [ComponentInput],
    pub action: Option<Action>,
    /// The outcomes of an analysis round measured now (one per metric); `None`: none measured.
    pub round: Option<Vec<AnalysisOutcome>>,
    pub now: i64,
}

/// Replicas of each version one pool runs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolReplicas {
    pub pool: String,
    pub old: u32,
    pub new: u32,
    /// Why the new version cannot run (all it should) here, if so.
    pub held: Option<String>,
}

/// One component, decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentOutcome {
    pub name: String,
    pub pools: Vec<PoolReplicas>,
}

/// The outcome of one rollout decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutDecision {
    /// Where the rollout is now (persist it with the routes' weights).
    pub state: RolloutState,
    pub components: Vec<ComponentOutcome>,
    /// `status.rollout.reason`.
    pub reason: &'static str,
    pub message: String,
    /// What changed, for Events: (reason, note, warning).
    pub events: Vec<(&'static str, String, bool)>,
    /// When the decision changes by itself (a pause or a drain ends): decide again then.
    pub next_change_at: Option<i64>,
}

/// When the next analysis round is due, if the rollout measures now: a step reached, not ended,
/// with an analysis (the implicit final step has none).
pub fn round_due_at(spec: &RolloutSpec, state: &RolloutState) -> Option<i64> {
    let analysis = spec.analysis.as_ref()?;
    if state.ended() || state.step as usize >= spec.steps.len() {
        return None;
    }
    let started = state.step_started_at?;
    Some(match state.last_round_at {
        Some(last) => last + i64::from(analysis.interval_seconds),
        None => started,
    })
}

fn ceil_percent(n: u32, percent: u32) -> u32 {
    let product = u64::from(n) * u64::from(percent.min(100));
    u32::try_from(product.div_ceil(100)).unwrap_or(u32::MAX)
}

fn round_percent(n: u32, percent: u32) -> u32 {
    let product = u64::from(n) * u64::from(percent.min(100));
    u32::try_from((product + 50) / 100).unwrap_or(u32::MAX)
}

/// How `planned` replicas of a pool split between the versions when the new one takes `share`
/// percent of the traffic: (old, new). The new version's part is rounded up (it must carry its
/// share); the old one's to the nearest replica (the share is a whole percent below what the
/// new replicas carry, and rounding it up too would keep a replica the new ones replace).
pub fn replicas_for_share(planned: u32, share: u32) -> (u32, u32) {
    (
        round_percent(planned, 100 - share.min(100)),
        ceil_percent(planned, share),
    )
}

/// Whether a pool may run either version of the component.
fn resident(component: &ComponentInput, pool: &PoolInput) -> bool {
    !(component.sensitive && pool.cloud == Cloud::Public)
}

/// The share, in percent, the ready new replicas of a component can carry.
fn carried_share(component: &ComponentInput) -> u32 {
    let planned: u64 = component
        .pools
        .iter()
        .filter(|p| resident(component, p))
        .map(|p| u64::from(p.planned))
        .sum();
    if planned == 0 {
        return 100;
    }
    let ready: u64 = component
        .pools
        .iter()
        .filter(|p| resident(component, p) && p.new_model_verified)
        .map(|p| u64::from(p.new.ready))
        .sum();
    u32::try_from((ready * 100 / planned).min(100)).unwrap_or(100)
}

pub fn decide(input: RolloutInput<'_>) -> RolloutDecision {
    let steps = input.spec.effective_steps();
    let last_step = u32::try_from(steps.len().saturating_sub(1)).unwrap_or(0);
    let now = input.now;
    let mut state = input.previous.clone();
    let mut events: Vec<(&'static str, String, bool)> = Vec::new();
    state.step = state.step.min(last_step);

    match input.action {
        Some(Action::Abort) if !state.ended() => {
            state.phase = RolloutPhase::Aborted;
            state.finished_at = Some(now);
            events.push((
                "RolloutAborted",
                format!(
                    "aborted at step {}: all traffic back to the old version",
                    state.step + 1
                ),
                true,
            ));
        }
        Some(Action::Retry)
            if matches!(
                state.phase,
                RolloutPhase::RolledBack | RolloutPhase::Aborted
            ) =>
        {
            let keep_share = (state.traffic_percent, state.previous_traffic_percent);
            let changed = state.traffic_changed_at;
            state = RolloutState::start(now);
            (state.traffic_percent, state.previous_traffic_percent) = keep_share;
            state.traffic_changed_at = changed;
            events.push((
                "RolloutRetried",
                "retried from the first step".into(),
                false,
            ));
        }
        Some(Action::Resume) if !state.ended() => state.resumed = true,
        _ => {}
    }

    // An analysis round measured now counts for the current step.
    if let (Some(round), Some(analysis), false) =
        (&input.round, &input.spec.analysis, state.ended())
        && state.step_started_at.is_some()
    {
        let failed = round.iter().any(|o| {
            *o == AnalysisOutcome::Fail
                || (*o == AnalysisOutcome::Inconclusive
                    && analysis.no_data == crate::api::NoDataPolicy::Fail)
        });
        let inconclusive = !failed && round.contains(&AnalysisOutcome::Inconclusive);
        if failed {
            state.failed_rounds += 1;
        } else if inconclusive {
            state.inconclusive_rounds += 1;
        } else {
            state.passed_rounds += 1;
        }
        state.last_round_at = Some(now);
        if state.failed_rounds >= analysis.failure_limit {
            state.phase = RolloutPhase::RolledBack;
            state.finished_at = Some(now);
            events.push((
                "RolloutRolledBack",
                format!(
                    "analysis failed at step {} ({} failed rounds): all traffic back to the old version",
                    state.step + 1,
                    state.failed_rounds
                ),
                true,
            ));
        }
    }

    let rolling_back = matches!(
        state.phase,
        RolloutPhase::RolledBack | RolloutPhase::Aborted
    );
    let succeeded = state.phase == RolloutPhase::Succeeded;
    if !state.ended() {
        state.phase = if input.spec.paused {
            RolloutPhase::Paused
        } else {
            RolloutPhase::Progressing
        };
    }
    let step_weight = if rolling_back {
        0
    } else if succeeded {
        100
    } else {
        steps[state.step as usize].set_weight
    };

    // The share to publish: never ahead of the step, nor of the ready new replicas; frozen (it
    // may only fall) while paused.
    let carried = input
        .components
        .iter()
        .map(carried_share)
        .min()
        .unwrap_or(100);
    let mut share = step_weight.min(carried);
    if input.spec.paused && !rolling_back && !succeeded {
        share = share.min(state.traffic_percent);
    }
    if share != state.traffic_percent {
        state.previous_traffic_percent = state.traffic_percent;
        state.traffic_percent = share;
        state.traffic_changed_at = Some(now);
    }

    let mut next_change_at: Option<i64> = None;
    let mut soonest = |t: i64| {
        if t > now {
            next_change_at = Some(next_change_at.map_or(t, |n: i64| n.min(t)));
        }
    };

    let components: Vec<ComponentOutcome> = input
        .components
        .iter()
        .map(|c| {
            let drain_end = state
                .traffic_changed_at
                .map(|t| t + i64::from(c.drain_seconds));
            let draining = drain_end.is_some_and(|end| now < end);
            if let Some(end) = drain_end {
                soonest(end);
            }
            let (old_lost, new_lost) = (
                draining && state.traffic_percent > state.previous_traffic_percent,
                draining && state.traffic_percent < state.previous_traffic_percent,
            );
            let pools = c
                .pools
                .iter()
                .map(|p| pool_replicas(input.spec, c, p, step_weight, &state, old_lost, new_lost))
                .collect();
            ComponentOutcome {
                name: c.name.clone(),
                pools,
            }
        })
        .collect();

    // Step progress.
    let reason: &'static str;
    let mut message: String;
    if rolling_back {
        let new_left: u32 = components
            .iter()
            .flat_map(|c| &c.pools)
            .map(|p| p.new)
            .sum();
        reason = if state.phase == RolloutPhase::Aborted {
            "Aborted"
        } else {
            "AnalysisFailed"
        };
        message = if new_left > 0 {
            format!("all traffic on the old version; {new_left} new replicas drain and go")
        } else {
            "all traffic on the old version; the new version is gone".into()
        };
    } else if succeeded {
        reason = "Succeeded";
        message = "the new version takes all traffic".into();
    } else {
        let step = &steps[state.step as usize];
        if state.traffic_percent < step.set_weight {
            state.step_started_at = None;
            let held: Vec<String> = components
                .iter()
                .flat_map(|c| {
                    c.pools.iter().filter_map(move |p| {
                        p.held
                            .as_ref()
                            .map(|h| format!("{}/{}: {h}", c.name, p.pool))
                    })
                })
                .collect();
            reason = if held.iter().any(|h| h.contains("store")) {
                "WaitingForArtifacts"
            } else if input.spec.paused {
                "PausedBySpec"
            } else {
                "StartingReplicas"
            };
            message = format!(
                "step {}/{}: the new version takes {}% of {}%",
                state.step + 1,
                steps.len(),
                state.traffic_percent,
                step.set_weight
            );
            if !held.is_empty() {
                message.push_str("; held: ");
                message.push_str(&held.join("; "));
            }
        } else {
            let newly_reached = state.step_started_at.is_none();
            let started = *state.step_started_at.get_or_insert(now);
            if newly_reached {
                events.push((
                    "RolloutStep",
                    format!(
                        "step {}/{}: the new version takes {}% of the traffic",
                        state.step + 1,
                        steps.len(),
                        step.set_weight
                    ),
                    false,
                ));
            }
            let pause_over = match step.pause.as_ref().map(|p| p.seconds) {
                None => true,
                Some(Some(seconds)) => {
                    let end = started + i64::from(seconds);
                    soonest(end);
                    now >= end || state.resumed
                }
                Some(None) => state.resumed,
            };
            let analysed = state.step as usize >= input.spec.steps.len()
                || input.spec.analysis.is_none()
                || state.passed_rounds > 0;
            if let Some(due) = round_due_at(input.spec, &state) {
                soonest(due.max(now + 1));
            }
            if input.spec.paused {
                reason = "PausedBySpec";
                message = format!(
                    "paused by spec.rollout.paused at step {}/{} ({}%)",
                    state.step + 1,
                    steps.len(),
                    state.traffic_percent
                );
            } else if !pause_over {
                let until_resumed = matches!(step.pause, Some(ref p) if p.seconds.is_none());
                if until_resumed {
                    state.phase = RolloutPhase::Paused;
                    reason = "WaitingForResume";
                } else {
                    reason = "Pausing";
                }
                message = format!(
                    "step {}/{}: holding {}%",
                    state.step + 1,
                    steps.len(),
                    state.traffic_percent
                );
            } else if !analysed {
                reason = "Analysing";
                message = format!(
                    "step {}/{}: waiting for a passing analysis round ({} inconclusive)",
                    state.step + 1,
                    steps.len(),
                    state.inconclusive_rounds
                );
            } else if state.step < last_step {
                state.step += 1;
                state.step_started_at = None;
                state.resumed = false;
                state.passed_rounds = 0;
                state.failed_rounds = 0;
                state.inconclusive_rounds = 0;
                state.last_round_at = None;
                reason = "ShiftingTraffic";
                message = format!(
                    "step {}/{}: moving to {}%",
                    state.step + 1,
                    steps.len(),
                    steps[state.step as usize].set_weight
                );
                soonest(now + 1);
            } else {
                let old_left: u32 = components
                    .iter()
                    .flat_map(|c| &c.pools)
                    .map(|p| p.old)
                    .sum();
                let old_running: u32 = input
                    .components
                    .iter()
                    .flat_map(|c| &c.pools)
                    .map(|p| p.old.current)
                    .sum();
                if old_left == 0 && old_running == 0 {
                    state.phase = RolloutPhase::Succeeded;
                    state.finished_at = Some(now);
                    reason = "Succeeded";
                    message = "the new version takes all traffic; the old one is gone".into();
                    events.push(("RolloutSucceeded", message.clone(), false));
                } else {
                    reason = "Draining";
                    message = format!(
                        "all traffic on the new version; {old_running} old replicas drain and go"
                    );
                }
            }
        }
    }
    if state.ended() {
        next_change_at = next_change_at.filter(|_| {
            components.iter().flat_map(|c| &c.pools).any(|p| {
                if state.phase == RolloutPhase::Succeeded {
                    p.old > 0
                } else {
                    p.new > 0
                }
            })
        });
    }
    RolloutDecision {
        state,
        components,
        reason,
        message,
        events,
        next_change_at,
    }
}

fn pool_replicas(
    spec: &RolloutSpec,
    component: &ComponentInput,
    pool: &PoolInput,
    step_weight: u32,
    state: &RolloutState,
    old_lost_share: bool,
    new_lost_share: bool,
) -> PoolReplicas {
    if !resident(component, pool) {
        return PoolReplicas {
            pool: pool.pool.clone(),
            old: 0,
            new: 0,
            held: Some("residency: a sensitive component never runs in a public pool".into()),
        };
    }
    let n = pool.planned;
    let share = state.traffic_percent;
    let surge = spec.max_surge_for(n);
    // The pool's room beyond the plan: the surge where it has spare capacity; where it has not,
    // old replicas make the rest of the surge's room (capacity dips, as with maxUnavailable),
    // or a full pool would never start the new version.
    let room_beyond_plan = surge.min(pool.spare);
    let (old_for_share, carried_new) = replicas_for_share(n, share);
    // Old replicas that lost share are kept until the drain is over; the new version grows
    // only into the surge's room beside them (the surge bounds old and new together).
    let kept_old = if old_lost_share { pool.old.current } else { 0 };
    let want_new = ceil_percent(n, step_weight);
    let mut held = None;
    let mut new = if pool.new_model_verified {
        want_new
            .min((n + surge).saturating_sub(old_for_share.max(kept_old)))
            .max(carried_new)
    } else {
        held = Some("the pool's store does not hold the verified new model yet".to_string());
        0
    };
    let old = old_for_share
        .min((n + room_beyond_plan).saturating_sub(new))
        .max(kept_old);
    // The new version grows only into room the old one has already left (as observed), so that
    // whichever of the two writes lands first, the pool never asks for more than the surge.
    // (The old version is not held back so: a rollback restores its replicas at once.)
    if new > pool.new.current {
        let room = (n + room_beyond_plan).saturating_sub(old.max(pool.old.current));
        new = new.min(room).max(pool.new.current);
    }
    if new_lost_share {
        new = new.max(pool.new.current);
    }
    PoolReplicas {
        pool: pool.pool.clone(),
        old,
        new,
        held,
    }
}

/// One backend of a component's route with its weight from the traffic decision and the ready
/// replicas of each version behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedBackend {
    pub backend: String,
    /// The traffic decision's weight (0: warming, draining or unreachable).
    pub weight: u32,
    pub public: bool,
    pub old_ready: u32,
    pub new_ready: u32,
}

/// A backend's weight for each version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionWeights {
    pub backend: String,
    pub old: u32,
    pub new: u32,
}

/// Splits a route's weights between the versions: the new version takes `new_percent` of the
/// route, spread over the backends with ready new replicas by those replicas; the old version
/// takes the rest likewise. Only backends the traffic decision weights take any; a version with
/// no ready replica anywhere takes nothing (its share goes to the other: a route with nothing to
/// send to fails every request). A sensitive component's public backends take nothing.
pub fn split_weights(
    backends: &[VersionedBackend],
    new_percent: u32,
    sensitive: bool,
) -> Vec<VersionWeights> {
    let eligible = |b: &VersionedBackend| b.weight > 0 && !(sensitive && b.public);
    let new_ready: u64 = backends
        .iter()
        .filter(|b| eligible(b))
        .map(|b| u64::from(b.new_ready))
        .sum();
    let old_ready: u64 = backends
        .iter()
        .filter(|b| eligible(b))
        .map(|b| u64::from(b.old_ready))
        .sum();
    let new_percent = match (old_ready, new_ready) {
        (_, 0) => 0,
        (0, _) => 100,
        _ => new_percent.min(100),
    };
    let new_total = WEIGHT_SCALE * new_percent / 100;
    let old_total = WEIGHT_SCALE - new_total;
    let new_weights = apportion(
        &backends
            .iter()
            .map(|b| if eligible(b) { b.new_ready } else { 0 })
            .collect::<Vec<_>>(),
        new_total,
    );
    let old_weights = apportion(
        &backends
            .iter()
            .map(|b| if eligible(b) { b.old_ready } else { 0 })
            .collect::<Vec<_>>(),
        old_total,
    );
    backends
        .iter()
        .zip(new_weights.into_iter().zip(old_weights))
        .map(|(b, (new, old))| VersionWeights {
            backend: b.backend.clone(),
            old,
            new,
        })
        .collect()
}

/// `total` spread over `parts` in proportion (largest remainder); all 0 when `parts` sum to 0.
fn apportion(parts: &[u32], total: u32) -> Vec<u32> {
    let sum: u64 = parts.iter().map(|&p| u64::from(p)).sum();
    if sum == 0 || total == 0 {
        return vec![0; parts.len()];
    }
    let exact: Vec<(u64, u64)> = parts
        .iter()
        .map(|&p| {
            let scaled = u64::from(p) * u64::from(total);
            (scaled / sum, scaled % sum)
        })
        .collect();
    let mut out: Vec<u32> = exact
        .iter()
        .map(|&(q, _)| u32::try_from(q).unwrap_or(u32::MAX))
        .collect();
    let given: u64 = exact.iter().map(|&(q, _)| q).sum();
    let mut left = u64::from(total) - given;
    let mut order: Vec<usize> = (0..parts.len()).filter(|&i| parts[i] > 0).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}
