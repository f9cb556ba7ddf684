//! The world a run plays in: the planner input with every other component at its `min`, the
//! simulated component's controller, and what its capacity costs. Baselines are variations of
//! the policy's world.

use crate::api::Cloud;
use crate::burst::{
    BurstController, ConfigError, ControllerConfig, pool_capacity_for, private_capacity,
    replicas_for,
};
use crate::estate::{DemandOverrides, Estate, plan_input};
use crate::planner::{ComponentKey, PlanInput, PoolHealth, PoolView, Resources, ineligibility};

/// Why a simulation cannot be set up from the estate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetupError {
    #[error("no component {0} in the given files")]
    UnknownComponent(String),
    #[error("component {0} has no burstPolicy to simulate")]
    NoPolicy(String),
    #[error("no component in the given files has a burstPolicy")]
    NothingToSimulate,
    #[error("component {component} names BurstPolicy {policy}, which is not in the given files")]
    UnknownPolicy { component: String, policy: String },
    #[error(transparent)]
    CapacityEvents(#[from] super::capacity_events::EventsError),
    #[error("component {component}: {source}")]
    Config {
        component: String,
        #[source]
        source: ConfigError,
    },
}

/// One run's world.
#[derive(Clone, Debug)]
pub struct World {
    pub key: ComponentKey,
    /// Planner input: every component at its `min`, no current replicas.
    pub input: PlanInput,
    /// Index of the simulated component in `input.components`.
    pub index: usize,
    pub controller: BurstController,
    pub headroom_percent: u32,
    /// Replicas of the component the private pools can hold.
    pub private_capacity: u32,
    /// Amortised cost per hour of that private capacity: owned, so paid whether used or not.
    pub fixed_cost_per_hour: f64,
    /// Per pool (in `input.pools` order): price of one replica of the component for one hour.
    pub replica_cost: Vec<f64>,
    /// Per pool: seconds from requested to ready.
    pub startup: Vec<i64>,
    /// Per pool: public cloud.
    pub public: Vec<bool>,
    /// Per pool: replicas of the component it can hold next to the others (0 if ineligible).
    pub capacity: Vec<u32>,
    /// Stockouts and spot interruptions the replay applies (issue #19); `None`: none.
    pub capacity_events: Option<std::sync::Arc<super::capacity_events::Timeline>>,
}

impl World {
    pub fn min(&self) -> u32 {
        self.controller.config().min
    }

    pub fn max(&self) -> u32 {
        self.controller.config().max
    }

    pub fn target(&self) -> f64 {
        self.controller.config().target_per_replica
    }

    pub fn per_replica(&self) -> Resources {
        self.input.components[self.index].per_replica
    }

    /// Replicas the component needs at `demand` with the policy's headroom, within its bounds.
    pub fn need(&self, demand: f64) -> u32 {
        replicas_for(demand, self.target(), self.headroom_percent).clamp(self.min(), self.max())
    }

    fn eligible(&self, pool: &PoolView) -> bool {
        let mut healthy = pool.clone();
        healthy.health = PoolHealth::Healthy;
        ineligibility(&healthy, &self.input.components[self.index]).is_none()
    }

    /// Recomputes capacities and costs after the input changed.
    pub(super) fn refresh(&mut self) {
        let per_replica = self.per_replica();
        let fits = pool_capacity_for(&self.input, self.index);
        let eligible: Vec<bool> = self.input.pools.iter().map(|p| self.eligible(p)).collect();
        self.capacity = fits
            .iter()
            .zip(&eligible)
            .map(|(&n, &ok)| if ok { n } else { 0 })
            .collect();
        self.replica_cost = self
            .input
            .pools
            .iter()
            .map(|p| p.price.per_replica_hour(&per_replica))
            .collect();
        self.startup = self
            .input
            .pools
            .iter()
            .map(|p| i64::from(p.startup_seconds))
            .collect();
        self.public = self
            .input
            .pools
            .iter()
            .map(|p| p.cloud == Cloud::Public)
            .collect();
        self.private_capacity = private_capacity(&self.input, self.index, self.max());
        // The owned share is what the component can use of private pools, cheapest first, up to
        // its max: owning more would never serve it.
        let mut private: Vec<(f64, u32)> = (0..self.input.pools.len())
            .filter(|&p| !self.public[p] && self.capacity[p] > 0)
            .map(|p| (self.replica_cost[p], self.capacity[p]))
            .collect();
        private.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut left = self.max();
        self.fixed_cost_per_hour = 0.0;
        for (cost, n) in private {
            let take = n.min(left);
            self.fixed_cost_per_hour += f64::from(take) * cost;
            left -= take;
        }
    }

    /// Index of the cheapest eligible pool of `cloud` for the component.
    pub(super) fn cheapest(&self, cloud: Cloud) -> Option<usize> {
        (0..self.input.pools.len())
            .filter(|&p| self.input.pools[p].cloud == cloud && self.eligible(&self.input.pools[p]))
            .min_by(|&a, &b| self.replica_cost[a].total_cmp(&self.replica_cost[b]))
    }

    /// Makes room for `extra` more replicas of the component in pool `p`.
    pub(super) fn grow(&mut self, p: usize, extra: u32) {
        let per_replica = self.per_replica();
        self.input.pools[p].capacity.give_back(&per_replica, extra);
    }
}

/// The component `key` names, or the first (in key order) with a burst policy.
pub fn select_component(
    estate: &Estate,
    key: Option<&ComponentKey>,
) -> Result<ComponentKey, SetupError> {
    let input = plan_input(estate, &DemandOverrides::new());
    match key {
        Some(key) => {
            let component = input
                .components
                .iter()
                .find(|c| &c.key == key)
                .ok_or_else(|| SetupError::UnknownComponent(key.to_string()))?;
            if component.policy.is_none() {
                return Err(SetupError::NoPolicy(key.to_string()));
            }
            Ok(key.clone())
        }
        None => input
            .components
            .iter()
            .filter(|c| c.policy.is_some())
            .map(|c| c.key.clone())
            .min()
            .ok_or(SetupError::NothingToSimulate),
    }
}

/// The world of the component's own policy in the estate as given.
pub fn policy_world(estate: &Estate, key: &ComponentKey) -> Result<World, SetupError> {
    let input = plan_input(estate, &DemandOverrides::new());
    let index = input
        .components
        .iter()
        .position(|c| &c.key == key)
        .ok_or_else(|| SetupError::UnknownComponent(key.to_string()))?;
    let request = &input.components[index];
    let policy_name = request
        .policy
        .clone()
        .ok_or_else(|| SetupError::NoPolicy(key.to_string()))?;
    let policy = estate
        .policies
        .get(&policy_name)
        .ok_or_else(|| SetupError::UnknownPolicy {
            component: key.to_string(),
            policy: policy_name.clone(),
        })?;
    let component = estate
        .deployment(&key.namespace, &key.deployment)
        .and_then(|d| d.spec.components.iter().find(|c| c.name == key.component))
        .ok_or_else(|| SetupError::UnknownComponent(key.to_string()))?;
    let config = ControllerConfig::new(&policy.spec, &component.replicas, request, &input.pools)
        .map_err(|source| SetupError::Config {
            component: key.to_string(),
            source,
        })?;
    let mut world = World {
        key: key.clone(),
        input,
        index,
        controller: BurstController::new(config),
        headroom_percent: policy.spec.metric.headroom_percent,
        private_capacity: 0,
        fixed_cost_per_hour: 0.0,
        replica_cost: Vec::new(),
        startup: Vec::new(),
        public: Vec::new(),
        capacity: Vec::new(),
        capacity_events: None,
    };
    world.refresh();
    Ok(world)
}
