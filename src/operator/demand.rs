//! How many replicas each component wants now: reads the policy's metric (the edge) and hands
//! it to the decision code.

use super::context::Context;
use crate::api::{FallbackAction, ModelDeployment};
use crate::demand::{Prometheus, expand_query};
use crate::estate::Estate;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// The outcome for one deployment.
pub struct DemandDecision {
    pub desired: BTreeMap<String, u32>,
    /// Components whose public replicas must stay put (failback hysteresis).
    pub hold_public: BTreeMap<String, bool>,
    /// Events worth telling the user (metric unavailable, fallbacks).
    pub notes: Vec<(EventType, &'static str, String)>,
    /// When demand should be read again.
    pub next_check: Duration,
}

fn prometheus() -> &'static Prometheus {
    static CLIENT: OnceLock<Prometheus> = OnceLock::new();
    CLIENT.get_or_init(Prometheus::default)
}

impl DemandDecision {
    pub async fn decide(ctx: &Context, estate: &Estate, md: &ModelDeployment) -> Self {
        let mut decision = DemandDecision {
            desired: BTreeMap::new(),
            hold_public: BTreeMap::new(),
            notes: Vec::new(),
            next_check: ctx.settings.period,
        };
        let namespace = md.namespace().unwrap_or_default();
        for component in &md.spec.components {
            let recorded = md
                .status
                .as_ref()
                .and_then(|s| s.components.iter().find(|c| c.name == component.name))
                .map(|c| c.desired_replicas);
            let Some(policy) = component
                .burst_policy
                .as_ref()
                .and_then(|p| estate.policies.get(p))
            else {
                decision
                    .desired
                    .insert(component.name.clone(), component.replicas.min);
                continue;
            };
            let metric = &policy.spec.metric;
            decision.next_check = decision
                .next_check
                .min(Duration::from_secs(u64::from(metric.interval_seconds)));
            let query = expand_query(&metric.query, &namespace, &md.name_any(), &component.name);
            let want = match prometheus().instant(&metric.prometheus_url, &query).await {
                Ok(demand) => {
                    let with_headroom = demand * (1.0 + f64::from(metric.headroom_percent) / 100.0);
                    (with_headroom / metric.target_per_replica).ceil().max(0.0) as u32
                }
                Err(err) => {
                    let fallback = &policy.spec.metric_unavailable;
                    let (want, what) = match fallback.action {
                        FallbackAction::HoldLast => (
                            recorded.unwrap_or(component.replicas.min),
                            "holding the last decision".to_string(),
                        ),
                        FallbackAction::Floor => {
                            let floor = fallback.floor_replicas.unwrap_or(component.replicas.min);
                            (floor, format!("scaling to the floor of {floor}"))
                        }
                    };
                    decision.notes.push((
                        EventType::Warning,
                        "MetricUnavailable",
                        format!("component {}: {err}; {what}", component.name),
                    ));
                    want
                }
            };
            decision.desired.insert(
                component.name.clone(),
                want.clamp(component.replicas.min, component.replicas.max),
            );
        }
        decision
    }
}
