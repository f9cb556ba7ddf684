//! One status writer for every controller: the leader gate, the "says nothing new" check, the
//! server-side apply of the status subresource and the reconcile timing, written once.

use crate::operator::kubernetes::metrics::{ControllerLabels, Metrics};
use crate::operator::kubernetes::retry::idempotent;
use crate::operator::kubernetes::views::ChildView;
use kube::api::{Api, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::time::Instant;

/// A status a controller reports.
pub trait ReportedStatus: serde::Serialize {
    /// Whether `self` says what `other` says: equal but for condition times, which move only
    /// when a condition flips.
    fn says_the_same(&self, other: &Self) -> bool;
}

/// Writes the status subresources of one controller's objects.
pub struct StatusWriter {
    /// The controller's field manager; the apply is forced, so the status is always its own.
    pub field_manager: &'static str,
}

impl StatusWriter {
    /// Writes `status` to `object` by server-side apply when it says something `previous` does
    /// not; returns whether it wrote.
    pub async fn write<K, S>(
        &self,
        client: Client,
        object: &K,
        previous: Option<&S>,
        status: &S,
    ) -> kube::Result<bool>
    where
        K: Resource<DynamicType = ()>,
        S: ReportedStatus,
    {
        if previous.is_some_and(|p| p.says_the_same(status)) {
            return Ok(false);
        }
        let resource = ApiResource::erase::<K>(&());
        let api: Api<ChildView> = match object.namespace() {
            Some(namespace) => Api::namespaced_with(client, &namespace, &resource),
            None => Api::all_with(client, &resource),
        };
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        let (name, params) = (
            object.name_any(),
            PatchParams::apply(self.field_manager).force(),
        );
        let apply_patch = Patch::Apply(&patch);
        idempotent(|| api.patch_status(&name, &params, &apply_patch)).await?;
        Ok(true)
    }
}

/// Times one reconcile of `controller` into `skybridge_reconcile_duration_seconds` when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl<'a> ReconcileTimer<'a> {
    pub fn start(metrics: &'a Metrics, controller: &'static str) -> Self {
        Self {
            metrics,
            controller,
            started: Instant::now(),
        }
    }
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&ControllerLabels {
                controller: self.controller.into(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}
