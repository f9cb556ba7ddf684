//! The error of the operator's plumbing (Kubernetes requests, clusters, the process): what the
//! pool and policy controllers return, and the source of the deployment pipeline's step errors
//! (see `deployment::Error`).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig Secret could not be read.
    #[error("kubeconfig Secret {secret}")]
    KubeconfigRead {
        secret: String,
        #[source]
        source: kube::Error,
    },
    /// The kubeconfig it holds is not usable.
    #[error("kubeconfig Secret {secret}: {message}")]
    Kubeconfig { secret: String, message: String },
    #[error("serialising {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("leader election: {0}")]
    LeaderElection(String),
    #[error("probe server: {0}")]
    ProbeServer(String),
    #[error("model artifacts: {0}")]
    Artifacts(String),
}

impl Error {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::KubeconfigRead { .. } | Error::Kubeconfig { .. } => "kubeconfig",
            Error::Serialize(_) => "serialize",
            Error::LeaderElection(_) => "leader_election",
            Error::ProbeServer(_) => "probe_server",
            Error::Artifacts(_) => "artifacts",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
