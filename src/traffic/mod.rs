//! Traffic follows the replicas: which backends a component's route has, with which weights, and
//! when a backend's replicas may go (the pure [`decision`]); the typed Gateway API and
//! Multi-Cluster Services objects ([`resources`]); and the pure builder from a component and a
//! decision to those objects ([`build`]). No client in sight: the operator, `plan` and `simulate`
//! share these.

pub mod build;
pub mod decision;
pub mod resources;

pub use decision::*;
