//! The pool's capacity as the tracker sees it (issue #19): each probe's Nodes and Skybridge Pods
//! are assessed by `capacity::assess` against the tracker's previous state; the pool's status
//! gets `Short`, `shortage`, `addableCapacity` and `reclaimingNodes`, and a change is told in an
//! Event and the metrics. Deciding is pure (`track`, `with_capacity`, `notes`); `publish` and
//! `export` write.

use super::NodeCapacity;
use crate::api::{ComputePool, ComputePoolStatus, SHORT_CONDITION};
use crate::capacity::observed::{Observed, PoolCapacity, resumed_state};
use crate::capacity::{
    Assessment, PoolSettings, TrackerState, Transition, addable_capacity, assess,
};
use crate::operator::context::Context;
use crate::operator::kubernetes::conditions::{Decided, merge};
use crate::operator::kubernetes::metrics::PoolLabels;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use tracing::warn;

/// Event reasons on a `ComputePool`.
pub const POOL_SHORT: &str = "PoolShort";
pub const POOL_RECOVERED: &str = "PoolRecovered";
pub const NODE_RECLAIMED: &str = "NodeReclaimed";

/// The tracker's assessment of one observation, from the state it had (`remembered`; after a
/// restart, the state the pool's status records).
pub fn track(
    pool: &ComputePool,
    remembered: Option<TrackerState>,
    observed: &Observed,
) -> PoolCapacity {
    let previous = remembered.unwrap_or_else(|| resumed_state(pool.status.as_ref()));
    PoolCapacity {
        assessment: assess(
            &PoolSettings::of(&pool.spec),
            &previous,
            &observed.observation,
        ),
        healthy: observed.healthy.clone(),
    }
}

/// `status` with the tracker's fields: addable capacity from the ready nodes (`nodes`, when the
/// probe saw them), and `Short`, `shortage`, `reclaimingNodes` from the assessment. Without an
/// assessment (the cluster or its pods could not be read) the pool keeps what its status said:
/// a stockout is not over because nobody could look.
pub fn with_capacity(
    mut status: ComputePoolStatus,
    pool: &ComputePool,
    nodes: Option<&NodeCapacity>,
    assessment: Option<&Assessment>,
    now: Timestamp,
) -> ComputePoolStatus {
    let previous = pool.status.as_ref();
    status.addable_capacity = match nodes {
        Some(nodes) => addable_capacity(&pool.spec, nodes.ready_nodes, nodes.gpus),
        None => previous.and_then(|s| s.addable_capacity.clone()),
    };
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match assessment {
        Some(assessment) => {
            let (value, reason, message) = assessment.short_condition();
            status.conditions.extend(merge(
                previous_conditions,
                vec![Decided::new(
                    SHORT_CONDITION,
                    value == "True",
                    reason,
                    message,
                )],
                pool.metadata.generation,
                now,
            ));
            status.shortage = assessment.shortage_status();
            status.reclaiming_nodes = assessment.reclaiming_nodes.clone();
        }
        None => {
            status.conditions.extend(
                previous_conditions
                    .iter()
                    .filter(|c| c.type_ == SHORT_CONDITION)
                    .cloned(),
            );
            status.shortage = previous.and_then(|s| s.shortage.clone());
            status.reclaiming_nodes = previous
                .map(|s| s.reclaiming_nodes.clone())
                .unwrap_or_default();
        }
    }
    status
}

/// The Events an assessment calls for: the pool going short or recovering, and each node newly
/// about to be reclaimed (`reported`: the nodes the status already listed).
pub fn notes(
    assessment: &Assessment,
    reported: &[String],
) -> Vec<(EventType, &'static str, String)> {
    let mut notes = Vec::new();
    match assessment.transition {
        Some(Transition::BecameShort) => notes.push((
            EventType::Warning,
            POOL_SHORT,
            format!(
                "{}; no new replicas here until it recovers, its shortfall goes to the next eligible pool",
                assessment.reasons.join("; ")
            ),
        )),
        Some(Transition::Recovered) => notes.push((
            EventType::Normal,
            POOL_RECOVERED,
            assessment.reasons.join("; "),
        )),
        None => {}
    }
    for node in &assessment.reclaiming_nodes {
        if reported.contains(node) {
            continue;
        }
        let why = assessment
            .reasons
            .iter()
            .find(|r| r.starts_with(&format!("node {node} ")))
            .cloned()
            .unwrap_or_else(|| format!("node {node} is about to be reclaimed"));
        notes.push((EventType::Warning, NODE_RECLAIMED, why));
    }
    notes
}

/// Sets the pool's capacity gauges and counts a stockout.
pub fn export(ctx: &Context, labels: &PoolLabels, assessment: &Assessment) {
    let metrics = &ctx.metrics;
    metrics
        .pool_short
        .get_or_create(labels)
        .set(i64::from(assessment.is_short()));
    metrics
        .pool_shortfall
        .get_or_create(labels)
        .set(i64::from(assessment.shortfall_replicas()));
    metrics
        .pool_reclaiming
        .get_or_create(labels)
        .set(i64::from(assessment.doomed_replicas()));
    if assessment.transition == Some(Transition::BecameShort) {
        metrics.pool_stockouts.get_or_create(labels).inc();
    }
}

/// Publishes the Events `notes` decided (the Event API reports cluster-scoped objects in
/// `default`).
pub async fn publish(
    ctx: &Context,
    pool: &ComputePool,
    notes: Vec<(EventType, &'static str, String)>,
) {
    for (type_, reason, note) in notes {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "TrackCapacity".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
            warn!(%err, "could not publish an Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::observed::observe_pool;
    use crate::capacity::{NodeObservation, PendingCause, PendingReplica};
    use crate::planner::ComponentKey;
    use std::collections::BTreeMap;

    fn spot_pool() -> ComputePool {
        serde_yaml_ng::from_str(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: spot, generation: 1}\nspec: {cloud: public, provider: aws, region: r, capacityType: Spot, capacity: {gpu: {type: l4, count: 16}}, elastic: {autoscaler: Karpenter, nodeStartupSeconds: 60, maxNodes: 4, gpusPerNode: 4}, stockout: {unschedulableSeconds: 10, backoffSeconds: 30, recoverySeconds: 20}}\n",
        )
        .unwrap()
    }

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn ranker() -> ComponentKey {
        ComponentKey {
            namespace: "shop".into(),
            deployment: "recs".into(),
            component: "ranker".into(),
        }
    }

    fn observed(at: i64, stuck_since: Option<i64>, doomed_node: bool) -> Observed {
        let mut seen = observe_pool(t(at), &[], &[], |_| None);
        if let Some(since) = stuck_since {
            seen.observation.pending.push(PendingReplica {
                component: ranker(),
                since: t(since),
                cause: PendingCause::NoNodeComing,
            });
        }
        if doomed_node {
            seen.observation.nodes.push(NodeObservation {
                name: "spot-a".into(),
                reclamation: crate::capacity::signals::taint_signal("karpenter.sh/disrupted", None),
                replicas: BTreeMap::from([(ranker(), 2)]),
            });
        }
        seen
    }

    fn condition<'a>(
        status: &'a ComputePoolStatus,
        type_: &str,
    ) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        status.conditions.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn a_stockout_is_written_told_once_and_its_recovery_too() {
        let mut pool = spot_pool();
        // A replica stuck for 15 s: past the pool's 10 s (no node is coming).
        let tracked = track(&pool, None, &observed(15, Some(0), false));
        assert!(tracked.assessment.is_short());
        let nodes = NodeCapacity {
            ready_nodes: 1,
            gpus: 4,
            ..Default::default()
        };
        let status = with_capacity(
            ComputePoolStatus::default(),
            &pool,
            Some(&nodes),
            Some(&tracked.assessment),
            t(15),
        );
        let short = condition(&status, SHORT_CONDITION).unwrap();
        assert_eq!(
            (short.status.as_str(), short.reason.as_str()),
            ("True", "Stockout")
        );
        assert_eq!(status.shortage.as_ref().unwrap().shortfall_replicas, 1);
        let addable = status.addable_capacity.as_ref().unwrap();
        assert_eq!(
            (addable.gpus, addable.nodes, addable.after_seconds),
            (12, Some(3), 60)
        );
        let told = notes(&tracked.assessment, &[]);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1, POOL_SHORT);
        assert_eq!(told[0].0, EventType::Warning);

        // Still short a moment later: nothing more to tell.
        pool.status = Some(status);
        let again = track(
            &pool,
            Some(tracked.assessment.state.clone()),
            &observed(20, None, false),
        );
        assert!(again.assessment.is_short());
        assert!(notes(&again.assessment, &[]).is_empty());

        // Back-off (30 s) over and 20 s clear: recovered, told once, Short=False.
        let later = track(
            &pool,
            Some(again.assessment.state.clone()),
            &observed(45, None, false),
        );
        let recovered = track(
            &pool,
            Some(later.assessment.state.clone()),
            &observed(65, None, false),
        );
        assert!(!recovered.assessment.is_short());
        let told = notes(&recovered.assessment, &[]);
        assert_eq!(told.len(), 1);
        assert_eq!((told[0].0, told[0].1), (EventType::Normal, POOL_RECOVERED));
        let status = with_capacity(
            ComputePoolStatus::default(),
            &pool,
            Some(&nodes),
            Some(&recovered.assessment),
            t(65),
        );
        assert_eq!(condition(&status, SHORT_CONDITION).unwrap().status, "False");
        assert_eq!(status.shortage, None);
    }

    #[test]
    fn a_restarted_operator_resumes_the_shortage_its_status_records() {
        let mut pool = spot_pool();
        let tracked = track(&pool, None, &observed(15, Some(0), false));
        pool.status = Some(with_capacity(
            ComputePoolStatus::default(),
            &pool,
            None,
            Some(&tracked.assessment),
            t(15),
        ));
        // No memory (a new leader): the status's shortage holds through the back-off.
        let resumed = track(&pool, None, &observed(25, None, false));
        assert!(resumed.assessment.is_short());
        assert_eq!(resumed.assessment.transition, None, "not a new stockout");
    }

    #[test]
    fn without_an_assessment_the_pool_keeps_what_its_status_said() {
        let mut pool = spot_pool();
        let tracked = track(&pool, None, &observed(15, Some(0), true));
        pool.status = Some(with_capacity(
            ComputePoolStatus::default(),
            &pool,
            None,
            Some(&tracked.assessment),
            t(15),
        ));
        // The pods could not be listed: nothing is known, nothing changes.
        let status = with_capacity(ComputePoolStatus::default(), &pool, None, None, t(30));
        let before = pool.status.as_ref().unwrap();
        assert_eq!(
            condition(&status, SHORT_CONDITION),
            condition(before, SHORT_CONDITION)
        );
        assert_eq!(status.shortage, before.shortage);
        assert_eq!(status.reclaiming_nodes, ["spot-a"]);
    }

    #[test]
    fn a_node_about_to_be_reclaimed_is_told_once() {
        let pool = spot_pool();
        let tracked = track(&pool, None, &observed(0, None, true));
        assert!(!tracked.assessment.is_short());
        let told = notes(&tracked.assessment, &[]);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].1, NODE_RECLAIMED);
        assert!(
            told[0].2.contains("spot-a") && told[0].2.contains("Karpenter"),
            "{}",
            told[0].2
        );
        assert!(notes(&tracked.assessment, &["spot-a".to_string()]).is_empty());
        let status = with_capacity(
            ComputePoolStatus::default(),
            &pool,
            None,
            Some(&tracked.assessment),
            t(0),
        );
        assert_eq!(status.reclaiming_nodes, ["spot-a"]);
        assert_eq!(condition(&status, SHORT_CONDITION).unwrap().status, "False");
    }

    #[test]
    fn a_fixed_pool_has_no_addable_capacity() {
        let mut pool = spot_pool();
        pool.spec.elastic = None;
        let status = with_capacity(
            ComputePoolStatus::default(),
            &pool,
            Some(&NodeCapacity::default()),
            None,
            t(0),
        );
        assert_eq!(status.addable_capacity, None);
    }
}
