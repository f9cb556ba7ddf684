//! The BurstPolicy controller: reports what each policy governs (public replicas, their cost,
//! whether a budget binds) from the statuses of the deployments that name it. Deployments do the
//! placing; this controller only observes and reports, so a policy's status never lags a
//! deployment's by more than one of its status writes.

pub mod status;

use crate::api::{BurstPolicy, BurstPolicyStatus, ModelDeployment};
use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::kubernetes::conditions::same;
use crate::operator::kubernetes::metrics::{ErrorLabels, PolicyLabels};
use crate::operator::kubernetes::status_writer::{ReconcileTimer, ReportedStatus, StatusWriter};
use crate::operator::policy::status::{BUDGET_EXHAUSTED, policy_status};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{instrument, warn};

pub const FIELD_MANAGER: &str = "skybridge.io/policy-controller";

/// Re-checked this often even without a trigger, as a safety net for missed watch events.
const RESYNC: Duration = Duration::from_secs(300);

#[instrument(skip(policy, ctx), fields(name = policy.name_any()))]
pub async fn reconcile(policy: Arc<BurstPolicy>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let _timer = ReconcileTimer::start(&ctx.metrics, "burstpolicy");
    let pools = ctx
        .pools
        .state()
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect::<BTreeMap<_, _>>();
    let deployments = ctx.deployments.state();
    let status = policy_status(
        &policy,
        deployments.iter().map(|md| md.as_ref()),
        &pools,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let exhausted = exhausted(Some(&status));
    ctx.metrics
        .budget_exhausted
        .get_or_create(&PolicyLabels {
            policy: policy.name_any(),
        })
        .set(i64::from(exhausted));
    let wrote = StatusWriter {
        field_manager: FIELD_MANAGER,
    }
    .write(
        ctx.clusters.local().client().await,
        policy.as_ref(),
        policy.status.as_ref(),
        &status,
    )
    .await?;
    if wrote && exhausted != self::exhausted(policy.status.as_ref()) {
        budget_event(&ctx, &policy, &status, exhausted).await;
    }
    ctx.succeeded(policy.as_ref());
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(policy: Arc<BurstPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = policy.name_any(), %error, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "burstpolicy".into(),
            kind: error.kind().into(),
        })
        .inc();
    Action::requeue(ctx.backoff(policy.as_ref()))
}

/// The policies a deployment's components name: their status depends on the deployment's.
pub fn policies_of(md: Arc<ModelDeployment>) -> Vec<ObjectRef<BurstPolicy>> {
    let mut names: Vec<&str> = md
        .spec
        .components
        .iter()
        .filter_map(|c| c.burst_policy.as_deref())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().map(ObjectRef::new).collect()
}

fn exhausted(status: Option<&BurstPolicyStatus>) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == BUDGET_EXHAUSTED && c.status == "True")
    })
}

/// Equal but for condition times.
impl ReportedStatus for BurstPolicyStatus {
    fn says_the_same(&self, other: &Self) -> bool {
        same(&self.conditions, &other.conditions)
            && self.observed_generation == other.observed_generation
            && self.public_replicas == other.public_replicas
            && self.cost_per_hour == other.cost_per_hour
            && self.components == other.components
    }
}

async fn budget_event(ctx: &Context, policy: &BurstPolicy, status: &BurstPolicyStatus, on: bool) {
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == BUDGET_EXHAUSTED)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let event = Event {
        type_: if on {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: if on {
            "BudgetExhausted"
        } else {
            "WithinBudget"
        }
        .into(),
        note: Some(message.chars().take(1000).collect()),
        action: "Budget".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
        warn!(%err, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_triggers_each_policy_it_names_once() {
        let md: ModelDeployment = serde_yaml_ng::from_str(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {name: a, namespace: shop}
spec:
  model: {source: {uri: "s3://models/m", pool: dc1}, version: "1"}
  components:
    - {name: r1, dataClass: internal, image: i, resources: {cpu: "1", memory: 1Gi}, replicas: {min: 1, max: 2}, burstPolicy: p}
    - {name: r2, dataClass: internal, image: i, resources: {cpu: "1", memory: 1Gi}, replicas: {min: 1, max: 2}, burstPolicy: p}
    - {name: e, dataClass: sensitive, image: i, resources: {cpu: "1", memory: 1Gi}, replicas: {min: 1, max: 2}}
"#,
        )
        .unwrap();
        let refs = policies_of(Arc::new(md));
        assert_eq!(refs, vec![ObjectRef::<BurstPolicy>::new("p")]);
    }
}
