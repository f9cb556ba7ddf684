//! What every reconcile shares: clients, caches, metrics, the event recorder and leadership.

use super::batch::Batcher;
use super::clusters::Clusters;
use super::deployment_controller::{PlanOutcome, PlanTicket};
use super::events::EventRecorder;
use super::metrics::Metrics;
use crate::api::{BurstPolicy, ComputePool, ModelDeployment};
use crate::burst::ControllerState;
use crate::estate::Estate;
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
    pub artifacts: Option<Arc<super::artifacts::Syncer>>,
    leader: watch::Receiver<bool>,
    failures: Mutex<HashMap<String, u32>>,
    /// Burst-controller state per deployment and component. Kept in memory: after a restart or
    /// a leader change a fresh state starts from the replicas the status records, which the
    /// controller accepts as a valid start.
    burst: Mutex<HashMap<(String, String), BTreeMap<String, ControllerState>>>,
    heartbeat: Mutex<Instant>,
    /// Per deployment, the placements its children were last swept for (see `swept`).
    swept: Mutex<HashMap<(String, String), u64>>,
    /// Per deployment, the stranded replicas last decided: a reconcile that starts before the
    /// cache has the previous status must not forget them (and delete their workloads).
    stranded: Mutex<HashMap<(String, String), Vec<crate::api::StrandedReplicas>>>,
    /// What was last applied to each child, to skip applies that change nothing.
    pub applied: super::applied::AppliedChildren,
    /// Serializes planning: each decision sees every earlier one (see `decisions`), and the
    /// reconciles waiting meanwhile are decided together in the next pass.
    pub planning: Batcher<PlanTicket, PlanOutcome>,
    /// Each deployment as last decided: its object with the status the decision implies. A
    /// decision is known here before its status write reaches the cache, so concurrent
    /// reconciles never promise the same free capacity twice.
    decisions: Mutex<HashMap<(String, String), Arc<ModelDeployment>>>,
    /// traffic: routes, exports, drains (see `traffic`).
    pub traffic: super::traffic::Traffic,
}

/// Planning passes start at least this far apart: under a stream of reconciles each pass
/// decides what gathered meanwhile (see `batch`), which bounds the time spent planning; a
/// reconcile that finds the planner idle is decided at once.
const PLANNING_INTERVAL: Duration = Duration::from_millis(10);

/// The most of the time planning passes take: as the estate (and so a pass) grows, passes are
/// spaced further apart and decide larger batches, instead of keeping a core busy.
const PLANNING_SHARE: f64 = 0.1;

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
            leader,
            failures: Mutex::new(HashMap::new()),
            burst: Mutex::new(HashMap::new()),
            heartbeat: Mutex::new(Instant::now()),
            swept: Mutex::new(HashMap::new()),
            stranded: Mutex::new(HashMap::new()),
            planning: Batcher::new(PLANNING_INTERVAL, PLANNING_SHARE),
            decisions: Mutex::new(HashMap::new()),
            traffic: Default::default(), // traffic:
            // Every child is re-applied at least this often, whatever the memo says.
            applied: super::applied::AppliedChildren::new(Duration::from_secs(300)),
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
        let decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        for md in self.deployments.state() {
            let key = Estate::key_of(&md);
            let latest = latest(md, decisions.get(&key));
            estate.deployments.insert(key, latest);
        }
        estate
    }

    /// `md` with the placements last decided for it (see `with_placements_decided`).
    pub fn with_decided_placements(&self, md: &Arc<ModelDeployment>) -> Arc<ModelDeployment> {
        let decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        with_placements_decided(md, decisions.get(&Estate::key_of(md)))
    }

    /// Records what was decided for `md` (see `decisions`).
    pub fn record_decision(&self, md: &ModelDeployment, plans: &[crate::planner::ComponentPlan]) {
        use crate::api::{ComponentStatus, ModelDeploymentStatus, PlacementStatus};
        let mut decided = md.clone();
        let status = decided
            .status
            .get_or_insert_with(ModelDeploymentStatus::default);
        status.components = plans
            .iter()
            .map(|plan| ComponentStatus {
                name: plan.key.component.clone(),
                desired_replicas: plan.desired_replicas,
                placements: plan
                    .placements
                    .iter()
                    .map(|p| PlacementStatus {
                        pool: p.pool.clone(),
                        cloud: p.cloud,
                        replicas: p.replicas,
                        ready_replicas: 0,
                        reason: p.reason.clone(),
                    })
                    .collect(),
                unplaced_replicas: plan.unplaced,
                ..Default::default()
            })
            .collect();
        let key = Estate::key_of(md);
        self.decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::new(decided));
    }

    pub fn forget_decision(&self, deployment: &(String, String)) {
        self.decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment);
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
        self.burst
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(deployment)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_burst_states(
        &self,
        deployment: &(String, String),
        states: BTreeMap<String, ControllerState>,
    ) {
        self.burst
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(deployment.clone(), states);
    }

    /// Drops the burst state of a deployment that is gone.
    /// The placement signature a deployment's orphan sweep last ran for, if any.
    pub fn swept(&self, deployment: &(String, String)) -> Option<u64> {
        self.swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(deployment)
            .copied()
    }

    pub fn set_swept(&self, deployment: &(String, String), signature: u64) {
        self.swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(deployment.clone(), signature);
    }

    pub fn forget_swept(&self, deployment: &(String, String)) {
        self.swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment);
    }

    /// The stranded replicas last decided for a deployment, if any decision was made since the
    /// operator started.
    pub fn stranded(
        &self,
        deployment: &(String, String),
    ) -> Option<Vec<crate::api::StrandedReplicas>> {
        self.stranded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(deployment)
            .cloned()
    }

    pub fn set_stranded(
        &self,
        deployment: &(String, String),
        entries: Vec<crate::api::StrandedReplicas>,
    ) {
        self.stranded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(deployment.clone(), entries);
    }

    pub fn forget_stranded(&self, deployment: &(String, String)) {
        self.stranded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment);
    }

    pub fn forget_burst_states(&self, deployment: &(String, String)) {
        self.burst
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(deployment);
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
