//! The kubelet stand-in: Deployment replicas become ready, after the readiness delay, only as far
//! as they fit on matching, tolerated nodes; capacity is packed oldest Deployment first and
//! re-evaluated when nodes change.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube_harness::{Cluster, ClusterConfig, NodeSpec};
use serde_json::{Value, json};

fn gpu_node(name: &str, gpus: u32) -> NodeSpec {
    NodeSpec::new(name).gpus(gpus).label("pool", "a100").taint(
        "nvidia.com/gpu",
        "present",
        "NoSchedule",
    )
}

fn gpu_deployment(name: &str, replicas: u32, gpus: u32, tolerate: bool) -> Deployment {
    let mut d = deployment(name, replicas, gpus);
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"pool": "a100"});
    if tolerate {
        d["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]);
    }
    serde_json::from_value(d).unwrap()
}

async fn ready(api: &Api<Deployment>, name: &str) -> (i32, i32, Value) {
    let d = api.get(name).await.unwrap();
    let s = d.status.clone().unwrap_or_default();
    (
        s.ready_replicas.unwrap_or(0),
        s.unavailable_replicas.unwrap_or(0),
        serde_json::to_value(&s).unwrap(),
    )
}

async fn wait_ready(api: &Api<Deployment>, name: &str, want: i32) -> Value {
    eventually(&format!("{name} has {want} ready replicas"), 10, || async {
        let (r, _, s) = ready(api, name).await;
        (r == want).then_some(s)
    })
    .await
}

#[tokio::test]
async fn replicas_become_ready_up_to_node_capacity() {
    let delay = Duration::from_millis(300);
    let c = Cluster::start(
        ClusterConfig::new("private")
            .readiness_delay(delay)
            .node(gpu_node("gpu-a", 8))
            .node(gpu_node("gpu-b", 4))
            .node(NodeSpec::new("cpu-1")),
    )
    .await
    .unwrap();
    let api: Api<Deployment> = Api::default_namespaced(c.client().unwrap());
    let pp = PostParams::default();

    // 5 x 2 GPUs fits (8 + 4 GPUs): all ready, but not before the readiness delay.
    let started = Instant::now();
    api.create(&pp, &gpu_deployment("first", 5, 2, true))
        .await
        .unwrap();
    let status = wait_ready(&api, "first", 5).await;
    assert!(
        started.elapsed() >= delay,
        "ready only after the readiness delay"
    );
    assert_eq!(status["replicas"], 5);
    assert_eq!(status["updatedReplicas"], 5);
    assert_eq!(status["availableReplicas"], 5);
    assert_eq!(status["observedGeneration"], 1);
    let conds = status["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
    );

    // One Pod per replica, bound to the nodes the replicas were packed on, Running and Ready.
    let pods: Api<Pod> = Api::default_namespaced(c.client().unwrap());
    let first_pods = pods
        .list(&ListParams::default().labels("app=first"))
        .await
        .unwrap()
        .items;
    assert_eq!(first_pods.len(), 5);
    let mut on_nodes: Vec<String> = first_pods
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone().unwrap())
        .collect();
    on_nodes.sort();
    assert_eq!(on_nodes, vec!["gpu-a", "gpu-a", "gpu-a", "gpu-a", "gpu-b"]);
    for p in &first_pods {
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert!(
            st.conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        assert_eq!(
            p.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Deployment"
        );
    }

    // The next Deployment only gets what is left (2 GPUs: one replica); the rest stay
    // unavailable, and Available is False (maxUnavailable 25% of 3 rounds down to 0).
    api.create(&pp, &gpu_deployment("second", 3, 2, true))
        .await
        .unwrap();
    let status = wait_ready(&api, "second", 1).await;
    assert_eq!(status["unavailableReplicas"], 2);
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "False")
    );
    let second_pods = eventually("second has 3 pods", 5, || async {
        let items = pods
            .list(&ListParams::default().labels("app=second"))
            .await
            .unwrap()
            .items;
        (items.len() == 3).then_some(items)
    })
    .await;
    let pending: Vec<&Pod> = second_pods
        .iter()
        .filter(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Pending"))
        .collect();
    assert_eq!(pending.len(), 2);
    let scheduled = pending[0]
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );

    // Without a toleration for the GPU taint nothing fits; a selector matching no node likewise.
    api.create(&pp, &gpu_deployment("untolerated", 1, 1, false))
        .await
        .unwrap();
    let (r, u, _) = eventually("untolerated has a status", 5, || async {
        let s = ready(&api, "untolerated").await;
        (s.1 == 1).then_some(s)
    })
    .await;
    assert_eq!((r, u), (0, 1));

    // A new node: the second Deployment fits completely.
    c.upsert_node(gpu_node("gpu-c", 8)).unwrap();
    wait_ready(&api, "second", 3).await;

    // Removing the biggest node: the oldest Deployment keeps priority (gpu-b 2 + gpu-c 3 replicas),
    // the second one shrinks to what is left of gpu-c (1 replica).
    c.remove_node("gpu-a").unwrap();
    wait_ready(&api, "first", 5).await;
    wait_ready(&api, "second", 1).await;

    // Resizing a node down and scaling a Deployment are re-evaluated too; observedGeneration
    // follows the spec.
    c.upsert_node(gpu_node("gpu-c", 2)).unwrap();
    wait_ready(&api, "first", 3).await;
    wait_ready(&api, "second", 0).await;
    let patch = kube::api::Patch::Merge(json!({"spec": {"replicas": 1}}));
    api.patch("first", &kube::api::PatchParams::default(), &patch)
        .await
        .unwrap();
    let status = wait_ready(&api, "first", 1).await;
    assert_eq!(status["observedGeneration"], 2);
    // Freed capacity goes to the next Deployment: gpu-b 2 GPUs + gpu-c 2 GPUs = 2 replicas.
    wait_ready(&api, "second", 2).await;
    assert_eq!(c.nodes().len(), 3);
    // Deleting a Deployment garbage-collects its Pods.
    api.delete("second", &Default::default()).await.unwrap();
    eventually("second's pods are gone", 5, || async {
        pods.list(&ListParams::default().labels("app=second"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn cpu_and_memory_requests_are_packed_too() {
    let c = Cluster::start(
        ClusterConfig::new("cpu")
            .readiness_delay(Duration::from_millis(50))
            .node(NodeSpec::new("small").cpu("4").memory("8Gi")),
    )
    .await
    .unwrap();
    let api: Api<Deployment> = Api::default_namespaced(c.client().unwrap());
    let mut d = deployment("web", 10, 0);
    d["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "1500m", "memory": "1Gi"}});
    api.create(&PostParams::default(), &serde_json::from_value(d).unwrap())
        .await
        .unwrap();
    // 4 CPUs / 1.5 = 2 replicas.
    wait_ready(&api, "web", 2).await;
    c.set_readiness_delay(Duration::from_millis(10));
    c.upsert_node(NodeSpec::new("small").cpu("16").memory("8Gi"))
        .unwrap();
    // 16 / 1.5 = 10, 8Gi / 1Gi = 8: memory limits it.
    wait_ready(&api, "web", 8).await;

    // Creation order decides, not names: "older" (created first, name sorts last) keeps its
    // capacity when the node shrinks.
    api.delete("web", &Default::default()).await.unwrap();
    for name in ["zz-older", "aa-newer"] {
        let mut d = deployment(name, 2, 0);
        d["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"requests": {"cpu": "4"}});
        api.create(&PostParams::default(), &serde_json::from_value(d).unwrap())
            .await
            .unwrap();
    }
    wait_ready(&api, "zz-older", 2).await;
    wait_ready(&api, "aa-newer", 2).await;
    c.upsert_node(NodeSpec::new("small").cpu("8").memory("8Gi"))
        .unwrap();
    wait_ready(&api, "aa-newer", 0).await;
    wait_ready(&api, "zz-older", 2).await;

    // A Pod bound to the node by someone else uses its capacity.
    let pods: Api<Pod> = Api::default_namespaced(c.client().unwrap());
    let hog: Pod = serde_json::from_value(
        json!({"metadata": {"name": "hog"}, "spec": {"nodeName": "small",
        "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "4"}}}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &hog).await.unwrap();
    wait_ready(&api, "zz-older", 1).await;
}
