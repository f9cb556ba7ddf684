//! Machine-readable reports: stable JSON contracts for scripts, and tables for people.

mod plan;
mod simulate;

pub use plan::{PlanReport, TrafficReport, add_planned_traffic, plan_report};
pub use simulate::{Baselines, SimulateReport, simulate_report};
