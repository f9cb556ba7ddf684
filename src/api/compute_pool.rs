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
        name = "Short",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Short\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.cloud == 'private' || !has(self.dataClasses) || !self.dataClasses.exists(c, c == 'sensitive')").message("a public pool must not admit the sensitive data class").field_path(".dataClasses"))]
#[x_kube(validation = Rule::new("self.cloud == 'public' || !has(self.capacityType) || self.capacityType == 'OnDemand'").message("only a public pool can be Spot: private nodes are not reclaimed by a provider").field_path(".capacityType"))]
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
    /// `OnDemand` (default) or `Spot`: spot nodes can be reclaimed at short notice, so replicas on
    /// a node about to go are replaced elsewhere first, and a policy's `onDemandFloorPercent`
    /// keeps a share of public replicas off spot pools.
    #[serde(default, skip_serializing_if = "CapacityType::is_on_demand")]
    pub capacity_type: CapacityType,
    /// Present when the pool's nodes come from an autoscaler (scale from zero or up to a
    /// maximum): capacity beyond the ready nodes can be added, but only after the nodes start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elastic: Option<ElasticNodes>,
    /// When replicas that cannot be scheduled make the pool count as short (a stockout), and
    /// how long it stays out. Absent: the defaults of each field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stockout: Option<StockoutHandling>,
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

/// Whether a pool's nodes can be reclaimed by the provider at short notice.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
pub enum CapacityType {
    /// Nodes stay until the platform team removes them.
    #[default]
    OnDemand,
    /// Nodes may be reclaimed with a short notice (AWS: 2 minutes, GCP and Azure: 30 seconds).
    Spot,
}

impl CapacityType {
    pub fn is_on_demand(&self) -> bool {
        *self == CapacityType::OnDemand
    }
}

/// The autoscaler that adds a pool's nodes.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoscalerKind {
    /// A Karpenter `NodePool`.
    Karpenter,
    /// A cluster-autoscaler node group (managed node group, GKE node pool, VMSS).
    ClusterAutoscaler,
}

/// Nodes added on demand by an autoscaler. `spec.capacity` stays the most the pool may hold
/// once fully grown; what is ready now is observed from the Nodes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ElasticNodes {
    /// Which autoscaler adds the nodes.
    pub autoscaler: AutoscalerKind,
    /// The autoscaler's name for the node group or `NodePool`, for people and events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node_group: Option<String>,
    /// Typical seconds from "a pod is pending" to "a new node is ready" (GPU nodes: 5 to 8
    /// minutes are common). Replicas that must wait for nodes take this much longer.
    #[serde(default = "default_node_startup_seconds")]
    #[schemars(range(min = 0, max = 7200))]
    pub node_startup_seconds: u32,
    /// Most nodes the autoscaler may run for this pool; absent: bounded by `spec.capacity` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_nodes: Option<u32>,
    /// GPUs on each node the autoscaler adds (at least 1); absent: as observed on the pool's
    /// ready nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub gpus_per_node: Option<u32>,
}

fn default_node_startup_seconds() -> u32 {
    420
}

/// When unschedulable replicas make a pool short, and how it comes back. A short pool gets no
/// new replicas; its shortfall goes to the next eligible pool in the policy's order.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StockoutHandling {
    /// Seconds a replica may stay `Pending` with `PodScheduled=False` (reason `Unschedulable`),
    /// or wait for a node that does not arrive, before the pool counts as short. For elastic
    /// pools this is counted after `elastic.nodeStartupSeconds`.
    #[serde(default = "default_unschedulable_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub unschedulable_seconds: u32,
    /// Seconds a short pool gets no new replicas, however it looks meanwhile.
    #[serde(default = "default_backoff_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub backoff_seconds: u32,
    /// Seconds the pool must then show no unschedulable replica (hysteresis) before it is
    /// eligible again; a new unschedulable replica restarts the count.
    #[serde(default = "default_recovery_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub recovery_seconds: u32,
}

fn default_unschedulable_seconds() -> u32 {
    180
}

fn default_backoff_seconds() -> u32 {
    600
}

fn default_recovery_seconds() -> u32 {
    300
}

impl Default for StockoutHandling {
    fn default() -> Self {
        Self {
            unschedulable_seconds: default_unschedulable_seconds(),
            backoff_seconds: default_backoff_seconds(),
            recovery_seconds: default_recovery_seconds(),
        }
    }
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
    /// Elastic pools: what the autoscaler can still add on top of `observedCapacity` (free now),
    /// and after how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addable_capacity: Option<AddableCapacity>,
    /// While the pool is short (condition `Short`): since when, how long it is kept out, and the
    /// replicas it could not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortage: Option<PoolShortage>,
    /// Nodes of the pool about to be reclaimed (a disruption or interruption taint): their
    /// replicas are replaced elsewhere first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reclaiming_nodes: Vec<String>,
}

/// Condition type on a `ComputePool` while it is short (a stockout): `True` from the moment
/// replicas stayed unschedulable too long until the back-off and recovery hysteresis have passed.
pub const SHORT_CONDITION: &str = "Short";

/// Capacity an elastic pool's autoscaler can still add.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AddableCapacity {
    /// GPUs that can be added, beyond those on ready nodes.
    pub gpus: u32,
    /// Nodes that can be added; absent when the pool sets no node maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Seconds until added nodes are ready.
    pub after_seconds: u32,
}

/// A pool's stockout, as the capacity tracker decided it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolShortage {
    /// When the pool was marked short.
    pub since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Until when it gets no new replicas whatever it looks like.
    pub backoff_until: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Replicas that could not be scheduled in the pool at the last observation.
    pub shortfall_replicas: u32,
    /// Why, in words.
    pub reason: String,
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
