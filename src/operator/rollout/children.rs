//! Names, labels and the model of each version's children during a rollout (issue #17), for the
//! build step and the traffic layer.
//!
//! A version's children carry either the deployment's own names (`<deployment>-<component>-
//! <pool>`) or those names with a key appended ([`VersionNames`]). The stable version keeps the
//! names it runs under (`status.rollout.namesKey`: absent at first, so that switching a
//! deployment to `Canary` renames and orphans nothing); the version rolling out gets its own key
//! (a short hash of version and source: a version string need not be a valid name). A keyed
//! Deployment selects its key in `skybridge.io/version-key`, so the two versions' Deployments
//! never select each other's pods; the pods of a canary deployment's own-named Deployment carry
//! the label too ([`OWN_NAMES_KEY`]), so that during a rollout each version's Service (and
//! export) selects that version alone.

use crate::api::{ModelDeployment, RolloutVersion};
use crate::operator::kubernetes::names::{child_name, deployment_name, fnv1a, service_name};
use crate::traffic::build::export_name;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Label on a canary deployment's pods (and on a keyed Deployment's selector): the key of the
/// names its Deployment runs under.
pub const LABEL_VERSION_KEY: &str = "skybridge.io/version-key";

/// The label value of pods whose Deployment runs under the deployment's own names.
pub const OWN_NAMES_KEY: &str = "own";

/// A short key naming `version` (version and source; the digest aside, as in
/// [`super::same_model`]): eight hex digits, a valid name part and label value whatever the
/// version string holds.
pub fn version_key(version: &RolloutVersion) -> String {
    // NUL separates the fields: no field can contain it, so distinct triples hash distinct
    // inputs.
    let identity = format!("{}\0{}\0{}", version.version, version.uri, version.pool);
    format!("{:08x}", fnv1a(identity.as_bytes()) as u32)
}

/// The names one version's children run under: the deployment's own (`key: None`) or suffixed
/// by `key`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VersionNames {
    pub key: Option<String>,
}

impl VersionNames {
    /// The names of the version rolling out to `version`.
    pub fn keyed(version: &RolloutVersion) -> VersionNames {
        VersionNames {
            key: Some(version_key(version)),
        }
    }

    /// The names the stable version of `md` runs under (`status.rollout.namesKey`).
    pub fn stable(md: &ModelDeployment) -> VersionNames {
        VersionNames {
            key: md
                .status
                .as_ref()
                .and_then(|s| s.rollout.as_ref())
                .and_then(|r| r.names_key.clone()),
        }
    }

    /// The value of [`LABEL_VERSION_KEY`] on this version's pods.
    pub fn label_value(&self) -> &str {
        self.key.as_deref().unwrap_or(OWN_NAMES_KEY)
    }

    fn suffixed(&self, name: String) -> String {
        match &self.key {
            None => name,
            Some(key) => child_name(&[&name, key]),
        }
    }

    /// This version's Deployment of `component` in `pool`.
    pub fn deployment_name(&self, md: &ModelDeployment, component: &str, pool: &str) -> String {
        match &self.key {
            None => deployment_name(md, component, pool),
            Some(key) => child_name(&[&md.name_any(), component, pool, key]),
        }
    }

    /// This version's Service of `component` in a cluster (the route's local backend).
    pub fn service_name(&self, md: &ModelDeployment, component: &str) -> String {
        self.suffixed(service_name(md, component))
    }

    /// This version's per-pool Service and `ServiceExport` of `component` (the route's
    /// `ServiceImport` backend).
    pub fn export_name(&self, md: &ModelDeployment, component: &str, pool: &str) -> String {
        self.suffixed(export_name(md, component, pool))
    }

    /// `deployment`, built for this version (from [`model_at`]), renamed and labelled: a keyed
    /// version's key goes on the Deployment, its selector and its pods; with `label_pods` (a
    /// canary deployment) an own-named Deployment's pods carry [`OWN_NAMES_KEY`] (its selector,
    /// immutable, is left as it is).
    pub fn apply_to(
        &self,
        mut deployment: Deployment,
        md: &ModelDeployment,
        component: &str,
        pool: &str,
        label_pods: bool,
    ) -> Deployment {
        let value = self.label_value().to_string();
        let label = |labels: &mut Option<BTreeMap<String, String>>| {
            labels
                .get_or_insert_with(BTreeMap::new)
                .insert(LABEL_VERSION_KEY.to_string(), value.clone());
        };
        if label_pods || self.key.is_some() {
            label(
                &mut deployment
                    .spec
                    .template
                    .metadata
                    .get_or_insert_with(Default::default)
                    .labels,
            );
        }
        if self.key.is_some() {
            deployment.metadata.name = Some(self.deployment_name(md, component, pool));
            label(&mut deployment.metadata.labels);
            label(&mut deployment.spec.selector.match_labels);
        }
        deployment
    }

    /// `service` (a component's Service, or a pool's exported Service) as this version's during
    /// a rollout: its name, and a selector narrowed to this version's pods.
    pub fn narrow(&self, mut service: Service, name: String) -> Service {
        service.metadata.name = Some(name);
        if let Some(spec) = service.spec.as_mut() {
            spec.selector.get_or_insert_with(BTreeMap::new).insert(
                LABEL_VERSION_KEY.to_string(),
                self.label_value().to_string(),
            );
        }
        service
    }
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
