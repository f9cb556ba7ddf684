//! Typed objects of the two standard APIs traffic uses, with just the fields Skybridge writes or
//! reads: Gateway API routes (`gateway.networking.k8s.io/v1`) and Multi-Cluster Services
//! (`multicluster.x-k8s.io`, `v1alpha1` and `v1beta1`). Field names follow the upstream CRDs
//! (kubernetes-sigs/gateway-api `config/crd/standard`, kubernetes-sigs/mcs-api `config/crd`).
//! Every optional field is skipped when empty, so that a server-side apply claims only the
//! fields Skybridge sets and leaves the others to their managers.

pub mod gateway;
pub mod mcs;

pub use gateway::*;
pub use mcs::*;
