//! End to end: traffic follows the replicas. Harness clusters with the Gateway API and MCS
//! stand-ins, the real operator; every assertion is over the watch histories of the route (in
//! the private, home cluster) and of the public cluster's Deployments, recorded from before the
//! deployment exists.

mod e2e_support;

use e2e_support::traffic::*;
use e2e_support::*;
use kube_harness::NodeSpec;
use serde_json::Value;
use skybridge::api::BackendState;
use std::time::Duration;

/// Drain period of the tests' deployments: long enough to see, short for CI.
const DRAIN_SECONDS: u32 = 3;

/// The public Deployment's versions: (arrival, ready replicas, spec replicas, deleted).
fn public_versions(history: &History) -> Vec<(std::time::Instant, i64, i64, bool)> {
    history
        .versions()
        .into_iter()
        .map(|s| {
            (
                s.at,
                s.object["status"]["readyReplicas"].as_i64().unwrap_or(0),
                s.object["spec"]["replicas"].as_i64().unwrap_or(0),
                s.deleted,
            )
        })
        .collect()
}

fn route_versions(history: &History) -> Vec<(std::time::Instant, Value)> {
    history
        .versions()
        .into_iter()
        .filter(|s| !s.deleted)
        .map(|s| (s.at, s.object))
        .collect()
}

/// Bursts to the public pool, then fails back:
/// 1. no route version ever gives weight to the public backend before its replicas are ready;
/// 2. on failback its weight reaches 0 and stays 0 for `drainSeconds` before any public replica
///    goes;
/// 5. an annotation and a label another field manager applied to the route survive the
///    operator's rewrites (server-side apply);
/// 6. the exported Service of the public pool is never deleted while the pool serves (the
///    workload sweep does not take the traffic layer's objects for orphans).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_routes_only_ready_replicas_and_failback_drains_before_removal() {
    let (estate, _set) = start_traffic_estate(2, 8, Duration::from_millis(1500)).await;
    let _operator = Operator::start(&estate).await;
    let routes = History::start(&estate.private, http_routes(), APP_NAMESPACE).await;
    let public = History::start(&estate.public, deployments(), BURST_NAMESPACE).await;
    let public_services = History::start(&estate.public, services(), BURST_NAMESPACE).await;

    estate.apply(&routed_deployment(
        "ranker",
        "internal",
        4,
        4,
        DRAIN_SECONDS,
    ));
    let md = wait_for(&estate, "ranker", "public backend serving", |md| {
        backend_of(md, "cloud-l4").is_some_and(|b| b.state == BackendState::Serving && b.weight > 0)
            && is_true(md, "TrafficReady")
    })
    .await;
    let public_name = backend_of(&md, "cloud-l4").unwrap().name.clone();
    let home = backend_of(&md, "dc1-l4").expect("the home backend").clone();
    assert_eq!(
        replicas_on(&md, "cloud-l4"),
        2,
        "burst: 2 fit at home, 2 go public"
    );

    // 6. The exported Service stayed, from its creation until now (the sweep runs every
    //    reconcile: give it a few periods).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exported = public_services.versions();
    assert!(
        exported.iter().any(|v| !v.deleted
            && v.object["metadata"]["labels"]["skybridge.io/traffic-for"] == "ranker"),
        "the public pool's Service is exported: {exported:?}"
    );
    let deleted: Vec<&str> = exported
        .iter()
        .filter(|v| v.deleted)
        .filter_map(|v| v.object["metadata"]["name"].as_str())
        .collect();
    assert!(
        deleted.is_empty(),
        "Services deleted in the public pool while it served: {deleted:?}"
    );

    // 1. Weight only once ready, over the whole history.
    let deployments = public_versions(&public);
    let first_ready = deployments
        .iter()
        .find(|(_, ready, _, _)| *ready > 0)
        .map(|v| v.0)
        .expect("the public replicas turned ready");
    let versions = route_versions(&routes);
    assert!(!versions.is_empty());
    for (at, route) in &versions {
        if weight_of(route, &public_name).unwrap_or(0) > 0 {
            assert!(
                *at > first_ready,
                "a route version gave the public backend weight before any replica was ready: {route}"
            );
        }
    }
    assert!(
        versions
            .iter()
            .any(|(_, r)| weight_of(r, &public_name).unwrap_or(0) > 0),
        "the route carries the public backend"
    );

    // 5. Another field manager's fields on the route.
    estate
        .private
        .apply_yaml(
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {}\n  namespace: {APP_NAMESPACE}\n  annotations: {{platform.example.com/owner: search-team}}\n  labels: {{platform.example.com/tier: gold}}\n",
                versions.last().unwrap().1["metadata"]["name"].as_str().unwrap()
            ),
            "platform-team",
        )
        .expect("another manager applies to the route");
    let annotated_from = routes.versions().len();

    // 2. Failback: the data centre gets GPUs back; the public replicas drain first.
    estate
        .private
        .upsert_node(
            NodeSpec::new("dc1-gpu-0")
                .gpus(8)
                .label(POOL_LABEL, "dc1-l4"),
        )
        .expect("node resized");
    wait_for(&estate, "ranker", "failed back, public drained", |md| {
        replicas_on(md, "cloud-l4") == 0 && backend_of(md, "cloud-l4").is_none()
    })
    .await;
    eventually("the public workload removed", || async {
        children(&estate.public).await.is_empty().then_some(())
    })
    .await;
    let versions = route_versions(&routes);
    // The route stops sending to the public backend with the first version after the last one
    // that gave it weight.
    let last_weighted = versions
        .iter()
        .rposition(|(_, r)| weight_of(r, &public_name).unwrap_or(0) > 0)
        .expect("the public backend had weight");
    let drained_at = versions
        .get(last_weighted + 1)
        .map(|v| v.0)
        .expect("a route version with the public weight at 0");
    let removal_at = public_versions(&public)
        .windows(2)
        .find(|w| w[1].3 || w[1].2 < w[0].2)
        .map(|w| w[1].0)
        .expect("the public replicas removed");
    assert!(
        removal_at >= drained_at + Duration::from_secs(u64::from(DRAIN_SECONDS)),
        "public replicas went {:?} after the route stopped sending to them (drain {DRAIN_SECONDS}s)",
        removal_at.saturating_duration_since(drained_at)
    );
    let drain_event = event_with_reason(&estate, APP_NAMESPACE, "ranker", "TrafficDraining").await;
    assert!(drain_event.note.unwrap_or_default().contains("cloud-l4"));

    if std::env::var("TRAFFIC_DEBUG").is_ok() {
        let t0 = versions[0].0;
        for (at, r) in &versions {
            eprintln!("route {:?} {:?}", at.duration_since(t0), route_backends(r));
        }
        for v in public_versions(&public) {
            eprintln!(
                "public {:?} ready={} replicas={} deleted={}",
                v.0.saturating_duration_since(t0),
                v.1,
                v.2,
                v.3
            );
        }
    }
    // 5. Every version after the other manager's apply kept its fields.
    let all = routes.versions();
    assert!(
        all.len() > annotated_from,
        "the operator rewrote the route since"
    );
    for seen in &all[annotated_from..] {
        if seen.deleted {
            continue;
        }
        let meta = &seen.object["metadata"];
        assert_eq!(
            meta["annotations"]["platform.example.com/owner"],
            "search-team"
        );
        assert_eq!(meta["labels"]["platform.example.com/tier"], "gold");
    }
    // The home backend served throughout.
    assert!(
        versions
            .iter()
            .all(|(_, r)| weight_of(r, &home.name).is_some())
    );
}

/// 3. The public cluster stops answering: its backend's weight goes to 0 within two reconcile
///    periods (1 s here) of the operator finding it so, and comes back when the cluster does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_loses_its_weight_and_regains_it() {
    let (estate, _set) = start_traffic_estate(2, 8, Duration::from_millis(100)).await;
    let _operator = Operator::start(&estate).await;
    let routes = History::start(&estate.private, http_routes(), APP_NAMESPACE).await;
    estate.apply(&routed_deployment(
        "ranker",
        "internal",
        4,
        4,
        DRAIN_SECONDS,
    ));
    let md = wait_for(&estate, "ranker", "public backend serving", |md| {
        backend_of(md, "cloud-l4").is_some_and(|b| b.state == BackendState::Serving)
    })
    .await;
    let public_name = backend_of(&md, "cloud-l4").unwrap().name.clone();

    estate.public.set_unreachable();
    let cut_at = std::time::Instant::now();
    let pool = eventually("cloud-l4 reported unreachable", || async {
        let pool = estate.pools_api().get("cloud-l4").await.ok()?;
        let reachable = pool
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Reachable")?;
        (reachable.status == "False").then_some(pool)
    })
    .await;
    let found_at = std::time::Instant::now();
    let _ = pool;
    let zero_at = eventually("the public weight at 0", || async {
        routes
            .versions()
            .iter()
            .find(|s| s.at > cut_at && weight_of(&s.object, &public_name).unwrap_or(0) == 0)
            .map(|s| s.at)
    })
    .await;
    let md = wait_for(&estate, "ranker", "public backend Unreachable", |md| {
        backend_of(md, "cloud-l4")
            .is_some_and(|b| b.state == BackendState::Unreachable && b.weight == 0)
    })
    .await;
    assert!(backend_of(&md, "dc1-l4").is_some_and(|b| b.weight > 0));
    assert!(
        zero_at <= found_at + Duration::from_secs(2),
        "weight 0 {:?} after the pool was reported unreachable (2 periods: 2s)",
        zero_at.saturating_duration_since(found_at)
    );

    estate.public.set_reachable().await.expect("back");
    wait_for(&estate, "ranker", "public backend serving again", |md| {
        backend_of(md, "cloud-l4").is_some_and(|b| b.state == BackendState::Serving && b.weight > 0)
    })
    .await;
    eventually(
        "the route gives the public backend weight again",
        || async {
            let last = routes.versions().last().cloned()?;
            (weight_of(&last.object, &public_name).unwrap_or(0) > 0).then_some(())
        },
    )
    .await;
}

/// 4. A sensitive component never gets a public backend, however far demand exceeds the
///    private capacity: no route version, no status entry, no export in the public cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_component_never_routes_to_a_public_cluster() {
    let (estate, _set) = start_traffic_estate(2, 8, Duration::from_millis(100)).await;
    let _operator = Operator::start(&estate).await;
    let routes = History::start(&estate.private, http_routes(), APP_NAMESPACE).await;
    estate.apply(&routed_deployment(
        "encoder",
        "sensitive",
        6,
        6,
        DRAIN_SECONDS,
    ));
    let md = wait_for(
        &estate,
        "encoder",
        "private backend serving, the rest unplaced",
        |md| {
            backend_of(md, "dc1-l4").is_some_and(|b| b.state == BackendState::Serving)
                && is_true(md, "Degraded")
                && is_true(md, "TrafficReady")
        },
    )
    .await;
    assert!(backend_of(&md, "cloud-l4").is_none());
    let versions = route_versions(&routes);
    assert!(!versions.is_empty());
    for (_, route) in &versions {
        for (kind, ns, name, _) in route_backends(route) {
            assert!(
                kind == "Service" && ns != BURST_NAMESPACE && !name.contains("cloud"),
                "a sensitive route referenced {kind} {ns}/{name}: {route}"
            );
        }
    }
    let exports: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        estate.public.client().unwrap(),
        &kube::api::ApiResource {
            group: "multicluster.x-k8s.io".into(),
            version: "v1alpha1".into(),
            api_version: "multicluster.x-k8s.io/v1alpha1".into(),
            kind: "ServiceExport".into(),
            plural: "serviceexports".into(),
        },
    );
    assert!(
        exports
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Without the Gateway API and MCS CRDs the operator keeps placing replicas; a component with
/// `traffic` gets `TrafficReady=False` naming what is missing, and an Event; nothing crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_traffic_apis_traffic_is_not_ready_and_replicas_still_run() {
    let estate = Estate::start(4, 4).await;
    if !estate.harness_only("without_the_traffic_apis_traffic_is_not_ready_and_replicas_still_run")
    {
        return;
    }
    estate.apply_pools();
    let _operator = Operator::start(&estate).await;
    estate.apply(&routed_deployment(
        "ranker",
        "internal",
        2,
        2,
        DRAIN_SECONDS,
    ));
    let md = wait_for(
        &estate,
        "ranker",
        "TrafficReady False, replicas ready",
        |md| {
            is_true(md, "Ready")
                && condition(md, "TrafficReady").is_some_and(|c| c.status == "False")
        },
    )
    .await;
    let traffic = condition(&md, "TrafficReady").unwrap();
    assert_eq!(traffic.reason, "GatewayAPIMissing", "{traffic:?}");
    assert!(
        traffic.message.contains("gateway.networking.k8s.io"),
        "{}",
        traffic.message
    );
    let event = event_with_reason(&estate, APP_NAMESPACE, "ranker", "TrafficUnavailable").await;
    assert!(event.note.unwrap_or_default().contains("GatewayAPIMissing"));
    assert_eq!(replicas_on(&md, "dc1-l4"), 2);
}
