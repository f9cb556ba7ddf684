//! Public capacity as it really is (issue #19): the pure pool-capacity tracker.
//!
//! Given what was observed of one pool at one time (replicas that cannot be scheduled and since
//! when, nodes about to be reclaimed), the pool's settings and the tracker's previous state, it
//! decides whether the pool is short (a stockout), which replicas must be re-placed elsewhere
//! (the shortfall, and the replicas on doomed nodes, to be replaced ahead), and why. The clock is
//! a parameter: the operator passes the time of its observation, `simulate` its simulated time.
//!
//! Rules, each with its own tests:
//! - a replica is *stuck* when it has stayed unschedulable longer than the pool allows:
//!   `unschedulableSeconds`, plus `elastic.nodeStartupSeconds` on an elastic pool while the
//!   autoscaler may still bring a node (not when it said it cannot);
//! - one stuck replica makes the pool short; a short pool stays short for `backoffSeconds`
//!   whatever it looks like, then until it has shown no unschedulable replica for
//!   `recoverySeconds` (any unschedulable replica restarts that count);
//! - after a recovery a replica's time counts only from the recovery, so a replica a noisy
//!   observation missed cannot make the pool short again at once;
//! - while short, every replica of the pool that is not scheduled is shortfall, to be re-placed;
//! - a replica on a node with a reclamation signal (see [`signals`]) is doomed, and replaced
//!   elsewhere before the node goes, whether or not the pool is short.

pub mod observed;
pub mod signals;

#[cfg(test)]
mod tests;

use crate::api::{
    AddableCapacity, CapacityType, ComputePoolSpec, PoolShortage, SHORT_CONDITION, StockoutHandling,
};
use crate::planner::{ComponentKey, ComponentRequest, PoolView};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;

/// What the tracker needs of a pool's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub capacity_type: CapacityType,
    /// Node start-up of an elastic pool; `None` for a fixed pool.
    pub node_startup_seconds: Option<u32>,
    pub stockout: StockoutHandling,
}

impl PoolSettings {
    pub fn of(spec: &ComputePoolSpec) -> Self {
        Self {
            capacity_type: spec.capacity_type,
            node_startup_seconds: spec.elastic.as_ref().map(|e| e.node_startup_seconds),
            stockout: spec.stockout.clone().unwrap_or_default(),
        }
    }
}

/// Why a replica of the pool is not running on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingCause {
    /// `PodScheduled=False` with reason `Unschedulable`: on an elastic pool the autoscaler may
    /// still bring a node, so the node start-up is allowed on top of the pool's limit.
    Unschedulable,
    /// The autoscaler said no node is coming (a Karpenter NodeClaim that failed to launch for
    /// insufficient capacity, a cluster-autoscaler `NotTriggerScaleUp`): no start-up grace.
    NoNodeComing,
}

/// One replica of the pool that is not scheduled.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingReplica {
    pub component: ComponentKey,
    /// Since when it has been in this state (the condition's `lastTransitionTime`).
    pub since: Timestamp,
    pub cause: PendingCause,
}

/// One node of the pool and the Skybridge replicas on it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeObservation {
    pub name: String,
    /// The reclamation signal on the node, if any (from [`signals::reclamation_signal`]).
    pub reclamation: Option<signals::Reclamation>,
    /// Replicas on the node, per component.
    pub replicas: BTreeMap<ComponentKey, u32>,
}

/// What was observed of one pool at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolObservation {
    pub at: Timestamp,
    pub pending: Vec<PendingReplica>,
    pub nodes: Vec<NodeObservation>,
}

/// The tracker's memory of one pool between observations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackerState {
    pub shortage: Option<Shortage>,
    /// When the pool last became eligible again; a replica's wait counts from here at the
    /// earliest.
    pub recovered_at: Option<Timestamp>,
}

/// A pool's current stockout.
#[derive(Clone, Debug, PartialEq)]
pub struct Shortage {
    pub since: Timestamp,
    pub backoff_until: Timestamp,
    /// Start of the current run of observations without an unschedulable replica.
    pub clear_since: Option<Timestamp>,
    /// Stuck replicas when the pool became short, for the words.
    pub stuck_at_onset: u32,
}

/// A change of the pool's `Short` state, for an Event and a metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    BecameShort,
    Recovered,
}

/// What the tracker decided for one observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// The state to keep for the next observation.
    pub state: TrackerState,
    pub transition: Option<Transition>,
    /// Replicas per component to re-place on another pool (the pool is short).
    pub shortfall: BTreeMap<ComponentKey, u32>,
    /// Replicas per component on nodes about to be reclaimed, to replace ahead.
    pub doomed: BTreeMap<ComponentKey, u32>,
    /// Nodes about to be reclaimed, with their signal, by name.
    pub reclaiming_nodes: Vec<String>,
    /// When the pool can be eligible again at the earliest, while short.
    pub eligible_not_before: Option<Timestamp>,
    /// One line per decision: why short, why still short, why eligible again, why replaced.
    pub reasons: Vec<String>,
}

impl Assessment {
    pub fn is_short(&self) -> bool {
        self.state.shortage.is_some()
    }

    pub fn shortfall_replicas(&self) -> u32 {
        self.shortfall.values().sum()
    }

    pub fn doomed_replicas(&self) -> u32 {
        self.doomed.values().sum()
    }

    /// The pool's `Short` condition: (status, reason, message).
    pub fn short_condition(&self) -> (&'static str, &'static str, String) {
        match &self.state.shortage {
            Some(_) => ("True", "Stockout", self.reasons.join("; ")),
            None => (
                "False",
                "Schedulable",
                "no replica has stayed unschedulable past the pool's limit".to_string(),
            ),
        }
    }

    /// The condition type the operator writes [`Self::short_condition`] under.
    pub fn condition_type() -> &'static str {
        SHORT_CONDITION
    }

    /// The `status.shortage` field while short.
    pub fn shortage_status(&self) -> Option<PoolShortage> {
        let shortage = self.state.shortage.as_ref()?;
        Some(PoolShortage {
            since: Time(shortage.since),
            backoff_until: Time(shortage.backoff_until),
            shortfall_replicas: self.shortfall_replicas(),
            reason: self.reasons.first().cloned().unwrap_or_default(),
        })
    }
}

fn seconds(n: u32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(n))
}

fn later(a: Timestamp, b: Timestamp) -> Timestamp {
    if a > b { a } else { b }
}

fn plus(at: Timestamp, n: u32) -> Timestamp {
    at.checked_add(seconds(n)).unwrap_or(Timestamp::MAX)
}

/// How long a replica may stay unschedulable in this pool for `cause`.
pub fn allowed_wait(settings: &PoolSettings, cause: PendingCause) -> u32 {
    let grace = match cause {
        PendingCause::Unschedulable => settings.node_startup_seconds.unwrap_or(0),
        PendingCause::NoNodeComing => 0,
    };
    settings
        .stockout
        .unschedulable_seconds
        .saturating_add(grace)
}

/// Decides the pool's state from one observation. Pure: the same inputs give the same output.
pub fn assess(
    settings: &PoolSettings,
    previous: &TrackerState,
    observation: &PoolObservation,
) -> Assessment {
    let at = observation.at;
    let mut reasons = Vec::new();
    // A wait counts from the last recovery at the earliest (see the module's rules).
    let waited = |replica: &PendingReplica| {
        let from = match previous.recovered_at {
            Some(recovered) => later(replica.since, recovered),
            None => replica.since,
        };
        at.duration_since(from)
    };
    let stuck: Vec<&PendingReplica> = observation
        .pending
        .iter()
        .filter(|r| waited(r) >= seconds(allowed_wait(settings, r.cause)))
        .collect();
    let mut state = previous.clone();
    let mut transition = None;
    let stockout = &settings.stockout;
    match state.shortage.as_mut() {
        None => {
            if let Some(first) = stuck.first() {
                let no_node = stuck
                    .iter()
                    .filter(|r| r.cause == PendingCause::NoNodeComing)
                    .count();
                let mut why = format!(
                    "stockout: {} replica(s) unschedulable for more than {}s",
                    stuck.len(),
                    allowed_wait(settings, first.cause)
                        .min(allowed_wait(settings, PendingCause::NoNodeComing))
                );
                if settings.node_startup_seconds.is_some() {
                    why.push_str(&format!(
                        " (elastic pool: {}s node start-up allowed on top, except where the autoscaler said no node is coming: {no_node})",
                        settings.node_startup_seconds.unwrap_or(0)
                    ));
                }
                reasons.push(why);
                state.shortage = Some(Shortage {
                    since: at,
                    backoff_until: plus(at, stockout.backoff_seconds),
                    clear_since: None,
                    stuck_at_onset: stuck.len() as u32,
                });
                state.recovered_at = None;
                transition = Some(Transition::BecameShort);
            }
        }
        Some(shortage) => {
            if observation.pending.is_empty() {
                // The clean run counts from the end of the back-off at the earliest.
                let start = later(shortage.clear_since.unwrap_or(at), shortage.backoff_until);
                shortage.clear_since = Some(shortage.clear_since.unwrap_or(at));
                let eligible_at = plus(start, stockout.recovery_seconds);
                if at >= eligible_at {
                    reasons.push(format!(
                        "recovered: back-off of {}s over and no unschedulable replica for {}s",
                        stockout.backoff_seconds, stockout.recovery_seconds
                    ));
                    state.shortage = None;
                    state.recovered_at = Some(at);
                    transition = Some(Transition::Recovered);
                }
            } else {
                shortage.clear_since = None;
            }
        }
    }
    let eligible_not_before = state.shortage.as_ref().map(|s| {
        let start = later(s.clear_since.unwrap_or(at), s.backoff_until);
        plus(start, stockout.recovery_seconds)
    });
    let mut shortfall = BTreeMap::new();
    if let (Some(shortage), Some(eligible)) = (&state.shortage, eligible_not_before) {
        if transition.is_none() {
            reasons.push(format!(
                "short since {} ({} replica(s) stuck then); eligible again at {} at the earliest: back-off until {}, then {}s without an unschedulable replica",
                shortage.since,
                shortage.stuck_at_onset,
                eligible,
                shortage.backoff_until,
                stockout.recovery_seconds
            ));
        }
        for replica in &observation.pending {
            *shortfall.entry(replica.component.clone()).or_insert(0) += 1;
        }
        if !shortfall.is_empty() {
            reasons.push(format!(
                "shortfall: {} replica(s) to re-place on the next eligible pool",
                shortfall.values().sum::<u32>()
            ));
        }
    }
    let mut doomed = BTreeMap::new();
    let mut reclaiming_nodes = Vec::new();
    for node in &observation.nodes {
        let Some(signal) = &node.reclamation else {
            continue;
        };
        reclaiming_nodes.push(node.name.clone());
        let on_node: u32 = node.replicas.values().sum();
        for (component, &n) in &node.replicas {
            *doomed.entry(component.clone()).or_insert(0) += n;
        }
        reasons.push(format!(
            "node {} is about to be reclaimed ({}): {on_node} replica(s) replaced elsewhere first",
            node.name, signal
        ));
    }
    reclaiming_nodes.sort();
    Assessment {
        state,
        transition,
        shortfall,
        doomed,
        reclaiming_nodes,
        eligible_not_before,
        reasons,
    }
}

/// What an elastic pool's autoscaler can still add on top of its ready nodes: bounded by
/// `spec.capacity.gpu.count` and by `elastic.maxNodes` (nodes of `gpusPerNode`, or of the GPUs
/// per ready node observed). `None` for a fixed pool.
pub fn addable_capacity(
    spec: &ComputePoolSpec,
    ready_nodes: u32,
    ready_gpus: u32,
) -> Option<AddableCapacity> {
    let elastic = spec.elastic.as_ref()?;
    let max_gpus = spec.capacity.gpu.as_ref().map_or(0, |g| g.count);
    let by_capacity = max_gpus.saturating_sub(ready_gpus);
    let nodes = elastic.max_nodes.map(|max| max.saturating_sub(ready_nodes));
    let per_node = elastic
        .gpus_per_node
        .or_else(|| ready_gpus.checked_div(ready_nodes));
    let gpus = match (nodes, per_node) {
        (Some(nodes), Some(per_node)) => by_capacity.min(nodes.saturating_mul(per_node)),
        // A node maximum without a known node size bounds nothing in GPUs but zero nodes.
        (Some(0), None) => 0,
        _ => by_capacity,
    };
    Some(AddableCapacity {
        gpus,
        nodes,
        after_seconds: elastic.node_startup_seconds,
    })
}

/// Puts an assessment into the planner's input: a short pool gets no new replicas, and the
/// shortfall and doomed replicas of each component in that pool are to be placed anew (the
/// planner keeps none of them there).
pub fn apply_to_plan(
    pool: &mut PoolView,
    components: &mut [ComponentRequest],
    assessment: &Assessment,
) {
    if assessment.is_short() {
        pool.short = Some(
            assessment
                .reasons
                .first()
                .cloned()
                .unwrap_or_else(|| "stockout".to_string()),
        );
    }
    for component in components.iter_mut() {
        let lost = assessment
            .shortfall
            .get(&component.key)
            .copied()
            .unwrap_or(0)
            + assessment.doomed.get(&component.key).copied().unwrap_or(0);
        if lost > 0 {
            *component.replace.entry(pool.name.clone()).or_insert(0) += lost;
        }
    }
}
