//! From one pool's Nodes and Skybridge Pods to what the tracker and the planner need: the
//! tracker's observation (unschedulable replicas, nodes about to be reclaimed) and the replicas
//! running on the pool's healthy nodes. Pure; the operator lists the objects, the caller says
//! which component a pod serves (the operator reads its labels).
//!
//! Also here: how many of a component's replicas on a pool the planner must place anew, and the
//! tracker's state resumed from a pool's status after a restart.

use super::drain::{
    BoundReplica, DrainMemory, SERVING_LABEL, awaiting_put_back, bound, serving_on_healthy,
};
use super::signals::{NoScaleUp, pending_cause, reclamation_signal, unschedulable_since};
use super::{Assessment, NodeObservation, PendingReplica, PoolObservation, Shortage, TrackerState};
use crate::api::ComputePoolStatus;
use crate::planner::ComponentKey;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// What one look at a pool's Nodes and Pods found.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub observation: PoolObservation,
    /// Replicas per component running on a node of the pool that is not about to go.
    pub healthy: BTreeMap<ComponentKey, u32>,
    /// Every replica bound to a node of the pool, for the drain decision (`capacity::drain`).
    pub replicas: Vec<BoundReplica>,
}

/// Reads one pool: `nodes` are the pool's Nodes (its node selector), `pods` the Skybridge pods
/// placed on the pool (its pool label), `verdicts` the autoscaler's "no node coming" words on
/// pods (see `signals::no_scale_up`), `component_of` which component a pod serves (`None`:
/// not a replica, ignored). A finished or terminating pod is ignored: it holds no replica. A pod
/// bound to a node the pool no longer has (deleted after a reclamation) is neither healthy nor
/// pending: the planner must not count it as kept.
pub fn observe_pool(
    at: Timestamp,
    nodes: &[Node],
    pods: &[Pod],
    verdicts: &[NoScaleUp],
    component_of: impl Fn(&Pod) -> Option<ComponentKey>,
) -> Observed {
    let mut node_observations: Vec<NodeObservation> = nodes
        .iter()
        .filter_map(|node| {
            Some(NodeObservation {
                name: node.metadata.name.clone()?,
                reclamation: reclamation_signal(node),
                replicas: BTreeMap::new(),
            })
        })
        .collect();
    node_observations.sort_by(|a, b| a.name.cmp(&b.name));
    let doomed: BTreeSet<String> = node_observations
        .iter()
        .filter(|n| n.reclamation.is_some())
        .map(|n| n.name.clone())
        .collect();
    let known: BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut pending = Vec::new();
    let mut healthy: BTreeMap<ComponentKey, u32> = BTreeMap::new();
    let mut on_doomed: BTreeMap<String, BTreeMap<ComponentKey, u32>> = BTreeMap::new();
    let mut replicas = Vec::new();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Some(component) = component_of(pod) else {
            continue;
        };
        if let Some((since, _)) = unschedulable_since(pod) {
            pending.push(PendingReplica {
                component,
                since,
                cause: pending_cause(pod, since, verdicts),
            });
            continue;
        }
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            // Not looked at by the scheduler yet: neither stuck nor running.
            continue;
        };
        if known.contains(node) {
            replicas.push(BoundReplica {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                component: component.clone(),
                node: node.to_string(),
                doomed: doomed.contains(node),
                ready: is_ready(pod),
                serving_label: pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVING_LABEL).cloned()),
            });
        }
        if doomed.contains(node) {
            *on_doomed
                .entry(node.to_string())
                .or_default()
                .entry(component)
                .or_insert(0) += 1;
        } else if known.contains(node) {
            *healthy.entry(component).or_insert(0) += 1;
        }
    }
    for node in &mut node_observations {
        if let Some(replicas) = on_doomed.remove(&node.name) {
            node.replicas = replicas;
        }
    }
    // Stable order, so that the same objects give the same observation.
    pending.sort_by(|a, b| (&a.component, a.since).cmp(&(&b.component, b.since)));
    replicas.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Observed {
        observation: PoolObservation {
            at,
            pending,
            nodes: node_observations,
        },
        healthy,
        replicas,
    }
}

/// `Ready=True` in the pod's conditions.
fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What the operator keeps of a pool's last assessment, for planning.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolCapacity {
    pub assessment: Assessment,
    pub healthy: BTreeMap<ComponentKey, u32>,
    /// Ready replicas per component in the Services' endpoints on nodes not about to go: the
    /// pool's part of what serves elsewhere when another pool drains (`capacity::drain`).
    pub serving: BTreeMap<ComponentKey, u32>,
    /// Replicas per component bound to the pool's nodes (what its workloads run).
    pub bound: BTreeMap<ComponentKey, u32>,
    /// Replicas per component out of the endpoints on nodes no longer doomed, until the drain
    /// puts them back (see `drain::awaiting_put_back`).
    pub awaiting_put_back: BTreeMap<ComponentKey, u32>,
    /// What the pool's last drain decision remembers.
    pub drain: DrainMemory,
}

impl PoolCapacity {
    /// How many of `component`'s `current` replicas on this pool (as its deployment records
    /// them) the planner must place anew: the shortfall and the replicas on doomed nodes, but
    /// never more than the recorded replicas that are not running on a healthy node. So a
    /// decision that already moved them is not repeated (the recorded count has dropped to the
    /// healthy ones), and replicas just created, not yet seen by the scheduler, are not moved.
    pub fn to_replace(&self, component: &ComponentKey, current: u32) -> u32 {
        let lost = self
            .assessment
            .shortfall
            .get(component)
            .copied()
            .unwrap_or(0)
            .saturating_add(self.doomed(component));
        let healthy = self.healthy.get(component).copied().unwrap_or(0);
        lost.min(current.saturating_sub(healthy))
    }

    /// The pool's capacity from one observation: `serving` from its replicas, the drain memory
    /// empty (the pool controller sets it once it decided).
    pub fn of(assessment: Assessment, observed: &Observed) -> Self {
        Self {
            assessment,
            healthy: observed.healthy.clone(),
            serving: serving_on_healthy(&observed.replicas),
            bound: bound(&observed.replicas),
            awaiting_put_back: awaiting_put_back(&observed.replicas),
            drain: DrainMemory::default(),
        }
    }

    /// `component`'s replicas on nodes of this pool about to be reclaimed.
    pub fn doomed(&self, component: &ComponentKey) -> u32 {
        self.assessment.doomed.get(component).copied().unwrap_or(0)
    }
}

/// The tracker's state from a pool's status, for the first assessment after a restart (or a
/// leader change): a pool the previous leader found short stays short until its back-off and
/// recovery have passed, instead of taking replicas again at once.
pub fn resumed_state(status: Option<&ComputePoolStatus>) -> TrackerState {
    let Some(shortage) = status.and_then(|s| s.shortage.as_ref()) else {
        return TrackerState::default();
    };
    TrackerState {
        shortage: Some(Shortage {
            since: shortage.since.0,
            backoff_until: shortage.backoff_until.0,
            clear_since: None,
            stuck_at_onset: shortage.shortfall_replicas,
        }),
        recovered_at: None,
    }
}

/// The last assessment of each pool, kept between the pool controller (which assesses every
/// period) and planning (which reads it). One lock, held only to copy.
#[derive(Debug, Default)]
pub struct CapacityMemory {
    pools: std::sync::Mutex<BTreeMap<String, PoolCapacity>>,
}

impl CapacityMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PoolCapacity>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracker's state of `pool` from its last assessment, if there was one.
    pub fn state(&self, pool: &str) -> Option<TrackerState> {
        self.lock().get(pool).map(|c| c.assessment.state.clone())
    }

    /// Records `pool`'s new assessment, keeping the drain memory it had (the drain decision,
    /// which comes after, replaces it with [`Self::set_drain`]).
    pub fn record(&self, pool: &str, mut capacity: PoolCapacity) {
        let mut pools = self.lock();
        if let Some(previous) = pools.get(pool) {
            capacity.drain = previous.drain.clone();
        }
        pools.insert(pool.to_string(), capacity);
    }

    /// What `pool`'s last drain decision remembers.
    pub fn drain(&self, pool: &str) -> DrainMemory {
        self.lock()
            .get(pool)
            .map(|c| c.drain.clone())
            .unwrap_or_default()
    }

    pub fn set_drain(&self, pool: &str, memory: DrainMemory) {
        if let Some(capacity) = self.lock().get_mut(pool) {
            capacity.drain = memory;
        }
    }

    /// Forgets the pools `keep` says are gone, so that a deleted pool leaves nothing behind.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    /// Every pool's last assessment, for one planning pass.
    pub fn snapshot(&self) -> BTreeMap<String, PoolCapacity> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PoolShortage;
    use crate::capacity::{PendingCause, PoolSettings, StockoutHandling, assess};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn key(component: &str) -> ComponentKey {
        ComponentKey {
            namespace: "shop".into(),
            deployment: "recs".into(),
            component: component.into(),
        }
    }

    fn node(name: &str, taint: Option<&str>) -> Node {
        let taints: Vec<serde_json::Value> = taint
            .map(|k| serde_json::json!({"key": k, "effect": "NoSchedule"}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "spec": {"taints": taints}
        }))
        .unwrap()
    }

    /// A pod of `component`: on `node` and running, or pending (unschedulable since `since`
    /// when given, else not yet looked at by the scheduler).
    fn pod(component: &str, node: Option<&str>, since: Option<&str>, phase: &str) -> Pod {
        let mut spec = serde_json::json!({"containers": []});
        if let Some(node) = node {
            spec["nodeName"] = serde_json::json!(node);
        }
        let conditions: Vec<serde_json::Value> = since
            .map(|t| {
                serde_json::json!({"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "lastTransitionTime": t})
            })
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"c": component}},
            "spec": spec,
            "status": {"phase": phase, "conditions": conditions}
        }))
        .unwrap()
    }

    fn by_label(pod: &Pod) -> Option<ComponentKey> {
        pod.metadata.labels.as_ref()?.get("c").map(|c| key(c))
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_pools_objects_become_pending_doomed_and_healthy_replicas() {
        let nodes = [
            node("spot-b", None),
            node("spot-a", Some("karpenter.sh/disrupted")),
        ];
        let pods = [
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", Some("spot-b"), None, "Running"),
            pod("encoder", Some("spot-b"), None, "Running"),
            pod("ranker", None, Some("2026-12-03T10:00:00Z"), "Pending"),
            // Not looked at by the scheduler yet: neither stuck nor running.
            pod("ranker", None, None, "Pending"),
            // On a node the pool no longer has (deleted after its notice): not healthy.
            pod("ranker", Some("spot-gone"), None, "Running"),
            // Finished: holds nothing.
            pod("ranker", Some("spot-b"), None, "Failed"),
        ];
        let mut unlabelled = pod("ranker", Some("spot-b"), None, "Running");
        unlabelled.metadata.labels = None;
        let mut pods = pods.to_vec();
        pods.push(unlabelled);
        let seen = observe_pool(at("2026-12-03T10:05:00Z"), &nodes, &pods, &[], by_label);
        assert_eq!(seen.observation.pending.len(), 1);
        assert_eq!(seen.observation.pending[0].component, key("ranker"));
        assert_eq!(
            seen.observation.pending[0].since,
            at("2026-12-03T10:00:00Z")
        );
        assert_eq!(
            seen.observation.pending[0].cause,
            PendingCause::Unschedulable
        );
        let names: Vec<&str> = seen
            .observation
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["spot-a", "spot-b"],
            "sorted, every node of the pool"
        );
        assert_eq!(seen.observation.nodes[0].replicas[&key("ranker")], 2);
        assert!(seen.observation.nodes[0].reclamation.is_some());
        assert!(seen.observation.nodes[1].replicas.is_empty());
        assert_eq!(seen.healthy[&key("ranker")], 1);
        assert_eq!(seen.healthy[&key("encoder")], 1);
    }

    fn settings() -> PoolSettings {
        PoolSettings {
            capacity_type: crate::api::CapacityType::Spot,
            node_startup_seconds: None,
            stockout: StockoutHandling {
                unschedulable_seconds: 10,
                backoff_seconds: 30,
                recovery_seconds: 10,
            },
        }
    }

    #[test]
    fn an_elastic_pool_the_autoscaler_gives_no_node_is_short_without_waiting_the_start_up() {
        // Node start-up 300 s, 10 s unschedulable allowed; one replica pending for 20 s.
        let elastic = PoolSettings {
            node_startup_seconds: Some(300),
            ..settings()
        };
        let nodes = [node("spot-a", None)];
        let mut stuck = pod("ranker", None, Some("2026-12-03T10:00:00Z"), "Pending");
        stuck.metadata.namespace = Some("burst".into());
        stuck.metadata.name = Some("ranker-0".into());
        let pods = [stuck];
        let now = at("2026-12-03T10:00:20Z");
        let waiting = observe_pool(now, &nodes, &pods, &[], by_label);
        let without = assess(&elastic, &TrackerState::default(), &waiting.observation);
        assert!(!without.is_short(), "a node may still come: {without:?}");
        let verdict = NoScaleUp {
            namespace: "burst".into(),
            pod: "ranker-0".into(),
            uid: None,
            at: at("2026-12-03T10:00:03Z"),
        };
        let told = observe_pool(now, &nodes, &pods, &[verdict], by_label);
        assert_eq!(
            told.observation.pending[0].cause,
            PendingCause::NoNodeComing
        );
        let with = assess(&elastic, &TrackerState::default(), &told.observation);
        assert!(with.is_short(), "{with:?}");
        assert_eq!(with.shortfall[&key("ranker")], 1);
    }

    #[test]
    fn a_short_pools_shortfall_is_replaced_once_not_again_after_the_decision_moved_it() {
        // 4 replicas recorded on the pool, 2 running, 2 stuck for 20 s: the pool is short.
        let nodes = [node("spot-a", None)];
        let stuck = Some("2026-12-03T10:00:00Z");
        let pods = [
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", None, stuck, "Pending"),
            pod("ranker", None, stuck, "Pending"),
        ];
        let seen = observe_pool(at("2026-12-03T10:00:20Z"), &nodes, &pods, &[], by_label);
        let assessment = assess(&settings(), &TrackerState::default(), &seen.observation);
        assert!(assessment.is_short());
        let capacity = PoolCapacity::of(assessment, &seen);
        assert_eq!(capacity.to_replace(&key("ranker"), 4), 2);
        // The decision recorded 2 on the pool; before the pods are gone the same assessment
        // must not take 2 more away.
        assert_eq!(capacity.to_replace(&key("ranker"), 2), 0);
        assert_eq!(
            capacity.to_replace(&key("encoder"), 3),
            0,
            "nothing of it is lost"
        );
    }

    #[test]
    fn replicas_just_created_are_not_moved_before_they_are_known_to_be_lost() {
        // Recorded 5, 2 running, 3 not yet scheduled, none stuck: nothing to replace, even
        // though only 2 are healthy.
        let nodes = [node("spot-a", None)];
        let pods = [
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", None, None, "Pending"),
        ];
        let seen = observe_pool(at("2026-12-03T10:00:20Z"), &nodes, &pods, &[], by_label);
        let capacity = PoolCapacity::of(
            assess(&settings(), &TrackerState::default(), &seen.observation),
            &seen,
        );
        assert_eq!(capacity.to_replace(&key("ranker"), 5), 0);
    }

    #[test]
    fn doomed_replicas_are_replaced_once() {
        let nodes = [
            node("spot-a", Some("aws-node-termination-handler/spot-itn")),
            node("spot-b", None),
        ];
        let pods = [
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", Some("spot-a"), None, "Running"),
            pod("ranker", Some("spot-b"), None, "Running"),
        ];
        let seen = observe_pool(at("2026-12-03T10:00:20Z"), &nodes, &pods, &[], by_label);
        let capacity = PoolCapacity::of(
            assess(&settings(), &TrackerState::default(), &seen.observation),
            &seen,
        );
        assert!(!capacity.assessment.is_short());
        assert_eq!(capacity.doomed(&key("ranker")), 2);
        assert_eq!(capacity.to_replace(&key("ranker"), 3), 2);
        assert_eq!(capacity.to_replace(&key("ranker"), 1), 0);
    }

    #[test]
    fn a_shortage_in_the_status_survives_a_restart() {
        assert_eq!(resumed_state(None), TrackerState::default());
        let status = ComputePoolStatus {
            shortage: Some(PoolShortage {
                since: Time(at("2026-12-03T10:00:00Z")),
                backoff_until: Time(at("2026-12-03T10:10:00Z")),
                shortfall_replicas: 3,
                reason: "stockout".into(),
            }),
            ..Default::default()
        };
        let state = resumed_state(Some(&status));
        // Within the back-off, an empty observation does not end it.
        let seen = assess(
            &settings(),
            &state,
            &PoolObservation {
                at: at("2026-12-03T10:05:00Z"),
                pending: Vec::new(),
                nodes: Vec::new(),
            },
        );
        assert!(seen.is_short());
        assert_eq!(
            seen.state.shortage.as_ref().unwrap().backoff_until,
            at("2026-12-03T10:10:00Z")
        );
    }

    #[test]
    fn the_memory_forgets_deleted_pools() {
        let memory = CapacityMemory::default();
        let capacity = PoolCapacity {
            assessment: assess(
                &settings(),
                &TrackerState::default(),
                &PoolObservation {
                    at: at("2026-12-03T10:00:00Z"),
                    pending: Vec::new(),
                    nodes: Vec::new(),
                },
            ),
            healthy: BTreeMap::new(),
            serving: BTreeMap::new(),
            bound: BTreeMap::new(),
            awaiting_put_back: BTreeMap::new(),
            drain: Default::default(),
        };
        memory.record("a", capacity.clone());
        memory.record("b", capacity);
        memory.retain(|name| name == "b");
        assert_eq!(memory.snapshot().keys().collect::<Vec<_>>(), ["b"]);
        assert!(memory.state("a").is_none());
    }
}
