//! The burst controller: pure code from demand, replicas and the clock to a replica decision,
//! shared by the operator (one tick per reconcile) and `skybridge simulate` (one tick per step).
//!
//! The controller is a state machine: [`ControllerState`] is everything it remembers between
//! ticks (stabilisation history, recent scale steps, forecast, burst and failback clocks, last
//! decision). It serialises, so the operator can persist it (e.g. in status or an annotation) and
//! rebuild it after a restart. A tick is two pure steps around one planner call:
//!
//! 1. [`BurstController::recommend`]: (state, [`Observation`], now) → (state, [`Recommendation`]):
//!    how many replicas, and whether public replicas may move back to private (failback).
//! 2. the caller puts `desired` and `rebalance` into the component's
//!    [`crate::planner::ComponentRequest`] and calls [`crate::planner::plan`] once for every
//!    component of the estate (budgets are shared across a policy's components);
//! 3. [`BurstController::observe_plan`]: (state, [`PlacementSummary`], now) → (state, events):
//!    burst start/end, failback, budget shortfall.
//!
//! No I/O, no clock reads: `now` is Unix seconds passed in.

mod controller;
mod events;
mod forecast;
mod scaling;
pub mod step;

pub use controller::{
    BURST_DOWN_QUANTUM_FRACTION, BURST_UP_GROWTH_FRACTION, BurstController, ConfigError,
    ControllerConfig, ControllerState, DEFAULT_VOLATILITY_SIGMAS, EventCounts, EventSink,
    MAX_NOISE_BAND_PERCENT, MAX_PENDING_FORECASTS, MIN_BURST_QUANTUM, Observation, PendingForecast,
    PlacementSummary, PrewarmSpan, Recommendation, SHORTFALL_TAU_SECONDS, SURGE_BLOCK_FRACTION,
    SURGE_GROWTH, SURGE_REBOUND_STARTUPS, SURGE_RELEASE_UTILISATION, SURGE_UTILISATION, Surge,
    Tick, Why, burst_quantum, dead_band, pool_capacity_for, private_capacity, surge_block,
    trend_weight,
};
pub use events::{Event, EventKind};
pub use forecast::Holt;
pub use scaling::{Behavior, ScaleHistory, replicas_for};
pub use step::{Controlled, Decision, EstatePlacement, Placement, reconcile, reconcile_owned};
