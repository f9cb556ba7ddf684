//! `ComputePool`: one place replicas can run (a cluster plus a node pool).

use super::common::{Cloud, DataClass, SecretKeyRef, SecretRef};
use super::traffic::{PoolTraffic, TrafficExport};
use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where compute lives: a cluster plus a node pool, private or public, with its capacity, cost and
/// the data classes it admits. Owned by the platform team.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "skybridge.io",
    version = "v1alpha1",
    kind = "ComputePool",
    shortname = "cpool",
    category = "skybridge",
    status = "ComputePoolStatus",
    derive = "PartialEq",
    cel,
    doc = "A cluster plus node pool where Skybridge may place model replicas.",
    printcolumn(name = "Cloud", type_ = "string", json_path = ".spec.cloud"),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "GPU", type_ = "string", json_path = ".spec.capacity.gpu.type"),
    printcolumn(
        name = "GPUs-Free",
        type_ = "integer",
        json_path = ".status.observedCapacity.gpusFree"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.cloud == 'private' || !has(self.dataClasses) || !self.dataClasses.exists(c, c == 'sensitive')").message("a public pool must not admit the sensitive data class").field_path(".dataClasses"))]
pub struct ComputePoolSpec {
    /// `private` (the company's data centre) or `public` (a public-cloud region).
    pub cloud: Cloud,
    /// Infrastructure provider, for people and cost reports (e.g. `onprem`, `aws`, `gcp`).
    #[schemars(length(min = 1, max = 63))]
    pub provider: String,
    /// Region or data-centre name.
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// The cluster this pool lives in. Absent: the cluster the operator runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRef>,
    /// Labels a node must carry to belong to this pool; copied into every replica's node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations added to every replica placed here (e.g. for tainted GPU or spot nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// What the pool can hold at most. The operator also observes free capacity from the Nodes.
    pub capacity: PoolCapacity,
    /// Data classes this pool admits. Default: private pools admit `public`, `internal` and
    /// `sensitive`; public pools admit `public` and `internal`. A public pool listing `sensitive`
    /// is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 3))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("dataClasses must not repeat a class"))]
    pub data_classes: Option<Vec<DataClass>>,
    /// Price of the resources a replica requests; for private pools, the amortised cost.
    #[serde(default)]
    pub cost: PoolCost,
    /// Typical seconds from a replica requested to ready, including node provisioning and model
    /// fetch. Public pools are usually slower. The burst controller plans ahead by this much.
    #[serde(default = "default_startup_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub startup_seconds: u32,
    /// The S3-compatible store that serves model artifacts to replicas in this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_store: Option<ArtifactStore>,
    /// Whether replicas here can receive requests from other clusters. Absent: they cannot
    /// (`export: None`), so a component with `traffic` uses this pool only when it is in the
    /// component's home cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<PoolTraffic>,
}

impl ComputePoolSpec {
    /// Whether replicas in this pool can receive requests from other clusters.
    pub fn exports_traffic(&self) -> bool {
        self.traffic
            .as_ref()
            .is_some_and(|t| t.export == TrafficExport::ServiceExport)
    }
}

fn default_startup_seconds() -> u32 {
    120
}

/// The cluster a pool lives in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Secret holding a kubeconfig for the remote cluster. Absent: the operator's own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// Namespace in the target cluster for the workloads; default: the ModelDeployment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// Upper bounds on what a pool can hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolCapacity {
    /// GPUs in the pool, all of one type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuCapacity>,
    /// Total CPU of the pool as a quantity (e.g. `256`, `64000m`); at most a billion cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(
            pattern = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2}|m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
        )
    )]
    pub cpu: Option<String>,
    /// Total memory of the pool as a quantity (e.g. `2Ti`, `512Gi`); at most `1Ei`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(
            pattern = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2}|m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
        )
    )]
    pub memory: Option<String>,
    /// Most replicas, of all deployments together, this pool may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_replicas: Option<u32>,
}

/// GPUs of a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GpuCapacity {
    /// GPU model as components request it (e.g. `nvidia-a100-80gb`, `nvidia-l4`).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 63))]
    pub gpu_type: String,
    /// Number of GPUs.
    #[schemars(range(min = 0))]
    pub count: u32,
}

/// Hourly prices, in the estate's currency. Each is finite and between 0 and 1,000,000: a larger
/// price is a typo, and would make cost sums overflow.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolCost {
    /// Price of one GPU for one hour.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1_000_000.0))]
    pub gpu_hour: f64,
    /// Price of one CPU core for one hour.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1_000_000.0))]
    pub cpu_hour: f64,
    /// Price of one GiB of memory for one hour.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1_000_000.0))]
    pub gib_hour: f64,
}

/// An S3-compatible object store.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactStore {
    /// Endpoint URL for non-AWS stores (MinIO, Ceph); absent: the AWS endpoint of `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
    /// Bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Region of the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Key prefix under which models are kept in this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Use path-style addressing (`endpoint/bucket/key`), as MinIO and Ceph usually need.
    #[serde(default)]
    pub path_style: bool,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`; absent: the default AWS chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// Observed state of a pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComputePoolStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the pool can take replicas) and `Reachable` (its cluster answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Capacity observed from the pool's Nodes, bounded by `spec.capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_capacity: Option<ObservedCapacity>,
}

/// Capacity observed on the pool's Nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObservedCapacity {
    /// Allocatable GPUs on the matching ready, schedulable Nodes, at most the spec's count.
    pub gpus: u32,
    /// GPUs on those Nodes not yet requested by any running or pending pod scheduled there
    /// (Skybridge's replicas and everything else), at most `gpus`. Absent when the pods could
    /// not be listed (the `Ready` condition's message says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus_free: Option<u32>,
    /// CPU on those Nodes not yet requested by such pods, as a quantity; absent as `gpusFree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_free: Option<String>,
    /// Memory on those Nodes not yet requested by such pods, as a quantity; absent as
    /// `gpusFree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_free: Option<String>,
}

impl ComputePoolSpec {
    /// The data classes this pool admits, with the cloud's default when none are listed.
    /// A public pool never admits `sensitive`, whatever the spec says: the schema rejects it, and
    /// this guards objects that slipped past an older schema.
    pub fn admitted_classes(&self) -> Vec<DataClass> {
        let listed = match &self.data_classes {
            Some(classes) => classes.clone(),
            None => match self.cloud {
                Cloud::Private => DataClass::ALL.to_vec(),
                Cloud::Public => vec![DataClass::Public, DataClass::Internal],
            },
        };
        listed
            .into_iter()
            .filter(|c| c.may_reside_in(self.cloud))
            .collect()
    }

    pub fn admits(&self, class: DataClass) -> bool {
        self.admitted_classes().contains(&class)
    }
}
