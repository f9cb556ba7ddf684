//! Objects as the operator reads them from watches and write responses: only the parts it uses.
//!
//! Every object the API server sends carries its `managedFields`, which the operator never
//! reads. Parsing them into `ManagedFieldsEntry` (a JSON tree per field manager) cost more than
//! the rest of the object: about a tenth of the operator's CPU at scale. These types skip them,
//! and a write whose answer the operator does not use parses only the metadata.

use crate::api::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use kube::core::ApiResource;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// `ObjectMeta` without `managedFields`: serde skips that field unparsed.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SlimMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

fn slim_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let m = SlimMeta::deserialize(deserializer)?;
    Ok(ObjectMeta {
        annotations: m.annotations,
        creation_timestamp: m.creation_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        deletion_timestamp: m.deletion_timestamp,
        finalizers: m.finalizers,
        generate_name: m.generate_name,
        generation: m.generation,
        labels: m.labels,
        managed_fields: None,
        name: m.name,
        namespace: m.namespace,
        owner_references: m.owner_references,
        resource_version: m.resource_version,
        self_link: m.self_link,
        uid: m.uid,
    })
}

/// An object of kind `K` with its metadata (no managedFields) and its status as `S`; the spec is
/// not read. `S = IgnoredAny` reads the metadata only.
#[derive(Deserialize, Clone, Debug)]
pub struct View<K, S> {
    #[serde(deserialize_with = "slim_meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    pub status: Option<S>,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K, S> View<K, S> {
    pub fn new(metadata: ObjectMeta, status: Option<S>) -> Self {
        View {
            metadata,
            status,
            kind: PhantomData,
        }
    }
}

/// The status of a `Deployment`, as the children index and applies read it.
pub type DeploymentView = View<k8s_openapi::api::apps::v1::Deployment, DeploymentStatus>;
/// A `Service`: its metadata only.
pub type ServiceView = View<k8s_openapi::api::core::v1::Service, serde::de::IgnoredAny>;
/// The answer to a write whose body the operator does not use: its metadata only.
pub type Written<K> = View<K, serde::de::IgnoredAny>;

/// The part of a Deployment's status that readiness needs.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    #[serde(default)]
    pub ready_replicas: Option<i32>,
}

impl<K: Resource<DynamicType = ()>, S> Resource for View<K, S> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A child of any kind as an apply answers it: its metadata (no managedFields) and, where the
/// kind has one, the ready replicas of its status. The kind is given at run time (an
/// [`ApiResource`]), so one apply path serves every kind of child.
#[derive(Deserialize, Clone, Debug)]
pub struct ChildView {
    #[serde(deserialize_with = "slim_meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<DeploymentStatus>,
}

impl Resource for ChildView {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.kind)
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.group)
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.version)
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.api_version)
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.plural)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A whole `ModelDeployment` (spec and status) read without its managedFields: what the shared
/// watch parses before the cache and the controllers see it.
#[derive(Clone, Debug)]
pub struct SlimModelDeployment(pub ModelDeployment);

impl<'de> Deserialize<'de> for SlimModelDeployment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Parts {
            #[serde(deserialize_with = "slim_meta", default)]
            metadata: ObjectMeta,
            spec: ModelDeploymentSpec,
            #[serde(default)]
            status: Option<ModelDeploymentStatus>,
        }
        let parts = Parts::deserialize(deserializer)?;
        Ok(SlimModelDeployment(ModelDeployment {
            metadata: parts.metadata,
            spec: parts.spec,
            status: parts.status,
        }))
    }
}

impl Resource for SlimModelDeployment {
    type DynamicType = ();
    type Scope = <ModelDeployment as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ModelDeployment::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        ModelDeployment::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        ModelDeployment::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        ModelDeployment::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// A watch event of the slim type as one of the full type.
pub fn unslim(
    event: kube::runtime::watcher::Event<SlimModelDeployment>,
) -> kube::runtime::watcher::Event<ModelDeployment> {
    use kube::runtime::watcher::Event;
    match event {
        Event::Apply(md) => Event::Apply(md.0),
        Event::Delete(md) => Event::Delete(md.0),
        Event::Init => Event::Init,
        Event::InitApply(md) => Event::InitApply(md.0),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    fn managed_fields() -> serde_json::Value {
        json!([{
            "manager": "skybridge.io/modeldeployment", "operation": "Apply",
            "apiVersion": "apps/v1", "time": "2026-11-29T00:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }])
    }

    fn metadata() -> serde_json::Value {
        json!({
            "name": "a", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
            "generation": 3, "labels": {"k": "v"}, "annotations": {"a": "b"},
            "finalizers": ["skybridge.io/cleanup"], "generateName": "a-",
            "creationTimestamp": "2026-11-29T00:00:00Z",
            "deletionTimestamp": "2026-11-29T00:01:00Z", "deletionGracePeriodSeconds": 0,
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u-0"}],
            "selfLink": "/x", "managedFields": managed_fields(),
        })
    }

    /// Every metadata field but managedFields reads as the full type reads it.
    #[test]
    fn metadata_reads_as_in_full_but_for_managed_fields() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(),
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"readyReplicas": 1, "replicas": 2},
        });
        let full: Deployment = serde_json::from_value(object.clone()).unwrap();
        let view: DeploymentView = serde_json::from_value(object).unwrap();
        let mut expected = full.metadata.clone();
        assert!(expected.managed_fields.take().is_some());
        assert_eq!(view.metadata, expected);
        assert_eq!(view.status.unwrap().ready_replicas, Some(1));
        assert_eq!(DeploymentView::plural(&()), "deployments");
        assert_eq!(DeploymentView::api_version(&()), "apps/v1");
    }

    #[test]
    fn absent_parts_read_as_absent() {
        let view: DeploymentView =
            serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
        assert!(view.status.is_none());
        let written: Written<ModelDeployment> =
            serde_json::from_value(json!({"metadata": metadata(), "spec": {"anything": 1}}))
                .unwrap();
        assert_eq!(written.metadata.generation, Some(3));
        assert_eq!(
            Written::<ModelDeployment>::url_path(&(), Some("shop")),
            ModelDeployment::url_path(&(), Some("shop"))
        );
    }

    #[test]
    fn a_slim_model_deployment_is_the_full_one_without_managed_fields() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/ecommerce/recommendation.yaml"
        ))
        .unwrap();
        let mut object: serde_json::Value = serde_yaml_ng::from_str(
            text.split("\n---")
                .find(|doc| doc.contains("kind: ModelDeployment"))
                .unwrap(),
        )
        .unwrap();
        object["metadata"]["managedFields"] = managed_fields();
        object["status"] = json!({"observedGeneration": 1, "conditions": []});
        let full: ModelDeployment = serde_json::from_value(object.clone()).unwrap();
        let slim: SlimModelDeployment = serde_json::from_value(object).unwrap();
        let mut expected = full;
        assert!(expected.metadata.managed_fields.take().is_some());
        assert_eq!(slim.0, expected);
    }
}
