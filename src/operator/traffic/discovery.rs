//! Which traffic APIs a cluster serves, from its discovery: the Gateway API (`v1` routes) and the
//! Multi-Cluster Services API in the version the cluster offers (`v1beta1` preferred, else
//! `v1alpha1`). Cached per cluster for a while: the answer changes only when someone installs
//! or removes CRDs, and a write that finds a kind missing forgets the cluster's entry.

use crate::operator::kubernetes::clusters::ClusterClient;
use crate::operator::kubernetes::retry::idempotent;
use kube::discovery::ApiResource;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
pub const GATEWAY_VERSION: &str = "v1";
pub const MCS_GROUP: &str = "multicluster.x-k8s.io";
/// MCS versions the operator speaks (one schema), most preferred first.
pub const MCS_VERSIONS: [&str; 2] = ["v1beta1", "v1alpha1"];

/// How long a cluster's answer is trusted before discovery is asked again.
const TTL: Duration = Duration::from_secs(60);

/// What one cluster serves.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ApiSupport {
    /// `gateway.networking.k8s.io/v1` is served.
    pub gateway: bool,
    /// The MCS version served, if any.
    pub mcs: Option<&'static str>,
}

impl ApiSupport {
    /// From the groups' served versions (`group`, `[version]`), as discovery lists them.
    pub fn from_groups<'a>(groups: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>) -> Self {
        let mut support = ApiSupport::default();
        for (group, versions) in groups {
            if group == GATEWAY_GROUP {
                support.gateway |= versions.contains(&GATEWAY_VERSION);
            } else if group == MCS_GROUP {
                support.mcs = MCS_VERSIONS.into_iter().find(|v| versions.contains(v));
            }
        }
        support
    }

    pub fn service_export(&self) -> Option<ApiResource> {
        self.mcs
            .map(|v| resource(MCS_GROUP, v, "ServiceExport", "serviceexports"))
    }

    pub fn service_import(&self) -> Option<ApiResource> {
        self.mcs
            .map(|v| resource(MCS_GROUP, v, "ServiceImport", "serviceimports"))
    }

    pub fn route(&self, grpc: bool) -> Option<ApiResource> {
        self.gateway.then(|| route_resource(grpc))
    }
}

/// The `HTTPRoute` or `GRPCRoute` resource.
pub fn route_resource(grpc: bool) -> ApiResource {
    if grpc {
        resource(GATEWAY_GROUP, GATEWAY_VERSION, "GRPCRoute", "grpcroutes")
    } else {
        resource(GATEWAY_GROUP, GATEWAY_VERSION, "HTTPRoute", "httproutes")
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Per cluster id, what it served when last asked.
#[derive(Default)]
pub struct DiscoveryCache {
    known: Mutex<HashMap<String, (ApiSupport, Instant)>>,
}

impl DiscoveryCache {
    /// What `cluster` serves (asked when unknown or stale).
    pub async fn support(&self, cluster: &ClusterClient) -> kube::Result<ApiSupport> {
        if let Some((support, at)) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cluster.id)
            && at.elapsed() < TTL
        {
            return Ok(support.clone());
        }
        let client = cluster.client().await;
        let groups = cluster
            .send(idempotent(|| client.list_api_groups()))
            .await?;
        let support = ApiSupport::from_groups(groups.groups.iter().map(|g| {
            (
                g.name.as_str(),
                g.versions.iter().map(|v| v.version.as_str()).collect(),
            )
        }));
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.id.clone(), (support.clone(), Instant::now()));
        Ok(support)
    }

    /// Forget what `cluster` served (a write found a kind missing, or newly there).
    pub fn forget(&self, cluster_id: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cluster_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_v1beta1_and_needs_gateway_v1() {
        let both = ApiSupport::from_groups([
            (MCS_GROUP, vec!["v1alpha1", "v1beta1"]),
            (GATEWAY_GROUP, vec!["v1", "v1beta1"]),
        ]);
        assert_eq!(both.mcs, Some("v1beta1"));
        assert!(both.gateway);
        assert_eq!(
            both.service_export().unwrap().api_version,
            "multicluster.x-k8s.io/v1beta1"
        );
        let alpha = ApiSupport::from_groups([(MCS_GROUP, vec!["v1alpha1"])]);
        assert_eq!(alpha.mcs, Some("v1alpha1"));
        assert!(!alpha.gateway && alpha.route(false).is_none());
        let old_gateway = ApiSupport::from_groups([(GATEWAY_GROUP, vec!["v1beta1"])]);
        assert!(!old_gateway.gateway, "only v1 routes are written");
        let unknown = ApiSupport::from_groups([(MCS_GROUP, vec!["v2"])]);
        assert_eq!(unknown.mcs, None);
        assert_eq!(route_resource(true).plural, "grpcroutes");
    }
}
