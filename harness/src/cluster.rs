//! The public API: start a simulated cluster in-process and control it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::apply::Scope;
use crate::error::{Error, Result};
use crate::faults::{FaultRule, Faults};
use crate::kubeconfig::kubeconfig_yaml;
use crate::kubelet::{self, KubeletControl, NodeSpec};
use crate::server;
use crate::store::{DeleteOpts, Store, WriteOpts};

/// How to start one cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Cluster name (kubeconfig cluster/context/user name).
    pub name: String,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Initial nodes.
    pub nodes: Vec<NodeSpec>,
    /// Time from a replica fitting on a node to it being ready.
    pub readiness_delay: Duration,
    /// Watch events retained; watches from older resourceVersions get 410 Expired.
    pub watch_history: usize,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Seed of the fault RNG.
    pub fault_seed: u64,
    /// Initial fault rules.
    pub faults: Vec<FaultRule>,
    /// Where to write `<name>.kubeconfig`; None: the system temp directory.
    pub kubeconfig_dir: Option<PathBuf>,
    /// Whether the kubelet stand-in creates a Pod per Deployment replica (default true).
    pub pods: bool,
    /// Serve the Gateway API CRDs (`gateways`, `httproutes`, `grpcroutes`, v1) and run the
    /// Gateway stand-in that writes routes' `status.parents` (default false).
    pub gateway_api: bool,
    /// The Multi-Cluster Services API versions served (`v1alpha1`, `v1beta1`; default none):
    /// the CRDs of `serviceexports` and `serviceimports` with only these versions in discovery.
    pub mcs_versions: Vec<String>,
}

impl ClusterConfig {
    /// Defaults: free port, no nodes, 500 ms readiness delay, 1000 events of history, bookmarks
    /// every 5 s, fault seed 1, no faults.
    pub fn new(name: &str) -> Self {
        ClusterConfig {
            name: name.into(),
            port: 0,
            nodes: Vec::new(),
            readiness_delay: Duration::from_millis(500),
            watch_history: 1000,
            bookmark_interval: Duration::from_secs(5),
            fault_seed: 1,
            faults: Vec::new(),
            kubeconfig_dir: None,
            pods: true,
            gateway_api: false,
            mcs_versions: Vec::new(),
        }
    }

    /// Serve the Gateway API CRDs and run the Gateway stand-in (see `gateway`).
    pub fn gateway_api(mut self, on: bool) -> Self {
        self.gateway_api = on;
        self
    }

    /// Serve the MCS API CRDs in these versions (`v1alpha1`, `v1beta1`, or both); link clusters
    /// with a `ClusterSet` to mirror exports into imports.
    pub fn mcs_api(mut self, versions: &[&str]) -> Self {
        self.mcs_versions = versions.iter().map(|v| v.to_string()).collect();
        self
    }

    /// Whether the kubelet stand-in creates Pods for Deployment replicas.
    pub fn pods(mut self, on: bool) -> Self {
        self.pods = on;
        self
    }

    /// Use this port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Add a node.
    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }

    /// Set the readiness delay.
    pub fn readiness_delay(mut self, d: Duration) -> Self {
        self.readiness_delay = d;
        self
    }

    /// Set the watch history length.
    pub fn watch_history(mut self, n: usize) -> Self {
        self.watch_history = n;
        self
    }

    /// Set the bookmark interval.
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// Set the fault seed.
    pub fn fault_seed(mut self, seed: u64) -> Self {
        self.fault_seed = seed;
        self
    }

    /// Add a fault rule active from the start.
    pub fn fault(mut self, rule: FaultRule) -> Self {
        self.faults.push(rule);
        self
    }

    /// Write the kubeconfig into this directory.
    pub fn kubeconfig_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.kubeconfig_dir = Some(dir.into());
        self
    }
}

#[derive(Default)]
pub(crate) struct Net {
    accept: Option<JoinHandle<()>>,
    /// A bound listener nobody accepts from: connections complete the TCP handshake (kernel
    /// backlog) and then never get an answer, like a silently dropped network path.
    blackhole: Option<tokio::net::TcpListener>,
}

/// Shared state of a running cluster.
pub struct Inner {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) store: Arc<Store>,
    pub(crate) faults: Mutex<Faults>,
    /// Requests served so far, by verb (`get`, `list`, `watch`, `patch`, ...): what a client
    /// costs the API server, for benchmarks.
    pub(crate) requests: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) watch_kill: tokio::sync::watch::Sender<u64>,
    pub(crate) conn_kill: tokio::sync::watch::Sender<u64>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) kubelet: Arc<KubeletControl>,
    net: Mutex<Net>,
    kubelet_task: Mutex<Option<JoinHandle<()>>>,
    gateway_task: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    pub(crate) fn nodes(&self) -> Vec<Value> {
        let rt = self.store.resource("", "v1", "nodes").expect("built-in");
        self.store.list(&rt, None).0
    }

    pub(crate) fn upsert_node(&self, spec: &NodeSpec) -> Result<Value> {
        let rt = self.store.resource("", "v1", "nodes").expect("built-in");
        let opts = WriteOpts {
            manager: "kubelet".into(),
            internal: true,
            ..Default::default()
        };
        let obj = spec.to_object();
        Ok(self
            .store
            .modify(&rt, "", &spec.name, Scope::Main, &opts, true, |live| {
                let mut obj = obj.clone();
                if let Some(live) = live {
                    obj["metadata"]["resourceVersion"] =
                        live["metadata"]["resourceVersion"].clone();
                    // Keep heartbeat times of an unchanged node so re-adding it is a no-op.
                    obj["status"]["conditions"] = live["status"]["conditions"].clone();
                }
                Ok(obj)
            })?
            .0)
    }

    pub(crate) fn remove_node(&self, name: &str) -> Result<()> {
        let rt = self.store.resource("", "v1", "nodes").expect("built-in");
        self.store.delete(&rt, "", name, &DeleteOpts::default())?;
        Ok(())
    }

    pub(crate) fn set_faults(&self, rules: Vec<FaultRule>, seed: Option<u64>) -> Result<()> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(rules, seed)
    }

    pub(crate) fn close_watches(&self) {
        self.watch_kill.send_modify(|n| *n += 1);
    }

    pub(crate) fn set_readiness_delay(&self, d: Duration) {
        *self.kubelet.delay.lock().unwrap_or_else(|e| e.into_inner()) = d;
        self.kubelet.kick.notify_one();
    }

    pub(crate) fn set_unreachable(&self) {
        let mut net = self.net.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = net.accept.take() {
            task.abort();
        }
        net.blackhole = None;
        drop(net);
        self.conn_kill.send_modify(|n| *n += 1);
    }

    /// Bind our port, retrying briefly: an aborted accept task drops its listener asynchronously.
    async fn bind_again(&self) -> Result<tokio::net::TcpListener> {
        let mut attempt = 0;
        loop {
            match server::bind(self.port).await {
                Ok(l) => return Ok(l),
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!("rebind {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(crate) async fn set_unresponsive(&self) -> Result<()> {
        self.set_unreachable();
        let listener = self.bind_again().await?;
        self.net.lock().unwrap_or_else(|e| e.into_inner()).blackhole = Some(listener);
        Ok(())
    }

    pub(crate) async fn set_reachable(self: &Arc<Self>) -> Result<()> {
        {
            let mut net = self.net.lock().unwrap_or_else(|e| e.into_inner());
            if net.accept.is_some() {
                return Ok(());
            }
            // Connections parked in the blackhole's backlog are reset.
            net.blackhole = None;
        }
        let listener = self.bind_again().await?;
        let task = server::spawn_accept(Arc::downgrade(self), listener, self.conn_kill.subscribe());
        self.net.lock().unwrap_or_else(|e| e.into_inner()).accept = Some(task);
        Ok(())
    }

    fn shutdown(&self) {
        self.set_unreachable();
        self.close_watches();
        if let Some(t) = self
            .kubelet_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
        if let Some(t) = self
            .gateway_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

/// The Gateway API CRDs served with `ClusterConfig::gateway_api`.
const GATEWAY_API_CRDS: &str = include_str!("../crds/gateway-api.yaml");
/// The MCS API CRDs served with `ClusterConfig::mcs_api`.
const MCS_API_CRDS: &str = include_str!("../crds/mcs-api.yaml");

/// The non-empty documents of a multi-document YAML.
fn yaml_documents(yaml: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).map_err(|e| Error::Config(format!("YAML: {e}")))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Entry point: `Cluster::start(ClusterConfig::new("hub")).await?`.
pub struct Cluster;

impl Cluster {
    /// Start one cluster: bind its port, start the kubelet, create the nodes, write the
    /// kubeconfig. Must be called inside a Tokio runtime.
    pub async fn start(config: ClusterConfig) -> Result<ClusterHandle> {
        for rule in &config.faults {
            rule.check()?;
        }
        for v in &config.mcs_versions {
            if !crate::mcs::MCS_VERSIONS.contains(&v.as_str()) {
                return Err(Error::Config(format!(
                    "unknown MCS API version {v} (served: {})",
                    crate::mcs::MCS_VERSIONS.join(", ")
                )));
            }
        }
        let listener = server::bind(config.port).await?;
        let port = listener.local_addr()?.port();
        let seed = config.fault_seed ^ port as u64 ^ 0x5eed;
        let store = Arc::new(Store::new(config.watch_history, seed));
        let mut faults = Faults::new(config.fault_seed);
        faults.set(config.faults.clone(), None)?;
        let kubelet = Arc::new(KubeletControl {
            delay: Mutex::new(config.readiness_delay),
            kick: tokio::sync::Notify::new(),
            pods: config.pods,
            capacity: Default::default(),
        });
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            port,
            store: store.clone(),
            faults: Mutex::new(faults),
            requests: Mutex::default(),
            watch_kill: tokio::sync::watch::channel(0).0,
            conn_kill: tokio::sync::watch::channel(0).0,
            bookmark_interval: config.bookmark_interval,
            kubelet: kubelet.clone(),
            net: Mutex::new(Net::default()),
            kubelet_task: Mutex::new(None),
            gateway_task: Mutex::new(None),
        });
        for node in &config.nodes {
            inner.upsert_node(node)?;
        }
        *inner.kubelet_task.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(kubelet::spawn(store, kubelet));
        let task = server::spawn_accept(
            Arc::downgrade(&inner),
            listener,
            inner.conn_kill.subscribe(),
        );
        inner.net.lock().unwrap_or_else(|e| e.into_inner()).accept = Some(task);

        let url = format!("http://127.0.0.1:{port}");
        let yaml = kubeconfig_yaml(&config.name, &url);
        let (path, temporary) = match &config.kubeconfig_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.join(format!("{}.kubeconfig", config.name)), false)
            }
            None => (
                std::env::temp_dir().join(format!(
                    "kube-harness-{}-{}-{port}.kubeconfig",
                    std::process::id(),
                    config.name
                )),
                true,
            ),
        };
        std::fs::write(&path, &yaml)?;
        let handle = ClusterHandle {
            inner,
            url,
            kubeconfig: yaml,
            kubeconfig_path: path,
            temporary,
        };
        if config.gateway_api {
            handle.apply_yaml(GATEWAY_API_CRDS, "kube-harness")?;
            *handle
                .inner
                .gateway_task
                .lock()
                .unwrap_or_else(|e| e.into_inner()) =
                Some(crate::gateway::spawn(handle.inner.store.clone()));
        }
        if !config.mcs_versions.is_empty() {
            for mut crd in yaml_documents(MCS_API_CRDS)? {
                for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
                    let name = version["name"].as_str().unwrap_or_default();
                    version["served"] = Value::Bool(config.mcs_versions.iter().any(|v| v == name));
                }
                handle.apply_object(crd, "kube-harness")?;
            }
        }
        Ok(handle)
    }

    /// Start several clusters.
    pub async fn start_many(configs: Vec<ClusterConfig>) -> Result<Vec<ClusterHandle>> {
        let mut out = Vec::new();
        for c in configs {
            out.push(Cluster::start(c).await?);
        }
        Ok(out)
    }
}

/// A running cluster. Dropping it stops the cluster.
pub struct ClusterHandle {
    inner: Arc<Inner>,
    url: String,
    kubeconfig: String,
    kubeconfig_path: PathBuf,
    temporary: bool,
}

impl ClusterHandle {
    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port (stable across unreachable/reachable).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The kubeconfig as YAML.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig
    }

    /// The kubeconfig file written at start.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A `kube::Config` for this cluster (default namespace `default`, kube's default retry
    /// and timeouts), to customise before building a client.
    pub fn kube_config(&self) -> Result<kube::Config> {
        let uri: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| Error::Config(format!("url {}: {e}", self.url)))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = "default".into();
        Ok(config)
    }

    /// A `kube::Client` for this cluster, default namespace `default`. Needs a Tokio runtime.
    pub fn client(&self) -> Result<kube::Client> {
        Ok(kube::Client::try_from(self.kube_config()?)?)
    }

    /// Add a node or replace the one with the same name (resize, relabel, retaint).
    pub fn upsert_node(&self, node: NodeSpec) -> Result<()> {
        self.inner.upsert_node(&node).map(|_| ())
    }

    /// Remove a node.
    pub fn remove_node(&self, name: &str) -> Result<()> {
        self.inner.remove_node(name)
    }

    /// The Node objects.
    pub fn nodes(&self) -> Vec<Value> {
        self.inner.nodes()
    }

    /// Change the kubelet readiness delay.
    pub fn set_readiness_delay(&self, d: Duration) {
        self.inner.set_readiness_delay(d)
    }

    /// Replace the fault rules (keeps the RNG state).
    pub fn set_faults(&self, rules: Vec<FaultRule>) -> Result<()> {
        self.inner.set_faults(rules, None)
    }

    /// Replace the fault rules and reseed the RNG.
    pub fn set_faults_seeded(&self, rules: Vec<FaultRule>, seed: u64) -> Result<()> {
        self.inner.set_faults(rules, Some(seed))
    }

    /// Remove all fault rules.
    pub fn clear_faults(&self) {
        let _ = self.inner.set_faults(Vec::new(), None);
    }

    /// The fault rules still armed.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rules()
    }

    /// End every open watch stream now (clients see the stream end and re-watch).
    pub fn close_watches(&self) {
        self.inner.close_watches()
    }

    /// Close the listener and drop all connections: new connections are refused.
    pub fn set_unreachable(&self) {
        self.inner.set_unreachable()
    }

    /// Keep the port open but never answer: connections are accepted by the kernel and requests
    /// hang until the client times out (a silently broken network path). Open connections drop.
    pub async fn set_unresponsive(&self) -> Result<()> {
        self.inner.set_unresponsive().await
    }

    /// Serve again on the same port (after `set_unreachable` or `set_unresponsive`).
    pub async fn set_reachable(&self) -> Result<()> {
        self.inner.set_reachable().await
    }

    /// Server-side apply (forced, field manager `manager`) every document of a multi-document
    /// YAML, in order: e.g. the output of `skybridge crd`, then objects of those CRDs. Namespaced
    /// objects without a namespace go to `default`. Returns the stored objects.
    pub fn apply_yaml(&self, yaml: &str, manager: &str) -> Result<Vec<Value>> {
        yaml_documents(yaml)?
            .into_iter()
            .map(|v| self.apply_object(v, manager))
            .collect()
    }

    /// Server-side apply (forced) of one object; see `apply_yaml`.
    fn apply_object(&self, v: Value, manager: &str) -> Result<Value> {
        let api_version = v["apiVersion"].as_str().unwrap_or_default();
        let kind = v["kind"].as_str().unwrap_or_default();
        let rt = self
            .inner
            .store
            .resource_for_kind(api_version, kind)
            .ok_or_else(|| Error::Config(format!("no resource serves {api_version} {kind}")))?;
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = if rt.namespaced {
            v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let mut cfg = v.clone();
        if rt.namespaced {
            cfg["metadata"]["namespace"] = Value::String(ns.clone());
        }
        let opts = WriteOpts {
            manager: manager.to_string(),
            ..Default::default()
        };
        let (obj, _) =
            self.inner
                .store
                .modify(&rt, &ns, &name, Scope::Main, &opts, false, |live| {
                    crate::apply::apply(
                        &rt,
                        live,
                        &cfg,
                        manager,
                        true,
                        Scope::Main,
                        &name,
                        &crate::store::now(),
                    )
                })?;
        Ok(obj)
    }

    /// The cluster's storage (for the stand-ins that link clusters).
    pub(crate) fn store(&self) -> Arc<Store> {
        self.inner.store.clone()
    }

    /// The cluster's latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.store.current_rv()
    }

    /// Kubernetes API requests received so far, by verb (the `/harness/` control endpoints
    /// are not counted). Requests refused by an injected fault count: the client sent them.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(verb, n)| (verb.to_string(), *n))
            .collect()
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        self.inner.shutdown();
        if self.temporary {
            let _ = std::fs::remove_file(&self.kubeconfig_path);
        }
    }
}
