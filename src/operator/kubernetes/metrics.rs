//! Prometheus metrics of the operator, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub cloud: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// traffic: one backend of a component's route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub namespace: String,
    pub deployment: String,
    pub component: String,
    pub pool: String,
    pub kind: String,
    pub backend: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub replicas: Family<PoolLabels, Gauge>,
    pub pool_reachable: Family<PoolLabels, Gauge>,
    pub bursting: Family<DeploymentLabels, Gauge>,
    pub cost_per_hour: Family<DeploymentLabels, Gauge<f64, AtomicU64>>,
    pub budget_exhausted: Family<PolicyLabels, Gauge>,
    pub remote_errors: Family<PoolLabels, Counter>,
    pub artifact_sync_failures: Family<PoolLabels, Counter>,
    /// Deployments decided per planning pass (its count is the number of passes).
    pub planning_batch: Histogram,
    pub leader: Gauge,
    /// traffic: weight of each route backend.
    pub traffic_weight: Family<TrafficLabels, Gauge>,
    /// capacity (issue #19): 1 while a pool is short (a stockout).
    pub pool_short: Family<PoolLabels, Gauge>,
    /// capacity: replicas of a short pool to re-place elsewhere, at the last probe.
    pub pool_shortfall: Family<PoolLabels, Gauge>,
    /// capacity: replicas on the pool's nodes about to be reclaimed, at the last probe.
    pub pool_reclaiming: Family<PoolLabels, Gauge>,
    /// capacity: times a pool went short.
    pub pool_stockouts: Family<PoolLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("skybridge");
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            });
        let metrics = Self {
            reconcile_duration,
            reconcile_errors: Family::default(),
            replicas: Family::default(),
            pool_reachable: Family::default(),
            bursting: Family::default(),
            cost_per_hour: Family::default(),
            budget_exhausted: Family::default(),
            remote_errors: Family::default(),
            artifact_sync_failures: Family::default(),
            planning_batch: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            leader: Gauge::default(),
            traffic_weight: Family::default(), // traffic:
            pool_short: Family::default(),
            pool_shortfall: Family::default(),
            pool_reclaiming: Family::default(),
            pool_stockouts: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "replicas",
            "Replicas placed, by pool and cloud",
            metrics.replicas.clone(),
        );
        registry.register(
            "pool_reachable",
            "1 when the pool's cluster answers",
            metrics.pool_reachable.clone(),
        );
        registry.register(
            "bursting",
            "1 while a deployment has public replicas",
            metrics.bursting.clone(),
        );
        registry.register(
            "cost_per_hour",
            "Hourly cost of a deployment's placed replicas",
            metrics.cost_per_hour.clone(),
        );
        registry.register(
            "budget_exhausted",
            "1 while a policy's public budget binds",
            metrics.budget_exhausted.clone(),
        );
        registry.register(
            "remote_request_errors",
            "Failed requests to a pool's cluster",
            metrics.remote_errors.clone(),
        );
        registry.register(
            "artifact_sync_failures",
            "Times a model's copy in a pool's store turned Failed (a sync that had worked or was new failed)",
            metrics.artifact_sync_failures.clone(),
        );
        registry.register(
            "planning_batch_size",
            "Deployments decided together in one planning pass",
            metrics.planning_batch.clone(),
        );
        registry.register(
            "leader",
            "1 on the replica holding the leader lease",
            metrics.leader.clone(),
        );
        // traffic:
        registry.register(
            "traffic_backend_weight",
            "Weight of a route backend (a component's Service or a pool's ServiceImport)",
            metrics.traffic_weight.clone(),
        );
        // capacity:
        registry.register(
            "pool_short",
            "1 while a pool is short (a stockout): it gets no new replicas",
            metrics.pool_short.clone(),
        );
        registry.register(
            "pool_shortfall_replicas",
            "Replicas of a short pool that could not be scheduled, re-placed on other pools",
            metrics.pool_shortfall.clone(),
        );
        registry.register(
            "pool_reclaiming_replicas",
            "Replicas on a pool's nodes about to be reclaimed, replaced elsewhere first",
            metrics.pool_reclaiming.clone(),
        );
        registry.register(
            "pool_stockouts",
            "Times a pool went short",
            metrics.pool_stockouts.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// The text exposition format.
    /// Forgets the gauges only a leader keeps current, so that a standby does not go on
    /// reporting what it saw when it last led (counters and histograms stay: they only grow).
    pub fn forget_leader_gauges(&self) {
        self.replicas.clear();
        self.bursting.clear();
        self.cost_per_hour.clear();
        self.budget_exhausted.clear();
        self.pool_reachable.clear();
        self.traffic_weight.clear(); // traffic:
        self.pool_short.clear();
        self.pool_shortfall.clear();
        self.pool_reclaiming.clear();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
