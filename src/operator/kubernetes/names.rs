//! Names and labels of the children Skybridge creates. Stable across releases: a name that
//! changed would orphan every workload on upgrade.

use std::collections::BTreeMap;

/// Field manager of the deployment controller's writes: its children (and their namespaces)
/// and its status.
pub const DEPLOYMENT_MANAGER: &str = "skybridge.io/deployment-controller";
/// Label every object Skybridge creates carries (`kubectl get -l` finds them all).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "skybridge";
pub const LABEL_DEPLOYMENT: &str = "skybridge.io/deployment";
pub const LABEL_NAMESPACE: &str = "skybridge.io/namespace";
pub const LABEL_COMPONENT: &str = "skybridge.io/component";
pub const LABEL_POOL: &str = "skybridge.io/pool";
/// Label on every traffic object (routes, exports and the Services they export; value: the
/// component). The traffic layer writes and sweeps them; the workload sweep and the children
/// watch select without them, so that the two never claim the same object.
pub const LABEL_TRAFFIC: &str = "skybridge.io/traffic-for";
/// Pod label the Services select on and the workloads do not: `false` drains a pod on a node
/// about to be reclaimed out of the endpoints while its workload keeps it (`capacity::drain`).
pub use crate::capacity::drain::{NOT_SERVING, SERVING, SERVING_LABEL as LABEL_SERVING};
pub const ANNOTATION_DIGEST: &str = "skybridge.io/model-digest";
pub const ANNOTATION_VERSION: &str = "skybridge.io/model-version";

/// Longest child name: Deployment pods append up to 16 characters and must stay a DNS label.
const MAX_NAME: usize = 47;

/// `parts` joined by `-`; when too long, truncated and suffixed with a hash of the full name so
/// that distinct children never share a name.
/// Namespace of a deployment's children in a pool's cluster.
pub fn target_namespace(
    md: &crate::api::ModelDeployment,
    pool: &crate::api::ComputePool,
) -> String {
    pool.spec
        .cluster
        .as_ref()
        .and_then(|c| c.namespace.clone())
        .unwrap_or_else(|| kube::ResourceExt::namespace(md).unwrap_or_default())
}

/// A pool's cluster, as a pure key: `local` (the operator's own) or the kubeconfig Secret that
/// names it. Two pools with the same key share a cluster (and its client).
pub fn cluster_key(pool: &crate::api::ComputePool) -> String {
    match pool
        .spec
        .cluster
        .as_ref()
        .and_then(|c| c.kubeconfig_secret_ref.as_ref())
    {
        Some(secret) => format!(
            "{}/{}",
            secret.namespace.as_deref().unwrap_or(""),
            secret.name
        ),
        None => "local".into(),
    }
}

/// Name of the Deployment for one placement.
pub fn deployment_name(
    deployment: &crate::api::ModelDeployment,
    component: &str,
    pool: &str,
) -> String {
    child_name(&[&kube::ResourceExt::name_any(deployment), component, pool])
}

/// Name of the Service of one component in one cluster.
pub fn service_name(deployment: &crate::api::ModelDeployment, component: &str) -> String {
    child_name(&[&kube::ResourceExt::name_any(deployment), component])
}

pub fn child_name(parts: &[&str]) -> String {
    let full = parts.join("-");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(full.as_bytes()) as u32);
    let keep = MAX_NAME - hash.len() - 1;
    let head = full[..keep].trim_end_matches('-');
    format!("{head}-{hash}")
}

/// FNV-1a: tiny and, unlike `std`'s hasher, stable across Rust releases.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Labels selecting every child of one ModelDeployment, in any cluster.
pub fn deployment_labels(namespace: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (LABEL_NAMESPACE.to_string(), namespace.to_string()),
        (LABEL_DEPLOYMENT.to_string(), name.to_string()),
    ])
}

/// Labels of one component's children (its Service selects on these).
pub fn component_labels(namespace: &str, name: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = deployment_labels(namespace, name);
    labels.insert(LABEL_COMPONENT.to_string(), component.to_string());
    labels
}

/// Labels of one component's replicas in one pool.
pub fn placement_labels(
    namespace: &str,
    name: &str,
    component: &str,
    pool: &str,
) -> BTreeMap<String, String> {
    let mut labels = component_labels(namespace, name, component);
    labels.insert(LABEL_POOL.to_string(), pool.to_string());
    labels
}

/// Selects the workload children (Deployments, Services, Secrets) of every deployment: what the
/// children watch indexes. Traffic objects are not among them (see [`LABEL_TRAFFIC`]).
pub fn workload_selector() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE},!{LABEL_TRAFFIC}")
}

/// Selects the workload children of one deployment: what the orphan sweep lists.
pub fn children_selector(namespace: &str, name: &str) -> String {
    format!(
        "{},!{LABEL_TRAFFIC}",
        selector(&deployment_labels(namespace, name))
    )
}

/// Label selector string for `kubectl`/list calls.
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_long_ones_hashed_and_distinct() {
        assert_eq!(
            child_name(&["ranker", "rank", "dc1-l4"]),
            "ranker-rank-dc1-l4"
        );
        let a = child_name(&[
            "a-very-long-model-deployment-name",
            "recommendation-head",
            "aws-euc1-l4-spot",
        ]);
        let b = child_name(&[
            "a-very-long-model-deployment-name",
            "recommendation-head",
            "aws-euc1-l4-ondemand",
        ]);
        assert!(a.len() <= MAX_NAME && b.len() <= MAX_NAME);
        assert_ne!(a, b);
        assert_eq!(
            a,
            child_name(&[
                "a-very-long-model-deployment-name",
                "recommendation-head",
                "aws-euc1-l4-spot"
            ])
        );
        assert!(!a.contains("--"));
    }
}
