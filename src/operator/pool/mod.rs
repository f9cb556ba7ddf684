//! The ComputePool controller: probes each pool's cluster and reports whether it is reachable,
//! ready, and how much capacity its Nodes offer. Deployments re-plan when this status changes.

pub mod capacity;
pub mod validity;

use crate::api::quantity::{self, QuantityError};
use crate::api::{ComputePool, ComputePoolStatus, ObservedCapacity};
use crate::capacity::observed::{Observed, observe_pool};
use crate::capacity::signals::reclamation_signal;
use crate::operator::context::Context;
use crate::operator::error::{Error, Result};
use crate::operator::kubernetes::conditions::{Decided, merge, same};
use crate::operator::kubernetes::metrics::{ErrorLabels, PoolLabels};
use crate::operator::kubernetes::status_writer::{ReconcileTimer, ReportedStatus, StatusWriter};
use crate::planner::ComponentKey;
use k8s_openapi::api::core::v1::{Node, Pod, ResourceRequirements};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{instrument, warn};

pub const FIELD_MANAGER: &str = "skybridge.io/pool-controller";

/// The extended resource of NVIDIA GPUs.
const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Pods per page when summing requests: bounds the memory of a probe in a large cluster.
const PODS_PAGE: u32 = 500;
/// Up to this many Nodes, a probe lists the pods of each Node (`spec.nodeName`, indexed by the
/// API server) rather than every pod of the cluster: a pool of a few Nodes in a large shared
/// cluster then reads only its own pods.
const PER_NODE_LISTS_UP_TO: usize = 8;
const UNFINISHED: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// How long one probe may take before the cluster counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per probe before the cluster counts as unreachable.
const PROBE_ATTEMPTS: u32 = 3;
/// How long all attempts of a probe may take: a cluster that accepts connections but never
/// answers is found unreachable within this (well below the default period), not after three
/// full timeouts.
const PROBE_BUDGET: Duration = Duration::from_secs(8);

/// What the Nodes of a pool offer.
#[derive(Debug, Default, PartialEq)]
pub struct NodeCapacity {
    pub nodes: u32,
    pub ready_nodes: u32,
    pub gpus: u32,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    /// Names of the ready, schedulable Nodes counted above.
    pub counted: BTreeSet<String>,
}

/// Resources requested by pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub gpus: u64,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

impl Requested {
    /// Saturating: a pod spec with absurd quantities must not overflow the sum.
    fn add(&mut self, other: Requested) {
        self.gpus = self.gpus.saturating_add(other.gpus);
        self.cpu_milli = self.cpu_milli.saturating_add(other.cpu_milli);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
    }

    fn max(self, other: Requested) -> Requested {
        Requested {
            gpus: self.gpus.max(other.gpus),
            cpu_milli: self.cpu_milli.max(other.cpu_milli),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

/// A pool's probe: its Nodes, what the pods on them request (or why that is unknown), and what
/// the capacity tracker reads of its Nodes and Skybridge Pods (or why that is unknown).
#[derive(Debug, PartialEq)]
pub struct Probe {
    pub nodes: NodeCapacity,
    pub requested: std::result::Result<Requested, String>,
    pub capacity: std::result::Result<Observed, String>,
}

/// One container's requests; a resource with a limit and no request requests its limit, as
/// Kubernetes defaults it (GPUs are usually given as limits only).
fn container_requests(resources: Option<&ResourceRequirements>) -> Requested {
    let get = |key: &str| {
        let resources = resources?;
        resources
            .requests
            .as_ref()
            .and_then(|r| r.get(key))
            .or_else(|| resources.limits.as_ref().and_then(|l| l.get(key)))
            .map(|q| q.0.clone())
    };
    // A request too large to parse takes the whole node: the conservative reading of what a pod
    // holds (an unparsable one counts nothing, as the scheduler would never have placed it).
    let requested = |q: Option<String>, parse: fn(&str) -> Result<u64, QuantityError>| match q
        .as_deref()
        .map(parse)
    {
        Some(Ok(value)) => value,
        Some(Err(QuantityError::TooLarge { .. })) => u64::MAX,
        Some(Err(QuantityError::Invalid(_))) | None => 0,
    };
    Requested {
        gpus: requested(get(GPU_RESOURCE), quantity::parse_units),
        cpu_milli: requested(get("cpu"), quantity::parse_milli),
        memory_bytes: requested(get("memory"), quantity::parse_units),
    }
}

/// What a pod takes from its node, as the scheduler counts it: its containers and sidecars (init
/// containers that keep running) together, or its largest one-off init container if that is
/// more, plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Requested {
    let Some(spec) = pod.spec.as_ref() else {
        return Requested::default();
    };
    let mut running = Requested::default();
    for container in &spec.containers {
        running.add(container_requests(container.resources.as_ref()));
    }
    let mut init_peak = Requested::default();
    for init in spec.init_containers.iter().flatten() {
        let requested = container_requests(init.resources.as_ref());
        if init.restart_policy.as_deref() == Some("Always") {
            running.add(requested);
        } else {
            init_peak = init_peak.max(requested);
        }
    }
    let mut total = running.max(init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(container_requests(Some(&ResourceRequirements {
            requests: Some(overhead.clone()),
            ..Default::default()
        })));
    }
    total
}

/// Whether a pod still holds its requests: neither succeeded nor failed.
fn holds_requests(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Sums what the pods bound to one of `nodes` request, finished pods left out: pure.
pub fn requested_on<'p>(
    pods: impl IntoIterator<Item = &'p Pod>,
    nodes: &BTreeSet<String>,
) -> Requested {
    let mut total = Requested::default();
    for pod in pods {
        let on_pool = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| nodes.contains(n));
        if on_pool && holds_requests(pod) {
            total.add(pod_requests(pod));
        }
    }
    total
}

/// Free capacity of the pool: allocatable minus requested, never below zero, GPUs at most
/// `gpus` (the pool's share after the spec's bound): pure.
pub fn free_capacity(
    nodes: &NodeCapacity,
    requested: &Requested,
    gpus: u32,
) -> (u32, String, String) {
    let gpus_free = u64::from(nodes.gpus)
        .saturating_sub(requested.gpus)
        .min(u64::from(gpus)) as u32;
    (
        gpus_free,
        quantity::format_milli(nodes.cpu_milli.saturating_sub(requested.cpu_milli)),
        quantity::format_bytes(nodes.memory_bytes.saturating_sub(requested.memory_bytes)),
    )
}

/// Sums allocatable resources of the ready, schedulable Nodes: pure, from a Node list. A node
/// about to be reclaimed (see `capacity::signals`) offers nothing: replicas placed there would
/// go with it.
pub fn node_capacity(nodes: &[Node]) -> NodeCapacity {
    let mut total = NodeCapacity::default();
    for node in nodes {
        total.nodes += 1;
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let cordoned = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !ready || cordoned || reclamation_signal(node).is_some() {
            continue;
        }
        total.ready_nodes += 1;
        if let Some(name) = node.metadata.name.as_ref() {
            total.counted.insert(name.clone());
        }
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let get = |key: &str| allocatable.and_then(|a| a.get(key)).map(|q| q.0.clone());
        total.gpus += get(GPU_RESOURCE)
            .and_then(|q| quantity::parse_units(&q).ok())
            .unwrap_or(0) as u32;
        total.cpu_milli += get("cpu")
            .and_then(|q| quantity::parse_milli(&q).ok())
            .unwrap_or(0);
        total.memory_bytes += get("memory")
            .and_then(|q| quantity::parse_units(&q).ok())
            .unwrap_or(0);
    }
    total
}

/// The status a probe outcome gives a pool: pure.
pub fn pool_status(
    pool: &ComputePool,
    probe: &std::result::Result<Probe, String>,
    now: k8s_openapi::jiff::Timestamp,
) -> ComputePoolStatus {
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let (decided, observed) = match probe {
        Err(message) => (
            vec![
                Decided::new("Reachable", false, "ProbeFailed", message.clone()),
                Decided::new(
                    "Ready",
                    false,
                    "Unreachable",
                    format!("the pool's cluster does not answer: {message}"),
                ),
            ],
            None,
        ),
        Ok(Probe {
            nodes: capacity,
            requested,
            ..
        }) => {
            let wants_gpus = pool.spec.capacity.gpu.as_ref().is_some_and(|g| g.count > 0);
            let ready = capacity.ready_nodes > 0 && (!wants_gpus || capacity.gpus > 0);
            let gpus = pool
                .spec
                .capacity
                .gpu
                .as_ref()
                .map_or(capacity.gpus, |g| g.count.min(capacity.gpus));
            let mut message = format!(
                "{} of {} matching nodes ready, {} GPUs allocatable",
                capacity.ready_nodes, capacity.nodes, capacity.gpus
            );
            let free = match requested {
                Ok(requested) => Some(free_capacity(capacity, requested, gpus)),
                Err(why) => {
                    message.push_str(&format!("; free capacity unknown: {why}"));
                    None
                }
            };
            (
                vec![
                    Decided::new("Reachable", true, "ProbeSucceeded", "the cluster answers"),
                    Decided::new(
                        "Ready",
                        ready,
                        if ready { "NodesReady" } else { "NoReadyNodes" },
                        message,
                    ),
                ],
                Some(match free {
                    Some((gpus_free, cpu_free, memory_free)) => ObservedCapacity {
                        gpus,
                        gpus_free: Some(gpus_free),
                        cpu_free: Some(cpu_free),
                        memory_free: Some(memory_free),
                    },
                    None => ObservedCapacity {
                        gpus,
                        ..Default::default()
                    },
                }),
            )
        }
    };
    ComputePoolStatus {
        observed_generation: pool.metadata.generation,
        conditions: merge(previous, decided, pool.metadata.generation, now),
        observed_capacity: observed,
        ..Default::default()
    }
}

/// Equal but for condition times.
impl ReportedStatus for ComputePoolStatus {
    fn says_the_same(&self, other: &Self) -> bool {
        same(&self.conditions, &other.conditions)
            && self.observed_capacity == other.observed_capacity
            && self.observed_generation == other.observed_generation
            && self.addable_capacity == other.addable_capacity
            && self.shortage == other.shortage
            && self.reclaiming_nodes == other.reclaiming_nodes
    }
}

#[instrument(skip(pool, ctx), fields(name = pool.name_any()))]
pub async fn reconcile(pool: Arc<ComputePool>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let _timer = ReconcileTimer::start(&ctx.metrics, "computepool");
    let probe = probe(&pool, &ctx).await;
    let labels = PoolLabels {
        pool: pool.name_any(),
        cloud: pool.spec.cloud.to_string(),
    };
    ctx.metrics
        .pool_reachable
        .get_or_create(&labels)
        .set(i64::from(probe.is_ok()));
    if probe.is_err() {
        ctx.metrics.remote_errors.get_or_create(&labels).inc();
    }
    ctx.metrics
        .replicas
        .get_or_create(&labels)
        .set(i64::from(replicas_on(&pool.name_any(), &ctx)));
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = pool_status(&pool, &probe, now);
    // Capacity (issue #19): assess what the probe saw against the tracker's previous state,
    // remember it for planning before the status write triggers the deployments' re-plan.
    let name = pool.name_any();
    let pools: BTreeSet<String> = ctx.pools.state().iter().map(|p| p.name_any()).collect();
    ctx.capacity.retain(|known| pools.contains(known));
    let tracked = match &probe {
        Ok(Probe {
            capacity: Ok(observed),
            ..
        }) => Some(capacity::track(&pool, ctx.capacity.state(&name), observed)),
        _ => None,
    };
    let mut notes = Vec::new();
    if let Some(tracked) = &tracked {
        ctx.capacity.record(&name, tracked.clone());
        capacity::export(&ctx, &labels, &tracked.assessment);
        let reported = pool
            .status
            .as_ref()
            .map(|s| s.reclaiming_nodes.clone())
            .unwrap_or_default();
        notes = capacity::notes(&tracked.assessment, &reported);
    }
    let status = capacity::with_capacity(
        status,
        &pool,
        probe.as_ref().ok().map(|p| &p.nodes),
        tracked.as_ref().map(|t| &t.assessment),
        now,
    );
    // Rules between pools (a public pool naming a private store or its credentials): an invalid
    // pool takes no replicas, and says why (see `pool_validity`).
    let issues = crate::estate::validate_pool(
        &ctx.pools_and_policies(),
        &pool,
        Some(ctx.clusters.operator_namespace()),
    );
    let previous = pool.status.as_ref().map(|s| s.conditions.as_slice());
    let previous = previous.unwrap_or_default();
    if let Some(note) = crate::operator::pool::validity::invalid_event(previous, &issues) {
        crate::operator::pool::validity::publish(&ctx, &pool, note).await;
    }
    let status = crate::operator::pool::validity::with_validity(
        status,
        previous,
        &issues,
        pool.metadata.generation,
        now,
    );
    StatusWriter {
        field_manager: FIELD_MANAGER,
    }
    .write(
        ctx.clusters.local().client().await,
        pool.as_ref(),
        pool.status.as_ref(),
        &status,
    )
    .await?;
    capacity::publish(&ctx, &pool, notes).await;
    ctx.succeeded(pool.as_ref());
    // Probed every period, so an unreachable pool is noticed within one period.
    Ok(Action::requeue(ctx.settings.period))
}

/// Replicas the deployments' statuses place on `pool`, for the replicas-by-pool gauge.
fn replicas_on(pool: &str, ctx: &Context) -> u32 {
    ctx.deployments
        .state()
        .iter()
        .filter_map(|md| md.status.as_ref())
        .flat_map(|s| &s.components)
        .flat_map(|c| &c.placements)
        .filter(|p| p.pool == pool)
        .map(|p| p.replicas)
        .sum()
}

/// Probes a pool's cluster, retrying quickly so that one failed request (a 500, a dropped
/// connection) does not flip the pool and move its replicas; a cluster that is really gone fails
/// all attempts within about a second.
async fn probe(pool: &ComputePool, ctx: &Context) -> std::result::Result<Probe, String> {
    tokio::time::timeout(PROBE_BUDGET, probe_attempts(pool, ctx))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", PROBE_BUDGET.as_secs())))
}

async fn probe_attempts(pool: &ComputePool, ctx: &Context) -> std::result::Result<Probe, String> {
    let mut last_error = String::new();
    for attempt in 0..PROBE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match probe_once(pool, ctx).await {
            Ok(capacity) => return Ok(capacity),
            Err(err) => last_error = err,
        }
    }
    Err(last_error)
}

async fn probe_once(pool: &ComputePool, ctx: &Context) -> std::result::Result<Probe, String> {
    let cluster = ctx
        .clusters
        .for_pool(pool)
        .await
        .map_err(|e| e.to_string())?;
    let nodes: Api<Node> = Api::all(cluster.client().await);
    let selector: Vec<String> = pool
        .spec
        .node_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let listed = tokio::time::timeout(
        PROBE_TIMEOUT,
        nodes.list(&ListParams::default().labels(&selector.join(","))),
    )
    .await
    .map_err(|_| format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))?
    .map_err(|e| e.to_string())?;
    let capacity = tokio::time::timeout(
        PROBE_TIMEOUT,
        skybridge_pods(&cluster.client().await, &pool.name_any()),
    )
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "pods not listed within {}s",
            PROBE_TIMEOUT.as_secs()
        ))
    })
    .map(|pods| {
        observe_pool(
            k8s_openapi::jiff::Timestamp::now(),
            &listed.items,
            &pods,
            replica_of,
        )
    });
    let nodes = node_capacity(&listed.items);
    // Requests are extra information: a member cluster whose RBAC predates `pods list` still
    // probes as reachable and ready, with free capacity reported as unknown.
    let requested = if nodes.counted.is_empty() {
        Ok(Requested::default())
    } else {
        tokio::time::timeout(
            PROBE_TIMEOUT,
            pods_requests(&cluster.client().await, &nodes.counted),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "pods not listed within {}s",
                PROBE_TIMEOUT.as_secs()
            ))
        })
    };
    Ok(Probe {
        nodes,
        requested,
        capacity,
    })
}

/// Skybridge's pods placed on `pool` in its cluster (every namespace): one list per probe, by
/// label, in pages.
async fn skybridge_pods(
    client: &kube::Client,
    pool: &str,
) -> std::result::Result<Vec<Pod>, String> {
    use crate::operator::kubernetes::names::{LABEL_POOL, MANAGED_BY, MANAGED_BY_VALUE};
    let pods: Api<Pod> = Api::all(client.clone());
    let mut params = ListParams::default()
        .labels(&format!(
            "{MANAGED_BY}={MANAGED_BY_VALUE},{LABEL_POOL}={pool}"
        ))
        .limit(PODS_PAGE);
    let mut all = Vec::new();
    loop {
        let page = pods
            .list(&params)
            .await
            .map_err(|e| format!("cannot list pods: {e}"))?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(all),
        }
    }
}

/// The component a Skybridge pod is a replica of, from its labels.
pub fn replica_of(pod: &Pod) -> Option<ComponentKey> {
    use crate::operator::kubernetes::names::{LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_NAMESPACE};
    let labels = pod.metadata.labels.as_ref()?;
    Some(ComponentKey {
        namespace: labels.get(LABEL_NAMESPACE)?.clone(),
        deployment: labels.get(LABEL_DEPLOYMENT)?.clone(),
        component: labels.get(LABEL_COMPONENT)?.clone(),
    })
}

/// What the running and pending pods on `nodes` request: per Node for a small pool, else from
/// every unfinished pod of the cluster, page by page (finished pods are filtered out by the API
/// server either way).
async fn pods_requests(
    client: &kube::Client,
    nodes: &BTreeSet<String>,
) -> std::result::Result<Requested, String> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut total = Requested::default();
    if nodes.len() <= PER_NODE_LISTS_UP_TO {
        for node in nodes {
            let fields = format!("spec.nodeName={node},{UNFINISHED}");
            total.add(paged_requests(&pods, &fields, nodes).await?);
        }
        Ok(total)
    } else {
        paged_requests(&pods, UNFINISHED, nodes).await
    }
}

async fn paged_requests(
    pods: &Api<Pod>,
    fields: &str,
    nodes: &BTreeSet<String>,
) -> std::result::Result<Requested, String> {
    let mut params = ListParams::default().fields(fields).limit(PODS_PAGE);
    let mut total = Requested::default();
    loop {
        let page = pods
            .list(&params)
            .await
            .map_err(|e| format!("cannot list pods: {e}"))?;
        total.add(requested_on(&page.items, nodes));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(total),
        }
    }
}

pub fn error_policy(pool: Arc<ComputePool>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(name = pool.name_any(), %error, "pool reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "computepool".into(),
            kind: error.kind().into(),
        })
        .inc();
    Action::requeue(ctx.backoff(pool.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn node(gpus: u32, ready: bool, cordoned: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable: Some(cordoned),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("nvidia.com/gpu".to_string(), Quantity(gpus.to_string())),
                    ("cpu".to_string(), Quantity("32".into())),
                    ("memory".to_string(), Quantity("256Gi".into())),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_ready_schedulable_nodes_count() {
        let capacity = node_capacity(&[
            node(8, true, false),
            node(8, false, false),
            node(4, true, true),
        ]);
        assert_eq!(capacity.nodes, 3);
        assert_eq!(capacity.ready_nodes, 1);
        assert_eq!(capacity.gpus, 8);
        assert_eq!(capacity.cpu_milli, 32_000);
    }

    #[test]
    fn a_node_about_to_be_reclaimed_offers_no_capacity() {
        let mut doomed = node(8, true, false);
        doomed.metadata.name = Some("spot-a".into());
        doomed.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "aws-node-termination-handler/spot-itn".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        let mut fine = node(4, true, false);
        fine.metadata.name = Some("spot-b".into());
        let capacity = node_capacity(&[doomed, fine]);
        assert_eq!((capacity.ready_nodes, capacity.gpus), (1, 4));
        assert_eq!(capacity.counted, BTreeSet::from(["spot-b".to_string()]));
    }

    fn pool() -> ComputePool {
        serde_yaml_ng::from_str(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: p, generation: 2}\nspec: {cloud: private, provider: onprem, region: r, capacity: {gpu: {type: l4, count: 6}}}\n",
        )
        .unwrap()
    }

    fn probe(nodes: NodeCapacity, requested: Requested) -> std::result::Result<Probe, String> {
        Ok(Probe {
            nodes,
            requested: Ok(requested),
            capacity: Err("not observed in this test".into()),
        })
    }

    #[test]
    fn unreachable_pools_are_not_ready() {
        let status = pool_status(
            &pool(),
            &Err("connection refused".into()),
            k8s_openapi::jiff::Timestamp::now(),
        );
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "Unreachable");
        assert!(status.observed_capacity.is_none());
    }

    #[test]
    fn observed_gpus_are_bounded_by_the_spec() {
        let status = pool_status(
            &pool(),
            &probe(node_capacity(&[node(8, true, false)]), Requested::default()),
            k8s_openapi::jiff::Timestamp::now(),
        );
        assert_eq!(status.observed_capacity.unwrap().gpus, 6);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.status == "True" && c.observed_generation == Some(2))
        );
    }

    fn pod(node: Option<&str>, phase: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        if let Some(node) = node {
            spec["nodeName"] = serde_json::json!(node);
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": spec,
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn gpu_pod(node: &str, phase: &str, gpus: u32) -> Pod {
        pod(
            Some(node),
            phase,
            serde_json::json!({"containers": [{"name": "c", "resources": {
                "limits": {"nvidia.com/gpu": gpus.to_string()},
                "requests": {"cpu": "1", "memory": "1Gi"},
            }}]}),
        )
    }

    #[test]
    fn a_pod_requests_its_containers_or_its_largest_init_container_plus_overhead() {
        let requested = pod_requests(&pod(
            None,
            "Running",
            serde_json::json!({
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "2"}}},
                ],
                "initContainers": [
                    {"name": "fetch", "resources": {"requests": {"cpu": "4", "memory": "1Gi"}}},
                    {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"memory": "1Gi"}}},
                ],
                "overhead": {"cpu": "100m"},
            }),
        ));
        assert_eq!(
            requested,
            Requested {
                gpus: 2,
                // max(0.5 + 1 (limit as request), 4 (one-off init)) + 0.1 overhead
                cpu_milli: 4_100,
                // 1 + 2 + 1 (sidecar) GiB against 1 GiB for the init container
                memory_bytes: 4 << 30,
            }
        );
    }

    #[test]
    fn only_unfinished_pods_on_the_pools_nodes_count() {
        let nodes: BTreeSet<String> = ["gpu-0".to_string(), "gpu-1".to_string()].into();
        let pods = [
            gpu_pod("gpu-0", "Running", 2),
            gpu_pod("gpu-1", "Pending", 1),
            gpu_pod("gpu-1", "Succeeded", 4),
            gpu_pod("gpu-0", "Failed", 4),
            gpu_pod("other-node", "Running", 8),
            pod(
                None,
                "Pending",
                serde_json::json!({"containers": [{"name": "c",
                "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}),
            ),
        ];
        let requested = requested_on(&pods, &nodes);
        assert_eq!(requested.gpus, 3);
        assert_eq!(requested.cpu_milli, 2_000);
        assert_eq!(requested.memory_bytes, 2 << 30);
    }

    #[test]
    fn absurd_quantities_saturate_instead_of_overflowing() {
        let nodes: BTreeSet<String> = ["gpu-0".to_string()].into();
        let huge = || {
            pod(
                Some("gpu-0"),
                "Running",
                serde_json::json!({"containers": [{"name": "c", "resources": {
                    "requests": {"memory": "16Ei", "nvidia.com/gpu": "9223372036854775807"},
                }}]}),
            )
        };
        let requested = requested_on(&[huge(), huge(), huge()], &nodes);
        assert_eq!(requested.gpus, u64::MAX);
        let capacity = NodeCapacity {
            gpus: 8,
            ..Default::default()
        };
        assert_eq!(free_capacity(&capacity, &requested, 8).0, 0);
    }

    #[test]
    fn free_capacity_is_allocatable_minus_requested_within_the_pools_share() {
        let nodes = NodeCapacity {
            gpus: 8,
            cpu_milli: 32_000,
            memory_bytes: 256 << 30,
            ..Default::default()
        };
        let requested = Requested {
            gpus: 3,
            cpu_milli: 2_500,
            memory_bytes: 10 << 30,
        };
        assert_eq!(
            free_capacity(&nodes, &requested, 8),
            (5, "29500m".to_string(), "246Gi".to_string())
        );
        // The spec bounds the pool to 4 of the 8 GPUs: at most 4 are free for it.
        assert_eq!(free_capacity(&nodes, &requested, 4).0, 4);
        // Over-requested nodes (requests above allocatable after a resize) have nothing free.
        let over = Requested {
            gpus: 9,
            cpu_milli: 40_000,
            memory_bytes: 300 << 30,
        };
        assert_eq!(
            free_capacity(&nodes, &over, 8),
            (0, "0".to_string(), "0".to_string())
        );
    }

    #[test]
    fn the_status_reports_free_gpus_and_says_when_they_are_unknown() {
        let mut nodes = node_capacity(&[node(8, true, false)]);
        nodes.counted.insert("n".into());
        let loaded = Requested {
            gpus: 5,
            ..Default::default()
        };
        let status = pool_status(
            &pool(),
            &probe(nodes, loaded),
            k8s_openapi::jiff::Timestamp::now(),
        );
        let observed = status.observed_capacity.unwrap();
        assert_eq!((observed.gpus, observed.gpus_free), (6, Some(3)));

        let unknown = Ok(Probe {
            nodes: node_capacity(&[node(8, true, false)]),
            requested: Err("cannot list pods: forbidden".into()),
            capacity: Err("cannot list pods: forbidden".into()),
        });
        let status = pool_status(&pool(), &unknown, k8s_openapi::jiff::Timestamp::now());
        let observed = status.observed_capacity.unwrap();
        assert_eq!(observed.gpus, 6);
        assert_eq!(observed.gpus_free, None, "unknown, not a made-up number");
        assert_eq!(observed.cpu_free, None);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "the pool still takes replicas");
        assert!(
            ready
                .message
                .contains("free capacity unknown: cannot list pods: forbidden")
        );
    }
}
