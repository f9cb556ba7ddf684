//! Decide, the second step of a reconcile: pure but for the planning queue and the
//! per-deployment memory. One planning pass decides every deployment waiting (the burst
//! controllers and the planner composed once, `burst::step::tick` through
//! `planning::decide_together`), then the artifact stage holds what no store can serve yet, the
//! partition rules decide the stranded workloads, and the sweep rule whether to list clusters.
//! The rules themselves are pure functions below, each tested with the clock passed in.

use super::artifacts::Stage;
use super::batch::Batcher;
use super::observe::Observed;
use super::planning::{Decided, Request, decide_together};
use super::stranded::{self, StrandedInput, StrandedOutcome};
use crate::api::{Cloud, ModelDeployment, ModelDeploymentStatus};
use crate::burst::EventKind;
use crate::estate::{Estate, ModelClasses};
use crate::operator::context::Context;
use crate::operator::kubernetes::applier::SweepMode;
use crate::operator::rollout::canary;
use crate::operator::rollout::inputs::Seen;
use crate::operator::rollout::step::{RolloutContext, RolloutOutcome, Serving, decide_rollout};
use crate::planner::ComponentPlan;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// Planning passes start at least this far apart: under a stream of reconciles each pass
/// decides what gathered meanwhile (see `batch`), which bounds the time spent planning; a
/// reconcile that finds the planner idle is decided at once.
const PLANNING_INTERVAL: Duration = Duration::from_millis(10);

/// The most of the time planning passes take: as the estate (and so a pass) grows, passes are
/// spaced further apart and decide larger batches, instead of keeping a core busy.
const PLANNING_SHARE: f64 = 0.1;

/// What the deployment controller's reconciles share: the operator's context, and the planning
/// queue that serializes their decisions (each sees every earlier one, and the reconciles
/// waiting meanwhile are decided together in the next pass).
pub struct Deployments {
    pub ctx: Arc<Context>,
    planning: Batcher<PlanTicket, PlanOutcome>,
}

impl Deployments {
    pub fn new(ctx: Arc<Context>) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            planning: Batcher::new(PLANNING_INTERVAL, PLANNING_SHARE),
        })
    }
}

impl Deref for Deployments {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
}

/// Something a reconcile has to tell in an Event: its type, reason and note.
pub type Note = (EventType, &'static str, String);

/// Safety-net re-plan of a settled deployment, for triggers that were missed.
pub const SETTLED_RESYNC: Duration = Duration::from_secs(300);

/// The planning pass failed for this deployment (it panicked): nothing was decided.
#[derive(Debug, thiserror::Error)]
#[error("planning: {0}")]
pub struct DecideError(#[from] super::batch::Abandoned);

/// What one reconcile decided for its deployment.
pub struct Decision {
    /// The deployment's plan, one entry per component, with held replicas taken out.
    pub plans: Vec<ComponentPlan>,
    pub artifacts: Option<Stage>,
    /// The estate the planning pass planned.
    pub estate: Arc<Estate>,
    pub stranded: StrandedOutcome,
    /// How far the sweep looks (see [`sweep_mode`]).
    pub sweep: SweepMode,
    /// The placement signature the sweep is for.
    pub signature: u64,
    /// What to tell in Events besides what status changes tell.
    pub notes: Vec<Note>,
    /// Cross-cluster traffic (issue #15): the replicas held for draining backends.
    pub traffic: TrafficHolds,
    /// Replicas kept per (component, pool) while they are on nodes about to be reclaimed and
    /// their replacements start elsewhere (issue #19, see `capacity::holds`).
    pub capacity_holds: BTreeMap<stranded::Key, u32>,
    /// Which versions serve, and the rollout's status, conditions and Events (issue #17).
    pub rollout: RolloutOutcome,
    /// During a rollout, the old version's artifacts (how its pods fetch its model).
    pub old_artifacts: Option<Stage>,
}

/// Replicas of draining route backends, held until the route has stopped sending to them for
/// `drainSeconds` (see `crate::operator::traffic`): the Deployment keeps `max(planned, held)`,
/// and a pool dropped from the plan while its backend drains is spared by the sweep.
#[derive(Clone, Debug, Default)]
pub struct TrafficHolds {
    /// Replicas to keep per (component, pool).
    pub holds: BTreeMap<stranded::Key, u32>,
    /// What the previous decision placed (replicas, ready) per (component, pool), for the
    /// traffic decision after the apply.
    pub placed: stranded::Placed,
}

/// Decides for `md`: waits for a planning pass, then the stranded workloads and the sweep.
pub async fn decide(
    d: &Deployments,
    md: &ModelDeployment,
    observed: &Observed,
) -> Result<Decision, DecideError> {
    let key = Estate::key_of(md);
    let ticket = PlanTicket {
        deployment: Arc::new(md.clone()),
        demand: observed.demand.demand.clone(),
    };
    let PlanOutcome {
        decided,
        plans,
        artifacts,
        old_artifacts,
        estate,
        placed_before,
        placed,
        replaced,
    } = d
        .planning
        .submit(ticket, |tickets| decide_batch(d, tickets))
        .await?;
    let mut notes: Vec<Note> = observed
        .demand
        .failures
        .iter()
        .map(|(component, err)| {
            (
                EventType::Warning,
                "MetricUnavailable",
                format!("component {component}: {err}"),
            )
        })
        .collect();
    notes.extend(decided.events.iter().map(|(component, event)| {
        (
            burst_event_type(event.kind),
            event.kind.as_str(),
            format!("component {component}: {}", event.message),
        )
    }));

    // Partitions: the workloads in a pool whose cluster does not answer are left alone (they
    // may still be serving), and adopted or scaled in when it answers again (see `stranded`).
    let placed = with_ready_seen(placed, md.status.as_ref());
    let ready = ready_seen(
        &plans,
        &placed,
        &observed.reachability,
        &observed.watched_ready,
    );
    let stranded = stranded::decide(StrandedInput {
        previous: &observed.stranded_before,
        placed_before: &placed,
        pools: &observed.reachability,
        plans: &plans,
        ready: &ready,
        gone: &observed.stranded_gone,
        now: Timestamp::now(),
    });
    d.set_stranded(&key, stranded.entries.clone());
    for (warning, reason, note) in stranded::changes(&observed.stranded_before, &stranded.entries) {
        notes.push((severity(warning), reason, note));
    }

    // Traffic: replicas of draining backends are held (decided with the new plan, before the
    // children are built and applied).
    let traffic = TrafficHolds {
        holds: d.traffic.holds(
            md,
            d.traffic_memory(&key),
            &estate.pools,
            &plans,
            &placed,
            &observed.reachability,
            Timestamp::now(),
        ),
        placed,
    };

    // Capacity: replicas on nodes about to be reclaimed stay until the node goes.
    let pools = d.capacity.snapshot();
    let rolling_out = super::rollout::rolling_out(md);
    let capacity_holds = super::capacity::holds(md, &plans, &pools, rolling_out);
    notes.extend(super::capacity::notes(&replaced, &pools));

    // Rollouts: which versions serve with how many replicas, decided after the plan. What only
    // a rollout under way reads (each pool's room for the surge, the new model's holds) is not
    // computed for the others.
    let rollout = decide_rollout(RolloutContext {
        md,
        plans: &plans,
        pools: &estate.pools,
        class: match canary(md) {
            Some(_) => ModelClasses::of(&estate).class_of(md),
            None => md.spec.model_data_class(),
        },
        seen: &Seen {
            counts: observed.rollout.counts.clone(),
            spare: if rolling_out {
                super::rollout::spare_replicas(&estate, md)
            } else {
                BTreeMap::new()
            },
            new_model_unfetchable: artifacts
                .as_ref()
                .filter(|_| rolling_out)
                .map(|a| a.held.clone())
                .unwrap_or_default(),
        },
        measured: observed.rollout.measured.clone(),
        digest: artifacts.as_ref().and_then(Stage::digest),
        now: Timestamp::now(),
    });
    for (warning, reason, note) in &rollout.events {
        notes.push((severity(*warning), reason, note.clone()));
    }

    let signature = workload_signature(&plans, &rollout.serving);
    let sweep = sweep_mode(placed_before, d.swept(&key), signature);
    if sweep == SweepMode::List {
        // Forget the old signature first: if this sweep is incomplete (a cluster unreachable)
        // and the plan later returns to that signature, the sweep must still run.
        d.set_swept(&key, None);
    }
    Ok(Decision {
        plans,
        artifacts,
        estate,
        stranded,
        sweep,
        signature,
        notes,
        traffic,
        capacity_holds,
        rollout,
        old_artifacts,
    })
}

/// `md` with the placements `plans` decide in its status (no replica ready yet), for the
/// decisions of the next planning passes to count.
pub fn as_decided(md: &ModelDeployment, plans: &[ComponentPlan]) -> ModelDeployment {
    use crate::api::{ComponentStatus, PlacementStatus};
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
    decided
}

/// Warning or Normal.
pub fn severity(warning: bool) -> EventType {
    if warning {
        EventType::Warning
    } else {
        EventType::Normal
    }
}

/// The Event type of a burst-controller decision: a budget that binds and a metric that cannot
/// be read are warnings; scaling, bursting and failing back are normal.
pub fn burst_event_type(kind: EventKind) -> EventType {
    severity(matches!(
        kind,
        EventKind::BudgetHit | EventKind::MetricUnavailable
    ))
}

/// The sweep rule. Orphans appear only when the set of (component, pool) changes; sweeping
/// every cluster by listing on every reconcile would cost lists per cluster each time. So the
/// clusters are listed when a deployment that recorded placements has a signature its children
/// were not completely swept for (after a restart the memory is empty, so its first reconcile
/// lists); otherwise the children indexes are looked up, which is cheap. A deployment that
/// never recorded a placement has no such children (an earlier operator's leftovers were
/// listed into the index when its watch started).
pub fn sweep_mode(placed_before: bool, last_swept: Option<u64>, signature: u64) -> SweepMode {
    if placed_before && last_swept != Some(signature) {
        SweepMode::List
    } else {
        SweepMode::Indexed
    }
}

/// When to look again without a trigger. Demand is read on its policy's interval (`next_read`,
/// when any component reads demand); a deployment that bursts, lacks replicas or waits for
/// them to become ready is re-planned every `period`, so it fails back or fills up once
/// capacity frees elsewhere; a settled one (all private, all placed, all ready) waits for a
/// trigger (its spec, a pool, a policy, a child) or the slow resync.
pub fn next_requeue(
    plans: &[ComponentPlan],
    settled_ready: bool,
    next_read: Option<Duration>,
    period: Duration,
) -> Duration {
    let unsettled = !settled_ready
        || plans
            .iter()
            .any(|p| p.unplaced > 0 || p.replicas_in(Cloud::Public) > 0);
    match next_read {
        Some(next_read) => next_read.min(period),
        None if unsettled => period,
        None => SETTLED_RESYNC.max(period),
    }
}

/// Ready replicas per (component, pool) of the plan before this reconcile applies it: as the
/// children watch sees them, else as the status last reported (`placed`); none in a pool cut
/// off.
pub fn ready_seen(
    plans: &[ComponentPlan],
    placed: &stranded::Placed,
    reachability: &BTreeMap<String, Option<String>>,
    watched: &BTreeMap<stranded::Key, Option<u32>>,
) -> BTreeMap<stranded::Key, u32> {
    let mut ready = BTreeMap::new();
    if watched.is_empty() {
        return ready;
    }
    for plan in plans {
        for placement in plan.placements.iter().filter(|p| p.replicas > 0) {
            let key = (plan.key.component.clone(), placement.pool.clone());
            if !reachability.contains_key(&placement.pool) {
                continue;
            }
            if reachability
                .get(&placement.pool)
                .is_some_and(Option::is_some)
            {
                ready.insert(key, 0);
                continue;
            }
            let seen = watched
                .get(&key)
                .copied()
                .flatten()
                .unwrap_or_else(|| placed.get(&key).map_or(0, |&(_, r)| r));
            ready.insert(key, seen);
        }
    }
    ready
}

/// A deployment waiting for a planning pass, with the demand read for it.
pub struct PlanTicket {
    pub(crate) deployment: Arc<ModelDeployment>,
    pub(crate) demand: BTreeMap<String, Option<f64>>,
}

/// What a planning pass decided for one deployment.
pub struct PlanOutcome {
    pub(crate) decided: Decided,
    /// The deployment's plans, with replicas held for artifacts taken out.
    pub(crate) plans: Vec<ComponentPlan>,
    pub(crate) artifacts: Option<Stage>,
    /// During a rollout, the old version's artifacts (its fetches).
    pub(crate) old_artifacts: Option<Stage>,
    /// The estate the pass planned, shared by its deployments.
    pub(crate) estate: Arc<Estate>,
    /// Whether an earlier decision placed any of the deployment's replicas.
    pub(crate) placed_before: bool,
    /// Replicas per (component, pool) the earlier decision placed (ready ones not known here).
    pub(crate) placed: stranded::Placed,
    /// Replicas per component and pool placed anew for the pools' capacity (issue #19).
    pub(crate) replaced: BTreeMap<String, BTreeMap<String, u32>>,
}

/// Whether a deployment's status (or last decision) places any replica.
fn has_placements(md: &ModelDeployment) -> bool {
    md.status
        .as_ref()
        .is_some_and(|s| s.components.iter().any(|c| !c.placements.is_empty()))
}

/// One planning pass for every deployment waiting (see `batch`): against every earlier
/// decision, so that concurrent reconciles never promise the same free capacity twice. Pure
/// and quick apart from the context's memory: no I/O inside.
pub(crate) fn decide_batch(d: &Deployments, mut tickets: Vec<PlanTicket>) -> Vec<PlanOutcome> {
    let ctx: &Context = d;
    ctx.metrics.planning_batch.observe(tickets.len() as f64);
    // A reconcile may start before the cache has the status of the previous one: it plans from
    // the placements last decided, or it would place its components afresh, elsewhere, and
    // leave the children it has just applied behind.
    let placed_before: Vec<(bool, stranded::Placed)> = tickets
        .iter_mut()
        .map(|ticket| {
            ticket.deployment = ctx.with_decided_placements(&ticket.deployment);
            let placed = (
                has_placements(&ticket.deployment),
                stranded::placed(ticket.deployment.status.as_ref()),
            );
            ticket.deployment = with_stranded_as_current(ctx, &ticket.deployment);
            placed
        })
        .collect();
    let mut estate = ctx.estate();
    for ticket in &tickets {
        estate.deployments.insert(
            Estate::key_of(&ticket.deployment),
            ticket.deployment.clone(),
        );
    }
    let states: Vec<_> = tickets
        .iter()
        .map(|t| ctx.burst_states(&Estate::key_of(&t.deployment)))
        .collect();
    // Capacity: what each pool's last assessment says must be placed anew.
    let pools = ctx.capacity.snapshot();
    let replace: Vec<_> = tickets
        .iter()
        .map(|t| super::capacity::replacements(&t.deployment, &pools))
        .collect();
    let requests: Vec<Request> = tickets
        .iter()
        .zip(&states)
        .zip(&replace)
        .map(|((ticket, states), replace)| Request {
            deployment: &ticket.deployment,
            demand: &ticket.demand,
            states,
            replace,
        })
        .collect();
    let decisions = decide_together(&estate, &requests, Timestamp::now().as_second());
    drop(requests);
    let estate = Arc::new(estate);
    let classes = ModelClasses::of(&estate);
    tickets
        .iter()
        .zip(decisions)
        .zip(placed_before)
        .zip(replace)
        .map(
            |(((ticket, mut decided), (placed_before, placed)), replaced)| {
                let md = ticket.deployment.as_ref();
                ctx.set_burst_states(&Estate::key_of(md), std::mem::take(&mut decided.states));
                let mut plans = std::mem::take(&mut decided.plans);
                // Artifacts: start the syncs the mode asks for; hold replicas placed on pools whose
                // store does not hold the verified model yet (see `artifact_plan`).
                let syncer = ctx.artifacts.as_ref();
                // During a rollout the stores that lack the new model hold the new version only
                // (the rollout decision sees them): the old version keeps serving there.
                let rolling_out = super::rollout::rolling_out(md);
                let artifacts =
                    Stage::new(syncer.map(|s| &**s), &estate, &classes, md).map(|mut stage| {
                        if let Some(syncer) = syncer {
                            // The plan decides the syncs; the syncer carries them out, then holds
                            // what no store can serve yet.
                            let intents = stage.sync_intents(&estate, md, &plans);
                            syncer.carry_out(
                                intents,
                                &ctx.clusters.local().client,
                                ctx.clusters.operator_namespace(),
                            );
                            if rolling_out {
                                stage.find_unfetchable(syncer, md, &estate.pools, &plans);
                            } else {
                                stage.hold_unfetchable(syncer, md, &estate.pools, &mut plans);
                            }
                        }
                        stage
                    });
                let old_artifacts = rolling_out
                    .then(|| match crate::operator::rollout::intent(md) {
                        crate::operator::rollout::Intent::Rollout { from, .. } => Some(from),
                        crate::operator::rollout::Intent::Steady { .. } => None,
                    })
                    .flatten()
                    .and_then(|from| {
                        let old = crate::operator::rollout::children::model_at(md, &from);
                        let stage = Stage::of_old_version(
                            syncer.map(|s| &**s),
                            &estate,
                            &classes,
                            &old,
                            from.digest.clone(),
                        )?;
                        if let Some(syncer) = syncer {
                            let intents = stage.sync_intents(&estate, &old, &plans);
                            syncer.carry_out(
                                intents,
                                &ctx.clusters.local().client,
                                ctx.clusters.operator_namespace(),
                            );
                        }
                        Some(stage)
                    });
                ctx.record_decision(Arc::new(as_decided(md, &plans)));
                PlanOutcome {
                    decided,
                    plans,
                    artifacts,
                    old_artifacts,
                    estate: estate.clone(),
                    placed_before,
                    placed,
                    replaced,
                }
            },
        )
        .collect()
}

/// `md` with the replicas stranded in pools whose cluster answers again counted as placed there
/// (see `stranded::as_current`), so the planner adopts them where it would place replicas anyway.
fn with_stranded_as_current(ctx: &Context, md: &Arc<ModelDeployment>) -> Arc<ModelDeployment> {
    let mut status = md.status.clone().unwrap_or_default();
    if let Some(entries) = ctx.stranded(&Estate::key_of(md)) {
        status.stranded = entries;
    }
    if status.stranded.is_empty() {
        return md.clone();
    }
    let pools = ctx.pools.state();
    let reachable = |name: &str| {
        let pool = pools.iter().find(|p| p.name_any() == name)?;
        let unreachable = pool
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Reachable"))
            .is_some_and(|c| c.status == "False");
        (!unreachable).then_some(pool.spec.cloud)
    };
    match stranded::as_current(Some(&status), reachable) {
        Some(merged) => {
            let mut with = (**md).clone();
            let previous = with.status.get_or_insert_with(Default::default);
            previous.components = merged.components;
            Arc::new(with)
        }
        None => md.clone(),
    }
}

/// `placed` (from the last decision) with the ready replicas the status last reported for the
/// same (component, pool).
fn with_ready_seen(
    placed: stranded::Placed,
    status: Option<&ModelDeploymentStatus>,
) -> stranded::Placed {
    let reported = stranded::placed(status);
    placed
        .into_iter()
        .map(|(key, (replicas, _))| {
            let ready = reported.get(&key).map_or(0, |&(_, ready)| ready);
            (key, (replicas, ready.min(replicas)))
        })
        .collect()
}

/// The (component, pool) pairs a plan uses, as one number.
pub fn placement_signature(plans: &[ComponentPlan]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for plan in plans {
        for placement in plan.placements.iter().filter(|p| p.replicas > 0) {
            (&plan.key.component, &placement.pool).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The set of workloads a reconcile wants, as one number: the plan's (component, pool) pairs,
/// and during a rollout which version runs in each (a version's workload that goes must be
/// swept though the plan's pairs stay the same).
pub fn workload_signature(plans: &[ComponentPlan], serving: &Serving) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    placement_signature(plans).hash(&mut hasher);
    match serving {
        Serving::One { names, .. } => names.key.hash(&mut hasher),
        Serving::Two {
            old, new, replicas, ..
        } => {
            (&old.key, &new.key).hash(&mut hasher);
            for (key, (o, n)) in replicas {
                (key, *o > 0, *n > 0).hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

/// Events for what changed between two statuses: placements, bursts, shortfalls, decisions.
pub fn placement_events(
    before: Option<&ModelDeploymentStatus>,
    after: &ModelDeploymentStatus,
    notes: &[(EventType, &'static str, String)],
) -> Vec<(EventType, &'static str, String)> {
    let mut events = notes.to_vec();
    let summary = |s: &ModelDeploymentStatus| -> Vec<String> {
        s.components
            .iter()
            .flat_map(|c| {
                c.placements
                    .iter()
                    .map(move |p| format!("{}@{}={}", c.name, p.pool, p.replicas))
            })
            .collect()
    };
    let before_summary = before.map(summary).unwrap_or_default();
    let after_summary = summary(after);
    if before_summary != after_summary {
        events.push((
            EventType::Normal,
            "Placed",
            format!("placement: {}", after_summary.join(", ")),
        ));
    }
    let flag = |s: Option<&ModelDeploymentStatus>, t: &str| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == t))
            .is_some_and(|c| c.status == "True")
    };
    match (flag(before, "Bursting"), flag(Some(after), "Bursting")) {
        (false, true) => events.push((
            EventType::Normal,
            "BurstStarted",
            condition_message(after, "Bursting"),
        )),
        (true, false) => events.push((
            EventType::Normal,
            "BurstEnded",
            "every replica is back on private pools".into(),
        )),
        _ => {}
    }
    if !flag(before, "Degraded") && flag(Some(after), "Degraded") {
        events.push((
            EventType::Warning,
            "Degraded",
            condition_message(after, "Degraded"),
        ));
    }
    events
}

pub fn condition_message(status: &ModelDeploymentStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentStatus, ComputePool, PlacementStatus};
    use crate::operator::context::Settings;
    use crate::operator::kubernetes::clusters::Clusters;
    use crate::operator::kubernetes::metrics::Metrics;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    fn pool(name: &str, gpus: u32, gpu_hour: f64) -> ComputePool {
        serde_json::from_value(json!({
            "apiVersion": "skybridge.io/v1alpha1", "kind": "ComputePool",
            "metadata": {"name": name, "uid": format!("pool-{name}")},
            "spec": {
                "cloud": "private", "provider": "onprem", "region": "fra",
                "cluster": {"namespace": "shop"},
                "capacity": {"gpu": {"type": "nvidia-l4", "count": gpus}},
                "cost": {"gpuHour": gpu_hour},
                "artifactStore": {"bucket": "models"},
            },
        }))
        .unwrap()
    }

    /// One component of one replica on one GPU; with `placed_on`, a status placing it there.
    fn deployment(name: &str, placed_on: Option<&str>) -> ModelDeployment {
        let mut md: ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "shop", "uid": format!("md-{name}"), "generation": 1},
            "spec": {
                "model": {"source": {"uri": "s3://models/m", "pool": "cheap"}, "version": "1"},
                "components": [{
                    "name": "encoder", "dataClass": "internal", "image": "serve:1",
                    "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "1", "memory": "1Gi"},
                    "replicas": {"min": 1, "max": 1},
                }],
            },
        }))
        .unwrap();
        if let Some(pool) = placed_on {
            md.status = Some(ModelDeploymentStatus {
                components: vec![ComponentStatus {
                    name: "encoder".into(),
                    desired_replicas: 1,
                    placements: vec![PlacementStatus {
                        pool: pool.into(),
                        cloud: Cloud::Private,
                        replicas: 1,
                        ready_replicas: 1,
                        reason: String::new(),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        md
    }

    fn pools_of(outcome: &PlanOutcome) -> Vec<String> {
        outcome.plans[0]
            .placements
            .iter()
            .filter(|p| p.replicas > 0)
            .map(|p| p.pool.clone())
            .collect()
    }

    /// A context whose caches are these stores and whose clusters are never reached: planning
    /// does no I/O.
    fn planning_context(
        pools: reflector::Store<ComputePool>,
        policies: reflector::Store<crate::api::BurstPolicy>,
        deployments: reflector::Store<ModelDeployment>,
    ) -> Arc<Deployments> {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("URL"),
        ))
        .expect("client");
        Deployments::new(Arc::new(Context::new(
            Clusters::new(client, "skybridge-system".into(), 100),
            Arc::new(Metrics::default()),
            Settings {
                image: "skybridge:test".into(),
                period: Duration::from_secs(15),
            },
            pools,
            policies,
            deployments,
            tokio::sync::watch::channel(true).1,
            "test".into(),
        )))
    }

    fn ticket(md: &ModelDeployment) -> PlanTicket {
        PlanTicket {
            deployment: Arc::new(md.clone()),
            demand: BTreeMap::new(),
        }
    }

    /// A reconcile that starts before the cache has the status of the previous decision plans
    /// from that decision: it keeps its replica where it is instead of placing it afresh.
    #[tokio::test]
    async fn a_reconcile_on_a_stale_cache_keeps_the_placement_last_decided() {
        let (pools, mut pools_writer) = reflector::store();
        let (policies, _policies_writer) = reflector::store();
        let (deployments, mut deployments_writer) = reflector::store();
        // "cheap" is better but within the stability margin: a placed replica does not move
        // there, a new one goes there.
        pools_writer.apply_watcher_event(&watcher::Event::Apply(pool("cheap", 1, 0.29)));
        pools_writer.apply_watcher_event(&watcher::Event::Apply(pool("other", 10, 0.30)));
        let holder = deployment("holder", Some("cheap"));
        let ours = deployment("ours", None);
        deployments_writer.apply_watcher_event(&watcher::Event::Apply(holder.clone()));
        deployments_writer.apply_watcher_event(&watcher::Event::Apply(ours.clone()));
        let ctx = planning_context(pools, policies, deployments);

        let first = decide_batch(&ctx, vec![ticket(&ours)]);
        assert_eq!(pools_of(&first[0]), ["other"], "the holder fills cheap");
        assert!(!first[0].placed_before);

        // The holder goes; ours reconciles again before its first status reached the cache.
        deployments_writer.apply_watcher_event(&watcher::Event::Delete(holder));
        let second = decide_batch(&ctx, vec![ticket(&ours)]);
        assert_eq!(
            pools_of(&second[0]),
            ["other"],
            "planned from the last decision, the replica stays"
        );
        assert!(second[0].placed_before, "the sweep knows children exist");

        // A deployment never decided still goes to the better pool.
        let fresh = deployment("fresh", None);
        let third = decide_batch(&ctx, vec![ticket(&fresh)]);
        assert_eq!(pools_of(&third[0]), ["cheap"]);
    }

    /// A replica left alone on a pool whose cluster stopped answering, and replaced on another
    /// pool meanwhile, is kept by the plan once that cluster answers again and its pool is the
    /// better one (a failback), instead of being scaled in and started again later.
    #[tokio::test]
    async fn a_stranded_replica_on_a_better_pool_back_is_adopted_by_the_plan() {
        use crate::api::{StrandedAction, StrandedReplicas};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let (pools, mut pools_writer) = reflector::store();
        let (policies, _policies_writer) = reflector::store();
        let (deployments, mut deployments_writer) = reflector::store();
        let with_reachable = |mut pool: ComputePool, reachable: bool| {
            let status = if reachable { "True" } else { "False" };
            pool.status = Some(crate::api::ComputePoolStatus {
                conditions: ["Reachable", "Ready"]
                    .into_iter()
                    .map(|type_| Condition {
                        type_: type_.into(),
                        status: status.into(),
                        reason: "Probe".into(),
                        message: String::new(),
                        observed_generation: None,
                        last_transition_time: Time(Timestamp::now()),
                    })
                    .collect(),
                ..Default::default()
            });
            pool
        };
        // "cheap" is better, but within the stability margin: a replica placed elsewhere stays.
        pools_writer.apply_watcher_event(&watcher::Event::Apply(with_reachable(
            pool("cheap", 4, 0.29),
            true,
        )));
        pools_writer.apply_watcher_event(&watcher::Event::Apply(pool("other", 10, 0.30)));
        let ours = deployment("ours", Some("other"));
        deployments_writer.apply_watcher_event(&watcher::Event::Apply(ours.clone()));
        let ctx = planning_context(pools, policies, deployments);
        let first = decide_batch(&ctx, vec![ticket(&ours)]);
        assert_eq!(pools_of(&first[0]), ["other"], "nothing stranded: it stays");

        let key = Estate::key_of(&ours);
        let stranded = StrandedReplicas {
            component: "encoder".into(),
            pool: "cheap".into(),
            replicas: 1,
            ready_replicas: 1,
            planned_replicas: 0,
            since: Time(Timestamp::now()),
            action: StrandedAction::LeftAlone,
            action_time: Time(Timestamp::now()),
            message: String::new(),
        };
        ctx.set_stranded(&key, vec![stranded.clone()]);
        let back = decide_batch(&ctx, vec![ticket(&ours)]);
        assert_eq!(pools_of(&back[0]), ["cheap"], "the warm replica is kept");
        assert_eq!(
            back[0]
                .placed
                .get(&("encoder".to_string(), "cheap".to_string())),
            None,
            "what was placed before is reported as it was"
        );

        // Still cut off: the plan does not count on it.
        pools_writer.apply_watcher_event(&watcher::Event::Apply(with_reachable(
            pool("cheap", 4, 0.29),
            false,
        )));
        let cut_off = decide_batch(&ctx, vec![ticket(&ours)]);
        assert_eq!(pools_of(&cut_off[0]), ["other"]);

        // Resolved: no longer counted.
        pools_writer.apply_watcher_event(&watcher::Event::Apply(with_reachable(
            pool("cheap", 4, 0.29),
            true,
        )));
        ctx.set_stranded(
            &key,
            vec![StrandedReplicas {
                action: StrandedAction::Adopted,
                ..stranded
            }],
        );
        let resolved = decide_batch(&ctx, vec![ticket(&ours)]);
        assert_eq!(pools_of(&resolved[0]), ["other"]);
    }

    fn plan(component: &str, placements: &[(&str, Cloud, u32)], unplaced: u32) -> ComponentPlan {
        ComponentPlan {
            key: crate::planner::ComponentKey {
                namespace: "shop".into(),
                deployment: "d".into(),
                component: component.into(),
            },
            data_class: crate::api::DataClass::Internal,
            desired_replicas: placements.iter().map(|p| p.2).sum::<u32>() + unplaced,
            placements: placements
                .iter()
                .map(|&(pool, cloud, replicas)| crate::planner::Placement {
                    pool: pool.into(),
                    cloud,
                    replicas,
                    reason: String::new(),
                })
                .collect(),
            unplaced,
            reasons: Vec::new(),
            cost_per_hour: 0.0,
        }
    }

    #[test]
    fn the_sweep_lists_only_when_a_placed_deployment_changed_its_pools_since_its_last_sweep() {
        assert_eq!(
            sweep_mode(true, None, 7),
            SweepMode::List,
            "after a restart"
        );
        assert_eq!(
            sweep_mode(true, Some(6), 7),
            SweepMode::List,
            "pools changed"
        );
        assert_eq!(
            sweep_mode(true, Some(7), 7),
            SweepMode::Indexed,
            "swept already"
        );
        assert_eq!(
            sweep_mode(false, None, 7),
            SweepMode::Indexed,
            "never placed"
        );
        let a = [plan("x", &[("p", Cloud::Private, 1)], 0)];
        let b = [plan("x", &[("p", Cloud::Private, 3)], 0)];
        let c = [plan("x", &[("q", Cloud::Private, 1)], 0)];
        let none = [plan("x", &[("p", Cloud::Private, 0)], 1)];
        assert_eq!(
            placement_signature(&a),
            placement_signature(&b),
            "replicas are no orphans"
        );
        assert_ne!(placement_signature(&a), placement_signature(&c));
        assert_ne!(placement_signature(&a), placement_signature(&none));
    }

    #[test]
    fn requeue_follows_the_metric_else_the_period_until_settled() {
        let period = Duration::from_secs(15);
        let private = [plan("x", &[("p", Cloud::Private, 2)], 0)];
        let public = [plan(
            "x",
            &[("p", Cloud::Private, 1), ("c", Cloud::Public, 1)],
            0,
        )];
        let short = [plan("x", &[("p", Cloud::Private, 1)], 1)];
        assert_eq!(next_requeue(&private, true, None, period), SETTLED_RESYNC);
        assert_eq!(
            next_requeue(&private, true, None, Duration::from_secs(600)),
            Duration::from_secs(600),
            "never sooner than the period"
        );
        assert_eq!(
            next_requeue(&private, false, None, period),
            period,
            "not ready"
        );
        assert_eq!(
            next_requeue(&public, true, None, period),
            period,
            "bursting"
        );
        assert_eq!(next_requeue(&short, true, None, period), period, "unplaced");
        let metric = Some(Duration::from_secs(5));
        assert_eq!(
            next_requeue(&private, true, metric, period),
            Duration::from_secs(5)
        );
        assert_eq!(
            next_requeue(&private, true, Some(Duration::from_secs(60)), period),
            period,
            "at most the period"
        );
    }

    #[test]
    fn only_budget_hits_and_unreadable_metrics_are_warnings() {
        assert_eq!(burst_event_type(EventKind::BudgetHit), EventType::Warning);
        assert_eq!(
            burst_event_type(EventKind::MetricUnavailable),
            EventType::Warning
        );
        for kind in [EventKind::ScaleUp, EventKind::ScaleDown, EventKind::Prewarm] {
            assert_eq!(burst_event_type(kind), EventType::Normal, "{kind:?}");
        }
    }

    fn status(placed: &[(&str, u32)], conditions: &[(&str, &str, &str)]) -> ModelDeploymentStatus {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        ModelDeploymentStatus {
            components: vec![ComponentStatus {
                name: "x".into(),
                placements: placed
                    .iter()
                    .map(|&(pool, replicas)| PlacementStatus {
                        pool: pool.into(),
                        cloud: Cloud::Private,
                        replicas,
                        ready_replicas: 0,
                        reason: String::new(),
                    })
                    .collect(),
                ..Default::default()
            }],
            conditions: conditions
                .iter()
                .map(|&(type_, status, message)| Condition {
                    type_: type_.into(),
                    status: status.into(),
                    reason: "R".into(),
                    message: message.into(),
                    observed_generation: None,
                    last_transition_time: Time(Timestamp::now()),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn events_tell_what_changed_between_two_statuses() {
        let reasons = |events: Vec<Note>| events.into_iter().map(|e| e.1).collect::<Vec<_>>();
        let calm = status(
            &[("p", 1)],
            &[("Bursting", "False", ""), ("Degraded", "False", "")],
        );
        assert!(
            placement_events(Some(&calm), &calm, &[]).is_empty(),
            "nothing changed"
        );
        let note: Note = (EventType::Warning, "MetricUnavailable", "m".into());
        assert_eq!(
            reasons(placement_events(Some(&calm), &calm, &[note])),
            ["MetricUnavailable"]
        );

        let bursting = status(
            &[("p", 1), ("c", 2)],
            &[
                ("Bursting", "True", "2 replicas public"),
                ("Degraded", "True", "short"),
            ],
        );
        let events = placement_events(Some(&calm), &bursting, &[]);
        assert_eq!(
            reasons(events.clone()),
            ["Placed", "BurstStarted", "Degraded"]
        );
        assert_eq!(events[0].2, "placement: x@p=1, x@c=2");
        assert_eq!(events[1].2, "2 replicas public");
        assert_eq!(events[2].0, EventType::Warning);
        assert_eq!(
            reasons(placement_events(Some(&bursting), &calm, &[])),
            ["Placed", "BurstEnded"]
        );
        assert_eq!(
            reasons(placement_events(None, &calm, &[])),
            ["Placed"],
            "a first status"
        );
    }

    #[test]
    fn readiness_before_apply_is_the_watchs_else_the_last_report_and_none_cut_off() {
        let plans = [plan(
            "x",
            &[
                ("p", Cloud::Private, 2),
                ("q", Cloud::Private, 1),
                ("r", Cloud::Private, 1),
            ],
            0,
        )];
        let key = |pool: &str| ("x".to_string(), pool.to_string());
        let reachability: BTreeMap<String, Option<String>> = [
            ("p".to_string(), None),
            ("q".to_string(), None),
            ("r".to_string(), Some("down".to_string())),
        ]
        .into_iter()
        .collect();
        let placed: stranded::Placed = [(key("p"), (2, 2)), (key("q"), (1, 1)), (key("r"), (1, 1))]
            .into_iter()
            .collect();
        let watched: BTreeMap<stranded::Key, Option<u32>> =
            [(key("p"), Some(1)), (key("q"), None), (key("r"), Some(1))]
                .into_iter()
                .collect();
        let ready = ready_seen(&plans, &placed, &reachability, &watched);
        assert_eq!(ready[&key("p")], 1, "the watch");
        assert_eq!(ready[&key("q")], 1, "no watch: the last report");
        assert_eq!(ready[&key("r")], 0, "cut off");
        assert!(
            ready_seen(&plans, &placed, &reachability, &BTreeMap::new()).is_empty(),
            "not looked up without stranded replicas"
        );
    }

    /// Every reconcile leaves memory behind (its decision, burst state, stranded replicas,
    /// sweep, traffic, backoff); deleting the deployments leaves none.
    #[tokio::test]
    async fn deleting_deployments_leaves_nothing_remembered_of_them() {
        let (pools, mut pools_writer) = reflector::store();
        let (policies, _policies_writer) = reflector::store();
        let (deployments, mut deployments_writer) = reflector::store();
        pools_writer.apply_watcher_event(&watcher::Event::Apply(pool("cheap", 8, 0.29)));
        let d = planning_context(pools, policies, deployments);
        let mds: Vec<ModelDeployment> =
            (0..5).map(|i| deployment(&format!("d{i}"), None)).collect();
        for md in &mds {
            deployments_writer.apply_watcher_event(&watcher::Event::Apply(md.clone()));
        }
        let tickets = mds.iter().map(ticket).collect();
        let outcomes = decide_batch(&d, tickets);
        assert_eq!(outcomes.len(), 5);
        for md in &mds {
            let key = Estate::key_of(md);
            d.set_swept(&key, Some(1));
            d.set_stranded(&key, Vec::new());
            d.set_traffic_memory(&key, Default::default());
            d.backoff(md);
        }
        assert_eq!(d.remembered(), (5, 5));
        for (i, md) in mds.iter().enumerate() {
            d.forget(md);
            assert_eq!(d.remembered(), (4 - i, 4 - i));
        }
        assert!(
            d.estate()
                .deployments
                .values()
                .all(|md| md.status.is_none()),
            "no decision left"
        );
        assert_eq!(d.swept(&Estate::key_of(&mds[0])), None);
        assert_eq!(d.stranded(&Estate::key_of(&mds[0])), None);
        assert!(d.burst_states(&Estate::key_of(&mds[0])).is_empty());
    }
}
