//! The traffic decision, pure: from what each pool of a component holds now (placed, existing and
//! ready replicas, whether its cluster answers), what the route last said (status), the drain
//! period, the component's data class and the time, to the route's backends with their weights
//! and states, and which pools may lose replicas now.
//!
//! Backends: pools in the component's home cluster share one backend, the component's local
//! `Service` (it selects the replicas of every pool there); every other pool is one
//! `ServiceImport` backend (one export per pool, so that each can be weighted).
//!
//! Rules, in order, for each backend:
//! 1. a sensitive component never has a backend in a public pool: it is left out (`excluded`);
//! 2. its cluster does not answer: `Unreachable`, weight 0 at once; its replicas are kept;
//! 3. a remote backend with replicas about to go (fewer placed than exist: scale-in, failback, a
//!    pool dropped): `Draining`; its weight counts only the replicas that stay (0 when all go);
//!    the replicas are kept until it has been `Draining` at that weight for `drain_seconds`;
//! 4. no replica ready: `Warming`, weight 0;
//! 5. otherwise `Serving`, weighted by its ready replicas.
//!
//! The local Service does not drain: the home cluster removes a terminating pod from the
//! Service's endpoints itself, and the route cannot weight part of a Service.
//!
//! Weights are per mille of the weighted ready replicas (largest remainder, at least 1 for a
//! backend with ready replicas), so they read as shares. When no backend but a draining one has
//! ready replicas, the draining backends keep their weight (a route with nothing to send to
//! fails every request) and their drain does not start.
//!
//! Hysteresis: the route is rewritten when a backend appears, goes or changes state, when a
//! weight crosses zero, or when some backend's share moves by more than [`HYSTERESIS_PER_MILLE`]
//! from what the route says; otherwise the published weights stand, so a pod flapping in a
//! large backend does not rewrite the route. A backend whose last ready replica goes always
//! changes state, so no weight is ever left on a backend with no ready replica.

use crate::api::{BackendKind, BackendState, Cloud, DataClass};
use std::collections::BTreeMap;

/// Weights of a route sum to about this (one per mille of the ready replicas each).
pub const WEIGHT_SCALE: u32 = 1000;

/// A share (per mille of the route's total weight) may drift this far from what the route says
/// before the route is rewritten: 5 percentage points.
pub const HYSTERESIS_PER_MILLE: u32 = 50;

/// One pool of a component, as observed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolObservation {
    /// The `ComputePool`.
    pub pool: String,
    /// Its cluster (see [`cluster_id`]).
    pub cluster: String,
    /// Its cloud.
    pub cloud: Cloud,
    /// Replicas the plan places there now.
    pub placed: u32,
    /// Replicas that exist there now, ready or not (as last seen when its cluster is unreachable).
    pub current: u32,
    /// Of which ready.
    pub ready: u32,
    /// Whether its cluster answers.
    pub reachable: bool,
}

/// What the route last said about one backend: `status.components[].traffic[]`, so that the
/// decision survives restarts. Persist a decision only once its route is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousBackend {
    /// The backend's pool (the home pool for the local Service).
    pub pool: String,
    pub state: BackendState,
    /// When `state` began (seconds since the epoch); for `Draining`, when the drained weight
    /// was first published.
    pub since: i64,
    /// The weight the route carries.
    pub weight: u32,
}

impl PreviousBackend {
    /// The previous state of every backend, from `status.components[].traffic[]`.
    pub fn from_status(status: &[crate::api::TrafficBackendStatus]) -> Vec<PreviousBackend> {
        status
            .iter()
            .map(|b| PreviousBackend {
                pool: b.pool.clone(),
                state: b.state,
                since: b.since.0.as_second(),
                weight: b.weight,
            })
            .collect()
    }
}

/// Everything one traffic decision needs.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficInput<'a> {
    /// The component's data class: `sensitive` never has a public backend.
    pub data_class: DataClass,
    /// The pool whose cluster holds the route (see `TrafficSpec::home_pool`).
    pub home_pool: &'a str,
    /// The home pool's cluster: pools there are served by the local Service.
    pub home_cluster: &'a str,
    /// The component's pools: every pool with placed or existing replicas.
    pub pools: &'a [PoolObservation],
    /// The backends as the route last carried them; empty before the first write.
    pub previous: &'a [PreviousBackend],
    /// Seconds a backend drains at its lowered weight before its replicas go.
    pub drain_seconds: u32,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

/// One backend of the route, decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendDecision {
    /// The backend's pool: the pool for a `ServiceImport`, the home pool for the local Service.
    pub pool: String,
    /// Its cluster.
    pub cluster: String,
    /// The cloud of its pool (for the local Service, public if any pool behind it is public).
    pub cloud: Cloud,
    /// `Service` (local) or `ServiceImport` (a remote pool).
    pub kind: BackendKind,
    /// Ready replicas behind it.
    pub ready: u32,
    /// Its weight in the route.
    pub weight: u32,
    pub state: BackendState,
    /// When `state` began (see [`PreviousBackend::since`]).
    pub since: i64,
    /// Why this state and weight, for people.
    pub reason: String,
}

/// How many replicas one pool must keep now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolHold {
    pub pool: String,
    /// Replicas the pool must keep: the plan's, or, while a drain runs (or its cluster does not
    /// answer), the replicas it has.
    pub keep: u32,
    /// Whether replicas above the plan may be removed now (a drain is over, or none to remove).
    pub released: bool,
}

/// A pool left out of the route, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub pool: String,
    pub reason: String,
}

/// The outcome of one traffic decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficDecision {
    /// The route's backends: the local Service first, then the imports by pool name.
    pub backends: Vec<BackendDecision>,
    /// Whether the route must be written (see the module's hysteresis); when not, `backends`
    /// carry the weights the route already has.
    pub rewrite: bool,
    /// Per pool of the input: how many replicas it must keep now.
    pub holds: Vec<PoolHold>,
    /// Pools left out of the route (residency).
    pub excluded: Vec<Excluded>,
    /// When a running drain ends and the decision changes by itself: decide again then.
    pub next_change_at: Option<i64>,
}

impl TrafficDecision {
    /// The hold of `pool`, if the input had it.
    pub fn hold(&self, pool: &str) -> Option<&PoolHold> {
        self.holds.iter().find(|h| h.pool == pool)
    }

    /// The sum of the route's weights.
    pub fn total_weight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.weight)).sum()
    }
}

/// The cluster a pool lives in, as traffic names it: `local` (the operator's own cluster) or the
/// kubeconfig Secret's `namespace/name` (namespace as written, possibly empty) and key.
pub fn cluster_id(pool: &crate::api::ComputePoolSpec) -> String {
    match pool
        .cluster
        .as_ref()
        .and_then(|c| c.kubeconfig_secret_ref.as_ref())
    {
        None => "local".to_string(),
        Some(secret) => {
            let mut id = format!(
                "{}/{}",
                secret.namespace.as_deref().unwrap_or(""),
                secret.name
            );
            if let Some(key) = &secret.key {
                id.push(':');
                id.push_str(key);
            }
            id
        }
    }
}

/// What one backend is before weights are assigned.
struct Draft {
    pool: String,
    cluster: String,
    cloud: Cloud,
    kind: BackendKind,
    ready: u32,
    /// Ready replicas the weight counts.
    basis: u32,
    state: BackendState,
    reason: String,
    /// Pools behind it (one for an import, the home cluster's for the Service).
    pools: Vec<usize>,
    /// Replicas are about to go (a remote backend with fewer placed than existing).
    shrinking: bool,
}

/// Decides the route of one component. Pure: the same input gives the same decision.
pub fn decide(input: &TrafficInput) -> TrafficDecision {
    let previous: BTreeMap<&str, &PreviousBackend> = input
        .previous
        .iter()
        .map(|p| (p.pool.as_str(), p))
        .collect();
    let mut excluded = Vec::new();
    let mut drafts: Vec<Draft> = Vec::new();
    let mut local: Vec<usize> = Vec::new();

    for (index, pool) in input.pools.iter().enumerate() {
        if !input.data_class.may_reside_in(pool.cloud) {
            excluded.push(Excluded {
                pool: pool.pool.clone(),
                reason: format!(
                    "{} pool: a {} component is never routed there",
                    pool.cloud, input.data_class
                ),
            });
            continue;
        }
        if pool.cluster == input.home_cluster {
            local.push(index);
            continue;
        }
        if pool.placed == 0 && pool.current == 0 {
            continue;
        }
        let shrinking = pool.placed < pool.current;
        let (state, basis, reason) = if !pool.reachable {
            (
                BackendState::Unreachable,
                0,
                "its cluster does not answer: no requests until it does".to_string(),
            )
        } else if shrinking {
            let staying = pool.ready.min(pool.placed);
            let reason = if pool.placed == 0 {
                format!(
                    "its {} replicas are to be removed: no new requests, removed after the drain",
                    pool.current
                )
            } else {
                format!(
                    "{} of its {} replicas are to be removed: weighted by the {} that stay until \
                     the drain ends",
                    pool.current - pool.placed,
                    pool.current,
                    pool.placed
                )
            };
            (BackendState::Draining, staying, reason)
        } else if pool.ready == 0 {
            (
                BackendState::Warming,
                0,
                format!("none of its {} replicas is ready yet", pool.current),
            )
        } else {
            (
                BackendState::Serving,
                pool.ready,
                format!("{} ready replicas", pool.ready),
            )
        };
        drafts.push(Draft {
            pool: pool.pool.clone(),
            cluster: pool.cluster.clone(),
            cloud: pool.cloud,
            kind: BackendKind::ServiceImport,
            ready: pool.ready,
            basis,
            state,
            reason,
            pools: vec![index],
            shrinking,
        });
    }
    drafts.sort_by(|a, b| a.pool.cmp(&b.pool));

    let local_has_replicas = local.iter().any(|&i| {
        let pool = &input.pools[i];
        pool.placed > 0 || pool.current > 0 || pool.ready > 0
    });
    if local_has_replicas {
        let reachable = local.iter().all(|&i| input.pools[i].reachable);
        let ready: u32 = local
            .iter()
            .map(|&i| input.pools[i].ready)
            .fold(0, u32::saturating_add);
        let cloud = if local.iter().any(|&i| input.pools[i].cloud == Cloud::Public) {
            Cloud::Public
        } else {
            Cloud::Private
        };
        let (state, basis, reason) = if !reachable {
            (
                BackendState::Unreachable,
                0,
                "the home cluster does not answer".to_string(),
            )
        } else if ready == 0 {
            (
                BackendState::Warming,
                0,
                "no replica in the home cluster is ready yet".to_string(),
            )
        } else {
            (
                BackendState::Serving,
                ready,
                format!("{ready} ready replicas in the home cluster"),
            )
        };
        drafts.insert(
            0,
            Draft {
                pool: input.home_pool.to_string(),
                cluster: input.home_cluster.to_string(),
                cloud,
                kind: BackendKind::Service,
                ready,
                basis,
                state,
                reason,
                pools: local,
                shrinking: false,
            },
        );
    }

    // Nothing else serves: draining backends keep carrying requests, and do not drain yet.
    let others_serve = drafts.iter().any(|d| d.basis > 0);
    if !others_serve {
        for draft in drafts
            .iter_mut()
            .filter(|d| d.state == BackendState::Draining && d.ready > 0)
        {
            draft.basis = draft.ready;
            draft.reason = format!(
                "{}; kept in the route meanwhile: no other backend has a ready replica",
                draft.reason
            );
        }
    }

    let mut weights = per_mille(&drafts.iter().map(|d| d.basis).collect::<Vec<_>>());
    let rewrite = must_rewrite(&drafts, &weights, &previous);
    if !rewrite {
        // Within the hysteresis: the route keeps the weights it has, and so does the status.
        for (draft, weight) in drafts.iter().zip(weights.iter_mut()) {
            if let Some(p) = previous.get(draft.pool.as_str()) {
                *weight = p.weight;
            }
        }
    }
    let backends: Vec<BackendDecision> = drafts
        .iter()
        .zip(&weights)
        .map(|(draft, &weight)| {
            let since = match previous.get(draft.pool.as_str()) {
                // A drain's clock restarts when its kept weight drops to 0: the replicas go
                // only after `drain_seconds` with no requests sent to them.
                Some(p)
                    if p.state == BackendState::Draining
                        && draft.state == BackendState::Draining =>
                {
                    if p.weight > 0 && weight == 0 {
                        input.now
                    } else {
                        p.since
                    }
                }
                Some(p) if p.state == draft.state => p.since,
                _ => input.now,
            };
            BackendDecision {
                pool: draft.pool.clone(),
                cluster: draft.cluster.clone(),
                cloud: draft.cloud,
                kind: draft.kind,
                ready: draft.ready,
                weight,
                state: draft.state,
                since,
                reason: draft.reason.clone(),
            }
        })
        .collect();

    let mut holds: Vec<PoolHold> = input
        .pools
        .iter()
        .map(|pool| {
            if pool.reachable {
                PoolHold {
                    pool: pool.pool.clone(),
                    keep: pool.placed,
                    released: true,
                }
            } else {
                // Nothing is removed from a cluster that does not answer (it may still serve).
                PoolHold {
                    pool: pool.pool.clone(),
                    keep: pool.placed.max(pool.current),
                    released: pool.current <= pool.placed,
                }
            }
        })
        .collect();
    let mut next_change_at: Option<i64> = None;
    for (draft, backend) in drafts.iter().zip(&backends) {
        for &index in &draft.pools {
            let pool = &input.pools[index];
            let hold = &mut holds[index];
            if backend.state == BackendState::Unreachable || !draft.shrinking {
                continue;
            }
            // Released only once the drained weight has stood for the whole period: all
            // replicas going need weight 0 published before and now.
            let drained = backend.state == BackendState::Draining
                && previous.get(draft.pool.as_str()).is_some_and(|p| {
                    p.state == BackendState::Draining
                        && input.now.saturating_sub(p.since) >= i64::from(input.drain_seconds)
                        && (pool.placed > 0 || (p.weight == 0 && backend.weight == 0))
                });
            if drained {
                hold.keep = pool.placed;
                hold.released = true;
            } else {
                hold.keep = pool.current;
                hold.released = false;
                let ends = backend.since.saturating_add(i64::from(input.drain_seconds));
                next_change_at = Some(next_change_at.map_or(ends, |t| t.min(ends)));
            }
        }
    }

    TrafficDecision {
        backends,
        rewrite,
        holds,
        excluded,
        next_change_at,
    }
}

/// Whether the route must be written to carry these backends (see the module's hysteresis).
fn must_rewrite(
    drafts: &[Draft],
    weights: &[u32],
    previous: &BTreeMap<&str, &PreviousBackend>,
) -> bool {
    if drafts.len() != previous.len() {
        return true;
    }
    let total_now: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let total_before: u64 = previous.values().map(|p| u64::from(p.weight)).sum();
    for (draft, &weight) in drafts.iter().zip(weights) {
        let Some(p) = previous.get(draft.pool.as_str()) else {
            return true;
        };
        if p.state != draft.state || (p.weight == 0) != (weight == 0) {
            return true;
        }
        let moved = share(weight, total_now).abs_diff(share(p.weight, total_before));
        if moved > u64::from(HYSTERESIS_PER_MILLE) {
            return true;
        }
    }
    false
}

/// `weight` as per mille of `total`.
fn share(weight: u32, total: u64) -> u64 {
    (u64::from(weight) * u64::from(WEIGHT_SCALE))
        .checked_div(total)
        .unwrap_or(0)
}

/// Integer weights proportional to `basis`, summing to [`WEIGHT_SCALE`] (largest remainder),
/// except that every non-zero basis gets at least 1; all zero when every basis is.
pub fn per_mille(basis: &[u32]) -> Vec<u32> {
    let total: u64 = basis.iter().map(|&b| u64::from(b)).sum();
    if total == 0 {
        return vec![0; basis.len()];
    }
    let scale = u64::from(WEIGHT_SCALE);
    let mut weights: Vec<u32> = basis
        .iter()
        .map(|&b| (u64::from(b) * scale / total) as u32)
        .collect();
    let assigned: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut order: Vec<usize> = (0..basis.len()).collect();
    // Largest remainder first; ties to the earlier backend, for determinism.
    order.sort_by_key(|&i| std::cmp::Reverse(u64::from(basis[i]) * scale % total));
    for &i in order.iter().take((scale - assigned) as usize) {
        weights[i] += 1;
    }
    for (weight, &b) in weights.iter_mut().zip(basis) {
        if b > 0 && *weight == 0 {
            *weight = 1;
        }
    }
    weights
}

/// A backend of a route about to be written, as the residency guard sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteBackend<'a> {
    /// `Service` or `ServiceImport`.
    pub kind: &'a str,
    /// Its name.
    pub name: &'a str,
}

/// Why a route must not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The route of a sensitive component references a backend in a public pool.
    #[error(
        "refusing to route sensitive component {component} to {kind} {name}: it is in public pool {pool}"
    )]
    PublicBackend {
        component: String,
        kind: String,
        name: String,
        pool: String,
    },
    /// The route references a backend the decision does not know, so its cloud is unknown.
    #[error(
        "refusing to route sensitive component {component} to {kind} {name}: no decided backend has that name"
    )]
    UnknownBackend {
        component: String,
        kind: String,
        name: String,
    },
}

/// The residency check run again just before a route is written: a sensitive component's route
/// may reference only backends that `known` (name, kind, pool and cloud of each decided backend)
/// places in a private pool. Any other data class passes.
pub fn guard<'a>(
    component: &str,
    data_class: DataClass,
    route: impl IntoIterator<Item = RouteBackend<'a>>,
    known: &[(String, BackendKind, String, Cloud)],
) -> Result<(), GuardError> {
    if data_class.may_reside_in(Cloud::Public) {
        return Ok(());
    }
    for backend in route {
        let Some((_, _, pool, cloud)) = known
            .iter()
            .find(|(name, kind, _, _)| name == backend.name && kind.as_str() == backend.kind)
        else {
            return Err(GuardError::UnknownBackend {
                component: component.to_string(),
                kind: backend.kind.to_string(),
                name: backend.name.to_string(),
            });
        };
        if !data_class.may_reside_in(*cloud) {
            return Err(GuardError::PublicBackend {
                component: component.to_string(),
                kind: backend.kind.to_string(),
                name: backend.name.to_string(),
                pool: pool.clone(),
            });
        }
    }
    Ok(())
}

/// The traffic `plan` shows: the route as it would be once every placed replica is ready (no
/// drains, every cluster answering).
pub fn planned(
    data_class: DataClass,
    home_pool: &str,
    home_cluster: &str,
    placements: &[(String, String, Cloud, u32)],
) -> TrafficDecision {
    let pools: Vec<PoolObservation> = placements
        .iter()
        .map(|(pool, cluster, cloud, replicas)| PoolObservation {
            pool: pool.clone(),
            cluster: cluster.clone(),
            cloud: *cloud,
            placed: *replicas,
            current: *replicas,
            ready: *replicas,
            reachable: true,
        })
        .collect();
    decide(&TrafficInput {
        data_class,
        home_pool,
        home_cluster,
        pools: &pools,
        previous: &[],
        drain_seconds: 0,
        now: 0,
    })
}

#[cfg(test)]
mod tests;
