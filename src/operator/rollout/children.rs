//! Names, labels and the model of each version's children during a rollout (issue #17), for the
//! build step. Not called by the reconcile yet (see `docs/architecture.md`, "Rollouts").
//!
//! The version that owns the existing children keeps their names (`<deployment>-<component>-
//! <pool>`), so that switching a deployment to `Canary`, or a rollout by `AllAtOnce`, renames
//! and orphans nothing. Any other version's Deployments get a suffix naming the version (a short
//! hash of version and source: a version string need not be a valid name) and a label with the
//! same key, so that the two versions' Deployments select disjoint pods and a per-version Service
//! or export can select one version.

use super::same_model;
use crate::api::{ModelDeployment, RolloutVersion};
use crate::operator::kubernetes::names::{child_name, deployment_name, fnv1a, placement_labels};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Label on a non-owning version's Deployments and pods: that version's key.
pub const LABEL_VERSION_KEY: &str = "skybridge.io/version-key";

/// A short key naming `version` (version and source; the digest aside, as in [`same_model`]):
/// eight hex digits, a valid name part and label value whatever the version string holds.
pub fn version_key(version: &RolloutVersion) -> String {
    // NUL separates the fields: no field can contain it, so distinct triples hash distinct
    // inputs.
    let identity = format!("{}\0{}\0{}", version.version, version.uri, version.pool);
    format!("{:08x}", fnv1a(identity.as_bytes()) as u32)
}

/// Name of `version`'s Deployment of `component` in `pool`: the existing name when `version` is
/// the one that owns it (`owner`), else that name with the version's key appended.
pub fn version_deployment_name(
    md: &ModelDeployment,
    component: &str,
    pool: &str,
    version: &RolloutVersion,
    owner: &RolloutVersion,
) -> String {
    if same_model(version, owner) {
        deployment_name(md, component, pool)
    } else {
        child_name(&[&md.name_any(), component, pool, &version_key(version)])
    }
}

/// Labels of `version`'s Deployment (and its pods) of `component` in `pool`: the placement's
/// labels, and for a non-owning version its key (the owner's Deployments keep their selector,
/// which Kubernetes does not let change).
pub fn version_labels(
    md: &ModelDeployment,
    component: &str,
    pool: &str,
    version: &RolloutVersion,
    owner: &RolloutVersion,
) -> BTreeMap<String, String> {
    let mut labels = placement_labels(
        &md.namespace().unwrap_or_default(),
        &md.name_any(),
        component,
        pool,
    );
    if !same_model(version, owner) {
        labels.insert(LABEL_VERSION_KEY.to_string(), version_key(version));
    }
    labels
}

/// `md` as if its spec named `version`: the existing builders (Deployment, model fetch, env)
/// then build that version's children unchanged.
pub fn model_at(md: &ModelDeployment, version: &RolloutVersion) -> ModelDeployment {
    let mut at = md.clone();
    at.spec.model.version = version.version.clone();
    at.spec.model.source.uri = version.uri.clone();
    at.spec.model.source.pool = version.pool.clone();
    at
}

/// `deployment`, built for `version` (from [`model_at`]), as that version's Deployment of
/// `component` in `pool`: its name, and for a non-owning version the key label on the
/// Deployment, its selector and its pods, so that the two versions never select each other's
/// pods. The owning version's Deployment is returned unchanged.
pub fn as_version(
    mut deployment: k8s_openapi::api::apps::v1::Deployment,
    md: &ModelDeployment,
    component: &str,
    pool: &str,
    version: &RolloutVersion,
    owner: &RolloutVersion,
) -> k8s_openapi::api::apps::v1::Deployment {
    if same_model(version, owner) {
        return deployment;
    }
    let key = version_key(version);
    let label = |labels: &mut Option<BTreeMap<String, String>>| {
        labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_VERSION_KEY.to_string(), key.clone());
    };
    deployment.metadata.name = Some(version_deployment_name(md, component, pool, version, owner));
    label(&mut deployment.metadata.labels);
    label(&mut deployment.spec.selector.match_labels);
    label(
        &mut deployment
            .spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels,
    );
    deployment
}
