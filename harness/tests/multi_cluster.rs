//! Several clusters in one test process, as the operator's e2e tests use them, plus the kinds the
//! operator relies on besides Deployments: Leases (leader election), Events, Secrets.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube_harness::{Cluster, ClusterConfig, NodeSpec};
use serde_json::json;

#[tokio::test]
async fn clusters_are_independent() {
    let clusters = Cluster::start_many(vec![
        ClusterConfig::new("hub"),
        ClusterConfig::new("private").node(NodeSpec::new("gpu-a").gpus(8)),
        ClusterConfig::new("public").node(NodeSpec::new("gpu-p").gpus(2)),
    ])
    .await
    .unwrap();
    let ports: std::collections::BTreeSet<u16> = clusters.iter().map(|c| c.port()).collect();
    assert_eq!(ports.len(), 3);
    let hub: Api<ConfigMap> = Api::default_namespaced(clusters[0].client().unwrap());
    let private: Api<ConfigMap> = Api::default_namespaced(clusters[1].client().unwrap());
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("only-on-hub".into());
    hub.create(&PostParams::default(), &cm).await.unwrap();
    assert!(private.get_opt("only-on-hub").await.unwrap().is_none());
    // Faults and reachability are per cluster.
    clusters[2].set_unreachable();
    assert!(hub.list(&ListParams::default()).await.is_ok());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(clusters[1].client().unwrap());
    assert_eq!(
        nodes.list(&ListParams::default()).await.unwrap().items[0]
            .metadata
            .name
            .as_deref(),
        Some("gpu-a")
    );
    clusters[2].set_reachable().await.unwrap();
    let public_nodes: Api<k8s_openapi::api::core::v1::Node> =
        Api::all(clusters[2].client().unwrap());
    assert_eq!(
        public_nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // Every cluster can get the CRDs and objects from YAML without a client.
    for c in &clusters {
        let applied = c.apply_yaml(CRDS, "e2e-setup").unwrap();
        assert_eq!(applied.len(), 3);
    }
    let pools = clusters[1]
        .apply_yaml("apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: p}\nspec: {cloud: private, provider: onprem, region: r, capacity: {}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "e2e-setup")
        .unwrap();
    assert_eq!(
        pools[0]["spec"]["startupSeconds"], 120,
        "schema defaults applied"
    );
    assert_eq!(pools[1]["metadata"]["namespace"], "default");
    assert!(
        clusters[0]
            .apply_yaml("apiVersion: x/v1\nkind: Nope\nmetadata: {name: n}\n", "m")
            .is_err()
    );
    // Kubeconfigs name their cluster.
    assert!(
        clusters[1]
            .kubeconfig_yaml()
            .contains("current-context: private")
    );
    assert!(
        std::fs::read_to_string(clusters[1].kubeconfig_path())
            .unwrap()
            .contains(clusters[1].url())
    );
}

#[tokio::test]
async fn leases_events_and_deletecollection() {
    let c = start("leases").await;
    let client = c.client().unwrap();
    // Leader election does create-then-replace with resourceVersion preconditions.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "skybridge-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}))
    .unwrap();
    let mut held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let stale = held.clone();
    held.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("skybridge-leader", &PostParams::default(), &held)
        .await
        .unwrap();
    let lost = leases
        .replace("skybridge-leader", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(matches!(lost, kube::Error::Api(s) if s.code == 409));

    // Events in both API groups.
    let base = c.url();
    let ev = post(base, "/apis/events.k8s.io/v1/namespaces/default/events", json!({"metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Placed", "note": "3 replicas", "type": "Normal",
        "action": "Place", "reportingController": "skybridge", "reportingInstance": "skybridge-0",
        "regarding": {"kind": "ModelDeployment", "name": "m", "namespace": "default"}})).await;
    assert_eq!(ev["apiVersion"], "events.k8s.io/v1");
    post(
        base,
        "/api/v1/namespaces/default/events",
        json!({"metadata": {"name": "e2"}, "reason": "X",
        "involvedObject": {"kind": "Pod", "name": "p"}}),
    )
    .await;
    let core = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/events?fieldSelector=involvedObject.kind%3DPod"),
        None,
        "",
    )
    .await;
    assert_eq!(core.body["items"].as_array().unwrap().len(), 1);

    // deletecollection with a label selector.
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"set": l}}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("set=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, vec!["c"]);
}

#[tokio::test]
async fn watcher_with_streaming_lists_and_bookmarks() {
    use kube::runtime::{WatchStreamExt, watcher};
    let c =
        Cluster::start(ClusterConfig::new("stream").bookmark_interval(Duration::from_millis(100)))
            .await
            .unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "pre"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    // Streaming list: Init, InitApply(pre), InitDone, then live events.
    let mut got_init_done = false;
    let mut saw_pre = false;
    while !got_init_done {
        match tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(o) => saw_pre |= o.metadata.name.as_deref() == Some("pre"),
            watcher::Event::InitDone => got_init_done = true,
            _ => {}
        }
    }
    assert!(saw_pre);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "live"}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let mut applied = events.applied_objects();
    let o = tokio::time::timeout(Duration::from_secs(5), applied.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(o.metadata.name.as_deref(), Some("live"));
}

#[tokio::test]
async fn metadata_only_api_and_metadata_watcher() {
    use kube::core::PartialObjectMeta;
    use kube::runtime::{WatchStreamExt, watcher};
    let c = start("meta").await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "m1", "labels": {"a": "b"}}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let meta = api.get_metadata("m1").await.unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["a"], "b");
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    // The wire form is PartialObjectMetadata, as the API server sends it.
    let raw = c.client().unwrap();
    let req = hyper::Request::get("/api/v1/namespaces/default/configmaps/m1")
        .header(
            "Accept",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        )
        .body(Vec::new())
        .unwrap();
    let v: serde_json::Value = raw.request(req).await.unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["apiVersion"].as_str()),
        (Some("PartialObjectMetadata"), Some("meta.k8s.io/v1"))
    );
    assert!(v.get("data").is_none());
    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(c.client().unwrap());
    let mut stream = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m1"));
}

#[tokio::test]
async fn kube_event_recorder_publishes_and_patches_series() {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let c = start("events").await;
    let client = c.client().unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "skybridge".into(),
            instance: Some("skybridge-0".into()),
        },
    );
    let reference = ObjectReference {
        kind: Some("ModelDeployment".into()),
        name: Some("m".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "Placed".into(),
        note: Some("3 replicas".into()),
        action: "Place".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::default_namespaced(client);
    let list = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        list.len(),
        1,
        "the repeat is a series update, not a new event"
    );
    assert_eq!(list[0].reason.as_deref(), Some("Placed"));
    assert_eq!(list[0].series.as_ref().map(|s| s.count), Some(2));
}
