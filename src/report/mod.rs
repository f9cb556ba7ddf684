//! Machine-readable reports: stable JSON contracts for scripts, and tables for people.

mod plan;

pub use plan::{PlanReport, plan_report};
