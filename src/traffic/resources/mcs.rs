//! `ServiceExport` and `ServiceImport` of the Multi-Cluster Services API. Both `v1alpha1` and
//! `v1beta1` have this schema; one type serves both, its version chosen per cluster (from
//! discovery) as the `DynamicType`: `Api::<ServiceExport>::namespaced_with(client, ns, &version)`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::Resource;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// API group of the Multi-Cluster Services API.
pub const MCS_GROUP: &str = "multicluster.x-k8s.io";

/// A served version of the Multi-Cluster Services API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum McsVersion {
    /// `multicluster.x-k8s.io/v1alpha1`: what most implementations serve today.
    #[default]
    V1Alpha1,
    /// `multicluster.x-k8s.io/v1beta1`.
    V1Beta1,
}

impl McsVersion {
    /// Both versions, the preferred (newest) first.
    pub const PREFERENCE: [McsVersion; 2] = [McsVersion::V1Beta1, McsVersion::V1Alpha1];

    /// The version string (`v1alpha1`, `v1beta1`).
    pub fn as_str(self) -> &'static str {
        match self {
            McsVersion::V1Alpha1 => "v1alpha1",
            McsVersion::V1Beta1 => "v1beta1",
        }
    }

    /// `multicluster.x-k8s.io/<version>`.
    pub fn api_version(self) -> String {
        format!("{MCS_GROUP}/{}", self.as_str())
    }

    /// The newest version among those a cluster's discovery lists for the group (e.g. from
    /// `Discovery::get(MCS_GROUP)`), or `None` when it serves neither.
    pub fn newest_served<'a>(served: impl IntoIterator<Item = &'a str>) -> Option<McsVersion> {
        let served: Vec<&str> = served.into_iter().collect();
        Self::PREFERENCE
            .into_iter()
            .find(|v| served.contains(&v.as_str()))
    }
}

/// Declares that the Service of the same name and namespace may be consumed from other clusters
/// of the ClusterSet. It has no spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExport {
    /// `multicluster.x-k8s.io/v1alpha1` or `/v1beta1`.
    pub api_version: String,
    /// `ServiceExport`.
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Written by the MCS implementation (`Valid`, `Ready`, `Conflict`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceExportStatus>,
}

/// Status of a `ServiceExport`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExportStatus {
    /// Conditions the MCS implementation sets.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl ServiceExport {
    /// An export of `version` with this metadata.
    pub fn new(version: McsVersion, metadata: ObjectMeta) -> Self {
        Self {
            api_version: version.api_version(),
            kind: "ServiceExport".into(),
            metadata,
            status: None,
        }
    }
}

/// A service imported from the clusters that export it; created by the MCS implementation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImport {
    /// `multicluster.x-k8s.io/v1alpha1` or `/v1beta1`.
    pub api_version: String,
    /// `ServiceImport`.
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceImportSpec,
    /// The exporting clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceImportStatus>,
}

impl ServiceImport {
    /// An import of `version` with this metadata and spec.
    pub fn new(version: McsVersion, metadata: ObjectMeta, spec: ServiceImportSpec) -> Self {
        Self {
            api_version: version.api_version(),
            kind: "ServiceImport".into(),
            metadata,
            spec,
            status: None,
        }
    }
}

/// Desired state of a `ServiceImport`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportSpec {
    /// Ports of the imported service.
    #[serde(default)]
    pub ports: Vec<ServiceImportPort>,
    /// The VIP of a `ClusterSetIP` import (at most one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: String,
}

/// A port of an imported service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportPort {
    /// Name of the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (the default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Application protocol of the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// The port.
    pub port: i32,
}

/// Status of a `ServiceImport`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportStatus {
    /// The clusters that export the service.
    #[serde(default)]
    pub clusters: Vec<ClusterStatus>,
}

/// One exporting cluster of a `ServiceImport`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Name of the exporting cluster.
    pub cluster: String,
}

macro_rules! mcs_resource {
    ($type:ty, $kind:literal, $plural:literal) => {
        impl Resource for $type {
            type DynamicType = McsVersion;
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed(MCS_GROUP)
            }
            fn version(version: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed(version.as_str())
            }
            fn plural(_: &McsVersion) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

mcs_resource!(ServiceExport, "ServiceExport", "serviceexports");
mcs_resource!(ServiceImport, "ServiceImport", "serviceimports");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_chosen_from_discovery_and_carried_by_the_object() {
        assert_eq!(
            McsVersion::newest_served(["v1alpha1"]),
            Some(McsVersion::V1Alpha1)
        );
        assert_eq!(
            McsVersion::newest_served(["v1alpha1", "v1beta1"]),
            Some(McsVersion::V1Beta1)
        );
        assert_eq!(McsVersion::newest_served(["v1"]), None);
        let beta = McsVersion::V1Beta1;
        assert_eq!(
            ServiceExport::api_version(&beta),
            "multicluster.x-k8s.io/v1beta1"
        );
        assert_eq!(ServiceImport::plural(&beta), "serviceimports");
        let export = ServiceExport::new(
            beta,
            ObjectMeta {
                name: Some("ranker-rank-aws".into()),
                ..Default::default()
            },
        );
        let json = serde_json::to_value(&export).unwrap();
        assert_eq!(json["apiVersion"], "multicluster.x-k8s.io/v1beta1");
        assert_eq!(json["kind"], "ServiceExport");
        assert!(json.get("status").is_none() && json.get("spec").is_none());
        let import: ServiceImport = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": {"name": "ranker-rank-aws", "namespace": "shop"},
            "spec": {"type": "ClusterSetIP", "ips": ["10.0.0.9"], "ports": [{"port": 8080, "protocol": "TCP"}]},
            "status": {"clusters": [{"cluster": "aws"}]}
        }))
        .unwrap();
        assert_eq!(import.spec.ports[0].port, 8080);
        assert_eq!(import.status.unwrap().clusters[0].cluster, "aws");
    }
}
