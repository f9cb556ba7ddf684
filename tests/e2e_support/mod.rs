//! Shared setup of the operator's end-to-end tests: three clusters served by `kube-harness` on
//! loopback (the hub the operator runs in, a private GPU cluster, a public GPU cluster), the
//! CRDs, kubeconfig Secrets, and the real operator started in-process. Tests then act only
//! through the Kubernetes API, as a user would.
#![allow(dead_code)]

pub mod capacity;
pub mod clusters;
pub mod demand;
pub mod traffic;

pub use clusters::TestCluster;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use kube_harness::{Cluster, ClusterConfig, NodeSpec};
use serde_json::{Value, json};
use skybridge::api::{ComputePool, ModelDeployment};
use skybridge::operator::runtime::{RunConfig, run};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any awaited state may take; generous for a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub const OPERATOR_NAMESPACE: &str = "skybridge-system";
pub const APP_NAMESPACE: &str = "shop";

pub struct Estate {
    pub hub: TestCluster,
    pub private: TestCluster,
    pub public: TestCluster,
}

/// Node label that selects each pool's nodes.
pub const POOL_LABEL: &str = "skybridge.test/pool";

impl Estate {
    /// Hub with the CRDs; a private cluster with `private_gpus` L4 GPUs in pool `dc1-l4`;
    /// a public cluster with `public_gpus` L4 GPUs in pool `cloud-l4`.
    pub async fn start(private_gpus: u32, public_gpus: u32) -> Self {
        init_logs();
        let estate = match clusters::real_contexts() {
            Some((path, [hub, private, public])) => {
                let hub = TestCluster::Real(clusters::RealCluster::connect(&path, &hub).await);
                let private =
                    TestCluster::Real(clusters::RealCluster::connect(&path, &private).await);
                let public =
                    TestCluster::Real(clusters::RealCluster::connect(&path, &public).await);
                clusters::reset(&hub, [&private, &public], APP_NAMESPACE).await;
                clusters::advertise_gpus(&private, POOL_LABEL, "dc1-l4", private_gpus).await;
                clusters::advertise_gpus(&public, POOL_LABEL, "cloud-l4", public_gpus).await;
                Self {
                    hub,
                    private,
                    public,
                }
            }
            None => Self::start_harness(private_gpus, public_gpus).await,
        };
        estate
            .hub
            .apply_yaml(&skybridge::api::crds_yaml().unwrap(), "e2e-setup")
            .expect("CRDs apply");
        let secrets = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NAMESPACE}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {APP_NAMESPACE}}}\n---\n{}\n---\n{}\n",
            kubeconfig_secret("private-kubeconfig", estate.private.kubeconfig_yaml()),
            kubeconfig_secret("public-kubeconfig", estate.public.kubeconfig_yaml()),
        );
        estate
            .hub
            .apply_yaml(&secrets, "e2e-setup")
            .expect("namespaces and secrets apply");
        estate
    }

    async fn start_harness(private_gpus: u32, public_gpus: u32) -> Self {
        let fast = Duration::from_millis(100);
        let hub = Cluster::start(ClusterConfig::new("hub").readiness_delay(fast))
            .await
            .expect("hub starts");
        let private = Cluster::start(
            ClusterConfig::new("private").readiness_delay(fast).node(
                NodeSpec::new("dc1-gpu-0")
                    .gpus(private_gpus)
                    .label(POOL_LABEL, "dc1-l4"),
            ),
        )
        .await
        .expect("private cluster starts");
        let public = Cluster::start(
            ClusterConfig::new("public").readiness_delay(fast).node(
                NodeSpec::new("cloud-gpu-0")
                    .gpus(public_gpus)
                    .label(POOL_LABEL, "cloud-l4"),
            ),
        )
        .await
        .expect("public cluster starts");
        Self {
            hub: TestCluster::Harness(hub),
            private: TestCluster::Harness(private),
            public: TestCluster::Harness(public),
        }
    }

    /// Whether the clusters are harness instances; on real clusters, says that the calling test
    /// is skipped because it needs harness controls (faults, reachability, Nodes).
    pub fn harness_only(&self, test: &str) -> bool {
        let harness = self.hub.is_harness();
        if !harness {
            eprintln!("SKIPPED on real clusters: {test} needs kube-harness controls");
        }
        harness
    }

    pub fn hub_client(&self) -> Client {
        self.hub.client().expect("hub client")
    }

    /// Applies YAML to the hub as a user would (`kubectl apply --server-side`).
    pub fn apply(&self, yaml: &str) {
        self.hub.apply_yaml(yaml, "kubectl").expect("objects apply");
    }

    /// The two pools used by most tests.
    pub fn apply_pools(&self) {
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
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: cloud-l4}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: burst}}
  nodeSelector: {{{POOL_LABEL}: cloud-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.9}}
  startupSeconds: 120
  artifactStore: {{bucket: models-public}}
"#
        ));
    }

    pub fn deployments_api(&self) -> Api<ModelDeployment> {
        Api::namespaced(self.hub_client(), APP_NAMESPACE)
    }

    pub fn pools_api(&self) -> Api<ComputePool> {
        Api::all(self.hub_client())
    }
}

/// Operator logs in the test output, filtered by `RUST_LOG` (default: warnings).
fn init_logs() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn kubeconfig_secret(name: &str, kubeconfig: &str) -> String {
    serde_yaml_ng::to_string(&json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
        "stringData": {"kubeconfig": kubeconfig},
    }))
    .unwrap()
}

/// A ModelDeployment with one GPU component.
pub fn deployment_yaml(name: &str, class: &str, min: u32, max: u32, extra: &str) -> String {
    format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: {APP_NAMESPACE}}}
spec:
  model: {{source: {{uri: "s3://models/{name}", pool: dc1-l4}}, version: "1"}}
  components:
    - name: ranker
      dataClass: {class}
      image: pytorch/torchserve:0.12.0-gpu
      resources: {{gpu: {{count: 1, type: nvidia-l4}}, cpu: "1", memory: 1Gi}}
      replicas: {{min: {min}, max: {max}}}
{extra}
"#
    )
}

/// The operator, running in-process against the hub until dropped, on a runtime and thread of
/// its own as in the binary (see `run_like_the_binary`).
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    pub probe_addr: SocketAddr,
}

impl Operator {
    pub async fn start(estate: &Estate) -> Self {
        Self::start_named(estate, "operator-0", false).await
    }

    pub async fn start_named(estate: &Estate, identity: &str, leader_election: bool) -> Self {
        let probe_addr = free_addr();
        let config = RunConfig {
            namespace: OPERATOR_NAMESPACE.into(),
            identity: identity.into(),
            leader_election,
            lease_name: "skybridge-leader".into(),
            lease_seconds: 3,
            probe_addr,
            period: Duration::from_secs(1),
            image: "skybridge:e2e".into(),
            cluster_qps: 200,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = run_like_the_binary(estate, move |client| async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(err) = run(client, config, shutdown).await {
                eprintln!("operator stopped with an error: {err}");
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
            probe_addr,
        }
    }

    /// The operator as `skybridge run` starts it by default: managing model artifacts (syncs
    /// to the pools' stores, `fetch-model` init containers) with `artifacts`.
    pub async fn start_with_artifacts(
        estate: &Estate,
        artifacts: skybridge::operator::artifacts::syncer::ArtifactsConfig,
    ) -> Self {
        let probe_addr = free_addr();
        let config = RunConfig {
            namespace: OPERATOR_NAMESPACE.into(),
            identity: "operator-0".into(),
            leader_election: false,
            lease_name: "skybridge-leader".into(),
            lease_seconds: 3,
            probe_addr,
            period: Duration::from_secs(1),
            image: "skybridge:e2e".into(),
            cluster_qps: 200,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = run_like_the_binary(estate, move |client| async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let result = skybridge::operator::runtime::run_with_artifacts(
                client,
                config,
                Some(artifacts),
                shutdown,
            )
            .await;
            if let Err(err) = result {
                eprintln!("operator stopped with an error: {err}");
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
            probe_addr,
        }
    }

    /// Kills the operator at once, mid-reconcile if it is in one.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Stops gracefully and waits.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
    }
}

/// Runs `operator` as `skybridge run` does: on a single-thread runtime of its own (on a thread
/// of its own), with its own client of the hub. Aborting the returned task stops the runtime
/// and everything the operator spawned on it, as a killed process would.
fn run_like_the_binary<F, Fut>(estate: &Estate, operator: F) -> JoinHandle<()>
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Tells the runtime's thread that the operator ended, however it ended.
    struct Ended(Option<oneshot::Sender<()>>);
    impl Drop for Ended {
        fn drop(&mut self) {
            if let Some(ended) = self.0.take() {
                let _ = ended.send(());
            }
        }
    }
    let kubeconfig = estate.hub.kubeconfig_yaml().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the operator's runtime starts");
    let (ended, operator_ended) = oneshot::channel();
    let task = runtime.spawn(async move {
        let _ended = Ended(Some(ended));
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&kubeconfig).expect("hub kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("hub client config");
        operator(Client::try_from(config).expect("hub client")).await;
    });
    std::thread::Builder::new()
        .name("operator".into())
        .spawn(move || {
            let _ = runtime.block_on(operator_ended);
        })
        .expect("the operator's thread starts");
    task
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A probe port per operator, outside the ephemeral range the harness clusters bind in, so that
/// parallel tests never race for one.
fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 20;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("bound");
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `PATIENCE`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `name` is gone from `api` (fully deleted, finalizers done).
pub async fn eventually_gone<K>(what: &str, api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, || async {
        api.get_opt(name)
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await
}

pub fn condition<'a>(md: &'a ModelDeployment, type_: &str) -> Option<&'a Condition> {
    md.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn is_true(md: &ModelDeployment, type_: &str) -> bool {
    condition(md, type_).is_some_and(|c| c.status == "True")
}

/// Whether nothing stranded by a partition awaits adoption or scale-in: until then a
/// deployment may run extra replicas in a pool whose cluster stopped answering (or answered
/// the pool's probe with errors), left alone on purpose.
pub fn nothing_stranded_pending(md: &ModelDeployment) -> bool {
    md.status.as_ref().is_none_or(|s| {
        s.stranded
            .iter()
            .all(skybridge::operator::deployment::stranded::resolved)
    })
}

/// Waits until `name` satisfies `check` with status written for its current generation; on
/// timeout the failure shows the last status seen.
pub async fn wait_for(
    estate: &Estate,
    name: &str,
    what: &str,
    check: impl Fn(&ModelDeployment) -> bool,
) -> ModelDeployment {
    wait_for_within(estate, name, what, PATIENCE, check).await
}

/// [`wait_for`] with a patience of its own, for a wait the operator prolongs on purpose.
pub async fn wait_for_within(
    estate: &Estate,
    name: &str,
    what: &str,
    patience: Duration,
    check: impl Fn(&ModelDeployment) -> bool,
) -> ModelDeployment {
    let api = estate.deployments_api();
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = None;
    loop {
        if let Ok(Some(md)) = api.get_opt(name).await {
            let current =
                md.status.as_ref().and_then(|s| s.observed_generation) == md.metadata.generation;
            if current && check(&md) {
                return md;
            }
            last = md.status;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for: {what}; last status: {}",
                serde_json::to_string_pretty(&last).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Replicas per Deployment name of one cluster's Skybridge children, with their readiness.
pub async fn children(cluster: &TestCluster) -> Vec<(String, i32, i32)> {
    let api: Api<Deployment> = Api::all(cluster.client().expect("client"));
    let listed = api
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=skybridge"))
        .await
        .expect("children list")
        .items;
    let mut out: Vec<(String, i32, i32)> = listed
        .iter()
        .map(|d| {
            (
                d.name_any(),
                d.spec.replicas.unwrap_or(0),
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

pub fn total_replicas(children: &[(String, i32, i32)]) -> i32 {
    children.iter().map(|c| c.1).sum()
}

/// Merge-patches a ModelDeployment's spec as `kubectl patch --type merge` would.
pub async fn patch_spec(estate: &Estate, name: &str, spec: Value) {
    estate
        .deployments_api()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .expect("patch applies");
}

/// Waits for an Event with `reason` in `namespace` (cluster-scoped objects report to `default`)
/// about the object named `regarding`.
pub async fn event_with_reason(
    estate: &Estate,
    namespace: &str,
    regarding: &str,
    reason: &str,
) -> k8s_openapi::api::events::v1::Event {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(estate.hub_client(), namespace);
    eventually(&format!("a {reason} Event about {regarding}"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
        })
    })
    .await
}

/// Replicas of a deployment's components on one pool, from its status.
pub fn replicas_on(md: &ModelDeployment, pool: &str) -> u32 {
    md.status
        .as_ref()
        .map(|s| {
            s.components
                .iter()
                .flat_map(|c| &c.placements)
                .filter(|p| p.pool == pool)
                .map(|p| p.replicas)
                .sum()
        })
        .unwrap_or(0)
}
