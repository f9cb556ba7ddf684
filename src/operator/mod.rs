//! The operator: controllers at the edges that fetch state, call the pure planner and burst
//! controller, apply the result with server-side apply, and write status.

pub mod conditions;
pub mod names;
pub mod status;
pub mod workloads;
