//! `ModelDeployment`: a model and the components that serve it. Owned by an ML team.

use super::common::{Cloud, DataClass};
use super::rollout::{RolloutSpec, RolloutStatus};
use super::traffic::{TrafficBackendStatus, TrafficSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A model served by one or more components, placed by Skybridge across private and public pools.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "skybridge.io",
    version = "v1alpha1",
    kind = "ModelDeployment",
    shortname = "md",
    category = "skybridge",
    namespaced,
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    cel,
    doc = "A model and its serving components, placed across private and public compute pools.",
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Bursting",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Bursting\")].status"
    ),
    printcolumn(
        name = "Traffic",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"TrafficReady\")].status"
    ),
    printcolumn(name = "Cost/h", type_ = "number", json_path = ".status.costPerHour"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The model every component serves.
    pub model: ModelSpec,
    /// Serving components (encoders, rankers, heads). Names are unique.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))").message("component names must be unique"))]
    pub components: Vec<Component>,
    /// How model artifacts reach the stores of the pools.
    #[serde(default)]
    pub artifacts: ArtifactsSpec,
    /// How a change of `model` (version or source) is rolled out: `AllAtOnce` (absent) or a
    /// `Canary` by traffic share, judged by metrics, rolled back when they fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
}

/// Where the model comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// The model's objects in its home store.
    pub source: ModelSource,
    /// Version label, for people and events (e.g. `2026.11.3`).
    #[schemars(length(min = 1, max = 128))]
    pub version: String,
}

/// The objects of a model in the store of one pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// `s3://bucket/prefix` of the model in the store of `pool`.
    #[schemars(regex(pattern = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"))]
    pub uri: String,
    /// The `ComputePool` whose `artifactStore` holds `uri`.
    #[schemars(length(min = 1, max = 253))]
    pub pool: String,
}

/// One serving component of a model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.traffic) || !has(self.traffic.port) || self.traffic.port == self.port").message("traffic.port must be the component's port, the one port its Service exposes").field_path(".traffic.port"))]
pub struct Component {
    /// Name, unique within the deployment; a DNS label.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Sensitivity of the data this component reads. `sensitive` never leaves private pools.
    pub data_class: DataClass,
    /// Serving image (e.g. Triton, TorchServe).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Arguments for the serving container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Port the serving container listens on.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Resources of one replica.
    pub resources: ComponentResources,
    /// Replica bounds.
    pub replicas: ReplicaRange,
    /// The `BurstPolicy` that scales this component on demand; absent: fixed at `replicas.min`,
    /// no bursting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_policy: Option<String>,
    /// Pools this component may use; absent: every pool that admits its data class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub pools: Option<Vec<String>>,
    /// How the serving container is confined. Default: non-root, read-only root filesystem (with
    /// a writable `/tmp`); relax only what the serving image needs.
    #[serde(default)]
    pub security: ContainerSecurity,
    /// Route requests to this component's replicas in every cluster through one stable address
    /// in its home cluster (a Gateway API route), weighted by ready replicas. Absent: each
    /// cluster's Service serves only the replicas in that cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficSpec>,
}

/// Confinement of a component's serving container. Whatever is set here, the container never
/// escalates privileges, drops every Linux capability and runs under the `RuntimeDefault`
/// seccomp profile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.runAsNonRoot || !has(self.runAsUser) || self.runAsUser != 0").message("runAsUser 0 is root: set runAsNonRoot to false to run as root"))]
pub struct ContainerSecurity {
    /// Mount the container's root filesystem read-only; an `emptyDir` is mounted writable at
    /// `/tmp`. Set false for images that write elsewhere in their filesystem.
    #[serde(default = "default_true")]
    pub read_only_root_filesystem: bool,
    /// Refuse to start the container as root (uid 0): the image's `USER` (or `runAsUser`) must be
    /// a non-zero numeric uid. Set false only for images that must run as root.
    #[serde(default = "default_true")]
    pub run_as_non_root: bool,
    /// The uid the container runs as; absent: the image's `USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_user: Option<i64>,
    /// The primary gid the container runs as; absent: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<i64>,
}

impl Default for ContainerSecurity {
    fn default() -> Self {
        Self {
            read_only_root_filesystem: true,
            run_as_non_root: true,
            run_as_user: None,
            run_as_group: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_port() -> u16 {
    8080
}

/// What one replica requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentResources {
    /// GPUs per replica; absent: a CPU-only component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
    /// CPU per replica as a quantity (e.g. `4`, `500m`); at most a billion cores.
    #[serde(default = "default_cpu")]
    #[schemars(
        length(max = 32),
        regex(
            pattern = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2}|m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
        )
    )]
    pub cpu: String,
    /// Memory per replica as a quantity (e.g. `16Gi`); at most `1Ei`.
    #[serde(default = "default_memory")]
    #[schemars(
        length(max = 32),
        regex(
            pattern = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2}|m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
        )
    )]
    pub memory: String,
}

fn default_cpu() -> String {
    "1".into()
}

fn default_memory() -> String {
    "2Gi".into()
}

/// GPUs of one replica.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GpuRequest {
    /// GPUs per replica.
    #[schemars(range(min = 1, max = 16))]
    pub count: u32,
    /// Required GPU model; absent: any type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
}

/// Replica bounds of a component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max"))]
pub struct ReplicaRange {
    /// Fewest replicas, whatever the demand.
    #[schemars(range(min = 0, max = 10000))]
    pub min: u32,
    /// Most replicas, whatever the demand.
    #[schemars(range(min = 1, max = 10000))]
    pub max: u32,
}

/// How model artifacts are distributed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactsSpec {
    /// `Eager`: pre-sync to the store of every pool that may be used. `OnBurst`: sync to a
    /// public store only when a burst starts (slower burst, less public storage).
    #[serde(default)]
    pub mode: ArtifactMode,
}

/// When artifacts are copied to public stores.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ArtifactMode {
    /// Pre-sync to every pool that may be used.
    #[default]
    Eager,
    /// Sync to a public store only when a burst starts.
    OnBurst,
}

/// Observed state of a deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled`, `Placed`, `ArtifactsReady`, `Bursting`, `Degraded`,
    /// and `Progressing` while a canary rollout runs or after one ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ready replicas over all components.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Desired replicas over all components.
    #[serde(default)]
    pub desired_replicas: u32,
    /// Current cost per hour of all placed replicas.
    #[serde(default)]
    pub cost_per_hour: f64,
    /// Per-component state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// Model artifacts: digest and per-store state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsStatus>,
    /// Replicas in a pool whose cluster stopped answering (a partition), and what the operator
    /// did about them: left alone while the cluster is unreachable (they may still be serving),
    /// then adopted or scaled in when it answers again. Resolved entries stay an hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stranded: Vec<StrandedReplicas>,
    /// The model version rollout (with `spec.rollout.strategy: Canary`): from and to which
    /// version, the step, the new version's traffic share, the analysis, the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// A component's replicas in a pool whose cluster stopped answering.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StrandedReplicas {
    /// The component.
    pub component: String,
    /// The `ComputePool` whose cluster stopped answering.
    pub pool: String,
    /// Replicas of the workload there: as last seen, or as scaled in to.
    pub replicas: u32,
    /// Of which ready when the cluster was last seen; not counted in `readyReplicas` while it
    /// is unreachable.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Replicas the plan places in this pool (when the entry last changed): the workload is
    /// scaled in to this, once the component's replicas elsewhere are ready.
    #[serde(default)]
    pub planned_replicas: u32,
    /// When the cluster was found unreachable.
    pub since: Time,
    /// What the operator did about them.
    pub action: StrandedAction,
    /// When `action` last changed.
    pub action_time: Time,
    /// Details, for people.
    #[serde(default)]
    pub message: String,
}

/// What the operator did about stranded replicas.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrandedAction {
    /// Not deleted nor changed: the cluster is unreachable (they may still be serving), or it is
    /// back and they cover replicas whose replacements are not ready yet.
    LeftAlone,
    /// The cluster is back and the plan places at least as many replicas there: the workload
    /// was kept as it is, never deleted and re-created.
    Adopted,
    /// The cluster is back and the plan wants fewer replicas there: the workload was scaled
    /// down to `replicas` (and, at zero, removed).
    ScaledIn,
}

/// Observed state of one component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Replicas the demand and policy ask for.
    pub desired_replicas: u32,
    /// Replicas serving.
    pub ready_replicas: u32,
    /// Where the replicas are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<PlacementStatus>,
    /// Replicas that could not be placed.
    #[serde(default)]
    pub unplaced_replicas: u32,
    /// Why replicas could not be placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced_reason: Option<String>,
    /// The backends of the component's route (with `spec.components[].traffic`): weight, ready
    /// replicas and state of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub traffic: Vec<TrafficBackendStatus>,
}

/// Replicas of a component in one pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// The `ComputePool`.
    pub pool: String,
    /// The pool's cloud.
    pub cloud: Cloud,
    /// Replicas placed there.
    pub replicas: u32,
    /// Of which ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Why this pool.
    pub reason: String,
}

/// Model artifacts across stores.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactsStatus {
    /// Content digest of the model (`sha256:` of its manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// State per store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreStatus>,
}

/// The model in the store of one pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// The pool whose store this is.
    pub pool: String,
    /// `Synced`, `Syncing`, `Failed` or `Forbidden` (residency).
    pub state: StoreState,
    /// Bytes of the model in this store.
    #[serde(default)]
    pub bytes: u64,
    /// When the copy was last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<Time>,
    /// Details, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Sync state of a model in one store.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreState {
    /// The store holds a verified copy.
    Synced,
    /// A copy is in progress.
    Syncing,
    /// The last copy failed; it is retried with backoff.
    Failed,
    /// Residency forbids this store for the model.
    Forbidden,
}

impl ModelDeploymentSpec {
    /// The most sensitive data class among this deployment's components. The class of the model
    /// is at least this, and stricter when another deployment reads the same model: see
    /// `estate::ModelClasses`, which every decision uses.
    pub fn model_data_class(&self) -> DataClass {
        self.components
            .iter()
            .map(|c| c.data_class)
            .max()
            .unwrap_or(DataClass::Public)
    }
}
