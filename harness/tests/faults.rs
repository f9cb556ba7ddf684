//! Fault injection through the Rust API and the HTTP control endpoint: injected status codes
//! (seeded, by verb and path), latency, closing watches, and the cluster going unreachable and
//! coming back on the same port.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use kube_harness::{Cluster, ClusterConfig, FaultRule};
use serde_json::json;

#[tokio::test]
async fn seeded_fraction_is_reproducible() {
    let mut runs = Vec::new();
    for name in ["f1", "f2"] {
        let c = Cluster::start(
            ClusterConfig::new(name)
                .fault_seed(42)
                .fault(FaultRule::status(500).fraction(0.5).verb("list")),
        )
        .await
        .unwrap();
        let mut codes = Vec::new();
        for _ in 0..40 {
            codes.push(
                http(
                    "GET",
                    &format!("{}/api/v1/namespaces/default/configmaps", c.url()),
                    None,
                    "",
                )
                .await
                .code,
            );
        }
        // Other verbs are untouched.
        assert_eq!(
            http(
                "GET",
                &format!("{}/api/v1/namespaces/default", c.url()),
                None,
                ""
            )
            .await
            .code,
            200
        );
        runs.push(codes);
    }
    assert_eq!(runs[0], runs[1], "same seed, same faults");
    let failures = runs[0].iter().filter(|c| **c == 500).count();
    assert!((8..=32).contains(&failures), "about half fail: {failures}");
    assert!(runs[0].iter().all(|c| *c == 200 || *c == 500));
}

#[tokio::test]
async fn status_codes_by_verb_and_path_with_status_bodies() {
    let c = start("codes").await;
    let base = c.url();
    c.set_faults(vec![
        FaultRule::status(503).verb("create").path("/configmaps"),
        FaultRule::status(429).verb("get").path("/secrets/"),
        FaultRule::status(409).verb("update").times(1),
    ])
    .unwrap();
    let a = http(
        "POST",
        &format!("{base}/api/v1/namespaces/default/configmaps"),
        Some("application/json"),
        r#"{"metadata":{"name":"x"}}"#,
    )
    .await;
    assert_eq!(a.code, 503);
    assert_eq!(a.body["kind"], "Status");
    assert_eq!(a.body["reason"], "ServiceUnavailable");
    assert_eq!(a.body["code"], 503);
    // A different path is not hit.
    post(
        base,
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "s"}}),
    )
    .await;
    let a = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/secrets/s"),
        None,
        "",
    )
    .await;
    assert_eq!(a.code, 429);
    assert_eq!(a.body["reason"], "TooManyRequests");
    assert_eq!(a.headers.get("Retry-After").unwrap(), "1");
    // `times` disarms the rule after one hit.
    let s = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/secrets"),
        None,
        "",
    )
    .await
    .body["items"][0]
        .clone();
    let put = |body: String| {
        let url = format!("{base}/api/v1/namespaces/default/secrets/s");
        async move { http("PUT", &url, Some("application/json"), &body).await }
    };
    assert_eq!(put(s.to_string()).await.code, 409);
    assert_eq!(put(s.to_string()).await.code, 200);
    // kube::Client retries 429/503 by itself (honouring Retry-After), so a single injected 429
    // is invisible to the caller but consumed; a 500 surfaces as an API error.
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::default_namespaced(c.client().unwrap());
    c.set_faults(vec![FaultRule::status(429).verb("get").times(1)])
        .unwrap();
    assert!(api.get("s").await.is_ok());
    assert_eq!(c.faults()[0].times, Some(0));
    c.set_faults(vec![FaultRule::status(500).verb("get")])
        .unwrap();
    match api.get("s").await.unwrap_err() {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
        other => panic!("{other:?}"),
    }
    c.clear_faults();
    assert!(api.get("s").await.is_ok());
}

#[tokio::test]
async fn latency_is_added() {
    let c = start("slow").await;
    c.set_faults(vec![
        FaultRule::latency(Duration::from_millis(800)).path("/configmaps"),
    ])
    .unwrap();
    let t = Instant::now();
    assert_eq!(
        http(
            "GET",
            &format!("{}/api/v1/namespaces/default/configmaps", c.url()),
            None,
            ""
        )
        .await
        .code,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(800));
    let t = Instant::now();
    http("GET", &format!("{}/api/v1/namespaces", c.url()), None, "").await;
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "other paths are not delayed"
    );
}

#[tokio::test]
async fn unreachable_and_back_on_the_same_port() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use kube::runtime::{WatchStreamExt, watcher};
    let c = start("flaky").await;
    let base = c.url().to_string();
    let port = c.port();
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("before".into());
    api.create(&PostParams::default(), &cm).await.unwrap();
    let (_, mut raw_watch) = watch_events(&format!(
        "{base}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={}",
        c.resource_version()
    ))
    .await;
    let mut watcher_stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), watcher_stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("before"));

    c.set_unreachable();
    // Open streams are cut; new connections are refused.
    assert!(next_event(&mut raw_watch, 5).await.is_none());
    let err = try_http("GET", &format!("{base}/version"), None, "")
        .await
        .unwrap_err();
    assert!(err.contains("Connect") || err.contains("refused"), "{err}");
    assert!(api.get("before").await.is_err());

    c.set_reachable().await.unwrap();
    assert_eq!(c.port(), port);
    assert_eq!(
        http("GET", &format!("{base}/version"), None, "").await.code,
        200
    );
    // State survived; the operator's watcher recovers and sees new objects.
    assert!(api.get("before").await.is_ok());
    cm.metadata.name = Some("after".into());
    api.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = watcher_stream.next().await {
            if let Ok(o) = ev
                && o.metadata.name.as_deref() == Some("after")
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seen);
}

#[tokio::test]
async fn http_control_endpoint() {
    let c = start("ctl").await;
    let base = c.url().to_string();
    // Faults.
    let a = http(
        "PUT",
        &format!("{base}/harness/faults"),
        Some("application/json"),
        &json!({"seed": 3, "rules": [{"status": 500, "verb": "list", "path": "/pods"}]})
            .to_string(),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(
        http("GET", &format!("{base}/api/v1/pods"), None, "")
            .await
            .code,
        500
    );
    assert_eq!(
        http("GET", &format!("{base}/harness/faults"), None, "")
            .await
            .body["rules"][0]["status"],
        500
    );
    http("DELETE", &format!("{base}/harness/faults"), None, "").await;
    assert_eq!(
        http("GET", &format!("{base}/api/v1/pods"), None, "")
            .await
            .code,
        200
    );
    // Nodes: CLI syntax or JSON.
    let a = http(
        "POST",
        &format!("{base}/harness/nodes"),
        Some("text/plain"),
        "gpu-a,gpu=8,label:pool=a100,taint:nvidia.com/gpu=present:NoSchedule",
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let node = http("GET", &format!("{base}/api/v1/nodes/gpu-a"), None, "")
        .await
        .body;
    assert_eq!(node["status"]["allocatable"]["nvidia.com/gpu"], "8");
    assert_eq!(node["metadata"]["labels"]["pool"], "a100");
    assert_eq!(node["spec"]["taints"][0]["effect"], "NoSchedule");
    http(
        "PUT",
        &format!("{base}/harness/nodes"),
        Some("application/json"),
        r#"{"name":"gpu-a","gpus":2}"#,
    )
    .await;
    let node = http("GET", &format!("{base}/api/v1/nodes/gpu-a"), None, "")
        .await
        .body;
    assert_eq!(node["status"]["allocatable"]["nvidia.com/gpu"], "2");
    assert_eq!(
        http("GET", &format!("{base}/harness/nodes"), None, "")
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    http("DELETE", &format!("{base}/harness/nodes/gpu-a"), None, "").await;
    assert_eq!(
        http("GET", &format!("{base}/api/v1/nodes/gpu-a"), None, "")
            .await
            .code,
        404
    );
    assert_eq!(
        http(
            "PUT",
            &format!("{base}/harness/readiness-delay?ms=10"),
            None,
            ""
        )
        .await
        .code,
        200
    );
    // Watches closed on request.
    let (_, mut s) = watch_events(&format!(
        "{base}/api/v1/nodes?watch=true&resourceVersion={}",
        c.resource_version()
    ))
    .await;
    http("POST", &format!("{base}/harness/watches/close"), None, "").await;
    assert!(next_event(&mut s, 5).await.is_none());
    // Unreachable for a while, then back by itself.
    assert_eq!(
        http(
            "POST",
            &format!("{base}/harness/unreachable?durationMs=500"),
            None,
            ""
        )
        .await
        .code,
        200
    );
    eventually("cluster refuses connections", 5, || async {
        try_http("GET", &format!("{base}/version"), None, "")
            .await
            .err()
    })
    .await;
    eventually("cluster is back", 5, || async {
        try_http("GET", &format!("{base}/version"), None, "")
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn unresponsive_cluster_makes_clients_time_out() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let c = start("hang").await;
    let mut config = c.kube_config().unwrap();
    config.read_timeout = Some(Duration::from_millis(300));
    config.connect_timeout = Some(Duration::from_millis(300));
    let api: kube::Api<ConfigMap> =
        kube::Api::default_namespaced(kube::Client::try_from(config).unwrap());
    assert!(api.list(&Default::default()).await.is_ok());
    c.set_unresponsive().await.unwrap();
    let t = Instant::now();
    let err = api.list(&Default::default()).await.unwrap_err();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "a timeout, not a refusal: {err:?}"
    );
    let raw = tokio::time::timeout(
        Duration::from_millis(300),
        try_http("GET", &format!("{}/version", c.url()), None, ""),
    )
    .await;
    assert!(raw.is_err(), "no answer while unresponsive");
    c.set_reachable().await.unwrap();
    assert!(api.list(&Default::default()).await.is_ok());
    // Over the control endpoint too.
    let base = c.url().to_string();
    assert_eq!(
        http(
            "POST",
            &format!("{base}/harness/unreachable?durationMs=400&mode=hang"),
            None,
            ""
        )
        .await
        .code,
        200
    );
    eventually("cluster hangs", 5, || async {
        tokio::time::timeout(
            Duration::from_millis(100),
            try_http("GET", &format!("{base}/version"), None, ""),
        )
        .await
        .is_err()
        .then_some(())
    })
    .await;
    eventually("cluster answers again", 5, || async {
        tokio::time::timeout(
            Duration::from_millis(500),
            try_http("GET", &format!("{base}/version"), None, ""),
        )
        .await
        .ok()
        .and_then(Result::ok)
    })
    .await;
}
