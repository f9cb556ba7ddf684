//! One error type for the operator's controllers.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cluster of pool {pool}: {message}")]
    Cluster { pool: String, message: String },
    #[error("kubeconfig Secret {secret}: {message}")]
    Kubeconfig { secret: String, message: String },
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("demand metric: {0}")]
    Metric(String),
    #[error("serialising {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("leader election: {0}")]
    LeaderElection(String),
    #[error("probe server: {0}")]
    ProbeServer(String),
    #[error("model artifacts: {0}")]
    Artifacts(String),
    #[error("planning: {0}")]
    Planning(String),
}

impl Error {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Cluster { .. } => "cluster",
            Error::Kubeconfig { .. } => "kubeconfig",
            Error::Finalizer(_) => "finalizer",
            Error::Metric(_) => "metric",
            Error::Serialize(_) => "serialize",
            Error::LeaderElection(_) => "leader_election",
            Error::ProbeServer(_) => "probe_server",
            Error::Artifacts(_) => "artifacts",
            Error::Planning(_) => "planning",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
