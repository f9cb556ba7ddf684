//! Draining the pool's replicas on nodes about to be reclaimed out of their Services (issue
//! #19): each probe, `capacity::drain::decide` says which pods leave the endpoints and which come
//! back; this writes their `skybridge.io/serving` label in the pool's cluster and tells the
//! deployment. What serves elsewhere comes from every pool's last observation (the capacity
//! memory), what a component wants from its deployment's status (the replicas its plan places).

use crate::api::ModelDeployment;
use crate::capacity::drain::{
    DrainDecision, DrainMemory, DrainNoteKind, Elsewhere, NOT_SERVING, Relabel, SERVING,
    SERVING_LABEL, decide,
};
use crate::capacity::observed::{Observed, PoolCapacity};
use crate::operator::context::Context;
use crate::operator::kubernetes::clusters::ClusterClient;
use crate::planner::ComponentKey;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::warn;

/// Event reasons on a `ModelDeployment`.
pub const DRAINING_DOOMED_REPLICAS: &str = "DrainingDoomedReplicas";
pub const DOOMED_REPLICAS_KEPT_SERVING: &str = "DoomedReplicasKeptServing";
pub const REPLICAS_BACK_IN_SERVICE: &str = "ReplicasBackInService";

/// What serves `component` on healthy nodes in every pool (this pool's fresh count, the other
/// pools' last ones) and what its plan places in all, from its deployment's status.
pub fn elsewhere(
    component: &ComponentKey,
    pool: &str,
    fresh: &BTreeMap<ComponentKey, u32>,
    others: &BTreeMap<String, PoolCapacity>,
    deployments: &[Arc<ModelDeployment>],
) -> Elsewhere {
    let here = fresh.get(component).copied().unwrap_or(0);
    let there: u32 = others
        .iter()
        .filter(|(name, _)| name.as_str() != pool)
        .map(|(_, c)| c.serving.get(component).copied().unwrap_or(0))
        .sum();
    let desired = deployments
        .iter()
        .find(|md| {
            md.namespace().as_deref() == Some(component.namespace.as_str())
                && md.name_any() == component.deployment
        })
        .and_then(|md| md.status.as_ref())
        .and_then(|s| s.components.iter().find(|c| c.name == component.component))
        .map(|c| c.placements.iter().map(|p| p.replicas).sum());
    Elsewhere {
        ready: here.saturating_add(there),
        desired,
    }
}

/// The drain decision for one probe of `pool` (pure; `others`: every pool's last capacity).
pub fn decide_for(
    pool: &str,
    observed: &Observed,
    fresh: &PoolCapacity,
    others: &BTreeMap<String, PoolCapacity>,
    deployments: &[Arc<ModelDeployment>],
    previous: &DrainMemory,
) -> DrainDecision {
    decide(
        &observed.replicas,
        |component| elsewhere(component, pool, &fresh.serving, others, deployments),
        previous,
    )
}

fn event_of(kind: DrainNoteKind) -> (EventType, &'static str) {
    match kind {
        DrainNoteKind::Draining => (EventType::Normal, DRAINING_DOOMED_REPLICAS),
        // Expected while replacements start (make before break); a replacement that cannot
        // start is told by its own pool (PoolShort, ShortfallReplaced).
        DrainNoteKind::KeptServing => (EventType::Normal, DOOMED_REPLICAS_KEPT_SERVING),
        DrainNoteKind::BackInService => (EventType::Normal, REPLICAS_BACK_IN_SERVICE),
    }
}

/// Decides, writes the labels, tells the deployments, and returns the memory to keep. A label
/// that could not be written is decided again next probe (the decision is from what the pods
/// carry), so a failed write is logged, not retried here.
pub async fn drain(
    ctx: &Context,
    cluster: &ClusterClient,
    pool: &str,
    observed: &Observed,
    fresh: &PoolCapacity,
    previous: &DrainMemory,
) -> DrainMemory {
    let deployments = ctx.deployments.state();
    let decision = decide_for(
        pool,
        observed,
        fresh,
        &ctx.capacity.snapshot(),
        &deployments,
        previous,
    );
    let client = cluster.client().await;
    let mut written: BTreeMap<(ComponentKey, bool), u32> = BTreeMap::new();
    for relabel in &decision.relabel {
        match write_label(&client, relabel).await {
            Ok(()) => {
                *written
                    .entry((relabel.component.clone(), relabel.serving))
                    .or_insert(0) += 1
            }
            Err(err) => warn!(pod = %relabel.name, %err, "could not write the serving label"),
        }
    }
    for note in decision.notes {
        // Told only when its labels were written (or it needs none).
        let needs = match note.kind {
            DrainNoteKind::Draining => Some(false),
            DrainNoteKind::BackInService => Some(true),
            DrainNoteKind::KeptServing => None,
        };
        if needs.is_some_and(|serving| !written.contains_key(&(note.component.clone(), serving))) {
            continue;
        }
        let Some(md) = deployments.iter().find(|md| {
            md.namespace().as_deref() == Some(note.component.namespace.as_str())
                && md.name_any() == note.component.deployment
        }) else {
            continue;
        };
        let (type_, reason) = event_of(note.kind);
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.message.chars().take(1000).collect()),
            action: "DrainTraffic".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
            warn!(%err, "could not publish an Event");
        }
    }
    decision.memory
}

/// Sets the pod's serving label (a merge patch of one label: the pod's workload selector does
/// not include it, so its ReplicaSet keeps the pod).
async fn write_label(client: &kube::Client, relabel: &Relabel) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &relabel.namespace);
    let value = if relabel.serving {
        SERVING
    } else {
        NOT_SERVING
    };
    let patch = serde_json::json!({"metadata": {"labels": {SERVING_LABEL: value}}});
    pods.patch(
        &relabel.name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Cloud, ComponentStatus, ModelDeploymentStatus, PlacementStatus};
    use crate::capacity::drain::BoundReplica;
    use crate::capacity::{PoolObservation, PoolSettings, TrackerState, assess};
    use k8s_openapi::jiff::Timestamp;

    fn ranker() -> ComponentKey {
        ComponentKey {
            namespace: "shop".into(),
            deployment: "recs".into(),
            component: "ranker".into(),
        }
    }

    fn deployment(placed: &[(&str, u32)]) -> Arc<ModelDeployment> {
        let mut md: ModelDeployment = serde_yaml_ng::from_str(
            "apiVersion: skybridge.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: recs, namespace: shop}\nspec:\n  model: {source: {uri: \"s3://m/r\", pool: dc}, version: \"1\"}\n  components:\n  - {name: ranker, dataClass: internal, image: \"serve:1\", resources: {gpu: {count: 1, type: l4}}, replicas: {min: 1, max: 9}}\n",
        )
        .unwrap();
        md.status = Some(ModelDeploymentStatus {
            components: vec![ComponentStatus {
                name: "ranker".into(),
                desired_replicas: 9,
                placements: placed
                    .iter()
                    .map(|&(pool, replicas)| PlacementStatus {
                        pool: pool.into(),
                        cloud: Cloud::Public,
                        replicas,
                        ready_replicas: replicas,
                        reason: String::new(),
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        });
        Arc::new(md)
    }

    fn capacity(serving: u32) -> PoolCapacity {
        let assessment = assess(
            &PoolSettings {
                capacity_type: crate::api::CapacityType::Spot,
                node_startup_seconds: None,
                stockout: Default::default(),
            },
            &TrackerState::default(),
            &PoolObservation {
                at: Timestamp::UNIX_EPOCH,
                pending: Vec::new(),
                nodes: Vec::new(),
            },
        );
        PoolCapacity {
            assessment,
            healthy: BTreeMap::new(),
            serving: BTreeMap::from([(ranker(), serving)]),
            bound: BTreeMap::new(),
            awaiting_put_back: BTreeMap::new(),
            drain: DrainMemory::default(),
        }
    }

    #[test]
    fn what_serves_elsewhere_sums_this_pools_fresh_count_and_the_others_last_ones() {
        let others = BTreeMap::from([
            // Its own stale entry is replaced by the fresh count.
            ("spot".to_string(), capacity(7)),
            ("ondemand".to_string(), capacity(2)),
        ]);
        let fresh = BTreeMap::from([(ranker(), 1)]);
        // The plan places 4 (desired 9 is what demand asks; 5 are unplaced).
        let seen = elsewhere(
            &ranker(),
            "spot",
            &fresh,
            &others,
            &[deployment(&[("spot", 2), ("ondemand", 2)])],
        );
        assert_eq!(
            seen,
            Elsewhere {
                ready: 3,
                desired: Some(4)
            }
        );
        // Its deployment unknown: what it wants is unknown, so nothing will leave.
        assert_eq!(
            elsewhere(&ranker(), "spot", &fresh, &others, &[]).desired,
            None
        );
    }

    #[test]
    fn a_doomed_pools_replicas_leave_once_the_other_pools_replacements_serve() {
        let doomed = |name: &str| BoundReplica {
            namespace: "burst".into(),
            name: name.into(),
            component: ranker(),
            node: "spot-a".into(),
            doomed: true,
            ready: true,
            serving_label: Some(SERVING.into()),
        };
        let observed = Observed {
            observation: PoolObservation {
                at: Timestamp::UNIX_EPOCH,
                pending: Vec::new(),
                nodes: Vec::new(),
            },
            healthy: BTreeMap::new(),
            replicas: vec![doomed("r-0"), doomed("r-1")],
        };
        let fresh = capacity(0);
        let md = [deployment(&[("ondemand", 2)])];
        // The replacements on on-demand are not ready yet: both keep serving.
        let waiting = BTreeMap::from([("ondemand".to_string(), capacity(0))]);
        let decision = decide_for(
            "spot",
            &observed,
            &fresh,
            &waiting,
            &md,
            &DrainMemory::default(),
        );
        assert!(decision.relabel.is_empty());
        assert_eq!(
            event_of(decision.notes[0].kind),
            (EventType::Normal, DOOMED_REPLICAS_KEPT_SERVING)
        );
        // Both ready there: both leave.
        let ready = BTreeMap::from([("ondemand".to_string(), capacity(2))]);
        let decision = decide_for("spot", &observed, &fresh, &ready, &md, &decision.memory);
        assert_eq!(decision.relabel.len(), 2);
        assert!(decision.relabel.iter().all(|r| !r.serving));
        assert_eq!(
            event_of(decision.notes[0].kind),
            (EventType::Normal, DRAINING_DOOMED_REPLICAS)
        );
    }
}
