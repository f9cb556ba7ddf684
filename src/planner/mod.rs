//! The placement planner: pure code from pools and demands to a plan with reasons.

mod input;
mod placement;
mod resources;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod capacity_tests;

pub use input::*;
pub use placement::{ComponentPlan, Placement, Plan, ineligibility, plan};
pub use resources::{Headroom, Resources};
