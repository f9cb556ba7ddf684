//! Replays sampled demand through a scaler and the planner, with the pools' start-up delays: a
//! replica requested at `t` serves from `t + startupSeconds` of its pool. Pure: demand in,
//! metrics and (optionally) the per-step series out.
//!
//! Each step at time `t`: replicas whose start-up ended are ready; the scaler decides; when the
//! decision changed, the planner places it (memoised: the planner is deterministic, so the same
//! decision from the same placement always gives the same plan); the interval `[t, t + step)` is
//! then served by the ready replicas and paid for every requested replica.
//!
//! Moves (a replica removed from one pool while another pool gains one, e.g. on failback) are
//! make-before-break: removed ready replicas keep serving, and costing, until enough new ones
//! are ready.

use super::world::World;
use crate::burst::step::{Controlled, Placement, tick};
use crate::burst::{
    BurstController, ControllerState, EventCounts, EventKind, Observation, PlacementSummary,
    replicas_for,
};
use crate::planner::plan;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// The figures of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunMetrics {
    /// Fixed private cost plus public replica cost over the run.
    pub cost: f64,
    /// `sum(max(0, demand - ready capacity)) / sum(demand)`.
    pub unmet_demand_fraction: f64,
    pub public_replica_hours: f64,
    /// Times public replicas went from none to some.
    pub burst_events: u64,
    /// Steps at which the requested replica count changed.
    pub scale_events: u64,
    /// Replicas added or removed over the run: the sum of each change's size (a block of 8
    /// replicas counts 8 here and 1 in `scale_events`), to compare scalers whose changes differ
    /// in size.
    pub replica_changes: u64,
    /// Of `cost`: the owned private capacity, paid whether used or not.
    pub private_cost: f64,
    /// Of `cost`: public replicas, paid while requested (starting up included).
    pub public_cost: f64,
    pub peak_public_replicas: u32,
    /// Private replicas paid for (requested, starting up included, or draining) over the run.
    pub private_replica_hours: f64,
    /// The chargeback view: private replica-hours at their pools' prices (an internal
    /// chargeback, as if private capacity were rented by the hour) plus `publicCost`.
    pub chargeback_cost: f64,
}

/// What a run's scaler saw and said at each step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub start: i64,
    pub step: i64,
    pub pools: Vec<String>,
    pub public: Vec<bool>,
    pub demand: Vec<f64>,
    /// Ready (serving) replicas, `pools.len()` per step.
    pub ready: Vec<u32>,
    /// Requested replicas (ready or starting), `pools.len()` per step.
    pub requested: Vec<u32>,
    /// Capacity of one replica, to turn replicas into demand units.
    pub target_per_replica: f64,
}

/// The replay's output.
#[derive(Clone, Debug, Default)]
pub struct RunOutput {
    pub metrics: RunMetrics,
    pub series: Option<Series>,
    /// Controller events by kind (empty for scalers without a controller).
    pub events: BTreeMap<EventKind, u64>,
    /// Planner calls made (cache misses), for the speed report.
    pub planner_calls: u64,
    /// What the capacity events did (issue #19); zero without events.
    pub capacity: super::capacity_events::CapacityFigures,
}

/// What a scaler sees each step.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub requested: u32,
    pub public_requested: u32,
    pub ready: u32,
    pub starting: u32,
    pub private_capacity: u32,
}

/// Decides the replica count each step and has `placement` plan it (the simulated component is
/// index 0 of `placement`).
pub trait Scaler {
    fn step(&mut self, now: i64, demand: f64, view: &View, placement: &mut dyn Placement);
    /// Replicas the run starts with, placed and ready, when the first demand needs `need` and
    /// the private pools can hold `private_capacity`: by default what the first demand needs.
    fn initial_replicas(&self, need: u32, _private_capacity: u32) -> u32 {
        need
    }
    /// The run starts with this placement ready (no decision made it).
    fn warm_start(&mut self, _placed: &PlacementSummary, _now: i64) {}
    fn events(&self) -> BTreeMap<EventKind, u64> {
        BTreeMap::new()
    }
}

/// The burst controller as a scaler.
pub struct ControllerScaler<'a> {
    pub controller: &'a BurstController,
    pub state: ControllerState,
    /// Events by kind (messages are not formatted: nobody reads them here).
    pub counts: EventCounts,
}

impl<'a> ControllerScaler<'a> {
    pub fn new(controller: &'a BurstController) -> Self {
        Self {
            controller,
            state: ControllerState::default(),
            counts: EventCounts::default(),
        }
    }
}

impl Scaler for ControllerScaler<'_> {
    /// The operator's own tick ([`crate::burst::step::tick`]) on the simulated placement.
    fn step(&mut self, now: i64, demand: f64, view: &View, placement: &mut dyn Placement) {
        let observation = Observation {
            demand: Some(demand),
            current_replicas: view.requested,
            public_replicas: view.public_requested,
            private_capacity: view.private_capacity,
        };
        let mut controlled = [Controlled {
            index: 0,
            controller: self.controller,
            state: &mut self.state,
            observation,
            events: &mut self.counts,
            decided: None,
        }];
        tick(&mut controlled, placement, now);
    }

    /// A controller keeping owned private capacity warm has held it since demand first needed
    /// it: the replay starts from that steady state, not from a fresh install.
    fn initial_replicas(&self, need: u32, private_capacity: u32) -> u32 {
        if self.controller.config().keep_private_warm {
            need.max(private_capacity)
        } else {
            need
        }
    }

    fn warm_start(&mut self, placed: &PlacementSummary, now: i64) {
        self.controller
            .observe_plan_with(&mut self.state, placed, now, &mut self.counts);
    }

    fn events(&self) -> BTreeMap<EventKind, u64> {
        self.counts.to_map()
    }
}

/// A multiplicative hash (as rustc's Fx hash) for the placer's short integer keys: the default
/// SipHash is built against adversarial keys, which these are not, and costs more than the rest
/// of a cache hit.
#[derive(Default)]
struct KeyHasher(u64);

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ (rest.len() as u64) << 56);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Memoised planner for one world: the plan of the component for (decision, current placement).
struct Placer<'w> {
    world: &'w World,
    work: crate::planner::PlanInput,
    /// Key to an index into `plans`: a hit is one hash, and returns no borrow of the map.
    cache: HashMap<Vec<u32>, usize, BuildHasherDefault<KeyHasher>>,
    plans: Vec<(Vec<u32>, PlacementSummary)>,
    key: Vec<u32>,
    calls: u64,
    /// Capacity events (issue #19): per pool, short (1) or not, and replicas of capacity lost
    /// to interrupted nodes; part of the cache key. Empty without events.
    conditions: Vec<(bool, u32)>,
}

impl<'w> Placer<'w> {
    fn new(world: &'w World) -> Self {
        Self {
            world,
            work: world.input.clone(),
            cache: HashMap::default(),
            plans: Vec::new(),
            key: Vec::new(),
            calls: 0,
            conditions: Vec::new(),
        }
    }

    /// Index into `plans` of the plan for the decision from `current`.
    fn place(&mut self, desired: u32, rebalance: bool, current: &[u32]) -> usize {
        self.key.clear();
        self.key.push(desired);
        self.key.push(u32::from(rebalance));
        self.key.extend_from_slice(current);
        for &(short, lost) in &self.conditions {
            self.key.push(u32::from(short));
            self.key.push(lost);
        }
        if let Some(&hit) = self.cache.get(self.key.as_slice()) {
            return hit;
        }
        self.calls += 1;
        let w = self.world;
        if !self.conditions.is_empty() {
            super::capacity_events::condition_pools(w, &mut self.work.pools, &self.conditions);
        }
        let component = &mut self.work.components[w.index];
        component.desired = desired.clamp(w.min(), w.max());
        component.rebalance = rebalance;
        component.current = current
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(p, &n)| (w.input.pools[p].name.clone(), n))
            .collect();
        let planned = plan(&self.work);
        let mine = &planned.components[w.index];
        let mut counts = vec![0; w.input.pools.len()];
        for placement in &mine.placements {
            if let Some(p) = w.input.pools.iter().position(|x| x.name == placement.pool) {
                counts[p] = placement.replicas;
            }
        }
        let summary = PlacementSummary::from_plan(mine);
        self.cache.insert(self.key.clone(), self.plans.len());
        self.plans.push((counts, summary));
        self.plans.len() - 1
    }
}

/// Replicas of the component per pool: requested, ready, starting (with when they will be
/// ready) and draining (removed but serving until replacements are ready), with the totals the
/// loop needs kept up to date only when something changes.
struct Fleet<'w> {
    world: &'w World,
    requested: Vec<u32>,
    ready: Vec<u32>,
    draining: Vec<u32>,
    pending: Vec<VecDeque<(i64, u32)>>,
    /// Earliest time a starting replica becomes ready; `i64::MAX` when none is starting.
    next_ready: i64,
    requested_total: u32,
    ready_total: u32,
    draining_total: u32,
    public_requested: u32,
    /// Public replicas paid for (requested plus draining) and their cost per hour.
    public_paid: u32,
    public_cost_per_hour: f64,
    /// The same for private replicas, at their pools' chargeback prices.
    private_paid: u32,
    private_cost_per_hour: f64,
}

impl<'w> Fleet<'w> {
    fn new(world: &'w World) -> Self {
        let pools = world.input.pools.len();
        Self {
            world,
            requested: vec![0; pools],
            ready: vec![0; pools],
            draining: vec![0; pools],
            pending: vec![VecDeque::new(); pools],
            next_ready: i64::MAX,
            requested_total: 0,
            ready_total: 0,
            draining_total: 0,
            public_requested: 0,
            public_paid: 0,
            public_cost_per_hour: 0.0,
            private_paid: 0,
            private_cost_per_hour: 0.0,
        }
    }

    /// Recomputes the totals after a change.
    fn totals(&mut self) {
        let w = self.world;
        self.requested_total = self.requested.iter().sum();
        self.ready_total = self.ready.iter().sum();
        self.draining_total = self.draining.iter().sum();
        self.public_requested = 0;
        self.public_paid = 0;
        self.public_cost_per_hour = 0.0;
        self.private_paid = 0;
        self.private_cost_per_hour = 0.0;
        for p in 0..self.requested.len() {
            let paid = self.requested[p] + self.draining[p];
            if w.public[p] {
                self.public_requested += self.requested[p];
                self.public_paid += paid;
                self.public_cost_per_hour += f64::from(paid) * w.replica_cost[p];
            } else {
                self.private_paid += paid;
                self.private_cost_per_hour += f64::from(paid) * w.replica_cost[p];
            }
        }
        self.next_ready = self
            .pending
            .iter()
            .filter_map(|q| q.front().map(|&(at, _)| at))
            .min()
            .unwrap_or(i64::MAX);
    }

    /// Replicas whose start-up has ended become ready.
    fn promote(&mut self, now: i64) {
        if self.next_ready > now {
            return;
        }
        for p in 0..self.pending.len() {
            while let Some(&(at, n)) = self.pending[p].front() {
                if at > now {
                    break;
                }
                self.ready[p] += n;
                self.pending[p].pop_front();
            }
        }
        self.totals();
    }

    /// Moves to the planned counts: new replicas start, removed ones stop (starting ones first,
    /// newest first), removed ready ones drain.
    fn apply(&mut self, counts: &[u32], now: i64) {
        for (p, &new) in counts.iter().enumerate() {
            let old = self.requested[p];
            if new > old {
                self.pending[p].push_back((now + self.world.startup[p], new - old));
            } else if new < old {
                let mut cut = old - new;
                while cut > 0 {
                    let Some(last) = self.pending[p].back_mut() else {
                        break;
                    };
                    let n = last.1.min(cut);
                    last.1 -= n;
                    cut -= n;
                    if last.1 == 0 {
                        self.pending[p].pop_back();
                    }
                }
                self.ready[p] -= cut;
                self.draining[p] += cut;
            }
            self.requested[p] = new;
        }
        self.totals();
    }

    /// Make-before-break: keeps removed replicas only while their replacements are not ready,
    /// releasing the most expensive first.
    fn release_draining(&mut self) {
        if self.draining_total == 0 {
            return;
        }
        let keep = self.requested_total.saturating_sub(self.ready_total);
        if self.draining_total <= keep {
            return;
        }
        let mut release = self.draining_total - keep;
        let w = self.world;
        while release > 0 {
            let p = (0..self.draining.len())
                .filter(|&p| self.draining[p] > 0)
                .max_by(|&a, &b| w.replica_cost[a].total_cmp(&w.replica_cost[b]))
                .expect("draining replicas exist");
            let n = self.draining[p].min(release);
            self.draining[p] -= n;
            release -= n;
        }
        self.totals();
    }
}

/// The simulated component's placement: the memoised planner, applied to the fleet with its
/// start-up delays. Plans only when the decision changed (the planner is deterministic, and
/// re-planning its own plan changes nothing).
struct SimPlacement<'p, 'w> {
    placer: &'p mut Placer<'w>,
    fleet: &'p mut Fleet<'w>,
    planned_for: &'p mut (u32, bool),
    /// Index into `placer.plans` of the plan in force.
    current: &'p mut usize,
    requested: (u32, bool),
    now: i64,
}

impl Placement for SimPlacement<'_, '_> {
    fn request(&mut self, _index: usize, desired: u32, rebalance: bool) {
        self.requested = (desired, rebalance);
    }

    fn plan(&mut self) -> bool {
        let (desired, rebalance) = self.requested;
        // Rebalancing only matters while something sits on a public pool.
        let rebalance = rebalance && self.fleet.public_requested > 0;
        if (desired, rebalance) == *self.planned_for {
            return false;
        }
        *self.planned_for = (desired, rebalance);
        let index = self.placer.place(desired, rebalance, &self.fleet.requested);
        self.fleet.apply(&self.placer.plans[index].0, self.now);
        *self.current = index;
        true
    }

    fn placed(&self, _index: usize) -> &PlacementSummary {
        &self.placer.plans[*self.current].1
    }
}

/// Replays `demand` (one value per `step` seconds from `start`) in `world`. `progress` is told the
/// step index now and then.
pub fn replay(
    world: &World,
    demand: &[f64],
    start: i64,
    step: i64,
    scaler: &mut dyn Scaler,
    record: bool,
    progress: &mut dyn FnMut(usize),
) -> RunOutput {
    let pools = world.input.pools.len();
    let mut placer = Placer::new(world);
    let mut fleet = Fleet::new(world);
    let mut metrics = RunMetrics::default();
    let mut series = record.then(|| Series {
        start,
        step,
        pools: world.input.pools.iter().map(|p| p.name.clone()).collect(),
        public: world.public.clone(),
        demand: Vec::with_capacity(demand.len()),
        ready: Vec::with_capacity(demand.len() * pools),
        requested: Vec::with_capacity(demand.len() * pools),
        target_per_replica: world.target(),
    });
    // Warm start: the run begins with what the first demand needs, placed and ready.
    let first = demand.first().copied().unwrap_or(0.0);
    let initial = scaler
        .initial_replicas(world.need(first), world.private_capacity)
        .clamp(world.min(), world.max());
    let mut current = placer.place(initial, true, &fleet.requested);
    {
        let counts = &placer.plans[current].0;
        fleet.requested.clone_from(counts);
        fleet.ready.clone_from(counts);
        fleet.totals();
    }
    let mut planned_for = (initial, true);
    scaler.warm_start(&placer.plans[current].1, start);
    let hours = step as f64 / 3600.0;
    let target = world.target();
    let (mut demand_sum, mut unmet_sum) = (0.0, 0.0);
    let (mut public_cost, mut public_replica_steps) = (0.0, 0u64);
    let (mut private_charge, mut private_replica_steps) = (0.0, 0u64);
    let mut public_before = fleet.public_requested > 0;
    let mut capacity = CapacityRun::new(world);
    let mut total_before = fleet.requested_total;

    for (k, &d) in demand.iter().enumerate() {
        if k & 0xffff == 0 {
            progress(k);
        }
        let now = start + k as i64 * step;
        fleet.promote(now);
        let view = View {
            requested: fleet.requested_total,
            public_requested: fleet.public_requested,
            ready: fleet.ready_total,
            starting: fleet.requested_total - fleet.ready_total,
            private_capacity: world.private_capacity,
        };
        let requested = planned_for;
        scaler.step(
            now,
            d,
            &view,
            &mut SimPlacement {
                placer: &mut placer,
                fleet: &mut fleet,
                planned_for: &mut planned_for,
                current: &mut current,
                requested,
                now,
            },
        );
        fleet.release_draining();
        if let Some(timeline) = world.capacity_events.as_deref() {
            capacity.step(
                timeline,
                now,
                step,
                &mut fleet,
                &mut placer,
                planned_for,
                &mut current,
            );
        }
        // Account for [now, now + step).
        let capacity = f64::from(fleet.ready_total + fleet.draining_total) * target;
        demand_sum += d;
        unmet_sum += (d - capacity).max(0.0);
        public_cost += fleet.public_cost_per_hour;
        public_replica_steps += u64::from(fleet.public_paid);
        private_charge += fleet.private_cost_per_hour;
        private_replica_steps += u64::from(fleet.private_paid);
        metrics.peak_public_replicas = metrics.peak_public_replicas.max(fleet.public_paid);
        let public_now = fleet.public_requested > 0;
        if public_now && !public_before {
            metrics.burst_events += 1;
        }
        public_before = public_now;
        if fleet.requested_total != total_before {
            metrics.scale_events += 1;
            metrics.replica_changes += u64::from(fleet.requested_total.abs_diff(total_before));
        }
        total_before = fleet.requested_total;
        if let Some(s) = series.as_mut() {
            s.demand.push(d);
            for p in 0..pools {
                s.ready.push(fleet.ready[p] + fleet.draining[p]);
            }
            s.requested.extend_from_slice(&fleet.requested);
        }
    }
    progress(demand.len());
    metrics.public_cost = public_cost * hours;
    metrics.public_replica_hours = public_replica_steps as f64 * hours;
    metrics.private_cost = world.fixed_cost_per_hour * hours * demand.len() as f64;
    metrics.cost = metrics.private_cost + metrics.public_cost;
    metrics.private_replica_hours = private_replica_steps as f64 * hours;
    metrics.chargeback_cost = private_charge * hours + metrics.public_cost;
    metrics.unmet_demand_fraction = if demand_sum > 0.0 {
        unmet_sum / demand_sum
    } else {
        0.0
    };
    RunOutput {
        metrics,
        series,
        events: scaler.events(),
        planner_calls: placer.calls,
        capacity: capacity.figures,
    }
}

/// A waiting (stockout) replica's entry in `Fleet::pending` has a ready time past this:
/// `i64::MAX - since`, so it is never promoted and remembers since when it waits.
const WAITING: i64 = i64::MAX / 2;

/// The replay's side of capacity events (see `capacity_events`): per pool the tracker, the
/// doomed replicas and the capacity lost; it edits the fleet as the cluster would and re-plans
/// when a pool's condition changes.
struct CapacityRun {
    pools: Vec<super::capacity_events::PoolState>,
    figures: super::capacity_events::CapacityFigures,
}

impl CapacityRun {
    fn new(world: &World) -> Self {
        let mut figures = super::capacity_events::CapacityFigures::default();
        if let Some(timeline) = world.capacity_events.as_deref() {
            figures.stockouts = timeline.counts().0 as u64;
        }
        Self {
            pools: vec![Default::default(); world.input.pools.len()],
            figures,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        timeline: &super::capacity_events::Timeline,
        now: i64,
        step: i64,
        fleet: &mut Fleet<'_>,
        placer: &mut Placer<'_>,
        planned_for: (u32, bool),
        current: &mut usize,
    ) {
        let world = fleet.world;
        let mut changed = false;
        for (p, state) in self.pools.iter_mut().enumerate() {
            // Interrupted nodes go at the end of their notice, and come back later.
            state.doomed.retain(|&(gone, n)| {
                if gone <= now {
                    fleet.draining[p] -= n.min(fleet.draining[p]);
                }
                gone > now
            });
            let lost = state.lost.len();
            state.lost.retain(|&(back, _)| back > now);
            changed |= state.lost.len() != lost;
            for _ in 0..timeline.interruptions_in(p, now, now + step) {
                self.figures.interruptions += 1;
                let doomed = timeline.node_replicas[p].min(fleet.ready[p]);
                state.lost.push((
                    now + timeline.notice_seconds + timeline.node_back_after[p],
                    timeline.node_replicas[p],
                ));
                changed = true;
                if doomed == 0 {
                    continue;
                }
                // Replaced ahead: no longer requested, serving until the node goes.
                fleet.requested[p] -= doomed;
                fleet.ready[p] -= doomed;
                fleet.draining[p] += doomed;
                state.doomed.push((now + timeline.notice_seconds, doomed));
                self.figures.replicas_interrupted += u64::from(doomed);
            }
            // Stockout: replicas asked for meanwhile wait; when it ends they start.
            let window = timeline.stockouts[p]
                .iter()
                .find(|&&(s, e)| s <= now && now < e)
                .copied();
            if let Some((start, _)) = window {
                let startup = world.startup[p];
                for entry in fleet.pending[p].iter_mut() {
                    let requested_at = entry.0 - startup;
                    if entry.0 < WAITING && requested_at >= start {
                        entry.0 = i64::MAX - requested_at;
                    }
                }
            } else {
                for entry in fleet.pending[p].iter_mut() {
                    if entry.0 >= WAITING {
                        entry.0 = now + world.startup[p];
                    }
                }
            }
            let waiting: Vec<(i64, u32)> = fleet.pending[p]
                .iter()
                .filter(|e| e.0 >= WAITING)
                .map(|e| (i64::MAX - e.0, e.1))
                .collect();
            let assessment = super::capacity_events::assess_waiting(
                &timeline.settings[p],
                &state.tracker,
                &world.key,
                &waiting,
                now,
            );
            if assessment.transition.is_some() {
                changed = true;
                if assessment.is_short() {
                    self.figures.pools_short += 1;
                }
            }
            if assessment.is_short() && !waiting.is_empty() {
                // The shortfall is placed anew on the next eligible pool.
                let n: u32 = waiting.iter().map(|w| w.1).sum();
                fleet.pending[p].retain(|e| e.0 < WAITING);
                fleet.requested[p] -= n;
                self.figures.shortfall_replaced += u64::from(n);
                changed = true;
            }
            state.tracker = assessment.state;
        }
        if changed {
            fleet.totals();
            placer.conditions = self
                .pools
                .iter()
                .map(|s| (s.tracker.shortage.is_some(), s.lost_total()))
                .collect();
            let index = placer.place(planned_for.0, planned_for.1, &fleet.requested);
            fleet.apply(&placer.plans[index].0, now);
            *current = index;
        }
        if let Some(kept) = timeline.node_kept_seconds {
            self.wait_for_nodes(timeline, kept, now, fleet);
        }
    }
}

impl CapacityRun {
    /// Elastic node start-up: of the replicas requested on an elastic pool at `now` (by the
    /// scaler or a re-plan), those beyond the nodes still up wait the pool's node start-up too.
    fn wait_for_nodes(
        &mut self,
        timeline: &super::capacity_events::Timeline,
        kept: i64,
        now: i64,
        fleet: &mut Fleet<'_>,
    ) {
        let world = fleet.world;
        for (p, state) in self.pools.iter_mut().enumerate() {
            state.history.retain(|&(t, _)| t >= now - kept);
            if let Some(node_startup) = timeline.settings[p].node_startup_seconds
                && !timeline.stocked_out(p, now)
            {
                let ready_at = now + world.startup[p];
                let mut fresh = 0;
                while let Some(&(at, n)) = fleet.pending[p].back() {
                    if at != ready_at {
                        break;
                    }
                    fresh += n;
                    fleet.pending[p].pop_back();
                }
                let before = fleet.requested[p].saturating_sub(fresh);
                let warm =
                    super::capacity_events::on_nodes_up(&state.history, now, kept, before, fresh);
                if warm > 0 {
                    fleet.pending[p].push_back((ready_at, warm));
                }
                if fresh > warm {
                    fleet.pending[p].push_back((ready_at + i64::from(node_startup), fresh - warm));
                }
            }
            state.history.push((now, fleet.requested[p]));
        }
        fleet.totals();
    }
}

/// Replicas the need at `demand` takes without headroom: the lower bound's count.
pub fn exact_need(world: &World, demand: f64) -> u32 {
    replicas_for(demand, world.target(), 0).clamp(world.min(), world.max())
}
