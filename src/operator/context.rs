//! What every reconcile shares: clients, caches, metrics, the event recorder, leadership, and
//! one memory per deployment (dropped whole when the deployment goes, [`Context::forget`]).

use crate::api::{BurstPolicy, ComputePool, ModelDeployment, StrandedReplicas};
use crate::burst::ControllerState;
use crate::estate::Estate;
use crate::operator::artifacts::syncer::Syncer;
use crate::operator::kubernetes::clusters::Clusters;
use crate::operator::kubernetes::events::EventRecorder;
use crate::operator::kubernetes::memo::AppliedChildren;
use crate::operator::kubernetes::metrics::Metrics;
use crate::operator::kubernetes::secrets::SecretCache;
use crate::operator::traffic::{Traffic, TrafficMemory};
use kube::ResourceExt;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Settings of one operator process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image with the `skybridge` binary, for the `fetch-model` init container.
    pub image: String,
    /// How often pools are probed and deployments re-planned without other triggers.
    pub period: Duration,
}

pub struct Context {
    pub clusters: Clusters,
    pub metrics: Arc<Metrics>,
    pub recorder: EventRecorder,
    pub settings: Settings,
    pub pools: Store<ComputePool>,
    pub policies: Store<BurstPolicy>,
    pub deployments: Store<ModelDeployment>,
    /// Background model syncs; `None` when the operator does not manage artifacts.
    pub artifacts: Option<Arc<Syncer>>,
    /// What was last applied to each child, to skip applies that change nothing.
    pub applied: AppliedChildren,
    /// Store-credential Secrets, read at most every `CREDENTIALS_RECHECK`.
    pub source_secrets: SecretCache,
    /// What the operator remembers of each deployment between reconciles.
    memory: Memory,
    leader: watch::Receiver<bool>,
    /// Consecutive failures per object (any kind), for its backoff.
    failures: Mutex<HashMap<String, u32>>,
    heartbeat: Mutex<Instant>,
    /// Cross-cluster traffic: the discovery cache (what it remembers per deployment is in
    /// [`DeploymentMemory::traffic`]).
    pub traffic: Traffic,
    /// Each pool's last capacity assessment (issue #19): written by the pool controller every
    /// period, read by planning (shortfall and replicas on doomed nodes to place anew).
    pub capacity: crate::capacity::observed::CapacityMemory,
}

/// What the operator remembers of one deployment between its reconciles. Kept in memory only:
/// after a restart or a leader change each part starts empty, which every user of it accepts
/// (see each field). Dropped whole by [`Context::forget`] when the deployment is deleted.
#[derive(Clone, Default)]
pub struct DeploymentMemory {
    /// Burst-controller state per component: a fresh state starts from the replicas the status
    /// records, which the controller accepts as a valid start.
    pub burst: BTreeMap<String, ControllerState>,
    /// The placement signature its children were last swept for completely: orphans appear
    /// only when it changes. Empty: the next reconcile lists the clusters.
    pub swept: Option<u64>,
    /// The stranded replicas last decided: a reconcile that starts before the cache has the
    /// previous status must not forget them (and delete their workloads).
    pub stranded: Option<Vec<StrandedReplicas>>,
    /// The deployment as last decided: its object with the status the decision implies. A
    /// decision is known here before its status write reaches the cache, so concurrent
    /// reconciles never promise the same free capacity twice.
    pub decision: Option<Arc<ModelDeployment>>,
    /// Its traffic: the routes, exports and drains last written (after a restart, resumed
    /// from `status.components[].traffic`).
    pub traffic: TrafficMemory,
}

/// Per-deployment memory, keyed by (namespace, name).
#[derive(Default)]
struct Memory {
    deployments: Mutex<HashMap<(String, String), DeploymentMemory>>,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), DeploymentMemory>> {
        self.deployments.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read<R>(&self, key: &(String, String), f: impl FnOnce(&DeploymentMemory) -> R) -> Option<R> {
        self.lock().get(key).map(f)
    }

    fn write(&self, key: &(String, String), f: impl FnOnce(&mut DeploymentMemory)) {
        f(self.lock().entry(key.clone()).or_default());
    }
}

/// A deployment as last decided, where that decision is for the same object and spec; else as
/// the cache has it. The decision is never older than the cache's status, since the operator
/// decides before it writes a status.
fn latest(
    cached: Arc<ModelDeployment>,
    decided: Option<&Arc<ModelDeployment>>,
) -> Arc<ModelDeployment> {
    match decided {
        Some(d)
            if d.metadata.uid == cached.metadata.uid
                && d.metadata.generation == cached.metadata.generation =>
        {
            d.clone()
        }
        _ => cached,
    }
}

/// A component's desired replicas and its (pool, replicas).
type Placed<'a> = (&'a str, u32, Vec<(&'a str, u32)>);

/// The replicas a deployment's status (or decision) places, per component.
fn placements(md: &ModelDeployment) -> Vec<Placed<'_>> {
    md.status
        .iter()
        .flat_map(|s| &s.components)
        .map(|c| {
            let placed = c
                .placements
                .iter()
                .map(|p| (p.pool.as_str(), p.replicas))
                .collect();
            (c.name.as_str(), c.desired_replicas, placed)
        })
        .collect()
}

/// `cached` with the placements of its last decision, where that decision is for the same
/// object and spec: a reconcile that starts before the cache has the previous one's status
/// must still plan from what that one placed, or it places afresh and leaves children behind.
/// Only the placements: the rest of the status is the cache's, which is newer.
fn with_placements_decided(
    cached: &Arc<ModelDeployment>,
    decided: Option<&Arc<ModelDeployment>>,
) -> Arc<ModelDeployment> {
    let decided = latest(cached.clone(), decided);
    if Arc::ptr_eq(&decided, cached) || placements(&decided) == placements(cached) {
        return cached.clone();
    }
    let mut merged = (**cached).clone();
    merged
        .status
        .get_or_insert_with(Default::default)
        .components = decided
        .status
        .as_ref()
        .map(|s| s.components.clone())
        .unwrap_or_default();
    Arc::new(merged)
}

/// How often a store-credentials Secret is read again: the copies in the pools' clusters
/// follow a rotation within this (and the next reconcile of each deployment), instead of
/// costing a read per serving pool and reconcile.
pub const CREDENTIALS_RECHECK: Duration = Duration::from_secs(10);

/// Name under which the operator reports Events.
pub const REPORTER: &str = "skybridge";

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        clusters: Clusters,
        metrics: Arc<Metrics>,
        settings: Settings,
        pools: Store<ComputePool>,
        policies: Store<BurstPolicy>,
        deployments: Store<ModelDeployment>,
        leader: watch::Receiver<bool>,
        instance: String,
    ) -> Self {
        let recorder = EventRecorder::new(
            clusters.local().client.clone(),
            Reporter {
                controller: REPORTER.into(),
                instance: Some(instance),
            },
        );
        Self {
            clusters,
            metrics,
            recorder,
            settings,
            pools,
            policies,
            deployments,
            artifacts: None,
            // Every child is re-applied at least this often, whatever the memo says.
            applied: AppliedChildren::new(Duration::from_secs(300)),
            source_secrets: SecretCache::new(CREDENTIALS_RECHECK),
            memory: Memory::default(),
            leader,
            failures: Mutex::new(HashMap::new()),
            heartbeat: Mutex::new(Instant::now()),
            traffic: Traffic::default(),
            capacity: Default::default(),
        }
    }

    /// Only the leader writes; standbys keep their caches warm and wait.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// The pools and policies as the caches see them now, without any deployment: all that
    /// validating one deployment or reading its demand needs.
    pub fn pools_and_policies(&self) -> Estate {
        let mut estate = Estate::default();
        for pool in self.pools.state() {
            estate.pools.insert(pool.name_any(), pool);
        }
        for policy in self.policies.state() {
            estate.policies.insert(policy.name_any(), policy);
        }
        estate
    }

    /// The estate as the caches see it now, each deployment as last decided where that is newer
    /// than the cache for the same spec.
    pub fn estate(&self) -> Estate {
        let mut estate = self.pools_and_policies();
        let memory = self.memory.lock();
        for md in self.deployments.state() {
            let key = Estate::key_of(&md);
            let decided = memory.get(&key).and_then(|m| m.decision.as_ref());
            estate.deployments.insert(key, latest(md, decided));
        }
        estate
    }

    /// `md` with the placements last decided for it (see `with_placements_decided`).
    pub fn with_decided_placements(&self, md: &Arc<ModelDeployment>) -> Arc<ModelDeployment> {
        let decided = self
            .memory
            .read(&Estate::key_of(md), |m| m.decision.clone())
            .flatten();
        with_placements_decided(md, decided.as_ref())
    }

    /// Records what was decided for a deployment: the deployment with the status its decision
    /// implies (see [`DeploymentMemory::decision`]).
    pub fn record_decision(&self, decided: Arc<ModelDeployment>) {
        let key = Estate::key_of(&decided);
        self.memory.write(&key, |m| m.decision = Some(decided));
    }

    /// Backoff for an object's next retry: 0.5 s doubling to 5 min, so a broken object neither
    /// spins nor waits a flat five minutes after a transient fault.
    pub fn backoff<K: kube::Resource<DynamicType = ()>>(&self, object: &K) -> Duration {
        let key = ObjectRef::from_obj(object).to_string();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = (*n + 1).min(11);
        Duration::from_millis(250 << *n).min(Duration::from_secs(300))
    }

    /// Forgets an object's failures after it reconciled.
    pub fn succeeded<K: kube::Resource<DynamicType = ()>>(&self, object: &K) {
        let key = ObjectRef::from_obj(object).to_string();
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.beat();
    }

    pub fn burst_states(&self, deployment: &(String, String)) -> BTreeMap<String, ControllerState> {
        self.memory
            .read(deployment, |m| m.burst.clone())
            .unwrap_or_default()
    }

    pub fn set_burst_states(
        &self,
        deployment: &(String, String),
        states: BTreeMap<String, ControllerState>,
    ) {
        self.memory.write(deployment, |m| m.burst = states);
    }

    /// The placement signature a deployment's orphan sweep last completed for, if any.
    pub fn swept(&self, deployment: &(String, String)) -> Option<u64> {
        self.memory.read(deployment, |m| m.swept).flatten()
    }

    pub fn set_swept(&self, deployment: &(String, String), signature: Option<u64>) {
        self.memory.write(deployment, |m| m.swept = signature);
    }

    /// The stranded replicas last decided for a deployment, if any decision was made since the
    /// operator started.
    pub fn stranded(&self, deployment: &(String, String)) -> Option<Vec<StrandedReplicas>> {
        self.memory
            .read(deployment, |m| m.stranded.clone())
            .flatten()
    }

    pub fn set_stranded(&self, deployment: &(String, String), entries: Vec<StrandedReplicas>) {
        self.memory
            .write(deployment, |m| m.stranded = Some(entries));
    }

    /// What the traffic layer last handed back for a deployment (empty if nothing).
    pub fn traffic_memory(&self, deployment: &(String, String)) -> TrafficMemory {
        self.memory
            .read(deployment, |m| m.traffic.clone())
            .unwrap_or_default()
    }

    pub fn set_traffic_memory(&self, deployment: &(String, String), traffic: TrafficMemory) {
        self.memory.write(deployment, |m| m.traffic = traffic);
    }

    /// Forgets everything remembered of a deployment that is gone: its memory and its backoff.
    pub fn forget(&self, md: &ModelDeployment) {
        self.memory.lock().remove(&Estate::key_of(md));
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(md).to_string());
    }

    /// How many deployments are remembered, and how many objects have a backoff running.
    pub fn remembered(&self) -> (usize, usize) {
        (
            self.memory.lock().len(),
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
        )
    }

    /// Marks the control loop alive, for `/livez`.
    pub fn beat(&self) {
        *self.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn since_heartbeat(&self) -> Duration {
        self.heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Cloud, ComponentStatus, ModelDeploymentStatus, PlacementStatus};

    fn deployment(uid: &str, generation: i64, placed_on: Option<&str>) -> Arc<ModelDeployment> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/ecommerce/recommendation.yaml"
        ))
        .unwrap();
        let doc = text
            .split("\n---")
            .find(|d| d.contains("kind: ModelDeployment"))
            .unwrap();
        let mut md: ModelDeployment = serde_yaml_ng::from_str(doc).unwrap();
        md.metadata.uid = Some(uid.into());
        md.metadata.generation = Some(generation);
        md.status = Some(ModelDeploymentStatus {
            observed_generation: Some(generation),
            components: placed_on
                .map(|pool| {
                    vec![ComponentStatus {
                        name: md.spec.components[0].name.clone(),
                        desired_replicas: 2,
                        placements: vec![PlacementStatus {
                            pool: pool.into(),
                            cloud: Cloud::Private,
                            replicas: 2,
                            ready_replicas: 0,
                            reason: String::new(),
                        }],
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        });
        Arc::new(md)
    }

    #[test]
    fn a_stale_cache_plans_from_the_last_decision() {
        // The cache has no placements yet; the last decision placed on dc1.
        let cached = deployment("u1", 1, None);
        let decided = deployment("u1", 1, Some("dc1"));
        let planned = with_placements_decided(&cached, Some(&decided));
        assert_eq!(placements(&planned), placements(&decided));
        // Everything but the placements is the cache's.
        assert_eq!(
            planned.status.as_ref().unwrap().observed_generation,
            cached.status.as_ref().unwrap().observed_generation
        );
        assert_eq!(planned.metadata, cached.metadata);
    }

    #[test]
    fn a_decision_for_another_object_or_spec_is_not_used() {
        let cached = deployment("u1", 2, None);
        for decided in [
            deployment("u1", 1, Some("dc1")),
            deployment("u0", 2, Some("dc1")),
        ] {
            let planned = with_placements_decided(&cached, Some(&decided));
            assert!(Arc::ptr_eq(&planned, &cached));
        }
        assert!(Arc::ptr_eq(
            &with_placements_decided(&cached, None),
            &cached
        ));
    }

    #[test]
    fn a_cache_that_caught_up_is_used_as_it_is() {
        let cached = deployment("u1", 1, Some("dc1"));
        let decided = deployment("u1", 1, Some("dc1"));
        assert!(Arc::ptr_eq(
            &with_placements_decided(&cached, Some(&decided)),
            &cached
        ));
    }
}
