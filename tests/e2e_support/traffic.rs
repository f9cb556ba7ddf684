//! Traffic e2e setup: the three harness clusters with the Gateway API (private: the home of the
//! routes) and the Multi-Cluster Services API (private `v1beta1`, public `v1alpha1`: the
//! operator must use what each cluster's discovery offers), a Gateway, the MCS stand-in linking
//! the members, pools that export, and recorders that keep every version a watch delivers.

use super::{APP_NAMESPACE, Estate, OPERATOR_NAMESPACE, POOL_LABEL, TestCluster};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, WatchEvent, WatchParams};
use kube_harness::{Cluster, ClusterConfig, ClusterSet, NodeSpec};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Namespace of the public pool's children (and so of its export and import).
pub const BURST_NAMESPACE: &str = "burst";
/// The Gateway the routes attach to, in the private cluster.
pub const GATEWAY: &str = "edge";

/// Harness clusters with the traffic APIs, linked by the MCS stand-in (kept alive by the
/// returned `ClusterSet`). Pools export (`traffic.export: ServiceExport`).
pub async fn start_traffic_estate(
    private_gpus: u32,
    public_gpus: u32,
    public_readiness: Duration,
) -> (Estate, ClusterSet) {
    let fast = Duration::from_millis(100);
    let hub = Cluster::start(ClusterConfig::new("hub").readiness_delay(fast))
        .await
        .expect("hub starts");
    let private = Cluster::start(
        ClusterConfig::new("private")
            .readiness_delay(fast)
            .gateway_api(true)
            .mcs_api(&["v1beta1"])
            .node(
                NodeSpec::new("dc1-gpu-0")
                    .gpus(private_gpus)
                    .label(POOL_LABEL, "dc1-l4"),
            ),
    )
    .await
    .expect("private cluster starts");
    let public = Cluster::start(
        ClusterConfig::new("public")
            .readiness_delay(public_readiness)
            .mcs_api(&["v1alpha1"])
            .node(
                NodeSpec::new("cloud-gpu-0")
                    .gpus(public_gpus)
                    .label(POOL_LABEL, "cloud-l4"),
            ),
    )
    .await
    .expect("public cluster starts");
    let set = ClusterSet::link(&[&private, &public]).expect("cluster set");
    // Namespace sameness (MCS): both members have both namespaces, so each can import the
    // other's exports.
    let namespaces = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP_NAMESPACE}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {BURST_NAMESPACE}}}\n"
    );
    for member in [&private, &public] {
        member
            .apply_yaml(&namespaces, "e2e-setup")
            .expect("namespaces");
    }
    private
        .apply_yaml(
            &format!(
                r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {GATEWAY}, namespace: {APP_NAMESPACE}}}
spec:
  gatewayClassName: harness
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"#
            ),
            "platform-team",
        )
        .expect("gateway");
    let estate = Estate {
        hub: TestCluster::Harness(hub),
        private: TestCluster::Harness(private),
        public: TestCluster::Harness(public),
    };
    estate
        .hub
        .apply_yaml(&skybridge::api::crds_yaml().unwrap(), "e2e-setup")
        .expect("CRDs apply");
    let secret = |name: &str, kubeconfig: &str| {
        serde_yaml_ng::to_string(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
            "stringData": {"kubeconfig": kubeconfig},
        }))
        .unwrap()
    };
    let setup = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NAMESPACE}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP_NAMESPACE}}}\n---\n{}\n---\n{}\n",
        secret("private-kubeconfig", estate.private.kubeconfig_yaml()),
        secret("public-kubeconfig", estate.public.kubeconfig_yaml()),
    );
    estate.hub.apply_yaml(&setup, "e2e-setup").expect("setup");
    // The two pools of `Estate::apply_pools`, able to receive cross-cluster traffic.
    estate.apply(&format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: dc1-l4}}
spec:
  cloud: private
  provider: onprem
  region: fra-dc1
  cluster: {{kubeconfigSecretRef: {{name: private-kubeconfig}}, namespace: {APP_NAMESPACE}}}
  nodeSelector: {{{POOL_LABEL}: dc1-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.3}}
  startupSeconds: 30
  artifactStore: {{bucket: models, endpoint: "http://127.0.0.1:1", pathStyle: true}}
  traffic: {{export: ServiceExport}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: cloud-l4}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: {BURST_NAMESPACE}}}
  nodeSelector: {{{POOL_LABEL}: cloud-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.9}}
  startupSeconds: 120
  artifactStore: {{bucket: models-public}}
  traffic: {{export: ServiceExport}}
"#
    ));
    (estate, set)
}

/// A deployment of one GPU component `ranker` with a route on the private Gateway.
pub fn routed_deployment(
    name: &str,
    class: &str,
    min: u32,
    max: u32,
    drain_seconds: u32,
) -> String {
    super::deployment_yaml(
        name,
        class,
        min,
        max,
        &format!(
            "      traffic:\n        parentRefs: [{{name: {GATEWAY}}}]\n        hostnames: [{name}.shop.internal]\n        drainSeconds: {drain_seconds}\n"
        ),
    )
}

/// One version of a watched object, as the watch delivered it, with when it arrived.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub deleted: bool,
    pub object: Value,
}

/// Every version a watch delivers, from when it starts until dropped.
pub struct History {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl History {
    /// Watches `resource` in `namespace` of `cluster` (re-watching from the last version if the
    /// stream ends, so no version is missed while the cluster answers).
    pub async fn start(cluster: &TestCluster, resource: ApiResource, namespace: &str) -> Self {
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client().expect("client"), namespace, &resource);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let sink = seen.clone();
        // Start from a list: versions older than the watch are part of the history too.
        let listed = api.list(&Default::default()).await.expect("list");
        let mut version = listed.metadata.resource_version.clone().unwrap_or_default();
        for item in listed.items {
            sink.lock().unwrap().push(Seen {
                at: Instant::now(),
                deleted: false,
                object: serde_json::to_value(item).unwrap(),
            });
        }
        let task = tokio::spawn(async move {
            loop {
                let params = WatchParams::default().timeout(30);
                let Ok(stream) = api.watch(&params, &version).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut stream = stream.boxed();
                while let Some(event) = stream.next().await {
                    let (deleted, object) = match event {
                        Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => (false, o),
                        Ok(WatchEvent::Deleted(o)) => (true, o),
                        Ok(WatchEvent::Bookmark(b)) => {
                            version = b.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(_)) | Err(_) => break,
                    };
                    version = object.metadata.resource_version.clone().unwrap_or_default();
                    sink.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        deleted,
                        object: serde_json::to_value(object).unwrap(),
                    });
                }
            }
        });
        Self { seen, task }
    }

    /// Every version so far.
    pub fn versions(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn http_routes() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        plural: "httproutes".into(),
    }
}

pub fn services() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&())
}

pub fn deployments() -> ApiResource {
    ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&())
}

/// The route's backendRefs: (kind, namespace or "", name, weight).
pub fn route_backends(route: &Value) -> Vec<(String, String, String, u64)> {
    route["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
        .map(|b| {
            (
                b["kind"].as_str().unwrap_or("Service").to_string(),
                b["namespace"].as_str().unwrap_or_default().to_string(),
                b["name"].as_str().unwrap_or_default().to_string(),
                b["weight"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

/// The weight a route version gives the backend named `name` (None: not in the route).
pub fn weight_of(route: &Value, name: &str) -> Option<u64> {
    route_backends(route)
        .into_iter()
        .find(|(_, _, n, _)| n == name)
        .map(|b| b.3)
}

/// The backend of `pool` in a deployment's status (component `ranker`).
pub fn backend_of<'a>(
    md: &'a skybridge::api::ModelDeployment,
    pool: &str,
) -> Option<&'a skybridge::api::TrafficBackendStatus> {
    md.status
        .as_ref()?
        .components
        .iter()
        .flat_map(|c| &c.traffic)
        .find(|b| b.pool == pool)
}
