//! Watches the workloads the operator placed in a remote cluster, so that a deployment is
//! reconciled when one of its children becomes ready (or stops being ready) there, instead of on
//! the next periodic re-plan. Children in the operator's own cluster are watched through owner
//! references by the controller itself.

use super::names::{LABEL_DEPLOYMENT, LABEL_NAMESPACE, MANAGED_BY, MANAGED_BY_VALUE};
use crate::api::ModelDeployment;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::hash::{DefaultHasher, Hash, Hasher};
use tokio::task::JoinHandle;
use tracing::debug;

/// The deployment a child belongs to, from the labels the operator puts on it.
pub fn owner_of(child: &Deployment) -> Option<ObjectRef<ModelDeployment>> {
    let labels = child.labels();
    let name = labels.get(LABEL_DEPLOYMENT)?;
    let namespace = labels.get(LABEL_NAMESPACE)?;
    Some(ObjectRef::new(name).within(namespace))
}

/// What about a child matters to its deployment: its spec's generation and how many replicas
/// are ready. Status churn that changes neither triggers nothing.
fn readiness(child: &Deployment) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    child.metadata.generation.hash(&mut hasher);
    child
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Sends the owning deployment of every child whose readiness changes, until `triggers` closes
/// or the task is aborted (when the cluster's client is rebuilt or the operator stops). Watch
/// errors (an unreachable cluster) are retried with backoff.
pub fn spawn(
    client: Client,
    triggers: UnboundedSender<ObjectRef<ModelDeployment>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Deployment> = Api::all(client);
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE}"));
        let mut children = watcher(api, config)
            .default_backoff()
            .touched_objects()
            .predicate_filter(readiness, Default::default())
            .boxed();
        while let Some(event) = children.next().await {
            match event {
                Ok(child) => {
                    if let Some(owner) = owner_of(&child)
                        && triggers.unbounded_send(owner).is_err()
                    {
                        return;
                    }
                }
                Err(err) => debug!(%err, "watching remote children"),
            }
        }
    })
}
