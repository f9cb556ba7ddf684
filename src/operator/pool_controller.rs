//! The ComputePool controller: probes each pool's cluster and reports whether it is reachable,
//! ready, and how much capacity its Nodes offer. Deployments re-plan when this status changes.

use super::conditions::{Decided, merge, same};
use super::context::Context;
use super::error::{Error, Result};
use super::metrics::{ControllerLabels, ErrorLabels, PoolLabels};
use crate::api::{ComputePool, ComputePoolStatus, ObservedCapacity, quantity};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{instrument, warn};

pub const FIELD_MANAGER: &str = "skybridge.io/pool-controller";

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
}

/// Sums allocatable resources of the ready, schedulable Nodes: pure, from a Node list.
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
        if !ready || cordoned {
            continue;
        }
        total.ready_nodes += 1;
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let get = |key: &str| allocatable.and_then(|a| a.get(key)).map(|q| q.0.clone());
        total.gpus += get("nvidia.com/gpu")
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
    probe: &std::result::Result<NodeCapacity, String>,
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
        Ok(capacity) => {
            let wants_gpus = pool.spec.capacity.gpu.as_ref().is_some_and(|g| g.count > 0);
            let ready = capacity.ready_nodes > 0 && (!wants_gpus || capacity.gpus > 0);
            let message = format!(
                "{} of {} matching nodes ready, {} GPUs allocatable",
                capacity.ready_nodes, capacity.nodes, capacity.gpus
            );
            let gpus = pool
                .spec
                .capacity
                .gpu
                .as_ref()
                .map_or(capacity.gpus, |g| g.count.min(capacity.gpus));
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
                Some(ObservedCapacity {
                    gpus,
                    gpus_free: gpus,
                    cpu_free: Some(quantity::format_milli(capacity.cpu_milli)),
                    memory_free: Some(quantity::format_bytes(capacity.memory_bytes)),
                }),
            )
        }
    };
    ComputePoolStatus {
        observed_generation: pool.metadata.generation,
        conditions: merge(
            previous,
            decided,
            pool.metadata.generation,
            k8s_openapi::jiff::Timestamp::now(),
        ),
        observed_capacity: observed,
    }
}

#[instrument(skip(pool, ctx), fields(name = pool.name_any()))]
pub async fn reconcile(pool: Arc<ComputePool>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let started = Instant::now();
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
    let status = pool_status(&pool, &probe);
    let unchanged = pool.status.as_ref().is_some_and(|s| {
        same(&s.conditions, &status.conditions)
            && s.observed_capacity == status.observed_capacity
            && s.observed_generation == status.observed_generation
    });
    if !unchanged {
        let api: Api<ComputePool> = Api::all(ctx.clusters.local().client().await);
        let patch = json!({
            "apiVersion": ComputePool::api_version(&()),
            "kind": ComputePool::kind(&()),
            "status": status,
        });
        let (name, params) = (pool.name_any(), PatchParams::apply(FIELD_MANAGER).force());
        let apply_patch = Patch::Apply(&patch);
        super::retry::idempotent(|| api.patch_status(&name, &params, &apply_patch)).await?;
    }
    ctx.metrics
        .reconcile_duration
        .get_or_create(&ControllerLabels {
            controller: "computepool".into(),
        })
        .observe(started.elapsed().as_secs_f64());
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
async fn probe(pool: &ComputePool, ctx: &Context) -> std::result::Result<NodeCapacity, String> {
    tokio::time::timeout(PROBE_BUDGET, probe_attempts(pool, ctx))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", PROBE_BUDGET.as_secs())))
}

async fn probe_attempts(
    pool: &ComputePool,
    ctx: &Context,
) -> std::result::Result<NodeCapacity, String> {
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

async fn probe_once(
    pool: &ComputePool,
    ctx: &Context,
) -> std::result::Result<NodeCapacity, String> {
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
    Ok(node_capacity(&listed.items))
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

    fn pool() -> ComputePool {
        serde_yaml_ng::from_str(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: p, generation: 2}\nspec: {cloud: private, provider: onprem, region: r, capacity: {gpu: {type: l4, count: 6}}}\n",
        )
        .unwrap()
    }

    #[test]
    fn unreachable_pools_are_not_ready() {
        let status = pool_status(&pool(), &Err("connection refused".into()));
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
        let status = pool_status(&pool(), &Ok(node_capacity(&[node(8, true, false)])));
        assert_eq!(status.observed_capacity.unwrap().gpus, 6);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.status == "True" && c.observed_generation == Some(2))
        );
    }
}
