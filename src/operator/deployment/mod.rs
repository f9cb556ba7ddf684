//! The ModelDeployment controller. One reconcile is a pipeline of five steps, each in its own
//! module with its own error type:
//!
//! 1. [`observe`] (I/O): the estate from the caches, validation, demand, which clusters answer,
//!    what the children watches see, store credentials;
//! 2. [`decide`] (pure but for the planning queue and the memory): the planning batch (burst
//!    controllers and planner composed once), artifact holds and sync intents, stranded
//!    workloads, the sweep rule, Events to tell;
//! 3. [`build`] (pure): every child wanted in every pool's cluster, Secrets included;
//! 4. [`apply`] (I/O): the one applier (memo, server-side apply) and the one sweep of labelled
//!    children not in the desired set;
//! 5. [`report`]: status, conditions, Events, the status write, the next requeue.

pub mod apply;
pub mod artifacts;
pub mod batch;
pub mod build;
pub mod capacity;
pub mod decide;
pub mod observe;
pub mod planning;
pub mod report;
pub mod rollout;
pub mod status;
pub mod stranded;

use crate::api::{ComputePool, ModelDeployment};
use crate::estate::Estate;
use crate::operator::kubernetes::applier::SweepMode;
use crate::operator::kubernetes::metrics::ErrorLabels;
use crate::operator::kubernetes::status_writer::ReconcileTimer;
use crate::operator::traffic::Io;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use report::{Failure, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::{instrument, warn};

pub use crate::operator::kubernetes::names::{
    DEPLOYMENT_MANAGER as FIELD_MANAGER, target_namespace,
};

/// Finalizer that removes children in remote clusters, which owner references cannot reach.
pub const FINALIZER: &str = "skybridge.io/cleanup";

pub use decide::Deployments;

/// Why a reconcile of a ModelDeployment failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Decide(#[from] decide::DecideError),
    #[error(transparent)]
    Build(#[from] build::BuildError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error("removing the children of a deleted deployment")]
    Cleanup(#[source] crate::operator::error::Error),
    /// Routes and exports carry no owner reference in remote clusters: they are deleted by the
    /// cleanup, which waits for every cluster to answer.
    #[error(
        "removing the traffic objects of a deleted deployment: routes or exports remain in a cluster that did not answer"
    )]
    TrafficCleanup,
    #[error("finalizer")]
    Finalizer(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Short label for metrics: the kind of the underlying fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Decide(_) => "planning",
            Error::Build(build::BuildError::Serialize { .. }) => "serialize",
            Error::Build(_) => "artifacts",
            Error::Apply(err) => err.cause().kind(),
            Error::Report(_) => "kube",
            Error::Cleanup(err) => err.kind(),
            Error::TrafficCleanup => "cluster",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

#[instrument(skip(md, d), fields(namespace = md.namespace(), name = md.name_any()))]
pub async fn reconcile(md: Arc<ModelDeployment>, d: Arc<Deployments>) -> Result<Action, Error> {
    if !d.is_leader() {
        // A warm standby: caches stay current, writes wait for the lease.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let _timer = ReconcileTimer::start(&d.metrics, "modeldeployment");
    let namespace = md.namespace().unwrap_or_default();
    let api: Api<ModelDeployment> = Api::namespaced(d.clusters.local().client().await, &namespace);
    // Where the finalizer is missing, kube's helper only adds it and returns. The deployment is
    // then applied in this same reconcile, not after the echo of that write comes back (which
    // is no change of intent: see `owner_intent`).
    let adds_finalizer = md.metadata.deletion_timestamp.is_none() && !has_finalizer(&md);
    let result = finalizer(&api, FINALIZER, md.clone(), |event| async {
        match event {
            Finalizer::Apply(md) => reconcile_live(&md, &d).await,
            Finalizer::Cleanup(md) => cleanup(&md, &d).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    match result {
        Ok(_) if adds_finalizer => reconcile_live(&md, &d).await,
        other => other,
    }
}

/// Whether the operator's finalizer is on `md`.
fn has_finalizer(md: &ModelDeployment) -> bool {
    md.finalizers().iter().any(|f| f == FINALIZER)
}

pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, d: Arc<Deployments>) -> Action {
    warn!(namespace = md.namespace(), name = md.name_any(), error = %ErrorChain(error), "reconcile failed");
    d.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "modeldeployment".into(),
            kind: error.kind().into(),
        })
        .inc();
    Action::requeue(d.backoff(md.as_ref()))
}

/// An error with its sources, for logs.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// One reconcile of a live deployment: observe → decide → build → apply → report.
async fn reconcile_live(md: &ModelDeployment, d: &Deployments) -> Result<Action, Error> {
    let observed = observe::observe(d, md).await;
    if !observed.invalid.is_empty() {
        return Ok(report::invalid(d, md, &observed).await?);
    }
    let decision = decide::decide(d, md, &observed).await?;
    let desired = build::build(
        md,
        &observed,
        &decision,
        d.clusters.operator_namespace(),
        &d.settings.image,
    );
    let applied = apply::apply(d, md, &observed, &decision, &desired).await;
    match report::report(d, md, &observed, decision, desired.problems, applied).await? {
        Outcome::Done(action) => Ok(action),
        Outcome::Failed(Failure::Build(err)) => Err(err.into()),
        Outcome::Failed(Failure::Apply(err)) => Err(err.into()),
    }
}

/// A deleted deployment: every child in every pool's cluster goes (listed, whatever the
/// indexes say), then everything remembered of it.
async fn cleanup(md: &ModelDeployment, d: &Deployments) -> Result<Action, Error> {
    let pools: BTreeMap<String, Arc<ComputePool>> = d
        .pools
        .state()
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect();
    apply::sweep(
        d,
        md,
        &pools,
        &BTreeMap::new(),
        &BTreeSet::new(),
        SweepMode::Everything,
    )
    .await
    .map_err(Error::Cleanup)?;
    // Traffic: routes and exports carry no owner reference in remote clusters.
    let io = Io {
        clusters: &d.clusters,
        metrics: &d.metrics,
    };
    let traffic = d.traffic_memory(&Estate::key_of(md));
    if !d.traffic.cleanup(&io, md, &traffic, &pools).await {
        return Err(Error::TrafficCleanup);
    }
    if let Some(syncer) = &d.artifacts {
        syncer.forget(&kube::runtime::reflector::ObjectRef::from_obj(md));
    }
    d.forget(md);
    report::publish(
        d,
        md,
        EventType::Normal,
        "Deleted",
        "Cleanup",
        "removed every workload in every cluster",
    )
    .await;
    Ok(Action::await_change())
}
