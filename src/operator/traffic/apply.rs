//! Writes of the traffic objects: server-side apply (the operator's field manager, forced on the
//! fields it sets, so that fields other managers own survive), deletes, and the list that finds
//! the ones no longer desired. Objects are sent as JSON through `DynamicObject` APIs whose kind
//! and version come from the cluster's discovery (see `discovery`).

use crate::operator::kubernetes::clusters::ClusterClient;
use crate::operator::kubernetes::names::DEPLOYMENT_MANAGER as FIELD_MANAGER;
use crate::operator::kubernetes::retry::idempotent;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::Value;

pub use crate::operator::kubernetes::names::LABEL_TRAFFIC;

/// Server-side apply of `object` (its `apiVersion`/`kind` set to `resource`'s); returns the
/// object as stored (for a route: with the status its Gateway wrote).
pub async fn apply(
    cluster: &ClusterClient,
    resource: &ApiResource,
    namespace: &str,
    mut object: Value,
) -> kube::Result<DynamicObject> {
    object["apiVersion"] = Value::String(resource.api_version.clone());
    object["kind"] = Value::String(resource.kind.clone());
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client().await, namespace, resource);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&object);
    cluster
        .in_namespace(namespace, || {
            cluster.send(idempotent(|| api.patch(&name, &params, &patch)))
        })
        .await
}

/// Reads one object (None: not there).
pub async fn get(
    cluster: &ClusterClient,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
) -> kube::Result<Option<DynamicObject>> {
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client().await, namespace, resource);
    cluster.send(idempotent(|| api.get_opt(name))).await
}

/// Deletes one object; gone already is fine.
pub async fn delete(
    cluster: &ClusterClient,
    resource: &ApiResource,
    namespace: &str,
    name: &str,
) -> kube::Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client().await, namespace, resource);
    let params = DeleteParams::default();
    match cluster.send(idempotent(|| api.delete(name, &params))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// The (namespace, name)s of a deployment's traffic objects of one kind in one cluster.
pub async fn list(
    cluster: &ClusterClient,
    resource: &ApiResource,
    selector: &str,
) -> kube::Result<Vec<(String, String)>> {
    let api: Api<DynamicObject> = Api::all_with(cluster.client().await, resource);
    let params = ListParams::default().labels(selector);
    let list = cluster
        .send(idempotent(|| api.list_metadata(&params)))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|o| {
            (
                o.metadata.namespace.unwrap_or_default(),
                o.metadata.name.unwrap_or_default(),
            )
        })
        .collect())
}

/// Whether an error says the kind is not served there (CRDs missing or removed).
pub fn not_served(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}
