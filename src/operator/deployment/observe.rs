//! Reads each component's demand from its policy's Prometheus metric: the edge. What the demand
//! means for replicas is decided by the shared burst controller (`crate::burst`).

use crate::api::ModelDeployment;
use crate::demand::{Prometheus, expand_query};
use crate::estate::Estate;
use crate::operator::context::Context;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// Demand per component with a policy, and what went wrong reading it.
pub struct DemandReading {
    /// `None` for a component whose metric could not be read: the controller's fallback applies.
    pub demand: BTreeMap<String, Option<f64>>,
    /// Failed reads, for Events and logs.
    pub failures: Vec<(String, String)>,
    /// When demand should be read again: the shortest policy interval.
    pub next_read: Duration,
}

fn prometheus() -> &'static Prometheus {
    static CLIENT: OnceLock<Prometheus> = OnceLock::new();
    CLIENT.get_or_init(Prometheus::default)
}

pub async fn read(ctx: &Context, estate: &Estate, md: &ModelDeployment) -> DemandReading {
    let mut reading = DemandReading {
        demand: BTreeMap::new(),
        failures: Vec::new(),
        next_read: ctx.settings.period,
    };
    let namespace = md.namespace().unwrap_or_default();
    for component in &md.spec.components {
        let Some(policy) = estate.policy_of(component) else {
            continue;
        };
        let metric = &policy.spec.metric;
        reading.next_read = reading
            .next_read
            .min(Duration::from_secs(u64::from(metric.interval_seconds)));
        let query = expand_query(&metric.query, &namespace, &md.name_any(), &component.name);
        match prometheus().instant(&metric.prometheus_url, &query).await {
            Ok(value) => {
                reading.demand.insert(component.name.clone(), Some(value));
            }
            Err(err) => {
                reading.demand.insert(component.name.clone(), None);
                reading
                    .failures
                    .push((component.name.clone(), err.to_string()));
            }
        }
    }
    reading
}
