//! The baselines a policy is compared with: private only (with enough capacity), public only,
//! and a naive static threshold. The first two are variations of the policy's world run through
//! the same controller; the third is a different scaler in the policy's own world.

use super::replay::{Scaler, View};
use super::world::World;
use crate::api::Cloud;
use crate::burst::BurstController;
use crate::burst::step::Placement;
use crate::planner::Budget;

/// Private only, with enough capacity: the cheapest eligible private pool grows until the
/// component's private share serves `peak_replicas`; no bursting; the same controller. `None`
/// when no private pool may run the component.
pub fn private_only_world(policy: &World, peak_replicas: u32) -> Option<World> {
    let mut world = policy.clone();
    let pool = world.cheapest(Cloud::Private)?;
    let need = peak_replicas.clamp(world.min(), world.max());
    if need > world.private_capacity {
        world.grow(pool, need - world.private_capacity);
    }
    world.input.components[world.index].burst.enabled = false;
    let mut config = world.controller.config().clone();
    config.public_startup_seconds = None;
    world.controller = BurstController::new(config);
    world.refresh();
    Some(world)
}

/// Public only: every replica on the cheapest eligible public pool, grown to serve
/// `peak_replicas`, without the policy's budgets (they limit bursting, and here everything is
/// public); the same controller. `None` when no public pool may run the component (sensitive).
pub fn public_only_world(policy: &World, peak_replicas: u32) -> Option<World> {
    let mut world = policy.clone();
    // Public only means public whatever the policy's burst setting.
    world.input.components[world.index].burst.enabled = true;
    world.input.components[world.index].burst.order.clear();
    world.refresh();
    let pool = world.cheapest(Cloud::Public)?;
    let need = peak_replicas.clamp(world.min(), world.max());
    let name = world.input.pools[pool].name.clone();
    {
        let component = &mut world.input.components[world.index];
        component.allowed_pools = Some([name.clone()].into_iter().collect());
        if let Some(policy) = &component.policy {
            world
                .input
                .budgets
                .insert(policy.clone(), Budget::default());
        }
    }
    if need > world.capacity[pool] {
        world.grow(pool, need - world.capacity[pool]);
    }
    let mut config = world.controller.config().clone();
    config.private_startup_seconds = 0;
    config.public_startup_seconds = Some(world.input.pools[pool].startup_seconds);
    world.controller = BurstController::new(config);
    world.refresh();
    Some(world)
}

/// The naive baseline: every private replica the component can have always on (they are paid
/// anyway), plus public replicas in fixed blocks: one more block whenever utilisation of the
/// ready replicas passes 80% and nothing is starting, one block less when utilisation would stay
/// under 60% without it. No forecast, no stabilisation.
pub struct ThresholdScaler {
    pub base: u32,
    pub block: u32,
    pub blocks: u32,
    pub min: u32,
    pub max: u32,
    pub target: f64,
}

impl ThresholdScaler {
    /// Blocks of a tenth of `max` (at least one replica).
    pub fn for_world(world: &World) -> Self {
        Self {
            base: world.private_capacity.clamp(world.min(), world.max()),
            block: world.max().div_ceil(10).max(1),
            blocks: 0,
            min: world.min(),
            max: world.max(),
            target: world.target(),
        }
    }
}

/// Utilisation above which the threshold baseline bursts a block.
pub const THRESHOLD_UP: f64 = 0.8;
/// Utilisation under which (after removing a block) it removes one.
pub const THRESHOLD_DOWN: f64 = 0.6;

impl Scaler for ThresholdScaler {
    /// Every private replica is always on: the run starts with them ready, as the policy's
    /// controller keeping owned capacity warm does.
    fn initial_replicas(&self, need: u32, _private_capacity: u32) -> u32 {
        need.max(self.base)
    }

    fn step(&mut self, _now: i64, demand: f64, view: &View, placement: &mut dyn Placement) {
        let capacity = f64::from(view.ready) * self.target;
        let utilisation = if capacity > 0.0 {
            demand / capacity
        } else {
            f64::INFINITY
        };
        let desired = |blocks: u32| (self.base + blocks * self.block).clamp(self.min, self.max);
        if utilisation > THRESHOLD_UP && view.starting == 0 && desired(self.blocks) < self.max {
            self.blocks += 1;
        } else if self.blocks > 0 {
            let without = f64::from(view.ready.saturating_sub(self.block)) * self.target;
            if without > 0.0 && demand / without < THRESHOLD_DOWN {
                self.blocks -= 1;
            }
        }
        placement.request(0, desired(self.blocks), true);
        placement.plan();
    }
}
