//! Model version rollouts in the operator (issue #17): what a `ModelDeployment` asks of a
//! rollout (which version is stable, which one is rolling out), its status and conditions, the
//! one-shot action annotation, and the analysis rounds measured in Prometheus. The decision
//! itself is the pure `crate::rollout`.
//!
//! Which version is stable comes from `status.rollout`: a canary deployment records the version
//! it serves there (`from == to`, `Succeeded`) before any rollout, so that a later change of
//! `spec.model` has something to roll from.

pub mod children;
pub mod inputs;
pub mod step;

use crate::api::{
    AnalysisMetric, AnalysisOutcome, AnalysisResult, MAX_ANALYSIS_RESULTS, ModelDeployment,
    PROGRESSING, ROLLOUT_ACTION_ANNOTATION, RolloutAnalysis, RolloutPhase, RolloutSpec,
    RolloutStatus, RolloutStrategy, RolloutVersion, StepAnalysis,
};
use crate::demand::Prometheus;
use crate::operator::kubernetes::conditions::Decided;
use crate::rollout::{Action, RolloutDecision, RolloutState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The model `spec.model` names now (its digest is not known from the spec).
pub fn spec_version(md: &ModelDeployment) -> RolloutVersion {
    RolloutVersion {
        version: md.spec.model.version.clone(),
        uri: md.spec.model.source.uri.clone(),
        pool: md.spec.model.source.pool.clone(),
        digest: None,
    }
}

/// Whether two versions name the same model (version and source; digests aside).
pub fn same_model(a: &RolloutVersion, b: &RolloutVersion) -> bool {
    a.version == b.version && a.uri == b.uri && a.pool == b.pool
}

/// The deployment's canary strategy, if it rolls out by canary.
pub fn canary(md: &ModelDeployment) -> Option<&RolloutSpec> {
    md.spec
        .rollout
        .as_ref()
        .filter(|r| r.strategy == RolloutStrategy::Canary)
}

/// What a reconcile does about rollouts.
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// No canary strategy, or nothing to roll out: `stable` serves everything.
    Steady { stable: RolloutVersion },
    /// A rollout from `from` to `to`; `previous` is where it was (`None`: it begins now).
    Rollout {
        from: RolloutVersion,
        to: RolloutVersion,
        previous: Option<Box<RolloutStatus>>,
    },
}

/// What `md` asks of a rollout now, from its spec and `status.rollout`.
///
/// - no canary strategy, or no stable version recorded yet: the spec's model is stable;
/// - the spec names the rollout's target: the rollout goes on (or stays ended: a rolled-back or
///   aborted rollout waits for `retry` or a new version);
/// - the spec names the stable version again: nothing to roll out;
/// - the spec names another model: a rollout from the stable version to it begins (a version
///   that was rolling out before is dropped: its traffic returns to the stable one at once).
pub fn intent(md: &ModelDeployment) -> Intent {
    let spec = spec_version(md);
    let recorded = md.status.as_ref().and_then(|s| s.rollout.as_ref());
    let (Some(_), Some(recorded)) = (canary(md), recorded) else {
        return Intent::Steady { stable: spec };
    };
    let stable = if recorded.phase == RolloutPhase::Succeeded {
        &recorded.to
    } else {
        &recorded.from
    };
    if same_model(&recorded.to, &spec) {
        if recorded.phase == RolloutPhase::Succeeded {
            return Intent::Steady {
                stable: recorded.to.clone(),
            };
        }
        return Intent::Rollout {
            from: recorded.from.clone(),
            to: recorded.to.clone(),
            previous: Some(Box::new(recorded.clone())),
        };
    }
    if same_model(stable, &spec) {
        return Intent::Steady {
            stable: stable.clone(),
        };
    }
    Intent::Rollout {
        from: stable.clone(),
        to: spec,
        previous: None,
    }
}

/// Why a rollout from `from` to `to` cannot run, if so: both versions at the same source prefix
/// (a store holds one model per prefix, and a canary fetches both).
pub fn refused(from: &RolloutVersion, to: &RolloutVersion) -> Option<String> {
    (from.uri == to.uri && from.pool == to.pool).then(|| {
        format!(
            "versions {} and {} share the source {}: give each version its own prefix (a store holds one model per prefix, and a canary runs both)",
            from.version, to.version, to.uri
        )
    })
}

/// The status of a deployment serving `stable` with no rollout under way.
pub fn steady_status(
    stable: RolloutVersion,
    since: Time,
    names_key: Option<String>,
) -> RolloutStatus {
    RolloutStatus {
        from: stable.clone(),
        to: stable,
        step: 0,
        traffic_percent: 100,
        phase: RolloutPhase::Succeeded,
        reason: "Succeeded".into(),
        message: "serving one version".into(),
        started_at: since.clone(),
        step_started_at: None,
        finished_at: Some(since),
        previous_traffic_percent: 100,
        traffic_changed_at: None,
        resumed: false,
        step_analysis: StepAnalysis::default(),
        analysis: Vec::new(),
        names_key,
    }
}

fn seconds(time: &Time) -> i64 {
    time.0.as_second()
}

fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The decision's memory from `status.rollout`.
pub fn state_of(status: &RolloutStatus) -> RolloutState {
    RolloutState {
        step: status.step,
        phase: status.phase,
        traffic_percent: status.traffic_percent,
        previous_traffic_percent: status.previous_traffic_percent,
        traffic_changed_at: status.traffic_changed_at.as_ref().map(seconds),
        step_started_at: status.step_started_at.as_ref().map(seconds),
        resumed: status.resumed,
        passed_rounds: status.step_analysis.passed,
        failed_rounds: status.step_analysis.failed,
        inconclusive_rounds: status.step_analysis.inconclusive,
        last_round_at: status.step_analysis.last_at.as_ref().map(seconds),
        started_at: seconds(&status.started_at),
        finished_at: status.finished_at.as_ref().map(seconds),
    }
}

/// `status.rollout` after `decision`, with the newest measurements (at most
/// [`MAX_ANALYSIS_RESULTS`], newest last). `names_key`: the names the stable version ran under;
/// once the rollout succeeds, the new version's (it keeps serving under them).
pub fn status_of(
    from: RolloutVersion,
    to: RolloutVersion,
    decision: &RolloutDecision,
    previous_results: &[AnalysisResult],
    measured: Vec<AnalysisResult>,
    names_key: Option<String>,
) -> RolloutStatus {
    let names_key = if decision.state.phase == RolloutPhase::Succeeded {
        Some(children::version_key(&to))
    } else {
        names_key
    };
    let state = &decision.state;
    let mut analysis: Vec<AnalysisResult> = previous_results.to_vec();
    analysis.extend(measured);
    let excess = analysis.len().saturating_sub(MAX_ANALYSIS_RESULTS);
    analysis.drain(..excess);
    RolloutStatus {
        from,
        to,
        step: state.step,
        traffic_percent: state.traffic_percent,
        phase: state.phase,
        reason: decision.reason.to_string(),
        message: decision.message.clone(),
        started_at: time(state.started_at),
        step_started_at: state.step_started_at.map(time),
        finished_at: state.finished_at.map(time),
        previous_traffic_percent: state.previous_traffic_percent,
        traffic_changed_at: state.traffic_changed_at.map(time),
        resumed: state.resumed,
        step_analysis: StepAnalysis {
            passed: state.passed_rounds,
            failed: state.failed_rounds,
            inconclusive: state.inconclusive_rounds,
            last_at: state.last_round_at.map(time),
        },
        analysis,
        names_key,
    }
}

/// The conditions a rollout sets: `Progressing` (True while it moves, waits, or after it
/// succeeded; False after a rollback or an abort), `Reconciling` True while it runs or waits
/// (kstatus reads the deployment as in progress), and `Stalled` True after a rollback or an
/// abort (the spec's version will not serve until a new version or `retry`). `Ready` is not
/// touched: the old version serves throughout.
pub fn conditions(status: &RolloutStatus) -> Vec<Decided> {
    let step = format!(
        "{} → {}: step {}, {}% of the traffic on {}",
        status.from.version,
        status.to.version,
        status.step + 1,
        status.traffic_percent,
        status.to.version
    );
    let message = if status.message.is_empty() {
        step
    } else {
        format!("{step}; {}", status.message)
    };
    match status.phase {
        RolloutPhase::Progressing => vec![
            Decided::new(PROGRESSING, true, "RolloutProgressing", message.clone()),
            Decided::new("Reconciling", true, "RollingOut", message),
        ],
        RolloutPhase::Paused => vec![
            Decided::new(PROGRESSING, true, "RolloutPaused", message.clone()),
            Decided::new("Reconciling", true, "RolloutPaused", message),
        ],
        RolloutPhase::Succeeded => vec![Decided::new(
            PROGRESSING,
            true,
            "RolloutSucceeded",
            format!("{} serves all traffic", status.to.version),
        )],
        RolloutPhase::RolledBack | RolloutPhase::Aborted => {
            let reason = if status.phase == RolloutPhase::RolledBack {
                "RolledBack"
            } else {
                "Aborted"
            };
            let message = format!(
                "{} serves all traffic; {} was {}: {}",
                status.from.version,
                status.to.version,
                if reason == "RolledBack" {
                    "rolled back"
                } else {
                    "aborted"
                },
                status.message
            );
            vec![
                Decided::new(PROGRESSING, false, reason, message.clone()),
                Decided::new("Stalled", true, reason, message),
            ]
        }
    }
}

/// The action the annotation asks for: `Ok(None)` without it, `Err` with the value when it
/// names no action (report it; the annotation is left for the user to correct).
pub fn requested_action(md: &ModelDeployment) -> Result<Option<Action>, String> {
    match md
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROLLOUT_ACTION_ANNOTATION))
    {
        None => Ok(None),
        Some(value) => Action::parse(value).map(Some).ok_or_else(|| {
            format!(
                "annotation {ROLLOUT_ACTION_ANNOTATION}={value:?} names no action: use resume, abort or retry"
            )
        }),
    }
}

/// An analysis query with `$namespace`, `$deployment`, `$version` and `$stableVersion` replaced
/// (`$stableVersion` first: `$version` is a prefix of no other placeholder, but stays last so a
/// version string containing `$` cannot be expanded twice).
pub fn expand_analysis_query(
    query: &str,
    namespace: &str,
    deployment: &str,
    version: &str,
    stable_version: &str,
) -> String {
    query
        .replace("$namespace", namespace)
        .replace("$deployment", deployment)
        .replace("$stableVersion", stable_version)
        .replace("$version", version)
}

/// One measurement judged: a value against the threshold, no data inconclusive, and a query
/// that failed inconclusive too (Prometheus being down says nothing about the model; the step
/// holds and the failure is in the message).
pub fn judge(
    metric: &AnalysisMetric,
    measured: Result<Option<f64>, String>,
    step: u32,
    at: Time,
) -> AnalysisResult {
    let (value, outcome, message) = match measured {
        Ok(Some(v)) => {
            let pass = metric.comparison.passes(v, metric.threshold);
            (
                Some(v),
                if pass {
                    AnalysisOutcome::Pass
                } else {
                    AnalysisOutcome::Fail
                },
                format!("{v} {:?} {}", metric.comparison, metric.threshold),
            )
        }
        Ok(None) => (None, AnalysisOutcome::Inconclusive, "no data".to_string()),
        Err(err) => (
            None,
            AnalysisOutcome::Inconclusive,
            format!("query failed: {err}"),
        ),
    };
    AnalysisResult {
        step,
        metric: metric.name.clone(),
        value,
        outcome,
        at,
        message,
    }
}

/// Measures every metric of `analysis` once (one round) for the rollout `from` → `to` of `md`.
pub async fn measure_round(
    prometheus: &Prometheus,
    analysis: &RolloutAnalysis,
    md: &ModelDeployment,
    from: &RolloutVersion,
    to: &RolloutVersion,
    step: u32,
    now: Timestamp,
) -> Vec<AnalysisResult> {
    let namespace = md.metadata.namespace.as_deref().unwrap_or_default();
    let name = md.metadata.name.as_deref().unwrap_or_default();
    let mut results = Vec::with_capacity(analysis.metrics.len());
    for metric in &analysis.metrics {
        let query =
            expand_analysis_query(&metric.query, namespace, name, &to.version, &from.version);
        let measured = prometheus
            .measure(&analysis.prometheus_url, &query)
            .await
            .map_err(|e| e.to_string());
        results.push(judge(metric, measured, step, Time(now)));
    }
    results
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod glue_tests;
