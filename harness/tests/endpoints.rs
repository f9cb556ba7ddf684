//! The EndpointSlice stand-in: a Service's slice lists the ready pods its selector picks, and a
//! pod relabelled out of the selector (but not out of its Deployment's) leaves the slice while
//! its Deployment keeps it: same pod, same uid, not replaced, its label kept by the kubelet.

mod common;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_harness::{Cluster, ClusterConfig, NodeSpec};
use serde_json::{Value, json};
use std::time::Duration;

fn serving_deployment(name: &str, replicas: u32) -> Value {
    let mut d = deployment(name, replicas, 0);
    // The Service selects `serving=yes` too; the Deployment's selector does not.
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": name, "serving": "yes"});
    d["spec"]["template"]["spec"]["containers"][0]["ports"] =
        json!([{"name": "http", "containerPort": 9000}]);
    d
}

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name, "serving": "yes"},
                 "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    })
}

/// The endpoints of the slice of Service `name`: (pod, ready).
async fn endpoints(client: &kube::Client, name: &str) -> Option<Vec<(String, bool)>> {
    let slices: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource {
            group: "discovery.k8s.io".into(),
            version: "v1".into(),
            api_version: "discovery.k8s.io/v1".into(),
            kind: "EndpointSlice".into(),
            plural: "endpointslices".into(),
        },
    );
    let listed = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
        .await
        .ok()?;
    let slice = serde_json::to_value(listed.items.first()?).ok()?;
    assert_eq!(
        slice["ports"],
        json!([{"name": "web", "port": 9000, "protocol": "TCP"}])
    );
    assert_eq!(slice["addressType"], "IPv4");
    Some(
        slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["targetRef"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    e["conditions"]["ready"] == true,
                )
            })
            .collect(),
    )
}

#[tokio::test]
async fn a_pod_relabelled_out_of_the_selector_leaves_the_slice_and_stays_with_its_deployment() {
    let cluster = Cluster::start(
        ClusterConfig::new("eps")
            .readiness_delay(Duration::from_millis(50))
            .node(NodeSpec::new("n-0")),
    )
    .await
    .unwrap();
    let client = cluster.client().unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "default");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(serving_deployment("ranker", 3)).unwrap(),
        )
        .await
        .unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(service("ranker")).unwrap(),
        )
        .await
        .unwrap();
    let all_ready = eventually("3 ready endpoints", 10, || async {
        let eps = endpoints(&client, "ranker").await?;
        (eps.len() == 3 && eps.iter().all(|e| e.1)).then_some(eps)
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let out = all_ready[0].0.clone();
    let before = pods.get(&out).await.unwrap();
    pods.patch(
        &out,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"serving": "no"}}})),
    )
    .await
    .unwrap();
    let eps = eventually("the relabelled pod out of the slice", 10, || async {
        let eps = endpoints(&client, "ranker").await?;
        (eps.len() == 2).then_some(eps)
    })
    .await;
    assert!(eps.iter().all(|(pod, ready)| pod != &out && *ready));
    // A change the kubelet reacts to (a scale-up) must not put the template's label back, nor
    // replace the pod: it is the same pod, still the Deployment's.
    deployments
        .patch(
            "ranker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    eventually("3 ready endpoints again (the new replica)", 10, || async {
        let eps = endpoints(&client, "ranker").await?;
        (eps.len() == 3 && eps.iter().all(|e| e.1)).then_some(())
    })
    .await;
    let after = pods.get(&out).await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(after.labels()["serving"], "no");
    assert_eq!(
        after.metadata.owner_references, before.metadata.owner_references,
        "still its Deployment's"
    );
    let listed = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items.len(),
        4,
        "no replacement for the relabelled pod"
    );
    // Back in the selector: back in the slice.
    pods.patch(
        &out,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"serving": "yes"}}})),
    )
    .await
    .unwrap();
    eventually("4 endpoints", 10, || async {
        let eps = endpoints(&client, "ranker").await?;
        (eps.len() == 4).then_some(())
    })
    .await;
    // The Service gone: its slice goes with it.
    services
        .delete("ranker", &Default::default())
        .await
        .unwrap();
    eventually("the slice deleted with its Service", 10, || async {
        endpoints(&client, "ranker").await.is_none().then_some(())
    })
    .await;
}

use kube::ResourceExt;
