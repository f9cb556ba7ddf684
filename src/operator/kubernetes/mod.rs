//! Kubernetes plumbing shared by the controllers: cluster clients, the generic applier and
//! sweep of children, the status writer, watches, slim views, names, Events and metrics. Nothing
//! here knows a controller.

pub mod applier;
pub mod children_watch;
pub mod clusters;
pub mod coalesce;
pub mod conditions;
pub mod events;
pub mod memo;
pub mod metrics;
pub mod names;
pub mod retry;
pub mod secrets;
pub mod service;
pub mod status_writer;
pub mod views;
