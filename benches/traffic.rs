//! Traffic follows readiness: over repeated bursts, the time from a public backend's replicas
//! becoming ready (the public Deployment's `readyReplicas` turning non-zero, as a watch of that
//! cluster sees it: the operator's children watch sees the same event) to the route in the home
//! cluster carrying a non-zero weight for it (as a watch of the route sees it).
//!
//! Setup: three `kube-harness` clusters (hub; private with the Gateway API and MCS `v1beta1`;
//! public with MCS `v1alpha1`), the MCS and Gateway stand-ins, the operator in-process. One
//! component alternates between 2 replicas (private only) and 4 (2 burst to public), with
//! `drainSeconds: 0`. Prints the median and 99th percentile; target p99 <= 1 s.
//! `SKYBRIDGE_BENCH_BURSTS` sets the number of bursts (default 100).

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, WatchEvent, WatchParams};
use kube_harness::{Cluster, ClusterConfig, ClusterHandle, ClusterSet, NodeSpec};
use serde_json::{Value, json};
use skybridge::api::ModelDeployment;
use skybridge::operator::runtime::{RunConfig, run};
use std::time::{Duration, Instant};

const OPERATOR_NAMESPACE: &str = "skybridge-system";
const APP_NAMESPACE: &str = "shop";
const BURST_NAMESPACE: &str = "burst";
const POOL_LABEL: &str = "skybridge.bench/pool";
const TARGET_P99: Duration = Duration::from_secs(1);

fn routes() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

/// A stream of (arrival, object) of every change of `resource` in `namespace`.
async fn watch(
    cluster: &ClusterHandle,
    resource: ApiResource,
    namespace: &str,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<(Instant, Value)>> {
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client()?, namespace, &resource);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut version = api
        .list(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    tokio::spawn(async move {
        loop {
            let Ok(stream) = api
                .watch(&WatchParams::default().timeout(60), &version)
                .await
            else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let mut stream = stream.boxed();
            while let Some(Ok(event)) = stream.next().await {
                let (deleted, object) = match event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) => (false, o),
                    WatchEvent::Deleted(o) => (true, o),
                    WatchEvent::Bookmark(b) => {
                        version = b.metadata.resource_version;
                        continue;
                    }
                    WatchEvent::Error(_) => break,
                };
                version = object.metadata.resource_version.clone().unwrap_or_default();
                let mut value = serde_json::to_value(object).unwrap_or_default();
                if deleted {
                    // Marks the last state of a deleted object (not an API field).
                    value["deleted"] = Value::Bool(true);
                }
                if tx.send((Instant::now(), value)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

fn public_weight(route: &Value) -> u64 {
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
        .filter(|b| b["kind"] == "ServiceImport" && b["namespace"] == BURST_NAMESPACE)
        .map(|b| b["weight"].as_u64().unwrap_or(1))
        .sum()
}

async fn setup() -> Result<(ClusterHandle, ClusterHandle, ClusterHandle, ClusterSet)> {
    let hub = Cluster::start(ClusterConfig::new("hub")).await?;
    let private = Cluster::start(
        ClusterConfig::new("private")
            .readiness_delay(Duration::from_millis(100))
            .gateway_api(true)
            .mcs_api(&["v1beta1"])
            .node(NodeSpec::new("dc1").gpus(2).label(POOL_LABEL, "dc1")),
    )
    .await?;
    let public = Cluster::start(
        ClusterConfig::new("public")
            .readiness_delay(Duration::from_millis(300))
            .mcs_api(&["v1alpha1"])
            .node(NodeSpec::new("cloud").gpus(8).label(POOL_LABEL, "cloud")),
    )
    .await?;
    let set = ClusterSet::link(&[&private, &public])?;
    let namespaces = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP_NAMESPACE}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {BURST_NAMESPACE}}}\n"
    );
    private.apply_yaml(&namespaces, "bench")?;
    public.apply_yaml(&namespaces, "bench")?;
    private.apply_yaml(
        &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: {APP_NAMESPACE}}}\nspec: {{gatewayClassName: bench, listeners: [{{name: http, port: 80, protocol: HTTP}}]}}\n"),
        "bench",
    )?;
    hub.apply_yaml(&skybridge::api::crds_yaml()?, "bench")?;
    let secret = |name: &str, kubeconfig: &str| {
        serde_yaml_ng::to_string(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
            "stringData": {"kubeconfig": kubeconfig},
        }))
    };
    hub.apply_yaml(
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NAMESPACE}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP_NAMESPACE}}}\n---\n{}\n---\n{}\n",
            secret("private-kubeconfig", private.kubeconfig_yaml())?,
            secret("public-kubeconfig", public.kubeconfig_yaml())?,
        ),
        "bench",
    )?;
    hub.apply_yaml(
        &format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: dc1}}
spec:
  cloud: private
  provider: onprem
  region: fra
  cluster: {{kubeconfigSecretRef: {{name: private-kubeconfig}}, namespace: {APP_NAMESPACE}}}
  nodeSelector: {{{POOL_LABEL}: dc1}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.3}}
  startupSeconds: 30
  artifactStore: {{bucket: models, endpoint: "http://127.0.0.1:1", pathStyle: true}}
  traffic: {{export: ServiceExport}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: cloud}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: {BURST_NAMESPACE}}}
  nodeSelector: {{{POOL_LABEL}: cloud}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.9}}
  startupSeconds: 120
  artifactStore: {{bucket: models-public}}
  traffic: {{export: ServiceExport}}
"#
        ),
        "bench",
    )?;
    Ok((hub, private, public, set))
}

fn deployment(replicas: u32) -> String {
    format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: ranker, namespace: {APP_NAMESPACE}}}
spec:
  model: {{source: {{uri: "s3://models/ranker", pool: dc1}}, version: "1"}}
  components:
    - name: ranker
      dataClass: internal
      image: pytorch/torchserve:0.12.0-gpu
      resources: {{gpu: {{count: 1, type: nvidia-l4}}, cpu: "1", memory: 1Gi}}
      replicas: {{min: {replicas}, max: {replicas}}}
      traffic: {{parentRefs: [{{name: edge}}], drainSeconds: 0}}
"#
    )
}

async fn bench() -> Result<()> {
    let bursts: usize = std::env::var("SKYBRIDGE_BENCH_BURSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (hub, private, public, _set) = setup().await?;
    let config = RunConfig {
        namespace: OPERATOR_NAMESPACE.into(),
        identity: "bench".into(),
        leader_election: false,
        lease_name: "skybridge-leader".into(),
        lease_seconds: 15,
        probe_addr: "127.0.0.1:0".parse()?,
        period: Duration::from_secs(1),
        image: "skybridge:bench".into(),
        cluster_qps: 200,
    };
    let client = hub.client()?;
    let operator = tokio::spawn(run(client, config, std::future::pending::<()>()));
    let mut ready_seen = watch(
        &public,
        ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        BURST_NAMESPACE,
    )
    .await?;
    let mut route_seen = watch(&private, routes(), APP_NAMESPACE).await?;
    let mds: Api<ModelDeployment> = Api::namespaced(hub.client()?, APP_NAMESPACE);
    let apply = |replicas: u32| {
        let mds = mds.clone();
        async move {
            let md: Value = serde_yaml_ng::from_str(&deployment(replicas))?;
            mds.patch(
                "ranker",
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&md),
            )
            .await
            .context("apply")?;
            anyhow::Ok(())
        }
    };
    apply(2).await?;
    let mut latencies = Vec::with_capacity(bursts);
    for burst in 0..bursts {
        apply(4).await?;
        // The public replicas turn ready...
        let ready_at = loop {
            let (at, d) = tokio::time::timeout(Duration::from_secs(60), ready_seen.recv())
                .await
                .context("public replicas ready")?
                .context("watch ended")?;
            if d["status"]["readyReplicas"].as_i64().unwrap_or(0) > 0 {
                break at;
            }
        };
        // ... and the route carries them.
        let routed_at = loop {
            let (at, r) = tokio::time::timeout(Duration::from_secs(60), route_seen.recv())
                .await
                .context("route weighted")?
                .context("watch ended")?;
            if public_weight(&r) > 0 {
                break at;
            }
        };
        if routed_at < ready_at {
            bail!("burst {burst}: the route weighted the public backend before it was ready");
        }
        latencies.push(routed_at - ready_at);
        // Fail back: the public backend drains (0 s) and its workload goes.
        apply(2).await?;
        loop {
            let (_, r) = tokio::time::timeout(Duration::from_secs(60), route_seen.recv())
                .await
                .context("route drained")?
                .context("watch ended")?;
            if public_weight(&r) == 0 {
                break;
            }
        }
        loop {
            let (_, d) = tokio::time::timeout(Duration::from_secs(60), ready_seen.recv())
                .await
                .context("public workload removed")?
                .context("watch ended")?;
            if d["deleted"] == true
                || d["metadata"]["deletionTimestamp"].is_string()
                || d["spec"]["replicas"].as_i64() == Some(0)
                || d["status"]["readyReplicas"].as_i64().unwrap_or(0) == 0
            {
                // Drain what else that removal sends, so the next burst starts clean.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while ready_seen.try_recv().is_ok() {}
                while route_seen.try_recv().is_ok() {}
                break;
            }
        }
    }
    operator.abort();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let (median, p99) = (at(0.5), at(0.99));
    println!(
        "traffic: {} bursts, ready -> route weighted: median {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 <= {} ms: {})",
        latencies.len(),
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        TARGET_P99.as_millis(),
        if p99 <= TARGET_P99 { "met" } else { "MISSED" }
    );
    Ok(())
}

fn main() -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}
