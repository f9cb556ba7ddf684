//! From what the operator observed to the pure decision and builder of `crate::traffic`, and
//! back to what it writes and reports: the only place that knows both sides' types.

use super::guard::Provenance;
use crate::api::{
    BackendKind, Cloud, Component, ComputePool, DataClass, ModelDeployment, TrafficBackendStatus,
    TrafficProtocol, TrafficSpec,
};
use crate::operator::kubernetes::names::target_namespace;
use crate::planner::ComponentPlan;
use crate::traffic::build::{
    Route, backend_name, backend_statuses, build_pool_export, build_route,
};
use crate::traffic::resources::McsVersion;
use crate::traffic::{PoolObservation, PreviousBackend, TrafficInput, cluster_id};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Everything the decision and builder need for one component.
pub struct DecideInput<'a> {
    pub md: &'a ModelDeployment,
    pub component: &'a Component,
    pub spec: &'a TrafficSpec,
    pub pools: &'a BTreeMap<String, Arc<ComputePool>>,
    pub plan: &'a ComponentPlan,
    /// Replicas that exist per pool (last applied, holds included).
    pub current: &'a BTreeMap<String, u32>,
    /// Ready replicas per pool.
    pub ready: &'a BTreeMap<String, u32>,
    pub reachability: &'a BTreeMap<String, Option<String>>,
    /// The backends of the route last written.
    pub previous: &'a [TrafficBackendStatus],
    pub now: Timestamp,
}

/// One pool's export: the per-pool Service and its `ServiceExport` (same name), as JSON.
pub struct ExportObjects {
    pub pool: String,
    pub service: Value,
    pub export: Value,
}

/// What the operator does for one component.
pub struct Decided {
    pub home_pool: String,
    pub grpc: bool,
    /// The route's backends as decided (the status's `traffic[]`).
    pub backends: Vec<TrafficBackendStatus>,
    /// Whether the route must be written (the decision's hysteresis); when not, it carries
    /// `backends`' weights already.
    pub rewrite: bool,
    /// Replicas to keep per pool while a drain runs.
    pub hold: BTreeMap<String, u32>,
    /// When the decision changes by itself (a drain ending).
    pub next_change: Option<Timestamp>,
    pub exports: Vec<ExportObjects>,
    /// The route (JSON), or why it could not be built.
    pub route: Result<Value, String>,
    /// The clouds each route backend reaches, for the guard.
    pub provenance: Provenance,
}

/// The component's data class for traffic: sensitive when it or its model is.
pub fn data_class(md: &ModelDeployment, component: &Component) -> DataClass {
    component.data_class.max(md.spec.model_data_class())
}

/// The home pool: as the spec names it, else the pool of the model's source.
pub fn home_pool(md: &ModelDeployment, spec: &TrafficSpec) -> String {
    spec.home_pool
        .clone()
        .unwrap_or_else(|| md.spec.model.source.pool.clone())
}

pub fn decide(input: DecideInput<'_>) -> Decided {
    let DecideInput {
        md,
        component,
        spec,
        pools,
        plan,
        current,
        ready,
        reachability,
        previous,
        now,
    } = input;
    let home_pool = home_pool(md, spec);
    let home_cluster = pools
        .get(&home_pool)
        .map(|p| cluster_id(&p.spec))
        .unwrap_or_default();
    let placed: BTreeMap<&str, u32> = plan
        .placements
        .iter()
        .map(|p| (p.pool.as_str(), p.replicas))
        .collect();
    let names: BTreeSet<&str> = placed
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(p, _)| *p)
        .chain(
            current
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(p, _)| p.as_str()),
        )
        .collect();
    let observations: Vec<PoolObservation> = names
        .iter()
        .filter_map(|name| {
            let pool = pools.get(*name)?;
            Some(PoolObservation {
                pool: name.to_string(),
                cluster: cluster_id(&pool.spec),
                cloud: pool.spec.cloud,
                placed: placed.get(name).copied().unwrap_or(0),
                current: current.get(*name).copied().unwrap_or(0),
                ready: ready.get(*name).copied().unwrap_or(0),
                reachable: reachability.get(*name).is_none_or(Option::is_none),
            })
        })
        .collect();
    let previous_backends = PreviousBackend::from_status(previous);
    let class = data_class(md, component);
    let decision = crate::traffic::decide(&TrafficInput {
        data_class: class,
        home_pool: &home_pool,
        home_cluster: &home_cluster,
        pools: &observations,
        previous: &previous_backends,
        drain_seconds: spec.drain_seconds,
        now: now.as_second(),
    });
    let backends = backend_statuses(md, &component.name, &decision);
    let hold: BTreeMap<String, u32> = decision
        .holds
        .iter()
        .filter(|h| !h.released && h.keep > placed.get(h.pool.as_str()).copied().unwrap_or(0))
        .map(|h| (h.pool.clone(), h.keep))
        .collect();
    let namespace_of = |pool: &str| {
        pools
            .get(pool)
            .map(|p| target_namespace(md, p))
            .unwrap_or_default()
    };
    let exports: Vec<ExportObjects> = decision
        .backends
        .iter()
        .filter(|b| b.kind == BackendKind::ServiceImport)
        .filter(|b| pools.get(&b.pool).is_some_and(|p| p.spec.exports_traffic()))
        .filter_map(|b| {
            let built = build_pool_export(
                md,
                component,
                &b.pool,
                &namespace_of(&b.pool),
                // The version actually written is the cluster's, from discovery.
                McsVersion::default(),
                None,
            );
            Some(ExportObjects {
                pool: b.pool.clone(),
                service: labelled(serde_json::to_value(&built.service).ok()?, md, component),
                export: labelled(serde_json::to_value(&built.export).ok()?, md, component),
            })
        })
        .collect();
    let mut provenance = Provenance::new();
    let route_namespace = namespace_of(&home_pool);
    for b in &decision.backends {
        let namespace = match b.kind {
            BackendKind::Service => route_namespace.clone(),
            BackendKind::ServiceImport => namespace_of(&b.pool),
        };
        // The local Service reaches every pool of the home cluster the component runs in.
        let clouds: Vec<Cloud> = match b.kind {
            BackendKind::Service => observations
                .iter()
                .filter(|o| o.cluster == home_cluster)
                .map(|o| o.cloud)
                .chain(pools.get(&home_pool).map(|p| p.spec.cloud))
                .collect(),
            BackendKind::ServiceImport => vec![b.cloud],
        };
        provenance.insert(
            (
                b.kind.as_str().to_string(),
                namespace,
                backend_name(md, &component.name, b),
            ),
            clouds,
        );
    }
    let route = build_route(
        md,
        component,
        &decision,
        &route_namespace,
        namespace_of,
        None,
    )
    .map_err(|e| e.to_string())
    .and_then(|route| {
        let value = match &route {
            Route::Http(r) => serde_json::to_value(r),
            Route::Grpc(r) => serde_json::to_value(r),
        };
        value
            .map(|v| labelled(v, md, component))
            .map_err(|e| e.to_string())
    });
    Decided {
        home_pool,
        grpc: spec.protocol == TrafficProtocol::GRPC,
        backends,
        rewrite: decision.rewrite,
        hold,
        next_change: decision
            .next_change_at
            .and_then(|s| Timestamp::from_second(s).ok()),
        exports,
        route,
        provenance,
    }
}

/// `object` with the operator's traffic label (the sweep lists by it) and without the fields
/// the operator does not own (`status`; server-side apply must not claim it).
fn labelled(mut object: Value, md: &ModelDeployment, component: &Component) -> Value {
    for (k, v) in super::traffic_labels(md, &component.name) {
        object["metadata"]["labels"][k] = Value::String(v);
    }
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    object
}
