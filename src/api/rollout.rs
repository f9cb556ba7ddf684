//! Rollouts of a new model version: `spec.rollout` (how a change of `spec.model` reaches the
//! replicas and the traffic) and `status.rollout` (where a rollout is).
//!
//! `AllAtOnce` (the default) replaces every replica as soon as the new version is verified in
//! its pool's store, as before. `Canary` runs the new version beside the old one and moves the
//! traffic to it by `steps`, each held for its `pause` and judged by `analysis`; a failed
//! analysis rolls back. Control: `paused`, and the one-shot annotation
//! [`ROLLOUT_ACTION_ANNOTATION`] (`resume`, `abort`, `retry`), which the operator removes once it
//! has acted on it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Annotation on a `ModelDeployment` asking the operator for one action on its rollout:
/// `resume` (end the current pause now), `abort` (return all traffic to the old version and
/// remove the new one) or `retry` (start an aborted or rolled-back rollout again from its first
/// step). The operator removes it once acted on.
pub const ROLLOUT_ACTION_ANNOTATION: &str = "skybridge.io/rollout-action";

/// Type of the condition that says whether a rollout is moving (`True`, reasons
/// `RolloutProgressing`, `RolloutPaused`, `RolloutSucceeded`) or ended without reaching the
/// spec's version (`False`, reasons `RolledBack`, `Aborted`).
pub const PROGRESSING: &str = "Progressing";

/// Most steps a canary may have.
pub const MAX_STEPS: usize = 20;

/// Most analysis results `status.rollout.analysis` keeps (the newest).
pub const MAX_ANALYSIS_RESULTS: usize = 20;

/// Default surge: a quarter of a component's replicas, rounded up (at least one).
pub const DEFAULT_MAX_SURGE_PERCENT: i32 = 25;

/// How a change of `spec.model` (version or source) is rolled out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.strategy == 'Canary' || ((!has(self.steps) || size(self.steps) == 0) && !has(self.analysis))").message("steps and analysis apply to the Canary strategy only").field_path(".strategy"))]
#[x_kube(validation = Rule::new("self.strategy != 'Canary' || (has(self.steps) && size(self.steps) > 0)").message("a Canary rollout needs at least one step").field_path(".steps"))]
pub struct RolloutSpec {
    /// `AllAtOnce` (the default): every replica moves to the new version as soon as it is
    /// verified in the pool's store. `Canary`: the new version runs beside the old one and takes
    /// the traffic step by step.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Canary steps, in order: the new version's share of the traffic, and how long to hold it.
    /// Shares strictly increase; when the last is below 100, a final step to 100 follows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19].all(i, i >= size(self) || self[i - 1].setWeight < self[i].setWeight)").message("steps[].setWeight must strictly increase"))]
    pub steps: Vec<CanaryStep>,
    /// Extra replicas per component and pool the new version may run beside the old one: a
    /// count (`2`) or a percent of the pool's replicas (`25%`, rounded up, at least 1).
    /// Absent: 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("string(self).matches('^([1-9][0-9]{0,3}|[0-9]{1,3}%)$')").message("maxSurge must be a replica count or a percent such as 25%"))]
    pub max_surge: Option<IntOrString>,
    /// Metrics that judge each step over its pause; absent: a step passes once its pause ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// Hold the rollout where it is (traffic and replicas stay) until set back to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// How a new model version is rolled out.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RolloutStrategy {
    /// Every replica moves to the new version at once (no canary).
    #[default]
    AllAtOnce,
    /// The new version takes the traffic step by step, judged by the analysis.
    Canary,
}

/// One canary step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percent of the component's traffic the new version takes at this step.
    #[schemars(range(min = 1, max = 100))]
    pub set_weight: u32,
    /// How long to hold this share before the next step: `{seconds: N}`, or `{}` until resumed
    /// (annotation `skybridge.io/rollout-action=resume`). Absent: go on once the new version's
    /// replicas for this share are ready (and the analysis, if any, has passed once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<RolloutPause>,
}

/// A pause of a canary step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPause {
    /// Seconds to hold the step, counted from when its traffic share is in the routes. Absent:
    /// until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub seconds: Option<u32>,
}

/// Metrics that judge a canary step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysis {
    /// Prometheus to query.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("analysis.prometheusUrl must be an http:// or https:// URL"))]
    pub prometheus_url: String,
    /// The metrics; each is measured every `intervalSeconds` while a step holds.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message("analysis metric names must be unique"))]
    pub metrics: Vec<AnalysisMetric>,
    /// Seconds between two measurements of a metric.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Failed measurements (of any metric, within one step) that fail the step and roll back.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: u32,
    /// What a query without data means: `Inconclusive` (the default: the step holds, it does
    /// not pass, until a measurement has data) or `Fail` (counts as a failed measurement).
    #[serde(default)]
    pub no_data: NoDataPolicy,
}

fn default_interval_seconds() -> u32 {
    30
}

fn default_failure_limit() -> u32 {
    1
}

/// One metric of an analysis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisMetric {
    /// Name, for status and Events (e.g. `error-rate`, `ctr`).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// PromQL instant query returning one number. `$namespace`, `$deployment`, `$version` (the
    /// new version), `$stableVersion` (the old one) are replaced before it runs.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.trim() != ''").message("analysis query must not be empty"))]
    pub query: String,
    /// The measurement passes when `value <comparison> threshold`.
    pub comparison: Comparison,
    /// The threshold (finite; at most 10^15 in magnitude).
    #[schemars(range(min = -1e15, max = 1e15))]
    pub threshold: f64,
}

/// How a measurement is compared with its threshold.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    LessThan,
    LessThanOrEqual,
    GreaterThan,
    GreaterThanOrEqual,
}

impl Comparison {
    /// Whether `value` passes against `threshold`.
    pub fn passes(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::LessThan => value < threshold,
            Comparison::LessThanOrEqual => value <= threshold,
            Comparison::GreaterThan => value > threshold,
            Comparison::GreaterThanOrEqual => value >= threshold,
        }
    }
}

/// What a measurement without data means.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum NoDataPolicy {
    /// Neither pass nor fail: the step holds until a measurement has data.
    #[default]
    Inconclusive,
    /// A failed measurement.
    Fail,
}

/// The model a version of a rollout reads.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutVersion {
    /// `spec.model.version` of that version.
    pub version: String,
    /// `spec.model.source.uri` of that version.
    pub uri: String,
    /// `spec.model.source.pool` of that version.
    pub pool: String,
    /// Its verified content digest, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Where a rollout is.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutPhase {
    /// Moving: new replicas starting, a share being applied, or a step's pause and analysis.
    Progressing,
    /// Held by `spec.rollout.paused` or a step's pause until resumed.
    Paused,
    /// Every step passed; the new version takes all traffic and the old one is gone.
    Succeeded,
    /// An analysis failed: all traffic went back to the old version.
    RolledBack,
    /// Aborted by the annotation: all traffic went back to the old version.
    Aborted,
}

/// The outcome of one measurement.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalysisOutcome {
    Pass,
    Fail,
    /// The query returned no data.
    Inconclusive,
}

/// One measurement of an analysis metric.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisResult {
    /// The step (index into `spec.rollout.steps`) it judged.
    pub step: u32,
    /// The metric's name.
    pub metric: String,
    /// The measured value; absent without data, or when the query failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub outcome: AnalysisOutcome,
    /// When it was measured.
    pub at: Time,
    /// Details (the threshold, or why there is no value).
    #[serde(default)]
    pub message: String,
}

/// Observed state of a rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The version serving before the rollout (the stable version).
    pub from: RolloutVersion,
    /// The version being rolled out (`spec.model` when it began).
    pub to: RolloutVersion,
    /// The current step (index into `spec.rollout.steps`; the implicit final step to 100 when
    /// past the last).
    pub step: u32,
    /// Percent of the traffic the new version takes now (in the routes).
    pub traffic_percent: u32,
    pub phase: RolloutPhase,
    /// Why the rollout is where it is (`WaitingForArtifacts`, `StartingReplicas`,
    /// `ShiftingTraffic`, `Pausing`, `Analysing`, `PausedBySpec`, `WaitingForResume`,
    /// `AnalysisFailed`, `Aborted`, `Draining`, `Succeeded`).
    pub reason: String,
    /// Details, for people.
    #[serde(default)]
    pub message: String,
    /// When the rollout began.
    pub started_at: Time,
    /// When the current step's share reached the routes (its pause counts from then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// When the rollout ended (succeeded, rolled back or aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The new version's traffic percent before its last change, and when it changed: the
    /// version that lost share keeps its replicas until `trafficChangedAt` plus the drain.
    #[serde(default)]
    pub previous_traffic_percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_changed_at: Option<Time>,
    /// Whether the current step's pause was ended by `resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    /// The analysis of the current step: rounds that passed, failed and had no data.
    #[serde(default)]
    pub step_analysis: StepAnalysis,
    /// The newest measurements (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub analysis: Vec<AnalysisResult>,
    /// The suffix of the stable version's child names (`<deployment>-<component>-<pool>-<key>`)
    /// and the value of their `skybridge.io/version-key` label; absent: the stable version runs
    /// under the deployment's own child names. A rollout that succeeds leaves the new version
    /// serving under its suffixed names, so the next reconciles must know which names serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names_key: Option<String>,
}

/// The analysis rounds of one step (a round measures every metric once).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepAnalysis {
    /// Rounds in which every metric passed.
    #[serde(default)]
    pub passed: u32,
    /// Rounds in which a metric failed (or, with `noData: Fail`, had no data).
    #[serde(default)]
    pub failed: u32,
    /// Rounds without data and without a failure.
    #[serde(default)]
    pub inconclusive: u32,
    /// When the last round was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<Time>,
}

impl RolloutSpec {
    /// The canary steps with the implicit final step to 100% when the last is below it.
    pub fn effective_steps(&self) -> Vec<CanaryStep> {
        let mut steps = self.steps.clone();
        if steps.last().is_none_or(|s| s.set_weight < 100) {
            steps.push(CanaryStep {
                set_weight: 100,
                pause: Some(RolloutPause { seconds: Some(0) }),
            });
        }
        steps
    }

    /// The surge allowed beside `replicas` replicas of a pool: the count, or the percent rounded
    /// up (at least 1); a malformed value (the schema rejects it) falls back to the default.
    pub fn max_surge_for(&self, replicas: u32) -> u32 {
        let percent = |p: i32| -> u32 {
            let p = u64::from(p.max(0).unsigned_abs());
            let surge = (u64::from(replicas) * p).div_ceil(100);
            u32::try_from(surge).unwrap_or(u32::MAX).max(1)
        };
        match &self.max_surge {
            None => percent(DEFAULT_MAX_SURGE_PERCENT),
            Some(IntOrString::Int(n)) => n.max(&1).unsigned_abs(),
            Some(IntOrString::String(s)) => match s.strip_suffix('%') {
                Some(p) => percent(p.parse().unwrap_or(DEFAULT_MAX_SURGE_PERCENT)),
                None => s
                    .parse::<u32>()
                    .map(|n| n.max(1))
                    .unwrap_or_else(|_| percent(DEFAULT_MAX_SURGE_PERCENT)),
            },
        }
    }
}
