//! Where a deployment's model must be, and what that means for placement and status: pure.
//!
//! Every pool that may serve a deployment reads the model from its *own* artifact store (so a
//! pool's credentials only ever go to that pool's cluster). A pool's store either is the source
//! store (same endpoint and bucket as the model's `source.uri`: pods read the source directly,
//! and the operator verifies the source's manifest against its listing), or holds a copy at
//! `<store prefix>/<source bucket>/<source prefix>`, made by a background sync.
//!
//! Modes (`spec.artifacts.mode`):
//! - `Eager`: every candidate store (a pool some component may use) is synced at once.
//! - `OnBurst`: private stores are synced at once; a public store only once the plan, computed
//!   as if every pool held the model, wants replicas there (or it already holds a copy, or
//!   replicas run there), so that storage is spent only on bursts.
//!
//! Availability: a **public** pool takes replicas only once its store holds the verified model
//! (once verified, a later failed re-verification shows `Failed` but does not evict running
//! replicas). The planner and the burst controller decide as if every store held the model;
//! then the replicas placed on a pool that does not hold it yet are *held*: taken off that pool
//! and reported unplaced, with a reason naming the store and its state, instead of starting pods
//! whose fetch would fail. Holding after planning, rather than hiding the pool from the planner,
//! keeps the planner's priorities intact (a component limited to private pools outranks the
//! existing replicas of others) and tells `OnBurst` exactly which public stores a burst needs.
//! Private pools are never held on sync state (they read where the model comes from, or get it
//! at once); a pool without an artifact store is held, since its pods would have nowhere
//! verified to fetch from.
//!
//! Residency: a model is as sensitive as the most sensitive component of every deployment that
//! reads it, however its source is spelled (`estate::model_identity`). A sensitive model is never
//! scheduled for a public store: the store is reported `Forbidden` (and
//! `artifacts::residency::check` would refuse anyway). A public pool whose store is a private
//! pool's store, or uses its credentials, is `Forbidden` for every model.

use crate::api::{
    ArtifactMode, ArtifactsStatus, Cloud, ComputePool, DataClass, ModelDeployment, StoreState,
    StoreStatus,
};
use crate::artifacts::{StoreLocation, residency};
use crate::estate::model_identity::source_location;
use crate::estate::{Estate, ModelClasses, StoreIdentity, private_store_named_by};
use crate::planner::ComponentPlan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where the model's verified copy for a pool lives, and how a pod fetches it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFetch {
    /// Image with the `skybridge` binary (the operator's own image) for the init container.
    pub image: String,
    /// `s3://bucket/prefix` of the model in the pool's store.
    pub uri: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Expected `sha256:` digest; the init container fails closed on any other.
    pub digest: Option<String>,
    /// Secret in the target namespace with `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`.
    pub credentials_secret: Option<String>,
}

/// How the model reaches one candidate pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The pool's store is the source store: pods read `source.uri` directly.
    Source,
    /// The pool's store gets a copy at this path under its prefix.
    Copy { model_path: String },
    /// Residency forbids the model in this pool's store.
    Forbidden(String),
    /// The pool has no `artifactStore`.
    NoStore,
}

/// A pool some component of the deployment may use, and how the model gets there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub pool: String,
    pub cloud: Cloud,
    pub route: Route,
}

/// A verified copy of the model in one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    pub bytes: u64,
    pub at: Timestamp,
}

/// What the background syncer knows about the copy for one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyView {
    /// A sync (or, for the source, a verification) is running now.
    pub running: bool,
    /// Outcome of the last finished attempt.
    pub last: Option<Result<Verified, String>>,
    /// The last successful verification, kept through later failures.
    pub previous: Option<Verified>,
}

impl CopyView {
    pub fn verified(&self) -> Option<&Verified> {
        self.last.as_ref().and_then(|r| r.as_ref().ok())
    }
}

/// `<source bucket>/<source prefix>`: where a copy of `uri` lives under a store's prefix. The
/// bucket is part of it so that models of different source buckets never share a path.
pub fn model_path(uri: &str) -> String {
    uri.trim_start_matches("s3://")
        .trim_matches('/')
        .to_string()
}

/// The model's data class: the strictest component of every deployment of the estate that reads
/// the same model, however its source is spelled (see `estate::model_identity`), since they
/// share every copy.
pub fn model_class(md: &ModelDeployment, estate: &Estate) -> DataClass {
    ModelClasses::of(estate).class_of(md)
}

/// The pools some component of `md` may use (its own data class admitted, within its `pools`),
/// with the route of the model to each. Sorted by pool name.
pub fn candidates(
    md: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    class: DataClass,
) -> Vec<Candidate> {
    let source = &md.spec.model.source;
    let source_store = source_location(md, pools).store;
    let copy_path = model_path(&source.uri);
    let mut out = Vec::new();
    for (name, pool) in pools {
        let usable = md.spec.components.iter().any(|c| {
            pool.spec.admits(c.data_class)
                && c.pools
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(name))
        });
        if !usable && *name != source.pool {
            continue;
        }
        let route = match &pool.spec.artifact_store {
            None => Route::NoStore,
            Some(store) => {
                // The same bucket of the same server, however the endpoint is spelled.
                let same_store = *name == source.pool || StoreIdentity::of(store) == source_store;
                // A public pool naming a private store or its credentials gets nothing through
                // it, whatever the model's class (validation reports it too).
                match residency::check(class, pool.spec.cloud) {
                    Err(err) => Route::Forbidden(err.to_string()),
                    Ok(()) => match private_store_named_by(pool, pools) {
                        Some(why) => Route::Forbidden(why),
                        None if same_store => Route::Source,
                        None => Route::Copy {
                            model_path: copy_path.clone(),
                        },
                    },
                }
            }
        };
        if !usable && route != Route::Source {
            continue;
        }
        out.push(Candidate {
            pool: name.clone(),
            cloud: pool.spec.cloud,
            route,
        });
    }
    out
}

/// Pools the planner must not use for `md` now, with the reason. See the module docs.
pub fn held(
    candidates: &[Candidate],
    views: &BTreeMap<String, CopyView>,
) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    for c in candidates {
        let reason = match &c.route {
            Route::NoStore => Some(format!(
                "{}: no artifactStore, so pods there cannot fetch a verified model",
                c.pool
            )),
            // Excluded by the planner's residency rule, or (a public pool naming a private
            // store) by its `Ready=False`, and held by `unfetchable` should it be planned.
            Route::Forbidden(_) => None,
            Route::Source | Route::Copy { .. } if c.cloud == Cloud::Public => {
                let view = views.get(&c.pool).cloned().unwrap_or_default();
                match (&view.last, view.running) {
                    (Some(Ok(_)), _) => None,
                    // Verified before (or, after a restart, recorded as verified): replicas
                    // there keep running while a re-sync runs or fails.
                    _ if view.previous.is_some() => None,
                    (Some(Err(message)), _) => Some(format!(
                        "{}: held until its store holds the verified model (sync failed: {message})",
                        c.pool
                    )),
                    (None, true) => Some(format!(
                        "{}: held until its store holds the verified model (syncing)",
                        c.pool
                    )),
                    (None, false) => Some(format!(
                        "{}: held until its store holds the verified model (not synced yet)",
                        c.pool
                    )),
                }
            }
            Route::Source | Route::Copy { .. } => None,
        };
        if let Some(reason) = reason {
            held.insert(c.pool.clone(), reason);
        }
    }
    held
}

/// Pools of the plan whose pods could not fetch a verified model now, with the reason: every
/// one while the model's digest is unknown (a new deployment whose source is not verified yet:
/// a brief wait, and no rollout when the digest arrives), and any the model has no route to.
pub fn unfetchable(
    planned: &BTreeSet<String>,
    candidates: &[Candidate],
    digest: Option<&str>,
) -> BTreeMap<String, String> {
    planned
        .iter()
        .filter_map(|pool| {
            let route = candidates
                .iter()
                .find(|c| c.pool == *pool)
                .map(|c| &c.route);
            let reason = match (route, digest) {
                (None | Some(Route::NoStore | Route::Forbidden(_)), _) => {
                    format!("{pool}: the model has no route to this pool's store")
                }
                (_, None) => format!(
                    "{pool}: held until the model's digest is known (source not verified yet)"
                ),
                _ => return None,
            };
            Some((pool.clone(), reason))
        })
        .collect()
}

/// Takes the replicas a plan put on held pools off them: they count as unplaced, with the
/// hold's reason, and their cost (`replica_cost(component, pool)`) no longer counts.
pub fn hold(
    plans: &mut [ComponentPlan],
    held: &BTreeMap<String, String>,
    replica_cost: impl Fn(&str, &str) -> f64,
) {
    for plan in plans.iter_mut() {
        let mut taken = 0;
        for placement in plan.placements.iter_mut().filter(|p| p.replicas > 0) {
            let Some(reason) = held.get(&placement.pool) else {
                continue;
            };
            taken += placement.replicas;
            plan.cost_per_hour -=
                f64::from(placement.replicas) * replica_cost(&plan.key.component, &placement.pool);
            placement.replicas = 0;
            if !plan.reasons.contains(reason) {
                plan.reasons.push(reason.clone());
            }
        }
        if taken > 0 {
            plan.placements.retain(|p| p.replicas > 0);
            plan.unplaced += taken;
            plan.cost_per_hour = plan.cost_per_hour.max(0.0);
        }
    }
}

/// Which candidate pools' copies should be kept synced now (the syncer de-duplicates and
/// applies backoff). `wanted`: pools the plan places replicas in (before holding); `serving`:
/// pools with replicas now.
pub fn to_sync(
    mode: ArtifactMode,
    candidates: &[Candidate],
    views: &BTreeMap<String, CopyView>,
    wanted: &BTreeSet<String>,
    serving: &BTreeSet<String>,
) -> Vec<String> {
    candidates
        .iter()
        .filter(|c| matches!(c.route, Route::Source | Route::Copy { .. }))
        .filter(|c| {
            mode == ArtifactMode::Eager
                || c.cloud == Cloud::Private
                || matches!(c.route, Route::Source)
                || wanted.contains(&c.pool)
                || serving.contains(&c.pool)
                || views
                    .get(&c.pool)
                    .is_some_and(|v| v.last.is_some() || v.previous.is_some())
        })
        .map(|c| c.pool.clone())
        .collect()
}

/// Pools with replicas in `plans`.
pub fn serving_pools(plans: &[ComponentPlan]) -> BTreeSet<String> {
    plans
        .iter()
        .flat_map(|p| &p.placements)
        .filter(|p| p.replicas > 0)
        .map(|p| p.pool.clone())
        .collect()
}

/// Views of the copies status recorded as `Synced`, for pools the syncer knows nothing about
/// yet (after an operator restart): verified before, so replicas there stay while the syncer
/// verifies them again.
pub fn recorded_views(status: Option<&ArtifactsStatus>) -> BTreeMap<String, CopyView> {
    let Some(status) = status else {
        return BTreeMap::new();
    };
    let Some(digest) = &status.digest else {
        return BTreeMap::new();
    };
    status
        .stores
        .iter()
        .filter(|s| s.state == StoreState::Synced)
        .filter_map(|s| {
            let at = s.verified_at.as_ref()?.0;
            Some((
                s.pool.clone(),
                CopyView {
                    running: false,
                    last: None,
                    previous: Some(Verified {
                        digest: digest.clone(),
                        bytes: s.bytes,
                        at,
                    }),
                },
            ))
        })
        .collect()
}

/// The digest every pod must verify: the source's when verified, else that of a verified copy,
/// else the last verified one, else the one status recorded (so that an operator restart
/// neither drops the digest from running pods nor rolls them).
pub fn model_digest(
    candidates: &[Candidate],
    views: &BTreeMap<String, CopyView>,
    recorded: Option<&str>,
) -> Option<String> {
    let found = |route: fn(&Route) -> bool, pick: fn(&CopyView) -> Option<&Verified>| {
        candidates
            .iter()
            .filter(|c| route(&c.route))
            .find_map(|c| views.get(&c.pool).and_then(pick))
            .map(|v| v.digest.clone())
    };
    let source = |r: &Route| matches!(r, Route::Source);
    let copy = |r: &Route| matches!(r, Route::Copy { .. });
    found(source, CopyView::verified)
        .or_else(|| found(copy, CopyView::verified))
        .or_else(|| found(source, |v| v.previous.as_ref()))
        .or_else(|| found(copy, |v| v.previous.as_ref()))
        .or_else(|| recorded.map(str::to_string))
}

/// How pods of `pool` fetch the model: from the pool's own store (the source location when the
/// store is the source's, else the copy), with the expected digest and the pool's credentials
/// Secret (copied into that pool's cluster only). `None` when the pool has no usable route.
pub fn fetch_for(
    md: &ModelDeployment,
    candidate: &Candidate,
    pool: &ComputePool,
    image: &str,
    digest: Option<&str>,
    credentials_secret: Option<String>,
) -> Option<ModelFetch> {
    let store = pool.spec.artifact_store.as_ref()?;
    let uri = match &candidate.route {
        Route::Source => md.spec.model.source.uri.trim_end_matches('/').to_string(),
        Route::Copy { model_path } => StoreLocation::from_artifact_store(
            store,
            model_path,
            crate::artifacts::Credentials::DefaultChain,
        )
        .ok()?
        .uri(),
        Route::Forbidden(_) | Route::NoStore => return None,
    };
    Some(ModelFetch {
        image: image.to_string(),
        uri,
        endpoint: store.endpoint.clone(),
        region: store.region.clone(),
        path_style: store.path_style,
        digest: digest.map(str::to_string),
        credentials_secret,
    })
}

/// Status of the model across stores, for `status.artifacts` and the `ArtifactsReady` condition.
pub struct Report {
    pub digest: Option<String>,
    pub stores: Vec<StoreStatus>,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// Per-store state: `Synced` once verified (a background re-verification does not flip it),
/// `Syncing` while the first copy runs, `Failed` with the error (also while the retry runs),
/// `Forbidden` by residency.
/// Stores not needed yet (`OnBurst`, no burst) are left out. `ArtifactsReady` holds when every
/// pool serving replicas holds the verified model of the current digest (and, with no replicas,
/// when the source is verified).
pub fn report(
    candidates: &[Candidate],
    views: &BTreeMap<String, CopyView>,
    serving: &BTreeSet<String>,
    digest: Option<String>,
) -> Report {
    let mut stores = Vec::new();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut syncing = false;
    let mut failed = false;
    for c in candidates {
        let view = views.get(&c.pool);
        let status = |state, message: Option<String>, verified: Option<&Verified>| StoreStatus {
            pool: c.pool.clone(),
            state,
            bytes: verified.map_or(0, |v| v.bytes),
            verified_at: verified.map(|v| Time(v.at)),
            message,
        };
        let stale = |v: &Verified| digest.as_ref().is_some_and(|d| *d != v.digest);
        let entry = match &c.route {
            Route::Forbidden(why) => {
                notes.push(format!("{}: forbidden: {why}", c.pool));
                Some(status(StoreState::Forbidden, Some(why.clone()), None))
            }
            Route::NoStore => {
                let why = "the pool has no artifactStore".to_string();
                if serving.contains(&c.pool) {
                    problems.push(format!("{}: {why}", c.pool));
                    failed = true;
                }
                Some(status(StoreState::Failed, Some(why), None))
            }
            Route::Source | Route::Copy { .. } => match view {
                None => None,
                Some(v) => match (&v.last, v.running) {
                    (Some(Ok(verified)), _) if !stale(verified) => {
                        Some(status(StoreState::Synced, None, Some(verified)))
                    }
                    // A retry in progress stays `Failed` until it succeeds: status and Events
                    // do not flap with every attempt.
                    (Some(Err(message)), _) => {
                        failed = true;
                        problems.push(format!("{}: {message}", c.pool));
                        Some(status(StoreState::Failed, Some(message.clone()), None))
                    }
                    (None, _) if v.previous.as_ref().is_some_and(|p| !stale(p)) => {
                        Some(status(StoreState::Synced, None, v.previous.as_ref()))
                    }
                    (None, false) => None,
                    _ => {
                        syncing = true;
                        problems.push(format!("{}: syncing", c.pool));
                        Some(status(StoreState::Syncing, None, None))
                    }
                },
            },
        };
        stores.extend(entry);
    }
    let holds = |pool: &str| {
        stores
            .iter()
            .any(|s| s.pool == pool && s.state == StoreState::Synced)
    };
    let source_ok = candidates
        .iter()
        .filter(|c| c.route == Route::Source)
        .any(|c| holds(&c.pool));
    let ready = if serving.is_empty() {
        source_ok
    } else {
        serving.iter().all(|p| holds(p))
    };
    let (reason, mut message) = if ready {
        let serving: Vec<&str> = serving.iter().map(String::as_str).collect();
        (
            "Verified".to_string(),
            format!(
                "model {} verified in the store of every serving pool ({})",
                digest.as_deref().unwrap_or("?"),
                if serving.is_empty() {
                    "none serving; source verified".to_string()
                } else {
                    serving.join(", ")
                }
            ),
        )
    } else if failed {
        ("SyncFailed".to_string(), problems.join("; "))
    } else if syncing {
        ("Syncing".to_string(), problems.join("; "))
    } else {
        (
            "NotVerified".to_string(),
            "the model is not yet verified in every serving pool's store".to_string(),
        )
    };
    if ready && !problems.is_empty() {
        message = format!("{message}; {}", problems.join("; "));
    }
    if !notes.is_empty() {
        message = format!("{message}; {}", notes.join("; "));
    }
    Report {
        digest,
        stores,
        ready,
        reason,
        message,
    }
}

/// Events for store states that changed since the previous status: a store becoming
/// `Forbidden` or `Failed` (Warning), or `Synced` (Normal).
pub fn store_events(
    before: &[StoreStatus],
    after: &[StoreStatus],
) -> Vec<(bool, &'static str, String)> {
    let mut events = Vec::new();
    for store in after {
        let previous = before.iter().find(|s| s.pool == store.pool);
        if previous.map(|s| s.state) == Some(store.state)
            && previous.map(|s| &s.message) == Some(&store.message)
        {
            continue;
        }
        let message = store.message.clone().unwrap_or_default();
        match store.state {
            StoreState::Forbidden => events.push((
                true,
                "ArtifactForbidden",
                format!("model not copied to the store of {}: {message}", store.pool),
            )),
            StoreState::Failed => events.push((
                true,
                "ArtifactSyncFailed",
                format!("store of {}: {message}", store.pool),
            )),
            StoreState::Synced if previous.map(|s| s.state) != Some(StoreState::Synced) => events
                .push((
                    false,
                    "ArtifactSynced",
                    format!(
                        "store of {} holds the verified model ({} bytes)",
                        store.pool, store.bytes
                    ),
                )),
            _ => {}
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{ComponentKey, Placement};

    fn pools() -> BTreeMap<String, Arc<ComputePool>> {
        let yaml = r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc1}
spec:
  cloud: private
  provider: onprem
  region: fra
  capacity: {gpu: {type: nvidia-l4, count: 8}}
  artifactStore: {bucket: models, endpoint: "http://minio:9000", pathStyle: true}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc2}
spec:
  cloud: private
  provider: onprem
  region: fra
  capacity: {gpu: {type: nvidia-l4, count: 8}}
  artifactStore: {bucket: models, endpoint: "http://minio:9000", pathStyle: true}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: aws}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  capacity: {gpu: {type: nvidia-l4, count: 8}}
  artifactStore: {bucket: models-euc1, prefix: mirror}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: gcp}
spec:
  cloud: public
  provider: gcp
  region: europe-west4
  capacity: {gpu: {type: nvidia-l4, count: 8}}
"#;
        serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|d| {
                let p: ComputePool = serde::Deserialize::deserialize(d).unwrap();
                (kube::ResourceExt::name_any(&p), Arc::new(p))
            })
            .collect()
    }

    fn md(classes: &[&str], mode: &str) -> ModelDeployment {
        let components: String = classes
            .iter()
            .enumerate()
            .map(|(i, class)| {
                format!(
                    "    - {{name: c{i}, dataClass: {class}, image: x, resources: {{}}, replicas: {{min: 1, max: 2}}}}\n"
                )
            })
            .collect();
        serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: m, namespace: shop}}
spec:
  model: {{source: {{uri: "s3://models/team/deepfm/v3", pool: dc1}}, version: "3"}}
  artifacts: {{mode: {mode}}}
  components:
{components}"#
        ))
        .unwrap()
    }

    fn ok(digest: &str) -> CopyView {
        CopyView {
            running: false,
            last: Some(Ok(Verified {
                digest: digest.into(),
                bytes: 42,
                at: "2026-11-28T12:00:00Z".parse().unwrap(),
            })),
            previous: None,
        }
    }

    fn plan(placements: &[(&str, u32)], unplaced: u32) -> ComponentPlan {
        ComponentPlan {
            key: ComponentKey {
                namespace: "shop".into(),
                deployment: "m".into(),
                component: "c0".into(),
            },
            data_class: DataClass::Internal,
            desired_replicas: placements.iter().map(|p| p.1).sum::<u32>() + unplaced,
            placements: placements
                .iter()
                .map(|(pool, n)| Placement {
                    pool: pool.to_string(),
                    cloud: Cloud::Private,
                    replicas: *n,
                    reason: "r".into(),
                })
                .collect(),
            unplaced,
            reasons: vec![],
            cost_per_hour: 0.0,
        }
    }

    #[test]
    fn routes_source_same_store_copy_and_no_store() {
        let pools = pools();
        let md = md(&["internal"], "Eager");
        let c = candidates(&md, &pools, DataClass::Internal);
        let routes: BTreeMap<&str, &Route> =
            c.iter().map(|c| (c.pool.as_str(), &c.route)).collect();
        assert_eq!(routes["dc1"], &Route::Source);
        // Same endpoint and bucket as the source: read in place, never copied onto itself.
        assert_eq!(routes["dc2"], &Route::Source);
        assert_eq!(
            routes["aws"],
            &Route::Copy {
                model_path: "models/team/deepfm/v3".into()
            }
        );
        assert_eq!(routes["gcp"], &Route::NoStore);
    }

    #[test]
    fn a_sensitive_component_forbids_every_public_store_of_the_model() {
        let pools = pools();
        let md = md(&["sensitive", "internal"], "Eager");
        let class = model_class(&md, &estate_of(&pools, [&md]));
        assert_eq!(class, DataClass::Sensitive);
        let c = candidates(&md, &pools, class);
        let aws = c.iter().find(|c| c.pool == "aws").unwrap();
        assert!(matches!(&aws.route, Route::Forbidden(m) if m.contains("sensitive")));
        // Never scheduled, whatever the mode and the plan.
        for mode in [ArtifactMode::Eager, ArtifactMode::OnBurst] {
            let wanted = BTreeSet::from(["aws".to_string()]);
            let pools = to_sync(mode, &c, &BTreeMap::new(), &wanted, &wanted);
            assert!(!pools.contains(&"aws".to_string()), "{pools:?}");
        }
        let r = report(&c, &BTreeMap::new(), &BTreeSet::new(), None);
        let aws = r.stores.iter().find(|s| s.pool == "aws").unwrap();
        assert_eq!(aws.state, StoreState::Forbidden);
        assert!(r.message.contains("aws: forbidden"), "{}", r.message);
    }

    #[test]
    fn another_deployment_of_the_same_source_makes_the_model_sensitive() {
        let pools = pools();
        let internal = md(&["internal"], "Eager");
        let mut sensitive = md(&["sensitive"], "Eager");
        sensitive.metadata.name = Some("fraud".into());
        assert_eq!(
            model_class(&internal, &estate_of(&pools, [&internal])),
            DataClass::Internal
        );
        assert_eq!(
            model_class(&internal, &estate_of(&pools, [&internal, &sensitive])),
            DataClass::Sensitive
        );
    }

    /// A deployment `name` in `namespace` reading `uri` from the store of `pool`, with one
    /// internal component pinned to `pins`.
    fn reader(
        namespace: &str,
        name: &str,
        uri: &str,
        pool: &str,
        pins: &[&str],
    ) -> ModelDeployment {
        let mut md = md(&["internal"], "Eager");
        md.metadata.namespace = Some(namespace.into());
        md.metadata.name = Some(name.into());
        md.spec.model.source.uri = uri.into();
        md.spec.model.source.pool = pool.into();
        md.spec.components[0].pools = Some(pins.iter().map(|p| p.to_string()).collect());
        md
    }

    fn estate_of<'a>(
        pools: &BTreeMap<String, Arc<ComputePool>>,
        deployments: impl IntoIterator<Item = &'a ModelDeployment>,
    ) -> Estate {
        Estate {
            pools: pools.clone(),
            policies: BTreeMap::new(),
            deployments: deployments
                .into_iter()
                .map(|d| (Estate::key_of(d), Arc::new(d.clone())))
                .collect(),
        }
    }

    /// Issue #18: a second deployment, in another namespace, naming a sensitive model with
    /// another spelling must not get a route to a public store.
    #[test]
    fn a_sensitive_model_spelled_otherwise_in_another_namespace_gets_no_public_store() {
        let pools = pools();
        let sensitive = md(&["sensitive"], "Eager"); // shop/m, s3://models/team/deepfm/v3 via dc1
        for (uri, pool) in [
            ("s3://models/team/deepfm/v3/", "dc1"),
            ("s3://models/team//deepfm/v3", "dc1"),
            // The same store (endpoint and bucket) through another pool.
            ("s3://models/team/deepfm/v3", "dc2"),
            // A parent prefix holds the sensitive model's objects too.
            ("s3://models/team", "dc2"),
        ] {
            let other = reader("ads", "copycat", uri, pool, &["aws"]);
            let estate = estate_of(&pools, [&sensitive, &other]);
            let class = model_class(&other, &estate);
            assert_eq!(class, DataClass::Sensitive, "{uri} via {pool}");
            let c = candidates(&other, &pools, class);
            let aws = c.iter().find(|c| c.pool == "aws").expect("aws is pinned");
            assert!(
                matches!(&aws.route, Route::Forbidden(m) if m.contains("sensitive")),
                "{uri} via {pool}: {aws:?}"
            );
            let everything = BTreeSet::from(["aws".to_string()]);
            for mode in [ArtifactMode::Eager, ArtifactMode::OnBurst] {
                let synced = to_sync(mode, &c, &BTreeMap::new(), &everything, &everything);
                assert!(!synced.contains(&"aws".to_string()), "{uri}: {synced:?}");
            }
        }
        // A sibling model in the same bucket is not the sensitive one.
        let sibling = reader(
            "ads",
            "sibling",
            "s3://models/team/deepfm/v30",
            "dc1",
            &["aws"],
        );
        let estate = estate_of(&pools, [&sensitive, &sibling]);
        assert_eq!(model_class(&sibling, &estate), DataClass::Internal);
    }

    /// The operator's copy of a sensitive model in another private store is the same model.
    #[test]
    fn a_private_copy_of_a_sensitive_model_is_the_sensitive_model() {
        let mut pools = pools();
        let dc3: ComputePool = serde_yaml_ng::from_str(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc3}
spec:
  cloud: private
  provider: onprem
  region: ber
  capacity: {gpu: {type: nvidia-l4, count: 8}}
  artifactStore: {bucket: mirror, endpoint: "http://ceph.dc3:7480", prefix: copies/}
"#,
        )
        .unwrap();
        pools.insert("dc3".into(), Arc::new(dc3));
        let sensitive = md(&["sensitive"], "Eager");
        // Where the operator keeps the sensitive model's copy in dc3's store.
        let copy = reader(
            "ads",
            "copycat",
            "s3://mirror/copies/models/team/deepfm/v3",
            "dc3",
            &["aws"],
        );
        let estate = estate_of(&pools, [&sensitive, &copy]);
        assert_eq!(model_class(&copy, &estate), DataClass::Sensitive);
        let c = candidates(&copy, &pools, model_class(&copy, &estate));
        assert!(
            c.iter()
                .any(|c| c.pool == "aws" && matches!(c.route, Route::Forbidden(_)))
        );
    }

    /// Issue #18: a public pool naming a private store, or its credentials Secret, gets no route
    /// at all, even for a public model.
    #[test]
    fn a_public_pool_naming_a_private_store_or_its_credentials_gets_no_route() {
        let with = |store: &str| -> BTreeMap<String, Arc<ComputePool>> {
            let mut pools = pools();
            let mut dc1 = (*pools["dc1"]).clone();
            dc1.spec
                .artifact_store
                .as_mut()
                .unwrap()
                .credentials_secret_ref = Some(crate::api::SecretRef {
                name: "dc1-store".into(),
                namespace: None,
            });
            pools.insert("dc1".into(), Arc::new(dc1));
            let mut aws = (*pools["aws"]).clone();
            aws.spec.artifact_store = Some(serde_yaml_ng::from_str(store).unwrap());
            pools.insert("aws".into(), Arc::new(aws));
            pools
        };
        let md = md(&["public"], "Eager");
        for store in [
            // The private store, spelled otherwise.
            r#"{bucket: models, endpoint: "http://MINIO:9000/", pathStyle: true, credentialsSecretRef: {name: aws-store}}"#,
            // A bucket of its own, with the private store's keys.
            r#"{bucket: models-euc1, credentialsSecretRef: {name: dc1-store}}"#,
        ] {
            let pools = with(store);
            let c = candidates(&md, &pools, DataClass::Public);
            let aws = c.iter().find(|c| c.pool == "aws").unwrap();
            assert!(
                matches!(&aws.route, Route::Forbidden(m) if m.contains("private ComputePool \"dc1\"")),
                "{store}: {aws:?}"
            );
            assert!(
                !to_sync(
                    ArtifactMode::Eager,
                    &c,
                    &BTreeMap::new(),
                    &BTreeSet::new(),
                    &BTreeSet::new()
                )
                .contains(&"aws".to_string())
            );
            let planned = BTreeSet::from(["aws".to_string()]);
            assert!(unfetchable(&planned, &c, Some("sha256:aa")).contains_key("aws"));
        }
        // Its own store and keys: a copy as usual.
        let pools = with(r#"{bucket: models-euc1, credentialsSecretRef: {name: aws-store}}"#);
        let c = candidates(&md, &pools, DataClass::Public);
        let aws = c.iter().find(|c| c.pool == "aws").unwrap();
        assert!(matches!(aws.route, Route::Copy { .. }), "{aws:?}");
    }

    #[test]
    fn public_pools_are_held_until_verified_private_never() {
        let pools = pools();
        let md = md(&["internal"], "Eager");
        let c = candidates(&md, &pools, DataClass::Internal);
        let running = CopyView {
            running: true,
            ..CopyView::default()
        };
        let views = BTreeMap::from([
            ("aws".to_string(), running),
            ("dc2".to_string(), CopyView::default()),
        ]);
        let h = held(&c, &views);
        assert!(h["aws"].contains("syncing"), "{h:?}");
        assert!(h["gcp"].contains("no artifactStore"));
        assert!(!h.contains_key("dc1") && !h.contains_key("dc2"));

        let mut failed = CopyView {
            running: false,
            last: Some(Err("S3 GetObject: HTTP 500".into())),
            previous: None,
        };
        let h = held(&c, &BTreeMap::from([("aws".to_string(), failed.clone())]));
        assert!(h["aws"].contains("sync failed: S3 GetObject"), "{h:?}");
        // Verified before: a failed re-sync does not evict the replicas running there.
        failed.previous = ok("sha256:aa").verified().cloned();
        let h = held(&c, &BTreeMap::from([("aws".to_string(), failed)]));
        assert!(!h.contains_key("aws"), "{h:?}");

        // Verified, even while re-verifying: available.
        let mut verified = ok("sha256:aa");
        verified.running = true;
        let h = held(&c, &BTreeMap::from([("aws".to_string(), verified)]));
        assert!(!h.contains_key("aws"));
    }

    #[test]
    fn eager_syncs_every_candidate_on_burst_only_public_pools_the_plan_wants() {
        let pools = pools();
        let eager = md(&["internal"], "Eager");
        let c = candidates(&eager, &pools, DataClass::Internal);
        let none = BTreeSet::new();
        assert_eq!(
            to_sync(ArtifactMode::Eager, &c, &BTreeMap::new(), &none, &none),
            vec!["aws", "dc1", "dc2"]
        );
        assert_eq!(
            to_sync(ArtifactMode::OnBurst, &c, &BTreeMap::new(), &none, &none),
            vec!["dc1", "dc2"]
        );
        let wanted = BTreeSet::from(["aws".to_string()]);
        assert_eq!(
            to_sync(ArtifactMode::OnBurst, &c, &BTreeMap::new(), &wanted, &none),
            vec!["aws", "dc1", "dc2"]
        );
        // Once copied, a public store is kept verified even when the burst is over.
        let views = BTreeMap::from([("aws".to_string(), ok("sha256:aa"))]);
        assert_eq!(
            to_sync(ArtifactMode::OnBurst, &c, &views, &none, &none),
            vec!["aws", "dc1", "dc2"]
        );
    }

    #[test]
    fn ready_only_when_every_serving_store_holds_the_current_digest() {
        let pools = pools();
        let md = md(&["internal"], "Eager");
        let c = candidates(&md, &pools, DataClass::Internal);
        let serving = BTreeSet::from(["dc1".to_string(), "aws".to_string()]);
        let syncing = CopyView {
            running: true,
            ..CopyView::default()
        };
        let mut views = BTreeMap::from([
            ("dc1".to_string(), ok("sha256:new")),
            ("aws".to_string(), syncing),
        ]);
        let r = report(&c, &views, &serving, model_digest(&c, &views, None));
        assert!(!r.ready);
        assert_eq!(r.reason, "Syncing");
        assert_eq!(r.digest.as_deref(), Some("sha256:new"));

        views.insert(
            "aws".into(),
            CopyView {
                running: false,
                last: Some(Err("no manifest".into())),
                previous: None,
            },
        );
        let r = report(&c, &views, &serving, model_digest(&c, &views, None));
        assert_eq!(r.reason, "SyncFailed");
        assert!(r.message.contains("aws: no manifest"), "{}", r.message);
        let aws = r.stores.iter().find(|s| s.pool == "aws").unwrap();
        assert_eq!(
            (aws.state, aws.message.as_deref()),
            (StoreState::Failed, Some("no manifest"))
        );

        // A copy of an older model does not count.
        views.insert("aws".into(), ok("sha256:old"));
        let r = report(&c, &views, &serving, model_digest(&c, &views, None));
        assert!(!r.ready);
        views.insert("aws".into(), ok("sha256:new"));
        let r = report(&c, &views, &serving, model_digest(&c, &views, None));
        assert!(r.ready, "{}", r.message);
        assert_eq!(r.reason, "Verified");
        let aws = r.stores.iter().find(|s| s.pool == "aws").unwrap();
        assert_eq!((aws.state, aws.bytes), (StoreState::Synced, 42));
        assert!(aws.verified_at.is_some());
        // dc2 has no view yet (not started): left out; gcp has no store: reported.
        assert!(!r.stores.iter().any(|s| s.pool == "dc2"));
        assert!(
            r.stores
                .iter()
                .any(|s| s.pool == "gcp" && s.state == StoreState::Failed)
        );
    }

    #[test]
    fn replicas_on_held_pools_become_unplaced_with_the_reason() {
        let mut plans = vec![plan(&[("dc1", 2), ("aws", 3)], 1), plan(&[("dc1", 1)], 0)];
        plans[0].cost_per_hour = 2.0 * 0.3 + 3.0 * 0.9;
        let h = BTreeMap::from([("aws".to_string(), "aws: held (syncing)".to_string())]);
        assert_eq!(
            serving_pools(&plans),
            BTreeSet::from(["aws".to_string(), "dc1".to_string()])
        );
        hold(&mut plans, &h, |component, pool| {
            assert_eq!(component, "c0");
            if pool == "aws" { 0.9 } else { 0.3 }
        });
        assert_eq!(plans[0].unplaced, 4);
        assert_eq!(plans[0].desired_replicas, 6);
        assert_eq!(plans[0].placements.len(), 1);
        assert_eq!(plans[0].placements[0].pool, "dc1");
        assert!((plans[0].cost_per_hour - 0.6).abs() < 1e-9);
        assert_eq!(plans[0].reasons, vec!["aws: held (syncing)"]);
        assert_eq!(plans[1].unplaced, 0);
        assert!(plans[1].reasons.is_empty());
        assert_eq!(serving_pools(&plans), BTreeSet::from(["dc1".to_string()]));
    }

    #[test]
    fn the_digest_survives_failures_and_restarts_and_is_needed_to_start_pods() {
        let pools = pools();
        let md = md(&["internal"], "Eager");
        let c = candidates(&md, &pools, DataClass::Internal);
        let failing = CopyView {
            running: true,
            last: Some(Err("HTTP 503".into())),
            previous: ok("sha256:old").verified().cloned(),
        };
        let views = BTreeMap::from([
            ("dc1".to_string(), failing),
            ("aws".to_string(), ok("sha256:copy")),
        ]);
        // A verified copy outranks an older verification of the source.
        assert_eq!(
            model_digest(&c, &views, None).as_deref(),
            Some("sha256:copy")
        );
        let views = BTreeMap::from([("dc1".to_string(), ok("sha256:src"))]);
        assert_eq!(
            model_digest(&c, &views, Some("sha256:rec")).as_deref(),
            Some("sha256:src")
        );
        // After a restart nothing is verified yet: status's digest keeps pods as they are.
        assert_eq!(
            model_digest(&c, &BTreeMap::new(), Some("sha256:rec")).as_deref(),
            Some("sha256:rec")
        );
        let planned = BTreeSet::from(["dc1".to_string(), "gcp".to_string()]);
        let u = unfetchable(&planned, &c, Some("sha256:rec"));
        assert_eq!(u.keys().collect::<Vec<_>>(), vec!["gcp"]);
        let u = unfetchable(&planned, &c, None);
        assert!(u["dc1"].contains("digest is known"), "{u:?}");
        assert!(u["gcp"].contains("no route"), "{u:?}");
    }

    #[test]
    fn after_a_restart_recorded_copies_keep_their_replicas_until_verified_again() {
        let pools = pools();
        let md = md(&["internal"], "Eager");
        let c = candidates(&md, &pools, DataClass::Internal);
        let before = report(
            &c,
            &BTreeMap::from([
                ("aws".to_string(), ok("sha256:aa")),
                ("dc1".to_string(), ok("sha256:aa")),
            ]),
            &BTreeSet::from(["aws".to_string()]),
            Some("sha256:aa".into()),
        );
        let status = ArtifactsStatus {
            digest: before.digest.clone(),
            stores: before.stores.clone(),
        };
        let views = recorded_views(Some(&status));
        assert!(!held(&c, &views).contains_key("aws"));
        let after = report(
            &c,
            &views,
            &BTreeSet::from(["aws".to_string()]),
            model_digest(&c, &views, status.digest.as_deref()),
        );
        assert_eq!(after.stores, before.stores, "status unchanged by a restart");
        assert!(after.ready);
        // And it is verified again at once, whatever the mode.
        let none = BTreeSet::new();
        assert!(
            to_sync(ArtifactMode::OnBurst, &c, &views, &none, &none).contains(&"aws".to_string())
        );
        assert!(recorded_views(None).is_empty());
    }

    #[test]
    fn pods_fetch_from_their_own_store_with_the_digest() {
        let pools = pools();
        let md = md(&["internal"], "Eager");
        let c = candidates(&md, &pools, DataClass::Internal);
        let find = |name: &str| c.iter().find(|c| c.pool == name).unwrap();
        let aws = fetch_for(
            &md,
            find("aws"),
            &pools["aws"],
            "skybridge:1",
            Some("sha256:aa"),
            Some("m-store-aws".into()),
        )
        .unwrap();
        assert_eq!(aws.uri, "s3://models-euc1/mirror/models/team/deepfm/v3");
        assert_eq!(aws.endpoint, None);
        assert_eq!(aws.digest.as_deref(), Some("sha256:aa"));
        assert_eq!(aws.credentials_secret.as_deref(), Some("m-store-aws"));
        let dc2 = fetch_for(&md, find("dc2"), &pools["dc2"], "skybridge:1", None, None).unwrap();
        assert_eq!(dc2.uri, "s3://models/team/deepfm/v3");
        assert_eq!(dc2.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(dc2.path_style);
        assert!(fetch_for(&md, find("gcp"), &pools["gcp"], "skybridge:1", None, None).is_none());
    }

    #[test]
    fn events_fire_on_changes_only() {
        let forbidden = StoreStatus {
            pool: "aws".into(),
            state: StoreState::Forbidden,
            bytes: 0,
            verified_at: None,
            message: Some("residency".into()),
        };
        let events = store_events(&[], std::slice::from_ref(&forbidden));
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].0, events[0].1), (true, "ArtifactForbidden"));
        assert!(
            store_events(
                std::slice::from_ref(&forbidden),
                std::slice::from_ref(&forbidden)
            )
            .is_empty()
        );
        let synced = StoreStatus {
            state: StoreState::Synced,
            message: None,
            bytes: 7,
            ..forbidden.clone()
        };
        assert_eq!(
            store_events(&[forbidden], std::slice::from_ref(&synced))[0].1,
            "ArtifactSynced"
        );
    }
}
