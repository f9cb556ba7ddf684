//! One tick of burst controllers and the planner, composed once: the operator (one tick per
//! reconcile, planning the whole estate) and `skybridge simulate` (one tick per step, a memoised
//! planner with start-up delays) both run [`tick`], so what is tuned offline is what runs.
//!
//! A tick: every controlled component recommends ([`BurstController::recommend_with`]), the
//! decisions are planned together (budgets span a policy's components), and every component
//! observes what was placed ([`BurstController::observe_plan_with`]).

use super::controller::{
    BurstController, ControllerState, EventSink, Observation, PlacementSummary, Recommendation,
    Tick,
};
use super::events::{Event, EventKind};
use crate::planner::{Plan, PlanInput, plan};

/// Where a tick's decisions are planned.
pub trait Placement {
    /// Sets component `index`'s decision for the next plan.
    fn request(&mut self, index: usize, desired: u32, rebalance: bool);
    /// Plans the decisions requested since the last plan. `false` when nothing changed since
    /// then: what the last plan placed stands, and there is nothing new to observe.
    fn plan(&mut self) -> bool;
    /// What the last plan placed of component `index`.
    fn placed(&self, index: usize) -> &PlacementSummary;
}

/// One controlled component in a tick.
pub struct Controlled<'a, S> {
    /// Index of the component in what the [`Placement`] plans.
    pub index: usize,
    pub controller: &'a BurstController,
    /// Updated in place.
    pub state: &'a mut ControllerState,
    pub observation: Observation,
    /// Where the component's events go.
    pub events: &'a mut S,
    /// The tick's decision, filled by [`tick`].
    pub decided: Option<Tick>,
}

/// One tick of every controlled component: recommend each, plan once for all, observe the plan.
#[inline]
pub fn tick<P: Placement + ?Sized, S: EventSink>(
    controlled: &mut [Controlled<'_, S>],
    placement: &mut P,
    now: i64,
) {
    for c in controlled.iter_mut() {
        let decided = c
            .controller
            .recommend_with(c.state, &c.observation, now, c.events);
        placement.request(c.index, decided.desired, decided.rebalance);
        c.decided = Some(decided);
    }
    if placement.plan() {
        for c in controlled.iter_mut() {
            c.controller
                .observe_plan_with(c.state, placement.placed(c.index), now, c.events);
        }
    }
}

/// The planner over a whole estate as a [`Placement`]: what the operator plans with.
pub struct EstatePlacement {
    pub input: PlanInput,
    pub planned: Option<Plan>,
    /// Per component of `input`: what the last plan placed.
    summaries: Vec<PlacementSummary>,
}

impl EstatePlacement {
    pub fn new(input: PlanInput) -> Self {
        Self {
            input,
            planned: None,
            summaries: Vec::new(),
        }
    }
}

impl Placement for EstatePlacement {
    fn request(&mut self, index: usize, desired: u32, rebalance: bool) {
        let component = &mut self.input.components[index];
        component.desired = desired;
        component.rebalance = rebalance;
    }

    fn plan(&mut self) -> bool {
        let planned = plan(&self.input);
        self.summaries = planned
            .components
            .iter()
            .map(PlacementSummary::from_plan)
            .collect();
        self.planned = Some(planned);
        true
    }

    fn placed(&self, index: usize) -> &PlacementSummary {
        &self.summaries[index]
    }
}

/// The outcome of one reconcile for one controlled component.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Index of the component in the planner input.
    pub index: usize,
    pub recommendation: Recommendation,
    pub placement: PlacementSummary,
    /// Every event of the tick: the recommendation's, then the placement's.
    pub events: Vec<Event>,
}

/// Whether an event comes from the recommendation (rather than from observing the plan).
fn from_recommendation(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::ScaleUp
            | EventKind::ScaleDown
            | EventKind::Prewarm
            | EventKind::MetricUnavailable
    )
}

/// One reconcile of every controlled component of an estate, as the operator runs it: [`tick`]
/// with the planner over the whole estate. `input` carries every component with its observed
/// `current` replicas per pool; `controlled[i] = (component index in input, controller, state,
/// observation)`. Returns the new states (same order), the plan (per pool placements for every
/// component) and the decisions.
pub fn reconcile(
    input: &PlanInput,
    controlled: &[(usize, &BurstController, &ControllerState, Observation)],
    now: i64,
) -> (Vec<ControllerState>, Plan, Vec<Decision>) {
    reconcile_owned(input.clone(), controlled, now)
}

/// `reconcile` on an input the caller gives up, saving a copy of the whole estate.
pub fn reconcile_owned(
    input: PlanInput,
    controlled: &[(usize, &BurstController, &ControllerState, Observation)],
    now: i64,
) -> (Vec<ControllerState>, Plan, Vec<Decision>) {
    let mut states: Vec<ControllerState> = controlled.iter().map(|c| c.2.clone()).collect();
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); controlled.len()];
    let mut placement = EstatePlacement::new(input);
    {
        let mut ticking: Vec<Controlled<'_, Vec<Event>>> = controlled
            .iter()
            .zip(states.iter_mut())
            .zip(events.iter_mut())
            .map(
                |((&(index, controller, _, observation), state), events)| Controlled {
                    index,
                    controller,
                    state,
                    observation,
                    events,
                    decided: None,
                },
            )
            .collect();
        tick(&mut ticking, &mut placement, now);
        let decided: Vec<Tick> = ticking
            .iter()
            .map(|c| c.decided.expect("every component was decided"))
            .collect();
        drop(ticking);
        let decisions = controlled
            .iter()
            .zip(decided)
            .zip(events)
            .map(|((&(index, ..), decided), events)| Decision {
                index,
                recommendation: Recommendation {
                    desired: decided.desired,
                    rebalance: decided.rebalance,
                    recommended: decided.recommended,
                    why: decided.why,
                    events: events
                        .iter()
                        .filter(|e| from_recommendation(e.kind))
                        .cloned()
                        .collect(),
                },
                placement: placement.placed(index).clone(),
                events,
            })
            .collect();
        let planned = placement.planned.take().expect("the tick planned");
        (states, planned, decisions)
    }
}
