//! Rules between a pool and the other pools (see `estate::validate_pool`), as the pool's status
//! shows them: an invalid pool is `Ready=False` and `Stalled=True` with reason `InvalidSpec`, so
//! the planner places nothing there until the spec changes, and a Warning Event says why. Pure.

use crate::api::{ComputePool, ComputePoolStatus};
use crate::estate::Issue;
use crate::operator::context::Context;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

pub const INVALID_SPEC: &str = "InvalidSpec";

/// The issues as one line, or `None` for a valid pool.
pub fn message(issues: &[Issue]) -> Option<String> {
    (!issues.is_empty()).then(|| {
        issues
            .iter()
            .map(|i| format!("{}: {}", i.field, i.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// `status` as the probe decided it, overridden by the pool's issues: `Ready=False` and
/// `Stalled=True`, reason `InvalidSpec`. Transition times move only when a status flips.
/// `previous`: the conditions the pool had before this reconcile.
pub fn with_validity(
    mut status: ComputePoolStatus,
    previous: &[Condition],
    issues: &[Issue],
    generation: Option<i64>,
    now: Timestamp,
) -> ComputePoolStatus {
    let Some(message) = message(issues) else {
        return status;
    };
    let since = |type_: &str, value: &str| {
        previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == value)
            .map_or(Time(now), |c| c.last_transition_time.clone())
    };
    let condition = |type_: &str, value: &str| Condition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: INVALID_SPEC.to_string(),
        message: message.clone(),
        observed_generation: generation,
        last_transition_time: since(type_, value),
    };
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.push(condition("Ready", "False"));
    status.conditions.push(condition("Stalled", "True"));
    status
}

/// The Warning Event's note when the pool turned invalid, or its issues changed.
pub fn invalid_event(previous: &[Condition], issues: &[Issue]) -> Option<String> {
    let message = message(issues)?;
    let already = previous
        .iter()
        .any(|c| c.type_ == "Stalled" && c.status == "True" && c.message == message);
    (!already).then_some(message)
}

/// Publishes the Warning Event about an invalid pool (the Event API reports cluster-scoped
/// objects in `default`).
pub async fn publish(ctx: &Context, pool: &ComputePool, note: String) {
    let event = Event {
        type_: EventType::Warning,
        reason: INVALID_SPEC.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Validate".into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
        warn!(%err, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estate::ObjectRef;

    fn ready(status: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "NodesReady".into(),
            message: "1 of 1 nodes".into(),
            observed_generation: Some(1),
            last_transition_time: Time("2026-11-28T10:00:00Z".parse().unwrap()),
        }
    }

    #[test]
    fn an_invalid_pool_is_not_ready_and_stalled_with_one_event() {
        let now: Timestamp = "2026-11-28T11:00:00Z".parse().unwrap();
        let probed = ComputePoolStatus {
            conditions: vec![ready("True")],
            ..Default::default()
        };
        assert_eq!(
            with_validity(probed.clone(), &[], &[], Some(1), now),
            probed,
            "a valid pool keeps what the probe said"
        );
        let issues = vec![Issue {
            object: ObjectRef {
                kind: "ComputePool".into(),
                namespace: None,
                name: "aws".into(),
            },
            field: "spec.artifactStore".into(),
            message: "names Secret \"dc1-store\"".into(),
        }];
        let status = with_validity(probed.clone(), &[ready("True")], &issues, Some(1), now);
        let find = |t: &str| status.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(
            (find("Ready").status.as_str(), find("Ready").reason.as_str()),
            ("False", INVALID_SPEC)
        );
        assert_eq!(find("Ready").last_transition_time.0, now);
        assert_eq!(find("Stalled").status, "True");
        assert!(
            find("Stalled")
                .message
                .contains("spec.artifactStore: names Secret")
        );
        assert!(invalid_event(&[ready("True")], &issues).is_some());
        assert_eq!(
            invalid_event(&status.conditions, &issues),
            None,
            "no second Event for the same issues"
        );
        // The planner sees it unhealthy: nothing is placed there.
        let mut pool: crate::api::ComputePool = serde_yaml_ng::from_str(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: aws}\nspec: {cloud: public, provider: aws, region: r, capacity: {}}\n",
        )
        .unwrap();
        pool.status = Some(status);
        assert!(matches!(
            crate::estate::pool_view(&pool).health,
            crate::planner::PoolHealth::Unhealthy(_)
        ));
    }
}
