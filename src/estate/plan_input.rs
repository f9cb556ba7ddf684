//! From API objects to planner input: pure translation, no decisions.

use super::{Estate, ModelClasses};
use crate::api::{Component, ComputePool, ModelDeployment, quantity};
use crate::planner::{
    Budget, BurstPreference, ComponentKey, ComponentRequest, Headroom, PlanInput, PoolHealth,
    PoolView, Price, Resources,
};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Replicas wanted per component, overriding the default of `replicas.min`.
pub type DemandOverrides = BTreeMap<ComponentKey, u32>;

/// The planner's view of a pool from its spec, and its status where the operator wrote one.
pub fn pool_view(pool: &ComputePool) -> PoolView {
    let spec = &pool.spec;
    let capacity = Headroom {
        gpus: spec.capacity.gpu.as_ref().map_or(0, |g| g.count),
        cpu_milli: spec
            .capacity
            .cpu
            .as_deref()
            .and_then(|q| quantity::parse_milli(q).ok()),
        memory_bytes: spec
            .capacity
            .memory
            .as_deref()
            .and_then(|q| quantity::parse_units(q).ok()),
        replicas: spec.capacity.max_replicas,
    };
    let not_ready = pool
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "False");
    let health = match not_ready {
        Some(condition) => PoolHealth::Unhealthy(if condition.message.is_empty() {
            condition.reason.clone()
        } else {
            condition.message.clone()
        }),
        None => PoolHealth::Healthy,
    };
    PoolView {
        name: pool.name_any(),
        cloud: spec.cloud,
        admits: spec.admitted_classes(),
        gpu_type: spec
            .capacity
            .gpu
            .as_ref()
            .filter(|g| g.count > 0)
            .map(|g| g.gpu_type.clone()),
        capacity,
        health,
        price: price(pool),
        startup_seconds: spec.startup_seconds,
        cluster: crate::traffic::cluster_id(spec),
        exports_traffic: spec.exports_traffic(),
    }
}

/// What a pool charges per hour.
pub fn price(pool: &ComputePool) -> Price {
    Price {
        gpu_hour: pool.spec.cost.gpu_hour,
        cpu_hour: pool.spec.cost.cpu_hour,
        gib_hour: pool.spec.cost.gib_hour,
    }
}

/// The key of a component of a deployment.
pub fn component_key(deployment: &ModelDeployment, component: &Component) -> ComponentKey {
    ComponentKey {
        namespace: deployment.namespace().unwrap_or_default(),
        deployment: deployment.name_any(),
        component: component.name.clone(),
    }
}

/// What one replica of a component requests (unparseable quantities count as zero: validation
/// reports them before anything is planned).
pub fn per_replica(component: &Component) -> Resources {
    let resources = &component.resources;
    Resources {
        gpus: resources.gpu.as_ref().map_or(0, |g| g.count),
        cpu_milli: quantity::parse_milli(&resources.cpu).unwrap_or(0),
        memory_bytes: quantity::parse_units(&resources.memory).unwrap_or(0),
    }
}

/// The planner's request for one component wanting `desired` replicas (clamped to its bounds).
/// `classes` gives the class of the model, shared by every deployment that reads it.
pub fn component_request(
    estate: &Estate,
    classes: &ModelClasses,
    deployment: &ModelDeployment,
    component: &Component,
    desired: u32,
) -> ComponentRequest {
    let policy = estate.policy_of(component);
    let burst = match policy {
        Some(policy) => BurstPreference {
            enabled: policy.spec.burst.enabled,
            order: policy.spec.burst.pools.clone(),
        },
        None => BurstPreference::default(),
    };
    ComponentRequest {
        key: component_key(deployment, component),
        data_class: component.data_class,
        model_data_class: classes.class_of(deployment),
        per_replica: per_replica(component),
        gpu_type: component
            .resources
            .gpu
            .as_ref()
            .and_then(|g| g.gpu_type.clone()),
        min: component.replicas.min,
        desired: desired.clamp(component.replicas.min, component.replicas.max),
        allowed_pools: component
            .pools
            .as_ref()
            .map(|p| p.iter().cloned().collect()),
        policy: component.burst_policy.clone(),
        burst,
        current: BTreeMap::new(),
        rebalance: true,
        traffic_home_cluster: traffic_home_cluster(estate, deployment, component),
    }
}

/// The cluster of a routed component's home pool (`traffic.homePool`, else the pool of the
/// model's source); `None` without `traffic`. An unknown home pool (a validation issue) matches
/// no cluster, so only exporting pools are eligible.
pub fn traffic_home_cluster(
    estate: &Estate,
    deployment: &ModelDeployment,
    component: &Component,
) -> Option<String> {
    let home = traffic_home_pool(deployment, component)?;
    Some(match estate.pools.get(home) {
        Some(pool) => crate::traffic::cluster_id(&pool.spec),
        None => format!("(unknown ComputePool {home:?})"),
    })
}

/// The home pool of a routed component: `traffic.homePool`, else the pool of the model's
/// source; `None` without `traffic`.
pub fn traffic_home_pool<'a>(
    deployment: &'a ModelDeployment,
    component: &'a Component,
) -> Option<&'a str> {
    let traffic = component.traffic.as_ref()?;
    Some(
        traffic
            .home_pool
            .as_deref()
            .unwrap_or(&deployment.spec.model.source.pool),
    )
}

/// The public budgets of every policy, by policy name.
pub fn budgets(estate: &Estate) -> BTreeMap<String, Budget> {
    let budget = |policy: &crate::api::BurstPolicy| Budget {
        max_public_replicas: policy.spec.burst.max_public_replicas,
        max_cost_per_hour: policy.spec.burst.max_cost_per_hour,
    };
    estate
        .policies
        .iter()
        .map(|(name, policy)| (name.clone(), budget(policy)))
        .collect()
}

/// Planner input for the whole estate; each component wants its override, else its `min`.
pub fn plan_input(estate: &Estate, demand: &DemandOverrides) -> PlanInput {
    let pools = estate.pools.values().map(|p| pool_view(p)).collect();
    let classes = ModelClasses::of(estate);
    let mut components = Vec::new();
    for deployment in estate.deployments.values() {
        for component in &deployment.spec.components {
            let key = component_key(deployment, component);
            let desired = demand.get(&key).copied().unwrap_or(component.replicas.min);
            components.push(component_request(
                estate, &classes, deployment, component, desired,
            ));
        }
    }
    let budgets = budgets(estate);
    PlanInput {
        pools,
        components,
        budgets,
        options: Default::default(),
    }
}
