//! The controller proper: configuration from a policy, the state it remembers, and the two pure
//! steps of a tick (see the module docs of [`crate::burst`]).

use super::events::{Event, EventKind};
use super::forecast::Holt;
use super::scaling::{Behavior, EPSILON_FACTOR, ScaleHistory, replicas_at};
use crate::api::{BurstPolicySpec, Cloud, FallbackAction, ReplicaRange};
use crate::planner::{ComponentPlan, ComponentRequest, PlanInput, PoolView, ineligibility, plan};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a policy cannot drive a component.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("metric.targetPerReplica must be positive and finite, got {0}")]
    Target(f64),
    #[error("replicas.min {min} exceeds replicas.max {max}")]
    Bounds { min: u32, max: u32 },
}

/// Dead band of scale-downs when the policy sets none: half the HPA's 10%, since demand here is
/// a rate averaged over a minute rather than a noisy utilisation sample.
pub const DEFAULT_TOLERANCE_PERCENT: u32 = 5;

/// The widest the dead band grows on noisy demand (unless `tolerancePercent` is wider): the
/// HPA's fixed tolerance.
pub const MAX_NOISE_BAND_PERCENT: u32 = 10;

/// The scale-down dead band, as a fraction of demand, for the measured `noise` (see
/// [`Holt::noise`]): `tolerancePercent`, widened to twice the noise peak (a sample may lie
/// anywhere between the low and the high side of the noise, so the count a scale-down keeps
/// must serve the high side seen from the low side), at most [`MAX_NOISE_BAND_PERCENT`] (or the
/// tolerance when that is wider).
pub fn dead_band(tolerance_percent: u32, noise: f64) -> f64 {
    let tolerance = f64::from(tolerance_percent) * 0.01;
    let cap = tolerance.max(f64::from(MAX_NOISE_BAND_PERCENT) * 0.01);
    (2.0 * noise).clamp(tolerance, cap)
}

/// A prewarm window in Unix seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PrewarmSpan {
    pub name: String,
    pub start: i64,
    pub end: i64,
    pub min_replicas: u32,
}

/// Everything fixed between ticks: the policy's knobs, the component's bounds and the start-up
/// times of the pools it may use. Rebuild it when the policy, component or pools change; the
/// [`ControllerState`] stays valid across such rebuilds.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    pub target_per_replica: f64,
    pub headroom_percent: u32,
    /// Extra headroom a scale-down must leave (dead band against flapping).
    pub tolerance_percent: u32,
    /// Seconds between reads of the metric: the next decision is this far away.
    pub interval_seconds: i64,
    pub min: u32,
    pub max: u32,
    pub up: Behavior,
    pub down: Behavior,
    pub failback_after_seconds: i64,
    pub prewarm: Vec<PrewarmSpan>,
    pub fallback: FallbackAction,
    pub fallback_floor: Option<u32>,
    /// Slowest start-up among the private pools the component may use.
    pub private_startup_seconds: u32,
    /// Slowest start-up among the public pools it may burst to; `None` when it cannot burst.
    pub public_startup_seconds: Option<u32>,
    /// Keep every replica the private pools can hold for the component running: private
    /// capacity is owned (not `burst.privateCapacityShared`), so an idle one saves nothing and
    /// a warm one serves the next spike without a start-up.
    pub keep_private_warm: bool,
    /// Headroom in standard deviations of the forecast's measured shortfall over the public
    /// start-up (`metric.volatilityHeadroom`).
    pub volatility_sigmas: f64,
}

/// `metric.volatilityHeadroom` when the policy sets none: one standard deviation of the
/// forecast's shortfall.
pub const DEFAULT_VOLATILITY_SIGMAS: f64 = 1.0;

/// Time constant of the shortfall's mean square: about a day, so a daily cycle's quiet hours do
/// not forget its busy ones.
pub const SHORTFALL_TAU_SECONDS: f64 = 86_400.0;

/// Public replicas are released in quanta of this fraction of those running (at least
/// [`MIN_BURST_QUANTUM`]), or all at once: see [`BurstController::burst_hysteresis`].
pub const BURST_DOWN_QUANTUM_FRACTION: f64 = 0.1;

/// The smallest quantum of public replicas released: one, so that a small burst follows demand
/// down replica by replica (a quantum of two measured 8% more public spend on the NYC trace).
pub const MIN_BURST_QUANTUM: u32 = 1;

/// While an earlier scale-up of public replicas is starting, another is made only when it adds
/// at least this fraction of the public replicas (and at least two).
pub const BURST_UP_GROWTH_FRACTION: f64 = 0.5;

/// Public replicas released at a time when `public` are running.
pub fn burst_quantum(public: u32) -> u32 {
    ((BURST_DOWN_QUANTUM_FRACTION * f64::from(public)).ceil() as u32).max(MIN_BURST_QUANTUM)
}

/// A surge: demand grown by more than this fraction within about one public start-up. A forecast cannot size what comes next (a spike may double demand
/// and collapse before replicas arrive, or keep going), so a surge is met as a threshold scaler
/// meets any rise: a block at once when demand passes [`SURGE_UTILISATION`] of the replicas
/// requested, nothing more while the block starts. Smooth cycles rise far slower (the NYC
/// trace's steepest half-hour: 17% of demand over the spot start-up).
pub const SURGE_GROWTH: f64 = 0.25;

/// Utilisation of the requested replicas above which a surge gets a block, and under which, of
/// the replicas ready before a block, the block goes once the rebound window has passed (see
/// [`SURGE_REBOUND_STARTUPS`]).
pub const SURGE_UTILISATION: f64 = 0.8;

/// Utilisation of the replicas before a surge's block under which the block goes: lower than
/// [`SURGE_UTILISATION`], so that a spike falling back and rising again (common: news breaks in
/// waves) finds the block it paid to start still there, as a threshold scaler's would be.
pub const SURGE_RELEASE_UTILISATION: f64 = 0.6;

/// For how many public start-ups after a surge's last block its blocks are held down to
/// [`SURGE_RELEASE_UTILISATION`] (a rebound's window); later they go under
/// [`SURGE_UTILISATION`].
pub const SURGE_REBOUND_STARTUPS: i64 = 2;

/// A surge's block: this fraction of the component's `max` (at least one replica).
pub const SURGE_BLOCK_FRACTION: f64 = 0.1;

/// Replicas in a surge's block for a component of `max` replicas.
pub fn surge_block(max: u32) -> u32 {
    ((SURGE_BLOCK_FRACTION * f64::from(max)).ceil() as u32).max(1)
}

/// Most forecasts awaiting their outcome: bounds the state whatever the interval and start-up.
pub const MAX_PENDING_FORECASTS: usize = 64;

impl ControllerConfig {
    /// The configuration for `request` (the planner's view of the component) under `policy`.
    pub fn new(
        policy: &BurstPolicySpec,
        replicas: &ReplicaRange,
        request: &ComponentRequest,
        pools: &[PoolView],
    ) -> Result<Self, ConfigError> {
        let target = policy.metric.target_per_replica;
        if !(target > 0.0 && target.is_finite()) {
            return Err(ConfigError::Target(target));
        }
        if replicas.min > replicas.max {
            return Err(ConfigError::Bounds {
                min: replicas.min,
                max: replicas.max,
            });
        }
        // Eligibility regardless of health: an unhealthy pool's start-up still bounds how early
        // the controller must act once it recovers.
        let eligible = |cloud: Cloud| {
            pools
                .iter()
                .filter(move |p| p.cloud == cloud)
                .filter(|p| {
                    let mut healthy = (*p).clone();
                    healthy.health = crate::planner::PoolHealth::Healthy;
                    ineligibility(&healthy, request).is_none()
                })
                .map(|p| p.startup_seconds)
        };
        let private_startup_seconds = eligible(Cloud::Private).max().unwrap_or(0);
        let public_startup_seconds = if policy.burst.enabled {
            eligible(Cloud::Public).max()
        } else {
            None
        };
        Ok(Self {
            target_per_replica: target,
            headroom_percent: policy.metric.headroom_percent,
            tolerance_percent: policy
                .metric
                .tolerance_percent
                .unwrap_or(DEFAULT_TOLERANCE_PERCENT),
            interval_seconds: i64::from(policy.metric.interval_seconds),
            min: replicas.min,
            max: replicas.max,
            up: Behavior::from(&policy.scale_up),
            down: Behavior::from(&policy.scale_down),
            failback_after_seconds: i64::from(policy.burst.failback_after_seconds),
            prewarm: policy
                .prewarm
                .iter()
                .map(|w| PrewarmSpan {
                    name: w.name.clone(),
                    start: w.start.0.as_second(),
                    end: w.end.0.as_second(),
                    min_replicas: w.min_replicas,
                })
                .collect(),
            fallback: policy.metric_unavailable.action,
            fallback_floor: policy.metric_unavailable.floor_replicas,
            private_startup_seconds,
            public_startup_seconds,
            keep_private_warm: !policy.burst.private_capacity_shared,
            volatility_sigmas: policy
                .metric
                .volatility_headroom
                .filter(|z| z.is_finite() && *z >= 0.0)
                .unwrap_or(DEFAULT_VOLATILITY_SIGMAS),
        })
    }

    /// How long the scale history must reach back.
    fn keep_seconds(&self) -> i64 {
        let down = self.effective_down();
        self.up
            .window_seconds
            .max(down.window_seconds)
            .max(self.up.period_seconds)
            .max(down.period_seconds)
    }

    /// The scale-down behaviour in force: when the component can burst, its window lasts at
    /// least the public start-up. A public replica released and needed again within its
    /// start-up costs more (a new start-up, paid, not serving) than keeping it, so a dip
    /// shorter than that is held through (as a clairvoyant schedule would).
    pub fn effective_down(&self) -> Behavior {
        let mut down = self.down;
        if let Some(startup) = self.public_startup_seconds {
            down.window_seconds = down.window_seconds.max(i64::from(startup));
        }
        down
    }
}

/// What the controller remembers between ticks. Persist it (it serialises to JSON) and pass it
/// back on the next tick; a fresh default state is valid too (the first tick then starts from the
/// observed replicas, without history).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerState {
    /// Recommendations and scale steps for stabilisation windows and step limits.
    pub history: ScaleHistory,
    /// Smoothed demand and its trend.
    pub forecast: Holt,
    /// The last decision; `None` before the first tick.
    pub desired: Option<u32>,
    /// Since when the metric has been unavailable.
    pub metric_unavailable_since: Option<i64>,
    /// The prewarm window in force at the last tick.
    pub prewarm: Option<String>,
    /// Since when the decision has fitted private capacity (for failback hysteresis).
    pub fits_private_since: Option<i64>,
    /// Since when public replicas have been placed.
    pub burst_since: Option<i64>,
    /// Forecasts over the public start-up awaiting the demand they predicted, oldest first.
    #[serde(default)]
    pub pending_forecasts: std::collections::VecDeque<PendingForecast>,
    /// Mean square of the shortfall of the forecasts used (demand units squared), decaying with
    /// [`SHORTFALL_TAU_SECONDS`]: what sizes the volatility headroom.
    #[serde(default)]
    pub shortfall_square: f64,
    /// Mean squares of the errors of the trend's forecast and of the flat one (demand stays as
    /// it is), same decay: how far the trend is to be trusted (see [`trend_weight`]).
    #[serde(default)]
    pub trend_error_square: f64,
    #[serde(default)]
    pub flat_error_square: f64,
    /// Whether a step limit cut the last scale-up short: the replicas starting then were not
    /// all that was needed, so the next scale-up is not held for them.
    #[serde(default)]
    pub up_step_limited: bool,
    /// The block of public replicas requested for a surge, while the surge lasts.
    #[serde(default)]
    pub surge: Option<Surge>,
    /// Replicas placed at the last observed plan.
    pub public_replicas: u32,
    pub private_replicas: u32,
    /// Whether a budget bound at the last observed plan.
    pub budget_bound: bool,
}

/// The blocks of replicas requested at once for a surge (see [`SURGE_GROWTH`]): while the surge
/// lasts, the replicas above private capacity are these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Surge {
    /// Unix seconds the last block was requested.
    pub since: i64,
    /// Replicas requested before the surge's first block.
    pub base: u32,
    /// Replicas with the blocks, lowered as demand falls; the surge ends at `base`.
    pub floor: u32,
    /// Highest demand since the surge's first block (0 in state written before it was kept).
    #[serde(default)]
    pub peak: f64,
    /// `floor` as the last block left it: while `floor` stands there (and the block is younger
    /// than a start-up) the last block is still starting; once it is released, every block
    /// left is ready (blocks come a start-up apart). 0 in state written before it was kept.
    #[serde(default)]
    pub last_top: u32,
}

/// A forecast over the public start-up, kept until the demand it predicted is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingForecast {
    /// Unix seconds the forecast is for.
    pub due: i64,
    /// Demand when it was made: the flat forecast.
    pub flat: f64,
    /// The trend's forecast (at least `flat`).
    pub trend: f64,
    /// What the controller used: between the two, by the trend's weight then.
    pub used: f64,
}

/// How far to trust the trend, from 0 (demand stays as it is) to 1 (Holt's forecast), from
/// the measured errors of both over the public start-up: fully while the trend's forecast errs
/// less than standing still (ramps that persist, as a daily cycle's), else the ratio of their
/// mean squares (spikes that revert: extrapolating the jump overshoots, so a spike does not rent
/// replicas for a rise that never comes). Without history the trend is trusted.
pub fn trend_weight(trend_error_square: f64, flat_error_square: f64) -> f64 {
    if trend_error_square <= flat_error_square {
        1.0
    } else {
        flat_error_square / trend_error_square
    }
}

/// What the controller observes at a tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Demand from the policy's metric; `None` when it cannot be read.
    pub demand: Option<f64>,
    /// Replicas requested now (ready or starting); used only before the first decision.
    pub current_replicas: u32,
    /// Of which on public pools.
    pub public_replicas: u32,
    /// Replicas of this component the private pools can hold now (see [`private_capacity`]).
    pub private_capacity: u32,
}

/// Why the decision is what it is: the binding factor, for reasons and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Why {
    /// Demand now, with headroom.
    Demand,
    /// The demand forecast over the start-up time of the pools it would use.
    Forecast,
    /// The component's `replicas.min`.
    Min,
    /// The component's `replicas.max`.
    Max,
    /// A prewarm window's floor.
    Prewarm,
    /// The private capacity, owned and kept warm.
    PrivateWarm,
    /// A stabilisation window holds the count.
    Stabilized,
    /// A step limit slows the change.
    StepLimited,
    /// A surge: a block of replicas at once, nothing more while it starts.
    Surge,
    /// Metric unavailable: the last decision is kept.
    HoldLast,
    /// Metric unavailable: the fallback floor.
    FallbackFloor,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::Demand => "demand with headroom",
            Why::Forecast => "demand forecast over the start-up time",
            Why::Min => "replicas.min",
            Why::Max => "replicas.max",
            Why::Prewarm => "prewarm window floor",
            Why::PrivateWarm => "owned private capacity kept warm",
            Why::Stabilized => "held by the stabilization window",
            Why::StepLimited => "limited by the step per period",
            Why::Surge => "demand surging: a block of replicas at once",
            Why::HoldLast => "metric unavailable: holding the last decision",
            Why::FallbackFloor => "metric unavailable: fallback floor",
        })
    }
}

/// The first step's output: replicas and whether public replicas may move back to private.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// Replicas wanted now, within the component's bounds: the planner's `desired`.
    pub desired: u32,
    /// The planner's `rebalance`: false while failback hysteresis holds public replicas.
    pub rebalance: bool,
    /// Replicas demand (or the fallback) asked for before windows and step limits.
    pub recommended: u32,
    pub why: Why,
    /// ScaleUp, ScaleDown, Prewarm, MetricUnavailable.
    pub events: Vec<Event>,
}

/// What the planner did with the component, as far as the controller cares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacementSummary {
    pub private_replicas: u32,
    pub public_replicas: u32,
    pub unplaced: u32,
    /// The planner's reason when a budget left replicas unplaced.
    pub budget_reason: Option<String>,
}

impl PlacementSummary {
    pub fn from_plan(plan: &ComponentPlan) -> Self {
        let budget_reason = if plan.unplaced > 0 {
            plan.reasons
                .iter()
                .find(|r| r.starts_with("budget"))
                .cloned()
        } else {
            None
        };
        Self {
            private_replicas: plan.replicas_in(Cloud::Private),
            public_replicas: plan.replicas_in(Cloud::Public),
            unplaced: plan.unplaced,
            budget_reason,
        }
    }
}

/// The burst controller of one component.
#[derive(Clone, Debug, PartialEq)]
pub struct BurstController {
    config: ControllerConfig,
    derived: Derived,
}

/// Per-configuration constants of the tick, computed once in [`BurstController::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
struct Derived {
    /// `1 / targetPerReplica`.
    per_replica: f64,
    /// `(1 + headroom%) / targetPerReplica`.
    factor: f64,
    /// `1 + headroom%`.
    headroom: f64,
    keep_seconds: i64,
    private_startup: f64,
    public_startup: Option<f64>,
    /// The dead band's bounds, as fractions (see [`dead_band`]).
    tolerance: f64,
    band_cap: f64,
    /// The scale-down behaviour in force ([`ControllerConfig::effective_down`]).
    down: Behavior,
    /// Replicas in a surge's block ([`surge_block`] of `max`).
    surge_block: u32,
}

/// Where the controller's events go: collected with their messages ([`Vec<Event>`]), or only
/// counted ([`EventCounts`]); a message is formatted only when a sink keeps it.
pub trait EventSink {
    fn emit(&mut self, at: i64, kind: EventKind, message: impl FnOnce() -> String);
}

impl EventSink for Vec<Event> {
    fn emit(&mut self, at: i64, kind: EventKind, message: impl FnOnce() -> String) {
        self.push(Event {
            at,
            kind,
            message: message(),
        });
    }
}

/// Events counted by kind, without their messages: for the simulator's hot loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts([u64; EventKind::ALL.len()]);

impl EventCounts {
    pub fn get(&self, kind: EventKind) -> u64 {
        self.0[kind as usize]
    }

    /// The kinds that occurred, with their counts.
    pub fn to_map(&self) -> std::collections::BTreeMap<EventKind, u64> {
        EventKind::ALL
            .iter()
            .filter(|&&k| self.get(k) > 0)
            .map(|&k| (k, self.get(k)))
            .collect()
    }
}

impl EventSink for EventCounts {
    fn emit(&mut self, _at: i64, kind: EventKind, _message: impl FnOnce() -> String) {
        self.0[kind as usize] += 1;
    }
}

/// A tick's decision without its events (those went to an [`EventSink`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tick {
    pub desired: u32,
    pub rebalance: bool,
    pub recommended: u32,
    pub why: Why,
}

impl BurstController {
    pub fn new(config: ControllerConfig) -> Self {
        let per_replica = 1.0 / config.target_per_replica;
        let headroom = 1.0 + f64::from(config.headroom_percent) * 0.01;
        let derived = Derived {
            per_replica,
            factor: headroom * per_replica,
            headroom,
            keep_seconds: config.keep_seconds(),
            private_startup: f64::from(config.private_startup_seconds),
            public_startup: config.public_startup_seconds.map(f64::from),
            tolerance: dead_band(config.tolerance_percent, 0.0),
            band_cap: dead_band(config.tolerance_percent, 1.0),
            down: config.effective_down(),
            surge_block: surge_block(config.max),
        };
        Self { config, derived }
    }

    /// The configuration (to change it, build a new controller: constants derive from it).
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Step 1, functional form: (state, observation, now) → (new state, recommendation).
    pub fn recommend(
        &self,
        state: &ControllerState,
        observation: &Observation,
        now: i64,
    ) -> (ControllerState, Recommendation) {
        let mut next = state.clone();
        let recommendation = self.recommend_in_place(&mut next, observation, now);
        (next, recommendation)
    }

    /// Step 1 updating `state` in place: the same as [`Self::recommend`] without the copy.
    pub fn recommend_in_place(
        &self,
        state: &mut ControllerState,
        observation: &Observation,
        now: i64,
    ) -> Recommendation {
        let mut events = Vec::new();
        let tick = self.recommend_with(state, observation, now, &mut events);
        Recommendation {
            desired: tick.desired,
            rebalance: tick.rebalance,
            recommended: tick.recommended,
            why: tick.why,
            events,
        }
    }

    /// Step 1 updating `state` in place, events to `events`: for the simulator's hot loop
    /// (with [`EventCounts`], no message is formatted). Always inlined into its caller (the
    /// tick): called once per step, its return was a measured tenth of the simulator's time.
    #[inline(always)]
    pub fn recommend_with(
        &self,
        state: &mut ControllerState,
        observation: &Observation,
        now: i64,
        events: &mut impl EventSink,
    ) -> Tick {
        let c = &self.config;
        let current = state.desired.unwrap_or(observation.current_replicas);

        // Floors: min, raised by a prewarm window in force.
        let window = if c.prewarm.is_empty() {
            None
        } else {
            c.prewarm.iter().find(|w| w.start <= now && now < w.end)
        };
        let mut floor = c.min;
        let mut floor_why = Why::Min;
        if let Some(w) = window
            && w.min_replicas > floor
        {
            floor = w.min_replicas;
            floor_why = Why::Prewarm;
        }
        // Owned private replicas the component holds stay warm (an idle one saves nothing and a
        // warm one serves the next spike without a start-up), within the room left once every
        // other component is placed: a sibling needing it gets it back. Only replicas already
        // held: claiming idle room would race the siblings' claims in the same tick and could
        // put "warm" replicas on public pools.
        let warm = observation.private_capacity.min(state.private_replicas);
        if c.keep_private_warm && warm > floor {
            floor = warm;
            floor_why = Why::PrivateWarm;
        }
        let floor = floor.min(c.max);
        if window.map(|w| &w.name) != state.prewarm.as_ref() {
            if let Some(w) = window {
                events.emit(now, EventKind::Prewarm, || {
                    format!(
                        "prewarm window {} raises the floor to {} replicas until {}",
                        w.name,
                        floor,
                        k8s_openapi::jiff::Timestamp::from_second(w.end)
                            .map_or_else(|_| w.end.to_string(), |t| t.to_string())
                    )
                });
            }
            state.prewarm = window.map(|w| w.name.clone());
        }

        let demand = observation.demand.filter(|d| d.is_finite() && *d >= 0.0);
        let (desired, recommended, why) = match demand {
            Some(demand) => {
                state.metric_unavailable_since = None;
                // The next decision comes about one tick later: look ahead over that too.
                let gap = state
                    .forecast
                    .last
                    .map_or(c.interval_seconds, |last| (now - last).max(0));
                state.forecast.update(now, demand);
                let outlook = self.volatility_spare(state, demand, now, gap);
                let (raw, mut why) =
                    self.for_demand(state, demand, outlook, observation, current, gap);
                let recommended = raw.clamp(floor, c.max);
                if recommended != raw {
                    why = if raw > c.max { Why::Max } else { floor_why };
                }
                let down = &self.derived.down;
                state
                    .history
                    .record_for_windows(now, recommended, &c.up, down);
                // The scale-down window is lengthened to the public start-up to hold replicas
                // through a dip shorter than that. Demand forecast to fall by more than the
                // widest noise band over the start-up is no dip (a spike collapsing, a peak
                // ending): the held replicas would only idle, so only the policy's own window
                // holds them.
                let falling = self.derived.public_startup.is_some_and(|startup| {
                    state.forecast.forecast(startup) < demand * (1.0 - self.derived.band_cap)
                });
                // Without public replicas, a scale-down releases private ones (shared private
                // capacity): the public start-up is not what a dip would cost then.
                let down = if falling || observation.public_replicas == 0 {
                    &c.down
                } else {
                    down
                };
                let stabilized = state.history.stabilized(now, current, &c.up, down);
                let limited = state
                    .history
                    .rate_limited(now, current, stabilized, &c.up, down);
                // Floors and max are hard bounds, as the HPA's min and max are.
                let mut desired = limited.clamp(floor, c.max);
                if desired != recommended {
                    why = if stabilized != recommended {
                        Why::Stabilized
                    } else {
                        Why::StepLimited
                    };
                    if desired == floor && floor > limited {
                        why = floor_why;
                    }
                }
                let was_limited = state.up_step_limited;
                state.up_step_limited = limited < stabilized;
                if !was_limited && self.burst_hysteresis(state, now, current, desired, observation)
                {
                    desired = current;
                    why = Why::Stabilized;
                }
                if let Some(surged) = self.surge(
                    state,
                    demand,
                    now,
                    (current, desired),
                    floor,
                    observation.private_capacity,
                ) {
                    desired = surged;
                    why = Why::Surge;
                }
                (desired, recommended, why)
            }
            None => {
                if state.metric_unavailable_since.is_none() {
                    state.metric_unavailable_since = Some(now);
                    events.emit(now, EventKind::MetricUnavailable, || match c.fallback {
                        FallbackAction::HoldLast => {
                            format!("metric unavailable: holding {current} replicas (HoldLast)")
                        }
                        FallbackAction::Floor => format!(
                            "metric unavailable: scaling to the floor of {} replicas (Floor)",
                            c.fallback_floor.unwrap_or(c.min)
                        ),
                    });
                }
                // No recommendation is recorded: the windows must not learn a made-up value.
                match c.fallback {
                    FallbackAction::HoldLast => {
                        let d = current.clamp(floor, c.max);
                        (d, d, Why::HoldLast)
                    }
                    FallbackAction::Floor => {
                        let d = c.fallback_floor.unwrap_or(c.min).clamp(floor, c.max);
                        (d, d, Why::FallbackFloor)
                    }
                }
            }
        };

        let change = i64::from(desired) - i64::from(current);
        state
            .history
            .record_change(now, change as i32, self.derived.keep_seconds);
        if change != 0 {
            let kind = if change > 0 {
                EventKind::ScaleUp
            } else {
                EventKind::ScaleDown
            };
            events.emit(now, kind, || {
                format!("{current} → {desired} replicas: {why}")
            });
        }

        // Failback hysteresis: public replicas may move back only after the decision has fitted
        // private capacity for the whole window; any misfit restarts the clock.
        if desired <= observation.private_capacity {
            state.fits_private_since.get_or_insert(now);
        } else {
            state.fits_private_since = None;
        }
        let settled = state
            .fits_private_since
            .is_some_and(|since| now - since >= c.failback_after_seconds);
        let rebalance = observation.public_replicas == 0 || settled;

        state.desired = Some(desired);
        Tick {
            desired,
            rebalance,
            recommended,
            why,
        }
    }

    /// Whether a change of public replicas from `current` to `desired` is held (see
    /// [`BURST_DOWN_QUANTUM_FRACTION`] and [`BURST_UP_GROWTH_FRACTION`]): public replicas are
    /// released only a quantum at a time (or all of them), and while public replicas requested
    /// earlier are still starting more are added only when they grow the public share by a
    /// good part. Both bound scale changes: a public replica's start-up is paid, not serving,
    /// so one more change on noise costs more than the replica-minutes it saves, and replicas
    /// added to chase a spike while the first ones start arrive after it.
    #[inline(always)]
    fn burst_hysteresis(
        &self,
        state: &ControllerState,
        now: i64,
        current: u32,
        desired: u32,
        observation: &Observation,
    ) -> bool {
        let Some(startup) = self.config.public_startup_seconds else {
            return false;
        };
        let private = observation.private_capacity;
        let public_now = current.saturating_sub(private);
        if desired < current {
            // Down: all public replicas go at once; fewer only a quantum at a time.
            let public_after = desired.saturating_sub(private);
            public_after > 0 && current - desired < burst_quantum(public_now)
        } else if desired > current && public_now > 0 {
            // Up while bursting: hold while an earlier scale-up is starting, unless this one
            // grows the public share by a good part.
            let starting = state
                .history
                .changes
                .iter()
                .any(|&(t, change)| change > 0 && now - t < i64::from(startup));
            let growth = f64::from(desired - current);
            starting && growth < (BURST_UP_GROWTH_FRACTION * f64::from(public_now)).max(2.0)
        } else {
            false
        }
    }

    /// The surge rule (see [`SURGE_GROWTH`]): `Some(replicas)` when it overrides `desired`.
    /// While demand rises by more than [`SURGE_GROWTH`] within the public start-up, the forecast
    /// adds nothing onto public pools; a block of [`surge_block`] replicas (the first at least
    /// what demand needs now) is requested at once when demand passes [`SURGE_UTILISATION`] of the replicas
    /// requested and no block is starting (replicas chasing a spike arrive after it). Blocks go
    /// one a tick, the last when demand falls under [`SURGE_RELEASE_UTILISATION`] of the
    /// replicas ready without it ([`SURGE_UTILISATION`] once [`SURGE_REBOUND_STARTUPS`]
    /// start-ups have passed since the last block). The surge ends when every block is gone.
    #[inline(always)]
    fn surge(
        &self,
        state: &mut ControllerState,
        demand: f64,
        now: i64,
        (current, desired): (u32, u32),
        floor: u32,
        private_capacity: u32,
    ) -> Option<u32> {
        let startup = self.config.public_startup_seconds?;
        let c = &self.config;
        // Only over owned private capacity kept warm: shared private replicas follow demand
        // (and a block could land on them), as before this rule.
        if !c.keep_private_warm {
            return None;
        }
        // Growth since about one public start-up ago: the oldest forecast still awaiting its
        // outcome was made then, at the demand it keeps as its flat forecast. Over a whole
        // start-up, not one tick, so a noisy sample is no surge.
        let risen_from = |f: &PendingForecast| demand > (1.0 + SURGE_GROWTH) * f.flat;
        let rising = state.pending_forecasts.front().is_some_and(risen_from);
        let block = self.derived.surge_block;
        if let Some(s) = state.surge.as_mut() {
            if demand > s.peak {
                s.peak = demand;
            }
            // The last block goes when the replicas ready without it would serve demand under
            // the release utilisation (the forecast still carries the rise, so the usual
            // scale-down would hold it). One block a tick, judged as a threshold scaler judges
            // it: a block still starting is not ready, so it is weighed against the replicas
            // before the one ahead of it (a wave falling back mid start-up keeps the block it
            // will need when it rises again). Waves come within minutes: past
            // [`SURGE_REBOUND_STARTUPS`] start-ups after the last block, a level that settled is
            // no wave, and blocks go as they came.
            let floor_before = s.floor;
            if s.floor > s.base {
                let release = if now - s.since < SURGE_REBOUND_STARTUPS * i64::from(startup) {
                    SURGE_RELEASE_UTILISATION
                } else {
                    SURGE_UTILISATION
                };
                let without_last = s.floor.saturating_sub(block).max(s.base);
                let last_starting = now - s.since < i64::from(startup) && s.floor >= s.last_top;
                let ready = if last_starting { without_last } else { s.floor };
                let ready_without = ready.saturating_sub(block).max(s.base);
                if demand < release * f64::from(ready_without) * c.target_per_replica {
                    s.floor = without_last;
                }
            }
            let lowered = s.floor < floor_before;
            let left = s.floor;
            // A spike that has turned down (demand a good part under the surge's peak) has
            // collapsed, though it may still stand above where it was a start-up ago: its
            // blocks go, and no forecast of its rise holds replicas for it.
            let collapsed = demand < SURGE_UTILISATION * s.peak;
            let blocks_left = left > s.base;
            if !blocks_left {
                state.surge = None;
            }
            if lowered && (!rising || collapsed) {
                // The blocks left stay (what private capacity holds follows demand); with none
                // left, down to the floor at once.
                let released = if blocks_left {
                    left.max(desired.min(private_capacity)).min(c.max)
                } else {
                    desired.min(left.max(floor))
                };
                return (released != desired).then_some(released);
            }
        }
        // Demand near what the private replicas serve, none public yet, that has risen by a
        // surge from any demand of the last start-up (a second spike after a dip: the oldest is
        // no trough then) surges too. Scanned only then: rare, off the simulator's every step
        // (while bursting, demand is near full all the time).
        let near_full = demand > SURGE_UTILISATION * f64::from(current) * c.target_per_replica;
        if !rising
            && state.surge.is_none()
            && !(near_full
                && current <= private_capacity
                && state.pending_forecasts.iter().any(risen_from))
        {
            return None;
        }
        // In a surge the forecast cannot size what comes: no scale-up onto public pools but by
        // blocks, and none while a block starts.
        let starting = state
            .surge
            .is_some_and(|s| now - s.since < i64::from(startup));
        if !starting && current < c.max && near_full {
            // The first block is at least what demand needs now (a step gets every replica at
            // once; only the forecast's rise is not trusted). The next are one block each, as
            // a threshold scaler's: sized by demand then, they paid for peaks gone as soon as
            // they came (docs/simulate.md, "Surges").
            let floor = match state.surge {
                None => (current + block).max(replicas_at(demand, self.derived.factor)),
                Some(_) => current + block,
            }
            .min(c.max);
            state.surge = Some(Surge {
                since: now,
                base: state.surge.map_or(current, |s| s.base),
                floor,
                peak: state.surge.map_or(demand, |s| s.peak.max(demand)),
                last_top: floor,
            });
        }
        // Private replicas start fast: what private capacity holds is not chasing.
        let held = match state.surge {
            Some(s) => s.floor.max(desired.min(private_capacity)),
            None => desired.min(current.max(private_capacity)),
        }
        .min(c.max);
        (held != desired).then_some(held)
    }

    /// The volatility headroom, in demand units: `volatilityHeadroom` standard deviations of how
    /// far demand has come in above the forecast made one public start-up earlier. Scores the
    /// forecasts now due against `demand`, then files this tick's forecast over the public
    /// start-up. Zero when the component cannot burst (nothing to start ahead of a spike).
    /// Also returns the trend's weight ([`trend_weight`]).
    #[inline(always)]
    fn volatility_spare(
        &self,
        state: &mut ControllerState,
        demand: f64,
        now: i64,
        gap: i64,
    ) -> (f64, f64) {
        let Some(startup) = self.derived.public_startup else {
            return (0.0, 1.0);
        };
        // Each scored forecast weighs its share of the time since the last tick.
        let weight = (gap as f64 / SHORTFALL_TAU_SECONDS).min(1.0);
        while let Some(&f) = state.pending_forecasts.front() {
            if f.due > now {
                break;
            }
            state.pending_forecasts.pop_front();
            let shortfall = if demand > f.used {
                demand - f.used
            } else {
                0.0
            };
            state.shortfall_square += weight * (shortfall * shortfall - state.shortfall_square);
            let (by_trend, flat) = (demand - f.trend, demand - f.flat);
            state.trend_error_square += weight * (by_trend * by_trend - state.trend_error_square);
            state.flat_error_square += weight * (flat * flat - state.flat_error_square);
        }
        let trust = trend_weight(state.trend_error_square, state.flat_error_square);
        if state.pending_forecasts.len() < MAX_PENDING_FORECASTS {
            let ahead = startup + gap as f64;
            let expected = state.forecast.forecast(ahead);
            let trend = if expected > demand { expected } else { demand };
            state.pending_forecasts.push_back(PendingForecast {
                due: now + ahead as i64,
                flat: demand,
                trend,
                used: demand + trust * (trend - demand),
            });
        }
        let spare = if state.shortfall_square > 0.0 && self.config.volatility_sigmas > 0.0 {
            self.config.volatility_sigmas * state.shortfall_square.sqrt()
        } else {
            0.0
        };
        (spare, trust)
    }

    /// Replicas for `demand`, anticipating start-up: the forecast over the private pools'
    /// start-up, and when the forecast over the public pools' (slower) start-up no longer fits
    /// private capacity, over that horizon, so the burst is requested early enough.
    ///
    /// Below `current`, the same is computed with the dead band (see [`dead_band`]: at least
    /// `tolerancePercent`, wider on noisy demand) as more headroom and the higher count is kept
    /// (never above `current`), so noise does not flap replicas.
    #[inline(always)]
    fn for_demand(
        &self,
        state: &ControllerState,
        demand: f64,
        (spare, trust): (f64, f64),
        observation: &Observation,
        current: u32,
        gap: i64,
    ) -> (u32, Why) {
        let d = &self.derived;
        let gap = gap as f64;
        let forecast = &state.forecast;
        // Demand is finite and non-negative here, and so is the forecast: plain comparisons
        // instead of NaN-aware `f64::max`.
        // The trend's rise above demand, weighted by how far it is trusted.
        let at_least_demand = |x: f64| {
            if x > demand {
                demand + trust * (x - demand)
            } else {
                demand
            }
        };
        // Expected demand over the private start-up, and over the public start-up when that no
        // longer fits private capacity; both at least `demand`. The ceiling is monotonic, so the
        // replicas of the larger expectation are the larger count: one ceiling, not two.
        // The volatility headroom rides on both: it is what the forecast misses.
        let private_d = at_least_demand(forecast.forecast(d.private_startup + gap)) + spare;
        let public_d = d
            .public_startup
            .map(|startup| at_least_demand(forecast.forecast(startup + gap)) + spare);
        // `replicas_at(public_d, f) > private_capacity` without its ceiling: `ceil(x) > n` iff
        // `x > n` (with the ceiling's epsilon).
        let private_capacity = f64::from(observation.private_capacity);
        let expected_with = |f: f64| match public_d {
            Some(p) if p * f * EPSILON_FACTOR > private_capacity && p > private_d => p,
            _ => private_d,
        };
        let expected = expected_with(d.factor);
        let mut recommended = replicas_at(expected, d.factor);
        // Whether the forecast raised it, i.e. `replicas_at(demand) < recommended`, without a
        // second ceiling: `ceil(x) < r` iff `x <= r - 1`.
        let mut why = if expected > demand
            && demand * d.factor * EPSILON_FACTOR <= f64::from(recommended) - 1.0
        {
            Why::Forecast
        } else {
            Why::Demand
        };
        if recommended < current {
            let band = (2.0 * forecast.noise).clamp(d.tolerance, d.band_cap);
            let f = (d.headroom + band) * d.per_replica;
            let tolerant_d = expected_with(f);
            // The ceiling only when it can exceed `recommended` (`ceil(x) > r` iff `x > r`).
            if tolerant_d * f * EPSILON_FACTOR > f64::from(recommended) {
                recommended = replicas_at(tolerant_d, f).min(current);
                why = Why::Demand;
            }
        }
        (recommended, why)
    }

    /// Step 2, functional form: (state, what the planner placed, now) → (new state, events).
    pub fn observe_plan(
        &self,
        state: &ControllerState,
        placed: &PlacementSummary,
        now: i64,
    ) -> (ControllerState, Vec<Event>) {
        let mut next = state.clone();
        let events = self.observe_plan_in_place(&mut next, placed, now);
        (next, events)
    }

    /// Step 2 updating `state` in place.
    pub fn observe_plan_in_place(
        &self,
        state: &mut ControllerState,
        placed: &PlacementSummary,
        now: i64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        self.observe_plan_with(state, placed, now, &mut events);
        events
    }

    /// Step 2 updating `state` in place, events to `events`.
    pub fn observe_plan_with(
        &self,
        state: &mut ControllerState,
        placed: &PlacementSummary,
        now: i64,
        events: &mut impl EventSink,
    ) {
        let (was_public, was_private) = (state.public_replicas, state.private_replicas);
        if was_public == 0 && placed.public_replicas > 0 {
            state.burst_since = Some(now);
            events.emit(now, EventKind::BurstStart, || {
                format!(
                    "{} replicas on public pools: private capacity is not enough",
                    placed.public_replicas
                )
            });
        }
        if was_public > 0 && placed.public_replicas < was_public {
            let moved = (was_public - placed.public_replicas)
                .min(placed.private_replicas.saturating_sub(was_private));
            if moved > 0 {
                events.emit(now, EventKind::Failback, || format!(
                        "{moved} replicas moved from public back to private after demand fitted private capacity for {} s",
                        self.config.failback_after_seconds
                    ));
            }
        }
        if was_public > 0 && placed.public_replicas == 0 {
            let lasted = state.burst_since.map_or(0, |since| now - since);
            state.burst_since = None;
            events.emit(now, EventKind::BurstEnd, || {
                format!("no replicas on public pools any more, after {lasted} s")
            });
        }
        let bound = placed.budget_reason.is_some();
        if bound && !state.budget_bound {
            events.emit(now, EventKind::BudgetHit, || {
                format!(
                    "{} replicas unplaced: {}",
                    placed.unplaced,
                    placed.budget_reason.as_deref().unwrap_or("budget")
                )
            });
        }
        state.budget_bound = bound;
        state.public_replicas = placed.public_replicas;
        state.private_replicas = placed.private_replicas;
    }
}

/// Replicas of component `index` of `input` the private pools can hold next to the others as
/// they are requested: the room the planner leaves the component once every other component is
/// placed, counted on private pools. Planned in two passes: first the others with the component
/// at its floor (the floor outranks the others' extras, as in the real plan; those allowed to
/// rebalance come home where they can), then the component at `max` next to the others as the
/// first pass placed them. The room a sibling needs to come home is therefore never counted as
/// free: a component keeping its owned private capacity warm does not take it (which would keep
/// the sibling on public pools for good). Its burst preference stays as it is: disabling it
/// would make the component private-only, whose floor the planner places before the others'
/// existing private replicas, so room they hold would count as free. Call it when pools or
/// other components change, not every tick.
pub fn private_capacity(input: &PlanInput, index: usize, max: u32) -> u32 {
    let mut others = input.clone();
    {
        let component = &mut others.components[index];
        component.desired = component.min;
        component.current.clear();
    }
    let first = plan(&others);
    let mut trial = others;
    for (ci, placed) in first.components.iter().enumerate() {
        if ci == index {
            continue;
        }
        let other = &mut trial.components[ci];
        other.current = placed
            .placements
            .iter()
            .filter(|p| p.replicas > 0)
            .map(|p| (p.pool.clone(), p.replicas))
            .collect();
        other.desired = other.current.values().sum::<u32>().max(other.min);
        other.rebalance = false;
    }
    let component = &mut trial.components[index];
    component.desired = max.max(component.min);
    component.current.clear();
    component.rebalance = true;
    plan(&trial).components[index].replicas_in(Cloud::Private)
}

/// Replicas of component `index` each pool can still hold next to the other components as the
/// planner places them (the component itself left out), in the order of `input.pools`.
pub fn pool_capacity_for(input: &PlanInput, index: usize) -> Vec<u32> {
    let mut without = input.clone();
    without.components[index].desired = 0;
    without.components[index].min = 0;
    without.components[index].current.clear();
    let planned = plan(&without);
    let mut room: Vec<_> = input.pools.iter().map(|p| p.capacity).collect();
    for (ci, component) in planned.components.iter().enumerate() {
        let per_replica = &input.components[ci].per_replica;
        for placement in &component.placements {
            if let Some(pi) = input.pools.iter().position(|p| p.name == placement.pool) {
                room[pi].take(per_replica, placement.replicas);
            }
        }
    }
    let per_replica = &input.components[index].per_replica;
    room.iter().map(|r| r.fits(per_replica).0).collect()
}
