//! Model artifacts for the deployment controller: what to sync and what to hold (`plan`, pure)
//! and the background syncs that carry it out (`syncer`).

pub mod plan;
pub mod syncer;
