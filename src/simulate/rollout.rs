//! The capacity cost of a canary rollout replayed on a trace (`simulate --rollout-at`): the
//! policy run's replicas per pool are the plan, and the pure rollout decision
//! (`crate::rollout`) runs on top of it from the given time, with the pools' start-up delays for
//! the new version's replicas. What the surge costs is the replicas beyond the plan (old and new
//! together), at the pools' prices.
//!
//! Assumed: every analysis round passes, a pause until resumed is resumed at once, and the new
//! model is verified in every store the component may use (residency aside) — the figures are
//! those of a rollout that goes through.

use super::replay::Series;
use super::world::World;
use crate::api::{DataClass, RolloutPhase, RolloutSpec, RolloutStrategy};
use crate::rollout::{
    Action, ComponentInput, PoolInput, RolloutInput, RolloutState, VersionCount, decide,
    round_due_at,
};
use serde::Serialize;

/// A rollout's replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSurge {
    /// When the rollout began (seconds since the epoch).
    pub started_at: i64,
    /// When it succeeded; `None` when the trace ended first.
    pub finished_at: Option<i64>,
    /// Seconds from start to success beyond the configured pauses.
    pub seconds_beyond_pauses: Option<i64>,
    /// Most replicas beyond the plan at once (old and new together, every pool).
    pub peak_extra_replicas: u32,
    /// Replica-hours beyond the plan, over the rollout.
    pub extra_replica_hours: f64,
    /// Of which in public pools.
    pub extra_public_replica_hours: f64,
    /// What the extra public replicas cost (public spend).
    pub extra_public_cost: f64,
    /// Every extra replica-hour at its pool's price (the chargeback view).
    pub extra_chargeback_cost: f64,
    /// Each step as it was reached: (time, step index, traffic percent).
    pub steps: Vec<(i64, u32, u32)>,
}

/// Why a rollout cannot be replayed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RolloutReplayError {
    #[error("{0} has no Canary rollout strategy (spec.rollout.strategy)")]
    NotCanary(String),
    #[error("--rollout-at {at} is outside the trace ({start}..{end})")]
    OutsideTrace { at: i64, start: i64, end: i64 },
    #[error("the policy run was not recorded")]
    NoSeries,
}

/// Replays a rollout of `spec` starting at `at` over the policy run `series` in `world`.
/// `sensitive`: the component (or its model) is sensitive; `drain_seconds`: its traffic drain.
pub fn replay_rollout(
    world: &World,
    series: &Series,
    spec: &RolloutSpec,
    name: &str,
    sensitive: bool,
    drain_seconds: u32,
    at: i64,
) -> Result<RolloutSurge, RolloutReplayError> {
    if spec.strategy != RolloutStrategy::Canary {
        return Err(RolloutReplayError::NotCanary(name.to_string()));
    }
    let pools = series.pools.len();
    let steps = series.demand.len();
    let end = series.start + series.step * (steps as i64 - 1).max(0);
    if at < series.start || at > end || pools == 0 {
        return Err(RolloutReplayError::OutsideTrace {
            at,
            start: series.start,
            end,
        });
    }
    let first = usize::try_from((at - series.start) / series.step).unwrap_or(0);
    let hours = series.step as f64 / 3600.0;
    let mut state = RolloutState::start(at);
    // The new version's replicas per pool: those ready, and those starting with when they are.
    let mut new_ready = vec![0u32; pools];
    let mut starting: Vec<Vec<(i64, u32)>> = vec![Vec::new(); pools];
    let mut old_current: Vec<u32> = (0..pools)
        .map(|p| series.requested[first * pools + p])
        .collect();
    let mut surge = RolloutSurge {
        started_at: at,
        ..RolloutSurge::default()
    };
    let mut reached_step: Option<u32> = None;
    for i in first..steps {
        let now = series.start + series.step * i as i64;
        for p in 0..pools {
            let (done, still): (Vec<_>, Vec<_>) = starting[p]
                .iter()
                .partition(|(ready_at, _)| *ready_at <= now);
            new_ready[p] += done.iter().map(|(_, n)| n).sum::<u32>();
            starting[p] = still;
        }
        let component = ComponentInput {
            name: name.to_string(),
            sensitive,
            drain_seconds,
            pools: (0..pools)
                .map(|p| {
                    let planned = series.requested[i * pools + p];
                    let new_starting: u32 = starting[p].iter().map(|(_, n)| n).sum();
                    PoolInput {
                        pool: series.pools[p].clone(),
                        cloud: if series.public[p] {
                            crate::api::Cloud::Public
                        } else {
                            crate::api::Cloud::Private
                        },
                        planned,
                        spare: world
                            .capacity
                            .get(p)
                            .copied()
                            .unwrap_or(0)
                            .saturating_sub(planned),
                        old: VersionCount {
                            current: old_current[p],
                            ready: old_current[p].min(series.ready[i * pools + p]),
                        },
                        new: VersionCount {
                            current: new_ready[p] + new_starting,
                            ready: new_ready[p],
                        },
                        new_model_verified: !(sensitive && series.public[p]),
                    }
                })
                .collect(),
        };
        let round = round_due_at(spec, &state)
            .filter(|due| *due <= now)
            .map(|_| vec![crate::api::AnalysisOutcome::Pass; 1]);
        let decision = decide(RolloutInput {
            spec,
            previous: &state,
            components: std::slice::from_ref(&component),
            action: (state.phase == RolloutPhase::Paused && !spec.paused).then_some(Action::Resume),
            round,
            now,
        });
        let mut extra_now = 0u32;
        for (p, decided) in decision.components[0].pools.iter().enumerate() {
            let planned = component.pools[p].planned;
            let current_new = new_ready[p] + starting[p].iter().map(|(_, n)| n).sum::<u32>();
            if decided.new > current_new {
                starting[p].push((now + world.startup[p], decided.new - current_new));
            } else {
                // Those not ready go first.
                let mut remove = current_new - decided.new;
                while remove > 0 {
                    match starting[p].pop() {
                        Some((t, n)) if n > remove => {
                            starting[p].push((t, n - remove));
                            remove = 0;
                        }
                        Some((_, n)) => remove -= n,
                        None => {
                            new_ready[p] -= remove.min(new_ready[p]);
                            remove = 0;
                        }
                    }
                }
            }
            old_current[p] = decided.old;
            let extra = (decided.old + decided.new).saturating_sub(planned);
            extra_now += extra;
            let replica_hours = f64::from(extra) * hours;
            surge.extra_replica_hours += replica_hours;
            let price = world.replica_cost.get(p).copied().unwrap_or(0.0);
            surge.extra_chargeback_cost += replica_hours * price;
            if series.public[p] {
                surge.extra_public_replica_hours += replica_hours;
                surge.extra_public_cost += replica_hours * price;
            }
        }
        surge.peak_extra_replicas = surge.peak_extra_replicas.max(extra_now);
        state = decision.state;
        if state.step_started_at.is_some() && reached_step != Some(state.step) {
            reached_step = Some(state.step);
            surge.steps.push((now, state.step, state.traffic_percent));
        }
        if state.phase == RolloutPhase::Succeeded {
            surge.finished_at = Some(now);
            let pauses: i64 = spec
                .effective_steps()
                .iter()
                .filter_map(|s| s.pause.as_ref().and_then(|p| p.seconds))
                .map(i64::from)
                .sum();
            surge.seconds_beyond_pauses = Some(now - at - pauses);
            break;
        }
    }
    Ok(surge)
}

/// Whether a component's data (or its model's) is sensitive.
pub fn is_sensitive(component: DataClass, model: DataClass) -> bool {
    component == DataClass::Sensitive || model == DataClass::Sensitive
}

/// Replays a rollout of the simulated component's deployment starting `offset` seconds after the
/// trace's start, over the recorded policy run of `sim`.
pub fn rollout_of(
    estate: &crate::estate::Estate,
    sim: &super::Simulation,
    offset: i64,
) -> Result<RolloutSurge, RolloutReplayError> {
    let key = &sim.component;
    let series = sim
        .policy
        .series
        .as_ref()
        .ok_or(RolloutReplayError::NoSeries)?;
    let md = estate
        .deployments
        .get(&(key.namespace.clone(), key.deployment.clone()))
        .ok_or_else(|| RolloutReplayError::NotCanary(key.to_string()))?;
    let spec = md
        .spec
        .rollout
        .as_ref()
        .ok_or_else(|| RolloutReplayError::NotCanary(key.to_string()))?;
    let component = md
        .spec
        .components
        .iter()
        .find(|c| c.name == key.component)
        .ok_or_else(|| RolloutReplayError::NotCanary(key.to_string()))?;
    let world = super::policy_world(estate, key)
        .map_err(|_| RolloutReplayError::NotCanary(key.to_string()))?;
    let drain = component
        .traffic
        .as_ref()
        .map_or(crate::api::DEFAULT_DRAIN_SECONDS, |t| t.drain_seconds);
    let classes = crate::estate::ModelClasses::of(estate);
    let model_class = classes.class_of(md);
    replay_rollout(
        &world,
        series,
        spec,
        &key.to_string(),
        is_sensitive(component.data_class, model_class),
        drain,
        series.start.saturating_add(offset),
    )
}

impl RolloutSurge {
    /// The replay for people.
    pub fn to_table(&self) -> String {
        let mut out = String::from("ROLLOUT (surge over the policy run)\n");
        let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("  {k:<34} {v}\n"));
        line(&mut out, "started at", self.started_at.to_string());
        line(
            &mut out,
            "finished at",
            self.finished_at.map_or("not within the trace".into(), |t| {
                format!("{t} ({} s after the start)", t - self.started_at)
            }),
        );
        if let Some(extra) = self.seconds_beyond_pauses {
            line(&mut out, "seconds beyond the pauses", extra.to_string());
        }
        line(
            &mut out,
            "peak extra replicas",
            self.peak_extra_replicas.to_string(),
        );
        line(
            &mut out,
            "extra replica-hours",
            format!("{:.2}", self.extra_replica_hours),
        );
        line(
            &mut out,
            "  of which public",
            format!("{:.2}", self.extra_public_replica_hours),
        );
        line(
            &mut out,
            "extra public cost",
            format!("{:.2}", self.extra_public_cost),
        );
        line(
            &mut out,
            "extra cost (chargeback view)",
            format!("{:.2}", self.extra_chargeback_cost),
        );
        for (t, step, percent) in &self.steps {
            line(
                &mut out,
                &format!("step {} reached", step + 1),
                format!("{t} at {percent}%"),
            );
        }
        out
    }
}
