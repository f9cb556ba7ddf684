//! Watches the workloads the operator placed in a remote cluster: a deployment is reconciled when
//! one of its children becomes ready (or stops being ready, or disappears) there, instead of on
//! the next periodic re-plan, and the latest generation and readiness of every child is kept, so
//! that a reconcile need not re-apply a child that is already as it wants it. Children in the
//! operator's own cluster are watched through owner references by the controller itself.

use super::names::{LABEL_DEPLOYMENT, LABEL_NAMESPACE, MANAGED_BY, MANAGED_BY_VALUE};
use crate::api::ModelDeployment;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tracing::debug;

/// What the watch last saw of a child Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildState {
    pub generation: Option<i64>,
    pub ready_replicas: u32,
}

/// The children of one cluster by (namespace, name), as its watch sees them.
#[derive(Default)]
pub struct ObservedChildren {
    children: Mutex<HashMap<(String, String), ChildState>>,
}

impl ObservedChildren {
    pub fn get(&self, namespace: &str, name: &str) -> Option<ChildState> {
        self.lock()
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// Records a child; returns whether what matters about it changed.
    fn saw(&self, child: &Deployment) -> bool {
        let state = ChildState {
            generation: child.metadata.generation,
            ready_replicas: child
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                .max(0) as u32,
        };
        let key = (child.namespace().unwrap_or_default(), child.name_any());
        self.lock().insert(key, state) != Some(state)
    }

    fn gone(&self, child: &Deployment) {
        self.lock()
            .remove(&(child.namespace().unwrap_or_default(), child.name_any()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ChildState>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The deployment a child belongs to, from the labels the operator puts on it.
pub fn owner_of(child: &Deployment) -> Option<ObjectRef<ModelDeployment>> {
    let labels = child.labels();
    let name = labels.get(LABEL_DEPLOYMENT)?;
    let namespace = labels.get(LABEL_NAMESPACE)?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Keeps `observed` current and sends the owning deployment of every child whose generation or
/// readiness changes, or that is deleted, until `triggers` closes or the task is aborted (when
/// the cluster's client is rebuilt or the operator stops). Watch errors (an unreachable cluster)
/// are retried with backoff.
pub fn spawn(
    client: Client,
    observed: Arc<ObservedChildren>,
    triggers: UnboundedSender<ObjectRef<ModelDeployment>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Deployment> = Api::all(client);
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGED_BY_VALUE}"));
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let changed = match event {
                Ok(watcher::Event::Apply(child) | watcher::Event::InitApply(child)) => {
                    observed.saw(&child).then_some(child)
                }
                Ok(watcher::Event::Delete(child)) => {
                    observed.gone(&child);
                    Some(child)
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(err) => {
                    debug!(%err, "watching remote children");
                    None
                }
            };
            if let Some(owner) = changed.as_ref().and_then(owner_of)
                && triggers.unbounded_send(owner).is_err()
            {
                return;
            }
        }
    })
}
