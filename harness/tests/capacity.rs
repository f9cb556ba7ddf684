//! Public capacity in the kubelet stand-in (issue #19): stockouts hold a pool's new replicas
//! `Pending`/`Unschedulable`, elastic pools grow nodes after a delay up to a maximum, and a node
//! tainted for reclamation keeps its replicas until it is deleted after the notice.

mod common;

use common::*;
use kube_harness::{Cluster, ClusterConfig, NodeSpec};
use serde_json::{Value, json};

fn in_pool(name: &str, replicas: u32, pool: &str) -> Value {
    let mut d = deployment(name, replicas, 1);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"pool": pool});
    d
}

async fn scale(base: &str, name: &str, replicas: u32) {
    let a = http(
        "PATCH",
        &format!("{base}/apis/apps/v1/namespaces/default/deployments/{name}"),
        Some("application/merge-patch+json"),
        &json!({"spec": {"replicas": replicas}}).to_string(),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
}

async fn ready_replicas(base: &str, name: &str) -> u64 {
    let d = http(
        "GET",
        &format!("{base}/apis/apps/v1/namespaces/default/deployments/{name}"),
        None,
        "",
    )
    .await;
    d.body["status"]["readyReplicas"].as_u64().unwrap_or(0)
}

async fn pods(base: &str) -> Vec<Value> {
    let a = http(
        "GET",
        &format!("{base}/api/v1/namespaces/default/pods"),
        None,
        "",
    )
    .await;
    a.body["items"].as_array().cloned().unwrap_or_default()
}

fn unschedulable(pod: &Value) -> Option<String> {
    let condition = pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")?;
    (pod["status"]["phase"] == "Pending"
        && condition["status"] == "False"
        && condition["reason"] == "Unschedulable"
        && pod["spec"]["nodeName"].is_null())
    .then(|| {
        condition["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

async fn node_names(base: &str) -> Vec<String> {
    let a = http("GET", &format!("{base}/harness/nodes"), None, "").await;
    let mut names: Vec<String> = a.body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn set_capacity(base: &str, scenario: Value) -> u16 {
    http(
        "PUT",
        &format!("{base}/harness/capacity"),
        Some("application/json"),
        &scenario.to_string(),
    )
    .await
    .code
}

#[tokio::test]
async fn a_stockout_holds_new_replicas_unschedulable_until_it_is_lifted() {
    let c = Cluster::start(
        ClusterConfig::new("public")
            .node(NodeSpec::new("spot-a").gpus(8).label("pool", "spot"))
            .node(NodeSpec::new("od-a").gpus(8).label("pool", "ondemand")),
    )
    .await
    .unwrap();
    let base = c.url().to_string();
    post(
        &base,
        "/apis/apps/v1/namespaces/default/deployments",
        in_pool("ranker", 2, "spot"),
    )
    .await;
    post(
        &base,
        "/apis/apps/v1/namespaces/default/deployments",
        in_pool("other", 1, "ondemand"),
    )
    .await;
    eventually("2 ranker replicas ready", 10, || async {
        (ready_replicas(&base, "ranker").await == 2).then_some(())
    })
    .await;

    assert_eq!(
        set_capacity(&base, json!({"stockouts": [{"pool": "spot"}]})).await,
        200
    );
    let scenario = http("GET", &format!("{base}/harness/capacity"), None, "").await;
    assert_eq!(scenario.body["stockouts"], json!([{"pool": "spot"}]));
    scale(&base, "ranker", 4).await;
    let messages = eventually("2 ranker pods unschedulable", 10, || async {
        let messages: Vec<String> = pods(&base)
            .await
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == "ranker")
            .filter_map(unschedulable)
            .collect();
        (messages.len() == 2).then_some(messages)
    })
    .await;
    assert!(
        messages.iter().all(|m| m.contains("stockout")),
        "{messages:?}"
    );
    // The replicas that ran keep running, and a pool without a stockout is unaffected.
    assert_eq!(ready_replicas(&base, "ranker").await, 2);
    scale(&base, "other", 3).await;
    eventually("the on-demand pool still schedules", 10, || async {
        (ready_replicas(&base, "other").await == 3).then_some(())
    })
    .await;
    assert_eq!(
        ready_replicas(&base, "ranker").await,
        2,
        "still held by the stockout"
    );

    let lifted = http("DELETE", &format!("{base}/harness/capacity"), None, "").await;
    assert_eq!(lifted.code, 200);
    eventually("4 ranker replicas ready after the stockout", 10, || async {
        (ready_replicas(&base, "ranker").await == 4).then_some(())
    })
    .await;
    assert!(pods(&base).await.iter().all(|p| unschedulable(p).is_none()));
}

#[tokio::test]
async fn an_elastic_pool_adds_nodes_after_its_delay_up_to_its_maximum() {
    let c = start("public").await;
    let base = c.url().to_string();
    let scenario = json!({"elastic": [{
        "selector": {"pool": "karpenter"},
        "template": {"name": "kp", "gpus": 2, "labels": {"pool": "karpenter"}},
        "delayMs": 1500,
        "maxNodes": 2,
    }]});
    assert_eq!(set_capacity(&base, scenario).await, 200);
    post(
        &base,
        "/apis/apps/v1/namespaces/default/deployments",
        in_pool("ranker", 3, "karpenter"),
    )
    .await;
    // Scale from zero: unschedulable first, while the node starts.
    eventually("ranker pods unschedulable before any node", 10, || async {
        let stuck = pods(&base).await.iter().filter_map(unschedulable).count();
        (stuck == 3).then_some(())
    })
    .await;
    assert!(
        node_names(&base).await.is_empty(),
        "no node before the delay"
    );
    eventually("3 replicas ready on two added nodes", 20, || async {
        (ready_replicas(&base, "ranker").await == 3).then_some(())
    })
    .await;
    assert_eq!(node_names(&base).await, ["kp-0", "kp-1"]);
    // At the maximum: more replicas stay unschedulable, no third node.
    scale(&base, "ranker", 6).await;
    eventually("2 replicas unschedulable at the maximum", 10, || async {
        let stuck = pods(&base).await.iter().filter_map(unschedulable).count();
        (stuck == 2).then_some(())
    })
    .await;
    eventually("4 replicas ready: the added nodes are full", 10, || async {
        (ready_replicas(&base, "ranker").await == 4).then_some(())
    })
    .await;
    assert_eq!(node_names(&base).await, ["kp-0", "kp-1"]);
}

#[tokio::test]
async fn a_stockout_stops_an_elastic_pool_from_growing() {
    let c = start("public").await;
    let base = c.url().to_string();
    let scenario = json!({
        "stockouts": [{"pool": "karpenter"}],
        "elastic": [{
            "selector": {"pool": "karpenter"},
            "template": {"name": "kp", "gpus": 2, "labels": {"pool": "karpenter"}},
            "delayMs": 10,
            "maxNodes": 4,
        }],
    });
    assert_eq!(set_capacity(&base, scenario).await, 200);
    post(
        &base,
        "/apis/apps/v1/namespaces/default/deployments",
        in_pool("ranker", 2, "karpenter"),
    )
    .await;
    eventually("ranker pods unschedulable", 10, || async {
        (pods(&base).await.iter().filter_map(unschedulable).count() == 2).then_some(())
    })
    .await;
    // A deterministic second look: a pass after the pods exist adds no node while out of stock.
    let again = pods(&base).await;
    assert_eq!(again.iter().filter_map(unschedulable).count(), 2);
    assert!(node_names(&base).await.is_empty());
    assert_eq!(
        http("DELETE", &format!("{base}/harness/capacity"), None, "")
            .await
            .code,
        200
    );
    assert_eq!(
        set_capacity(
            &base,
            json!({"elastic": [{"selector": {"pool": "karpenter"},
                "template": {"name": "kp", "gpus": 2, "labels": {"pool": "karpenter"}},
                "delayMs": 10, "maxNodes": 4}]})
        )
        .await,
        200
    );
    eventually("the node comes once the stockout is over", 10, || async {
        (ready_replicas(&base, "ranker").await == 2).then_some(())
    })
    .await;
    assert_eq!(node_names(&base).await, ["kp-0"]);
}

#[tokio::test]
async fn a_reclaimed_node_keeps_its_replicas_until_it_is_deleted() {
    let c = Cluster::start(
        ClusterConfig::new("public")
            .node(NodeSpec::new("spot-a").gpus(2).label("pool", "spot"))
            .node(NodeSpec::new("spot-b").gpus(2).label("pool", "spot")),
    )
    .await
    .unwrap();
    let base = c.url().to_string();
    post(
        &base,
        "/apis/apps/v1/namespaces/default/deployments",
        in_pool("ranker", 2, "spot"),
    )
    .await;
    eventually("2 ready on spot-a", 10, || async {
        let on_a = pods(&base)
            .await
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "spot-a")
            .count();
        (ready_replicas(&base, "ranker").await == 2 && on_a == 2).then_some(())
    })
    .await;
    let tainted = http(
        "POST",
        &format!("{base}/harness/nodes/spot-a/reclaim?noticeMs=1500&taint=aws-node-termination-handler/spot-itn=1700000000"),
        None,
        "",
    )
    .await;
    assert_eq!(tainted.code, 200, "{}", tainted.body);
    assert_eq!(
        tainted.body["spec"]["taints"],
        json!([{"key": "aws-node-termination-handler/spot-itn", "value": "1700000000", "effect": "NoSchedule"}])
    );
    // During the notice the taint evicts nobody, and new replicas go to the other node.
    scale(&base, "ranker", 4).await;
    eventually("the new replicas land on spot-b", 10, || async {
        let on_b = pods(&base)
            .await
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "spot-b")
            .count();
        (on_b == 2).then_some(())
    })
    .await;
    let on_a = pods(&base)
        .await
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "spot-a")
        .count();
    assert_eq!(on_a, 2, "the doomed node still runs its replicas");
    assert!(node_names(&base).await.contains(&"spot-a".to_string()));
    eventually("spot-a deleted after the notice", 10, || async {
        (!node_names(&base).await.contains(&"spot-a".to_string())).then_some(())
    })
    .await;
    eventually(
        "its replicas unschedulable: nowhere left to go",
        10,
        || async {
            let stuck = pods(&base).await.iter().filter_map(unschedulable).count();
            (stuck == 2 && ready_replicas(&base, "ranker").await == 2).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn bad_capacity_requests_are_refused() {
    let c = start("public").await;
    let base = c.url().to_string();
    let selfless = json!({"elastic": [{"selector": {"pool": "karpenter"},
        "template": {"name": "kp", "gpus": 2, "labels": {"pool": "other"}},
        "delayMs": 10, "maxNodes": 2}]});
    assert_eq!(set_capacity(&base, selfless).await, 400);
    let a = http(
        "PUT",
        &format!("{base}/harness/capacity"),
        Some("application/json"),
        "{not json",
    )
    .await;
    assert_eq!(a.code, 400);
    let missing = http(
        "POST",
        &format!("{base}/harness/nodes/nope/reclaim?noticeMs=10"),
        None,
        "",
    )
    .await;
    assert_eq!(missing.code, 404, "{}", missing.body);
    let no_notice = http(
        "POST",
        &format!("{base}/harness/nodes/nope/reclaim"),
        None,
        "",
    )
    .await;
    assert_eq!(no_notice.code, 400);
}

#[tokio::test]
async fn an_elastic_pool_whose_autoscaler_adds_no_node_tells_each_pending_pod() {
    let c = start("public").await;
    let base = c.url().to_string();
    let scenario = json!({"elastic": [{
        "selector": {"pool": "karpenter"},
        "template": {"name": "kp", "gpus": 2, "labels": {"pool": "karpenter"}},
        "delayMs": 200,
        "maxNodes": 2,
        "noScaleUp": true,
    }]});
    assert_eq!(set_capacity(&base, scenario).await, 200);
    post(
        &base,
        "/apis/apps/v1/namespaces/default/deployments",
        in_pool("ranker", 2, "karpenter"),
    )
    .await;
    // One NotTriggerScaleUp core Event per pending pod, from cluster-autoscaler, naming it.
    let told = eventually("a NotTriggerScaleUp Event on each pod", 10, || async {
        let a = http(
            "GET",
            &format!(
                "{base}/api/v1/namespaces/default/events?fieldSelector=reason%3DNotTriggerScaleUp"
            ),
            None,
            "",
        )
        .await;
        let items = a.body["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2).then_some(items)
    })
    .await;
    let stuck = pods(&base).await;
    for event in &told {
        assert_eq!(event["source"]["component"], "cluster-autoscaler");
        assert_eq!(event["involvedObject"]["kind"], "Pod");
        let pod = stuck
            .iter()
            .find(|p| p["metadata"]["name"] == event["involvedObject"]["name"])
            .expect("the Event names a pod");
        assert_eq!(event["involvedObject"]["uid"], pod["metadata"]["uid"]);
        assert!(unschedulable(pod).is_some());
        assert!(
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("pod didn't trigger scale-up")),
            "{event}"
        );
    }
    // Past the pool's delay: no node was added, and nothing was told twice.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(node_names(&base).await.is_empty());
    let a = http(
        "GET",
        &format!(
            "{base}/api/v1/namespaces/default/events?fieldSelector=reason%3DNotTriggerScaleUp"
        ),
        None,
        "",
    )
    .await;
    assert_eq!(a.body["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn a_cancelled_reclamation_keeps_the_node_and_lifts_its_taint() {
    let c = Cluster::start(
        ClusterConfig::new("public").node(NodeSpec::new("spot-a").gpus(2).label("pool", "spot")),
    )
    .await
    .unwrap();
    let base = c.url().to_string();
    let tainted = http(
        "POST",
        &format!("{base}/harness/nodes/spot-a/reclaim?noticeMs=300&taint=cloud.google.com/impending-node-termination"),
        None,
        "",
    )
    .await;
    assert_eq!(tainted.code, 200, "{}", tainted.body);
    let cancelled = http(
        "DELETE",
        &format!(
            "{base}/harness/nodes/spot-a/reclaim?taint=cloud.google.com/impending-node-termination"
        ),
        None,
        "",
    )
    .await;
    assert_eq!(cancelled.code, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["spec"]["taints"], json!([]));
    // Past the notice: still there, untainted.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(node_names(&base).await, ["spot-a"]);
    let unknown = http(
        "DELETE",
        &format!("{base}/harness/nodes/nope/reclaim"),
        None,
        "",
    )
    .await;
    assert_eq!(unknown.code, 404);
}
