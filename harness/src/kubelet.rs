//! The kubelet and deployment-controller stand-in: Nodes with GPU/CPU/memory, and Deployment
//! status computed from how many replicas fit.
//!
//! Every Deployment's pod (its template's summed container requests; limits where requests are
//! absent, as Kubernetes defaults them) is bin-packed first-fit onto the Nodes (sorted by name)
//! that match its `nodeSelector`, tolerate the Nodes' `NoSchedule`/`NoExecute` taints and are not
//! unschedulable. Deployments are placed oldest first (in creation order),
//! so earlier ones keep their capacity. Replicas that fit become ready after the readiness delay;
//! the rest stay unavailable. Each replica is a Pod (`<deployment>-<template hash>-<i>`, owned by
//! the Deployment) bound to its node, or Pending/Unschedulable; Pods bound by others count
//! against node capacity. No ReplicaSets are created. A bound Pod gets a fake `status.podIP`
//! (241.0.0.0/8, never routed) for the EndpointSlice stand-in (`endpoints`), and keeps the labels
//! it has (a ReplicaSet never rewrites its pods' labels) until it has to move to another node.
//!
//! Public capacity as it really is (issue #19), set through [`CapacityScenario`]:
//! - a *stockout* of a node selector: Deployments whose `nodeSelector` carries all its labels get
//!   no more replicas scheduled than they had when it began; the others stay `Pending` with
//!   `PodScheduled=False`, reason `Unschedulable`, until it is lifted;
//! - an *elastic pool*: while a matching Deployment has unschedulable replicas (and no stockout
//!   holds it), a node of the pool's template is added after the pool's delay, one at a time, up
//!   to its maximum;
//! - *reclamation* ([`reclaim_node`]): a node gets a disruption taint at once (no new replicas
//!   land there) and is deleted after the notice, unless [`cancel_reclaim`] withdraws it first;
//! - an elastic pool with `noScaleUp`: no node is added, and each unschedulable pod of the pool
//!   gets cluster-autoscaler's `NotTriggerScaleUp` Event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::apply::Scope;
use crate::error::{Error, Result};
use crate::store::{Store, WriteOpts, now};

/// A node taint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A simulated node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Allocatable `nvidia.com/gpu`.
    #[serde(default)]
    pub gpus: u32,
    /// Allocatable CPU as a quantity.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Allocatable memory as a quantity.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Labels (besides `kubernetes.io/hostname` and `kubernetes.io/os`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints.
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    #[serde(default)]
    pub unschedulable: bool,
}

fn default_cpu() -> String {
    "32".into()
}

fn default_memory() -> String {
    "256Gi".into()
}

impl NodeSpec {
    /// A node with no GPUs, 32 CPUs and 256Gi memory.
    pub fn new(name: &str) -> Self {
        NodeSpec {
            name: name.into(),
            gpus: 0,
            cpu: default_cpu(),
            memory: default_memory(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            unschedulable: false,
        }
    }

    /// Set the GPU count.
    pub fn gpus(mut self, n: u32) -> Self {
        self.gpus = n;
        self
    }

    /// Set allocatable CPU (quantity).
    pub fn cpu(mut self, q: &str) -> Self {
        self.cpu = q.into();
        self
    }

    /// Set allocatable memory (quantity).
    pub fn memory(mut self, q: &str) -> Self {
        self.memory = q.into();
        self
    }

    /// Add a label.
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Add a taint (`value` may be empty).
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.to_string()),
            effect: effect.into(),
        });
        self
    }

    /// Parse `NAME[,gpu=N][,gpu-type=T][,cpu=Q][,memory=Q][,label:K=V]...[,taint:K[=V]:EFFECT]...[,unschedulable]`.
    /// `gpu-type=T` is short for `label:nvidia.com/gpu.product=T`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = s.split(',');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() || name.contains('=') {
            return Err(Error::Config(format!(
                "node spec must start with the node name: {s}"
            )));
        }
        let mut node = NodeSpec::new(name);
        for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
            if part == "unschedulable" {
                node.unschedulable = true;
            } else if let Some(l) = part.strip_prefix("label:") {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                node.labels.insert(k.into(), v.into());
            } else if let Some(t) = part.strip_prefix("taint:") {
                let (kv, effect) = t
                    .rsplit_once(':')
                    .ok_or_else(|| Error::Config(format!("taint needs :EFFECT: {part}")))?;
                if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                    return Err(Error::Config(format!("unknown taint effect {effect}")));
                }
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                node = node.taint(k, v, effect);
            } else if let Some((k, v)) = part.split_once('=') {
                match k {
                    "gpu" | "gpus" => {
                        node.gpus = v
                            .parse()
                            .map_err(|e| Error::Config(format!("gpu={v}: {e}")))?
                    }
                    "gpu-type" => {
                        node.labels
                            .insert("nvidia.com/gpu.product".into(), v.into());
                    }
                    "cpu" | "memory" => {
                        parse_quantity(v)
                            .ok_or_else(|| Error::Config(format!("bad quantity {v}")))?;
                        if k == "cpu" {
                            node.cpu = v.into()
                        } else {
                            node.memory = v.into()
                        }
                    }
                    other => return Err(Error::Config(format!("unknown node attribute {other}"))),
                }
            } else {
                return Err(Error::Config(format!("cannot parse node attribute {part}")));
            }
        }
        Ok(node)
    }

    /// The Node object.
    pub fn to_object(&self) -> Value {
        let mut labels = json!({
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        });
        for (k, v) in &self.labels {
            labels[k] = json!(v);
        }
        let mut resources = json!({"cpu": self.cpu, "memory": self.memory, "pods": "110"});
        if self.gpus > 0 {
            resources["nvidia.com/gpu"] = json!(self.gpus.to_string());
        }
        let mut spec = json!({});
        if !self.taints.is_empty() {
            spec["taints"] = serde_json::to_value(&self.taints).unwrap_or_default();
        }
        if self.unschedulable {
            spec["unschedulable"] = json!(true);
        }
        let t = now();
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": spec,
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}],
                "nodeInfo": {"kubeletVersion": "v1.32.0-kube-harness", "operatingSystem": "linux", "architecture": "amd64"},
            },
        })
    }
}

/// A Kubernetes quantity (`500m`, `2`, `16Gi`, `1e3`) as a number.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(base * mult)
}

/// Runtime-adjustable kubelet settings.
#[derive(Debug)]
pub struct KubeletControl {
    /// Time from "fits" to "ready".
    pub delay: Mutex<Duration>,
    /// Wakes the loop after a setting changed.
    pub kick: Notify,
    /// Whether to create Pods for Deployments.
    pub pods: bool,
    /// Stockouts and elastic pools.
    pub capacity: Mutex<CapacityScenario>,
    /// The pending deletion of each node being reclaimed, by name (aborted by a cancellation).
    pub reclaims: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

/// Stockouts and elastic pools of one cluster (see the module's documentation).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CapacityScenario {
    /// Node selectors out of stock: a Deployment whose `nodeSelector` carries all the labels of
    /// one of them schedules no new replica.
    #[serde(default)]
    pub stockouts: Vec<BTreeMap<String, String>>,
    /// Pools whose nodes an autoscaler adds when replicas are unschedulable.
    #[serde(default)]
    pub elastic: Vec<ElasticPool>,
}

/// A node pool an autoscaler grows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ElasticPool {
    /// A Deployment is this pool's when its `nodeSelector` carries all these labels.
    pub selector: BTreeMap<String, String>,
    /// The node added; its name is the prefix of the added nodes' names (`<name>-<n>`), and its
    /// labels should include `selector`.
    pub template: NodeSpec,
    /// Milliseconds from an unschedulable replica to the added node.
    pub delay_ms: u64,
    /// Most nodes of this pool (added ones, by name prefix).
    pub max_nodes: u32,
    /// The autoscaler will add no node (its node group is out of capacity or at its maximum):
    /// nothing is added, and each unschedulable pod of the pool gets cluster-autoscaler's
    /// `NotTriggerScaleUp` Event, once.
    #[serde(default)]
    pub no_scale_up: bool,
}

impl CapacityScenario {
    fn stocked_out(&self, node_selector: &BTreeMap<String, String>) -> bool {
        self.stockouts
            .iter()
            .any(|stockout| carries(node_selector, stockout))
    }

    /// Checked before a scenario is accepted: an elastic template that does not carry its own
    /// selector's labels would grow nodes no replica can use, forever.
    pub fn check(&self) -> Result<()> {
        for pool in &self.elastic {
            if !carries(&pool.template.labels, &pool.selector) {
                return Err(Error::bad_request(format!(
                    "elastic pool {}: the template's labels must include the selector",
                    pool.template.name
                )));
            }
            if pool.template.name.is_empty() {
                return Err(Error::bad_request("elastic pool template needs a name"));
            }
        }
        Ok(())
    }
}

/// Whether `labels` carries every label of `wanted` (an empty `wanted` matches nothing: a
/// stockout of "everything" is a typo more often than a test).
fn carries(labels: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> bool {
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Taint `name` for reclamation now (`key`, optional `value`, `NoSchedule`), as Karpenter or a
/// termination handler does; the caller deletes the node after the notice.
pub fn taint_node(store: &Store, name: &str, key: &str, value: Option<&str>) -> Result<Value> {
    let rt = store.resource("", "v1", "nodes").expect("built-in");
    let opts = WriteOpts {
        manager: "kubelet".into(),
        internal: true,
        ..Default::default()
    };
    Ok(store
        .modify(&rt, "", name, Scope::Main, &opts, true, |live| {
            let live = live.ok_or_else(|| Error::not_found("", "nodes", name))?;
            let mut node = live.clone();
            let mut taints = node["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !taints.iter().any(|t| t["key"] == key) {
                let mut taint = json!({"key": key, "effect": "NoSchedule"});
                if let Some(value) = value {
                    taint["value"] = json!(value);
                }
                taints.push(taint);
            }
            node["spec"]["taints"] = json!(taints);
            Ok(node)
        })?
        .0)
}

/// Taint a node for reclamation now and delete it after `notice` (spawned; returns at once).
pub fn reclaim_node(
    store: Arc<Store>,
    control: &KubeletControl,
    name: &str,
    key: &str,
    value: Option<&str>,
    notice: Duration,
) -> Result<Value> {
    let tainted = taint_node(&store, name, key, value)?;
    let node = name.to_string();
    let deletion = tokio::spawn(async move {
        tokio::time::sleep(notice).await;
        let rt = store.resource("", "v1", "nodes").expect("built-in");
        if let Err(e) = store.delete(&rt, "", &node, &Default::default()) {
            tracing::warn!("reclaimed node {node} could not be deleted: {e}");
        }
    });
    if let Some(earlier) = control
        .reclaims
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), deletion)
    {
        // A second notice for the same node: the earlier deletion is superseded.
        earlier.abort();
    }
    Ok(tainted)
}

/// Cancels a reclamation, as an interruption handler does when a rebalance recommendation or a
/// disruption is withdrawn: the node is not deleted, and the taint `key` is removed.
pub fn cancel_reclaim(
    store: &Store,
    control: &KubeletControl,
    name: &str,
    key: &str,
) -> Result<Value> {
    if let Some(deletion) = control
        .reclaims
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(name)
    {
        deletion.abort();
    }
    let rt = store.resource("", "v1", "nodes").expect("built-in");
    let opts = WriteOpts {
        manager: "kubelet".into(),
        internal: true,
        ..Default::default()
    };
    Ok(store
        .modify(&rt, "", name, Scope::Main, &opts, true, |live| {
            let live = live.ok_or_else(|| Error::not_found("", "nodes", name))?;
            let mut node = live.clone();
            let taints: Vec<Value> = node["spec"]["taints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t["key"] != key)
                .collect();
            node["spec"]["taints"] = json!(taints);
            Ok(node)
        })?
        .0)
}

/// Adds the next node of an elastic pool, unless it is at its maximum; returns its name.
fn grow(store: &Store, pool: &ElasticPool) -> Option<String> {
    let rt = store.resource("", "v1", "nodes").expect("built-in");
    let prefix = format!("{}-", pool.template.name);
    let names: Vec<String> = store
        .list(&rt, None)
        .0
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if names.len() as u32 >= pool.max_nodes {
        return None;
    }
    let name = (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| !names.contains(n))
        .expect("an unused name");
    let mut spec = pool.template.clone();
    spec.name = name.clone();
    let opts = WriteOpts {
        manager: "cluster-autoscaler".into(),
        internal: true,
        ..Default::default()
    };
    let obj = spec.to_object();
    store
        .modify(
            &rt,
            "",
            &name,
            Scope::Main,
            &opts,
            true,
            |_| Ok(obj.clone()),
        )
        .ok()?;
    Some(name)
}

#[derive(Debug, Clone, Copy, Default)]
struct Resources {
    cpu: f64,
    memory: f64,
    gpu: f64,
}

impl Resources {
    fn from_map(m: &Value) -> Self {
        let q = |k: &str| {
            m[k].as_str()
                .and_then(parse_quantity)
                .or_else(|| m[k].as_f64())
                .unwrap_or(0.0)
        };
        Resources {
            cpu: q("cpu"),
            memory: q("memory"),
            gpu: q("nvidia.com/gpu"),
        }
    }

    fn fits(&self, req: &Resources) -> bool {
        const EPS: f64 = 1e-9;
        self.cpu + EPS >= req.cpu && self.memory + EPS >= req.memory && self.gpu + EPS >= req.gpu
    }

    fn take(&mut self, req: &Resources) {
        self.cpu -= req.cpu;
        self.memory -= req.memory;
        self.gpu -= req.gpu;
    }
}

struct Node {
    name: String,
    labels: BTreeMap<String, String>,
    taints: Vec<Value>,
    unschedulable: bool,
    free: Resources,
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    let effect = taint["effect"].as_str().unwrap_or_default();
    if effect == "PreferNoSchedule" {
        return true;
    }
    tolerations.iter().any(|t| {
        let key = t["key"].as_str().unwrap_or_default();
        let op = t["operator"].as_str().unwrap_or("Equal");
        let key_ok =
            (key.is_empty() && op == "Exists") || key == taint["key"].as_str().unwrap_or_default();
        let value_ok = op == "Exists"
            || t["value"].as_str().unwrap_or_default()
                == taint["value"].as_str().unwrap_or_default();
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || e == effect);
        key_ok && value_ok && effect_ok
    })
}

fn pod_request(pod_spec: &Value) -> Resources {
    let mut total = Resources::default();
    for c in pod_spec["containers"].as_array().into_iter().flatten() {
        let req = Resources::from_map(&c["resources"]["requests"]);
        let lim = Resources::from_map(&c["resources"]["limits"]);
        let pick = |r: f64, l: f64| if r > 0.0 { r } else { l };
        total.cpu += pick(req.cpu, lim.cpu);
        total.memory += pick(req.memory, lim.memory);
        total.gpu += pick(req.gpu, lim.gpu);
    }
    total
}

/// Marks Pods the kubelet stand-in created (and so manages).
pub const MANAGED: &str = "kube-harness.io/kubelet";

fn is_managed(pod: &Value) -> bool {
    pod["metadata"]["annotations"][MANAGED] == "true"
}

/// What the kubelet needs of one Deployment. Kept per uid and rebuilt only when the
/// Deployment's resourceVersion changes, so a pass over many unchanged Deployments costs a lookup
/// each, not a copy.
struct DeploymentView {
    uid: String,
    namespace: String,
    name: String,
    resource_version: String,
    generation: Value,
    desired: u32,
    max_unavailable: u32,
    request: Resources,
    node_selector: BTreeMap<String, String>,
    tolerations: Vec<Value>,
    /// The status as stored: the previous conditions, and whether a write is needed.
    status: Value,
    /// resourceVersion of creation: the placement order.
    created_rv: u64,
}

impl DeploymentView {
    fn of(d: &Value, created_rv: Option<u64>) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let desired = d["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
        let pod = &d["spec"]["template"]["spec"];
        DeploymentView {
            uid: text(&d["metadata"]["uid"]),
            namespace: text(&d["metadata"]["namespace"]),
            name: text(&d["metadata"]["name"]),
            resource_version: text(&d["metadata"]["resourceVersion"]),
            generation: d["metadata"]["generation"].clone(),
            desired,
            max_unavailable: max_unavailable(d, desired),
            request: pod_request(pod),
            node_selector: pod["nodeSelector"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default(),
            tolerations: pod["tolerations"].as_array().cloned().unwrap_or_default(),
            status: d["status"].clone(),
            created_rv: created_rv.unwrap_or(u64::MAX),
        }
    }
}

/// The Deployments not being deleted, oldest first, from `cache` where unchanged.
fn deployment_views(
    store: &Store,
    cache: &mut HashMap<String, Arc<DeploymentView>>,
) -> Vec<Arc<DeploymentView>> {
    let deploy_rt = store
        .resource("apps", "v1", "deployments")
        .expect("built-in");
    let mut previous = std::mem::take(cache);
    let mut views = Vec::new();
    store.visit(&deploy_rt, |d, created_rv| {
        if d["metadata"].get("deletionTimestamp").is_some() {
            return;
        }
        let uid = d["metadata"]["uid"].as_str().unwrap_or_default();
        let rv = d["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        let view = match previous.remove(uid) {
            Some(v) if v.resource_version == rv => v,
            _ => Arc::new(DeploymentView::of(d, created_rv)),
        };
        cache.insert(view.uid.clone(), view.clone());
        views.push(view);
    });
    // Oldest first, by the resourceVersion of creation (creationTimestamp has only seconds).
    views.sort_by(|a, b| {
        (a.created_rv, &a.namespace, &a.name).cmp(&(b.created_rv, &b.namespace, &b.name))
    });
    views
}

/// The node of each replica that fits, per Deployment, oldest Deployment first.
fn placements(
    store: &Store,
    cache: &mut HashMap<String, Arc<DeploymentView>>,
    scenario: &CapacityScenario,
    held: &HashMap<String, Track>,
    bound: &HashMap<String, Vec<String>>,
) -> Vec<(Arc<DeploymentView>, Vec<String>)> {
    let nodes_rt = store.resource("", "v1", "nodes").expect("built-in");
    let mut nodes: Vec<Node> = store
        .list(&nodes_rt, None)
        .0
        .iter()
        .map(|n| Node {
            name: n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            labels: crate::selectors::labels_of(n),
            taints: n["spec"]["taints"].as_array().cloned().unwrap_or_default(),
            unschedulable: n["spec"]["unschedulable"] == true,
            free: Resources::from_map(&n["status"]["allocatable"]),
        })
        .collect();
    // Pods bound to a node by someone else (a test, a DaemonSet stand-in) use its capacity.
    let pods_rt = store.resource("", "v1", "pods").expect("built-in");
    store.visit(&pods_rt, |pod, _| {
        let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let finished = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if is_managed(pod) || node_name.is_empty() || finished {
            return;
        }
        if let Some(n) = nodes.iter_mut().find(|n| n.name == node_name) {
            n.free.take(&pod_request(&pod["spec"]));
        }
    });
    let mut out = Vec::new();
    for d in deployment_views(store, cache) {
        let mut assigned = Vec::new();
        // Out of stock: what runs keeps running; nothing new is scheduled.
        let most = if scenario.stocked_out(&d.node_selector) {
            held.get(&d.uid).map_or(0, |t| t.target).min(d.desired)
        } else {
            d.desired
        };
        // A running replica stays on its node while the node exists and still matches: a
        // `NoSchedule` taint or a cordon keeps new replicas off, but evicts nobody (a node
        // tainted for reclamation runs its replicas until it is deleted).
        for previous in bound.get(&d.uid).into_iter().flatten() {
            if assigned.len() as u32 >= most {
                break;
            }
            if let Some(n) = nodes.iter_mut().find(|n| {
                &n.name == previous
                    && d.node_selector
                        .iter()
                        .all(|(k, v)| n.labels.get(k) == Some(v))
                    && n.taints
                        .iter()
                        .all(|t| t["effect"] != "NoExecute" || tolerates(&d.tolerations, t))
                    && n.free.fits(&d.request)
            }) {
                n.free.take(&d.request);
                assigned.push(n.name.clone());
            }
        }
        while (assigned.len() as u32) < most {
            let slot = nodes.iter_mut().find(|n| {
                !n.unschedulable
                    && d.node_selector
                        .iter()
                        .all(|(k, v)| n.labels.get(k) == Some(v))
                    && n.taints.iter().all(|t| tolerates(&d.tolerations, t))
                    && n.free.fits(&d.request)
            });
            match slot {
                Some(n) => {
                    n.free.take(&d.request);
                    assigned.push(n.name.clone());
                }
                None => break,
            }
        }
        out.push((d, assigned));
    }
    out
}

struct Track {
    target: u32,
    ready: u32,
    since: Instant,
    /// The (resourceVersion, ready) at which the stored status was last found current: while
    /// both stay the same there is nothing to compute.
    reported: Option<(String, u32)>,
}

/// What the loop keeps between passes.
#[derive(Default)]
struct Memory {
    tracks: HashMap<String, Track>,
    views: HashMap<String, Arc<DeploymentView>>,
    /// When the next node of each elastic pool (by template name) arrives.
    growing: HashMap<String, Instant>,
    /// The node of each scheduled replica per Deployment uid, from the last pass.
    bound: HashMap<String, Vec<String>>,
}

fn max_unavailable(d: &Value, desired: u32) -> u32 {
    if d["spec"]["strategy"]["type"] == "Recreate" {
        return 0;
    }
    match &d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] {
        Value::Number(n) => n.as_u64().unwrap_or(0) as u32,
        Value::String(s) if s.ends_with('%') => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(25.0);
            (desired as f64 * pct / 100.0).floor() as u32
        }
        _ => (desired as f64 * 0.25).floor() as u32,
    }
}

fn condition(old: &Value, ty: &str, status: bool, reason: &str, message: String, t: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let prev = old["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == ty)
        .cloned();
    let (transition, update) = match &prev {
        Some(p) if p["status"] == status && p["reason"] == reason => {
            (p["lastTransitionTime"].clone(), p["lastUpdateTime"].clone())
        }
        Some(p) if p["status"] == status => (p["lastTransitionTime"].clone(), json!(t)),
        _ => (json!(t), json!(t)),
    };
    json!({"type": ty, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": transition, "lastUpdateTime": update})
}

fn status_for(d: &DeploymentView, ready: u32) -> Value {
    let t = now();
    let name = &d.name;
    let desired = d.desired;
    let available = ready + d.max_unavailable >= desired;
    let old = &d.status;
    let mut status = json!({
        "observedGeneration": d.generation.clone(),
        "conditions": [
            if available {
                condition(old, "Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.".into(), &t)
            } else {
                condition(old, "Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into(), &t)
            },
            if ready >= desired {
                condition(old, "Progressing", true, "NewReplicaSetAvailable", format!("ReplicaSet \"{name}\" has successfully progressed."), &t)
            } else {
                condition(old, "Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet \"{name}\" is progressing."), &t)
            },
        ],
    });
    // Zero counts are omitted, as the Go structs' omitempty does.
    for (k, v) in [
        ("replicas", desired),
        ("updatedReplicas", desired),
        ("readyReplicas", ready),
        ("availableReplicas", ready),
        ("unavailableReplicas", desired - ready),
    ] {
        if v > 0 {
            status[k] = json!(v);
        }
    }
    status
}

fn template_hash(template: &Value) -> String {
    // FNV-1a of the template: stable names while the template is unchanged, new ones after.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn pod_condition(
    live: Option<&Value>,
    ty: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let t = live
        .and_then(|l| l["status"]["conditions"].as_array())
        .into_iter()
        .flatten()
        .find(|c| c["type"] == ty && c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| json!(now()));
    let mut c = json!({"type": ty, "status": status, "lastTransitionTime": t});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// cluster-autoscaler's word on each unschedulable pod of `pool` (its `nodeSelector` carries the
/// pool's selector): a core `v1` Event, reason `NotTriggerScaleUp`, `source.component:
/// cluster-autoscaler`, as its legacy recorder writes it; one per pod (by uid), not repeated.
fn tell_no_scale_up(store: &Store, pool: &ElasticPool) {
    let pods_rt = store.resource("", "v1", "pods").expect("built-in");
    let Some(events_rt) = store.resource("events.k8s.io", "v1", "events") else {
        return;
    };
    let opts = WriteOpts {
        manager: "cluster-autoscaler".into(),
        internal: true,
        ..Default::default()
    };
    for pod in store.list(&pods_rt, None).0 {
        let unschedulable = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable");
        let selector: BTreeMap<String, String> = pod["spec"]["nodeSelector"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        if !unschedulable || !carries(&selector, &pool.selector) {
            continue;
        }
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let event_name = format!("{name}.{}", &template_hash(&json!(uid)));
        if store.get(&events_rt, ns, &event_name).is_ok() {
            continue;
        }
        let t = now();
        let core = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name, "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns,
                "uid": uid},
            "reason": "NotTriggerScaleUp",
            "message": format!("pod didn't trigger scale-up: 1 max node group size reached ({})", pool.template.name),
            "source": {"component": "cluster-autoscaler"},
            "firstTimestamp": t, "lastTimestamp": t, "count": 1,
            "type": "Normal",
        });
        let stored = crate::events::from_core(core);
        let _ = store.modify(
            &events_rt,
            ns,
            &event_name,
            Scope::Main,
            &opts,
            true,
            |_| Ok(stored.clone()),
        );
    }
}

/// A stable fake pod IP per namespace/name (in 241.0.0.0/8, reserved, never routed): what the
/// EndpointSlice stand-in lists.
fn pod_ip(ns: &str, name: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in ns.bytes().chain([b'/']).chain(name.bytes()) {
        h = (h ^ b as u32).wrapping_mul(16777619);
    }
    format!("241.{}.{}.{}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff)
}

/// Create, update and delete the Pods of one Deployment: `<deployment>-<template hash>-<i>`,
/// bound to their node and Running (Ready once ready) if they fit, Pending and Unschedulable if not.
fn sync_pods(
    store: &Store,
    d: &Value,
    assigned: &[String],
    desired: u32,
    ready: u32,
    stockout: bool,
) {
    let pods_rt = store.resource("", "v1", "pods").expect("built-in");
    let nodes_rt = store.resource("", "v1", "nodes").expect("built-in");
    let node_count = store.list(&nodes_rt, None).0.len();
    let ns = d["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let dname = d["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = d["metadata"]["uid"].clone();
    let template = &d["spec"]["template"];
    let hash = template_hash(template);
    let want: Vec<String> = (0..desired)
        .map(|i| format!("{dname}-{hash}-{i}"))
        .collect();
    let opts = WriteOpts {
        manager: "kubelet".into(),
        internal: true,
        ..Default::default()
    };
    for pod in store.list(&pods_rt, Some(&ns)).0 {
        let owned = pod["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        if is_managed(&pod) && owned && !want.iter().any(|w| w == name) {
            let _ = store.delete(&pods_rt, &ns, name, &Default::default());
        }
    }
    for (i, name) in want.iter().enumerate() {
        let node = assigned.get(i);
        let is_ready = node.is_some() && (i as u32) < ready;
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["pod-template-hash"] = json!(hash);
        let mut spec = template["spec"].clone();
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let _ = store.modify(&pods_rt, &ns, name, Scope::Main, &opts, true, |live| {
            // The same pod (not yet bound, or bound to the same node) keeps the labels it has,
            // as a ReplicaSet never rewrites its pods' labels; a replica that had to move
            // (its node went) is a new pod, with the template's labels.
            let same_pod = live.filter(|l| {
                l["spec"]["nodeName"]
                    .as_str()
                    .is_none_or(|was| Some(was) == node.map(String::as_str))
            });
            let labels = match same_pod {
                Some(l) if l["metadata"]["labels"].is_object() => l["metadata"]["labels"].clone(),
                _ => labels.clone(),
            };
            let conditions = vec![
                if node.is_some() {
                    pod_condition(live, "PodScheduled", true, None, None)
                } else {
                    pod_condition(
                        live,
                        "PodScheduled",
                        false,
                        Some("Unschedulable"),
                        Some(if stockout {
                            format!(
                                "0/{node_count} nodes are available: the pool of this node selector is out of capacity (stockout)."
                            )
                        } else {
                            format!(
                                "0/{node_count} nodes are available: no node with enough free resources matches the pod's node selector and tolerations."
                            )
                        }),
                    )
                },
                pod_condition(live, "ContainersReady", is_ready, None, None),
                pod_condition(live, "Ready", is_ready, None, None),
            ];
            let mut pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": labels,
                    "annotations": {MANAGED: "true"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": dname,
                        "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "spec": spec,
                "status": {
                    "phase": if node.is_some() { "Running" } else { "Pending" },
                    "conditions": conditions,
                },
            });
            if node.is_some() {
                let ip = pod_ip(&ns, name);
                pod["status"]["podIP"] = json!(ip);
                pod["status"]["podIPs"] = json!([{"ip": ip}]);
            }
            if let Some(live) = live {
                pod["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
            }
            Ok(pod)
        });
    }
}

/// One pass: compute placements, advance readiness, write changed statuses (and Pods). Returns
/// when the next pending replica becomes ready.
fn reconcile(
    store: &Store,
    memory: &mut Memory,
    delay: Duration,
    pods: bool,
    scenario: &CapacityScenario,
) -> Option<Instant> {
    let deploy_rt = store
        .resource("apps", "v1", "deployments")
        .expect("built-in");
    let now_i = Instant::now();
    let mut tracks = HashMap::with_capacity(memory.tracks.len());
    let placed = placements(
        store,
        &mut memory.views,
        scenario,
        &memory.tracks,
        &memory.bound,
    );
    let previously_bound = std::mem::replace(
        &mut memory.bound,
        placed
            .iter()
            .map(|(d, assigned)| (d.uid.clone(), assigned.clone()))
            .collect(),
    );
    // Elastic pools: a node arrives when due; one more is ordered while a matching Deployment
    // has unschedulable replicas and no stockout holds the pool.
    for pool in &scenario.elastic {
        let key = &pool.template.name;
        if pool.no_scale_up {
            memory.growing.remove(key);
            tell_no_scale_up(store, pool);
            continue;
        }
        let wants_nodes = placed.iter().any(|(d, assigned)| {
            (assigned.len() as u32) < d.desired
                && carries(&d.node_selector, &pool.selector)
                && !scenario.stocked_out(&d.node_selector)
        });
        if !wants_nodes {
            memory.growing.remove(key);
            continue;
        }
        let due = memory.growing.get(key).is_some_and(|&at| now_i >= at);
        if due && grow(store, pool).is_none() {
            // At its maximum: nothing more to order until a node goes.
            memory.growing.remove(key);
            continue;
        }
        if due {
            // The next node is ordered from now; the pass the new node triggers cancels it
            // when this one was enough.
            memory.growing.remove(key);
        }
        memory
            .growing
            .entry(key.clone())
            .or_insert(now_i + Duration::from_millis(pool.delay_ms));
    }
    memory
        .growing
        .retain(|key, _| scenario.elastic.iter().any(|p| &p.template.name == key));
    let mut next: Option<Instant> = memory.growing.values().min().copied();
    for (d, assigned) in placed {
        let fit = assigned.len() as u32;
        let tr = tracks.entry(d.uid.clone()).or_insert_with(|| {
            memory.tracks.remove(&d.uid).unwrap_or(Track {
                target: 0,
                ready: 0,
                since: now_i,
                reported: None,
            })
        });
        if tr.target != fit {
            tr.ready = tr.ready.min(fit);
            tr.target = fit;
            tr.since = now_i;
        }
        // A replica that had to move to another node (its node went) starts again: ready only
        // after the readiness delay on its new node.
        if let Some(previous) = previously_bound.get(&d.uid) {
            let mut left = previous.clone();
            let stayed = assigned
                .iter()
                .filter(|node| match left.iter().position(|p| p == *node) {
                    Some(i) => {
                        left.swap_remove(i);
                        true
                    }
                    None => false,
                })
                .count() as u32;
            if stayed < tr.ready {
                tr.ready = stayed;
                tr.since = now_i;
            }
        }
        if tr.ready < tr.target {
            let at = tr.since + delay;
            if now_i >= at {
                tr.ready = tr.target;
            } else {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
        }
        if pods && let Ok(full) = store.get(&deploy_rt, &d.namespace, &d.name) {
            let stockout = scenario.stocked_out(&d.node_selector);
            sync_pods(store, &full, &assigned, d.desired, tr.ready, stockout);
        }
        let current = (d.resource_version.clone(), tr.ready);
        if tr.reported.as_ref() == Some(&current) {
            continue;
        }
        let status = status_for(&d, tr.ready);
        if d.status == status {
            // Nothing to report: skip the write (it would be a no-op, at the cost of a copy).
            tr.reported = Some(current);
            continue;
        }
        let opts = WriteOpts {
            manager: "kube-controller-manager".into(),
            ..Default::default()
        };
        let _ = store.modify(
            &deploy_rt,
            &d.namespace,
            &d.name,
            Scope::Status,
            &opts,
            true,
            |live| {
                let live = live.ok_or_else(|| Error::not_found("apps", "deployments", &d.name))?;
                if live["metadata"]["uid"] != d.uid.as_str()
                    || live["metadata"]["generation"] != d.generation
                {
                    // Changed since we looked; the change event triggers another pass.
                    return Err(Error::conflict("apps", "deployments", &d.name));
                }
                // A status write takes everything else from the stored object.
                Ok(json!({"status": status}))
            },
        );
    }
    memory.tracks = tracks;
    next
}

/// How long the loop lets further changes gather before a pass: far below any readiness delay
/// worth simulating, and enough to turn thousands of writes a second into a hundred passes.
const COALESCE: Duration = Duration::from_millis(10);

/// Run the kubelet loop until the task is aborted.
pub fn spawn(store: Arc<Store>, control: Arc<KubeletControl>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rx = store.subscribe();
        let mut memory = Memory::default();
        loop {
            let delay = *control.delay.lock().unwrap_or_else(|e| e.into_inner());
            let scenario = control
                .capacity
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let next = reconcile(&store, &mut memory, delay, control.pods, &scenario);
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) if matches!(ev.key.1.as_str(), "nodes" | "deployments" | "pods") => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    _ = control.kick.notified() => break,
                    _ = &mut wake => break,
                }
            }
            // One pass covers every change so far, and changes arriving within a few
            // milliseconds wait for it: a stream of writes costs at most one pass per
            // `COALESCE`, not one per write (each pass visits every Deployment).
            tokio::time::sleep(COALESCE).await;
            loop {
                match rx.try_recv() {
                    Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::TryRecvError::Closed) => return,
                    Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn node_syntax() {
        let n = NodeSpec::parse("gpu-a,gpu=8,gpu-type=nvidia-a100,cpu=64,memory=512Gi,label:pool=private,taint:nvidia.com/gpu=present:NoSchedule").unwrap();
        assert_eq!(n.gpus, 8);
        assert_eq!(n.labels["nvidia.com/gpu.product"], "nvidia-a100");
        assert_eq!(n.labels["pool"], "private");
        assert_eq!(n.taints[0].value.as_deref(), Some("present"));
        assert!(NodeSpec::parse("gpu-a,taint:x").is_err());
    }
}
