//! Reading the tracker's observations from Kubernetes objects: which nodes are about to be
//! reclaimed, and which pods cannot be scheduled. Pure functions of one object each.
//!
//! Reclamation signals supported (a node with any of these is doomed):
//!
//! | Taint key (value)                                     | Set by                                   |
//! |-------------------------------------------------------|------------------------------------------|
//! | `karpenter.sh/disrupted`                              | Karpenter v1 (disruption, spot interruption) |
//! | `karpenter.sh/disruption` (`disrupting`)              | Karpenter v0.32 to v0.37                 |
//! | `aws-node-termination-handler/spot-itn`               | AWS NTH: spot interruption notice        |
//! | `aws-node-termination-handler/rebalance-recommendation` | AWS NTH: EC2 rebalance recommendation  |
//! | `aws-node-termination-handler/scheduled-maintenance`  | AWS NTH: scheduled EC2 event             |
//! | `aws-node-termination-handler/asg-lifecycle-termination` | AWS NTH: ASG scale-in                 |
//! | `cloud.google.com/impending-node-termination`         | GKE: spot/preemptible termination notice |
//! | `ToBeDeletedByClusterAutoscaler`                      | cluster-autoscaler scale-down            |
//!
//! and a Node with a `deletionTimestamp`. Soft hints (`DeletionCandidateOfClusterAutoscaler`,
//! `PreferNoSchedule`) and a plain cordon are not reclamation: a cordoned node may come back.
//!
//! "No node coming" signals supported (an elastic pool's replica with one is stuck after the
//! pool's `unschedulableSeconds`, without the node start-up on top): cluster-autoscaler's
//! `NotTriggerScaleUp` Event on the pending Pod (core `v1`, `source.component:
//! cluster-autoscaler`), newer than the pod's `PodScheduled=False` transition. Karpenter's
//! NodeClaim launch failures are not read (they name no pod).

use super::PendingCause;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use std::fmt;

/// The reclamation taints, with the value they must carry (`None`: any value) and who sets them.
pub const RECLAMATION_TAINTS: [(&str, Option<&str>, &str); 8] = [
    ("karpenter.sh/disrupted", None, "Karpenter"),
    ("karpenter.sh/disruption", Some("disrupting"), "Karpenter"),
    (
        "aws-node-termination-handler/spot-itn",
        None,
        "AWS node termination handler: spot interruption",
    ),
    (
        "aws-node-termination-handler/rebalance-recommendation",
        None,
        "AWS node termination handler: rebalance recommendation",
    ),
    (
        "aws-node-termination-handler/scheduled-maintenance",
        None,
        "AWS node termination handler: scheduled maintenance",
    ),
    (
        "aws-node-termination-handler/asg-lifecycle-termination",
        None,
        "AWS node termination handler: ASG termination",
    ),
    (
        "cloud.google.com/impending-node-termination",
        None,
        "GKE: impending termination",
    ),
    (
        "ToBeDeletedByClusterAutoscaler",
        None,
        "cluster-autoscaler scale-down",
    ),
];

/// Why a node is about to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reclamation {
    /// The taint key, or `deletionTimestamp`.
    pub signal: String,
    /// Who set it, in words.
    pub source: &'static str,
}

impl fmt::Display for Reclamation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.signal)
    }
}

/// The reclamation signal a taint is, if any.
pub fn taint_signal(key: &str, value: Option<&str>) -> Option<Reclamation> {
    RECLAMATION_TAINTS
        .iter()
        .find(|(k, v, _)| *k == key && v.is_none_or(|want| value == Some(want)))
        .map(|(k, _, source)| Reclamation {
            signal: (*k).to_string(),
            source,
        })
}

/// The reclamation signal on a node, if any: a supported taint, or the node being deleted.
pub fn reclamation_signal(node: &Node) -> Option<Reclamation> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    for taint in taints.into_iter().flatten() {
        if let Some(signal) = taint_signal(&taint.key, taint.value.as_deref()) {
            return Some(signal);
        }
    }
    node.metadata
        .deletion_timestamp
        .as_ref()
        .map(|_| Reclamation {
            signal: "deletionTimestamp".to_string(),
            source: "node being deleted",
        })
}

/// Whether and since when a pod waits to be scheduled: `Pending`, not bound to a node, with
/// `PodScheduled=False` and reason `Unschedulable`. A pod the scheduler has not looked at yet
/// (no condition) is not counted: it is not known to be stuck.
pub fn unschedulable_since(pod: &Pod) -> Option<(Timestamp, PendingCause)> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Pending")
        || pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
    {
        return None;
    }
    let scheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")?;
    if scheduled.status != "False" || scheduled.reason.as_deref() != Some("Unschedulable") {
        return None;
    }
    let since = scheduled.last_transition_time.as_ref()?.0;
    Some((since, PendingCause::Unschedulable))
}

/// Event reason cluster-autoscaler records on a pending pod it will add no node for (its scale-up
/// found no node group the pod would fit: maximum size reached, no matching group, out of
/// capacity after backoff): "pod didn't trigger scale-up ...".
pub const NOT_TRIGGER_SCALE_UP: &str = "NotTriggerScaleUp";
/// The component cluster-autoscaler records its Events under (`source.component`, and
/// `reportingComponent` where set).
pub const CLUSTER_AUTOSCALER: &str = "cluster-autoscaler";

/// An autoscaler's word that no node will come for one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoScaleUp {
    pub namespace: String,
    pub pod: String,
    /// The pod's uid, when the Event names it: a later pod of the same name is another pod.
    pub uid: Option<String>,
    /// When it was last said.
    pub at: Timestamp,
}

/// The autoscaler's verdict a core `v1` Event carries, if it is one: reason `NotTriggerScaleUp`
/// about a Pod, recorded by cluster-autoscaler (the reason alone could be any controller's).
pub fn no_scale_up(event: &k8s_openapi::api::core::v1::Event) -> Option<NoScaleUp> {
    if event.reason.as_deref() != Some(NOT_TRIGGER_SCALE_UP) {
        return None;
    }
    let object = &event.involved_object;
    if object.kind.as_deref() != Some("Pod") {
        return None;
    }
    let by_autoscaler = event.source.as_ref().and_then(|s| s.component.as_deref())
        == Some(CLUSTER_AUTOSCALER)
        || event.reporting_component.as_deref() == Some(CLUSTER_AUTOSCALER);
    if !by_autoscaler {
        return None;
    }
    let at = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    Some(NoScaleUp {
        namespace: object
            .namespace
            .clone()
            .or_else(|| event.metadata.namespace.clone())?,
        pod: object.name.clone()?,
        uid: object.uid.clone().filter(|u| !u.is_empty()),
        at,
    })
}

/// Why `pod`, unschedulable since `since`, waits: `NoNodeComing` when the autoscaler said so
/// for this pod during this wait (a verdict older than `since` was about an earlier one).
pub fn pending_cause(pod: &Pod, since: Timestamp, verdicts: &[NoScaleUp]) -> PendingCause {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref();
    let said = verdicts.iter().any(|v| {
        v.namespace == namespace
            && v.pod == name
            && v.uid.as_deref().is_none_or(|u| Some(u) == uid)
            && v.at >= since
    });
    if said {
        PendingCause::NoNodeComing
    } else {
        PendingCause::Unschedulable
    }
}

#[cfg(test)]
mod no_node_coming_tests {
    use super::*;
    use k8s_openapi::api::core::v1::Event;

    /// A `NotTriggerScaleUp` Event as cluster-autoscaler's legacy recorder writes it (core v1,
    /// `source.component`, first/last timestamps and a count, empty reporting fields).
    fn autoscaler_event(pod: &str, uid: &str, last: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{pod}.17a2b3c4d5e6f7a8"), "namespace": "burst",
                "creationTimestamp": "2026-12-03T10:00:05Z"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": "burst",
                "uid": uid, "resourceVersion": "42"},
            "reason": "NotTriggerScaleUp",
            "message": "pod didn't trigger scale-up: 1 max node group size reached",
            "source": {"component": "cluster-autoscaler"},
            "firstTimestamp": "2026-12-03T10:00:05Z",
            "lastTimestamp": last,
            "count": 7,
            "type": "Normal",
            "eventTime": null,
            "reportingComponent": "",
            "reportingInstance": ""
        }))
        .unwrap()
    }

    fn pending_pod(name: &str, uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "burst", "uid": uid},
            "spec": {"containers": []},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "lastTransitionTime": "2026-12-03T10:00:00Z",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}
        }))
        .unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn cluster_autoscalers_not_trigger_scale_up_is_read_from_its_real_shape() {
        let verdict = no_scale_up(&autoscaler_event("ranker-0", "u-1", "2026-12-03T10:01:05Z"))
            .expect("a verdict");
        assert_eq!(
            verdict,
            NoScaleUp {
                namespace: "burst".into(),
                pod: "ranker-0".into(),
                uid: Some("u-1".into()),
                at: at("2026-12-03T10:01:05Z"),
            }
        );
        // The same reason from a newer recorder (events.k8s.io, reportingController): read too.
        let mut newer = autoscaler_event("ranker-0", "u-1", "2026-12-03T10:01:05Z");
        newer.source = None;
        newer.reporting_component = Some(CLUSTER_AUTOSCALER.into());
        newer.last_timestamp = None;
        newer.event_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            at("2026-12-03T10:02:00Z"),
        ));
        assert_eq!(no_scale_up(&newer).unwrap().at, at("2026-12-03T10:02:00Z"));
    }

    #[test]
    fn other_events_are_no_verdict() {
        let mut triggered = autoscaler_event("ranker-0", "u-1", "2026-12-03T10:01:05Z");
        triggered.reason = Some("TriggeredScaleUp".into());
        assert_eq!(no_scale_up(&triggered), None);
        // The same reason from another controller is not the autoscaler's word.
        let mut impostor = autoscaler_event("ranker-0", "u-1", "2026-12-03T10:01:05Z");
        impostor.source = Some(k8s_openapi::api::core::v1::EventSource {
            component: Some("default-scheduler".into()),
            host: None,
        });
        assert_eq!(no_scale_up(&impostor), None);
        let mut about_a_node = autoscaler_event("ranker-0", "u-1", "2026-12-03T10:01:05Z");
        about_a_node.involved_object.kind = Some("Node".into());
        assert_eq!(no_scale_up(&about_a_node), None);
    }

    #[test]
    fn a_verdict_makes_its_pod_wait_for_no_node_during_this_wait_only() {
        let pod = pending_pod("ranker-0", "u-1");
        let (since, cause) = unschedulable_since(&pod).unwrap();
        assert_eq!(cause, PendingCause::Unschedulable);
        let said =
            no_scale_up(&autoscaler_event("ranker-0", "u-1", "2026-12-03T10:01:05Z")).unwrap();
        assert_eq!(
            pending_cause(&pod, since, std::slice::from_ref(&said)),
            PendingCause::NoNodeComing
        );
        // Another pod of the same name (a new uid) is not concerned.
        assert_eq!(
            pending_cause(
                &pending_pod("ranker-0", "u-2"),
                since,
                std::slice::from_ref(&said)
            ),
            PendingCause::Unschedulable
        );
        // Said before this wait began: about an earlier one.
        let old = NoScaleUp {
            at: at("2026-12-03T09:59:00Z"),
            ..said.clone()
        };
        assert_eq!(
            pending_cause(&pod, since, &[old]),
            PendingCause::Unschedulable
        );
        assert_eq!(pending_cause(&pod, since, &[]), PendingCause::Unschedulable);
    }
}
