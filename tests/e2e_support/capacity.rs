//! Public capacity in the end-to-end tests (issue #19): the harness's stockouts and node
//! reclamation, and pools with a spot and an on-demand pool in the public cluster.

use super::{APP_NAMESPACE, Estate, POOL_LABEL, TestCluster, eventually};
use kube_harness::NodeSpec;
use serde_json::json;
use skybridge::api::{ComputePool, SHORT_CONDITION};

/// Node label value of the on-demand pool's nodes in the public cluster (the spot pool uses the
/// public cluster's `cloud-l4` node).
pub const ON_DEMAND_NODES: &str = "cloud-od";

/// Stockout handling of the spot pool in these tests: short after 10 s unschedulable, kept out
/// 6 s, then 4 s without an unschedulable replica.
pub const UNSCHEDULABLE_SECONDS: u64 = 10;
pub const BACKOFF_SECONDS: u64 = 6;
pub const RECOVERY_SECONDS: u64 = 4;

async fn control(cluster: &TestCluster, method: reqwest::Method, path: &str, body: Option<String>) {
    let url = format!("{}{path}", cluster.url());
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("harness control answers");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// The pool whose nodes carry `POOL_LABEL=value` is out of stock: its new replicas stay
/// `Pending`/`Unschedulable`.
pub async fn set_stockout(cluster: &TestCluster, value: &str) {
    let scenario = json!({"stockouts": [{POOL_LABEL: value}]});
    control(
        cluster,
        reqwest::Method::PUT,
        "/harness/capacity",
        Some(scenario.to_string()),
    )
    .await;
}

pub async fn lift_stockouts(cluster: &TestCluster) {
    control(cluster, reqwest::Method::DELETE, "/harness/capacity", None).await;
}

/// Every Pod patch in `cluster` fails with a 500 until [`clear_faults`] (the operator's only Pod
/// writes are the serving labels of `capacity::drain`).
pub async fn fail_pod_patches(cluster: &TestCluster) {
    let faults = json!({"seed": 1, "rules": [{"status": 500, "verb": "patch", "path": "/pods/"}]});
    control(
        cluster,
        reqwest::Method::PUT,
        "/harness/faults",
        Some(faults.to_string()),
    )
    .await;
}

pub async fn clear_faults(cluster: &TestCluster) {
    control(cluster, reqwest::Method::DELETE, "/harness/faults", None).await;
}

/// Taints `node` for reclamation (Karpenter's `karpenter.sh/disrupted`) and deletes it after
/// `notice_ms`.
pub async fn reclaim(cluster: &TestCluster, node: &str, notice_ms: u64) {
    control(
        cluster,
        reqwest::Method::POST,
        &format!("/harness/nodes/{node}/reclaim?noticeMs={notice_ms}"),
        None,
    )
    .await;
}

impl Estate {
    /// The private pool `dc1-l4`, a public `spot` pool on the public cluster's `cloud-l4` nodes
    /// and a public `ondemand` pool on a node `cloud-od-0` of `on_demand_gpus` GPUs (added
    /// here). Spot is cheaper, so it is the first public choice.
    pub fn apply_capacity_pools(&self, on_demand_gpus: u32) {
        self.public
            .upsert_node(
                NodeSpec::new("cloud-od-0")
                    .gpus(on_demand_gpus)
                    .label(POOL_LABEL, ON_DEMAND_NODES),
            )
            .expect("on-demand node added");
        self.apply(&format!(
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
  stockout: {{unschedulableSeconds: {UNSCHEDULABLE_SECONDS}, backoffSeconds: {BACKOFF_SECONDS}, recoverySeconds: {RECOVERY_SECONDS}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: spot}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  capacityType: Spot
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: burst}}
  nodeSelector: {{{POOL_LABEL}: cloud-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.4}}
  startupSeconds: 120
  artifactStore: {{bucket: models-public}}
  stockout: {{unschedulableSeconds: {UNSCHEDULABLE_SECONDS}, backoffSeconds: {BACKOFF_SECONDS}, recoverySeconds: {RECOVERY_SECONDS}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: ondemand}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: burst}}
  nodeSelector: {{{POOL_LABEL}: {ON_DEMAND_NODES}}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.9}}
  startupSeconds: 120
  artifactStore: {{bucket: models-public}}
"#
        ));
    }

    /// Waits until pool `name` satisfies `check`, and returns it.
    pub async fn wait_for_pool(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ComputePool) -> bool,
    ) -> ComputePool {
        let api = self.pools_api();
        eventually(what, || async {
            let pool = api.get(name).await.ok()?;
            check(&pool).then_some(pool)
        })
        .await
    }
}

/// The pool's `Short` condition status (`None` before the operator wrote one).
pub fn short(pool: &ComputePool) -> Option<bool> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == SHORT_CONDITION)
        .map(|c| c.status == "True")
}

/// EndpointSlices (the harness's stand-in of the endpointslice controller writes them).
pub fn endpoint_slices() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "discovery.k8s.io".into(),
        version: "v1".into(),
        api_version: "discovery.k8s.io/v1".into(),
        kind: "EndpointSlice".into(),
        plural: "endpointslices".into(),
    }
}

/// The endpoints of Service `service` version by version, from a history of its EndpointSlices:
/// (arrival, pod name → ready). One slice per Service (as the stand-in writes), so each version
/// is the whole set; a deleted slice is an empty set.
pub fn endpoints_of(
    history: &super::traffic::History,
    service: &str,
) -> Vec<(std::time::Instant, std::collections::BTreeMap<String, bool>)> {
    history
        .versions()
        .into_iter()
        .filter(|s| s.object["metadata"]["labels"]["kubernetes.io/service-name"] == service)
        .map(|s| {
            let endpoints = if s.deleted {
                Default::default()
            } else {
                s.object["endpoints"]
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
                    .collect()
            };
            (s.at, endpoints)
        })
        .collect()
}

/// The spot pool's nodes (`POOL_LABEL=cloud-l4`) come from a cluster-autoscaler node group that
/// adds none: each unschedulable replica gets its `NotTriggerScaleUp` Event.
pub async fn set_autoscaler_adds_no_node(cluster: &TestCluster) {
    let scenario = json!({"elastic": [{
        "selector": {POOL_LABEL: "cloud-l4"},
        "template": {"name": "cloud-spot", "gpus": 2, "labels": {POOL_LABEL: "cloud-l4"}},
        "delayMs": 1000,
        "maxNodes": 4,
        "noScaleUp": true,
    }]});
    control(
        cluster,
        reqwest::Method::PUT,
        "/harness/capacity",
        Some(scenario.to_string()),
    )
    .await;
}

impl Estate {
    /// Makes the spot pool of [`Estate::apply_capacity_pools`] elastic: a cluster-autoscaler
    /// node group of 2-GPU nodes, up to 4, that take `node_startup_seconds` to arrive.
    pub fn make_spot_elastic(&self, node_startup_seconds: u32) {
        self.apply(&format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: spot}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  capacityType: Spot
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: burst}}
  nodeSelector: {{{POOL_LABEL}: cloud-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.4}}
  startupSeconds: 120
  artifactStore: {{bucket: models-public}}
  elastic: {{autoscaler: ClusterAutoscaler, nodeGroup: spot-l4, nodeStartupSeconds: {node_startup_seconds}, maxNodes: 4, gpusPerNode: 2}}
  stockout: {{unschedulableSeconds: {UNSCHEDULABLE_SECONDS}, backoffSeconds: {BACKOFF_SECONDS}, recoverySeconds: {RECOVERY_SECONDS}}}
"#
        ));
    }
}

/// Withdraws the reclamation of `node` (Karpenter's taint removed, no deletion).
pub async fn cancel_reclaim(cluster: &TestCluster, node: &str) {
    control(
        cluster,
        reqwest::Method::DELETE,
        &format!("/harness/nodes/{node}/reclaim"),
        None,
    )
    .await;
}
