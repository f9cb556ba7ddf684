//! `skybridge simulate`: replays a demand trace through the burst controller and baselines, with
//! the pools' start-up delays, and compares costs with a clairvoyant lower bound. Pure: the trace
//! and estate come in as values, the figures and series go out; files are read and written by the
//! command line.

mod baselines;
pub mod capacity_events;
pub mod csv_out;
mod lower_bound;
mod oracle;
pub mod plot;
mod replay;
pub mod rollout;
pub mod sweep;
mod trace;
mod world;

pub use baselines::{
    THRESHOLD_DOWN, THRESHOLD_UP, ThresholdScaler, private_only_world, public_only_world,
};
pub use lower_bound::lower_bound;
pub use oracle::oracle;
pub use replay::{
    ControllerScaler, RunMetrics, RunOutput, Scaler, Series, View, exact_need, replay,
};
pub use trace::{
    DEFAULT_MAX_STEPS, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, Trace, TraceError, format_timestamp,
    parse_timestamp, parse_trace,
};
pub use world::{SetupError, World, policy_world, select_component};

use crate::estate::Estate;
use crate::planner::ComponentKey;

/// Knobs of a simulation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimulationOptions {
    /// Peak demand the trace is scaled to; `None`: what the component's `max` serves.
    pub peak: Option<f64>,
    /// Seconds per step; the trace is interpolated linearly between its rows.
    pub step: i64,
    /// Keep the policy run's per-step series (for a plot or CSV).
    pub record: bool,
}

impl Default for SimulationOptions {
    fn default() -> Self {
        Self {
            peak: None,
            step: 60,
            record: false,
        }
    }
}

/// Every run of one simulation.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub component: ComponentKey,
    /// Whether the component was chosen by default (first with a burst policy).
    pub defaulted: bool,
    pub policy_name: String,
    pub peak: f64,
    pub step: i64,
    pub start: i64,
    pub end: i64,
    pub steps: usize,
    pub policy: RunOutput,
    pub private_only: Option<RunOutput>,
    pub public_only: Option<RunOutput>,
    pub static_threshold: RunOutput,
    pub lower_bound: RunMetrics,
    /// Knows the future, pays the start-up delays (see [`oracle`]).
    pub oracle: RunMetrics,
    /// The policy's cost over the lower bound's.
    pub cost_ratio_to_lower_bound: Option<f64>,
    pub private_capacity: u32,
}

/// The headline figures of a run against the oracle, in both cost views.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Headline {
    pub unmet_demand_fraction: f64,
    /// Owned view: private capacity is paid whatever a policy does, so what it changes is
    /// public spend; this is the run's public spend over the oracle's (`None` when the oracle
    /// spends nothing).
    pub public_spend_ratio_to_oracle: Option<f64>,
    /// Chargeback view: private replica-hours at their pools' prices plus public spend, over
    /// the oracle's.
    pub chargeback_ratio_to_oracle: Option<f64>,
}

impl Headline {
    pub fn of(run: &RunMetrics, oracle: &RunMetrics) -> Self {
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Self {
            unmet_demand_fraction: run.unmet_demand_fraction,
            public_spend_ratio_to_oracle: ratio(run.public_cost, oracle.public_cost),
            chargeback_ratio_to_oracle: ratio(run.chargeback_cost, oracle.chargeback_cost),
        }
    }
}

/// Runs the policy, the baselines and the bound. `progress(done, total)` counts steps.
pub fn simulate(
    estate: &Estate,
    component: Option<&ComponentKey>,
    trace: &Trace,
    options: SimulationOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Simulation, SetupError> {
    simulate_with_events(
        estate,
        component,
        trace,
        options,
        &capacity_events::CapacityEvents::default(),
        progress,
    )
}

/// [`simulate`] with stockouts and spot interruptions (issue #19): every replayed run (policy
/// and baselines) sees the same episodes; the lower bound and the oracle do not (they are the
/// references a run is measured against).
pub fn simulate_with_events(
    estate: &Estate,
    component: Option<&ComponentKey>,
    trace: &Trace,
    options: SimulationOptions,
    events: &capacity_events::CapacityEvents,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Simulation, SetupError> {
    let key = select_component(estate, component)?;
    let mut world = policy_world(estate, &key)?;
    let peak = options
        .peak
        .unwrap_or(f64::from(world.max()) * world.target());
    let step = options.step.max(1);
    let demand = trace.scaled_to(peak).sample(step);
    if !events.is_empty() {
        let end = trace.start() + demand.len() as i64 * step;
        world.capacity_events = Some(std::sync::Arc::new(capacity_events::Timeline::new(
            events,
            estate,
            &world,
            trace.start(),
            end,
        )?));
    }
    let steps = demand.len() as u64;
    let peak_replicas = world.need(peak);
    let private_only = private_only_world(&world, peak_replicas);
    let public_only = public_only_world(&world, peak_replicas);
    let total = steps * (2 + u64::from(private_only.is_some()) + u64::from(public_only.is_some()));
    let mut done = 0u64;
    let start = trace.start();
    let mut run = |w: &World, scaler: &mut dyn Scaler, record: bool, done: &mut u64| {
        let base = *done;
        let out = replay(w, &demand, start, step, scaler, record, &mut |k| {
            progress(base + k as u64, total)
        });
        *done += steps;
        out
    };
    let policy = run(
        &world,
        &mut ControllerScaler::new(&world.controller),
        options.record,
        &mut done,
    );
    let private_only = private_only.map(|w| {
        run(
            &w,
            &mut ControllerScaler::new(&w.controller),
            false,
            &mut done,
        )
    });
    let public_only = public_only.map(|w| {
        run(
            &w,
            &mut ControllerScaler::new(&w.controller),
            false,
            &mut done,
        )
    });
    let static_threshold = run(
        &world,
        &mut ThresholdScaler::for_world(&world),
        false,
        &mut done,
    );
    let bound = lower_bound(&world, &demand, step);
    let oracle = oracle(&world, &demand, step);
    let ratio = (bound.cost > 0.0).then(|| policy.metrics.cost / bound.cost);
    Ok(Simulation {
        defaulted: component.is_none(),
        policy_name: world.input.components[world.index]
            .policy
            .clone()
            .unwrap_or_default(),
        component: key,
        peak,
        step,
        start,
        end: start + (demand.len() as i64 - 1) * step,
        steps: demand.len(),
        policy,
        private_only,
        public_only,
        static_threshold,
        lower_bound: bound,
        oracle,
        cost_ratio_to_lower_bound: ratio,
        private_capacity: world.private_capacity,
    })
}
