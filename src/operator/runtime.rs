//! Wires the operator together: clients, caches, leader election, controllers and probes.

use super::{
    deployment as deployment_controller, policy as policy_controller, pool as pool_controller,
};
use crate::api::{BurstPolicy, ComputePool, ModelDeployment};
use crate::operator::artifacts::syncer::{ArtifactsConfig, Syncer};
use crate::operator::context::{Context, Settings};
use crate::operator::error::{Error, Result};
use crate::operator::http::{Health, serve};
use crate::operator::kubernetes::clusters::{AbortOnDrop, Clusters};
use crate::operator::kubernetes::coalesce::coalesce;
use crate::operator::kubernetes::metrics::Metrics;
use crate::operator::kubernetes::views::{SlimModelDeployment, unslim};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info};

/// Settings of `skybridge run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub namespace: String,
    pub identity: String,
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_seconds: u64,
    pub probe_addr: SocketAddr,
    pub period: Duration,
    pub image: String,
    pub cluster_qps: u32,
}

/// Runs until `shutdown` resolves, without managing model artifacts (no syncs, no fetch init
/// containers): for clusters whose models are baked into images or managed elsewhere.
pub async fn run(
    client: Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_with_artifacts(client, config, None, shutdown).await
}

/// Runs until `shutdown` resolves; with `artifacts`, models are synced to the pools' stores in
/// the background and every serving pod fetches and verifies its model (see `artifacts`).
pub async fn run_with_artifacts(
    client: Client,
    config: RunConfig,
    artifacts: Option<ArtifactsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // Bound first: a port that cannot be had is a startup error, not a silent dead probe.
    let probe_listener = tokio::net::TcpListener::bind(config.probe_addr)
        .await
        .map_err(|source| Error::ProbeListen {
            addr: config.probe_addr,
            source,
        })?;
    // Every background task lives in this set: when `run` ends or is dropped, they all stop,
    // the lease renewal included, exactly as when the process exits.
    let mut tasks = JoinSet::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    tasks.spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut lease_guard = None;
    let leader = if config.leader_election {
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &config.lease_name)
                .with_namespace(&config.namespace)
                .with_identity(&config.identity)
                .with_duration(config.lease_seconds)
                .with_grace(config.lease_seconds.div_ceil(3).max(1))
                .with_field_manager("skybridge.io/leader-election")
                .build()
                .await?;
        let (rx, renewal) = manager.watch().await;
        let abort = renewal.abort_handle();
        tasks.spawn(async move {
            let _ = renewal.await;
        });
        lease_guard = Some(AbortOnDrop(abort));
        rx
    } else {
        watch::channel(true).1
    };

    let metrics = Arc::new(Metrics::default());
    let pools_api: Api<ComputePool> = Api::all(client.clone());
    let policies_api: Api<BurstPolicy> = Api::all(client.clone());
    let (pools, pools_writer) = reflector::store();
    let (policies, policies_writer) = reflector::store();
    tokio::spawn(
        reflector::reflector(
            pools_writer,
            watcher(pools_api.clone(), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(())),
    );
    tokio::spawn(
        reflector::reflector(
            policies_writer,
            watcher(policies_api.clone(), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(())),
    );

    // Read without managedFields (see `views`).
    let mds_api: Api<SlimModelDeployment> = Api::all(client.clone());
    // Deployments reconcile on what their owners change (spec, deletion, finalizers), not on the
    // status this controller writes itself; the cache still sees every change.
    // One watch feeds the cache, this controller and the BurstPolicy controller (which
    // re-reports a policy when a deployment naming it changes).
    let (md_store, md_writer) = reflector::store_shared(SHARED_EVENTS_BUFFER);
    let md_events = md_writer
        .subscribe()
        .expect("a shared store hands out subscriptions");
    let md_changes = watcher(mds_api, watcher::Config::default().any_semantic())
        .map_ok(unslim)
        .default_backoff()
        .reflect_shared(md_writer)
        .applied_objects()
        .predicate_filter(owner_intent, Default::default());
    let md_controller = Controller::for_stream(md_changes, md_store.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
    );
    // Remote children are watched per cluster (owner references cannot cross clusters): their
    // readiness changes reconcile their deployment, once per burst of changes (see `coalesce`).
    let (child_triggers, child_events) = futures::channel::mpsc::unbounded();
    let clusters = Clusters::new(client.clone(), config.namespace.clone(), config.cluster_qps)
        .with_child_triggers(child_triggers);
    // A finished sync re-triggers the deployments waiting for it.
    let (sync_done, synced) = tokio::sync::mpsc::unbounded_channel();
    let mut ctx = Context::new(
        clusters,
        metrics.clone(),
        Settings {
            image: config.image.clone(),
            period: config.period,
        },
        pools.clone(),
        policies.clone(),
        md_store.clone(),
        leader.clone(),
        config.identity.clone(),
    );
    ctx.artifacts = artifacts.map(|a| Syncer::new(a, sync_done));
    let ctx = Arc::new(ctx);

    // Leadership as a metric, for dashboards and alerts.
    {
        let metrics = metrics.clone();
        let mut leader = leader.clone();
        tasks.spawn(async move {
            loop {
                let is_leader = *leader.borrow_and_update();
                metrics.leader.set(i64::from(is_leader));
                if !is_leader {
                    metrics.forget_leader_gauges();
                }
                info!(is_leader, "leadership");
                if leader.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    let health = Arc::new(Health {
        context: ctx.clone(),
        caches_synced: false.into(),
        stall_after: config.period * 6,
    });
    {
        let health = health.clone();
        let (pools, policies, mds) = (pools.clone(), policies.clone(), md_store.clone());
        tasks.spawn(async move {
            let synced = ready(&pools).await && ready(&policies).await && ready(&mds).await;
            info!(synced, "caches synced");
            health.caches_synced.store(synced, Ordering::Relaxed);
        });
    }
    // Standbys have no reconciles to beat the heart; the loop itself shows they are alive.
    {
        let ctx = ctx.clone();
        let period = config.period;
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if !ctx.is_leader() {
                    ctx.beat();
                }
            }
        });
    }
    let probe_server = tokio::spawn(serve(probe_listener, health.clone(), stopped()));
    let _probe_guard = AbortOnDrop(probe_server.abort_handle());

    let every_deployment = {
        let store = md_store.clone();
        move |_: ComputePool| {
            store
                .state()
                .iter()
                .map(|md| ObjectRef::from_obj(md.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let users_of_policy = {
        let store = md_store.clone();
        move |policy: BurstPolicy| {
            let name = kube::ResourceExt::name_any(&policy);
            store
                .state()
                .iter()
                .filter(|md| {
                    md.spec
                        .components
                        .iter()
                        .any(|c| c.burst_policy.as_deref() == Some(name.as_str()))
                })
                .map(|md| ObjectRef::from_obj(md.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let md_run = md_controller
        .watches(
            pools_api.clone(),
            watcher::Config::default(),
            every_deployment,
        )
        .watches(
            policies_api.clone(),
            watcher::Config::default(),
            users_of_policy,
        )
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default().labels("app.kubernetes.io/managed-by=skybridge"),
        )
        .reconcile_on(coalesce(child_events, CHILD_TRIGGER_WINDOW))
        .reconcile_on(futures::stream::unfold(synced, |mut rx| async move {
            rx.recv().await.map(|md| (md, rx))
        }))
        .graceful_shutdown_on(stopped())
        .run(
            deployment_controller::reconcile,
            deployment_controller::error_policy,
            deployment_controller::Deployments::new(ctx.clone()),
        )
        .for_each(|_| futures::future::ready(()));
    let pool_run = Controller::new(pools_api, watcher::Config::default())
        .graceful_shutdown_on(stopped())
        .run(
            pool_controller::reconcile,
            pool_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let policy_run = Controller::new(policies_api, watcher::Config::default())
        .watches_shared_stream(md_events, policy_controller::policies_of)
        .graceful_shutdown_on(stopped())
        .run(
            policy_controller::reconcile,
            policy_controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    info!(identity = config.identity, "skybridge operator started");
    tokio::join!(md_run, pool_run, policy_run);
    drop(lease_guard);
    tasks.shutdown().await;
    match probe_server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            error!(%err, "probe server failed");
            Err(Error::ProbeServer(err))
        }
        Err(err) => Err(Error::ProbeTask(err)),
    }
}

/// Deployments reconciled at once. Most of a reconcile waits (for a planning pass, for the
/// clusters): with 64, a thousand new deployments queued behind the limit while the planner
/// and the clusters idled. A planning pass shares one estate among its reconciles, so this many
/// does not mean as many estate snapshots.
const RECONCILE_CONCURRENCY: u16 = 256;
/// Deployment changes buffered for a subscriber of the shared watch before the watch waits.
const SHARED_EVENTS_BUFFER: usize = 1024;
/// How long changes to remote children gather before their deployments reconcile: children
/// turning ready together cost one reconcile and one status write, for a delay far below what
/// anyone waiting for readiness notices.
const CHILD_TRIGGER_WINDOW: Duration = Duration::from_millis(25);

/// What a deployment's owner (a person, GitOps) changes: the spec (its generation), deletion,
/// others' finalizers, labels and annotations. Status writes are not in it, nor is this
/// operator's finalizer: the reconcile that adds it goes on to apply the deployment, so its
/// echo is no news. (Removed by hand, it comes back at the next reconcile.)
fn owner_intent(md: &ModelDeployment) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    md.metadata.generation.hash(&mut hasher);
    md.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    let finalizers = md.metadata.finalizers.iter().flatten();
    for other in finalizers.filter(|f| *f != deployment_controller::FINALIZER) {
        other.hash(&mut hasher);
    }
    md.metadata.labels.hash(&mut hasher);
    md.metadata.annotations.hash(&mut hasher);
    Some(hasher.finish())
}

/// Waits until a cache has its first full list. Polled in short rounds: kube-runtime's store
/// readiness keeps one waker, so a second waiter (the controller also waits) may never be woken.
async fn ready<K>(store: &reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(result) => return result.is_ok(),
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelDeploymentStatus;

    fn deployment() -> ModelDeployment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "skybridge.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "ranker", "namespace": "shop", "generation": 1},
            "spec": {
                "model": {"source": {"uri": "s3://models/ranker", "pool": "dc1"}, "version": "1"},
                "components": []
            }
        }))
        .expect("a valid deployment")
    }

    #[test]
    fn owner_intent_ignores_status_and_the_operators_own_finalizer() {
        let md = deployment();
        let intent = owner_intent(&md);

        let mut finalized = md.clone();
        finalized.metadata.finalizers = Some(vec![deployment_controller::FINALIZER.into()]);
        assert_eq!(owner_intent(&finalized), intent, "its own finalizer's echo");

        let mut with_status = finalized.clone();
        with_status.status = Some(ModelDeploymentStatus {
            ready_replicas: 3,
            ..Default::default()
        });
        assert_eq!(owner_intent(&with_status), intent, "a status write");

        let mut changes: Vec<(&str, ModelDeployment)> = Vec::new();
        let mut spec = md.clone();
        spec.metadata.generation = Some(2);
        changes.push(("a new generation", spec));
        let mut deleting = finalized.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        changes.push(("deletion", deleting));
        let mut other = finalized.clone();
        other.metadata.finalizers = Some(vec![
            deployment_controller::FINALIZER.into(),
            "example.com/backup".into(),
        ]);
        changes.push(("another finalizer", other));
        let mut labelled = md.clone();
        labelled.metadata.labels = Some([("team".into(), "search".into())].into());
        changes.push(("a label", labelled));
        for (what, changed) in changes {
            assert_ne!(
                owner_intent(&changed),
                intent,
                "{what} is a change of intent"
            );
        }
    }
}
