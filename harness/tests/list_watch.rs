//! List and watch semantics: selectors, pagination, watch start points, bookmarks, 410 Gone,
//! timeouts, and kube's watcher (what the operator uses) across a forced disconnect.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use kube_harness::{Cluster, ClusterConfig};
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn seed(base: &str) {
    for (name, app, tier) in [
        ("a", "web", "gpu"),
        ("b", "web", "cpu"),
        ("c", "api", "gpu"),
        ("d", "db", ""),
    ] {
        let mut labels = json!({"app": app});
        if !tier.is_empty() {
            labels["tier"] = json!(tier);
        }
        post(
            base,
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": name, "labels": labels}}),
        )
        .await;
    }
    post(
        base,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "other"}}),
    )
    .await;
    post(
        base,
        "/api/v1/namespaces/other/configmaps",
        json!({"metadata": {"name": "e", "labels": {"app": "web"}}}),
    )
    .await;
}

#[tokio::test]
async fn label_and_field_selectors() {
    let c = start("sel").await;
    let base = c.url();
    seed(base).await;
    let list = |q: &str| {
        let url = format!("{base}/api/v1/namespaces/default/configmaps?{q}");
        async move { http("GET", &url, None, "").await }
    };
    for (q, want) in [
        ("labelSelector=app%3Dweb", vec!["a", "b"]),
        ("labelSelector=app%21%3Dweb", vec!["c", "d"]),
        ("labelSelector=app+in+%28api%2Cdb%29", vec!["c", "d"]),
        ("labelSelector=app+notin+%28web%29", vec!["c", "d"]),
        ("labelSelector=tier", vec!["a", "b", "c"]),
        ("labelSelector=%21tier", vec!["d"]),
        ("labelSelector=app%3Dweb%2Ctier%3Dgpu", vec!["a"]),
        ("fieldSelector=metadata.name%3Dc", vec!["c"]),
        ("fieldSelector=metadata.name%21%3Dc", vec!["a", "b", "d"]),
    ] {
        let a = list(q).await;
        assert_eq!(a.code, 200, "{q}: {}", a.body);
        assert_eq!(names(&a.body), want, "{q}");
    }
    let all = http(
        "GET",
        &format!("{base}/api/v1/configmaps?labelSelector=app%3Dweb"),
        None,
        "",
    )
    .await;
    assert_eq!(names(&all.body), vec!["a", "b", "e"], "all namespaces");
    assert_eq!(all.body["kind"], "ConfigMapList");
    let ns = http(
        "GET",
        &format!("{base}/api/v1/configmaps?fieldSelector=metadata.namespace%3Dother"),
        None,
        "",
    )
    .await;
    assert_eq!(names(&ns.body), vec!["e"]);
    let bad = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/configmaps?labelSelector=a+in+x"),
        None,
        "",
    )
    .await;
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn pagination_with_limit_and_continue() {
    let c = Cluster::start(ClusterConfig::new("page").watch_history(5))
        .await
        .unwrap();
    let base = c.url();
    for i in 0..5 {
        post(
            base,
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("cm{i}")}}),
        )
        .await;
    }
    let url = format!("{base}/api/v1/namespaces/default/configmaps");
    let p1 = http("GET", &format!("{url}?limit=2"), None, "").await.body;
    assert_eq!(names(&p1), vec!["cm0", "cm1"]);
    assert_eq!(p1["metadata"]["remainingItemCount"], 3);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let p2 = http("GET", &format!("{url}?limit=2&continue={token}"), None, "")
        .await
        .body;
    assert_eq!(names(&p2), vec!["cm2", "cm3"]);
    assert_eq!(
        p2["metadata"]["resourceVersion"],
        p1["metadata"]["resourceVersion"]
    );
    let token2 = p2["metadata"]["continue"].as_str().unwrap().to_string();
    let p3 = http("GET", &format!("{url}?limit=2&continue={token2}"), None, "")
        .await
        .body;
    assert_eq!(names(&p3), vec!["cm4"]);
    assert!(p3["metadata"].get("continue").is_none());
    // After more writes than the history holds, the old token is 410 Expired.
    for i in 0..6 {
        post(
            base,
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("x{i}")}}),
        )
        .await;
    }
    let gone = http("GET", &format!("{url}?limit=2&continue={token}"), None, "").await;
    assert_eq!(gone.code, 410);
    assert_eq!(gone.body["reason"], "Expired");
    // Pages across namespaces whose names sort differently as text and as (namespace, name).
    for ns in ["a", "a-b"] {
        post(
            base,
            "/api/v1/namespaces",
            json!({"metadata": {"name": ns}}),
        )
        .await;
        for n in ["x", "y"] {
            post(
                base,
                &format!("/api/v1/namespaces/{ns}/configmaps"),
                json!({"metadata": {"name": n}}),
            )
            .await;
        }
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = http(
            "GET",
            &format!("{base}/api/v1/configmaps?labelSelector=&limit=1&continue={token}"),
            None,
            "",
        )
        .await
        .body;
        for i in page["items"].as_array().unwrap() {
            seen.push(format!(
                "{}/{}",
                i["metadata"]["namespace"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            ));
        }
        match page["metadata"]["continue"].as_str() {
            Some(t) => token = t.to_string(),
            None => break,
        }
    }
    let all = http("GET", &format!("{base}/api/v1/configmaps"), None, "")
        .await
        .body;
    assert_eq!(seen.len(), all["items"].as_array().unwrap().len());
    assert!(seen.contains(&"a/y".to_string()) && seen.contains(&"a-b/x".to_string()));
    let garbage = http("GET", &format!("{url}?limit=2&continue=zz"), None, "").await;
    assert_eq!(garbage.code, 400);
}

#[tokio::test]
async fn watch_start_points_bookmarks_and_410() {
    let c = Cluster::start(
        ClusterConfig::new("watch")
            .watch_history(4)
            .bookmark_interval(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let base = c.url().to_string();
    let cms = format!("{base}/api/v1/namespaces/default/configmaps");
    let first = post(
        &base,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "w1"}}),
    )
    .await;
    let rv1 = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // No resourceVersion: synthetic ADDED for existing objects, then live events.
    let (code, mut s) = watch_events(&format!("{cms}?watch=true")).await;
    assert_eq!(code, 200);
    let e = next_event(&mut s, 5).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("w1"))
    );
    post(
        &base,
        "/api/v1/namespaces/default/configmaps",
        json!({"metadata": {"name": "w2"}}),
    )
    .await;
    let e = next_event(&mut s, 5).await.unwrap();
    assert_eq!(e["object"]["metadata"]["name"], "w2");

    // From a resourceVersion: only later changes, in order; updates and deletes.
    let (_, mut s) = watch_events(&format!("{cms}?watch=1&resourceVersion={rv1}")).await;
    let e = next_event(&mut s, 5).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("w2"))
    );
    http(
        "PATCH",
        &format!("{cms}/w1"),
        Some("application/merge-patch+json"),
        r#"{"data":{"a":"b"}}"#,
    )
    .await;
    let e = next_event(&mut s, 5).await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["data"]["a"].as_str()),
        (Some("MODIFIED"), Some("b"))
    );
    http("DELETE", &format!("{cms}/w1"), None, "").await;
    let e = next_event(&mut s, 5).await.unwrap();
    assert_eq!(e["type"], "DELETED");
    let del_rv: u64 = e["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(del_rv > rv1.parse::<u64>().unwrap());

    // Bookmarks when allowed, carrying a resourceVersion; and a label-selector transition shows
    // as ADDED / DELETED.
    let (_, mut s) = watch_events(&format!(
        "{cms}?watch=true&allowWatchBookmarks=true&labelSelector=sel%3Dyes&resourceVersion={del_rv}"
    ))
    .await;
    let e = next_event(&mut s, 5).await.unwrap();
    assert_eq!(e["type"], "BOOKMARK");
    assert_eq!(e["object"]["kind"], "ConfigMap");
    assert!(
        e["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= del_rv
    );
    http(
        "PATCH",
        &format!("{cms}/w2"),
        Some("application/merge-patch+json"),
        r#"{"metadata":{"labels":{"sel":"yes"}}}"#,
    )
    .await;
    let e = loop {
        let e = next_event(&mut s, 5).await.unwrap();
        if e["type"] != "BOOKMARK" {
            break e;
        }
    };
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("w2"))
    );
    http(
        "PATCH",
        &format!("{cms}/w2"),
        Some("application/merge-patch+json"),
        r#"{"metadata":{"labels":{"sel":"no"}}}"#,
    )
    .await;
    let e = loop {
        let e = next_event(&mut s, 5).await.unwrap();
        if e["type"] != "BOOKMARK" {
            break e;
        }
    };
    assert_eq!(e["type"], "DELETED");

    // More changes than the history holds: a watch from the first version gets an ERROR event
    // with a 410 Expired Status, and the stream ends.
    for i in 0..6 {
        post(
            &base,
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("h{i}")}}),
        )
        .await;
    }
    let (code, mut s) = watch_events(&format!("{cms}?watch=true&resourceVersion={rv1}")).await;
    assert_eq!(code, 200);
    let e = next_event(&mut s, 5).await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(next_event(&mut s, 5).await.is_none());

    // timeoutSeconds ends the stream.
    let (_, mut s) = watch_events(&format!(
        "{cms}?watch=true&timeoutSeconds=1&resourceVersion={}",
        c.resource_version()
    ))
    .await;
    assert!(next_event(&mut s, 5).await.is_none());

    // sendInitialEvents: initial ADDED events, then the initial-events-end bookmark.
    let (_, mut s) = watch_events(&format!("{cms}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")).await;
    let mut added = 0;
    loop {
        let e = next_event(&mut s, 5).await.unwrap();
        if e["type"] == "BOOKMARK" {
            assert_eq!(
                e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
                "true"
            );
            break;
        }
        assert_eq!(e["type"], "ADDED");
        added += 1;
    }
    assert_eq!(added, 7);
}

#[tokio::test]
async fn close_watches_ends_streams_now() {
    let c = start("close").await;
    let cms = format!("{}/api/v1/namespaces/default/configmaps", c.url());
    let (_, mut s) = watch_events(&format!(
        "{cms}?watch=true&resourceVersion={}",
        c.resource_version()
    ))
    .await;
    c.close_watches();
    assert!(next_event(&mut s, 5).await.is_none());
}

#[tokio::test]
async fn kube_runtime_watcher_survives_closed_watches_and_410() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use kube::runtime::{WatchStreamExt, watcher};
    let c = Cluster::start(ClusterConfig::new("watcher").watch_history(3))
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let mk = |n: &str| {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(n.into());
        cm
    };
    api.create(&PostParams::default(), &mk("one"))
        .await
        .unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default().any_semantic())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("one"));
    // Force a disconnect and enough churn that re-watching from the last version is 410: the
    // watcher must relist and still deliver the new object.
    c.close_watches();
    for i in 0..5 {
        api.create(&PostParams::default(), &mk(&format!("churn{i}")))
            .await
            .unwrap();
    }
    api.create(&PostParams::default(), &mk("two"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = stream.next().await {
            if let Ok(cm) = ev
                && cm.metadata.name.as_deref() == Some("two")
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
