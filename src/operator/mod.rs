//! The operator: controllers at the edges that observe state, call the pure planner and burst
//! controller, apply the result with server-side apply, and report status.
//!
//! Layout (dependencies point down only; `tests::no_import_circle` checks it):
//! - `runtime`, `http`: the process (controllers, leader election, probes);
//! - `deployment/`: the ModelDeployment reconcile as a pipeline, observe → decide → build →
//!   apply → report, one module per step;
//! - `pool/`, `policy/`: the ComputePool and BurstPolicy controllers;
//! - `artifacts/`: artifact planning (pure) and the background syncer;
//! - `context`: what every reconcile shares, with the per-deployment memory;
//! - `kubernetes/`: shared Kubernetes plumbing (clusters, the generic applier and sweep, the
//!   status writer, watches, views, names, Events, metrics).

pub mod artifacts;
pub mod context;
pub mod deployment;
pub mod error;
pub mod http;
pub mod kubernetes;
pub mod policy;
pub mod pool;
pub mod runtime;
