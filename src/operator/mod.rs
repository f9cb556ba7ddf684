//! The operator: controllers at the edges that fetch state, call the pure planner and burst
//! controller, apply the result with server-side apply, and write status.

pub mod applied;
pub mod artifact_plan;
pub mod artifacts;
pub mod batch;
pub mod children_watch;
pub mod clusters;
pub mod coalesce;
pub mod conditions;
pub mod context;
pub mod demand;
pub mod deployment_controller;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod names;
pub mod planning;
pub mod policy_controller;
pub mod policy_status;
pub mod pool_controller;
pub mod pool_validity;
pub mod retry;
pub mod runtime;
pub mod status;
pub mod stranded;
pub mod traffic; // traffic: routes and exports (issue #15)
pub mod views;
pub mod workloads;
