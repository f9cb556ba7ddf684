//! From what the operator observed to the pure decision and builder of `crate::traffic`, and
//! back to what it writes and reports: the only place that knows both sides' types.

use super::guard::Provenance;
use crate::api::{
    BackendKind, Cloud, Component, ComputePool, DataClass, ModelDeployment, TrafficBackendStatus,
    TrafficProtocol, TrafficSpec,
};
use crate::operator::kubernetes::names::component_labels;
use crate::operator::kubernetes::names::target_namespace;
use crate::operator::kubernetes::service::serving_spec;
use crate::operator::rollout::children::{LABEL_VERSION_KEY, VersionNames};
use crate::planner::ComponentPlan;
use crate::rollout::{VersionedBackend, split_weights};
use crate::traffic::BackendDecision;
use crate::traffic::build::{
    Route, backend_name, backend_statuses, build_pool_export, build_route, guard_route,
    known_backends,
};
use crate::traffic::resources::McsVersion;
use crate::traffic::{PoolObservation, PreviousBackend, TrafficInput, cluster_id};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
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
    /// A rollout's split between the versions, while one runs (issue #17).
    pub split: Option<&'a VersionSplit>,
    pub now: Timestamp,
}

/// A rollout's split of one deployment's traffic between its versions (issue #17): the
/// stable version keeps the route's backends (their Services narrowed to its pods), the new
/// version gets backends of its own beside them, and each backend's weight is shared between
/// the two by `crate::rollout::split_weights`.
#[derive(Clone, Debug)]
pub struct VersionSplit {
    /// The `skybridge.io/version-key` of the stable version's pods.
    pub old_label: String,
    /// The names of the new version's objects.
    pub new: VersionNames,
    /// Percent of each routed component's traffic the new version takes.
    pub share: u32,
    /// (old, new) replicas per (component, pool), as the rollout decided them.
    pub replicas: BTreeMap<(String, String), (u32, u32)>,
    /// (old, new) ready replicas per (component, pool), as observed.
    pub ready: BTreeMap<(String, String), (u32, u32)>,
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
    /// Services written in the home cluster beside the route: the new version's local Service
    /// during a rollout.
    pub services: Vec<Value>,
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
        split,
        now,
    } = input;
    // Only a routed component is split; without a route, both versions share the component's
    // Service by their replicas.
    let split = split.filter(|_| component.traffic.is_some());
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
    let mut exports = exports;
    let mut services = Vec::new();
    if let Some(split) = split {
        let runs_new = |pool: &str| {
            split
                .replicas
                .get(&(component.name.clone(), pool.to_string()))
                .is_some_and(|(_, new)| *new > 0)
        };
        let mut new_exports = Vec::new();
        for export in &mut exports {
            if runs_new(&export.pool) {
                let name = split.new.export_name(md, &component.name, &export.pool);
                let mut service = export.service.clone();
                let mut object = export.export.clone();
                service["metadata"]["name"] = Value::String(name.clone());
                object["metadata"]["name"] = Value::String(name);
                narrow(&mut service, split.new.label_value());
                new_exports.push(ExportObjects {
                    pool: export.pool.clone(),
                    service,
                    export: object,
                });
            }
            narrow(&mut export.service, &split.old_label);
        }
        exports.extend(new_exports);
        let home_runs_new = observations
            .iter()
            .any(|o| o.cluster == home_cluster && runs_new(&o.pool));
        if home_runs_new {
            let md_namespace = md.namespace().unwrap_or_default();
            let mut selector = component_labels(&md_namespace, &md.name_any(), &component.name);
            selector.insert(
                LABEL_VERSION_KEY.to_string(),
                split.new.label_value().to_string(),
            );
            let service = Service {
                metadata: ObjectMeta {
                    name: Some(split.new.service_name(md, &component.name)),
                    namespace: Some(namespace_of(&home_pool)),
                    labels: Some(selector.clone()),
                    ..Default::default()
                },
                spec: Some(serving_spec(selector, component.port)),
                status: None,
            };
            if let Ok(value) = serde_json::to_value(&service) {
                services.push(labelled(value, md, component));
            }
        }
    }
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
    // The new version's backends reach the same clouds as the stable version's beside them.
    if let Some(split) = split {
        let extra: Vec<_> = decision
            .backends
            .iter()
            .filter_map(|b| {
                let (kind, namespace) = match b.kind {
                    BackendKind::Service => ("Service", route_namespace.clone()),
                    BackendKind::ServiceImport => ("ServiceImport", namespace_of(&b.pool)),
                };
                let clouds = provenance
                    .get(&(
                        kind.to_string(),
                        namespace.clone(),
                        backend_name(md, &component.name, b),
                    ))?
                    .clone();
                Some((
                    (
                        kind.to_string(),
                        namespace,
                        new_backend_name(md, component, b, split),
                    ),
                    clouds,
                ))
            })
            .collect();
        provenance.extend(extra);
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
    .and_then(|route| match split {
        None => Ok(route),
        Some(split) => split_route(
            route,
            md,
            component,
            &decision,
            &observations,
            &home_cluster,
            split,
        ),
    })
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
        // A rollout's split changes with readiness and steps: written every time.
        rewrite: decision.rewrite || split.is_some(),
        hold,
        next_change: decision
            .next_change_at
            .and_then(|s| Timestamp::from_second(s).ok()),
        exports,
        services,
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

/// Narrows a Service (JSON) to the pods of one version.
fn narrow(service: &mut Value, label: &str) {
    service["spec"]["selector"][LABEL_VERSION_KEY] = Value::String(label.to_string());
}

/// The name of the new version's backend beside `backend`.
fn new_backend_name(
    md: &ModelDeployment,
    component: &Component,
    backend: &BackendDecision,
    split: &VersionSplit,
) -> String {
    match backend.kind {
        BackendKind::Service => split.new.service_name(md, &component.name),
        BackendKind::ServiceImport => split.new.export_name(md, &component.name, &backend.pool),
    }
}

/// `route` with each backend's weight shared between the versions
/// (`crate::rollout::split_weights`), the new version's backends added where they take any,
/// and the residency guard run again on the result.
fn split_route(
    mut route: Route,
    md: &ModelDeployment,
    component: &Component,
    decision: &crate::traffic::TrafficDecision,
    observations: &[PoolObservation],
    home_cluster: &str,
    split: &VersionSplit,
) -> Result<Route, String> {
    let ready = |pool: &str| {
        split
            .ready
            .get(&(component.name.clone(), pool.to_string()))
            .copied()
            .unwrap_or_default()
    };
    let versioned: Vec<VersionedBackend> = decision
        .backends
        .iter()
        .map(|b| {
            let (old_ready, new_ready) = match b.kind {
                // The local Service reaches every pool of the home cluster.
                BackendKind::Service => observations
                    .iter()
                    .filter(|o| o.cluster == home_cluster)
                    .map(|o| ready(&o.pool))
                    .fold((0, 0), |(a, b), (o, n)| (a + o, b + n)),
                BackendKind::ServiceImport => ready(&b.pool),
            };
            VersionedBackend {
                backend: backend_name(md, &component.name, b),
                weight: b.weight,
                public: b.cloud == Cloud::Public,
                old_ready,
                new_ready,
            }
        })
        .collect();
    let class = data_class(md, component);
    let weights = split_weights(&versioned, split.share, class == DataClass::Sensitive);
    let refs = match &mut route {
        Route::Http(r) => r
            .spec
            .rules
            .iter_mut()
            .map(|r| &mut r.backend_refs)
            .collect::<Vec<_>>(),
        Route::Grpc(r) => r
            .spec
            .rules
            .iter_mut()
            .map(|r| &mut r.backend_refs)
            .collect::<Vec<_>>(),
    };
    for backend_refs in refs {
        let mut added = Vec::new();
        for backend_ref in backend_refs.iter_mut() {
            let Some((b, w)) = decision
                .backends
                .iter()
                .zip(&weights)
                .find(|(_, w)| w.backend == backend_ref.name)
            else {
                continue;
            };
            backend_ref.weight = Some(i32::try_from(w.old).unwrap_or(i32::MAX));
            if w.new > 0 {
                let mut new_ref = backend_ref.clone();
                new_ref.name = new_backend_name(md, component, b, split);
                new_ref.weight = Some(i32::try_from(w.new).unwrap_or(i32::MAX));
                added.push(new_ref);
            }
        }
        backend_refs.extend(added);
    }
    let mut known = known_backends(md, &component.name, decision);
    for b in &decision.backends {
        known.push((
            new_backend_name(md, component, b, split),
            b.kind,
            b.pool.clone(),
            b.cloud,
        ));
    }
    guard_route(&route, &component.name, class, &known).map_err(|e| e.to_string())?;
    Ok(route)
}
