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
