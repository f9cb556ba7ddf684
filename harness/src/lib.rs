//! `kube-harness`: the Kubernetes HTTP API on loopback for tests, one server per simulated
//! cluster, with a kubelet stand-in (Nodes, Deployment readiness up to node capacity) and fault
//! injection. See `README.md` for what is served and how faithfully.
//!
//! ```no_run
//! # async fn demo() -> kube_harness::Result<()> {
//! use kube_harness::{Cluster, ClusterConfig, NodeSpec};
//! let private = Cluster::start(
//!     ClusterConfig::new("private").node(NodeSpec::new("gpu-a").gpus(8).label("pool", "a100")),
//! )
//! .await?;
//! let client = private.client()?;
//! # let _ = client; Ok(()) }
//! ```
#![deny(warnings)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod api;
mod apply;
mod cluster;
mod control;
mod crd_schema;
mod defaults;
mod discovery;
mod endpoints;
mod error;
mod events;
mod faults;
mod gateway;
mod kubeconfig;
mod kubelet;
mod mcs;
mod openapi;
mod patch;
mod proto;
mod resources;
mod selectors;
mod server;
mod store;
mod table;
mod validation;
mod watch;

pub use cluster::{Cluster, ClusterConfig, ClusterHandle};
pub use error::{Error, Result};
pub use faults::FaultRule;
pub use gateway::CONTROLLER_NAME as GATEWAY_CONTROLLER_NAME;
pub use kubeconfig::kubeconfig_yaml;
pub use kubelet::{NodeSpec, Taint, parse_quantity};
pub use mcs::{ClusterSet, MIRROR_ANNOTATION as MCS_MIRROR_ANNOTATION};
