//! One reconcile's rollout, decided (issue #17): from the spec, `status.rollout`, the action
//! annotation, the plan and what was seen, which versions serve with how many replicas per
//! (component, pool), the `status.rollout` to write, its conditions, the Events, and whether the
//! annotation was acted on. Pure, the clock passed in; called by the reconcile's decide step.

use super::children::VersionNames;
use super::inputs::{Key, Seen, component_inputs};
use super::{
    Intent, canary, conditions, intent, refused, requested_action, same_model, state_of, status_of,
    steady_status,
};
use crate::api::{
    AnalysisResult, ComputePool, DataClass, ModelDeployment, ROLLOUT_ACTION_ANNOTATION,
    RolloutPhase, RolloutStatus, RolloutVersion,
};
use crate::operator::kubernetes::conditions::Decided;
use crate::planner::ComponentPlan;
use crate::rollout::{RolloutInput, RolloutState, decide};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which versions serve.
#[derive(Clone, Debug, PartialEq)]
pub enum Serving {
    /// One version serves everything (no rollout under way), under `names`.
    One {
        stable: RolloutVersion,
        names: VersionNames,
    },
    /// Both: replicas per (component, pool) as (old, new); the new version takes `share`
    /// percent of each routed component's traffic.
    Two {
        from: RolloutVersion,
        to: RolloutVersion,
        old: VersionNames,
        new: VersionNames,
        replicas: BTreeMap<Key, (u32, u32)>,
        share: u32,
    },
}

impl Serving {
    /// The names the stable version serves under.
    pub fn stable_names(&self) -> &VersionNames {
        match self {
            Serving::One { names, .. } => names,
            Serving::Two { old, .. } => old,
        }
    }
}

/// What a reconcile does about rollouts.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutOutcome {
    pub serving: Serving,
    /// `status.rollout` to write; `None`: leave what is there.
    pub record: Option<RolloutStatus>,
    /// Conditions the rollout sets (none without a canary strategy).
    pub conditions: Vec<Decided>,
    /// Events: (warning, reason, note).
    pub events: Vec<(bool, &'static str, String)>,
    /// The action annotation was read and acted on (or had nothing to act on): remove it once
    /// the status is written.
    pub remove_annotation: bool,
    /// When to decide again by itself (a pause or a drain ends), in seconds.
    pub next_change_at: Option<i64>,
}

/// What one reconcile needs to decide its rollout.
pub struct RolloutContext<'a> {
    pub md: &'a ModelDeployment,
    pub plans: &'a [ComponentPlan],
    pub pools: &'a BTreeMap<String, Arc<ComputePool>>,
    /// The class of the deployment's model (`ModelClasses::class_of`).
    pub class: DataClass,
    pub seen: &'a Seen,
    /// An analysis round measured now (empty: none measured).
    pub measured: Vec<AnalysisResult>,
    /// The verified digest of the spec's model, when known (recorded with the stable version,
    /// so that its pods keep verifying it while another version rolls out).
    pub digest: Option<String>,
    pub now: Timestamp,
}

/// Decides `ctx.md`'s rollout for this reconcile.
pub fn decide_rollout(ctx: RolloutContext<'_>) -> RolloutOutcome {
    let md = ctx.md;
    let mut events = Vec::new();
    let has_annotation = md
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ROLLOUT_ACTION_ANNOTATION));
    // A value that names no action is left for the user to correct, and reported.
    let action = match requested_action(md) {
        Ok(action) => action,
        Err(message) => {
            events.push((true, "RolloutActionInvalid", message));
            None
        }
    };
    let steady = |stable: RolloutVersion, events: Vec<_>, note_ignored: bool| {
        let mut events = events;
        if note_ignored && action.is_some() {
            events.push((
                false,
                "RolloutActionIgnored",
                format!("{ROLLOUT_ACTION_ANNOTATION}: no rollout to act on"),
            ));
        }
        let recorded = md.status.as_ref().and_then(|s| s.rollout.as_ref());
        let names = VersionNames::stable(md);
        let mut stable = stable;
        if stable.digest.is_none() {
            stable.digest = ctx.digest.clone();
        }
        let serving =
            recorded.filter(|r| r.phase == RolloutPhase::Succeeded && same_model(&r.to, &stable));
        let up_to_date =
            serving.is_some_and(|r| stable.digest.is_none() || r.to.digest == stable.digest);
        // A canary deployment records the version it serves (and its digest), so that a later
        // change of `spec.model` has something to roll from; a rollout that succeeded stays
        // recorded as it ended, with the digest learnt since.
        let record = (canary(md).is_some() && !up_to_date).then(|| match serving {
            Some(r) => {
                let mut r = r.clone();
                r.to.digest = stable.digest.clone();
                r
            }
            None => steady_status(stable.clone(), Time(ctx.now), names.key.clone()),
        });
        let conditions = match (canary(md), record.as_ref().or(recorded)) {
            (Some(_), Some(status)) => conditions(status),
            _ => Vec::new(),
        };
        RolloutOutcome {
            serving: Serving::One { stable, names },
            record,
            conditions,
            events,
            remove_annotation: has_annotation && action.is_some(),
            next_change_at: None,
        }
    };
    let (from, to, previous) = match intent(md) {
        Intent::Steady { stable } => return steady(stable, events, true),
        Intent::Rollout { from, to, previous } => (from, to, previous),
    };
    let Some(spec) = canary(md) else {
        return steady(to, events, true);
    };
    if previous.is_none()
        && let Some(why) = refused(&from, &to)
    {
        // The store at that prefix holds the new model once it syncs: the old one cannot be
        // kept serving, so the change rolls out all at once, said loudly.
        events.push((true, "RolloutRefused", why));
        return steady(to, events, false);
    }
    let state = previous
        .as_deref()
        .map(state_of)
        .unwrap_or_else(|| RolloutState::start(ctx.now.as_second()));
    if previous.is_none() {
        events.push((
            false,
            "RolloutStarted",
            format!("rolling out {} in place of {}", to.version, from.version),
        ));
    }
    let components = component_inputs(md, ctx.plans, ctx.pools, ctx.class, ctx.seen);
    let round = (!ctx.measured.is_empty())
        .then(|| ctx.measured.iter().map(|r| r.outcome).collect::<Vec<_>>());
    let decision = decide(RolloutInput {
        spec,
        previous: &state,
        components: &components,
        action,
        round,
        now: ctx.now.as_second(),
    });
    events.extend(
        decision
            .events
            .iter()
            .map(|(reason, note, warning)| (*warning, *reason, note.clone())),
    );
    let replicas = decision
        .components
        .iter()
        .flat_map(|c| {
            c.pools
                .iter()
                .map(|p| ((c.name.clone(), p.pool.clone()), (p.old, p.new)))
        })
        .collect();
    let previous_results = previous
        .as_deref()
        .map(|p| p.analysis.as_slice())
        .unwrap_or_default();
    let old = VersionNames::stable(md);
    let status = status_of(
        from.clone(),
        to.clone(),
        &decision,
        previous_results,
        ctx.measured,
        old.key.clone(),
    );
    RolloutOutcome {
        serving: Serving::Two {
            new: VersionNames::keyed(&to),
            from,
            to,
            old,
            replicas,
            share: decision.state.traffic_percent,
        },
        conditions: conditions(&status),
        record: Some(status),
        events,
        remove_annotation: has_annotation && action.is_some(),
        next_change_at: decision.next_change_at,
    }
}
