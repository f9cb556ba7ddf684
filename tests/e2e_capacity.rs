//! End to end: public capacity as it really is (issue #19). Harness clusters with a spot and an
//! on-demand pool in the public cluster, the real operator. Stockouts and reclamations are the
//! harness's (`/harness/capacity`, `/harness/nodes/<name>/reclaim`); what happened is read from
//! watch histories of the children, recorded from before the change.

mod e2e_support;

use e2e_support::capacity::*;
use e2e_support::traffic::{History, deployments};
use e2e_support::*;
use kube_harness::NodeSpec;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

const BURST_NAMESPACE: &str = "burst";
/// The operator's `--period-seconds` in these tests (`Operator::start`).
const PERIOD: Duration = Duration::from_secs(1);

/// Maps the test's `Instant`s to wall-clock time, to compare arrivals with the times the
/// operator and the harness write into objects.
struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.wall + at.duration_since(self.instant)
    }
}

fn wall_of(timestamp: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(timestamp.0.as_second() as u64)
}

/// (arrival, pool, spec replicas, ready replicas, deleted) of each version of `component`'s
/// children in the history.
fn child_versions(history: &History, deployment: &str) -> Vec<(Instant, String, i64, i64, bool)> {
    history
        .versions()
        .into_iter()
        .filter(|s| s.object["metadata"]["labels"]["skybridge.io/deployment"] == deployment)
        .map(|s| {
            let object: &Value = &s.object;
            (
                s.at,
                object["metadata"]["labels"]["skybridge.io/pool"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object["spec"]["replicas"].as_i64().unwrap_or(0),
                object["status"]["readyReplicas"].as_i64().unwrap_or(0),
                s.deleted,
            )
        })
        .collect()
}

/// Earliest `PodScheduled=False/Unschedulable` transition among the pods of `deployment` in
/// `cluster`'s `namespace`, once there is one.
async fn first_unschedulable(
    cluster: &TestCluster,
    namespace: &str,
    deployment: &str,
) -> SystemTime {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(cluster.client().expect("client"), namespace);
    eventually("an unschedulable replica", || async {
        let listed = pods
            .list(
                &kube::api::ListParams::default()
                    .labels(&format!("skybridge.io/deployment={deployment}")),
            )
            .await
            .ok()?;
        listed
            .items
            .iter()
            .filter_map(|pod| {
                let condition = pod
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
                (condition.reason.as_deref() == Some("Unschedulable"))
                    .then(|| condition.last_transition_time.as_ref().map(wall_of))
                    .flatten()
            })
            .min()
    })
    .await
}

/// (a) and (c): a stockout on the spot pool moves the shortfall to the on-demand pool within
/// the pool's `unschedulableSeconds` plus two reconcile periods; the spot pool gets no new
/// replica while short; after the stockout ends, replicas come back to spot only once the
/// back-off and the recovery hysteresis have passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_stockout_moves_the_shortfall_to_on_demand_and_recovery_brings_it_back() {
    let estate = Estate::start(0, 8).await;
    if !estate.harness_only(
        "a_spot_stockout_moves_the_shortfall_to_on_demand_and_recovery_brings_it_back",
    ) {
        return;
    }
    estate.apply_capacity_pools(8);
    let _operator = Operator::start(&estate).await;
    let clock = Clock::now();
    let public = History::start(&estate.public, deployments(), BURST_NAMESPACE).await;
    estate.apply(&deployment_yaml("ranker", "internal", 1, 1, ""));
    let md = wait_for(&estate, "ranker", "ranker Ready on spot", |md| {
        is_true(md, "Ready") && replicas_on(md, "spot") == 1
    })
    .await;
    assert_eq!(
        replicas_on(&md, "ondemand"),
        0,
        "spot is the cheaper public pool"
    );

    // Spot runs out; the ranker wants 4: the spot replica keeps running, new ones cannot start.
    set_stockout(&estate.public, "cloud-l4").await;
    patch_spec(
        &estate,
        "ranker",
        serde_json::json!({"components": [{"name": "ranker", "dataClass": "internal",
            "image": "pytorch/torchserve:0.12.0-gpu",
            "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "1", "memory": "1Gi"},
            "replicas": {"min": 4, "max": 4}}]}),
    )
    .await;
    let stuck_since = first_unschedulable(&estate.public, BURST_NAMESPACE, "ranker").await;
    let pool = estate
        .wait_for_pool("spot", "spot pool Short", |p| short(p) == Some(true))
        .await;
    let shortage = pool
        .status
        .as_ref()
        .unwrap()
        .shortage
        .clone()
        .expect("status.shortage");
    let md = wait_for(&estate, "ranker", "shortfall on on-demand", |md| {
        is_true(md, "Ready") && replicas_on(md, "spot") == 1 && replicas_on(md, "ondemand") == 3
    })
    .await;
    assert_eq!(
        md.status.as_ref().unwrap().components[0].unplaced_replicas,
        0
    );
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "ShortfallReplaced").await;
    let went_short = event_with_reason(&estate, "default", "spot", "PoolShort").await;
    let note = went_short.note.unwrap_or_default();
    assert!(
        note.contains(&format!(
            "unschedulable for more than {UNSCHEDULABLE_SECONDS}s"
        )),
        "{note}"
    );

    // When did the on-demand pool get its 3 replicas? At most the pool's limit plus two
    // reconcile periods after the replicas became unschedulable (one to mark the pool short,
    // one to re-plan); +1 s for the second resolution of the pods' condition time.
    let moved = child_versions(&public, "ranker")
        .into_iter()
        .find(|(_, pool, replicas, _, deleted)| pool == "ondemand" && *replicas == 3 && !deleted)
        .map(|(at, ..)| clock.wall(at))
        .expect("the on-demand child with 3 replicas is in the history");
    let limit = Duration::from_secs(UNSCHEDULABLE_SECONDS) + 2 * PERIOD + Duration::from_secs(1);
    let took = moved.duration_since(stuck_since).unwrap_or_default();
    eprintln!(
        "FIGURE stockout: shortfall on on-demand {:.1}s after the replicas became unschedulable (limit {}s + 2 periods)",
        took.as_secs_f64(),
        UNSCHEDULABLE_SECONDS
    );
    assert!(
        took <= limit,
        "shortfall moved after {took:?}, more than {limit:?}"
    );
    assert!(
        took >= Duration::from_secs(UNSCHEDULABLE_SECONDS) - Duration::from_secs(1),
        "moved after {took:?}, before the pool's {UNSCHEDULABLE_SECONDS}s limit"
    );

    // The stockout ends; the pool comes back after its back-off and recovery, not before.
    lift_stockouts(&estate.public).await;
    let md = wait_for(&estate, "ranker", "replicas back on spot", |md| {
        is_true(md, "Ready")
            && replicas_on(md, "spot") > 1
            && replicas_on(md, "spot") + replicas_on(md, "ondemand") == 4
    })
    .await;
    assert_eq!(
        md.status.as_ref().unwrap().components[0].unplaced_replicas,
        0
    );
    let pool = estate
        .wait_for_pool("spot", "spot pool recovered", |p| short(p) == Some(false))
        .await;
    assert!(pool.status.as_ref().unwrap().shortage.is_none());
    event_with_reason(&estate, "default", "spot", "PoolRecovered").await;
    let eligible = wall_of(&shortage.backoff_until) + Duration::from_secs(RECOVERY_SECONDS);
    let versions = child_versions(&public, "ranker");
    let spot: Vec<_> = versions
        .iter()
        .filter(|(_, pool, ..)| pool == "spot")
        .collect();
    // After the shortfall moved (spot back to its one running replica) spot grows again only
    // once the pool may be eligible.
    let settled = spot
        .iter()
        .position(|(at, _, replicas, ..)| {
            *replicas == 1 && clock.wall(*at) >= moved - Duration::from_secs(1)
        })
        .expect("spot scaled back to its running replica");
    let regrown = spot[settled..]
        .iter()
        .find(|(_, _, replicas, ..)| *replicas > 1)
        .expect("spot grows again after recovery");
    // The eligibility time is truncated to the second in the status: -1 s.
    assert!(
        clock.wall(regrown.0) + Duration::from_secs(1) >= eligible,
        "spot took replicas back {:?} before the end of the hysteresis",
        eligible
            .duration_since(clock.wall(regrown.0))
            .unwrap_or_default()
    );
}

/// (b): a node tainted for reclamation gets its replicas' replacements ready elsewhere before it
/// is removed: the component's ready replicas (summed over its children, from one watch of the
/// public cluster) never drop below what it wants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_spot_node_gets_its_replacements_ready_before_it_goes() {
    let estate = Estate::start(0, 2).await;
    if !estate.harness_only("a_reclaimed_spot_node_gets_its_replacements_ready_before_it_goes") {
        return;
    }
    // Two spot nodes of 2 GPUs; on-demand has room for the replacements.
    estate
        .public
        .upsert_node(
            NodeSpec::new("cloud-gpu-1")
                .gpus(2)
                .label(POOL_LABEL, "cloud-l4"),
        )
        .expect("second spot node");
    estate.apply_capacity_pools(8);
    let _operator = Operator::start(&estate).await;
    let clock = Clock::now();
    estate.apply(&deployment_yaml("ranker", "internal", 4, 4, ""));
    let md = wait_for(&estate, "ranker", "ranker Ready", |md| {
        is_true(md, "Ready") && replicas_on(md, "spot") + replicas_on(md, "ondemand") == 4
    })
    .await;
    let on_spot = replicas_on(&md, "spot");
    assert!(on_spot >= 2, "spot first: {on_spot} there");
    let public = History::start(&estate.public, deployments(), BURST_NAMESPACE).await;
    let slices = History::start(&estate.public, endpoint_slices(), BURST_NAMESPACE).await;

    // The node with the most ranker replicas is reclaimed with 8 s notice.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(estate.public.client().expect("client"), BURST_NAMESPACE);
    let listed = pods.list(&Default::default()).await.expect("pods");
    let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
    for pod in &listed.items {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone())
            && node.starts_with("cloud-gpu")
        {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let (doomed, doomed_replicas) = per_node
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(node, n)| (node.clone(), *n))
        .expect("ranker replicas on a spot node");
    let doomed_pods: Vec<String> = listed
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(doomed.as_str()))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let reclaimed_at = Instant::now();
    reclaim(&estate.public, &doomed, 8_000).await;
    let pool = estate
        .wait_for_pool("spot", "spot lists the node reclaiming", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reclaiming_nodes == [doomed.clone()])
        })
        .await;
    assert_eq!(short(&pool), Some(false), "a reclamation is no stockout");
    event_with_reason(&estate, "default", "spot", "NodeReclaimed").await;
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "ReplacingAhead").await;

    // After the node is gone, the ranker is whole again, without the doomed replicas.
    estate
        .wait_for_pool("spot", "the node gone from the pool", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reclaiming_nodes.is_empty())
        })
        .await;
    // Replacements go to the cheapest pool with room now: the other spot node if it has
    // room, else on-demand.
    wait_for(
        &estate,
        "ranker",
        "ranker whole after the node went",
        |md| is_true(md, "Ready") && replicas_on(md, "spot") + replicas_on(md, "ondemand") == 4,
    )
    .await;

    // From the watch history: ready replicas summed over the ranker's children, version by
    // version, never below 4 from the reclamation on; and the doomed replicas and their
    // replacements were ready together before the node went.
    let mut ready: BTreeMap<String, i64> = BTreeMap::new();
    let mut lowest = i64::MAX;
    let mut highest_before_removal = 0;
    let removal = reclaimed_at + Duration::from_millis(8_000);
    for (at, pool, _, ready_replicas, deleted) in child_versions(&public, "ranker") {
        ready.insert(pool.clone(), if deleted { 0 } else { ready_replicas });
        let total: i64 = ready.values().sum();
        if at >= reclaimed_at {
            lowest = lowest.min(total);
        }
        if at < removal {
            highest_before_removal = highest_before_removal.max(total);
        }
    }
    eprintln!(
        "FIGURE reclamation: lowest ready replicas {lowest} of 4 during an 8 s notice ({doomed_replicas} on the node), {highest_before_removal} ready at most before it went; history from {:?}",
        clock.wall(reclaimed_at)
    );
    assert!(
        highest_before_removal >= 4 + i64::from(doomed_replicas),
        "at most {highest_before_removal} ready before the node went: no replacement was ready ahead"
    );
    assert!(lowest >= 4, "ready replicas dropped to {lowest}");

    // Traffic: the doomed pods left the Service's endpoints before the node went (once their
    // replacements were ready), and its ready endpoints never dropped below 4.
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "DrainingDoomedReplicas").await;
    let versions = endpoints_of(&slices, "ranker-ranker");
    let drained_at = versions
        .iter()
        .find(|(at, endpoints)| {
            *at >= reclaimed_at && doomed_pods.iter().all(|p| !endpoints.contains_key(p))
        })
        .map(|(at, _)| *at)
        .expect("a version of the endpoints without the doomed pods");
    assert!(
        drained_at < removal,
        "the doomed pods left the endpoints only {:?} after the reclamation, when the node was already gone",
        drained_at.duration_since(reclaimed_at)
    );
    let mut lowest_ready = usize::MAX;
    for (at, endpoints) in &versions {
        if *at >= reclaimed_at {
            lowest_ready = lowest_ready.min(endpoints.values().filter(|r| **r).count());
        }
    }
    eprintln!(
        "FIGURE drain: doomed pods {doomed_pods:?} out of the endpoints {:?} after the reclamation (8 s notice); lowest ready endpoints {lowest_ready} of 4",
        drained_at.duration_since(reclaimed_at)
    );
    assert!(
        lowest_ready >= 4,
        "ready endpoints dropped to {lowest_ready}"
    );
}

/// (b, failure injected): the replacements of a reclaimed node's replicas cannot start (the
/// spot pool has no other node, the on-demand pool is out of stock): the doomed pods keep
/// serving until the node goes (serving on a doomed node beats serving nothing), and the
/// deployment is told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doomed_replicas_keep_serving_until_their_node_goes_when_no_replacement_can_start() {
    let estate = Estate::start(0, 2).await;
    if !estate.harness_only(
        "doomed_replicas_keep_serving_until_their_node_goes_when_no_replacement_can_start",
    ) {
        return;
    }
    estate.apply_capacity_pools(8);
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 4, 4, ""));
    let md = wait_for(&estate, "ranker", "ranker Ready", |md| {
        is_true(md, "Ready") && replicas_on(md, "spot") + replicas_on(md, "ondemand") == 4
    })
    .await;
    let on_spot = replicas_on(&md, "spot");
    assert!(on_spot >= 1, "spot first: {on_spot} there");
    let slices = History::start(&estate.public, endpoint_slices(), BURST_NAMESPACE).await;
    set_stockout(&estate.public, ON_DEMAND_NODES).await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(estate.public.client().expect("client"), BURST_NAMESPACE);
    let listed = pods.list(&Default::default()).await.expect("pods");
    let doomed_pods: Vec<String> = listed
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("cloud-gpu-0"))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(doomed_pods.len() as u32, on_spot, "{listed:?}");
    let reclaimed_at = Instant::now();
    reclaim(&estate.public, "cloud-gpu-0", 8_000).await;
    event_with_reason(
        &estate,
        APP_NAMESPACE,
        "ranker",
        "DoomedReplicasKeptServing",
    )
    .await;
    // The replacements are placed on on-demand, where they cannot start.
    wait_for(
        &estate,
        "ranker",
        "replacements placed on on-demand",
        |md| replicas_on(md, "ondemand") == 4,
    )
    .await;
    estate
        .wait_for_pool("spot", "the node gone from the pool", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reclaiming_nodes.is_empty())
        })
        .await;
    let removal = reclaimed_at + Duration::from_millis(8_000);
    let versions = endpoints_of(&slices, "ranker-ranker");
    let before_removal: Vec<_> = versions.iter().filter(|(at, _)| *at < removal).collect();
    assert!(
        !before_removal.is_empty(),
        "the history saw the endpoints before the node went"
    );
    for (at, endpoints) in before_removal {
        assert!(
            doomed_pods.iter().all(|p| endpoints.get(p) == Some(&true)),
            "{:?} after the reclamation a doomed pod was out of the endpoints with no replacement ready: {endpoints:?}",
            at.saturating_duration_since(reclaimed_at)
        );
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(estate.hub_client(), APP_NAMESPACE);
    let told = events.list(&Default::default()).await.expect("events");
    assert!(
        told.items
            .iter()
            .all(|e| e.reason.as_deref() != Some("DrainingDoomedReplicas")),
        "nothing was drained"
    );
}

/// (d): a sensitive component never goes public when its private pool is out of stock: its
/// shortfall stays unplaced, with a reason, and no public child of it ever appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_stockout_never_sends_a_sensitive_component_public() {
    let estate = Estate::start(8, 8).await;
    if !estate.harness_only("a_private_stockout_never_sends_a_sensitive_component_public") {
        return;
    }
    estate.apply_capacity_pools(8);
    let _operator = Operator::start(&estate).await;
    let public = History::start(&estate.public, deployments(), BURST_NAMESPACE).await;
    estate.apply(&deployment_yaml("encoder", "sensitive", 2, 2, ""));
    estate.apply(&deployment_yaml("ranker", "internal", 2, 2, ""));
    wait_for(&estate, "encoder", "encoder Ready on private", |md| {
        is_true(md, "Ready") && replicas_on(md, "dc1-l4") == 2
    })
    .await;
    wait_for(&estate, "ranker", "ranker Ready on private", |md| {
        is_true(md, "Ready") && replicas_on(md, "dc1-l4") == 2
    })
    .await;

    set_stockout(&estate.private, "dc1-l4").await;
    for name in ["encoder", "ranker"] {
        let class = if name == "encoder" {
            "sensitive"
        } else {
            "internal"
        };
        patch_spec(
            &estate,
            name,
            serde_json::json!({"components": [{"name": "ranker", "dataClass": class,
                "image": "pytorch/torchserve:0.12.0-gpu",
                "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "1", "memory": "1Gi"},
                "replicas": {"min": 4, "max": 4}}]}),
        )
        .await;
    }
    estate
        .wait_for_pool("dc1-l4", "private pool Short", |p| short(p) == Some(true))
        .await;
    let encoder = wait_for(&estate, "encoder", "encoder's shortfall unplaced", |md| {
        md.status.as_ref().is_some_and(|s| {
            s.components[0].unplaced_replicas == 2
                && s.components[0]
                    .placements
                    .iter()
                    .all(|p| p.pool == "dc1-l4")
        }) && replicas_on(md, "dc1-l4") == 2
    })
    .await;
    let reason = encoder.status.as_ref().unwrap().components[0]
        .unplaced_reason
        .clone()
        .unwrap_or_default();
    assert!(
        reason.contains("short"),
        "the reason names the stockout: {reason}"
    );
    // The internal ranker, short of the same pool, bursts its shortfall.
    wait_for(&estate, "ranker", "ranker's shortfall public", |md| {
        replicas_on(md, "dc1-l4") == 2 && replicas_on(md, "spot") + replicas_on(md, "ondemand") == 2
    })
    .await;
    // Hold the stockout through another back-off: still nothing of the encoder public.
    tokio::time::sleep(Duration::from_secs(BACKOFF_SECONDS)).await;
    let versions = public.versions();
    assert!(
        versions
            .iter()
            .all(|s| s.object["metadata"]["labels"]["skybridge.io/deployment"] != "encoder"),
        "an encoder child appeared in the public cluster"
    );
    assert!(
        versions
            .iter()
            .any(|s| s.object["metadata"]["labels"]["skybridge.io/deployment"] == "ranker"),
        "the history saw the ranker's public children, so it would have seen the encoder's"
    );
    let encoder = estate.deployments_api().get("encoder").await.unwrap();
    assert_eq!(
        replicas_on(&encoder, "spot") + replicas_on(&encoder, "ondemand"),
        0
    );
}

/// "No node coming": an elastic spot pool whose autoscaler says it will add no node
/// (cluster-autoscaler's `NotTriggerScaleUp` on the pending replicas) is short within its
/// `unschedulableSeconds` plus two reconcile periods, not after the pool's 10-minute node
/// start-up on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elastic_pool_whose_autoscaler_adds_no_node_is_short_without_waiting_the_start_up() {
    let estate = Estate::start(0, 1).await;
    if !estate.harness_only(
        "an_elastic_pool_whose_autoscaler_adds_no_node_is_short_without_waiting_the_start_up",
    ) {
        return;
    }
    // On-demand has no GPU: the ranker's replicas beyond spot's one ready GPU wait for spot's
    // nodes.
    estate.apply_capacity_pools(0);
    estate.make_spot_elastic(600);
    set_autoscaler_adds_no_node(&estate.public).await;
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 3, 3, ""));
    let stuck_since = first_unschedulable(&estate.public, BURST_NAMESPACE, "ranker").await;
    let pool = estate
        .wait_for_pool("spot", "spot pool Short", |p| short(p) == Some(true))
        .await;
    let shortage = pool
        .status
        .as_ref()
        .unwrap()
        .shortage
        .clone()
        .expect("status.shortage");
    let went_short = event_with_reason(&estate, "default", "spot", "PoolShort").await;
    let note = went_short.note.unwrap_or_default();
    assert!(
        note.contains("the autoscaler said no node is coming: ")
            && !note.contains("the autoscaler said no node is coming: 0"),
        "{note}"
    );
    // The pool's limit plus two reconcile periods (one to see the Event, one to mark), +1 s for
    // the second resolution of the times: nowhere near the 600 s start-up.
    let took = wall_of(&shortage.since)
        .duration_since(stuck_since)
        .unwrap_or_default();
    let limit = Duration::from_secs(UNSCHEDULABLE_SECONDS) + 2 * PERIOD + Duration::from_secs(1);
    eprintln!(
        "FIGURE no node coming: spot short {took:?} after its replicas became unschedulable (limit {limit:?}; node start-up 600 s)"
    );
    assert!(took <= limit, "short only after {took:?}");
    // Its replicas are placed anew (nowhere to go here: unplaced, with the stockout as reason).
    wait_for(&estate, "ranker", "the shortfall taken off spot", |md| {
        replicas_on(md, "spot") == 1
    })
    .await;
}

/// A reclamation withdrawn after the doomed replicas were drained (a rebalance recommendation
/// that passed): the node stays, and no replica of it stays out of the Service's endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_reclamation_puts_the_drained_replicas_back_into_service() {
    cancelled_reclamation(
        "a_cancelled_reclamation_puts_the_drained_replicas_back_into_service",
        None,
    )
    .await;
}

/// The same, with the put-back failing for a while (the Pod patches answer 500): no workload of
/// the component scales in while replicas wait out of the endpoints, so the ready endpoints
/// never drop, whatever the order of the two controllers' writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_workload_scales_in_while_drained_replicas_wait_to_be_put_back() {
    cancelled_reclamation(
        "no_workload_scales_in_while_drained_replicas_wait_to_be_put_back",
        Some(Duration::from_secs(4)),
    )
    .await;
}

async fn cancelled_reclamation(test: &str, put_back_fails_for: Option<Duration>) {
    let estate = Estate::start(0, 2).await;
    if !estate.harness_only(test) {
        return;
    }
    estate
        .public
        .upsert_node(
            NodeSpec::new("cloud-gpu-1")
                .gpus(2)
                .label(POOL_LABEL, "cloud-l4"),
        )
        .expect("second spot node");
    estate.apply_capacity_pools(8);
    let _operator = Operator::start(&estate).await;
    estate.apply(&deployment_yaml("ranker", "internal", 4, 4, ""));
    wait_for(&estate, "ranker", "ranker Ready", |md| {
        is_true(md, "Ready") && replicas_on(md, "spot") + replicas_on(md, "ondemand") == 4
    })
    .await;
    let slices = History::start(&estate.public, endpoint_slices(), BURST_NAMESPACE).await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(estate.public.client().expect("client"), BURST_NAMESPACE);
    let listed = pods.list(&Default::default()).await.expect("pods");
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pod in &listed.items {
        if let (Some(node), Some(name)) = (
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            pod.metadata.name.clone(),
        ) && node.starts_with("cloud-gpu")
        {
            per_node.entry(node).or_default().push(name);
        }
    }
    let (doomed, doomed_pods) = per_node
        .into_iter()
        .max_by_key(|(_, p)| p.len())
        .expect("ranker replicas on a spot node");
    // A long notice: the replicas are drained well before it would end.
    let reclaimed_at = Instant::now();
    reclaim(&estate.public, &doomed, 120_000).await;
    event_with_reason(&estate, APP_NAMESPACE, "ranker", "DrainingDoomedReplicas").await;
    let serving = |pod: &k8s_openapi::api::core::v1::Pod| {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("skybridge.io/serving"))
            .cloned()
    };
    eventually("the doomed pods labelled out", || async {
        let listed = pods.list(&Default::default()).await.ok()?;
        listed
            .items
            .iter()
            .filter(|p| doomed_pods.contains(p.metadata.name.as_ref().unwrap()))
            .all(|p| serving(p).as_deref() == Some("false"))
            .then_some(())
    })
    .await;

    if let Some(failing) = put_back_fails_for {
        fail_pod_patches(&estate.public).await;
        cancel_reclaim(&estate.public, &doomed).await;
        tokio::time::sleep(failing).await;
        let still_out = pods
            .list(&Default::default())
            .await
            .expect("pods")
            .items
            .iter()
            .filter(|p| serving(p).as_deref() == Some("false"))
            .count();
        assert!(still_out > 0, "the fault kept no replica out of service");
        clear_faults(&estate.public).await;
    } else {
        cancel_reclaim(&estate.public, &doomed).await;
    }
    estate
        .wait_for_pool("spot", "no node reclaiming", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reclaiming_nodes.is_empty())
        })
        .await;
    // Every replica left bound to a node is in service again, and the ready endpoints are whole.
    let left = eventually("every replica back in service", || async {
        let listed = pods.list(&Default::default()).await.ok()?;
        let bound: Vec<_> = listed
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .collect();
        let ready_endpoints = endpoints_of(&slices, "ranker-ranker")
            .last()
            .map_or(0, |(_, e)| e.values().filter(|r| **r).count());
        (bound.iter().all(|p| serving(p).as_deref() == Some("true")) && ready_endpoints >= 4).then(
            || {
                bound
                    .iter()
                    .filter_map(|p| p.metadata.name.clone())
                    .collect::<Vec<_>>()
            },
        )
    })
    .await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(estate.public.client().expect("client"));
    assert!(nodes.get(&doomed).await.is_ok(), "the node stayed");
    if left.iter().any(|p| doomed_pods.contains(p)) {
        // A drained replica survived the workload's scale-back: it was put back, and told.
        event_with_reason(&estate, APP_NAMESPACE, "ranker", "ReplicasBackInService").await;
    }
    let mut lowest_ready = usize::MAX;
    let history = endpoints_of(&slices, "ranker-ranker");
    for (at, endpoints) in &history {
        if *at >= reclaimed_at {
            lowest_ready = lowest_ready.min(endpoints.values().filter(|r| **r).count());
        }
    }
    assert!(
        lowest_ready >= 4,
        "ready endpoints dropped to {lowest_ready}: {:#?}",
        history
            .iter()
            .map(|(at, e)| (at.saturating_duration_since(reclaimed_at), e))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "FIGURE cancelled reclamation: doomed {doomed_pods:?}, left {left:?}, lowest ready endpoints {lowest_ready}"
    );
}
