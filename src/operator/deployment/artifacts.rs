//! The artifacts stage of a deployment's decision: one reconcile's view of its model across the
//! pool stores, from the pure rules of `artifacts::plan` and what the syncer reports. It decides
//! which syncs to start ([`Stage::sync_intents`], carried out by the [`Syncer`]), which pools
//! to hold replicas off, how pods fetch the model, and what status says.

use super::status::ArtifactsState;
use crate::api::{
    ArtifactMode, ArtifactsStatus, ComputePool, DataClass, ModelDeployment, ModelDeploymentStatus,
    StoreState, StoreStatus,
};
use crate::artifacts::{Credentials, StoreLocation};
use crate::estate::{Estate, ModelClasses, per_replica, pool_view};
use crate::operator::artifacts::plan::{
    self as plan, Candidate, CopyView, ModelFetch, Route, fetch_for, held, hold, serving_pools,
    to_sync, unfetchable,
};
use crate::operator::artifacts::syncer::{
    JobKey, SyncIntent, Syncer, location_id, source_location, store_secret_name,
};
use crate::operator::kubernetes::metrics::{Metrics, PoolLabels};
use crate::planner::ComponentPlan;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One reconcile's view of a deployment's model across stores.
pub struct Stage {
    mode: ArtifactMode,
    class: DataClass,
    candidates: Vec<Candidate>,
    views: BTreeMap<String, CopyView>,
    /// Pools that must not take replicas now, with the reason.
    pub held: BTreeMap<String, String>,
    /// The digest status recorded before this reconcile.
    recorded_digest: Option<String>,
    /// The digest pods verify whatever the views say: a rollout's old version, whose digest
    /// `status.rollout` recorded while it was stable.
    pinned_digest: Option<String>,
}

impl Stage {
    /// `None` when the operator does not manage artifacts. `classes`: the class of every model
    /// of `estate` (computed once for a planning batch).
    pub fn new(
        syncer: Option<&Syncer>,
        estate: &Estate,
        classes: &ModelClasses,
        md: &ModelDeployment,
    ) -> Option<Self> {
        let syncer = syncer?;
        let class = classes.class_of(md);
        let candidates = plan::candidates(md, &estate.pools, class);
        let mut stage = Self {
            mode: md.spec.artifacts.mode,
            class,
            candidates,
            views: BTreeMap::new(),
            held: BTreeMap::new(),
            recorded_digest: md
                .status
                .as_ref()
                .and_then(|s| s.artifacts.as_ref())
                .and_then(|a| a.digest.clone()),
            pinned_digest: None,
        };
        stage.refresh(syncer, md, &estate.pools);
        Some(stage)
    }

    /// The stage of the version a rollout replaces (`old`: the deployment as if its spec named
    /// that version): its syncs go on where its replicas run, and its pods verify `digest`, the
    /// one recorded while it was stable. What status records is the new version's, so it is
    /// not read.
    pub fn of_old_version(
        syncer: Option<&Syncer>,
        estate: &Estate,
        classes: &ModelClasses,
        old: &ModelDeployment,
        digest: Option<String>,
    ) -> Option<Self> {
        let mut old = old.clone();
        if let Some(status) = old.status.as_mut() {
            status.artifacts = None;
        }
        let mut stage = Self::new(syncer, estate, classes, &old)?;
        stage.pinned_digest = digest;
        Some(stage)
    }

    fn keys(
        &self,
        md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
    ) -> BTreeMap<String, JobKey> {
        let Some(source) = pools
            .get(&md.spec.model.source.pool)
            .and_then(|p| p.spec.artifact_store.as_ref())
            .and_then(|s| source_location(md, s).ok())
        else {
            return BTreeMap::new();
        };
        let source_id = location_id(&source);
        let mut keys = BTreeMap::new();
        for c in &self.candidates {
            let key = match &c.route {
                Route::Source => (source_id.clone(), source_id.clone()),
                Route::Copy { model_path } => {
                    let Some(location) = pools
                        .get(&c.pool)
                        .and_then(|p| p.spec.artifact_store.as_ref())
                        .and_then(|s| {
                            StoreLocation::from_artifact_store(
                                s,
                                model_path,
                                Credentials::DefaultChain,
                            )
                            .ok()
                        })
                    else {
                        continue;
                    };
                    (source_id.clone(), location_id(&location))
                }
                Route::Forbidden(_) | Route::NoStore => continue,
            };
            keys.insert(c.pool.clone(), key);
        }
        keys
    }

    fn refresh(
        &mut self,
        syncer: &Syncer,
        md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
    ) {
        let source_missing = pools
            .get(&md.spec.model.source.pool)
            .and_then(|p| p.spec.artifact_store.as_ref())
            .is_none();
        let mut recorded =
            plan::recorded_views(md.status.as_ref().and_then(|s| s.artifacts.as_ref()));
        self.views = self
            .keys(md, pools)
            .into_iter()
            .filter_map(|(pool, key)| {
                let view = syncer.view(&key);
                let recorded = recorded.remove(&pool);
                match view {
                    // No success since the restart: what status recorded as verified stands
                    // until a verification succeeds.
                    Some(mut v) => {
                        if v.previous.is_none() {
                            v.previous = recorded.and_then(|r| r.previous);
                        }
                        Some((pool, v))
                    }
                    None => recorded.map(|r| (pool, r)),
                }
            })
            .collect();
        if source_missing {
            let message = format!(
                "source pool {:?} has no artifactStore",
                md.spec.model.source.pool
            );
            for c in &self.candidates {
                if matches!(c.route, Route::Copy { .. } | Route::Source) {
                    self.views.insert(
                        c.pool.clone(),
                        CopyView {
                            running: false,
                            last: Some(Err(message.clone())),
                            previous: None,
                        },
                    );
                }
            }
        }
        self.held = held(&self.candidates, &self.views);
    }

    /// After planning: the syncs the mode asks for (`OnBurst`: public stores only where the
    /// plan puts replicas), as intents for the [`Syncer`] to carry out. Pure.
    pub fn sync_intents(
        &self,
        estate: &Estate,
        md: &ModelDeployment,
        plans: &[ComponentPlan],
    ) -> Vec<SyncIntent> {
        let pools = &estate.pools;
        let wanted = serving_pools(plans);
        let serving: BTreeSet<String> = md
            .status
            .iter()
            .flat_map(|s| &s.components)
            .flat_map(|c| &c.placements)
            .filter(|p| p.replicas > 0)
            .map(|p| p.pool.clone())
            .collect();
        let to_start = to_sync(self.mode, &self.candidates, &self.views, &wanted, &serving);
        let keys = self.keys(md, pools);
        let me = ObjectRef::from_obj(md);
        let source_pool = pools.get(&md.spec.model.source.pool).cloned();
        let mut intents = Vec::new();
        for pool_name in to_start {
            let (Some(key), Some(source_pool), Some(pool)) =
                (keys.get(&pool_name), &source_pool, pools.get(&pool_name))
            else {
                continue;
            };
            let Some(candidate) = self.candidates.iter().find(|c| c.pool == pool_name) else {
                continue;
            };
            intents.push(SyncIntent {
                key: key.clone(),
                watcher: me.clone(),
                md: Arc::new(md.clone()),
                source_pool: source_pool.clone(),
                pool: pool.clone(),
                route: candidate.route.clone(),
                class: self.class,
            });
        }
        intents
    }

    /// After the syncer carried out the intents: records in `held` the pools of `plans` whose
    /// store does not hold the verified model yet, without taking their replicas out of the
    /// plan. A rollout (issue #17) calls this instead of [`Stage::hold_unfetchable`]: those
    /// pools hold the new version's replicas only (`operator::rollout::inputs::Seen`), while the
    /// old version, whose model they do hold, keeps serving there.
    pub fn find_unfetchable(
        &mut self,
        syncer: &Syncer,
        md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        plans: &[ComponentPlan],
    ) -> &BTreeMap<String, String> {
        let wanted = serving_pools(plans);
        self.refresh(syncer, md, pools);
        for (pool, reason) in unfetchable(&wanted, &self.candidates, self.digest().as_deref()) {
            self.held.entry(pool).or_insert(reason);
        }
        &self.held
    }

    /// After the syncer carried out the intents: holds the replicas placed on pools whose store
    /// does not hold the verified model yet (see `artifact_plan`).
    pub fn hold_unfetchable(
        &mut self,
        syncer: &Syncer,
        md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        plans: &mut [ComponentPlan],
    ) {
        self.find_unfetchable(syncer, md, pools, plans);
        hold(plans, &self.held, |component, pool| {
            match (
                md.spec.components.iter().find(|c| c.name == component),
                pools.get(pool),
            ) {
                (Some(component), Some(pool)) => pool_view(pool)
                    .price
                    .per_replica_hour(&per_replica(component)),
                _ => 0.0,
            }
        });
    }

    /// How the pods of each serving pool fetch the model (`image`: the operator's own, for the
    /// init container). Pools whose store has credentials name their copy (see
    /// `build::store_secret`): fail closed, the pods wait for it rather than start without
    /// credentials or verification.
    pub fn fetches(
        &self,
        md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        plans: &[ComponentPlan],
        image: &str,
    ) -> BTreeMap<String, ModelFetch> {
        self.fetches_in(md, pools, serving_pools(plans), image)
    }

    /// How the pods of each of `serving` fetch the model (see [`Stage::fetches`]).
    pub fn fetches_in(
        &self,
        md: &ModelDeployment,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        serving: impl IntoIterator<Item = String>,
        image: &str,
    ) -> BTreeMap<String, ModelFetch> {
        let digest = self.digest();
        let mut fetches = BTreeMap::new();
        for pool_name in serving {
            let (Some(pool), Some(candidate)) = (
                pools.get(&pool_name),
                self.candidates.iter().find(|c| c.pool == pool_name),
            ) else {
                continue;
            };
            let secret = pool
                .spec
                .artifact_store
                .as_ref()
                .and_then(|s| s.credentials_secret_ref.as_ref())
                .map(|_| store_secret_name(md, &pool_name));
            if let Some(fetch) = fetch_for(md, candidate, pool, image, digest.as_deref(), secret) {
                fetches.insert(pool_name, fetch);
            }
        }
        fetches
    }

    /// The digest pods verify (see `artifact_plan::model_digest`).
    pub fn digest(&self) -> Option<String> {
        if let Some(pinned) = &self.pinned_digest {
            return Some(pinned.clone());
        }
        plan::model_digest(
            &self.candidates,
            &self.views,
            self.recorded_digest.as_deref(),
        )
    }

    /// `status.artifacts` and the `ArtifactsReady` condition for the final plan.
    pub fn state(&self, plans: &[ComponentPlan]) -> ArtifactsState {
        let report = plan::report(
            &self.candidates,
            &self.views,
            &serving_pools(plans),
            self.digest(),
        );
        ArtifactsState {
            ready: report.ready,
            reason: report.reason,
            message: report.message,
            status: Some(ArtifactsStatus {
                digest: report.digest,
                stores: report.stores,
            }),
        }
    }

    /// Events for store states that changed.
    pub fn events(
        before: Option<&ModelDeploymentStatus>,
        after: &ModelDeploymentStatus,
    ) -> Vec<(EventType, &'static str, String)> {
        plan::store_events(stores_of(before), stores_of(Some(after)))
            .into_iter()
            .map(|(warning, reason, note)| {
                let kind = if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                (kind, reason, note)
            })
            .collect()
    }

    /// Counts each store that turned `Failed` since the previous status, by pool.
    pub fn count_failures(
        metrics: &Metrics,
        pools: &BTreeMap<String, Arc<ComputePool>>,
        before: Option<&ModelDeploymentStatus>,
        after: &ModelDeploymentStatus,
    ) {
        let previous = stores_of(before);
        for store in stores_of(Some(after)) {
            let was_failed = previous
                .iter()
                .any(|p| p.pool == store.pool && p.state == StoreState::Failed);
            if store.state == StoreState::Failed && !was_failed {
                let cloud = pools
                    .get(&store.pool)
                    .map(|p| p.spec.cloud.to_string())
                    .unwrap_or_default();
                metrics
                    .artifact_sync_failures
                    .get_or_create(&PoolLabels {
                        pool: store.pool.clone(),
                        cloud,
                    })
                    .inc();
            }
        }
    }
}

/// The per-store states a status records (none without artifacts).
fn stores_of(status: Option<&ModelDeploymentStatus>) -> &[StoreStatus] {
    status
        .and_then(|s| s.artifacts.as_ref())
        .map(|a| a.stores.as_slice())
        .unwrap_or_default()
}
