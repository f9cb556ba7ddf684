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
    #[error("leader election")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),
    /// The probe and metrics port could not be bound.
    #[error("probe server: cannot listen on {addr}")]
    ProbeListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("probe server")]
    ProbeServer(#[source] std::io::Error),
    /// The probe server's task panicked or was cancelled.
    #[error("probe server task")]
    ProbeTask(#[from] tokio::task::JoinError),
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
            Error::ProbeListen { .. } | Error::ProbeServer(_) | Error::ProbeTask(_) => {
                "probe_server"
            }
            Error::Artifacts(_) => "artifacts",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
