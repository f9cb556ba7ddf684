//! The optimal lower bound: a clairvoyant schedule no causal policy can beat at zero unmet demand.
//!
//! How it is computed, per step with demand `d`:
//! - replicas needed: `n = clamp(ceil(d / targetPerReplica), min, max)`: the fewest that serve
//!   `d` (no headroom: headroom is insurance against not knowing demand, and the bound knows it);
//! - the owned private share serves first, at no extra cost: its amortised cost is paid whether
//!   used or not, by the bound exactly as by every policy in the same world;
//! - the rest, `n - private`, fills the cheapest admissible public pools first (admissible: what
//!   the planner's residency and eligibility rules allow, whatever the burst order), within each
//!   pool's capacity and the policy's `maxPublicReplicas` and `maxCostPerHour`;
//! - those replicas are paid for the step only: no start-up time, no stabilisation, no steps.
//!
//! Any policy that serves `d` in a step has at least `ceil(d / target)` ready replicas, of which
//! at most the private share are free, and it pays at least the cheapest admissible price for
//! each of the others (and also for their start-up); so, step by step, its cost is at least the
//! bound's. Demand the bound itself cannot serve (over `max`, or over capacity and budgets)
//! counts as unmet for the bound too.

use super::replay::{RunMetrics, exact_need};
use super::world::World;

/// The lower bound's metrics for `demand` sampled every `step` seconds in `world`.
pub fn lower_bound(world: &World, demand: &[f64], step: i64) -> RunMetrics {
    let hours = step as f64 / 3600.0;
    let target = world.target();
    let component = &world.input.components[world.index];
    let budget = component
        .policy
        .as_ref()
        .and_then(|p| world.input.budgets.get(p))
        .copied()
        .unwrap_or_default();
    // Public pools the component may use, cheapest first.
    let mut public: Vec<(f64, u32)> = (0..world.input.pools.len())
        .filter(|&p| world.public[p] && world.capacity[p] > 0 && component.burst.enabled)
        .map(|p| (world.replica_cost[p], world.capacity[p]))
        .collect();
    public.sort_by(|a, b| a.0.total_cmp(&b.0));
    let private = world.private_capacity;
    let private_prices = super::oracle::private_levels(world);
    let mut private_charge = 0.0;
    let mut m = RunMetrics::default();
    let (mut demand_sum, mut unmet_sum) = (0.0, 0.0);
    let (mut public_before, mut total_before) = (false, None::<u32>);
    for &d in demand {
        let n = exact_need(world, d);
        let mut left = n.saturating_sub(private);
        let mut replicas_left = budget.max_public_replicas.unwrap_or(u32::MAX);
        let mut cost_left = budget.max_cost_per_hour.unwrap_or(f64::INFINITY);
        let (mut placed_public, mut cost_per_hour) = (0u32, 0.0);
        for &(price, capacity) in &public {
            if left == 0 {
                break;
            }
            let by_cost = if price > 0.0 {
                ((cost_left / price) + 1e-9)
                    .floor()
                    .min(f64::from(u32::MAX)) as u32
            } else {
                u32::MAX
            };
            let take = left.min(capacity).min(replicas_left).min(by_cost);
            placed_public += take;
            cost_per_hour += f64::from(take) * price;
            cost_left -= f64::from(take) * price;
            replicas_left -= take;
            left -= take;
        }
        let served_replicas = n.min(private) + placed_public;
        m.private_replica_hours += f64::from(n.min(private)) * hours;
        private_charge += super::oracle::private_charge_per_hour(&private_prices, n.min(private));
        demand_sum += d;
        unmet_sum += (d - f64::from(served_replicas) * target).max(0.0);
        m.public_cost += cost_per_hour * hours;
        m.private_cost += world.fixed_cost_per_hour * hours;
        m.public_replica_hours += f64::from(placed_public) * hours;
        m.peak_public_replicas = m.peak_public_replicas.max(placed_public);
        if placed_public > 0 && !public_before {
            m.burst_events += 1;
        }
        public_before = placed_public > 0;
        if let Some(before) = total_before
            && before != served_replicas
        {
            m.scale_events += 1;
            m.replica_changes += u64::from(before.abs_diff(served_replicas));
        }
        total_before = Some(served_replicas);
    }
    m.cost = m.private_cost + m.public_cost;
    m.chargeback_cost = private_charge * hours + m.public_cost;
    m.unmet_demand_fraction = if demand_sum > 0.0 {
        unmet_sum / demand_sum
    } else {
        0.0
    };
    m
}
