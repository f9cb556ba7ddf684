//! Replicas stranded by a partition: in a pool whose cluster stopped answering. Pure: what to
//! report and do about them, from the previous report, what was placed, which pools answer and
//! the new plan.
//!
//! While a cluster is unreachable its workloads are left alone: in a partition between the hub
//! and a member they are very likely still serving, and deleting them on recovery would kill
//! warm replicas at the worst moment. Their replicas are re-placed elsewhere as usual. When the
//! cluster answers again, each stranded workload is:
//! - adopted when the plan places at least as many replicas there (the same object is applied:
//!   never deleted and re-created);
//! - otherwise scaled down, step by step, to what the plan places there, keeping as many of its
//!   replicas as the component still lacks ready elsewhere (make before break); at zero the
//!   ordinary sweep removes it.

use crate::api::{ModelDeploymentStatus, StrandedAction, StrandedReplicas};
use crate::planner::ComponentPlan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a resolved entry (adopted, or scaled in to what the plan wants) stays in status, so
/// that whoever looks after a partition sees what was done.
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(3600);

/// A (component, pool).
pub type Key = (String, String);

/// Replicas and ready replicas per (component, pool).
pub type Placed = BTreeMap<Key, (u32, u32)>;

/// Everything the decision depends on.
pub struct StrandedInput<'a> {
    /// The entries last reported (or decided).
    pub previous: &'a [StrandedReplicas],
    /// Replicas and ready replicas per (component, pool) as last placed and observed.
    pub placed_before: &'a Placed,
    /// Pools that exist now, with `Some(why)` for those whose cluster does not answer.
    pub pools: &'a BTreeMap<String, Option<String>>,
    /// The plan of this reconcile.
    pub plans: &'a [ComponentPlan],
    /// Ready replicas per (component, pool) of the plan, as observed in this reconcile.
    pub ready: &'a BTreeMap<Key, u32>,
    /// (component, pool)s whose workload is known not to exist (deleted behind the operator's
    /// back): nothing is stranded there any more.
    pub gone: &'a BTreeSet<Key>,
    pub now: Timestamp,
}

/// What to report and do.
#[derive(Debug, Default, PartialEq)]
pub struct StrandedOutcome {
    /// The entries to report.
    pub entries: Vec<StrandedReplicas>,
    /// Workloads of the plan to apply with more replicas than it places (covering replacements
    /// not ready yet), by (component, pool).
    pub hold: BTreeMap<Key, u32>,
    /// Workloads outside the plan to scale to this many replicas (and not delete).
    pub scale: BTreeMap<Key, u32>,
    /// Workloads outside the plan the sweep must not delete.
    pub protect: BTreeSet<Key>,
}

impl StrandedOutcome {
    /// Entries that still need something: left alone, or not yet scaled to the plan.
    pub fn unresolved(&self) -> impl Iterator<Item = &StrandedReplicas> {
        self.entries.iter().filter(|e| !resolved(e))
    }
}

/// Whether an entry needs nothing more: adopted, or scaled in as far as the plan wants.
pub fn resolved(entry: &StrandedReplicas) -> bool {
    match entry.action {
        StrandedAction::LeftAlone => false,
        StrandedAction::Adopted => true,
        StrandedAction::ScaledIn => entry.replicas <= entry.planned_replicas,
    }
}

/// The stranded replicas after this reconcile, and what to do about them.
pub fn decide(input: StrandedInput<'_>) -> StrandedOutcome {
    let planned: BTreeMap<Key, u32> = input
        .plans
        .iter()
        .flat_map(|plan| {
            plan.placements
                .iter()
                .filter(|p| p.replicas > 0)
                .map(|p| ((plan.key.component.clone(), p.pool.clone()), p.replicas))
        })
        .collect();
    // Per component, the planned replicas that are not ready yet.
    let lacking: BTreeMap<&str, u32> = input
        .plans
        .iter()
        .map(|plan| {
            let ready: u32 = plan
                .placements
                .iter()
                .map(|p| {
                    let key = (plan.key.component.clone(), p.pool.clone());
                    input.ready.get(&key).copied().unwrap_or(0).min(p.replicas)
                })
                .sum();
            (
                plan.key.component.as_str(),
                plan.desired_replicas.saturating_sub(ready),
            )
        })
        .collect();
    let components: BTreeSet<&str> = input
        .plans
        .iter()
        .map(|p| p.key.component.as_str())
        .collect();
    let now = Time(input.now);
    let mut outcome = StrandedOutcome::default();
    let mut seen = BTreeSet::new();
    let previous: BTreeMap<Key, &StrandedReplicas> = input
        .previous
        .iter()
        .map(|e| ((e.component.clone(), e.pool.clone()), e))
        .collect();

    // Newly cut off: a pool that does not answer where replicas were placed.
    for (key, &(replicas, ready)) in input.placed_before {
        let Some(Some(why)) = input.pools.get(&key.1) else {
            continue;
        };
        if replicas == 0 || previous.get(key).is_some_and(|e| !resolved(e)) {
            continue;
        }
        seen.insert(key.clone());
        outcome.entries.push(StrandedReplicas {
            component: key.0.clone(),
            pool: key.1.clone(),
            replicas,
            ready_replicas: ready,
            planned_replicas: planned.get(key).copied().unwrap_or(0),
            since: now.clone(),
            action: StrandedAction::LeftAlone,
            action_time: now.clone(),
            message: left_alone(why),
        });
    }

    for (key, entry) in previous {
        if seen.contains(&key) {
            continue;
        }
        let mut entry = entry.clone();
        let Some(reachability) = input.pools.get(&key.1) else {
            // The pool is gone: nothing left to manage there.
            continue;
        };
        if !components.contains(key.0.as_str()) {
            continue;
        }
        if resolved(&entry) {
            let age = input.now.duration_since(entry.action_time.0);
            if age.is_negative() || age.unsigned_abs() < RESOLVED_RETENTION {
                outcome.entries.push(entry);
            }
            continue;
        }
        let wanted = planned.get(&key).copied().unwrap_or(0);
        entry.planned_replicas = wanted;
        if let Some(why) = reachability {
            set_action(&mut entry, StrandedAction::LeftAlone, left_alone(why), &now);
            outcome.entries.push(entry);
            continue;
        }
        if input.gone.contains(&key) {
            continue;
        }
        let have = entry.replicas;
        if wanted >= have {
            set_action(
                &mut entry,
                StrandedAction::Adopted,
                format!(
                    "the cluster answers again and the plan places {wanted} replicas here: the \
                     workload was kept, not re-created"
                ),
                &now,
            );
            outcome.entries.push(entry);
            continue;
        }
        // Keep as many surplus replicas as the component lacks ready elsewhere.
        let lacking = lacking.get(key.0.as_str()).copied().unwrap_or(0);
        let target = wanted + (have - wanted).min(lacking);
        if target == have && entry.action == StrandedAction::LeftAlone {
            set_action(
                &mut entry,
                StrandedAction::LeftAlone,
                format!(
                    "the cluster answers again; {} surplus replicas are kept until their \
                     replacements are ready",
                    have - wanted
                ),
                &now,
            );
        } else {
            let message = if target > wanted {
                format!(
                    "scaled in to {target}: the plan places {wanted} here, {} more are kept \
                     until their replacements are ready",
                    target - wanted
                )
            } else {
                format!("scaled in to {target}, what the plan places here")
            };
            entry.replicas = target;
            entry.ready_replicas = entry.ready_replicas.min(target);
            set_action(&mut entry, StrandedAction::ScaledIn, message, &now);
        }
        if wanted > 0 {
            if target > wanted {
                outcome.hold.insert(key.clone(), target);
            }
        } else {
            outcome.protect.insert(key.clone());
            outcome.scale.insert(key.clone(), target);
        }
        outcome.entries.push(entry);
    }
    outcome
        .entries
        .sort_by(|a, b| (&a.component, &a.pool).cmp(&(&b.component, &b.pool)));
    outcome
}

fn left_alone(why: &str) -> String {
    format!("the pool's cluster does not answer ({why}); left alone, they may still be serving")
}

/// Sets the action and message; the action's time moves only when the action changes.
fn set_action(entry: &mut StrandedReplicas, action: StrandedAction, message: String, now: &Time) {
    if entry.action != action {
        entry.action_time = now.clone();
    }
    entry.action = action;
    entry.message = message;
}

/// Replicas and ready replicas per (component, pool) a status places.
pub fn placed(status: Option<&ModelDeploymentStatus>) -> Placed {
    status
        .iter()
        .flat_map(|s| &s.components)
        .flat_map(|c| {
            c.placements.iter().map(|p| {
                (
                    (c.name.clone(), p.pool.clone()),
                    (p.replicas, p.ready_replicas),
                )
            })
        })
        .collect()
}

/// `status` with the unresolved stranded replicas in pools that answer again (`reachable`)
/// counted as placed there, for the planner: it then keeps them (best pools first) like any
/// existing replicas, so that when the plan would put replicas back on that pool (a failback),
/// it adopts the warm ones there instead of scaling them in and starting new ones later. Only
/// placements are changed; `None` when there is nothing to add.
pub fn as_current(
    status: Option<&ModelDeploymentStatus>,
    reachable: impl Fn(&str) -> Option<crate::api::Cloud>,
) -> Option<ModelDeploymentStatus> {
    let status = status?;
    let back: Vec<&StrandedReplicas> = status
        .stranded
        .iter()
        .filter(|e| !resolved(e) && e.replicas > 0)
        .filter(|e| reachable(&e.pool).is_some())
        .collect();
    if back.is_empty() {
        return None;
    }
    let mut merged = status.clone();
    for entry in back {
        let Some(cloud) = reachable(&entry.pool) else {
            continue;
        };
        let position = merged
            .components
            .iter()
            .position(|c| c.name == entry.component)
            .unwrap_or_else(|| {
                merged.components.push(crate::api::ComponentStatus {
                    name: entry.component.clone(),
                    ..Default::default()
                });
                merged.components.len() - 1
            });
        let component = &mut merged.components[position];
        match component
            .placements
            .iter_mut()
            .find(|p| p.pool == entry.pool)
        {
            Some(placement) => placement.replicas = placement.replicas.max(entry.replicas),
            None => component.placements.push(crate::api::PlacementStatus {
                pool: entry.pool.clone(),
                cloud,
                replicas: entry.replicas,
                ready_replicas: 0,
                reason: "stranded replicas, back".into(),
            }),
        }
    }
    Some(merged)
}

/// What changed between two reports, for Events: (warning, reason, note).
pub fn changes(
    before: &[StrandedReplicas],
    after: &[StrandedReplicas],
) -> Vec<(bool, &'static str, String)> {
    let mut notes = Vec::new();
    for entry in after {
        let old = before
            .iter()
            .find(|b| b.component == entry.component && b.pool == entry.pool);
        let changed = old.is_none_or(|old| {
            old.action != entry.action || old.replicas != entry.replicas || old.since != entry.since
        });
        if !changed {
            continue;
        }
        let (warning, reason) = match entry.action {
            StrandedAction::LeftAlone => (true, "Stranded"),
            StrandedAction::Adopted => (false, "Adopted"),
            StrandedAction::ScaledIn => (false, "ScaledIn"),
        };
        if entry.action == StrandedAction::LeftAlone
            && old.is_some_and(|o| o.action == StrandedAction::LeftAlone && o.since == entry.since)
        {
            // Reachable again but still covering for replacements: no news.
            continue;
        }
        notes.push((
            warning,
            reason,
            format!(
                "component {} on {}: {} replicas: {}",
                entry.component, entry.pool, entry.replicas, entry.message
            ),
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Cloud, DataClass};
    use crate::planner::{ComponentKey, Placement};
    use proptest::prelude::*;

    fn plan(component: &str, desired: u32, placements: &[(&str, u32)]) -> ComponentPlan {
        ComponentPlan {
            key: ComponentKey {
                namespace: "shop".into(),
                deployment: "ranker".into(),
                component: component.into(),
            },
            data_class: DataClass::Internal,
            desired_replicas: desired,
            placements: placements
                .iter()
                .map(|(pool, replicas)| Placement {
                    pool: pool.to_string(),
                    cloud: Cloud::Public,
                    replicas: *replicas,
                    reason: String::new(),
                })
                .collect(),
            unplaced: desired.saturating_sub(placements.iter().map(|p| p.1).sum()),
            reasons: Vec::new(),
            cost_per_hour: 0.0,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn key(component: &str, pool: &str) -> Key {
        (component.into(), pool.into())
    }

    struct World {
        previous: Vec<StrandedReplicas>,
        placed_before: BTreeMap<Key, (u32, u32)>,
        pools: BTreeMap<String, Option<String>>,
        plans: Vec<ComponentPlan>,
        ready: BTreeMap<Key, u32>,
        gone: BTreeSet<Key>,
    }

    impl World {
        fn new() -> Self {
            World {
                previous: Vec::new(),
                placed_before: BTreeMap::new(),
                pools: BTreeMap::from([("dc1".into(), None), ("cloud".into(), None)]),
                plans: Vec::new(),
                ready: BTreeMap::new(),
                gone: BTreeSet::new(),
            }
        }

        fn decide(&self, now: i64) -> StrandedOutcome {
            decide(StrandedInput {
                previous: &self.previous,
                placed_before: &self.placed_before,
                pools: &self.pools,
                plans: &self.plans,
                ready: &self.ready,
                gone: &self.gone,
                now: at(now),
            })
        }
    }

    /// Two replicas on cloud, two on dc1; cloud stops answering and its replicas are unplaced.
    fn partitioned() -> (World, StrandedOutcome) {
        let mut world = World::new();
        world.placed_before = BTreeMap::from([
            (key("ranker", "dc1"), (2, 2)),
            (key("ranker", "cloud"), (2, 2)),
        ]);
        world
            .pools
            .insert("cloud".into(), Some("connection refused".into()));
        world.plans = vec![plan("ranker", 4, &[("dc1", 2)])];
        world.ready = BTreeMap::from([(key("ranker", "dc1"), 2)]);
        let outcome = world.decide(0);
        (world, outcome)
    }

    #[test]
    fn replicas_of_an_unreachable_cluster_are_left_alone_and_reported() {
        let (mut world, outcome) = partitioned();
        assert_eq!(outcome.entries.len(), 1);
        let entry = &outcome.entries[0];
        assert_eq!((entry.pool.as_str(), entry.replicas), ("cloud", 2));
        assert_eq!(entry.ready_replicas, 2, "as last seen");
        assert_eq!(entry.action, StrandedAction::LeftAlone);
        assert!(entry.message.contains("connection refused"));
        assert!(outcome.scale.is_empty() && outcome.hold.is_empty());

        // Still unreachable later: the same entry, since unchanged, nothing placed there now.
        world.previous = outcome.entries.clone();
        world.placed_before = BTreeMap::from([(key("ranker", "dc1"), (2, 2))]);
        let later = world.decide(60);
        assert_eq!(later.entries, outcome.entries);
    }

    #[test]
    fn a_cluster_back_where_the_plan_places_as_many_adopts_its_workload() {
        let (mut world, outcome) = partitioned();
        world.previous = outcome.entries;
        world.pools.insert("cloud".into(), None);
        world.plans = vec![plan("ranker", 4, &[("dc1", 2), ("cloud", 2)])];
        let back = world.decide(30);
        assert_eq!(back.entries[0].action, StrandedAction::Adopted);
        assert_eq!(back.entries[0].action_time, Time(at(30)));
        assert_eq!(back.entries[0].since, Time(at(0)));
        assert!(back.protect.is_empty() && back.scale.is_empty() && back.hold.is_empty());
        assert!(back.unresolved().next().is_none());
    }

    #[test]
    fn surplus_is_scaled_in_only_as_replacements_become_ready() {
        let (mut world, outcome) = partitioned();
        // Meanwhile dc1 grew: the plan moved both replicas there, not ready yet.
        world.previous = outcome.entries;
        world.pools.insert("cloud".into(), None);
        world.plans = vec![plan("ranker", 4, &[("dc1", 4)])];
        let waiting = world.decide(30);
        assert_eq!(waiting.entries[0].action, StrandedAction::LeftAlone);
        assert_eq!(waiting.entries[0].replicas, 2);
        assert!(waiting.protect.contains(&key("ranker", "cloud")));
        assert_eq!(waiting.scale.get(&key("ranker", "cloud")), Some(&2));

        // One replacement ready: one replica scaled in.
        world.previous = waiting.entries;
        world.ready.insert(key("ranker", "dc1"), 3);
        let one = world.decide(40);
        assert_eq!(one.entries[0].action, StrandedAction::ScaledIn);
        assert_eq!(one.entries[0].replicas, 1);
        assert_eq!(one.scale.get(&key("ranker", "cloud")), Some(&1));
        assert!(!resolved(&one.entries[0]));

        // All ready: scaled to zero, resolved; the sweep may remove it on the next pass.
        world.previous = one.entries;
        world.ready.insert(key("ranker", "dc1"), 4);
        let done = world.decide(50);
        assert_eq!(done.entries[0].replicas, 0);
        assert_eq!(done.scale.get(&key("ranker", "cloud")), Some(&0));
        assert!(resolved(&done.entries[0]));
        world.previous = done.entries;
        let after = world.decide(60);
        assert!(after.protect.is_empty() && after.scale.is_empty());
        assert_eq!(after.entries.len(), 1, "kept for the record");
        let expired = world.decide(60 + RESOLVED_RETENTION.as_secs() as i64);
        assert!(expired.entries.is_empty());
    }

    #[test]
    fn a_plan_with_fewer_replicas_there_scales_the_workload_down_through_the_apply() {
        let (mut world, outcome) = partitioned();
        world.previous = outcome.entries;
        world.pools.insert("cloud".into(), None);
        // The component now wants 3: one on cloud. dc1's two are ready.
        world.plans = vec![plan("ranker", 3, &[("dc1", 2), ("cloud", 1)])];
        world.ready.insert(key("ranker", "cloud"), 1);
        let back = world.decide(30);
        assert_eq!(back.entries[0].action, StrandedAction::ScaledIn);
        assert_eq!(back.entries[0].replicas, 1);
        assert!(back.hold.is_empty(), "the apply of the plan scales it");
        assert!(back.protect.is_empty() && back.scale.is_empty());
    }

    #[test]
    fn a_workload_deleted_meanwhile_or_a_pool_removed_ends_the_entry() {
        let (mut world, outcome) = partitioned();
        world.previous = outcome.entries;
        world.pools.insert("cloud".into(), None);
        world.gone.insert(key("ranker", "cloud"));
        assert!(world.decide(30).entries.is_empty());
        world.gone.clear();
        world.pools.remove("cloud");
        assert!(world.decide(30).entries.is_empty());
    }

    #[test]
    fn a_second_partition_starts_a_new_entry() {
        let (mut world, outcome) = partitioned();
        world.previous = outcome.entries;
        world.pools.insert("cloud".into(), None);
        world.plans = vec![plan("ranker", 4, &[("dc1", 2), ("cloud", 2)])];
        let adopted = world.decide(30);
        world.previous = adopted.entries;
        world.placed_before = BTreeMap::from([
            (key("ranker", "dc1"), (2, 2)),
            (key("ranker", "cloud"), (2, 1)),
        ]);
        world.pools.insert("cloud".into(), Some("no answer".into()));
        let again = world.decide(100);
        assert_eq!(again.entries.len(), 1);
        assert_eq!(again.entries[0].action, StrandedAction::LeftAlone);
        assert_eq!(again.entries[0].since, Time(at(100)));
        assert_eq!(again.entries[0].ready_replicas, 1);
    }

    #[test]
    fn events_name_each_change_once() {
        let (mut world, outcome) = partitioned();
        let first = changes(&[], &outcome.entries);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1, "Stranded");
        assert!(first[0].0, "a warning");
        assert!(changes(&outcome.entries, &outcome.entries).is_empty());
        world.previous = outcome.entries.clone();
        world.pools.insert("cloud".into(), None);
        world.plans = vec![plan("ranker", 4, &[("dc1", 2), ("cloud", 2)])];
        let adopted = world.decide(30);
        let news = changes(&outcome.entries, &adopted.entries);
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].1, "Adopted");
    }

    #[test]
    fn stranded_replicas_of_a_cluster_back_count_as_current_for_the_planner() {
        let (_, outcome) = partitioned();
        let mut status = ModelDeploymentStatus {
            components: vec![crate::api::ComponentStatus {
                name: "ranker".into(),
                placements: vec![crate::api::PlacementStatus {
                    pool: "dc1".into(),
                    cloud: Cloud::Private,
                    replicas: 2,
                    ready_replicas: 2,
                    reason: String::new(),
                }],
                ..Default::default()
            }],
            stranded: outcome.entries,
            ..Default::default()
        };
        let cut_off = |pool: &str| (pool == "dc1").then_some(Cloud::Private);
        assert_eq!(
            as_current(Some(&status), cut_off),
            None,
            "cloud is still cut off"
        );
        let back = |_: &str| Some(Cloud::Public);
        let merged = as_current(Some(&status), back).expect("cloud is back");
        let placed = placed(Some(&merged));
        assert_eq!(placed.get(&key("ranker", "cloud")), Some(&(2, 0)));
        assert_eq!(placed.get(&key("ranker", "dc1")), Some(&(2, 2)));
        status.stranded[0].action = StrandedAction::Adopted;
        assert_eq!(as_current(Some(&status), back), None, "resolved");
    }

    proptest! {
        /// Whatever the plan and readiness: a stranded workload is never deleted while its
        /// cluster is unreachable, never scaled below what the plan places there, never scaled
        /// up, and never below what the component lacks ready elsewhere.
        #[test]
        fn scale_in_never_drops_below_the_plan_or_the_shortfall(
            stranded in 1u32..8,
            desired in 0u32..12,
            there in 0u32..8,
            elsewhere in 0u32..8,
            ready_elsewhere in 0u32..8,
            ready_there in 0u32..8,
            reachable in any::<bool>(),
        ) {
            let (mut world, outcome) = partitioned();
            let mut entries = outcome.entries;
            entries[0].replicas = stranded;
            world.previous = entries;
            if reachable {
                world.pools.insert("cloud".into(), None);
            }
            let placements: Vec<(&str, u32)> = [("dc1", elsewhere), ("cloud", there)]
                .into_iter()
                .filter(|p| p.1 > 0)
                .collect();
            world.plans = vec![plan("ranker", desired, &placements)];
            world.ready = BTreeMap::from([
                (key("ranker", "dc1"), ready_elsewhere),
                (key("ranker", "cloud"), ready_there),
            ]);
            let decided = world.decide(30);
            let entry = decided.entries.iter().find(|e| e.pool == "cloud").expect("kept");
            if !reachable {
                prop_assert_eq!(entry.action, StrandedAction::LeftAlone);
                prop_assert_eq!(entry.replicas, stranded);
                prop_assert!(decided.scale.is_empty() && decided.hold.is_empty());
            } else {
                prop_assert!(entry.replicas <= stranded);
                prop_assert!(entry.replicas >= there.min(stranded));
                let ready_planned = ready_elsewhere.min(elsewhere) + ready_there.min(there);
                let lacking = desired.saturating_sub(ready_planned);
                prop_assert!(entry.replicas >= stranded.min(there + lacking));
                let key = key("ranker", "cloud");
                if there == 0 {
                    prop_assert!(decided.protect.contains(&key));
                    prop_assert_eq!(decided.scale.get(&key), Some(&entry.replicas));
                } else if entry.replicas > there {
                    prop_assert_eq!(decided.hold.get(&key), Some(&entry.replicas));
                }
            }
        }
    }
}
