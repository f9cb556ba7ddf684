//! The pure builder: from a component and its traffic decision to the objects that carry it.
//!
//! - In every member cluster with replicas of a remote backend: a `Service` per pool
//!   (`<component service>-<pool>`, selecting that pool's replicas only) and a `ServiceExport` of
//!   the same name (MCS exports the Service of its own name; one name per pool, because MCS merges
//!   same-name exports across clusters, which would make weighting impossible).
//! - In the home cluster: an `HTTPRoute` or `GRPCRoute` named like the component's Service,
//!   attached to the user's Gateways, whose backends are the local Service and one
//!   `ServiceImport` per remote pool, weighted by the decision. Backends at weight 0 are left out
//!   (an import the MCS implementation has not created yet would fail `ResolvedRefs`), except the
//!   local Service, so that the route always names one backend.
//!
//! A sensitive component's route is checked with [`guard_route`] when built; callers check the
//! object again just before writing it.

use super::decision::{BackendDecision, GuardError, RouteBackend, TrafficDecision, guard};
use super::resources::{
    BackendRef, GRPCRoute, GRPCRouteRule, GRPCRouteSpec, HTTPPathMatch, HTTPRoute, HTTPRouteMatch,
    HTTPRouteRule, HTTPRouteSpec, MCS_GROUP, McsVersion, ParentReference, ServiceExport,
};
use crate::api::{
    BackendKind, Cloud, Component, DataClass, ModelDeployment, TrafficBackendStatus,
    TrafficProtocol,
};
use crate::operator::kubernetes::names::{
    child_name, component_labels, placement_labels, service_name,
};
use crate::operator::kubernetes::service::serving_spec;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// Name of the per-pool Service, its `ServiceExport` and the `ServiceImport` MCS makes of it.
pub fn export_name(deployment: &ModelDeployment, component: &str, pool: &str) -> String {
    child_name(&[&service_name(deployment, component), pool])
}

/// Name of a component's route in its home cluster (the name of its Service there).
pub fn route_name(deployment: &ModelDeployment, component: &str) -> String {
    service_name(deployment, component)
}

/// What one member cluster gets for one pool of a component: the pool's Service and its export.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolExport {
    pub pool: String,
    pub service: Service,
    pub export: ServiceExport,
}

/// The Service selecting one pool's replicas of a component, and its `ServiceExport`, in the
/// pool's cluster: `namespace` there, MCS `version` as its discovery serves, `owner` only in the
/// operator's own cluster.
pub fn build_pool_export(
    deployment: &ModelDeployment,
    component: &Component,
    pool: &str,
    namespace: &str,
    version: McsVersion,
    owner: Option<OwnerReference>,
) -> PoolExport {
    let md_namespace = deployment.namespace().unwrap_or_default();
    let labels = placement_labels(&md_namespace, &deployment.name_any(), &component.name, pool);
    let metadata = ObjectMeta {
        name: Some(export_name(deployment, &component.name, pool)),
        namespace: Some(namespace.to_string()),
        labels: Some(labels.clone()),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    };
    let service = Service {
        metadata: metadata.clone(),
        spec: Some(serving_spec(labels, component.port)),
        status: None,
    };
    PoolExport {
        pool: pool.to_string(),
        service,
        export: ServiceExport::new(version, metadata),
    }
}

/// A component's route: HTTP or gRPC, as its `traffic.protocol` says.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    Http(HTTPRoute),
    Grpc(GRPCRoute),
}

impl Route {
    /// The route's backends (every rule's), as the guard sees them.
    pub fn backend_refs(&self) -> Vec<&BackendRef> {
        match self {
            Route::Http(route) => route
                .spec
                .rules
                .iter()
                .flat_map(|r| &r.backend_refs)
                .collect(),
            Route::Grpc(route) => route
                .spec
                .rules
                .iter()
                .flat_map(|r| &r.backend_refs)
                .collect(),
        }
    }

    /// The route's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Route::Http(route) => &route.metadata,
            Route::Grpc(route) => &route.metadata,
        }
    }
}

/// Why a route could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The component has no `traffic`.
    #[error("component {0} has no traffic section")]
    NoTraffic(String),
    /// The residency guard refused the route.
    #[error(transparent)]
    Guard(#[from] GuardError),
}

/// The name, kind, pool and cloud of every backend of `decision`, as the route names them: what
/// [`guard_route`] accepts.
pub fn known_backends(
    deployment: &ModelDeployment,
    component: &str,
    decision: &TrafficDecision,
) -> Vec<(String, BackendKind, String, Cloud)> {
    decision
        .backends
        .iter()
        .map(|b| {
            (
                backend_name(deployment, component, b),
                b.kind,
                b.pool.clone(),
                b.cloud,
            )
        })
        .collect()
}

/// The name of a backend's object: the component's Service, or the pool's `ServiceImport`.
pub fn backend_name(
    deployment: &ModelDeployment,
    component: &str,
    backend: &BackendDecision,
) -> String {
    match backend.kind {
        BackendKind::Service => service_name(deployment, component),
        BackendKind::ServiceImport => export_name(deployment, component, &backend.pool),
    }
}

/// `status.components[].traffic[]` for a decision: what the route carries once written. Write it
/// only after the route is, so that the next decision's previous state is what the route says.
pub fn backend_statuses(
    deployment: &ModelDeployment,
    component: &str,
    decision: &TrafficDecision,
) -> Vec<TrafficBackendStatus> {
    decision
        .backends
        .iter()
        .map(|b| TrafficBackendStatus {
            cluster: b.cluster.clone(),
            pool: b.pool.clone(),
            kind: b.kind,
            name: backend_name(deployment, component, b),
            weight: b.weight,
            ready_replicas: b.ready,
            state: b.state,
            since: Time(Timestamp::from_second(b.since).unwrap_or(Timestamp::UNIX_EPOCH)),
            reason: b.reason.clone(),
        })
        .collect()
}

/// The residency check on a built route, run when it is built and again just before it is
/// written: a sensitive component's route names only backends the decision places in private
/// pools.
pub fn guard_route(
    route: &Route,
    component: &str,
    data_class: DataClass,
    known: &[(String, BackendKind, String, Cloud)],
) -> Result<(), GuardError> {
    let refs = route.backend_refs();
    guard(
        component,
        data_class,
        refs.iter().map(|r| RouteBackend {
            kind: r.kind.as_deref().unwrap_or("Service"),
            name: &r.name,
        }),
        known,
    )
}

/// The route of `component` in its home cluster: in `namespace` there, with `namespace_of(pool)`
/// the namespace of each remote pool's export (a backend in another namespace than the route's
/// needs a `ReferenceGrant` there), `owner` only in the operator's own cluster.
pub fn build_route(
    deployment: &ModelDeployment,
    component: &Component,
    decision: &TrafficDecision,
    namespace: &str,
    namespace_of: impl Fn(&str) -> String,
    owner: Option<OwnerReference>,
) -> Result<Route, BuildError> {
    let traffic = component
        .traffic
        .as_ref()
        .ok_or_else(|| BuildError::NoTraffic(component.name.clone()))?;
    let port = i32::from(traffic.port.unwrap_or(component.port));
    let backend_refs: Vec<BackendRef> = decision
        .backends
        .iter()
        .filter(|b| b.weight > 0 || b.kind == BackendKind::Service)
        .map(|b| {
            let (group, kind, backend_namespace) = match b.kind {
                BackendKind::Service => ("", "Service", namespace.to_string()),
                BackendKind::ServiceImport => (MCS_GROUP, "ServiceImport", namespace_of(&b.pool)),
            };
            BackendRef {
                group: Some(group.into()),
                kind: Some(kind.into()),
                name: backend_name(deployment, &component.name, b),
                namespace: (backend_namespace != namespace).then_some(backend_namespace),
                port: Some(port),
                weight: Some(i32::try_from(b.weight).unwrap_or(i32::MAX)),
            }
        })
        .collect();
    let parent_refs: Vec<ParentReference> = traffic
        .parent_refs
        .iter()
        .map(|p| ParentReference {
            group: None,
            kind: None,
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            section_name: p.section_name.clone(),
            port: p.port.map(i32::from),
        })
        .collect();
    let md_namespace = deployment.namespace().unwrap_or_default();
    let metadata = ObjectMeta {
        name: Some(route_name(deployment, &component.name)),
        namespace: Some(namespace.to_string()),
        labels: Some(component_labels(
            &md_namespace,
            &deployment.name_any(),
            &component.name,
        )),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    };
    let route = match traffic.protocol {
        TrafficProtocol::HTTP => {
            let path = traffic.path.clone().unwrap_or_default();
            Route::Http(HTTPRoute {
                metadata,
                spec: HTTPRouteSpec {
                    parent_refs,
                    hostnames: traffic.hostnames.clone(),
                    rules: vec![HTTPRouteRule {
                        matches: vec![HTTPRouteMatch {
                            path: Some(HTTPPathMatch {
                                type_: Some(path.match_type.as_str().into()),
                                value: Some(path.value),
                            }),
                        }],
                        backend_refs,
                    }],
                },
                status: None,
            })
        }
        TrafficProtocol::GRPC => Route::Grpc(GRPCRoute {
            metadata,
            spec: GRPCRouteSpec {
                parent_refs,
                hostnames: traffic.hostnames.clone(),
                rules: vec![GRPCRouteRule {
                    matches: Vec::new(),
                    backend_refs,
                }],
            },
            status: None,
        }),
    };
    let known = known_backends(deployment, &component.name, decision);
    guard_route(&route, &component.name, component.data_class, &known)?;
    Ok(route)
}

#[cfg(test)]
mod tests;
