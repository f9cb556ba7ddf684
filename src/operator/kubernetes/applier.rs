//! One applier and one sweep for every kind of child a controller owns in a cluster.
//!
//! A controller's build step describes the children it wants as [`DesiredChild`]ren (a kind, a
//! namespace, a name and the object serialized once); [`apply_children`] server-side applies
//! them, skipping what the apply memo says is unchanged (see [`memo_verdict`]), and
//! [`sweep_cluster`] deletes the labelled children of an owner that are not in the desired set.
//! Adding a kind of child is adding a [`Kind`] and a builder, not another apply or sweep path.

use crate::operator::error::{Error, Result};
use crate::operator::kubernetes::children_watch::ChildKind;
use crate::operator::kubernetes::clusters::ClusterClient;
use crate::operator::kubernetes::memo::{
    AppliedBody, AppliedChildren, ChildKey, MemoVerdict, Seen, memo_verdict,
};
use crate::operator::kubernetes::retry::idempotent;
use crate::operator::kubernetes::views::ChildView;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use std::collections::BTreeSet;
use std::time::Duration;
use tracing::info;

/// A kind of child. The order is the apply order: a phase is applied after the one before
/// (Secrets first: pods name them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Secret,
    Deployment,
    Service,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Secret, Kind::Deployment, Kind::Service];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
        }
    }

    pub fn resource(self) -> ApiResource {
        match self {
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
        }
    }

    /// Children of one phase are applied together, after those of the phases before.
    fn phase(self) -> u8 {
        match self {
            Kind::Secret => 0,
            Kind::Deployment | Kind::Service => 1,
        }
    }

    /// Whether the children watch indexes this kind (else it is found by listing only).
    fn indexed(self) -> bool {
        matches!(self, Kind::Deployment | Kind::Service)
    }

    /// Whether orphans of this kind are listed in every namespace; otherwise only in the
    /// namespaces the sweep names (Secrets: the operator needs no cluster-wide Secret access).
    fn listed_cluster_wide(self) -> bool {
        !matches!(self, Kind::Secret)
    }

    fn of_watched(kind: ChildKind) -> Kind {
        match kind {
            ChildKind::Deployment => Kind::Deployment,
            ChildKind::Service => Kind::Service,
        }
    }
}

/// A child by kind, namespace and name: what the desired set and the sweep compare.
pub type ChildId = (Kind, String, String);

/// One child as a build step wants it, serialized once (for the memo and as the apply body).
pub struct DesiredChild {
    pub kind: Kind,
    /// The pool whose cluster the child goes to.
    pub pool: String,
    pub namespace: String,
    pub name: String,
    pub body: AppliedBody,
}

impl DesiredChild {
    pub fn new<T: serde::Serialize>(
        kind: Kind,
        pool: &str,
        namespace: &str,
        name: &str,
        object: &T,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            kind,
            pool: pool.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            body: AppliedBody::of(object)?,
        })
    }

    pub fn id(&self) -> ChildId {
        (self.kind, self.namespace.clone(), self.name.clone())
    }
}

/// How applies are made.
pub struct Applier<'a> {
    pub memo: &'a AppliedChildren,
    pub field_manager: &'static str,
    /// How long a child's watch may lag behind this operator's own apply of it before the
    /// apply is repeated.
    pub watch_grace: Duration,
}

impl Applier<'_> {
    fn key(cluster: &ClusterClient, kind: Kind, namespace: &str, name: &str) -> ChildKey {
        (
            cluster.id.clone(),
            kind.name(),
            namespace.to_string(),
            name.to_string(),
        )
    }

    /// What the children watch of `cluster` knows of a child, for the memo rule.
    fn seen(cluster: &ClusterClient, child: &DesiredChild) -> Option<Seen> {
        let observed = cluster.observed.as_ref();
        Some(match child.kind {
            // Without a watch, readiness is known only from the apply's answer.
            Kind::Deployment => Seen::Generation(
                observed?
                    .get(&child.namespace, &child.name)
                    .map(|s| (s.generation, s.ready_replicas)),
            ),
            Kind::Service => Seen::Presence(
                observed
                    .filter(|o| o.complete())
                    .map(|o| o.has_service(&child.namespace, &child.name)),
            ),
            Kind::Secret => Seen::Unwatched,
        })
    }

    /// Applies one child unless the memo says it is as last applied; returns its ready
    /// replicas (0 for kinds without readiness).
    async fn apply_one(&self, cluster: &ClusterClient, child: &DesiredChild) -> Result<u32> {
        let key = Self::key(cluster, child.kind, &child.namespace, &child.name);
        let content = child.body.content;
        let verdict = match Self::seen(cluster, child) {
            Some(seen) => memo_verdict(
                self.memo.recorded(&key),
                content,
                seen,
                self.memo.ttl(),
                self.watch_grace,
            ),
            None => MemoVerdict::Apply,
        };
        if let MemoVerdict::Skip { ready } = verdict {
            return Ok(ready);
        }
        self.memo.forget(&key);
        let api: Api<ChildView> = Api::namespaced_with(
            cluster.client().await,
            &child.namespace,
            &child.kind.resource(),
        );
        let params = PatchParams::apply(self.field_manager).force();
        let patch = Patch::Apply(&*child.body.json);
        let applied = cluster
            .in_namespace(&child.namespace, || {
                cluster.send(idempotent(|| api.patch(&child.name, &params, &patch)))
            })
            .await?;
        self.memo.record(key, content, applied.metadata.generation);
        Ok(applied
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            .max(0) as u32)
    }

    /// Applies every child to its cluster (`None`: its cluster is cut off or its client
    /// failed, so it is sent nothing and reported with `Err` by the caller): phase by phase, the
    /// children of one phase all at once. One outcome per child, in order: its ready replicas,
    /// or the error.
    pub async fn apply_children(
        &self,
        children: &[(&DesiredChild, &ClusterClient)],
    ) -> Vec<Result<u32>> {
        let mut outcomes: Vec<Option<Result<u32>>> = children.iter().map(|_| None).collect();
        let phases: BTreeSet<u8> = children.iter().map(|(c, _)| c.kind.phase()).collect();
        for phase in phases {
            let applies =
                children
                    .iter()
                    .enumerate()
                    .filter(|(_, (child, _))| child.kind.phase() == phase)
                    .map(|(i, (child, cluster))| async move {
                        (i, self.apply_one(cluster, child).await)
                    });
            for (i, outcome) in futures::future::join_all(applies).await {
                outcomes[i] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every child is in a phase"))
            .collect()
    }
}

/// The orphan rule: every child found that the desired set does not keep.
pub fn orphans(found: impl IntoIterator<Item = ChildId>, keep: &BTreeSet<ChildId>) -> Vec<ChildId> {
    found.into_iter().filter(|id| !keep.contains(id)).collect()
}

/// How far a sweep looks for an owner's children in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepMode {
    /// Indexed kinds from the children index; nothing is listed. Unindexed kinds are left: the
    /// last listing found them, and the desired set has not changed since.
    Indexed,
    /// Indexed kinds from the index where it is complete, everything else listed: the desired
    /// set changed since the last complete sweep.
    List,
    /// Every kind listed, the index not trusted: the owner is being deleted and must see every
    /// child, however new.
    Everything,
}

/// One owner's children in one cluster, to sweep.
pub struct SweepTarget<'a> {
    pub cluster: &'a ClusterClient,
    /// The owner, by namespace and name, as the children index keys it.
    pub owner: (&'a str, &'a str),
    /// The label selector of the owner's children.
    pub selector: &'a str,
    /// The children to keep here.
    pub keep: &'a BTreeSet<ChildId>,
    /// Where kinds not listed cluster-wide are listed.
    pub namespaces: &'a BTreeSet<String>,
}

/// Deletes the owner's labelled children in one cluster that the desired set does not keep,
/// Deployments before Services and Secrets. Returns whether every kind was looked at (an
/// indexed kind whose index is incomplete is not, outside `List` and `Everything`).
pub async fn sweep_cluster(
    memo: &AppliedChildren,
    target: &SweepTarget<'_>,
    mode: SweepMode,
) -> Result<bool> {
    let cluster = target.cluster;
    let indexed = match mode {
        SweepMode::Everything => None,
        _ => cluster
            .observed
            .as_ref()
            .and_then(|o| o.children_of(target.owner.0, target.owner.1)),
    };
    let mut found: Vec<ChildId> = Vec::new();
    let mut complete = true;
    for kind in [Kind::Deployment, Kind::Service, Kind::Secret] {
        match (&indexed, kind.indexed(), mode) {
            (Some(children), true, _) => found.extend(
                children
                    .iter()
                    .filter(|c| Kind::of_watched(c.kind) == kind)
                    .map(|c| (kind, c.namespace.clone(), c.name.clone())),
            ),
            (None, true, SweepMode::Indexed) => complete = false,
            (_, false, SweepMode::Indexed) => {}
            _ => found.extend(list(cluster, kind, target.selector, target.namespaces).await?),
        }
    }
    for (kind, namespace, name) in orphans(found, target.keep) {
        info!(
            kind = kind.name(),
            child = name,
            namespace,
            cluster = cluster.id,
            "deleting a child no longer wanted"
        );
        delete(memo, cluster, kind, &namespace, &name).await?;
    }
    Ok(complete)
}

/// The children of `kind` with `selector` in a cluster: in every namespace, or in `namespaces`
/// for kinds not listed cluster-wide (where the operator may not list, there are none of its).
async fn list(
    cluster: &ClusterClient,
    kind: Kind,
    selector: &str,
    namespaces: &BTreeSet<String>,
) -> Result<Vec<ChildId>> {
    let by_labels = ListParams::default().labels(selector);
    let resource = kind.resource();
    let client = cluster.client().await;
    let apis: Vec<Api<ChildView>> = if kind.listed_cluster_wide() {
        vec![Api::all_with(client, &resource)]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced_with(client.clone(), ns, &resource))
            .collect()
    };
    let mut found = Vec::new();
    for api in apis {
        let listed = match cluster.send(idempotent(|| api.list(&by_labels))).await {
            Ok(listed) => listed,
            Err(kube::Error::Api(status))
                if !kind.listed_cluster_wide() && (status.code == 403 || status.code == 404) =>
            {
                continue;
            }
            Err(err) => return Err(Error::from(err)),
        };
        found.extend(listed.items.into_iter().map(|child| {
            (
                kind,
                child.metadata.namespace.unwrap_or_default(),
                child.metadata.name.unwrap_or_default(),
            )
        }));
    }
    Ok(found)
}

/// Deletes one child (gone already is fine) and forgets what was applied to it.
async fn delete(
    memo: &AppliedChildren,
    cluster: &ClusterClient,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<()> {
    memo.forget(&Applier::key(cluster, kind, namespace, name));
    let api: Api<ChildView> =
        Api::namespaced_with(cluster.client().await, namespace, &kind.resource());
    let background = DeleteParams::background();
    match cluster
        .send(idempotent(|| api.delete(name, &background)))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(Error::from(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: Kind, name: &str) -> ChildId {
        (kind, "shop".into(), name.into())
    }

    #[test]
    fn every_kind_of_child_not_kept_is_an_orphan() {
        let keep: BTreeSet<ChildId> = [id(Kind::Deployment, "a-x-p"), id(Kind::Service, "a-x")]
            .into_iter()
            .collect();
        let found = vec![
            id(Kind::Deployment, "a-x-p"),
            id(Kind::Deployment, "a-x-q"),
            id(Kind::Service, "a-x"),
            id(Kind::Service, "a-y"),
            id(Kind::Secret, "a-store-q"),
        ];
        assert_eq!(
            orphans(found, &keep),
            vec![
                id(Kind::Deployment, "a-x-q"),
                id(Kind::Service, "a-y"),
                id(Kind::Secret, "a-store-q"),
            ]
        );
        // The same name in another namespace, or of another kind, is another child.
        let elsewhere = (Kind::Deployment, "other".to_string(), "a-x-p".to_string());
        assert_eq!(orphans([elsewhere.clone()], &keep), vec![elsewhere]);
        assert_eq!(
            orphans([id(Kind::Secret, "a-x")], &keep),
            vec![id(Kind::Secret, "a-x")]
        );
        assert!(orphans(Vec::new(), &keep).is_empty());
    }

    #[test]
    fn kinds_describe_their_api_and_secrets_go_first() {
        for kind in Kind::ALL {
            assert_eq!(kind.resource().kind, kind.name());
        }
        assert_eq!(Kind::Deployment.resource().api_version, "apps/v1");
        assert_eq!(Kind::Secret.resource().plural, "secrets");
        assert!(Kind::Secret.phase() < Kind::Deployment.phase());
        assert!(!Kind::Secret.listed_cluster_wide() && !Kind::Secret.indexed());
    }
}
