//! The oracle: a schedule that knows the future but pays the same start-up delays as the
//! policy, so it is attainable in principle (unlike the zero-delay lower bound).
//!
//! Per step with demand `d`:
//! - replicas needed: `n = clamp(ceil(d / targetPerReplica), min, max)` (no headroom: it knows
//!   demand);
//! - the owned private share serves first and is kept warm (paid anyway);
//! - replica levels above it (the `k`-th public replica) go to the cheapest admissible public
//!   pools first, within their capacity, `maxPublicReplicas`, and `maxCostPerHour` (as many
//!   levels as fit it all at once);
//! - a replica of a pool with start-up `S` serves from `S` after it is requested, so level `k`
//!   of that pool is requested at `t` exactly when it is needed somewhere in `[t, t + S]`. Per
//!   level that is the cheapest schedule: a gap shorter than `S` between two needs costs less
//!   kept (the gap) than released and started again (`S`, paid, not serving).
//!
//! In the chargeback view its private replicas follow the same rule with the private pools'
//! start-up, cheapest pool first.

use super::replay::{RunMetrics, exact_need};
use super::world::World;
use std::collections::VecDeque;

/// Replica levels of a group of pools, cheapest first: `(price per replica-hour, replicas,
/// start-up in steps)`.
type Levels = Vec<(f64, u32, usize)>;

/// The private pools' levels for the component, cheapest first, up to its private share:
/// `(price, replicas)`.
pub(super) fn private_levels(world: &World) -> Vec<(f64, u32)> {
    let mut pools: Vec<(f64, u32)> = (0..world.input.pools.len())
        .filter(|&p| !world.public[p] && world.capacity[p] > 0)
        .map(|p| (world.replica_cost[p], world.capacity[p]))
        .collect();
    pools.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut left = world.private_capacity;
    pools
        .into_iter()
        .map(|(price, n)| {
            let take = n.min(left);
            left -= take;
            (price, take)
        })
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// Chargeback per hour of `replicas` private replicas on the cheapest levels.
pub(super) fn private_charge_per_hour(levels: &[(f64, u32)], replicas: u32) -> f64 {
    let mut left = replicas;
    let mut cost = 0.0;
    for &(price, n) in levels {
        let take = n.min(left);
        cost += f64::from(take) * price;
        left -= take;
    }
    cost
}

/// `out[k] = max(need[k..=k + window])`, clipped at the end: a monotonic queue, O(len).
fn ahead_max(need: &[u32], window: usize, out: &mut Vec<u32>) {
    out.clear();
    out.resize(need.len(), 0);
    let mut queue: VecDeque<usize> = VecDeque::new();
    for k in (0..need.len()).rev() {
        while queue.back().is_some_and(|&j| need[j] <= need[k]) {
            queue.pop_back();
        }
        queue.push_back(k);
        while queue.front().is_some_and(|&j| j > k + window) {
            queue.pop_front();
        }
        out[k] = need[*queue.front().expect("just pushed")];
    }
}

/// Pays for `need` (replica levels wanted per step) on `levels`, each requested its start-up
/// ahead. Returns `(cost per step summed, replica-steps, levels requested per step)`.
fn schedule(need: &[u32], levels: &Levels) -> (f64, u64, Vec<u32>) {
    let mut requested = vec![0u32; need.len()];
    let (mut cost, mut replica_steps) = (0.0, 0u64);
    let mut ahead = Vec::new();
    let mut below = 0u32;
    for &(price, n, startup_steps) in levels {
        ahead_max(need, startup_steps, &mut ahead);
        for (k, &wanted) in ahead.iter().enumerate() {
            let mine = wanted.saturating_sub(below).min(n);
            cost += f64::from(mine) * price;
            replica_steps += u64::from(mine);
            requested[k] += mine;
        }
        below += n;
    }
    (cost, replica_steps, requested)
}

/// The oracle's metrics for `demand` sampled every `step` seconds in `world`.
pub fn oracle(world: &World, demand: &[f64], step: i64) -> RunMetrics {
    let hours = step as f64 / 3600.0;
    let target = world.target();
    let steps_of = |seconds: i64| (seconds.max(0) as u64).div_ceil(step.max(1) as u64) as usize;
    let component = &world.input.components[world.index];
    let budget = component
        .policy
        .as_ref()
        .and_then(|p| world.input.budgets.get(p))
        .copied()
        .unwrap_or_default();
    // Public levels: cheapest admissible pools first, within budgets.
    let mut public: Vec<(f64, u32, usize)> = (0..world.input.pools.len())
        .filter(|&p| world.public[p] && world.capacity[p] > 0 && component.burst.enabled)
        .map(|p| {
            (
                world.replica_cost[p],
                world.capacity[p],
                steps_of(world.startup[p]),
            )
        })
        .collect();
    public.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut replicas_left = budget.max_public_replicas.unwrap_or(u32::MAX);
    let mut cost_left = budget.max_cost_per_hour.unwrap_or(f64::INFINITY);
    for level in &mut public {
        let by_cost = if level.0 > 0.0 {
            ((cost_left / level.0) + 1e-9)
                .floor()
                .min(f64::from(u32::MAX)) as u32
        } else {
            u32::MAX
        };
        level.1 = level.1.min(replicas_left).min(by_cost);
        replicas_left -= level.1;
        cost_left -= f64::from(level.1) * level.0;
    }
    let public_levels: u32 = public.iter().map(|l| l.1).sum();
    let private = world.private_capacity;
    let need: Vec<u32> = demand.iter().map(|&d| exact_need(world, d)).collect();
    let public_need: Vec<u32> = need.iter().map(|&n| n.saturating_sub(private)).collect();
    let (public_cost, public_steps, public_requested) = schedule(&public_need, &public);
    // Chargeback: private replicas requested their pools' start-up ahead, cheapest first.
    let private_startup = (0..world.input.pools.len())
        .filter(|&p| !world.public[p] && world.capacity[p] > 0)
        .map(|p| steps_of(world.startup[p]))
        .max()
        .unwrap_or(0);
    let private_pools: Levels = private_levels(world)
        .into_iter()
        .map(|(price, n)| (price, n, private_startup))
        .collect();
    let private_need: Vec<u32> = need.iter().map(|&n| n.min(private)).collect();
    let (private_charge, private_steps, _) = schedule(&private_need, &private_pools);

    let mut m = RunMetrics::default();
    let (mut demand_sum, mut unmet_sum) = (0.0, 0.0);
    let (mut public_before, mut total_before) = (false, None::<u32>);
    for (k, &d) in demand.iter().enumerate() {
        let served = need[k].min(private) + public_need[k].min(public_levels);
        demand_sum += d;
        unmet_sum += (d - f64::from(served) * target).max(0.0);
        let requested_public = public_requested[k];
        m.peak_public_replicas = m.peak_public_replicas.max(requested_public);
        if requested_public > 0 && !public_before {
            m.burst_events += 1;
        }
        public_before = requested_public > 0;
        // Owned view: the private share stays warm, so the count changes with public replicas.
        if let Some(before) = total_before
            && before != requested_public
        {
            m.scale_events += 1;
            m.replica_changes += u64::from(before.abs_diff(requested_public));
        }
        total_before = Some(requested_public);
    }
    m.public_cost = public_cost * hours;
    m.public_replica_hours = public_steps as f64 * hours;
    m.private_cost = world.fixed_cost_per_hour * hours * demand.len() as f64;
    m.cost = m.private_cost + m.public_cost;
    m.private_replica_hours = private_steps as f64 * hours;
    m.chargeback_cost = private_charge * hours + m.public_cost;
    m.unmet_demand_fraction = if demand_sum > 0.0 {
        unmet_sum / demand_sum
    } else {
        0.0
    };
    m
}
