//! Traffic in the operator: the edges around the pure decision and builder of `crate::traffic`.
//!
//! - **observe**: ready replicas per (component, pool) from the children the reconcile applied
//!   (their watches), reachability per pool, which Gateway API / MCS versions each cluster's
//!   discovery offers (`discovery`), and the route's own `status.parents`;
//! - **apply**: server-side apply of the `ServiceExport`s (and the per-pool Services they
//!   export) and of the route, forced on the operator's fields only; the sensitive guard
//!   (`guard`) runs on every route just before it is sent; exports and routes no longer desired
//!   are deleted;
//! - **report**: `status.components[].traffic`, `TrafficReady`, Events of drains and cut-offs,
//!   the weight metric (`report`).
//!
//! **Drain before scale-in.** Before the children are applied, the decision is asked with the new
//! plan: a backend about to lose replicas goes `Draining`, and its replicas are *held* (the
//! Deployment keeps `max(planned, held)`; a pool dropped from the plan is spared by the sweep)
//! until the decision releases them. A drain counts only from the moment a route carrying the
//! lowered weight was written successfully (the memory keeps the states last *written*), so
//! replicas never go before the route stopped sending to them. Components whose route cannot
//! be written at all (no Gateway API in the home cluster) hold nothing: no route sends to them.
//!
//! Kept in memory per deployment; after a restart the first reconcile starts from the status
//! (the backends last reported, so a running drain goes on) and from the placements the status
//! records for what runs.

pub mod apply;
pub mod decide;
pub mod discovery;
pub mod guard;
pub mod report;

use crate::api::{
    ComputePool, DataClass, ModelDeployment, ModelDeploymentStatus, TrafficBackendStatus,
};
use crate::operator::kubernetes::clusters::{ClusterClient, Clusters};
use crate::operator::kubernetes::metrics::{Metrics, TrafficLabels};
use crate::operator::kubernetes::names::{
    LABEL_COMPONENT, LABEL_DEPLOYMENT, LABEL_NAMESPACE, target_namespace,
};
use crate::planner::ComponentPlan;
use decide::{DecideInput, Decided, decide};
use discovery::{ApiSupport, DiscoveryCache};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::discovery::ApiResource;
use report::RouteOutcome;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// What traffic needs of the operator's context: the clusters' clients and the metrics. (Not
/// the `Context` itself, which holds the deployments' memory: traffic sits below it.)
pub struct Io<'a> {
    pub clusters: &'a Clusters,
    pub metrics: &'a Metrics,
}

/// (component, pool).
pub type PoolKey = (String, String);

/// A traffic object the operator wrote: (cluster id, kind, namespace, name).
type WrittenKey = (String, &'static str, String, String);

/// What the operator remembers of one deployment's traffic between reconciles (kept in the
/// deployment's memory in `Context`, dropped with it).
#[derive(Clone, Debug, Default)]
pub struct TrafficMemory {
    /// Per component, the backends of the route last *written* (their states and since-times).
    backends: BTreeMap<String, Vec<TrafficBackendStatus>>,
    /// Replicas last applied per (component, pool): what a scale-in would remove.
    running: BTreeMap<PoolKey, u32>,
    /// Components whose route has been written at least once (a drain means something).
    routed: BTreeSet<String>,
    /// Every traffic object written, to delete those no longer desired.
    written: BTreeSet<WrittenKey>,
    /// Whether the clusters have been listed for leftovers since the operator started.
    listed: bool,
}

/// The operator's traffic layer: its discovery cache (one per operator). What it remembers per
/// deployment is passed in and handed back ([`TrafficReport::memory`]).
#[derive(Default)]
pub struct Traffic {
    pub discovery: DiscoveryCache,
}

/// What `after_apply` found, for the status and the Events.
#[derive(Debug, Default)]
pub struct TrafficReport {
    /// Per component with `traffic`: its backends as decided now.
    pub backends: BTreeMap<String, Vec<TrafficBackendStatus>>,
    /// Per component with `traffic`: its route's fate.
    pub routes: Vec<(String, RouteOutcome)>,
    /// Events: (warning, reason, note).
    pub notes: Vec<(bool, &'static str, String)>,
    /// When the decision changes next without any event (a drain ending): reconcile by then.
    pub next: Option<Duration>,
    /// What to remember of the deployment's traffic until its next reconcile.
    pub memory: TrafficMemory,
}

/// Labels of a deployment's traffic objects (the sweep lists by them).
pub fn traffic_labels(md: &ModelDeployment, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_NAMESPACE.to_string(),
            md.namespace().unwrap_or_default(),
        ),
        (LABEL_DEPLOYMENT.to_string(), md.name_any()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (apply::LABEL_TRAFFIC.to_string(), component.to_string()),
    ])
}

fn traffic_selector(md: &ModelDeployment) -> String {
    format!(
        "{}={},{}={},{}",
        LABEL_NAMESPACE,
        md.namespace().unwrap_or_default(),
        LABEL_DEPLOYMENT,
        md.name_any(),
        apply::LABEL_TRAFFIC
    )
}

/// Whether a component (or the model it reads) is sensitive: its route may reach no public pool.
pub fn sensitive(md: &ModelDeployment, component: &crate::api::Component) -> bool {
    component.data_class == DataClass::Sensitive
        || md.spec.model_data_class() == DataClass::Sensitive
}

/// What is remembered of `md`, or after a restart what its status reported: the backends last
/// written survive restarts through `status.components[].traffic`.
fn resumed(mut remembered: TrafficMemory, md: &ModelDeployment) -> TrafficMemory {
    if remembered.backends.is_empty() && remembered.routed.is_empty() {
        for component in md.status.iter().flat_map(|s| &s.components) {
            if !component.traffic.is_empty() {
                remembered
                    .backends
                    .insert(component.name.clone(), component.traffic.clone());
                remembered.routed.insert(component.name.clone());
            }
        }
    }
    remembered
}

impl Traffic {
    /// Before the children are applied: the replicas to keep per (component, pool) for
    /// backends draining under the new plan. `placed` is what the previous decision placed
    /// (replicas per (component, pool)), used after a restart when nothing is remembered.
    #[allow(clippy::too_many_arguments)]
    pub fn holds(
        &self,
        md: &ModelDeployment,
        memory: TrafficMemory,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        plans: &[ComponentPlan],
        placed: &BTreeMap<PoolKey, (u32, u32)>,
        reachability: &BTreeMap<String, Option<String>>,
        now: Timestamp,
    ) -> BTreeMap<PoolKey, u32> {
        let remembered = resumed(memory, md);
        let mut holds = BTreeMap::new();
        for (component, plan) in md.spec.components.iter().zip(plans) {
            let Some(spec) = &component.traffic else {
                continue;
            };
            if !remembered.routed.contains(&component.name) {
                continue;
            }
            let current: BTreeMap<String, u32> =
                running_replicas(&remembered, placed, &component.name);
            let ready: BTreeMap<String, u32> = placed
                .iter()
                .filter(|((c, _), _)| c == &component.name)
                .map(|((_, pool), (_, ready))| (pool.clone(), *ready))
                .collect();
            let decided = decide(DecideInput {
                md,
                component,
                spec,
                pools,
                plan,
                current: &current,
                ready: &ready,
                reachability,
                previous: remembered
                    .backends
                    .get(&component.name)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                split: None,
                now,
            });
            for (pool, replicas) in decided.hold {
                holds.insert((component.name.clone(), pool), replicas);
            }
        }
        holds
    }

    /// After the children are applied: decide with their readiness, write the exports and the
    /// route (guarded), delete what is no longer desired, and say what to report.
    #[allow(clippy::too_many_arguments)]
    pub async fn after_apply(
        &self,
        ctx: &Io<'_>,
        md: &ModelDeployment,
        memory: TrafficMemory,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        plans: &[ComponentPlan],
        placed: &BTreeMap<PoolKey, (u32, u32)>,
        ready: &BTreeMap<PoolKey, u32>,
        holds: &BTreeMap<PoolKey, u32>,
        reachability: &BTreeMap<String, Option<String>>,
        split: Option<&decide::VersionSplit>,
        now: Timestamp,
    ) -> TrafficReport {
        let mut remembered = resumed(memory, md);
        let mut report = TrafficReport::default();
        if !has_traffic(md) && remembered.written.is_empty() {
            // Never routed, as far as this operator and the status know: nothing to do, and no
            // cluster is asked anything.
            report.memory = remembered;
            return report;
        }
        let mut desired: BTreeSet<WrittenKey> = BTreeSet::new();
        let mut clusters: BTreeMap<String, ClusterClient> = BTreeMap::new();
        let mut complete = true;
        for (component, plan) in md.spec.components.iter().zip(plans) {
            let Some(spec) = &component.traffic else {
                continue;
            };
            // What exists now that the children are applied: the plan, or more where held.
            let mut current: BTreeMap<String, u32> = plan
                .placements
                .iter()
                .map(|p| (p.pool.clone(), p.replicas))
                .collect();
            for ((c, pool), held) in holds {
                if c == &component.name {
                    let entry = current.entry(pool.clone()).or_insert(0);
                    *entry = (*entry).max(*held);
                }
            }
            // Pools whose cluster does not answer keep what they had (nothing was sent there).
            for (pool, n) in running_replicas(&remembered, placed, &component.name) {
                if reachability.get(&pool).is_some_and(Option::is_some) {
                    let entry = current.entry(pool).or_insert(0);
                    *entry = (*entry).max(n);
                }
            }
            let ready_now: BTreeMap<String, u32> = current
                .keys()
                .chain(plan.placements.iter().map(|p| &p.pool))
                .map(|pool| {
                    let ready = ready
                        .get(&(component.name.clone(), pool.clone()))
                        .or_else(|| {
                            placed
                                .get(&(component.name.clone(), pool.clone()))
                                .map(|p| &p.1)
                        })
                        .copied()
                        .unwrap_or(0);
                    (pool.clone(), ready)
                })
                .collect();
            let previous = remembered
                .backends
                .get(&component.name)
                .cloned()
                .unwrap_or_default();
            let mut decided = decide(DecideInput {
                md,
                component,
                spec,
                pools,
                plan,
                current: &current,
                ready: &ready_now,
                reachability,
                previous: &previous,
                split,
                now,
            });
            if let Some(at) = decided.next_change {
                let wait = Duration::from_secs(
                    at.as_second().saturating_sub(now.as_second()).max(1) as u64,
                );
                report.next = Some(report.next.map_or(wait, |n: Duration| n.min(wait)));
            }
            let outcome = self
                .write_component(
                    ctx,
                    md,
                    component,
                    pools,
                    &decided,
                    reachability,
                    &mut desired,
                    &mut clusters,
                )
                .await;
            match &outcome {
                Ok((route, export_problem)) => {
                    // A state changed by this write starts when the write is done, rounded up
                    // to the second the decision counts in: a drain never starts before the
                    // route carrying it is stored.
                    stamp_changes(&mut decided.backends, &previous, written_since());
                    for (warning, reason, note) in report::state_events(
                        &component.name,
                        &previous,
                        &decided.backends,
                        spec.drain_seconds,
                    ) {
                        report.notes.push((warning, reason, note));
                    }
                    remembered
                        .backends
                        .insert(component.name.clone(), decided.backends.clone());
                    remembered.routed.insert(component.name.clone());
                    let outcome = match export_problem.clone() {
                        None => RouteOutcome::Written(route.clone()),
                        Some((reason, message)) => {
                            complete = false;
                            report.notes.push((
                                true,
                                "TrafficUnavailable",
                                format!("component {}: {reason}: {message}", component.name),
                            ));
                            RouteOutcome::WrittenWithProblem {
                                route: route.clone(),
                                reason,
                                message,
                            }
                        }
                    };
                    report.routes.push((component.name.clone(), outcome));
                }
                Err(not_written) => {
                    complete = false;
                    if let RouteOutcome::NotWritten { reason, message } = &not_written {
                        // Told once per distinct note (see the controller's publish_if_new).
                        report.notes.push((
                            true,
                            "TrafficUnavailable",
                            format!("component {}: {reason}: {message}", component.name),
                        ));
                    }
                    report
                        .routes
                        .push((component.name.clone(), not_written.clone()));
                    if !remembered.routed.contains(&component.name) {
                        // Never routed: nothing to drain; report the decision as it stands.
                        remembered.backends.remove(&component.name);
                    }
                }
            }
            report
                .backends
                .insert(component.name.clone(), decided.backends.clone());
            metrics(ctx, md, &component.name, &previous, &decided.backends);
        }
        // What runs now: the plan, or more where held, or what was there where nothing could
        // be sent.
        let unreachable_running: Vec<(PoolKey, u32)> = remembered
            .running
            .iter()
            .filter(|((_, pool), _)| reachability.get(pool).is_some_and(Option::is_some))
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        remembered.running = plans
            .iter()
            .flat_map(|plan| {
                plan.placements
                    .iter()
                    .map(|p| ((plan.key.component.clone(), p.pool.clone()), p.replicas))
            })
            .collect();
        for (key, held) in holds {
            let entry = remembered.running.entry(key.clone()).or_insert(0);
            *entry = (*entry).max(*held);
        }
        for (key, n) in unreachable_running {
            let entry = remembered.running.entry(key).or_insert(0);
            *entry = (*entry).max(n);
        }
        remembered.running.retain(|_, n| *n > 0);
        // Remove what is no longer desired: what this operator wrote, and after a restart, what
        // a list finds. Only when every route was written: a cluster that failed may hold
        // objects still wanted.
        if complete {
            let stale: Vec<WrittenKey> = remembered.written.difference(&desired).cloned().collect();
            let mut failed = false;
            for (cluster_id, kind, ns, name) in &stale {
                if let Err(err) = self
                    .delete_written(ctx, md, pools, cluster_id, kind, ns, name)
                    .await
                {
                    warn!(%err, kind, name, "could not delete a traffic object no longer desired");
                    failed = true;
                }
            }
            if !remembered.listed {
                remembered.listed = self.sweep_listed(ctx, md, pools, &desired).await;
            }
            remembered.written = if failed {
                remembered.written.union(&desired).cloned().collect()
            } else {
                desired
            };
        } else {
            remembered.written = remembered.written.union(&desired).cloned().collect();
        }
        report.memory = remembered;
        report
    }

    /// Writes one component's exports and route; the route as stored, or why not.
    #[allow(clippy::too_many_arguments)]
    async fn write_component(
        &self,
        ctx: &Io<'_>,
        md: &ModelDeployment,
        component: &crate::api::Component,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        decided: &Decided,
        reachability: &BTreeMap<String, Option<String>>,
        desired: &mut BTreeSet<WrittenKey>,
        clusters: &mut BTreeMap<String, ClusterClient>,
    ) -> std::result::Result<(Value, Option<(String, String)>), RouteOutcome> {
        let not_written = |reason: &str, message: String| RouteOutcome::NotWritten {
            reason: reason.into(),
            message,
        };
        let Some(home) = pools.get(&decided.home_pool) else {
            return Err(not_written(
                "HomePoolMissing",
                format!("home pool {} does not exist", decided.home_pool),
            ));
        };
        let home_cluster = ctx
            .clusters
            .for_pool(home)
            .await
            .map_err(|e| not_written("HomeClusterUnavailable", e.to_string()))?;
        clusters.insert(home_cluster.id.clone(), home_cluster.clone());
        let home_support = self
            .discovery
            .support(&home_cluster)
            .await
            .map_err(|e| not_written("HomeClusterUnavailable", e.to_string()))?;
        let Some(route_resource) = home_support.route(decided.grpc) else {
            return Err(not_written(
                "GatewayAPIMissing",
                format!(
                    "the home cluster of pool {} serves no gateway.networking.k8s.io/v1: install the Gateway API CRDs and an implementation",
                    decided.home_pool
                ),
            ));
        };
        // Exports first: a route naming a ServiceImport before its export exists would not
        // resolve for longer. Best effort: a pool whose export fails (or whose cluster does not
        // answer: its weight is 0 anyway) must not keep the route from following the others.
        let mut export_problem: Option<(String, String)> = None;
        for export in &decided.exports {
            let Some(pool) = pools.get(&export.pool) else {
                continue;
            };
            let namespace = target_namespace(md, pool);
            let Ok(cluster) = ctx.clusters.for_pool(pool).await else {
                export_problem.get_or_insert((
                    "ExportFailed".into(),
                    format!("pool {}: no client for its cluster", export.pool),
                ));
                continue;
            };
            clusters.insert(cluster.id.clone(), cluster.clone());
            let names = [
                ("Service", &export.service),
                ("ServiceExport", &export.export),
            ]
            .map(|(kind, o)| {
                (
                    kind,
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            });
            // Whatever happens below, these stay wanted: never swept for a failed write.
            for (kind, name) in &names {
                desired.insert((cluster.id.clone(), kind, namespace.clone(), name.clone()));
            }
            if reachability.get(&export.pool).is_some_and(Option::is_some) {
                continue;
            }
            let support = match self.discovery.support(&cluster).await {
                Ok(support) => support,
                Err(e) => {
                    export_problem.get_or_insert((
                        "ExportFailed".into(),
                        format!("pool {}: discovery: {e}", export.pool),
                    ));
                    continue;
                }
            };
            let Some(export_resource) = support.service_export() else {
                export_problem.get_or_insert((
                    "MCSAPIMissing".into(),
                    format!(
                        "the cluster of pool {} serves no multicluster.x-k8s.io ServiceExport (v1alpha1 or v1beta1): install an MCS implementation",
                        export.pool
                    ),
                ));
                continue;
            };
            let service_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
            for (resource, kind, object) in [
                (&service_resource, "Service", &export.service),
                (&export_resource, "ServiceExport", &export.export),
            ] {
                if let Err(e) = apply::apply(&cluster, resource, &namespace, object.clone()).await {
                    if apply::not_served(&e) {
                        self.discovery.forget(&cluster.id);
                    }
                    let name = object["metadata"]["name"].as_str().unwrap_or_default();
                    export_problem.get_or_insert((
                        "ExportFailed".into(),
                        format!("pool {}: {kind} {name}: {e}", export.pool),
                    ));
                    break;
                }
            }
        }
        let route = decided
            .route
            .as_ref()
            .map_err(|why| not_written("SensitiveGuard", format!("route not built: {why}")))?;
        let namespace = target_namespace(md, home);
        // Services beside the route (a rollout's new version), before it names them.
        let service_resource = ApiResource::erase::<k8s_openapi::api::core::v1::Service>(&());
        for service in &decided.services {
            let name = service["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            desired.insert((
                home_cluster.id.clone(),
                "Service",
                namespace.clone(),
                name.clone(),
            ));
            apply::apply(
                &home_cluster,
                &service_resource,
                &namespace,
                service.clone(),
            )
            .await
            .map_err(|e| not_written("RouteWriteFailed", format!("Service {name}: {e}")))?;
        }
        let name = route["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        desired.insert((
            home_cluster.id.clone(),
            route_kind(decided.grpc),
            namespace.clone(),
            name.clone(),
        ));
        if !decided.rewrite {
            // The route already carries these weights (hysteresis): read it for its status.
            if let Some(stored) = apply::get(&home_cluster, &route_resource, &namespace, &name)
                .await
                .map_err(|e| {
                    not_written(
                        "RouteWriteFailed",
                        format!("{} {name}: {e}", route_resource.kind),
                    )
                })?
            {
                return serde_json::to_value(&stored)
                    .map(|route| (route, export_problem))
                    .map_err(|e| not_written("RouteWriteFailed", e.to_string()));
            }
        }
        // The guard, on the very object about to be sent.
        if let Err(why) = guard::check_route(sensitive(md, component), route, &decided.provenance) {
            return Err(not_written(
                "SensitiveGuard",
                format!("route not written: {why}"),
            ));
        }
        let stored = apply::apply(&home_cluster, &route_resource, &namespace, route.clone())
            .await
            .map_err(|e| {
                if apply::not_served(&e) {
                    self.discovery.forget(&home_cluster.id);
                }
                not_written(
                    "RouteWriteFailed",
                    format!("{} {name}: {e}", route_resource.kind),
                )
            })?;
        serde_json::to_value(&stored)
            .map(|route| (route, export_problem))
            .map_err(|e| not_written("RouteWriteFailed", e.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn delete_written(
        &self,
        ctx: &Io<'_>,
        _md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        cluster_id: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> kube::Result<()> {
        let Some(cluster) = cluster_by_id(ctx, pools, cluster_id).await else {
            // Its pools are gone, or its Secret changed: the list after a restart finds it.
            return Ok(());
        };
        let Some(resource) = resource_of(&self.discovery, &cluster, kind).await? else {
            return Ok(());
        };
        apply::delete(&cluster, &resource, namespace, name).await
    }

    /// Lists every pool's cluster for this deployment's traffic objects and deletes those not
    /// desired; whether every cluster answered.
    async fn sweep_listed(
        &self,
        ctx: &Io<'_>,
        md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        desired: &BTreeSet<WrittenKey>,
    ) -> bool {
        let mut seen = BTreeSet::new();
        let mut complete = true;
        for pool in pools.values() {
            let Ok(cluster) = ctx.clusters.for_pool(pool).await else {
                complete = false;
                continue;
            };
            if !seen.insert(cluster.id.clone()) {
                continue;
            }
            for kind in ["HTTPRoute", "GRPCRoute", "ServiceExport", "Service"] {
                let resource = match resource_of(&self.discovery, &cluster, kind).await {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(_) => {
                        complete = false;
                        continue;
                    }
                };
                let Ok(found) = apply::list(&cluster, &resource, &traffic_selector(md)).await
                else {
                    complete = false;
                    continue;
                };
                for (ns, name) in found {
                    let key = (
                        cluster.id.clone(),
                        static_kind(kind),
                        ns.clone(),
                        name.clone(),
                    );
                    if !desired.contains(&key)
                        && apply::delete(&cluster, &resource, &ns, &name)
                            .await
                            .is_err()
                    {
                        complete = false;
                    }
                }
            }
        }
        complete
    }

    /// On deletion of the deployment: every traffic object in every pool's cluster.
    pub async fn cleanup(
        &self,
        ctx: &Io<'_>,
        md: &ModelDeployment,
        memory: &TrafficMemory,
        pools: &BTreeMap<String, Arc<ComputePool>>,
    ) -> bool {
        if !has_traffic(md) && memory.written.is_empty() {
            return true;
        }
        self.sweep_listed(ctx, md, pools, &BTreeSet::new()).await
    }
}

/// Whether a deployment routes any component, or its status says it did.
fn has_traffic(md: &ModelDeployment) -> bool {
    md.spec.components.iter().any(|c| c.traffic.is_some())
        || md
            .status
            .as_ref()
            .is_some_and(|s| s.components.iter().any(|c| !c.traffic.is_empty()))
}

/// Puts the report into the status: each component's `traffic[]`, and `TrafficReady`.
pub fn report_into(
    status: &mut ModelDeploymentStatus,
    previous: Option<&ModelDeploymentStatus>,
    report: &TrafficReport,
    generation: Option<i64>,
    now: Timestamp,
) {
    for component in &mut status.components {
        component.traffic = report
            .backends
            .get(&component.name)
            .cloned()
            .unwrap_or_default();
    }
    status
        .conditions
        .retain(|c| c.type_ != crate::api::TRAFFIC_READY);
    if let Some(decided) = report::traffic_ready(&report.routes) {
        let previous_conditions = previous
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        status
            .conditions
            .extend(crate::operator::kubernetes::conditions::merge(
                previous_conditions,
                vec![decided],
                generation,
                now,
            ));
    }
}

/// The weight gauge of each backend; backends gone from the route lose their series.
fn metrics(
    ctx: &Io<'_>,
    md: &ModelDeployment,
    component: &str,
    previous: &[TrafficBackendStatus],
    backends: &[TrafficBackendStatus],
) {
    let labels = |b: &TrafficBackendStatus| TrafficLabels {
        namespace: md.namespace().unwrap_or_default(),
        deployment: md.name_any(),
        component: component.to_string(),
        pool: b.pool.clone(),
        kind: b.kind.as_str().to_string(),
        backend: b.name.clone(),
    };
    for b in previous {
        let gone = labels(b);
        if !backends.iter().any(|n| labels(n) == gone) {
            ctx.metrics.traffic_weight.remove(&gone);
        }
    }
    for b in backends {
        ctx.metrics
            .traffic_weight
            .get_or_create(&labels(b))
            .set(i64::from(b.weight));
    }
}

fn running_replicas(
    remembered: &TrafficMemory,
    placed: &BTreeMap<PoolKey, (u32, u32)>,
    component: &str,
) -> BTreeMap<String, u32> {
    let from_memory: BTreeMap<String, u32> = remembered
        .running
        .iter()
        .filter(|((c, _), _)| c == component)
        .map(|((_, pool), n)| (pool.clone(), *n))
        .collect();
    if !from_memory.is_empty() || remembered.routed.contains(component) {
        return from_memory;
    }
    placed
        .iter()
        .filter(|((c, _), _)| c == component)
        .map(|((_, pool), (n, _))| (pool.clone(), *n))
        .collect()
}

/// Now, rounded up to the next whole second.
fn written_since() -> Timestamp {
    let now = Timestamp::now();
    let second = now.as_second() + i64::from(now.subsec_nanosecond() > 0);
    Timestamp::from_second(second).unwrap_or(now)
}

/// Sets `since` of every backend whose state differs from `previous` (or is new) to `at`.
fn stamp_changes(
    backends: &mut [TrafficBackendStatus],
    previous: &[TrafficBackendStatus],
    at: Timestamp,
) {
    for b in backends {
        let same = previous
            .iter()
            .any(|p| p.pool == b.pool && p.kind == b.kind && p.state == b.state);
        if !same {
            b.since = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at);
        }
    }
}

fn route_kind(grpc: bool) -> &'static str {
    if grpc { "GRPCRoute" } else { "HTTPRoute" }
}

fn static_kind(kind: &str) -> &'static str {
    match kind {
        "HTTPRoute" => "HTTPRoute",
        "GRPCRoute" => "GRPCRoute",
        "ServiceExport" => "ServiceExport",
        _ => "Service",
    }
}

async fn resource_of(
    discovery: &DiscoveryCache,
    cluster: &ClusterClient,
    kind: &str,
) -> kube::Result<Option<ApiResource>> {
    if kind == "Service" {
        return Ok(Some(ApiResource::erase::<
            k8s_openapi::api::core::v1::Service,
        >(&())));
    }
    let support: ApiSupport = discovery.support(cluster).await?;
    Ok(match kind {
        "HTTPRoute" => support.route(false),
        "GRPCRoute" => support.route(true),
        "ServiceExport" => support.service_export(),
        _ => None,
    })
}

async fn cluster_by_id(
    ctx: &Io<'_>,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    id: &str,
) -> Option<ClusterClient> {
    for pool in pools.values() {
        if let Ok(cluster) = ctx.clusters.for_pool(pool).await
            && cluster.id == id
        {
            return Some(cluster);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendKind, BackendState};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn backend(pool: &str, state: BackendState, since: i64) -> TrafficBackendStatus {
        TrafficBackendStatus {
            cluster: "c".into(),
            pool: pool.into(),
            kind: BackendKind::ServiceImport,
            name: pool.into(),
            weight: 0,
            ready_replicas: 1,
            state,
            since: Time(Timestamp::from_second(since).unwrap()),
            reason: String::new(),
        }
    }

    #[test]
    fn a_state_starts_when_its_route_is_written_never_earlier() {
        let previous = [
            backend("a", BackendState::Serving, 100),
            backend("b", BackendState::Serving, 100),
        ];
        let mut now = [
            backend("a", BackendState::Serving, 100),
            backend("b", BackendState::Draining, 150),
            backend("c", BackendState::Warming, 150),
        ];
        let written = Timestamp::from_second(152).unwrap();
        stamp_changes(&mut now, &previous, written);
        assert_eq!(now[0].since.0.as_second(), 100, "unchanged keeps its start");
        assert_eq!(now[1].since.0, written);
        assert_eq!(now[2].since.0, written);
        let rounded = written_since();
        assert_eq!(rounded.subsec_nanosecond(), 0);
        assert!(rounded >= Timestamp::now() - std::time::Duration::from_secs(1));
    }
}
