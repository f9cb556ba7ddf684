//! The placement decision: for every replica a pool and a reason, plus what could not be placed
//! and why. Pure and deterministic: the same input always gives the same plan.
//!
//! Order of work, so that existing replicas stay put and floors win over extras:
//! 1. keep the existing replicas of components that only private pools can hold (sensitive,
//!    or not allowed to burst), up to `desired`, most sensitive first;
//! 2. place the rest of their floors;
//! 3. keep the existing replicas of the other components, up to `desired`;
//! 4. place the rest of every component's `min`, then the rest of `desired`;
//! 5. move replicas to clearly better pools (only where the caller allows rebalancing), spread
//!    components with `min >= 2` over two pools of one cloud, and give freed room to floors,
//!    then extras; repeated until nothing changes.
//!
//! Existing replicas of burstable components yield to private-only floors (step 2); they are
//! re-placed, on public pools where allowed. Everything else that still fits is kept, and
//! step 5 runs to a fixed point, so planning a plan again changes nothing.

use super::input::{BurstPreference, ComponentRequest, PlanInput, PoolHealth, PoolView};
use super::resources::Headroom;
use super::resources::Resources;
use crate::api::{Cloud, DataClass};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

/// The outcome for every component, in input order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub components: Vec<ComponentPlan>,
}

/// Where one component's replicas go.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentPlan {
    pub key: super::ComponentKey,
    pub data_class: DataClass,
    pub desired_replicas: u32,
    /// Placements in preference order of their pools.
    pub placements: Vec<Placement>,
    pub unplaced: u32,
    /// Why replicas are unplaced, or why pools were passed over.
    pub reasons: Vec<String>,
    pub cost_per_hour: f64,
}

/// Replicas of a component in one pool.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub pool: String,
    pub cloud: Cloud,
    pub replicas: u32,
    pub reason: String,
}

impl ComponentPlan {
    pub fn placed(&self) -> u32 {
        self.placements.iter().map(|p| p.replicas).sum()
    }

    pub fn replicas_in(&self, cloud: Cloud) -> u32 {
        self.placements
            .iter()
            .filter(|p| p.cloud == cloud)
            .map(|p| p.replicas)
            .sum()
    }
}

impl Plan {
    pub fn cost_per_hour(&self) -> f64 {
        self.components.iter().map(|c| c.cost_per_hour).sum()
    }
}

/// Plans every component of `input`.
pub fn plan(input: &PlanInput) -> Plan {
    Planner::new(input).run()
}

/// How many pool names a reason lists before it says "and N more".
const NAMES_IN_REASON: usize = 4;

/// Guard on rounds of rebalancing; each round either moves a replica to a better pool or ends.
const MAX_MOVE_ROUNDS: usize = 64;

#[derive(Clone, Copy)]
struct Candidate {
    pool: usize,
    cost: f64,
}

/// Why a pool cannot take another replica of a component right now.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Blocked {
    Full(&'static str),
    ReplicaBudget,
    CostBudget,
}

/// Components with the same signature rank pools identically, so ranking is done once per
/// signature: estates have many components but few distinct shapes.
type Signature<'a> = (
    DataClass,
    DataClass,
    Resources,
    Option<&'a str>,
    Option<&'a BTreeSet<String>>,
    &'a BurstPreference,
    Option<&'a str>,
);

/// Eligible pools best first, and each pool's rank in that list (`u32::MAX`: ineligible).
type Ranking = (Rc<[Candidate]>, Rc<[u32]>);

struct ComponentState {
    /// Eligible pools, best first (shared between components of one signature).
    ranked: Rc<[Candidate]>,
    /// Rank of each pool index in `ranked`; `u32::MAX` for ineligible pools.
    rank_of: Rc<[u32]>,
    /// Index of the component's signature, to share work that depends only on it.
    signature: usize,
    /// Replicas per pool index.
    assigned: BTreeMap<usize, u32>,
    /// Existing replicas per pool index not yet kept.
    unkept: BTreeMap<usize, u32>,
}

#[derive(Default, Clone, Copy)]
struct BudgetUse {
    replicas: u32,
    cost: f64,
}

struct Planner<'a> {
    input: &'a PlanInput,
    room: Vec<Headroom>,
    budget_use: BTreeMap<&'a str, BudgetUse>,
    states: Vec<ComponentState>,
    /// Component indices, most sensitive first, then by key: the order of every phase.
    order: Vec<usize>,
}

impl<'a> Planner<'a> {
    fn new(input: &'a PlanInput) -> Self {
        let pool_index: HashMap<&str, usize> = input
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let mut signatures: HashMap<Signature, usize> = HashMap::new();
        let mut rankings: Vec<Ranking> = Vec::new();
        let states = input
            .components
            .iter()
            .map(|component| {
                let signature: Signature = (
                    component.data_class,
                    component.model_data_class,
                    component.per_replica,
                    component.gpu_type.as_deref(),
                    component.allowed_pools.as_ref(),
                    &component.burst,
                    component.traffic_home_cluster.as_deref(),
                );
                let signature = *signatures.entry(signature).or_insert_with(|| {
                    let ranked = rank_pools(&input.pools, &pool_index, component);
                    let mut rank_of = vec![u32::MAX; input.pools.len()];
                    for (rank, candidate) in ranked.iter().enumerate() {
                        rank_of[candidate.pool] = rank as u32;
                    }
                    rankings.push((ranked.into(), rank_of.into()));
                    rankings.len() - 1
                });
                let (ranked, rank_of) = rankings[signature].clone();
                let unkept = component
                    .current
                    .iter()
                    .filter_map(|(pool, &n)| pool_index.get(pool.as_str()).map(|&i| (i, n)))
                    .filter(|&(_, n)| n > 0)
                    .collect();
                ComponentState {
                    ranked,
                    rank_of,
                    signature,
                    assigned: BTreeMap::new(),
                    unkept,
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..input.components.len()).collect();
        order.sort_by(|&a, &b| {
            let (ca, cb) = (&input.components[a], &input.components[b]);
            cb.data_class
                .cmp(&ca.data_class)
                .then_with(|| ca.key.cmp(&cb.key))
        });
        Self {
            input,
            room: input.pools.iter().map(|p| p.capacity).collect(),
            budget_use: BTreeMap::new(),
            states,
            order,
        }
    }

    fn run(mut self) -> Plan {
        let order = self.order.clone();
        let (private_bound, burstable): (Vec<usize>, Vec<usize>) =
            order.iter().partition(|&&ci| self.private_bound(ci));
        for &ci in &private_bound {
            let desired = self.input.components[ci].desired;
            self.keep_existing(ci, desired);
        }
        // Floors that only private pools can hold go before the existing replicas of components
        // that may burst: a sensitive encoder's minimum outranks a ranker's private replicas,
        // which are re-placed, on public pools where allowed.
        for &ci in &private_bound {
            let floor = self.floor(ci);
            self.place_new(ci, floor);
        }
        for &ci in &burstable {
            let desired = self.input.components[ci].desired;
            self.keep_existing(ci, desired);
        }
        for &ci in &order {
            let floor = self.floor(ci);
            self.place_new(ci, floor);
        }
        for &ci in &order {
            let desired = self.input.components[ci].desired;
            self.place_new(ci, desired);
        }
        // Moves free room that other components may then use: repeat until nothing moves, so that
        // the plan is a fixed point and re-planning it changes nothing. Every move takes a replica
        // to a strictly better pool, so this ends; the bound is a guard.
        for _ in 0..MAX_MOVE_ROUNDS {
            let mut moved = false;
            for &ci in &order {
                if self.input.components[ci].rebalance {
                    moved |= self.rebalance(ci);
                }
            }
            for &ci in &order {
                moved |= self.spread(ci);
            }
            // Room freed by moves goes to floors first, then to extras, as in the first pass.
            for target in [Self::floor as fn(&Self, usize) -> u32, |s: &Self, ci| {
                s.input.components[ci].desired
            }] {
                for &ci in &order {
                    let before = self.placed(ci);
                    let target = target(&self, ci);
                    self.place_new(ci, target);
                    moved |= self.placed(ci) != before;
                }
            }
            if !moved {
                break;
            }
        }
        self.finish()
    }

    /// Whether no public pool may take this component (residency, policy or allow-list).
    fn private_bound(&self, ci: usize) -> bool {
        // Ranked lists put private pools first, so the last pool tells.
        self.states[ci]
            .ranked
            .last()
            .is_none_or(|c| self.input.pools[c.pool].cloud == Cloud::Private)
    }

    fn floor(&self, ci: usize) -> u32 {
        let c = &self.input.components[ci];
        c.min.min(c.desired)
    }

    fn placed(&self, ci: usize) -> u32 {
        self.states[ci].assigned.values().sum()
    }

    /// How many more replicas of component `ci` the policy budget allows on `pool`.
    fn budget_allows(&self, ci: usize, pool: usize) -> (u32, Option<Blocked>) {
        let component = &self.input.components[ci];
        let pool_view = &self.input.pools[pool];
        let (Cloud::Public, Some(policy)) = (pool_view.cloud, component.policy.as_deref()) else {
            return (u32::MAX, None);
        };
        let Some(budget) = self.input.budgets.get(policy) else {
            return (u32::MAX, None);
        };
        let used = self.budget_use.get(policy).copied().unwrap_or_default();
        let mut allowed = u32::MAX;
        let mut why = None;
        if let Some(max) = budget.max_public_replicas {
            allowed = max.saturating_sub(used.replicas);
            if allowed == 0 {
                why = Some(Blocked::ReplicaBudget);
            }
        }
        if let Some(max_cost) = budget.max_cost_per_hour {
            let each = pool_view.price.per_replica_hour(&component.per_replica);
            if each > 0.0 {
                let left = ((max_cost - used.cost).max(0.0) / each + 1e-9).floor();
                let by_cost = if left >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    left as u32
                };
                if by_cost < allowed {
                    allowed = by_cost;
                    if allowed == 0 {
                        why = Some(Blocked::CostBudget);
                    }
                }
            }
        }
        (allowed, why)
    }

    fn assign(&mut self, ci: usize, pool: usize, n: u32) {
        if n == 0 {
            return;
        }
        let component = &self.input.components[ci];
        self.room[pool].take(&component.per_replica, n);
        let pool_view = &self.input.pools[pool];
        if let (Cloud::Public, Some(policy)) = (pool_view.cloud, component.policy.as_deref()) {
            let used = self.budget_use.entry(policy).or_default();
            used.replicas += n;
            used.cost += f64::from(n) * pool_view.price.per_replica_hour(&component.per_replica);
        }
        *self.states[ci].assigned.entry(pool).or_insert(0) += n;
    }

    fn unassign(&mut self, ci: usize, pool: usize, n: u32) {
        let component = &self.input.components[ci];
        self.room[pool].give_back(&component.per_replica, n);
        let pool_view = &self.input.pools[pool];
        if let (Cloud::Public, Some(policy)) = (pool_view.cloud, component.policy.as_deref()) {
            let used = self.budget_use.entry(policy).or_default();
            used.replicas -= n;
            used.cost -= f64::from(n) * pool_view.price.per_replica_hour(&component.per_replica);
        }
        let state = &mut self.states[ci];
        if let Some(entry) = state.assigned.get_mut(&pool) {
            *entry -= n;
            if *entry == 0 {
                state.assigned.remove(&pool);
            }
        }
    }

    /// How many replicas of `ci` fit on `pool` now, capacity and budget together.
    fn room_for(&self, ci: usize, pool: usize) -> (u32, Option<Blocked>) {
        let component = &self.input.components[ci];
        let (fit, short) = self.room[pool].fits(&component.per_replica);
        if fit == 0 {
            return (0, Some(Blocked::Full(short.unwrap_or("capacity"))));
        }
        let (allowed, budget_why) = self.budget_allows(ci, pool);
        if allowed == 0 {
            return (0, budget_why);
        }
        (fit.min(allowed), None)
    }

    /// Words for a blocked pool, naming the budget and policy where one binds.
    fn blocked_reason(&self, ci: usize, blocked: Blocked) -> String {
        let component = &self.input.components[ci];
        let policy = component.policy.as_deref().unwrap_or_default();
        let budget = self.input.budgets.get(policy).copied().unwrap_or_default();
        match blocked {
            Blocked::Full(dimension) => format!("full ({dimension})"),
            Blocked::ReplicaBudget => format!(
                "budget: maxPublicReplicas {} of policy {policy} reached",
                budget.max_public_replicas.unwrap_or_default()
            ),
            Blocked::CostBudget => format!(
                "budget: maxCostPerHour {} of policy {policy} reached",
                budget.max_cost_per_hour.unwrap_or_default()
            ),
        }
    }

    /// Keeps existing replicas on still-eligible pools, best pools first, up to `target` placed.
    fn keep_existing(&mut self, ci: usize, target: u32) {
        if self.states[ci].unkept.is_empty() {
            return;
        }
        for pool in self.by_rank(ci, self.states[ci].unkept.keys().copied()) {
            let placed = self.placed(ci);
            if placed >= target {
                return;
            }
            let existing = self.states[ci].unkept.get(&pool).copied().unwrap_or(0);
            if existing == 0 {
                continue;
            }
            let (room, _) = self.room_for(ci, pool);
            let n = existing.min(target - placed).min(room);
            if n > 0 {
                *self.states[ci]
                    .unkept
                    .get_mut(&pool)
                    .expect("checked above") -= n;
                self.assign(ci, pool, n);
            }
        }
    }

    /// Places new replicas on the best pools with room until `target` are placed.
    fn place_new(&mut self, ci: usize, target: u32) {
        if self.placed(ci) >= target {
            return;
        }
        let ranked = Rc::clone(&self.states[ci].ranked);
        for &Candidate { pool, .. } in ranked.iter() {
            let placed = self.placed(ci);
            if placed >= target {
                return;
            }
            let room = self.room_for(ci, pool).0;
            if room > 0 {
                self.assign(ci, pool, room.min(target - placed));
            }
        }
    }

    /// Pools of `pools` that are eligible for `ci`, best first.
    fn by_rank(&self, ci: usize, pools: impl Iterator<Item = usize>) -> Vec<usize> {
        let rank_of = &self.states[ci].rank_of;
        let mut eligible: Vec<usize> = pools.filter(|&p| rank_of[p] != u32::MAX).collect();
        eligible.sort_by_key(|&p| rank_of[p]);
        eligible
    }

    /// Moves replicas from worse to better pools where that clearly pays.
    fn rebalance(&mut self, ci: usize) -> bool {
        let mut moved = false;
        let margin = self.input.options.stability_margin;
        let ranked = Rc::clone(&self.states[ci].ranked);
        // Worst pools give up replicas first; each replica moves at most once per round.
        let mut holding = self.by_rank(ci, self.states[ci].assigned.keys().copied());
        holding.reverse();
        for from in holding {
            let from_rank = self.states[ci].rank_of[from] as usize;
            let from_cost = ranked[from_rank].cost;
            for &Candidate {
                pool: to,
                cost: to_cost,
            } in ranked.iter().take(from_rank)
            {
                let have = self.states[ci].assigned.get(&from).copied().unwrap_or(0);
                if have == 0 {
                    break;
                }
                let to_private_from_public = self.input.pools[from].cloud == Cloud::Public
                    && self.input.pools[to].cloud == Cloud::Private;
                let saves = from_cost > 0.0 && to_cost <= from_cost * (1.0 - margin);
                if !(to_private_from_public || saves) {
                    continue;
                }
                let mut n = have.min(self.room_for(ci, to).0);
                // Moving everything would collapse a spread component into one pool; a spread
                // only ever holds within one cloud, so failback from public still completes.
                let same_cloud = self.input.pools[from].cloud == self.input.pools[to].cloud;
                if self.needs_spread(ci)
                    && same_cloud
                    && self.states[ci].assigned.len() == 2
                    && n == have
                    && self.states[ci].assigned.contains_key(&to)
                {
                    n = n.saturating_sub(1);
                }
                if n > 0 {
                    self.unassign(ci, from, n);
                    self.assign(ci, to, n);
                    moved = true;
                }
            }
        }
        moved
    }

    fn needs_spread(&self, ci: usize) -> bool {
        self.input.components[ci].min >= 2
    }

    /// Keeps a component with `min >= 2` in at least two pools of one cloud, so that losing a pool
    /// does not take it to zero. It never bursts just to spread, and a CPU-only component on a
    /// pool without GPUs never spreads onto a GPU pool: GPU room is kept for GPU work, so with a
    /// single CPU pool it stays there.
    fn spread(&mut self, ci: usize) -> bool {
        if !self.needs_spread(ci) || self.placed(ci) < 2 || self.states[ci].assigned.len() != 1 {
            return false;
        }
        let (&only, _) = self.states[ci]
            .assigned
            .iter()
            .next()
            .expect("one placement");
        let cloud = self.input.pools[only].cloud;
        let keep_off_gpus = self.input.components[ci].per_replica.gpus == 0
            && self.input.pools[only].gpu_type.is_none();
        let candidates: Vec<usize> = self.states[ci]
            .ranked
            .iter()
            .map(|c| c.pool)
            .filter(|&p| p != only && self.input.pools[p].cloud == cloud)
            .filter(|&p| !(keep_off_gpus && self.input.pools[p].gpu_type.is_some()))
            .collect();
        for pool in candidates {
            if self.room_for(ci, pool).0 > 0 {
                self.unassign(ci, only, 1);
                self.assign(ci, pool, 1);
                return true;
            }
        }
        false
    }

    /// Why a placement is where it is, from the final state alone, so that re-planning an
    /// unchanged estate gives the same words as well as the same numbers.
    fn reason(&self, ci: usize, rank: usize) -> String {
        let component = &self.input.components[ci];
        let state = &self.states[ci];
        let pool = &self.input.pools[state.ranked[rank].pool];
        let base = match pool.cloud {
            Cloud::Private => "private pool".to_string(),
            Cloud::Public => match component.burst.order.iter().position(|p| *p == pool.name) {
                Some(i) => format!("burst: public pool #{} in burst order", i + 1),
                None => "burst: cheapest public pool".to_string(),
            },
        };
        if rank == 0 {
            return format!("{base}, first choice");
        }
        let (full, roomy): (Vec<usize>, Vec<usize>) = state.ranked[..rank]
            .iter()
            .map(|c| c.pool)
            .partition(|&p| self.room_for(ci, p).0 == 0);
        if roomy.is_empty() {
            let names = full.iter().map(|&p| self.input.pools[p].name.as_str());
            return format!("{base}; better pools full: {}", list_names(names));
        }
        if self.needs_spread(ci) && state.assigned.len() == 2 {
            return format!("{base}; spread: min >= 2 keeps replicas in two pools");
        }
        if component.rebalance {
            format!("{base}; kept in place: a move saves less than the stability margin")
        } else {
            format!("{base}; kept in place: failback hysteresis holds it")
        }
    }

    fn finish(self) -> Plan {
        let mut ineligible_words: HashMap<usize, Vec<String>> = HashMap::new();
        let components = self
            .input
            .components
            .iter()
            .enumerate()
            .map(|(ci, component)| {
                let state = &self.states[ci];
                let mut placements = Vec::new();
                let mut cost = 0.0;
                for pool in self.by_rank(ci, state.assigned.keys().copied()) {
                    let rank = state.rank_of[pool] as usize;
                    let candidate = &state.ranked[rank];
                    if let Some(&n) = state.assigned.get(&candidate.pool) {
                        let pool = &self.input.pools[candidate.pool];
                        cost += f64::from(n) * candidate.cost;
                        placements.push(Placement {
                            pool: pool.name.clone(),
                            cloud: pool.cloud,
                            replicas: n,
                            reason: self.reason(ci, rank),
                        });
                    }
                }
                let placed: u32 = placements.iter().map(|p| p.replicas).sum();
                let unplaced = component.desired.saturating_sub(placed);
                let mut reasons = Vec::new();
                if unplaced > 0 {
                    if state.ranked.is_empty() {
                        reasons.push("no eligible pool".to_string());
                    }
                    let mut shortfall: BTreeMap<Blocked, Vec<&str>> = BTreeMap::new();
                    for candidate in state.ranked.iter() {
                        if let (0, Some(why)) = self.room_for(ci, candidate.pool) {
                            shortfall
                                .entry(why)
                                .or_default()
                                .push(&self.input.pools[candidate.pool].name);
                        }
                    }
                    for (why, pools) in shortfall {
                        reasons.push(format!(
                            "{}: {}",
                            self.blocked_reason(ci, why),
                            list_names(pools)
                        ));
                    }
                    // Ineligibility depends on the signature alone: put into words once per
                    // signature, and only where it explains a shortfall.
                    let words = ineligible_words
                        .entry(state.signature)
                        .or_insert_with(|| ineligibility_words(&self.input.pools, component));
                    reasons.extend(words.iter().cloned());
                }
                ComponentPlan {
                    key: component.key.clone(),
                    data_class: component.data_class,
                    desired_replicas: component.desired,
                    placements,
                    unplaced,
                    reasons,
                    cost_per_hour: cost,
                }
            })
            .collect();
        Plan { components }
    }
}

fn list_names<'n>(names: impl IntoIterator<Item = &'n str>) -> String {
    let mut sorted: Vec<&str> = names.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let more = sorted.len().saturating_sub(NAMES_IN_REASON);
    sorted.truncate(NAMES_IN_REASON);
    if more > 0 {
        format!("{} and {more} more", sorted.join(", "))
    } else {
        sorted.join(", ")
    }
}

/// Why a pool can never take a component, whatever its load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ineligible {
    NotAllowed,
    Residency,
    ModelResidency,
    ClassNotAdmitted,
    BurstDisabled,
    NotInBurstOrder,
    NoGpus,
    GpuType,
    Unhealthy,
    NoTrafficExport,
}

fn ineligibility_kind(pool: &PoolView, component: &ComponentRequest) -> Option<Ineligible> {
    if let Some(allowed) = &component.allowed_pools
        && !allowed.contains(&pool.name)
    {
        return Some(Ineligible::NotAllowed);
    }
    // Residency first and unconditionally: no other input can make this placement legal.
    if !component.data_class.may_reside_in(pool.cloud) {
        return Some(Ineligible::Residency);
    }
    if !component.model_data_class.may_reside_in(pool.cloud) {
        return Some(Ineligible::ModelResidency);
    }
    if !pool.admits.contains(&component.data_class) {
        return Some(Ineligible::ClassNotAdmitted);
    }
    if pool.cloud == Cloud::Public {
        if !component.burst.enabled {
            return Some(Ineligible::BurstDisabled);
        }
        if !component.burst.order.is_empty() && !component.burst.order.contains(&pool.name) {
            return Some(Ineligible::NotInBurstOrder);
        }
    }
    if component.per_replica.gpus > 0 {
        match (&pool.gpu_type, &component.gpu_type) {
            (None, _) => return Some(Ineligible::NoGpus),
            (Some(have), Some(want)) if have != want => return Some(Ineligible::GpuType),
            _ => {}
        }
    }
    if let PoolHealth::Unhealthy(_) = &pool.health {
        return Some(Ineligible::Unhealthy);
    }
    if let Some(home) = &component.traffic_home_cluster
        && pool.cluster != *home
        && !pool.exports_traffic
    {
        return Some(Ineligible::NoTrafficExport);
    }
    None
}

/// Why `pool` cannot take `component` at all, whatever its load; `None` if it can.
pub fn ineligibility(pool: &PoolView, component: &ComponentRequest) -> Option<String> {
    let kind = ineligibility_kind(pool, component)?;
    Some(match kind {
        Ineligible::NotAllowed => "not in the component's pools list".to_string(),
        Ineligible::Residency => format!("residency: {} data never runs on a public pool", component.data_class),
        Ineligible::ModelResidency => {
            "residency: the model is shared with a sensitive component, so it never goes to a public store".to_string()
        }
        Ineligible::ClassNotAdmitted => format!("pool does not admit {} data", component.data_class),
        Ineligible::BurstDisabled => "bursting to public pools is disabled".to_string(),
        Ineligible::NotInBurstOrder => "not in the policy's burst pools".to_string(),
        Ineligible::NoGpus => "no GPUs".to_string(),
        Ineligible::GpuType => format!("GPU type is not {}", component.gpu_type.as_deref().unwrap_or_default()),
        Ineligible::NoTrafficExport => {
            "traffic: outside the component's home cluster and receives no cross-cluster traffic (traffic.export is None)".to_string()
        }
        Ineligible::Unhealthy => match &pool.health {
            PoolHealth::Unhealthy(why) => format!("unhealthy ({why})"),
            PoolHealth::Healthy => "unhealthy".to_string(),
        },
    })
}

/// Why pools cannot take `component` at all, one line per reason listing the pools.
fn ineligibility_words(pools: &[PoolView], component: &ComponentRequest) -> Vec<String> {
    let mut grouped: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for pool in pools {
        if let Some(why) = ineligibility(pool, component) {
            grouped.entry(why).or_default().push(&pool.name);
        }
    }
    grouped
        .into_iter()
        .map(|(why, names)| format!("{why}: {}", list_names(names)))
        .collect()
}

/// Eligible pools, best first.
fn rank_pools(
    pools: &[PoolView],
    pool_index: &HashMap<&str, usize>,
    component: &ComponentRequest,
) -> Vec<Candidate> {
    // Position of each pool in the policy's burst order, looked up once rather than per comparison.
    let mut burst_position = vec![usize::MAX; pools.len()];
    for (position, name) in component.burst.order.iter().enumerate() {
        if let Some(&i) = pool_index.get(name.as_str()) {
            burst_position[i] = position;
        }
    }
    let cpu_only = component.per_replica.gpus == 0;
    let mut ranked: Vec<(bool, usize, bool, Candidate)> = pools
        .iter()
        .enumerate()
        .filter(|(_, pool)| ineligibility_kind(pool, component).is_none())
        .map(|(i, pool)| {
            let candidate = Candidate {
                pool: i,
                cost: pool.price.per_replica_hour(&component.per_replica),
            };
            // CPU-only components prefer pools without GPUs, so GPUs stay free for GPU work.
            let wastes_gpus = cpu_only && pool.gpu_type.is_some();
            (
                pool.cloud == Cloud::Public,
                burst_position[i],
                wastes_gpus,
                candidate,
            )
        })
        .collect();
    ranked.sort_by(|a, b| {
        (a.0, a.1, a.2)
            .cmp(&(b.0, b.1, b.2))
            .then_with(|| a.3.cost.total_cmp(&b.3.cost))
            .then_with(|| pools[a.3.pool].name.cmp(&pools[b.3.pool].name))
    });
    ranked.into_iter().map(|(_, _, _, c)| c).collect()
}
