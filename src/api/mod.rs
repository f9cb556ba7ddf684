//! The declarative API: CRD types, their schema and CEL rules, and the generated CRD manifests.
// kube's `printcolumn(...)` repeats `type_`/`json_path` keys across columns by design.
#![allow(clippy::duplicated_attributes)]

pub mod burst_policy;
pub mod common;
pub mod compute_pool;
pub mod model_deployment;
pub mod quantity;
pub mod reference;
pub mod rollout;
pub mod traffic;

pub use burst_policy::*;
pub use common::*;
pub use compute_pool::*;
pub use model_deployment::*;
pub use rollout::*;
pub use traffic::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD Skybridge serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ComputePool::crd(),
        BurstPolicy::crd(),
        ModelDeployment::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, as `skybridge crd` prints and `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

/// The API reference in Markdown, as `skybridge crd --reference` prints and
/// `docs/reference/api.md` holds.
pub fn reference_markdown() -> String {
    reference::markdown(&crds())
}

#[cfg(test)]
mod tests;
