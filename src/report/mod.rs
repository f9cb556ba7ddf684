//! Machine-readable reports: stable JSON contracts for scripts, and tables for people.

mod plan;
mod rollout;
mod simulate;

pub use plan::{PlanReport, TrafficReport, add_planned_traffic, plan_report};
pub use rollout::{RolloutView, add_rollout_view};
pub use simulate::{
    Baselines, Headlines, SimulateReport, SweepReport, simulate_report, sweep_report,
};
