//! Watches the workloads the operator placed in a remote cluster (Deployments and Services with
//! its `managed-by` label):
//! - a deployment is reconciled when one of its child Deployments becomes ready (or stops being
//!   ready, or disappears) there, or a child Service appears or disappears, instead of on the
//!   next periodic re-plan;
//! - the latest generation and readiness of every child is kept, so that a reconcile need not
//!   re-apply a child that is already as it wants it;
//! - every child is indexed by the deployment it belongs to, so that finding orphans costs a
//!   lookup instead of two lists per cluster and reconcile.
//!
//! Children in the operator's own cluster are watched through owner references by the
//! controller itself.

use crate::api::ModelDeployment;
use crate::operator::kubernetes::names::{
    LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_NAMESPACE, LABEL_POOL, workload_selector,
};
use crate::operator::kubernetes::views::{DeploymentView, ServiceView};
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tracing::debug;

/// What the watch last saw of a child Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildState {
    pub generation: Option<i64>,
    pub ready_replicas: u32,
}

/// The two kinds of child the operator places.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    Deployment,
    Service,
}

/// A child as its labels describe it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Child {
    pub kind: ChildKind,
    pub namespace: String,
    pub name: String,
    pub component: String,
    /// Empty for Services, which serve a component in every pool of the cluster.
    pub pool: String,
}

/// A deployment, by namespace and name.
type OwnerKey = (String, String);

#[derive(Default)]
struct Index {
    deployments: HashMap<(String, String), ChildState>,
    /// Every child by the deployment it belongs to.
    owned: HashMap<OwnerKey, BTreeSet<Child>>,
    /// The owner of every child, to unindex it when it goes.
    owner: HashMap<(ChildKind, String, String), OwnerKey>,
    /// Per kind, whether the index holds the complete list (its watch has listed once and is
    /// not re-listing): orphans may be looked up only then.
    synced: HashMap<ChildKind, bool>,
    /// Children seen since a re-list began; at its end, the others are gone.
    relisting: HashMap<ChildKind, HashSet<(String, String)>>,
}

/// The children of one cluster as its watches see them.
#[derive(Default)]
pub struct ObservedChildren {
    index: Mutex<Index>,
}

impl ObservedChildren {
    pub fn get(&self, namespace: &str, name: &str) -> Option<ChildState> {
        self.lock()
            .deployments
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// Whether a child Service is known to exist (only meaningful once synced).
    pub fn has_service(&self, namespace: &str, name: &str) -> bool {
        self.lock().owner.contains_key(&(
            ChildKind::Service,
            namespace.to_string(),
            name.to_string(),
        ))
    }

    /// Whether the index holds every child: both watches have listed and none is re-listing.
    pub fn complete(&self) -> bool {
        self.lock().complete()
    }

    /// Every child of a deployment, or `None` while the index may be incomplete.
    pub fn children_of(&self, namespace: &str, name: &str) -> Option<Vec<Child>> {
        let index = self.lock();
        index.complete().then(|| {
            index
                .owned
                .get(&(namespace.to_string(), name.to_string()))
                .map(|children| children.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// Records a child; returns whether its deployment should hear of it: a Deployment whose
    /// generation or readiness changed, or that appears already ready. The operator creates
    /// children itself, so their appearance alone is no news; a Service never is (its going is).
    fn saw<K: Resource>(&self, kind: ChildKind, child: &K, state: Option<ChildState>) -> bool {
        let namespace = child.meta().namespace.clone().unwrap_or_default();
        let name = child.meta().name.clone().unwrap_or_default();
        let labels = child.labels();
        let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
        let owner = (label(LABEL_NAMESPACE), label(LABEL_DEPLOYMENT));
        let entry = Child {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
            component: label(LABEL_COMPONENT),
            pool: if kind == ChildKind::Deployment {
                label(LABEL_POOL)
            } else {
                String::new()
            },
        };
        let mut index = self.lock();
        if let Some(seen) = index.relisting.get_mut(&kind) {
            seen.insert((namespace.clone(), name.clone()));
        }
        let key = (kind, namespace.clone(), name.clone());
        if let Some(previous) = index.owner.insert(key, owner.clone())
            && previous != owner
        {
            index.unown(&previous, kind, &namespace, &name);
        }
        index.owned.entry(owner).or_default().insert(entry);
        match state {
            Some(state) => match index.deployments.insert((namespace, name), state) {
                Some(before) => before != state,
                None => state.ready_replicas > 0,
            },
            None => false,
        }
    }

    /// Forgets a child; returns its owner if it was known.
    fn gone(&self, kind: ChildKind, namespace: &str, name: &str) -> Option<OwnerKey> {
        let mut index = self.lock();
        index.forget(kind, namespace, name)
    }

    fn relist_started(&self, kind: ChildKind) {
        let mut index = self.lock();
        index.synced.insert(kind, false);
        index.relisting.insert(kind, HashSet::new());
    }

    /// A re-list ended: children it did not see are gone. Returns their owners.
    fn relist_done(&self, kind: ChildKind) -> Vec<OwnerKey> {
        let mut index = self.lock();
        let seen = index.relisting.remove(&kind).unwrap_or_default();
        let stale: Vec<(String, String)> = index
            .owner
            .keys()
            .filter(|(k, ns, name)| *k == kind && !seen.contains(&(ns.clone(), name.clone())))
            .map(|(_, ns, name)| (ns.clone(), name.clone()))
            .collect();
        let owners = stale
            .iter()
            .filter_map(|(ns, name)| index.forget(kind, ns, name))
            .collect();
        index.synced.insert(kind, true);
        owners
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Index {
    fn complete(&self) -> bool {
        [ChildKind::Deployment, ChildKind::Service]
            .iter()
            .all(|kind| self.synced.get(kind).copied().unwrap_or(false))
    }

    fn forget(&mut self, kind: ChildKind, namespace: &str, name: &str) -> Option<OwnerKey> {
        let owner = self
            .owner
            .remove(&(kind, namespace.to_string(), name.to_string()))?;
        self.unown(&owner, kind, namespace, name);
        if kind == ChildKind::Deployment {
            self.deployments
                .remove(&(namespace.to_string(), name.to_string()));
        }
        Some(owner)
    }

    fn unown(&mut self, owner: &OwnerKey, kind: ChildKind, namespace: &str, name: &str) {
        if let Some(children) = self.owned.get_mut(owner) {
            children.retain(|c| !(c.kind == kind && c.namespace == namespace && c.name == name));
            if children.is_empty() {
                self.owned.remove(owner);
            }
        }
    }
}

fn state_of(child: &DeploymentView) -> ChildState {
    ChildState {
        generation: child.metadata.generation,
        ready_replicas: child
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            .max(0) as u32,
    }
}

/// The deployment a child belongs to, from the labels the operator puts on it.
pub fn owner_of<K: Resource>(child: &K) -> Option<ObjectRef<ModelDeployment>> {
    let labels = child.labels();
    let name = labels.get(LABEL_DEPLOYMENT)?;
    let namespace = labels.get(LABEL_NAMESPACE)?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Keeps `observed` current and sends the owning deployment of every child that changes in a
/// way that matters, or that is deleted, until `triggers` closes or the task is aborted (when
/// the cluster's client is rebuilt or the operator stops). Watch errors (an unreachable
/// cluster) are retried with backoff. Each watch call ends after `watch_seconds` and resumes,
/// so that one stuck on a cluster that stopped answering is noticed by the client's read
/// timeout. The index is not a health signal: while a cluster does not answer it holds what
/// was last seen, and reconciles go by the cluster's reachability instead.
pub fn spawn(
    client: Client,
    watch_seconds: u32,
    observed: Arc<ObservedChildren>,
    triggers: UnboundedSender<ObjectRef<ModelDeployment>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let config = watcher::Config::default()
            .labels(&workload_selector())
            .timeout(watch_seconds);
        let index = observed.clone();
        let deployments = watcher(Api::<DeploymentView>::all(client.clone()), config.clone())
            .default_backoff()
            .map(move |event| apply(&index, ChildKind::Deployment, event, |d| Some(state_of(d))))
            .boxed();
        let services = watcher(Api::<ServiceView>::all(client), config)
            .default_backoff()
            .map(move |event| apply(&observed, ChildKind::Service, event, |_| None))
            .boxed();
        let mut owners = futures::stream::select(deployments, services);
        while let Some(owners) = owners.next().await {
            for owner in owners {
                if triggers.unbounded_send(owner).is_err() {
                    return;
                }
            }
        }
    })
}

/// Applies one watch event to the index; returns the deployments to reconcile.
fn apply<K: Resource + Clone>(
    observed: &ObservedChildren,
    kind: ChildKind,
    event: watcher::Result<watcher::Event<K>>,
    state: impl Fn(&K) -> Option<ChildState>,
) -> Vec<ObjectRef<ModelDeployment>> {
    let as_ref = |(namespace, name): OwnerKey| ObjectRef::new(&name).within(&namespace);
    match event {
        Ok(watcher::Event::Apply(child) | watcher::Event::InitApply(child)) => {
            if observed.saw(kind, &child, state(&child)) {
                owner_of(&child).into_iter().collect()
            } else {
                Vec::new()
            }
        }
        Ok(watcher::Event::Delete(child)) => {
            let namespace = child.meta().namespace.clone().unwrap_or_default();
            observed.gone(kind, &namespace, &child.name_any());
            owner_of(&child).into_iter().collect()
        }
        Ok(watcher::Event::Init) => {
            observed.relist_started(kind);
            Vec::new()
        }
        Ok(watcher::Event::InitDone) => {
            observed.relist_done(kind).into_iter().map(as_ref).collect()
        }
        Err(err) => {
            debug!(%err, "watching remote children");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn labelled(
        namespace: &str,
        name: &str,
        owner: &str,
        component: &str,
        pool: &str,
    ) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                (LABEL_NAMESPACE.to_string(), "shop".to_string()),
                (LABEL_DEPLOYMENT.to_string(), owner.to_string()),
                (LABEL_COMPONENT.to_string(), component.to_string()),
                (LABEL_POOL.to_string(), pool.to_string()),
            ])),
            generation: Some(1),
            ..Default::default()
        }
    }

    fn deployment(name: &str, owner: &str, pool: &str) -> DeploymentView {
        DeploymentView::new(labelled("burst", name, owner, "ranker", pool), None)
    }

    fn service(name: &str, owner: &str) -> ServiceView {
        ServiceView::new(labelled("burst", name, owner, "ranker", ""), None)
    }

    fn list<K: Resource + Clone>(observed: &ObservedChildren, kind: ChildKind, items: Vec<K>) {
        apply(observed, kind, Ok(watcher::Event::<K>::Init), |_| None);
        for item in items {
            apply(observed, kind, Ok(watcher::Event::InitApply(item)), |_| {
                None
            });
        }
        apply(observed, kind, Ok(watcher::Event::<K>::InitDone), |_| None);
    }

    #[test]
    fn children_are_indexed_by_owner_only_once_both_watches_listed() {
        let observed = ObservedChildren::default();
        assert_eq!(observed.children_of("shop", "a"), None);
        list(
            &observed,
            ChildKind::Deployment,
            vec![
                deployment("a-ranker-cloud", "a", "cloud"),
                deployment("b-ranker-cloud", "b", "cloud"),
            ],
        );
        assert_eq!(
            observed.children_of("shop", "a"),
            None,
            "services not listed yet"
        );
        list(
            &observed,
            ChildKind::Service,
            vec![service("a-ranker", "a")],
        );
        let children = observed.children_of("shop", "a").unwrap();
        assert_eq!(children.len(), 2);
        assert!(
            children
                .iter()
                .any(|c| c.kind == ChildKind::Deployment && c.pool == "cloud")
        );
        assert!(
            children
                .iter()
                .any(|c| c.kind == ChildKind::Service && c.name == "a-ranker")
        );
        assert_eq!(observed.children_of("shop", "nobody"), Some(Vec::new()));
    }

    #[test]
    fn a_delete_and_a_relist_forget_children_and_name_their_owners() {
        let observed = ObservedChildren::default();
        list(
            &observed,
            ChildKind::Deployment,
            vec![deployment("a-ranker-cloud", "a", "cloud")],
        );
        list(
            &observed,
            ChildKind::Service,
            vec![service("a-ranker", "a"), service("b-ranker", "b")],
        );
        let owners = apply(
            &observed,
            ChildKind::Deployment,
            Ok(watcher::Event::Delete(deployment(
                "a-ranker-cloud",
                "a",
                "cloud",
            ))),
            |_| None,
        );
        assert_eq!(owners, vec![ObjectRef::new("a").within("shop")]);
        assert!(observed.get("burst", "a-ranker-cloud").is_none());
        // b's Service was deleted while the watch was down: the re-list does not see it.
        apply(
            &observed,
            ChildKind::Service,
            Ok(watcher::Event::<ServiceView>::Init),
            |_| None,
        );
        assert_eq!(
            observed.children_of("shop", "a"),
            None,
            "incomplete while re-listing"
        );
        apply(
            &observed,
            ChildKind::Service,
            Ok(watcher::Event::InitApply(service("a-ranker", "a"))),
            |_| None,
        );
        let owners = apply(
            &observed,
            ChildKind::Service,
            Ok(watcher::Event::<ServiceView>::InitDone),
            |_| None,
        );
        assert_eq!(owners, vec![ObjectRef::new("b").within("shop")]);
        assert_eq!(observed.children_of("shop", "b"), Some(Vec::new()));
        assert!(observed.has_service("burst", "a-ranker"));
        assert!(!observed.has_service("burst", "b-ranker"));
    }

    #[test]
    fn only_news_triggers() {
        let observed = ObservedChildren::default();
        let deployment_event = |event| {
            apply(&observed, ChildKind::Deployment, Ok(event), |d| {
                Some(state_of(d))
            })
        };
        let d = deployment("a-ranker-cloud", "a", "cloud");
        assert!(
            deployment_event(watcher::Event::Apply(d.clone())).is_empty(),
            "a new child that is not ready yet is the operator's own doing"
        );
        let mut resized = d.clone();
        resized.metadata.generation = Some(2);
        assert_eq!(
            deployment_event(watcher::Event::Apply(resized.clone())).len(),
            1,
            "a new generation"
        );
        assert!(
            deployment_event(watcher::Event::Apply(resized.clone())).is_empty(),
            "the same state again"
        );
        let mut ready = resized;
        ready.status = Some(crate::operator::kubernetes::views::DeploymentStatus {
            ready_replicas: Some(2),
        });
        assert_eq!(
            deployment_event(watcher::Event::Apply(ready.clone())).len(),
            1,
            "readiness"
        );
        let mut found_ready = deployment("b-ranker-cloud", "b", "cloud");
        found_ready.status = ready.status.clone();
        assert_eq!(
            deployment_event(watcher::Event::InitApply(found_ready)).len(),
            1,
            "a child first seen ready (after a restart) is news"
        );
        assert_eq!(
            deployment_event(watcher::Event::Delete(ready)).len(),
            1,
            "a child going is news"
        );
        let service_event = |event| apply(&observed, ChildKind::Service, Ok(event), |_| None);
        let s = service("a-ranker", "a");
        assert!(
            service_event(watcher::Event::Apply(s.clone())).is_empty(),
            "a Service appearing is the operator's own doing"
        );
        assert_eq!(
            service_event(watcher::Event::Delete(s)).len(),
            1,
            "a Service going is news"
        );
    }
}
