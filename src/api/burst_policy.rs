//! `BurstPolicy`: how deployments scale on demand and burst to public pools. Owned by the
//! platform team and shared by every component that names it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// How components that name this policy scale on a demand signal and burst to public pools.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "skybridge.io",
    version = "v1alpha1",
    kind = "BurstPolicy",
    shortname = "bp",
    category = "skybridge",
    status = "BurstPolicyStatus",
    derive = "PartialEq",
    cel,
    doc = "Scaling and bursting rules shared by the components that name this policy.",
    printcolumn(
        name = "Target",
        type_ = "number",
        json_path = ".spec.metric.targetPerReplica"
    ),
    printcolumn(name = "Burst", type_ = "boolean", json_path = ".spec.burst.enabled"),
    printcolumn(
        name = "Public",
        type_ = "integer",
        json_path = ".status.publicReplicas"
    ),
    printcolumn(
        name = "Max-Public",
        type_ = "integer",
        json_path = ".spec.burst.maxPublicReplicas"
    ),
    printcolumn(name = "Cost/h", type_ = "number", json_path = ".status.costPerHour"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BurstPolicySpec {
    /// The demand signal and how much of it one replica serves.
    pub metric: DemandMetric,
    /// How fast to add replicas.
    #[serde(default = "ScalingBehavior::default_up")]
    pub scale_up: ScalingBehavior,
    /// How fast to remove replicas.
    #[serde(default = "ScalingBehavior::default_down")]
    pub scale_down: ScalingBehavior,
    /// Whether and where to burst when private capacity runs out.
    #[serde(default)]
    pub burst: BurstSettings,
    /// Windows with a raised replica floor ahead of known peaks (promotions, holidays).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(w, self.exists_one(v, v.name == w.name))").message("prewarm window names must be unique"))]
    pub prewarm: Vec<PrewarmWindow>,
    /// What to do while the demand metric cannot be read.
    #[serde(default)]
    pub metric_unavailable: MetricFallback,
}

/// A demand signal read from Prometheus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DemandMetric {
    /// Base URL of the Prometheus HTTP API (e.g. `http://prometheus.monitoring:9090`).
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("prometheusUrl must be an http:// or https:// URL"))]
    pub prometheus_url: String,
    /// PromQL instant query giving the component's demand (e.g. requests per second). The
    /// placeholders `$namespace`, `$deployment` and `$component` are replaced per component.
    #[schemars(length(min = 1))]
    pub query: String,
    /// Demand one replica serves at its target utilisation; at most 1e9.
    #[schemars(range(max = 1e9))]
    #[x_kube(validation = Rule::new("self > 0.0").message("targetPerReplica must be positive"))]
    pub target_per_replica: f64,
    /// Seconds between two reads of the metric.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 5, max = 3600))]
    pub interval_seconds: u32,
    /// Extra capacity kept above demand, in percent of demand, to absorb noise between reads.
    #[serde(default)]
    #[schemars(range(min = 0, max = 400))]
    pub headroom_percent: u32,
    /// Dead band against flapping, in percent of demand: replicas are removed only when demand
    /// with `headroomPercent + tolerancePercent` still fits fewer of them (the HPA's tolerance,
    /// on the way down only). Absent: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub tolerance_percent: Option<u32>,
    /// Headroom against what the forecast cannot see (spikes), in standard deviations of its
    /// measured shortfall: how far demand has come in above the forecast made one public
    /// start-up earlier (root mean square over about a day). 0 turns it off; absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 10.0").message("volatilityHeadroom must be between 0 and 10"))]
    pub volatility_headroom: Option<f64>,
}

fn default_interval_seconds() -> u32 {
    30
}

/// Scaling speed limits in the spirit of the HPA `behavior` API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    /// Seconds of history considered: scale-up takes the lowest recommendation in the window,
    /// scale-down the highest, so a short spike or dip does not move replicas.
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: u32,
    /// Most replicas added or removed per `periodSeconds`; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_step_replicas: Option<u32>,
    /// Most replicas added or removed per `periodSeconds`, in percent of the current count;
    /// with both limits set, the larger change is allowed (HPA `selectPolicy: Max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_step_percent: Option<u32>,
    /// Length of the period the step limits apply to.
    #[serde(default = "default_period_seconds")]
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: u32,
}

fn default_period_seconds() -> u32 {
    60
}

impl ScalingBehavior {
    /// HPA default for scale-up: no stabilisation, double or add 4 per 15 s.
    pub fn default_up() -> Self {
        Self {
            stabilization_window_seconds: 0,
            max_step_replicas: Some(4),
            max_step_percent: Some(100),
            period_seconds: 15,
        }
    }

    /// HPA default for scale-down: five minutes of stabilisation, no step limit.
    pub fn default_down() -> Self {
        Self {
            stabilization_window_seconds: 300,
            max_step_replicas: None,
            max_step_percent: None,
            period_seconds: 60,
        }
    }
}

/// Where and how far to burst.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BurstSettings {
    /// Burst to public pools when private capacity runs out.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Public pools in order of preference; empty: every admissible public pool, cheapest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))").message("burst.pools must not repeat a pool"))]
    pub pools: Vec<String>,
    /// Most public replicas across every deployment sharing this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_public_replicas: Option<u32>,
    /// Most spend per hour on public replicas across every deployment sharing this policy; at
    /// most 1e9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1e9))]
    #[x_kube(validation = Rule::new("self >= 0.0").message("maxCostPerHour must not be negative"))]
    pub max_cost_per_hour: Option<f64>,
    /// Seconds demand must fit private capacity before public replicas are removed.
    #[serde(default = "default_failback_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub failback_after_seconds: u32,
    /// Least share, in percent, of each component's public replicas kept on on-demand (not
    /// spot) pools, so that a spot interruption cannot take them all at once. Held whenever
    /// on-demand capacity and budget allow. Absent: no floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub on_demand_floor_percent: Option<u32>,
    /// Whether the private pools' capacity is shared with other work. `false` (default): it is
    /// owned and paid whether used or not, so the component keeps every replica private pools
    /// can hold for it running (warm, ready for a spike) and only public replicas follow
    /// demand. `true`: idle private replicas are released for the other work.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private_capacity_shared: bool,
}

fn default_true() -> bool {
    true
}

fn default_failback_seconds() -> u32 {
    600
}

impl Default for BurstSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            pools: Vec::new(),
            max_public_replicas: None,
            max_cost_per_hour: None,
            failback_after_seconds: default_failback_seconds(),
            on_demand_floor_percent: None,
            private_capacity_shared: false,
        }
    }
}

/// A window with a raised floor, e.g. a Black Friday sale.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.end > self.start").message("prewarm window must end after it starts"))]
pub struct PrewarmWindow {
    /// A name for events and status (e.g. `black-friday`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// When the raised floor starts (RFC 3339). Start it earlier than the peak by the pools'
    /// start-up time.
    pub start: Time,
    /// When the raised floor ends (RFC 3339).
    pub end: Time,
    /// Replica floor per component during the window (still capped by the component's `max`).
    #[schemars(range(min = 0))]
    pub min_replicas: u32,
}

/// Behaviour while the metric cannot be read.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.action != 'Floor' || has(self.floorReplicas)").message("floorReplicas is required when action is Floor"))]
pub struct MetricFallback {
    /// `HoldLast`: keep the last decision. `Floor`: scale to `floorReplicas`.
    #[serde(default)]
    pub action: FallbackAction,
    /// Replicas per component while the metric is unavailable (with `Floor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_replicas: Option<u32>,
}

impl Default for MetricFallback {
    fn default() -> Self {
        Self {
            action: FallbackAction::HoldLast,
            floor_replicas: None,
        }
    }
}

/// What to do without a demand signal.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum FallbackAction {
    /// Keep the last replica decision.
    #[default]
    HoldLast,
    /// Scale to a fixed floor.
    Floor,
}

/// Observed use of a policy across the deployments that share it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BurstPolicyStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, plus `BudgetExhausted` while a budget binds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Public replicas currently placed under this policy.
    #[serde(default)]
    pub public_replicas: u32,
    /// Current public spend per hour under this policy.
    #[serde(default)]
    pub cost_per_hour: f64,
    /// Components that name this policy (`namespace/deployment/component`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
}
