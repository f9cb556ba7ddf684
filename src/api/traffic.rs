//! Traffic: how a component's requests reach its replicas in every cluster (Gateway API routes
//! over Multi-Cluster Services exports), and how a pool's cluster receives them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Type of the `ModelDeployment` condition that says whether every component's route is
/// accepted by its Gateway and resolves its backends (from the route's `status.parents`).
pub const TRAFFIC_READY: &str = "TrafficReady";

/// Seconds a backend stays at weight 0 (`Draining`) before its replicas are removed, by default.
pub const DEFAULT_DRAIN_SECONDS: u32 = 30;

/// Most seconds a drain may take: longer would hold public replicas (and their cost) for no
/// request a Gateway still has in flight.
pub const MAX_DRAIN_SECONDS: u32 = 3600;

/// How a pool's cluster receives cross-cluster traffic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolTraffic {
    /// `ServiceExport`: the cluster runs a Multi-Cluster Services implementation (Cilium
    /// ClusterMesh, Submariner Lighthouse, GKE, Karmada); Skybridge exports a component's replicas
    /// here with one `ServiceExport` per pool, and the home cluster routes to them through the
    /// `ServiceImport` the implementation creates. `None` (the default): no cross-cluster traffic.
    #[serde(default)]
    pub export: TrafficExport,
}

/// How a pool's replicas are reached from other clusters.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum TrafficExport {
    /// Not reachable from other clusters.
    #[default]
    None,
    /// Exported with the Multi-Cluster Services API (`multicluster.x-k8s.io` `ServiceExport`).
    ServiceExport,
}

/// How requests reach a component: one stable address in its home cluster (a Gateway API route)
/// that spreads them over every ready replica, in whatever cluster it runs, by ready replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.protocol != 'GRPC' || !has(self.path)").message("a GRPC route matches gRPC services, not paths: remove path").field_path(".path"))]
pub struct TrafficSpec {
    /// The Gateways (or listeners of them) the route attaches to, in the home cluster.
    #[schemars(length(min = 1, max = 8))]
    pub parent_refs: Vec<GatewayParentRef>,
    /// Host names the route answers for (as in Gateway API: a DNS name, optionally with a
    /// leading `*.` wildcard label); empty: every host name of the listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
            )
        )
    )]
    #[x_kube(validation = Rule::new("self.all(h, self.exists_one(i, i == h))").message("hostnames must not repeat"))]
    pub hostnames: Vec<String>,
    /// Which request paths the route takes (HTTP only). Absent: every path (`PathPrefix` `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// `HTTP` (an `HTTPRoute`) or `GRPC` (a `GRPCRoute`).
    #[serde(default)]
    pub protocol: TrafficProtocol,
    /// Port of the component's Service the route targets. Absent: the component's `port`, the
    /// one port the Service exposes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// The pool whose cluster holds the route and the component's stable address. Absent: the
    /// pool of the model's source (a private pool). Pools in that cluster are served through the
    /// component's local Service; pools elsewhere need `traffic.export: ServiceExport`. A
    /// sensitive component's home must be a private pool (checked with the pools, by `plan` and
    /// the operator: the schema of one object cannot see another's cloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub home_pool: Option<String>,
    /// Seconds a backend about to lose replicas (scale-in, failback, a pool dropped) is held out
    /// of the route (weight 0 when all its replicas go) before they are removed, so that requests
    /// in flight finish.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_seconds: u32,
}

fn default_drain_seconds() -> u32 {
    DEFAULT_DRAIN_SECONDS
}

/// A Gateway (or one listener of it) a route attaches to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway; absent: the route's namespace (the component's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Listener of the Gateway to attach to; absent: every listener that allows the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
    /// Port of the Gateway's listeners to attach to; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Which request paths a route takes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// `PathPrefix` (the default: the path and everything under it) or `Exact`.
    #[serde(default, rename = "type")]
    pub match_type: PathMatchType,
    /// The path, starting with `/`.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path.value must start with '/'"))]
    pub value: String,
}

fn default_path() -> String {
    "/".into()
}

impl Default for PathMatch {
    fn default() -> Self {
        Self {
            match_type: PathMatchType::PathPrefix,
            value: default_path(),
        }
    }
}

/// How a path is matched.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum PathMatchType {
    /// The path and every path under it (segment-wise).
    #[default]
    PathPrefix,
    /// Exactly this path.
    Exact,
}

impl PathMatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            PathMatchType::PathPrefix => "PathPrefix",
            PathMatchType::Exact => "Exact",
        }
    }
}

/// The protocol a component serves, and so the kind of route.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum TrafficProtocol {
    /// HTTP/1.1 or HTTP/2: an `HTTPRoute`.
    #[default]
    HTTP,
    /// gRPC: a `GRPCRoute`.
    GRPC,
}

/// One backend of a component's route, as the operator last wrote it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficBackendStatus {
    /// The cluster of the backend: `local` (the operator's own) or the name of the kubeconfig
    /// Secret of its pools.
    pub cluster: String,
    /// The `ComputePool` whose replicas this backend reaches (for the local Service, the home
    /// pool: it reaches every pool of the home cluster).
    pub pool: String,
    /// `Service` (the component's Service in the home cluster) or `ServiceImport` (a remote
    /// pool's export, as the Multi-Cluster Services implementation imports it).
    pub kind: BackendKind,
    /// Name of the Service or ServiceImport.
    pub name: String,
    /// Weight in the route: per mille of the component's ready replicas, rounded (every
    /// serving backend gets at least 1).
    pub weight: u32,
    /// Ready replicas behind this backend.
    #[serde(default)]
    pub ready_replicas: u32,
    /// `Warming`, `Serving`, `Draining` or `Unreachable`.
    pub state: BackendState,
    /// When `state` last changed.
    pub since: Time,
    /// Why this state and weight, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The kind of a route backend.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The component's Service in the home cluster.
    Service,
    /// A Multi-Cluster Services `ServiceImport` of a remote pool's export.
    ServiceImport,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Service => "Service",
            BackendKind::ServiceImport => "ServiceImport",
        }
    }
}

/// What a route does with one backend.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Replicas are placed but none is ready yet: weight 0.
    Warming,
    /// Weight is its share of the component's ready replicas.
    Serving,
    /// Replicas are about to be removed: weight lowered first (0 when all go), replicas kept
    /// for `drainSeconds`.
    Draining,
    /// Its cluster does not answer: weight 0 at once.
    Unreachable,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Warming => "Warming",
            BackendState::Serving => "Serving",
            BackendState::Draining => "Draining",
            BackendState::Unreachable => "Unreachable",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
