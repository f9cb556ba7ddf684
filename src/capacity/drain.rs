//! Traffic drained from replicas on nodes about to be reclaimed (issue #19), pure: which pods
//! leave their Services' endpoints, when, and why.
//!
//! Every Service the operator builds selects [`SERVING_LABEL`]`=true` on top of the component's
//! labels; a workload's selector does not (and its pod template sets the label to `true`). So
//! relabelling a pod `false` takes it out of every Service's endpoints (the component's Service,
//! a pool's exported Service) while its ReplicaSet still owns it: the pod keeps running, is not
//! replaced, and goes with its node.
//!
//! The rules, each with its tests:
//! - a replica on a doomed node leaves the endpoints once enough ready replacements serve
//!   elsewhere: at most as many leave as keep the component's ready, serving replicas at or
//!   above what it wants (`ready elsewhere + doomed still serving >= desired`); so when the
//!   replacements are all ready, every doomed replica leaves, and while they start, the doomed
//!   replicas serve. Serving on a doomed node beats serving nothing: a doomed replica loses the
//!   requests in flight when its node goes, a missing one loses every request meanwhile;
//! - the last serving replicas of a component never leave while no ready replica serves
//!   elsewhere, whatever it wants;
//! - a doomed replica that is not ready serves nothing: it leaves at once when the replacements
//!   are all ready (it must not start taking traffic on a node about to go), else it stays;
//! - a replica already taken out is the first to stay out (no churn between pods), and one on
//!   a node whose reclamation was cancelled (taint removed) is put back at once;
//! - a pod without the label (made from a template older than the label) gets `true`, so that
//!   the Services' selector finds it;
//! - with what the component wants unknown (its deployment not read), nothing leaves.
//!
//! Nothing here places a replica: the sensitive rule is the planner's, untouched.

use crate::planner::ComponentKey;
use std::collections::{BTreeMap, BTreeSet};

/// Pod label every Service the operator builds selects on (`true`); `false` takes the pod out
/// of the endpoints without releasing it from its workload.
pub const SERVING_LABEL: &str = "skybridge.io/serving";
pub const SERVING: &str = "true";
pub const NOT_SERVING: &str = "false";

/// One replica of the pool bound to one of its nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundReplica {
    pub namespace: String,
    pub name: String,
    pub component: ComponentKey,
    pub node: String,
    /// Its node is about to be reclaimed.
    pub doomed: bool,
    /// `Ready=True`.
    pub ready: bool,
    /// The value of [`SERVING_LABEL`] (`None`: absent).
    pub serving_label: Option<String>,
}

impl BoundReplica {
    /// Whether its Services select it now.
    pub fn selected(&self) -> bool {
        self.serving_label.as_deref() == Some(SERVING)
    }

    /// Ready and selected: it takes requests.
    pub fn serving(&self) -> bool {
        self.ready && self.selected()
    }
}

/// What the rest of the estate offers one component: its ready, serving replicas on nodes not
/// about to go, in every pool (this one included), and what it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elsewhere {
    pub ready: u32,
    /// Replicas the component wants in all (`None`: not known).
    pub desired: Option<u32>,
}

/// A label to write on one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relabel {
    pub namespace: String,
    pub name: String,
    pub component: ComponentKey,
    /// `true`: back in the endpoints; `false`: out.
    pub serving: bool,
}

/// Why an Event is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainNoteKind {
    /// Doomed replicas left the endpoints.
    Draining,
    /// Doomed replicas keep serving: not enough ready replacements yet.
    KeptServing,
    /// Replicas taken out are back (their node's reclamation was cancelled).
    BackInService,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainNote {
    pub component: ComponentKey,
    pub kind: DrainNoteKind,
    pub message: String,
}

/// What the decision remembers between observations: (node, component) pairs already told as
/// kept serving, so that a replacement slow to start is told once per node, not every period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainMemory {
    pub told_kept: BTreeSet<(String, ComponentKey)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainDecision {
    pub relabel: Vec<Relabel>,
    pub notes: Vec<DrainNote>,
    pub memory: DrainMemory,
}

/// Ready replicas per component serving on healthy nodes among `replicas`: this pool's part of
/// [`Elsewhere::ready`].
pub fn serving_on_healthy(replicas: &[BoundReplica]) -> BTreeMap<ComponentKey, u32> {
    let mut out = BTreeMap::new();
    for replica in replicas.iter().filter(|r| !r.doomed && r.serving()) {
        *out.entry(replica.component.clone()).or_insert(0) += 1;
    }
    out
}

/// Replicas per component taken out of the endpoints on nodes no longer about to go (their
/// reclamation was cancelled): [`decide`] puts them back, and until their label is written no
/// workload of the component may scale in (one of the replicas still serving could be the one
/// removed, and the endpoints would drop below what the component wants).
pub fn awaiting_put_back(replicas: &[BoundReplica]) -> BTreeMap<ComponentKey, u32> {
    let mut out = BTreeMap::new();
    for replica in replicas
        .iter()
        .filter(|r| !r.doomed && r.serving_label.as_deref() == Some(NOT_SERVING))
    {
        *out.entry(replica.component.clone()).or_insert(0) += 1;
    }
    out
}

/// Replicas per component bound to the pool's nodes, doomed or not: what its workloads run.
pub fn bound(replicas: &[BoundReplica]) -> BTreeMap<ComponentKey, u32> {
    let mut out = BTreeMap::new();
    for replica in replicas {
        *out.entry(replica.component.clone()).or_insert(0) += 1;
    }
    out
}

/// How many of a component's `doomed_ready` ready, doomed replicas may leave the endpoints.
pub fn may_leave(doomed_ready: u32, elsewhere: Elsewhere) -> u32 {
    let Some(desired) = elsewhere.desired else {
        return 0;
    };
    if elsewhere.ready == 0 {
        // Serving on a doomed node beats serving nothing.
        return 0;
    }
    elsewhere
        .ready
        .saturating_add(doomed_ready)
        .saturating_sub(desired)
        .min(doomed_ready)
}

/// Decides the serving label of every replica of one pool (see the module's rules).
/// `elsewhere` says, per component, what serves on healthy nodes in every pool and what it
/// wants; `previous` is the last decision's memory for this pool.
pub fn decide(
    replicas: &[BoundReplica],
    elsewhere: impl Fn(&ComponentKey) -> Elsewhere,
    previous: &DrainMemory,
) -> DrainDecision {
    let mut by_component: BTreeMap<&ComponentKey, Vec<&BoundReplica>> = BTreeMap::new();
    for replica in replicas {
        by_component
            .entry(&replica.component)
            .or_default()
            .push(replica);
    }
    let mut decision = DrainDecision::default();
    for (component, replicas) in by_component {
        let others = elsewhere(component);
        // Ready doomed replicas, those already out first (they stay out), then by name.
        let mut doomed_ready: Vec<&BoundReplica> = replicas
            .iter()
            .copied()
            .filter(|r| r.doomed && r.ready)
            .collect();
        doomed_ready.sort_by_key(|r| (r.selected(), r.namespace.clone(), r.name.clone()));
        let leave = may_leave(doomed_ready.len() as u32, others) as usize;
        let all_replaced = leave == doomed_ready.len()
            && others.ready > 0
            && others.desired.is_some_and(|d| others.ready >= d);
        let out: BTreeSet<(&str, &str)> = doomed_ready
            .iter()
            .take(leave)
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            .chain(
                replicas
                    .iter()
                    .filter(|r| r.doomed && !r.ready && all_replaced)
                    .map(|r| (r.namespace.as_str(), r.name.as_str())),
            )
            .collect();
        let mut taken_out = 0u32;
        let mut put_back = 0u32;
        let mut nodes_out = BTreeSet::new();
        for replica in &replicas {
            let wanted_out = out.contains(&(replica.namespace.as_str(), replica.name.as_str()));
            let label = replica.serving_label.as_deref();
            let change = if wanted_out {
                (label != Some(NOT_SERVING)).then_some(false)
            } else {
                (label != Some(SERVING)).then_some(true)
            };
            let Some(serving) = change else {
                continue;
            };
            if serving {
                if label == Some(NOT_SERVING) {
                    put_back += 1;
                }
            } else {
                taken_out += 1;
                nodes_out.insert(replica.node.as_str());
            }
            decision.relabel.push(Relabel {
                namespace: replica.namespace.clone(),
                name: replica.name.clone(),
                component: component.clone(),
                serving,
            });
        }
        let wanted = others
            .desired
            .map_or_else(|| "unknown".to_string(), |d| d.to_string());
        if taken_out > 0 {
            decision.notes.push(DrainNote {
                component: component.clone(),
                kind: DrainNoteKind::Draining,
                message: format!(
                    "component {}: {taken_out} replica(s) on nodes about to be reclaimed ({}) leave the Service's endpoints: {} ready replica(s) serve on other nodes ({wanted} wanted); they keep running until their node goes",
                    component.component,
                    nodes_out.into_iter().collect::<Vec<_>>().join(", "),
                    others.ready
                ),
            });
        }
        if put_back > 0 {
            decision.notes.push(DrainNote {
                component: component.clone(),
                kind: DrainNoteKind::BackInService,
                message: format!(
                    "component {}: {put_back} replica(s) taken out of the Service's endpoints are back: their node is no longer about to be reclaimed, or a replacement stopped serving",
                    component.component
                ),
            });
        }
        // Doomed replicas kept serving, per node, told once per (node, component).
        let mut kept: BTreeMap<&str, u32> = BTreeMap::new();
        for replica in doomed_ready.iter().skip(leave) {
            *kept.entry(replica.node.as_str()).or_insert(0) += 1;
        }
        for (node, n) in kept {
            let key = (node.to_string(), component.clone());
            if !previous.told_kept.contains(&key) {
                decision.notes.push(DrainNote {
                    component: component.clone(),
                    kind: DrainNoteKind::KeptServing,
                    message: format!(
                        "component {}: {n} replica(s) on node {node}, about to be reclaimed, keep serving: {} ready replica(s) serve on other nodes ({wanted} wanted); they leave the Service's endpoints once replacements are ready, or serve until the node goes",
                        component.component, others.ready
                    ),
                });
            }
            decision.memory.told_kept.insert(key);
        }
    }
    // Remember only what is still doomed and kept.
    decision.memory.told_kept.extend(
        previous
            .told_kept
            .iter()
            .filter(|(node, component)| {
                replicas
                    .iter()
                    .any(|r| r.doomed && &r.node == node && &r.component == component)
            })
            .cloned(),
    );
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(component: &str) -> ComponentKey {
        ComponentKey {
            namespace: "shop".into(),
            deployment: "recs".into(),
            component: component.into(),
        }
    }

    fn replica(
        name: &str,
        node: &str,
        doomed: bool,
        ready: bool,
        label: Option<&str>,
    ) -> BoundReplica {
        BoundReplica {
            namespace: "burst".into(),
            name: name.into(),
            component: key("ranker"),
            node: node.into(),
            doomed,
            ready,
            serving_label: label.map(str::to_string),
        }
    }

    fn elsewhere(ready: u32, desired: u32) -> impl Fn(&ComponentKey) -> Elsewhere {
        move |_| Elsewhere {
            ready,
            desired: Some(desired),
        }
    }

    fn out_of(decision: &DrainDecision) -> Vec<&str> {
        decision
            .relabel
            .iter()
            .filter(|r| !r.serving)
            .map(|r| r.name.as_str())
            .collect()
    }

    fn kinds(decision: &DrainDecision) -> Vec<DrainNoteKind> {
        decision.notes.iter().map(|n| n.kind).collect()
    }

    /// 2 doomed replicas on spot-a, 2 healthy on spot-b, all selected.
    fn pool() -> Vec<BoundReplica> {
        vec![
            replica("r-0", "spot-a", true, true, Some(SERVING)),
            replica("r-1", "spot-a", true, true, Some(SERVING)),
            replica("r-2", "spot-b", false, true, Some(SERVING)),
            replica("r-3", "spot-b", false, true, Some(SERVING)),
        ]
    }

    #[test]
    fn doomed_replicas_keep_serving_while_their_replacements_start_and_it_is_told_once() {
        // 4 wanted, only the 2 healthy ones ready elsewhere: nobody leaves.
        let decision = decide(&pool(), elsewhere(2, 4), &DrainMemory::default());
        assert!(decision.relabel.is_empty(), "{decision:?}");
        assert_eq!(kinds(&decision), [DrainNoteKind::KeptServing]);
        assert!(decision.notes[0].message.contains("spot-a"));
        // The next period, still waiting: not told again.
        let again = decide(&pool(), elsewhere(2, 4), &decision.memory);
        assert!(again.notes.is_empty() && again.relabel.is_empty());
        assert_eq!(again.memory, decision.memory);
    }

    #[test]
    fn doomed_replicas_leave_one_by_one_as_replacements_become_ready() {
        // One replacement ready (3 elsewhere of 4): one doomed replica may leave.
        let decision = decide(&pool(), elsewhere(3, 4), &DrainMemory::default());
        assert_eq!(out_of(&decision), ["r-0"]);
        assert_eq!(
            kinds(&decision),
            [DrainNoteKind::Draining, DrainNoteKind::KeptServing]
        );
        // All replacements ready: both leave; r-0, already out, is not written again.
        let mut live = pool();
        live[0].serving_label = Some(NOT_SERVING.into());
        let decision = decide(&live, elsewhere(4, 4), &decision.memory);
        assert_eq!(out_of(&decision), ["r-1"]);
        assert_eq!(decision.relabel.len(), 1);
        assert_eq!(kinds(&decision), [DrainNoteKind::Draining]);
    }

    #[test]
    fn replicas_out_on_a_node_no_longer_doomed_await_their_put_back() {
        let mut live = pool();
        // r-0 drained, then its node's reclamation cancelled; r-1 drained on a doomed node.
        live[0].serving_label = Some(NOT_SERVING.into());
        live[0].doomed = false;
        live[1].serving_label = Some(NOT_SERVING.into());
        let component = live[0].component.clone();
        assert_eq!(
            awaiting_put_back(&live),
            BTreeMap::from([(component.clone(), 1)])
        );
        assert_eq!(
            bound(&live),
            BTreeMap::from([(component, live.len() as u32)])
        );
        // Back in service: nothing awaits.
        live[0].serving_label = Some(SERVING.into());
        assert!(awaiting_put_back(&live).is_empty());
    }

    #[test]
    fn the_replica_already_out_is_the_one_that_stays_out() {
        let mut live = pool();
        live[1].serving_label = Some(NOT_SERVING.into());
        let decision = decide(&live, elsewhere(3, 4), &DrainMemory::default());
        assert!(decision.relabel.is_empty(), "no churn: {decision:?}");
    }

    #[test]
    fn the_last_serving_replicas_never_leave_without_a_ready_replica_elsewhere() {
        // Every replica doomed, the component wants 1 but nothing serves elsewhere.
        let live = vec![
            replica("r-0", "spot-a", true, true, Some(SERVING)),
            replica("r-1", "spot-a", true, true, Some(SERVING)),
        ];
        let decision = decide(&live, elsewhere(0, 1), &DrainMemory::default());
        assert!(out_of(&decision).is_empty());
        // Wanting nothing at all does not change that.
        let decision = decide(&live, elsewhere(0, 0), &DrainMemory::default());
        assert!(out_of(&decision).is_empty());
    }

    #[test]
    fn with_what_the_component_wants_unknown_nothing_leaves() {
        let decision = decide(
            &pool(),
            |_| Elsewhere {
                ready: 9,
                desired: None,
            },
            &DrainMemory::default(),
        );
        assert!(out_of(&decision).is_empty());
    }

    #[test]
    fn a_cancelled_reclamation_puts_the_replicas_back() {
        // The taint is gone: r-0 and r-1 are on a healthy node again, still labelled out.
        let mut live = pool();
        for r in &mut live[..2] {
            r.doomed = false;
            r.serving_label = Some(NOT_SERVING.into());
        }
        let memory = DrainMemory {
            told_kept: BTreeSet::from([("spot-a".to_string(), key("ranker"))]),
        };
        let decision = decide(&live, elsewhere(2, 4), &memory);
        let back: Vec<&str> = decision
            .relabel
            .iter()
            .filter(|r| r.serving)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(back, ["r-0", "r-1"]);
        assert_eq!(kinds(&decision), [DrainNoteKind::BackInService]);
        assert!(
            decision.memory.told_kept.is_empty(),
            "the node is forgotten"
        );
    }

    #[test]
    fn a_not_ready_doomed_replica_leaves_only_when_all_replacements_serve() {
        let mut live = pool();
        live[1].ready = false;
        let decision = decide(&live, elsewhere(3, 4), &DrainMemory::default());
        // One ready doomed replica, 3 elsewhere of 4: 0 may leave; the unready one stays.
        assert!(out_of(&decision).is_empty(), "{decision:?}");
        let decision = decide(&live, elsewhere(4, 4), &DrainMemory::default());
        assert_eq!(out_of(&decision), ["r-0", "r-1"]);
    }

    #[test]
    fn a_pod_without_the_label_is_given_it() {
        let mut live = pool();
        live[2].serving_label = None;
        live[3].serving_label = Some("yes".into());
        let decision = decide(&live, elsewhere(2, 4), &DrainMemory::default());
        let back: Vec<(&str, bool)> = decision
            .relabel
            .iter()
            .map(|r| (r.name.as_str(), r.serving))
            .collect();
        assert_eq!(back, [("r-2", true), ("r-3", true)]);
        assert!(!kinds(&decision).contains(&DrainNoteKind::BackInService));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever runs where: serving replicas (ready elsewhere plus doomed ones left in) never
        /// fall below what the component wants unless they already were, never to zero while
        /// some doomed replica is ready, and healthy replicas are never taken out.
        #[test]
        fn draining_never_leaves_a_component_under_served(
            nodes in proptest::collection::vec((any::<bool>(), 0u32..4, 0u32..3, any::<bool>()), 1..5),
            ready_on_other_pools in 0u32..6,
            desired in 0u32..10,
        ) {
            let mut live = Vec::new();
            for (i, &(doomed, ready, unready, out)) in nodes.iter().enumerate() {
                for j in 0..ready + unready {
                    live.push(replica(
                        &format!("r-{i}-{j}"),
                        &format!("n-{i}"),
                        doomed,
                        j < ready,
                        Some(if out { NOT_SERVING } else { SERVING }),
                    ));
                }
            }
            // Healthy replicas taken out by an earlier decision are put back: count them as
            // serving elsewhere, as the next observation will.
            let healthy_ready = live.iter().filter(|r| !r.doomed && r.ready).count() as u32;
            let ready = healthy_ready + ready_on_other_pools;
            let decision = decide(&live, elsewhere(ready, desired), &DrainMemory::default());
            let out_after = |r: &BoundReplica| {
                decision
                    .relabel
                    .iter()
                    .find(|c| c.name == r.name)
                    .map_or(!r.selected(), |c| !c.serving)
            };
            prop_assert!(live.iter().filter(|r| !r.doomed).all(|r| !out_after(r)));
            let doomed_ready = live.iter().filter(|r| r.doomed && r.ready).count() as u32;
            let doomed_serving = live
                .iter()
                .filter(|r| r.doomed && r.ready && !out_after(r))
                .count() as u32;
            prop_assert!(ready + doomed_serving >= desired.min(ready + doomed_ready));
            if ready == 0 {
                prop_assert_eq!(doomed_serving, doomed_ready);
            }
            // Deciding again from the result changes nothing.
            let settled: Vec<BoundReplica> = live
                .iter()
                .map(|r| BoundReplica {
                    serving_label: Some(if out_after(r) { NOT_SERVING } else { SERVING }.into()),
                    ..r.clone()
                })
                .collect();
            let again = decide(&settled, elsewhere(ready, desired), &decision.memory);
            prop_assert!(again.relabel.is_empty(), "{:?}", again);
        }
    }
}
