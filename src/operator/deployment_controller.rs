//! The ModelDeployment controller: fetch, validate, decide, plan, apply, sweep, report.
//! Decisions are made by pure code (`estate::validate`, the burst controller, `planning`,
//! `workloads`, `status`); this module only moves data between them and the clusters.

use super::applied::{AppliedBody, content_hash};
use super::artifact_plan::serving_pools;
use super::artifacts::{Stage, sweep_store_secrets};
use super::children_watch::{Child, ChildKind};
use super::context::Context;
use super::error::{Error, Result};
use super::metrics::{ControllerLabels, DeploymentLabels, ErrorLabels};
use super::names::{LABEL_COMPONENT, LABEL_POOL, deployment_labels, selector};
use super::planning::{Decided, Request, decide_together};
use super::retry::idempotent;
use super::status::{Observed, StatusInput, deployment_status, first_report_wait};
use super::stranded::{self, StrandedInput, StrandedOutcome};
use super::views::{DeploymentView, Written};
use super::workloads::{self, Placement};
use crate::api::{Cloud, ComputePool, ModelDeployment, ModelDeploymentStatus};
use crate::estate::{Estate, ModelClasses, validate_deployment};
use crate::planner::ComponentPlan;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, instrument, warn};

/// Field manager of this controller's writes.
pub const FIELD_MANAGER: &str = "skybridge.io/deployment-controller";
/// Finalizer that removes children in remote clusters, which owner references cannot reach.
pub const FINALIZER: &str = "skybridge.io/cleanup";
/// How long a child's watch may lag behind this operator's own apply of it before the apply is
/// repeated.
const WATCH_GRACE: Duration = Duration::from_secs(10);
/// Safety-net re-plan of a settled deployment, for triggers that were missed.
const SETTLED_RESYNC: Duration = Duration::from_secs(300);

#[instrument(skip(md, ctx), fields(namespace = md.namespace(), name = md.name_any()))]
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    if !ctx.is_leader() {
        // A warm standby: caches stay current, writes wait for the lease.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let started = Instant::now();
    let namespace = md.namespace().unwrap_or_default();
    let api: Api<ModelDeployment> =
        Api::namespaced(ctx.clusters.local().client().await, &namespace);
    // Where the finalizer is missing, kube's helper only adds it and returns. The deployment is
    // then applied in this same reconcile, not after the echo of that write comes back (which
    // is no change of intent: see `owner_intent`).
    let adds_finalizer = md.metadata.deletion_timestamp.is_none() && !has_finalizer(&md);
    let result = finalizer(&api, FINALIZER, md.clone(), |event| async {
        match event {
            Finalizer::Apply(md) => apply(&md, &ctx).await,
            Finalizer::Cleanup(md) => cleanup(&md, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    let result = match result {
        Ok(_) if adds_finalizer => apply(&md, &ctx).await,
        other => other,
    };
    ctx.metrics
        .reconcile_duration
        .get_or_create(&ControllerLabels {
            controller: "modeldeployment".into(),
        })
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Whether the operator's finalizer is on `md`.
fn has_finalizer(md: &ModelDeployment) -> bool {
    md.finalizers().iter().any(|f| f == FINALIZER)
}

pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = md.namespace(), name = md.name_any(), %error, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "modeldeployment".into(),
            kind: error.kind().into(),
        })
        .inc();
    Action::requeue(ctx.backoff(md.as_ref()))
}

async fn apply(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    let estate = ctx.pools_and_policies();

    // Validate: what the schema could not check. An invalid object stalls until it changes.
    let issues: Vec<String> = validate_deployment(&estate, md)
        .into_iter()
        .map(|i| format!("{}: {}", i.field, i.message))
        .collect();
    if !issues.is_empty() {
        let message = issues.join("; ");
        let status = deployment_status(StatusInput {
            generation: md.metadata.generation,
            previous: md.status.as_ref(),
            components: Vec::new(),
            invalid: Some(message.clone()),
            artifacts: None,
            stranded: Vec::new(),
            now: now(),
        });
        if write_status(md, ctx, status).await? {
            publish(
                ctx,
                md,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                &message,
            )
            .await;
        }
        ctx.succeeded(md);
        return Ok(Action::await_change());
    }

    // Read demand (the edge), then decide replicas and places (pure, the shared burst
    // controller and planner).
    let reading = super::demand::read(ctx, &estate, md).await;
    let key = Estate::key_of(md);
    let ticket = PlanTicket {
        deployment: Arc::new(md.clone()),
        demand: reading.demand.clone(),
    };
    let PlanOutcome {
        decided,
        plans,
        artifacts,
        estate,
        placed_before,
        placed,
    } = ctx
        .planning
        .submit(ticket, |tickets| decide_batch(ctx, tickets))
        .await
        .map_err(|e| Error::Planning(e.to_string()))?;
    let mut notes: Vec<(EventType, &'static str, String)> = reading
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
    for (component, event) in &decided.events {
        let kind = match event.kind {
            crate::burst::EventKind::BudgetHit | crate::burst::EventKind::MetricUnavailable => {
                EventType::Warning
            }
            _ => EventType::Normal,
        };
        notes.push((
            kind,
            event.kind.as_str(),
            format!("component {component}: {}", event.message),
        ));
    }

    // Partitions: the workloads in a pool whose cluster does not answer are left alone (they
    // may still be serving), and adopted or scaled in when it answers again (see `stranded`).
    let reachability = reachability(ctx, &estate.pools).await;
    let stranded_before = ctx.stranded(&key).unwrap_or_else(|| {
        md.status
            .as_ref()
            .map(|s| s.stranded.clone())
            .unwrap_or_default()
    });
    let placed = with_ready_seen(placed, md.status.as_ref());
    // Readiness matters only to scale stranded workloads in: looked up only then.
    let ready_seen = if stranded_before.iter().any(|e| !stranded::resolved(e)) {
        ready_seen(ctx, md, &estate.pools, &plans, &placed, &reachability).await
    } else {
        BTreeMap::new()
    };
    let gone = stranded_gone(ctx, md, &estate.pools, &stranded_before, &reachability).await;
    let stranded = stranded::decide(StrandedInput {
        previous: &stranded_before,
        placed_before: &placed,
        pools: &reachability,
        plans: &plans,
        ready: &ready_seen,
        gone: &gone,
        now: now(),
    });
    ctx.set_stranded(&key, stranded.entries.clone());
    for (warning, reason, note) in stranded::changes(&stranded_before, &stranded.entries) {
        let kind = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        notes.push((kind, reason, note));
    }

    // Apply the children, then remove those the plan no longer has.
    // A cluster that fails does not stop the others, nor the status report; the error then
    // requeues with backoff. Pools cut off are sent nothing.
    let answering: BTreeMap<String, Arc<ComputePool>> = estate
        .pools
        .iter()
        .filter(|(name, _)| reachability.get(*name).is_none_or(Option::is_none))
        .map(|(name, pool)| (name.clone(), pool.clone()))
        .collect();
    let (fetches, secrets_error) = match &artifacts {
        Some(stage) => stage.prepare_pods(ctx, md, &answering, &plans).await,
        None => Default::default(),
    };
    // traffic: replicas of draining backends are held until the route has stopped sending to
    // them for drainSeconds (see `traffic`); held like stranded ones, and spared by the sweep.
    let traffic_holds = ctx
        .traffic
        .holds(md, &estate.pools, &plans, &placed, &reachability, now());
    let mut hold = stranded.hold.clone();
    for (key, n) in &traffic_holds {
        let entry = hold.entry(key.clone()).or_insert(0);
        *entry = (*entry).max(*n);
    }
    let (ready, apply_error) = apply_children(
        md,
        ctx,
        &estate.pools,
        &plans,
        &fetches,
        &reachability,
        &hold, // traffic: was &stranded.hold
    )
    .await;
    // traffic: exports and routes, after the children (their readiness), before the sweep.
    let traffic = ctx
        .traffic
        .after_apply(
            ctx,
            md,
            &estate.pools,
            &plans,
            &placed,
            &ready,
            &traffic_holds,
            &reachability,
            now(),
        )
        .await;
    for (warning, reason, note) in &traffic.notes {
        let kind = if *warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        notes.push((kind, reason, note.clone()));
    }
    let scale_error = scale_stranded(md, ctx, &estate.pools, &stranded).await;
    let apply_error = secrets_error.or(apply_error).or(scale_error);
    // Orphans appear only when the set of (component, pool) changes; sweeping every cluster on
    // every reconcile would cost two lists per cluster each time. After a restart the memory is
    // empty, so the first reconcile always sweeps.
    // Clusters whose children are indexed by their watch are swept on every reconcile, at the
    // cost of a lookup. When the plan of a deployment that recorded placements changes, its
    // clusters are listed instead: a child of the old plan applied a moment ago may not be in
    // the index yet, and the list is the server's own answer. A deployment that never recorded
    // a placement has no such children (an earlier operator's leftovers were listed into the
    // index when its watch started).
    let placed_signature = placement_signature(&plans);
    let list = placed_before && ctx.swept(&key) != Some(placed_signature);
    if list {
        // Forget the old signature first: if this sweep is incomplete (a cluster unreachable)
        // and the plan later returns to that signature, the sweep must still run.
        ctx.forget_swept(&key);
    }
    let spared = Spared {
        cut_off: reachability
            .iter()
            .filter(|(_, why)| why.is_some())
            .map(|(pool, _)| pool.clone())
            .collect(),
        // traffic: a pool dropped from the plan while its backend drains keeps its workload.
        stranded: stranded
            .protect
            .iter()
            .chain(traffic_holds.keys())
            .cloned()
            .collect(),
    };
    let signature = placed_signature;
    if sweep_orphans(md, ctx, &estate.pools, Some(&plans), list, &spared).await? {
        ctx.set_swept(&key, signature);
    }
    // A cluster that does not answer must not keep the status from being written.
    let apply_error = match artifacts.is_some() {
        true => {
            let keep = serving_pools(&plans);
            match sweep_store_secrets(md, ctx, &answering, Some(&keep)).await {
                Ok(()) => apply_error,
                Err(err) => apply_error.or(Some(err)),
            }
        }
        false => apply_error,
    };

    let observed: Vec<Observed> = plans
        .iter()
        .map(|plan| Observed {
            plan,
            ready: plan
                .placements
                .iter()
                .map(|p| {
                    ready
                        .get(&(plan.key.component.clone(), p.pool.clone()))
                        .copied()
                        .unwrap_or(0)
                })
                .collect(),
        })
        .collect();
    let at = now();
    let mut status = deployment_status(StatusInput {
        generation: md.metadata.generation,
        previous: md.status.as_ref(),
        components: observed,
        invalid: None,
        artifacts: artifacts.as_ref().map(|stage| stage.state(&plans)),
        stranded: stranded.entries.clone(),
        now: at,
    });
    // traffic: each component's backends and TrafficReady.
    super::traffic::report_into(
        &mut status,
        md.status.as_ref(),
        &traffic,
        md.metadata.generation,
        at,
    );
    record_metrics(md, ctx, &status);
    let all_ready = status.ready_replicas >= status.desired_replicas;
    notes.extend(Stage::events(md.status.as_ref(), &status));
    // The children watch wakes this deployment when its replicas become ready; the requeue
    // writes the progress report if they take longer than the grace.
    let created = md.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if apply_error.is_none()
        && notes.is_empty()
        && let Some(wait) = first_report_wait(md.status.as_ref(), created, &status, at)
    {
        ctx.succeeded(md);
        return Ok(Action::requeue(wait));
    }
    Stage::count_failures(ctx, &estate.pools, md.status.as_ref(), &status);
    let events = placement_events(md.status.as_ref(), &status, &notes);
    if write_status(md, ctx, status).await? {
        for (kind, reason, note) in events {
            publish(ctx, md, kind, reason, "Reconcile", &note).await;
        }
    } else {
        // The status says nothing new, but what this reconcile found may (a metric failing with
        // another error): each note is told once, not again every reconcile.
        for (type_, reason, note) in notes {
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(note.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(err) = ctx
                .recorder
                .publish_if_new(&event, &md.object_ref(&()))
                .await
            {
                warn!(%err, reason, "could not publish an Event");
            }
        }
    }
    if let Some(err) = apply_error {
        return Err(err);
    }
    ctx.succeeded(md);
    let unresolved = stranded.unresolved().next().is_some();
    let next = next_reconcile(&plans, all_ready && !unresolved, &reading, ctx);
    // traffic: a drain ending, or a route not yet accepted, is looked at again in time.
    Ok(Action::requeue(traffic.next.map_or(next, |t| t.min(next))))
}

/// A deployment waiting for a planning pass, with the demand read for it.
pub struct PlanTicket {
    deployment: Arc<ModelDeployment>,
    demand: BTreeMap<String, Option<f64>>,
}

/// What a planning pass decided for one deployment.
pub struct PlanOutcome {
    decided: Decided,
    /// The deployment's plans, with replicas held for artifacts taken out.
    plans: Vec<ComponentPlan>,
    artifacts: Option<Stage>,
    /// The estate the pass planned, shared by its deployments.
    estate: Arc<Estate>,
    /// Whether an earlier decision placed any of the deployment's replicas.
    placed_before: bool,
    /// Replicas per (component, pool) the earlier decision placed (ready ones not known here).
    placed: stranded::Placed,
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
fn decide_batch(ctx: &Context, mut tickets: Vec<PlanTicket>) -> Vec<PlanOutcome> {
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
    let requests: Vec<Request> = tickets
        .iter()
        .zip(&states)
        .map(|(ticket, states)| Request {
            deployment: &ticket.deployment,
            demand: &ticket.demand,
            states,
        })
        .collect();
    let decisions = decide_together(&estate, &requests, now().as_second());
    let estate = Arc::new(estate);
    let classes = ModelClasses::of(&estate);
    tickets
        .iter()
        .zip(decisions)
        .zip(placed_before)
        .map(|((ticket, mut decided), (placed_before, placed))| {
            let md = ticket.deployment.as_ref();
            ctx.set_burst_states(&Estate::key_of(md), std::mem::take(&mut decided.states));
            let mut plans = std::mem::take(&mut decided.plans);
            // Artifacts: start the syncs the mode asks for; hold replicas placed on pools whose
            // store does not hold the verified model yet (see `artifact_plan`).
            let artifacts = Stage::new(ctx, &estate, &classes, md).map(|mut stage| {
                stage.after_plan(ctx, &estate, md, &mut plans);
                stage
            });
            ctx.record_decision(md, &plans);
            PlanOutcome {
                decided,
                plans,
                artifacts,
                estate: estate.clone(),
                placed_before,
                placed,
            }
        })
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

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn owner(md: &ModelDeployment) -> Option<OwnerReference> {
    md.controller_owner_ref(&())
}

/// Server-side applies every Deployment and Service of the plan; returns the ready replicas per
/// (component, pool), and the first error. A pool whose cluster fails is skipped (its pool
/// reconciler marks it unreachable, which moves the replicas).
///
/// Pools whose cluster does not answer (`reachability`) are not sent anything: their replicas
/// count as not ready. `hold` keeps stranded workloads at more replicas than the plan places
/// while their replacements elsewhere are not ready (see `stranded`).
async fn apply_children(
    md: &ModelDeployment,
    ctx: &Context,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    plans: &[ComponentPlan],
    fetches: &BTreeMap<String, workloads::ModelFetch>,
    reachability: &BTreeMap<String, Option<String>>,
    hold: &BTreeMap<stranded::Key, u32>,
) -> (BTreeMap<(String, String), u32>, Option<Error>) {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // One Service per (cluster, namespace, component), applied by the first placement there.
    let services: std::sync::Mutex<BTreeSet<(String, String, String)>> = Default::default();
    let placements = md
        .spec
        .components
        .iter()
        .zip(plans)
        .flat_map(|(component, plan)| {
            plan.placements
                .iter()
                .filter(|p| p.replicas > 0)
                .filter(|p| reachability.get(&p.pool).is_none_or(Option::is_none))
                .filter_map(move |placement| {
                    Some((component, placement, pools.get(&placement.pool)?))
                })
        });
    // Every placement at once: the children of a deployment appear (and turn ready) together,
    // and a reconcile takes one round trip per cluster, not one per child.
    let outcomes = futures::future::join_all(placements.map(|(component, placement, pool)| {
        let (params, services) = (&params, &services);
        async move {
            let outcome = async {
                let cluster = ctx.clusters.for_pool(pool).await?;
                let namespace = target_namespace(md, pool);
                let child = workloads::build_deployment(&Placement {
                    deployment: md,
                    component,
                    pool_name: &placement.pool,
                    pool: &pool.spec,
                    replicas: hold
                        .get(&(component.name.clone(), placement.pool.clone()))
                        .copied()
                        .unwrap_or(0)
                        .max(placement.replicas),
                    namespace: &namespace,
                    model: fetches.get(&placement.pool),
                    owner: if cluster.is_local() { owner(md) } else { None },
                });
                let name = child.metadata.name.clone().unwrap_or_default();
                let key = (
                    cluster.id.clone(),
                    "Deployment",
                    namespace.clone(),
                    name.clone(),
                );
                // Serialized once: to fingerprint it, and as the body of its apply.
                let body = AppliedBody::of(&child).map_err(Error::Serialize)?;
                let content = body.content;
                // Already applied as is, and the watch sees it at the generation that apply
                // returned: nothing to write. Its readiness is what the watch last saw; a
                // change to it triggers another reconcile. Applied a moment ago and not yet
                // seen so (the watch lags under load): the write is on its way, not repeated.
                let current = cluster.observed.as_ref().and_then(|observed| {
                    let generation = ctx.applied.unchanged(&key, content)?;
                    let seen = observed.get(&namespace, &name);
                    match seen {
                        Some(seen) if seen.generation == generation => Some(seen.ready_replicas),
                        _ if ctx.applied.applied_within(&key, content, WATCH_GRACE) => {
                            Some(seen.map_or(0, |s| s.ready_replicas))
                        }
                        _ => None,
                    }
                });
                let ready_now = match current {
                    Some(ready) => ready,
                    None => {
                        ctx.applied.forget(&key);
                        // The answer is read for generation and readiness only.
                        let api: Api<DeploymentView> =
                            Api::namespaced(cluster.client().await, &namespace);
                        let apply_patch = Patch::Apply(&*body.json);
                        let applied = cluster
                            .in_namespace(&namespace, || {
                                cluster.send(idempotent(|| api.patch(&name, params, &apply_patch)))
                            })
                            .await?;
                        ctx.applied
                            .record(key, content, applied.metadata.generation);
                        applied
                            .status
                            .and_then(|s| s.ready_replicas)
                            .unwrap_or(0)
                            .max(0) as u32
                    }
                };
                let first = services.lock().unwrap_or_else(|e| e.into_inner()).insert((
                    cluster.id.clone(),
                    namespace.clone(),
                    component.name.clone(),
                ));
                if first {
                    let service = workloads::build_service(
                        md,
                        component,
                        &namespace,
                        if cluster.is_local() { owner(md) } else { None },
                    );
                    let name = service.metadata.name.clone().unwrap_or_default();
                    let key = (
                        cluster.id.clone(),
                        "Service",
                        namespace.clone(),
                        name.clone(),
                    );
                    let content = content_hash(&service);
                    // A Service the index no longer has was deleted behind the operator's back.
                    let gone = cluster
                        .observed
                        .as_ref()
                        .is_some_and(|o| o.complete() && !o.has_service(&namespace, &name));
                    if gone || ctx.applied.unchanged(&key, content).is_none() {
                        let api: Api<Written<Service>> =
                            Api::namespaced(cluster.client().await, &namespace);
                        let apply_patch = Patch::Apply(&service);
                        ctx.applied.forget(&key);
                        cluster
                            .send(idempotent(|| api.patch(&name, params, &apply_patch)))
                            .await?;
                        ctx.applied.record(key, content, None);
                    }
                }
                Ok::<_, Error>(ready_now)
            }
            .await;
            (component, placement, pool, outcome)
        }
    }))
    .await;
    let mut ready = BTreeMap::new();
    let mut first_error = None;
    for (component, placement, pool, outcome) in outcomes {
        match outcome {
            Ok(n) => {
                ready.insert((component.name.clone(), placement.pool.clone()), n);
            }
            Err(err) => {
                warn!(pool = placement.pool, %err, "applying to the pool's cluster failed");
                ctx.metrics
                    .remote_errors
                    .get_or_create(&super::metrics::PoolLabels {
                        pool: placement.pool.clone(),
                        cloud: pool.spec.cloud.to_string(),
                    })
                    .inc();
                first_error.get_or_insert(err);
            }
        }
    }
    (ready, first_error)
}

/// Per pool, `Some(why)` when its cluster does not answer: the pool controller found it
/// unreachable, or a request of this operator did less than a period ago (the pool's status
/// may lag by up to a period and a probe).
async fn reachability(
    ctx: &Context,
    pools: &BTreeMap<String, Arc<ComputePool>>,
) -> BTreeMap<String, Option<String>> {
    let hold = ctx.settings.period.max(Duration::from_secs(1));
    let mut reachability = BTreeMap::new();
    for (name, pool) in pools {
        let reported = pool
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Reachable"))
            .filter(|c| c.status == "False")
            .map(|c| {
                if c.message.is_empty() {
                    c.reason.clone()
                } else {
                    c.message.clone()
                }
            });
        let why = match reported {
            Some(why) => Some(why),
            None => match ctx.clusters.for_pool(pool).await {
                Ok(cluster) => cluster.down_within(hold),
                Err(_) => None,
            },
        };
        reachability.insert(name.clone(), why);
    }
    reachability
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

/// Ready replicas per (component, pool) of the plan before this reconcile applies it: as the
/// children watch sees them, else as the status last reported; none in a pool cut off.
async fn ready_seen(
    ctx: &Context,
    md: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    plans: &[ComponentPlan],
    placed: &stranded::Placed,
    reachability: &BTreeMap<String, Option<String>>,
) -> BTreeMap<stranded::Key, u32> {
    let mut ready = BTreeMap::new();
    for plan in plans {
        for placement in plan.placements.iter().filter(|p| p.replicas > 0) {
            let key = (plan.key.component.clone(), placement.pool.clone());
            let Some(pool) = pools.get(&placement.pool) else {
                continue;
            };
            if reachability
                .get(&placement.pool)
                .is_some_and(Option::is_some)
            {
                ready.insert(key, 0);
                continue;
            }
            let watched = match ctx.clusters.for_pool(pool).await {
                Ok(cluster) => cluster.observed.as_ref().map(|observed| {
                    let name = workloads::deployment_name(md, &key.0, &key.1);
                    observed
                        .get(&target_namespace(md, pool), &name)
                        .map_or(0, |s| s.ready_replicas)
                }),
                Err(_) => None,
            };
            let seen = watched.unwrap_or_else(|| placed.get(&key).map_or(0, |&(_, r)| r));
            ready.insert(key, seen);
        }
    }
    ready
}

/// The (component, pool)s of unresolved stranded entries in reachable pools whose workload the
/// children watch knows to be gone (deleted behind the operator's back).
async fn stranded_gone(
    ctx: &Context,
    md: &ModelDeployment,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    entries: &[crate::api::StrandedReplicas],
    reachability: &BTreeMap<String, Option<String>>,
) -> BTreeSet<stranded::Key> {
    let mut gone = BTreeSet::new();
    for entry in entries.iter().filter(|e| !stranded::resolved(e)) {
        let (Some(pool), Some(None)) = (pools.get(&entry.pool), reachability.get(&entry.pool))
        else {
            continue;
        };
        let Ok(cluster) = ctx.clusters.for_pool(pool).await else {
            continue;
        };
        let Some(observed) = cluster.observed.as_ref().filter(|o| o.complete()) else {
            continue;
        };
        let name = workloads::deployment_name(md, &entry.component, &entry.pool);
        if observed.get(&target_namespace(md, pool), &name).is_none() {
            gone.insert((entry.component.clone(), entry.pool.clone()));
        }
    }
    gone
}

/// Field manager of the replica changes of stranded workloads outside the plan.
const SCALE_IN_MANAGER: &str = "skybridge.io/stranded-scale-in";

/// Scales the stranded workloads outside the plan to the replicas decided for them (`scale`):
/// only `spec.replicas` changes, so the replicas kept go on serving. Returns the first error.
async fn scale_stranded(
    md: &ModelDeployment,
    ctx: &Context,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    stranded: &StrandedOutcome,
) -> Option<Error> {
    let mut first_error = None;
    for ((component, pool_name), &replicas) in &stranded.scale {
        let Some(pool) = pools.get(pool_name) else {
            continue;
        };
        let result = async {
            let cluster = ctx.clusters.for_pool(pool).await?;
            let namespace = target_namespace(md, pool);
            let name = workloads::deployment_name(md, component, pool_name);
            let key = (
                cluster.id.clone(),
                "Deployment",
                namespace.clone(),
                name.clone(),
            );
            let content = content_hash(&("scale", replicas));
            if ctx.applied.unchanged(&key, content).is_some() {
                return Ok(());
            }
            info!(
                child = name,
                pool = pool_name,
                replicas,
                "scaling in a stranded workload"
            );
            let api: Api<Written<Deployment>> = Api::namespaced(cluster.client().await, &namespace);
            let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
            let params = PatchParams {
                field_manager: Some(SCALE_IN_MANAGER.into()),
                ..Default::default()
            };
            ctx.applied.forget(&key);
            let scaled = cluster
                .send(idempotent(|| api.patch(&name, &params, &patch)))
                .await;
            match scaled {
                Ok(written) => {
                    ctx.applied
                        .record(key, content, written.metadata.generation);
                    Ok(())
                }
                // Gone meanwhile: the next reconcile ends the entry.
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(err) => Err(Error::from(err)),
            }
        }
        .await;
        if let Err(err) = result {
            warn!(pool = pool_name, %err, "scaling in a stranded workload failed");
            first_error.get_or_insert(err);
        }
    }
    first_error
}

/// The (component, pool) pairs a plan uses, as one number.
fn placement_signature(plans: &[ComponentPlan]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for plan in plans {
        for placement in plan.placements.iter().filter(|p| p.replicas > 0) {
            (&plan.key.component, &placement.pool).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// When to look again without a trigger. Demand is read on its policy's interval; a deployment
/// that bursts, lacks replicas or waits for them to become ready is re-planned every period, so it fails back or fills up once
/// capacity frees elsewhere; a settled one (all private, all placed) waits for a trigger (its
/// spec, a pool, a policy, a child) or the slow resync.
fn next_reconcile(
    plans: &[ComponentPlan],
    all_ready: bool,
    reading: &super::demand::DemandReading,
    ctx: &Context,
) -> Duration {
    let unsettled = !all_ready
        || plans
            .iter()
            .any(|p| p.unplaced > 0 || p.replicas_in(Cloud::Public) > 0);
    if !reading.demand.is_empty() {
        reading.next_read.min(ctx.settings.period)
    } else if unsettled {
        ctx.settings.period
    } else {
        SETTLED_RESYNC.max(ctx.settings.period)
    }
}

/// Namespace of a deployment's children in a pool's cluster.
pub fn target_namespace(md: &ModelDeployment, pool: &ComputePool) -> String {
    pool.spec
        .cluster
        .as_ref()
        .and_then(|c| c.namespace.clone())
        .unwrap_or_else(|| md.namespace().unwrap_or_default())
}

/// What a sweep must not delete: the children in pools whose cluster does not answer (they
/// may still be serving; see `stranded`), and stranded children being scaled in.
#[derive(Default)]
struct Spared {
    cut_off: BTreeSet<String>,
    stranded: BTreeSet<stranded::Key>,
}

/// Deletes this deployment's children that the plan no longer has, in every pool's cluster;
/// with no plan, all of them. A remote cluster whose children watch has listed them is looked up
/// in its index, which is cheap enough for every reconcile; the others are listed, but only when
/// `list` is set (with no plan, always). With a plan, the clusters of pools cut off and the
/// stranded children in `spared` are left alone. Clusters are swept at once, each request within
/// its deadline, so one that does not answer holds up neither the others nor the reconcile for
/// long; those that fail are retried on the next reconcile. Returns whether every cluster was
/// swept.
async fn sweep_orphans(
    md: &ModelDeployment,
    ctx: &Context,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    plans: Option<&[ComponentPlan]>,
    list: bool,
    spared: &Spared,
) -> Result<bool> {
    let keep_deployments: BTreeSet<(String, String)> = plans
        .into_iter()
        .flatten()
        .flat_map(|plan| {
            plan.placements
                .iter()
                .filter(|p| p.replicas > 0)
                .map(|p| (plan.key.component.clone(), p.pool.clone()))
        })
        .chain(spared.stranded.iter().cloned())
        .collect();
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    let mut first_error = None;
    let mut complete = true;
    // Each pool's cluster, per cluster the (namespace, component)s kept there (their Services
    // stay even if the index has not seen their Deployments yet), and whether a pool there is
    // cut off.
    let mut clusters = BTreeMap::new();
    for (pool_name, pool) in pools {
        match ctx.clusters.for_pool(pool).await {
            Ok(cluster) => {
                let entry = clusters
                    .entry(cluster.id.clone())
                    .or_insert_with(|| (cluster, BTreeSet::new(), false));
                entry.2 |= spared.cut_off.contains(pool_name);
                for (component, _) in keep_deployments.iter().filter(|(_, p)| p == pool_name) {
                    entry
                        .1
                        .insert((target_namespace(md, pool), component.clone()));
                }
            }
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    let sweeps = clusters.into_values().map(|(cluster, kept_here, cut_off)| {
        let keep_deployments = &keep_deployments;
        let (namespace, name) = (&namespace, &name);
        async move {
            if cut_off && plans.is_some() {
                return Ok(false);
            }
            // Deleting a deployment must see every child, however new: it always lists.
            let indexed = plans.and(
                cluster
                    .observed
                    .as_ref()
                    .and_then(|o| o.children_of(namespace, name)),
            );
            let children = match indexed {
                Some(children) => children,
                None if list || plans.is_none() => list_children(&cluster, md).await?,
                None => return Ok(false),
            };
            delete_orphans(ctx, &cluster, keep_deployments, kept_here, children).await?;
            Ok::<_, Error>(true)
        }
    });
    for result in futures::future::join_all(sweeps).await {
        match result {
            Ok(swept) => complete &= swept,
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        // Deleting a deployment must not finish while children may remain somewhere.
        Some(err) if plans.is_none() => Err(err),
        Some(err) => {
            warn!(%err, "orphan sweep incomplete; retrying on the next reconcile");
            Ok(false)
        }
        None => Ok(complete),
    }
}

/// A deployment's children in one cluster, listed by their labels.
async fn list_children(
    cluster: &super::clusters::ClusterClient,
    md: &ModelDeployment,
) -> Result<Vec<Child>> {
    let labels = selector(&deployment_labels(
        &md.namespace().unwrap_or_default(),
        &md.name_any(),
    ));
    let by_labels = ListParams::default().labels(&labels);
    let child = |kind: ChildKind, meta: &kube::api::ObjectMeta| {
        let label = |key: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .cloned()
                .unwrap_or_default()
        };
        Child {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            component: label(LABEL_COMPONENT),
            pool: label(LABEL_POOL),
        }
    };
    let deployments: Api<Deployment> = Api::all(cluster.client().await);
    let services: Api<Service> = Api::all(cluster.client().await);
    let mut children: Vec<Child> = cluster
        .send(idempotent(|| deployments.list(&by_labels)))
        .await?
        .iter()
        .map(|d| child(ChildKind::Deployment, &d.metadata))
        .collect();
    children.extend(
        cluster
            .send(idempotent(|| services.list(&by_labels)))
            .await?
            .iter()
            .map(|s| child(ChildKind::Service, &s.metadata)),
    );
    Ok(children)
}

/// Deletes the Deployments of (component, pool)s not kept, then the Services of components with
/// no Deployment left in their namespace; `kept_here` are the (namespace, component)s the plan
/// places in this cluster.
async fn delete_orphans(
    ctx: &Context,
    cluster: &super::clusters::ClusterClient,
    keep: &BTreeSet<(String, String)>,
    kept_here: BTreeSet<(String, String)>,
    children: Vec<Child>,
) -> Result<()> {
    let (deployments, services): (Vec<Child>, Vec<Child>) = children
        .into_iter()
        .partition(|c| c.kind == ChildKind::Deployment);
    let mut components_left = kept_here;
    for child in deployments {
        if keep.contains(&(child.component.clone(), child.pool.clone())) {
            components_left.insert((child.namespace, child.component));
            continue;
        }
        info!(
            child = child.name,
            pool = child.pool,
            "deleting a workload the plan no longer has"
        );
        delete_child::<Deployment>(ctx, cluster, &child).await?;
    }
    for service in services {
        if components_left.contains(&(service.namespace.clone(), service.component.clone())) {
            continue;
        }
        delete_child::<Service>(ctx, cluster, &service).await?;
    }
    Ok(())
}

/// Deletes one child of kind `K` (gone already is fine) and forgets what was applied to it.
async fn delete_child<K>(
    ctx: &Context,
    cluster: &super::clusters::ClusterClient,
    child: &Child,
) -> Result<()>
where
    K: k8s_openapi::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(cluster.client().await, &child.namespace);
    ctx.applied.forget(&(
        cluster.id.clone(),
        K::KIND,
        child.namespace.clone(),
        child.name.clone(),
    ));
    let background = DeleteParams::background();
    ignore_not_found(
        cluster
            .send(idempotent(|| api.delete(&child.name, &background)))
            .await,
    )?;
    Ok(())
}

fn ignore_not_found<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

async fn cleanup(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    let pools: BTreeMap<String, Arc<ComputePool>> = ctx
        .pools
        .state()
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect();
    sweep_orphans(md, ctx, &pools, None, true, &Spared::default()).await?;
    sweep_store_secrets(md, ctx, &pools, None).await?;
    // traffic: routes and exports carry no owner reference in remote clusters.
    if !ctx.traffic.cleanup(ctx, md, &pools).await {
        return Err(Error::Cluster {
            pool: "(traffic)".into(),
            message: "routes or exports remain in a cluster that did not answer".into(),
        });
    }
    if let Some(syncer) = &ctx.artifacts {
        syncer.forget(&kube::runtime::reflector::ObjectRef::from_obj(md));
    }
    ctx.forget_burst_states(&Estate::key_of(md));
    ctx.forget_stranded(&Estate::key_of(md));
    publish(
        ctx,
        md,
        EventType::Normal,
        "Deleted",
        "Cleanup",
        "removed every workload in every cluster",
    )
    .await;
    Ok(Action::await_change())
}

/// Writes status by server-side apply when it says something new; returns whether it wrote.
async fn write_status(
    md: &ModelDeployment,
    ctx: &Context,
    status: ModelDeploymentStatus,
) -> Result<bool> {
    if let Some(previous) = &md.status
        && same_status(previous, &status)
    {
        return Ok(false);
    }
    let api: Api<Written<ModelDeployment>> = Api::namespaced(
        ctx.clusters.local().client().await,
        &md.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    });
    let (name, params) = (md.name_any(), PatchParams::apply(FIELD_MANAGER).force());
    let apply_patch = Patch::Apply(&patch);

    idempotent(|| api.patch_status(&name, &params, &apply_patch)).await?;
    Ok(true)
}

/// Equal but for condition times.
fn same_status(a: &ModelDeploymentStatus, b: &ModelDeploymentStatus) -> bool {
    super::conditions::same(&a.conditions, &b.conditions)
        && a.observed_generation == b.observed_generation
        && a.ready_replicas == b.ready_replicas
        && a.desired_replicas == b.desired_replicas
        && a.cost_per_hour == b.cost_per_hour
        && a.components == b.components
        && a.artifacts == b.artifacts
        && a.stranded == b.stranded
}

fn record_metrics(md: &ModelDeployment, ctx: &Context, status: &ModelDeploymentStatus) {
    let labels = DeploymentLabels {
        namespace: md.namespace().unwrap_or_default(),
        name: md.name_any(),
    };
    let public: u32 = status
        .components
        .iter()
        .flat_map(|c| &c.placements)
        .filter(|p| p.cloud == Cloud::Public)
        .map(|p| p.replicas)
        .sum();
    ctx.metrics
        .bursting
        .get_or_create(&labels)
        .set(i64::from(public > 0));
    ctx.metrics
        .cost_per_hour
        .get_or_create(&labels)
        .set(status.cost_per_hour);
}

/// Events for what changed between two statuses: placements, bursts, shortfalls, decisions.
fn placement_events(
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

fn condition_message(status: &ModelDeploymentStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn publish(
    ctx: &Context,
    md: &ModelDeployment,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        // The Events API caps notes at 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        warn!(%err, reason, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentStatus, PlacementStatus};
    use crate::operator::clusters::Clusters;
    use crate::operator::context::Settings;
    use crate::operator::metrics::Metrics;
    use kube::runtime::{reflector, watcher};

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
    ) -> Context {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:1".parse().expect("URL"),
        ))
        .expect("client");
        Context::new(
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
        )
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
                        last_transition_time: Time(now()),
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
            since: Time(now()),
            action: StrandedAction::LeftAlone,
            action_time: Time(now()),
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
}
