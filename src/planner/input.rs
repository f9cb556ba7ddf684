//! The planner's inputs: plain values, no client in sight. The operator builds them from the
//! cluster, `skybridge plan` and `simulate` from files.

use super::resources::{Headroom, Resources};
use crate::api::{Cloud, DataClass};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One place replicas can run, as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolView {
    pub name: String,
    pub cloud: Cloud,
    /// Data classes admitted (already restricted by residency).
    pub admits: Vec<DataClass>,
    /// GPU model of the pool, if it has GPUs.
    pub gpu_type: Option<String>,
    /// What the pool can still hold for Skybridge (spec bounded by what is observed free).
    pub capacity: Headroom,
    /// Whether the pool can take replicas now; when not, the reason.
    pub health: PoolHealth,
    /// Hourly prices.
    pub price: Price,
    /// Seconds from requested to ready.
    pub startup_seconds: u32,
    /// The cluster the pool lives in (`traffic::cluster_id`).
    pub cluster: String,
    /// Whether its replicas can receive requests from other clusters (`traffic.export`).
    pub exports_traffic: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolHealth {
    Healthy,
    Unhealthy(String),
}

/// Hourly prices of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Price {
    pub gpu_hour: f64,
    pub cpu_hour: f64,
    pub gib_hour: f64,
}

impl Price {
    /// Cost of one replica for one hour.
    pub fn per_replica_hour(&self, replica: &Resources) -> f64 {
        f64::from(replica.gpus) * self.gpu_hour
            + replica.cpu_milli as f64 / 1000.0 * self.cpu_hour
            + replica.memory_bytes as f64 / f64::from(1u32 << 30) * self.gib_hour
    }
}

/// Identifies a component across the estate: `namespace/deployment/component`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ComponentKey {
    pub namespace: String,
    pub deployment: String,
    pub component: String,
}

impl fmt::Display for ComponentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace, self.deployment, self.component
        )
    }
}

/// One component and how many replicas it wants now.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentRequest {
    pub key: ComponentKey,
    pub data_class: DataClass,
    /// Data class of the model the component serves: the most sensitive of its deployment's
    /// components, since they share artifacts. A replica runs only where its model may be stored.
    pub model_data_class: DataClass,
    pub per_replica: Resources,
    /// Required GPU model, if any.
    pub gpu_type: Option<String>,
    /// Floor: placed before any component's extra replicas.
    pub min: u32,
    /// Replicas wanted now (already clamped to min..=max by the caller).
    pub desired: u32,
    /// The component's allow-list; `None` allows every admissible pool.
    pub allowed_pools: Option<BTreeSet<String>>,
    /// The `BurstPolicy` whose budgets and pool order apply.
    pub policy: Option<String>,
    /// Whether public pools may be used, and in which order.
    pub burst: BurstPreference,
    /// Replicas per pool now.
    pub current: BTreeMap<String, u32>,
    /// Whether existing replicas may move to a better pool now. The burst controller clears this
    /// while failback hysteresis holds public replicas in place.
    pub rebalance: bool,
    /// For a component with `traffic`: the cluster of its route (its home pool's). Pools in
    /// other clusters are eligible only if they export traffic; `None`: no routing constraint.
    pub traffic_home_cluster: Option<String>,
}

/// How a component may use public pools.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BurstPreference {
    /// Public pools are eligible at all.
    pub enabled: bool,
    /// Preferred order of public pools; empty means cheapest first. Pools not listed come after,
    /// cheapest first, only when the list is empty.
    pub order: Vec<String>,
}

impl Default for BurstPreference {
    fn default() -> Self {
        Self {
            enabled: true,
            order: Vec::new(),
        }
    }
}

/// Limits on public use shared by every component of one policy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    pub max_public_replicas: Option<u32>,
    pub max_cost_per_hour: Option<f64>,
}

/// Tuning of the planner itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannerOptions {
    /// A replica moves to a better pool only if that saves at least this fraction of its hourly
    /// cost (or moves it from public to private); keeps plans from flapping on small differences.
    pub stability_margin: f64,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        Self {
            stability_margin: 0.2,
        }
    }
}

/// Everything one planning decision needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanInput {
    pub pools: Vec<PoolView>,
    pub components: Vec<ComponentRequest>,
    /// Budgets per policy name.
    pub budgets: BTreeMap<String, Budget>,
    pub options: PlannerOptions,
}
