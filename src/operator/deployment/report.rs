//! Report, the last step of a reconcile: status from the plan and the ready replicas (pure,
//! `status`), the Events for what changed (pure, `decide::placement_events`), the status write
//! (the shared status writer), and when to look again (`decide::next_requeue`).

use super::apply::{Applied, ApplyError};
use super::artifacts::Stage;
use super::build::BuildError;
use super::decide::{Decision, Note, next_requeue, placement_events, severity};
use super::observe::Observed;
use super::status::{Observed as ObservedPlan, StatusInput, deployment_status, first_report_wait};
use crate::api::{Cloud, ModelDeployment, ModelDeploymentStatus};
use crate::operator::context::Context;
use crate::operator::kubernetes::conditions::same;
use crate::operator::kubernetes::metrics::DeploymentLabels;
use crate::operator::kubernetes::names::DEPLOYMENT_MANAGER;
use crate::operator::kubernetes::status_writer::{ReportedStatus, StatusWriter};
use crate::operator::traffic::report_into;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use std::time::Duration;
use tracing::warn;

/// The status could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the status")]
pub struct ReportError(#[from] pub kube::Error);

/// What a reconcile ends with: its requeue, or the first failure of its steps (after the
/// status was written).
pub enum Outcome {
    Done(Action),
    Failed(Failure),
}

/// A step that failed without stopping the report.
#[derive(Debug)]
pub enum Failure {
    Build(BuildError),
    Apply(ApplyError),
}

/// Equal but for condition times.
impl ReportedStatus for ModelDeploymentStatus {
    fn says_the_same(&self, other: &Self) -> bool {
        same(&self.conditions, &other.conditions)
            && self.observed_generation == other.observed_generation
            && self.ready_replicas == other.ready_replicas
            && self.desired_replicas == other.desired_replicas
            && self.cost_per_hour == other.cost_per_hour
            && self.components == other.components
            && self.artifacts == other.artifacts
            && self.stranded == other.stranded
    }
}

const WRITER: StatusWriter = StatusWriter {
    field_manager: DEPLOYMENT_MANAGER,
};

/// Reports an invalid spec: `Stalled=True` with the reason `InvalidSpec` and a Warning Event;
/// the object waits for a change.
pub async fn invalid(
    ctx: &Context,
    md: &ModelDeployment,
    observed: &Observed,
) -> Result<Action, ReportError> {
    let message = observed.invalid.join("; ");
    let status = deployment_status(StatusInput {
        generation: md.metadata.generation,
        previous: md.status.as_ref(),
        components: Vec::new(),
        invalid: Some(message.clone()),
        artifacts: None,
        stranded: Vec::new(),
        now: Timestamp::now(),
    });
    if write(ctx, md, &status).await? {
        publish(
            ctx,
            md,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            &message,
        )
        .await;
    }
    ctx.succeeded(md);
    Ok(Action::await_change())
}

/// Reports what the reconcile decided and applied.
pub async fn report(
    ctx: &Context,
    md: &ModelDeployment,
    observed: &Observed,
    decision: Decision,
    problems: Vec<BuildError>,
    applied: Applied,
) -> Result<Outcome, ReportError> {
    let Decision {
        plans,
        artifacts,
        estate,
        stranded,
        mut notes,
        rollout,
        ..
    } = decision;
    // Traffic: the Events of drains, cut-offs and route writes.
    notes.extend(
        applied
            .traffic
            .notes
            .iter()
            .map(|(warning, reason, note)| (severity(*warning), *reason, note.clone())),
    );
    let failure = problems
        .into_iter()
        .next()
        .map(Failure::Build)
        .or(applied.error.map(Failure::Apply));
    let components: Vec<ObservedPlan> = plans
        .iter()
        .map(|plan| ObservedPlan {
            plan,
            ready: plan
                .placements
                .iter()
                .map(|p| {
                    applied
                        .ready
                        .get(&(plan.key.component.clone(), p.pool.clone()))
                        .copied()
                        .unwrap_or(0)
                })
                .collect(),
        })
        .collect();
    let at = Timestamp::now();
    let mut status = deployment_status(StatusInput {
        generation: md.metadata.generation,
        previous: md.status.as_ref(),
        components,
        invalid: None,
        artifacts: artifacts.as_ref().map(|stage| stage.state(&plans)),
        stranded: stranded.entries.clone(),
        now: at,
    });
    // Traffic: each component's backends and TrafficReady.
    report_into(
        &mut status,
        md.status.as_ref(),
        &applied.traffic,
        md.metadata.generation,
        at,
    );
    // Rollouts: status.rollout and the conditions the rollout sets in place of the plain ones.
    rollout_into(&mut status, md, &rollout, at);
    record_metrics(md, ctx, &status);
    let all_ready = status.ready_replicas >= status.desired_replicas;
    notes.extend(Stage::events(md.status.as_ref(), &status));
    // The children watch wakes this deployment when its replicas become ready; the requeue
    // writes the progress report if they take longer than the grace.
    let created = md.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if failure.is_none()
        && notes.is_empty()
        && rollout.record.is_none()
        && let Some(wait) = first_report_wait(md.status.as_ref(), created, &status, at)
    {
        ctx.succeeded(md);
        return Ok(Outcome::Done(Action::requeue(wait)));
    }
    Stage::count_failures(&ctx.metrics, &estate.pools, md.status.as_ref(), &status);
    let events = placement_events(md.status.as_ref(), &status, &notes);
    if write(ctx, md, &status).await? {
        for (kind, reason, note) in events {
            publish(ctx, md, kind, reason, "Reconcile", &note).await;
        }
    } else {
        // The status says nothing new, but what this reconcile found may (a metric failing with
        // another error): each note is told once, not again every reconcile.
        publish_new(ctx, md, notes).await;
    }
    // The one-shot action annotation, once acted on and recorded: removed, so that it is not
    // acted on again (a GitOps tool that set it sees it go, as after `kubectl annotate`).
    if rollout.remove_annotation {
        remove_action_annotation(ctx, md).await?;
    }
    if let Some(failure) = failure {
        return Ok(Outcome::Failed(failure));
    }
    ctx.succeeded(md);
    let settled = all_ready && stranded.unresolved().next().is_none();
    let reads_demand = (!observed.demand.demand.is_empty()).then_some(observed.demand.next_read);
    let next = next_requeue(&plans, settled, reads_demand, ctx.settings.period);
    // Traffic: a drain ending, or a route not yet accepted, is looked at again in time.
    let next = applied.traffic.next.map_or(next, |t| t.min(next));
    // Rollouts: a pause, an analysis round or a drain ending.
    let next = rollout
        .next_change_at
        .map(
            |at_second| Duration::from_secs(at_second.saturating_sub(at.as_second()).max(1) as u64),
        )
        .map_or(next, |t| t.min(next));
    Ok(Outcome::Done(Action::requeue(next)))
}

async fn write(
    ctx: &Context,
    md: &ModelDeployment,
    status: &ModelDeploymentStatus,
) -> Result<bool, ReportError> {
    Ok(WRITER
        .write(
            ctx.clusters.local().client().await,
            md,
            md.status.as_ref(),
            status,
        )
        .await?)
}

async fn publish_new(ctx: &Context, md: &ModelDeployment, notes: Vec<Note>) {
    for (type_, reason, note) in notes {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx
            .recorder
            .publish_if_new(&event, &md.object_ref(&()))
            .await
        {
            warn!(%err, reason, "could not publish an Event");
        }
    }
}

fn record_metrics(md: &ModelDeployment, ctx: &Context, status: &ModelDeploymentStatus) {
    let labels = DeploymentLabels {
        namespace: md.namespace().unwrap_or_default(),
        name: md.name_any(),
    };
    let public: u32 = status
        .components
        .iter()
        .flat_map(|c| &c.placements)
        .filter(|p| p.cloud == Cloud::Public)
        .map(|p| p.replicas)
        .sum();
    ctx.metrics
        .bursting
        .get_or_create(&labels)
        .set(i64::from(public > 0));
    ctx.metrics
        .cost_per_hour
        .get_or_create(&labels)
        .set(status.cost_per_hour);
}

pub async fn publish(
    ctx: &Context,
    md: &ModelDeployment,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        // The Events API caps notes at 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        warn!(%err, reason, "could not publish an Event");
    }
}

/// `status.rollout` as decided, and the rollout's conditions in place of the plain ones of the
/// same types (`Reconciling` True while a rollout runs or waits, `Stalled` True after a
/// rollback or an abort, `Progressing`).
fn rollout_into(
    status: &mut ModelDeploymentStatus,
    md: &ModelDeployment,
    rollout: &crate::operator::rollout::step::RolloutOutcome,
    at: Timestamp,
) {
    if let Some(record) = &rollout.record {
        status.rollout = Some(record.clone());
    }
    if rollout.conditions.is_empty() {
        return;
    }
    let types: Vec<&str> = rollout.conditions.iter().map(|c| c.type_).collect();
    status
        .conditions
        .retain(|c| !types.contains(&c.type_.as_str()));
    let previous = md
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status
        .conditions
        .extend(crate::operator::kubernetes::conditions::merge(
            previous,
            rollout.conditions.clone(),
            md.metadata.generation,
            at,
        ));
}

/// Removes the rollout-action annotation (a JSON merge patch of the metadata only).
async fn remove_action_annotation(ctx: &Context, md: &ModelDeployment) -> Result<(), ReportError> {
    let api: Api<ModelDeployment> = Api::namespaced(
        ctx.clusters.local().client().await,
        &md.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({
        "metadata": {"annotations": {crate::api::ROLLOUT_ACTION_ANNOTATION: null}}
    });
    api.patch(
        &md.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
