//! The `skybridge plan` report. Its JSON shape is a contract for scripts:
//! `{"deployments":[{"namespace","name","components":[{"name","dataClass","desiredReplicas",
//! "placements":[{"pool","cloud","replicas","reason"}],"unplaced","reasons":[...]}]}]}`.
//! Fields may be added; none are renamed or removed within `v1alpha1`. A component with
//! `traffic` also has `"traffic":[{"pool","cloud","backend","weight"}]`: its route as it would be
//! once every placed replica is ready (`backend` is `Service/<name>` or `ServiceImport/<name>`).
//! A component of a deployment whose `status.rollout` shows a rollout under way also has
//! `"rollout":{"fromVersion","toVersion","step","trafficPercent","phase","pools":[{"pool","old",
//! "new"}],"weights":[{"backend","old","new"}]}`.

use crate::api::{Cloud, DataClass};
use crate::estate::{Estate, traffic_home_pool};
use crate::planner::Plan;
use crate::traffic::build::{export_name, route_name};
use crate::traffic::{cluster_id, planned};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub deployments: Vec<DeploymentReport>,
    /// Hourly cost of every placed replica.
    pub cost_per_hour: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentReport {
    pub namespace: String,
    pub name: String,
    pub components: Vec<ComponentReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    pub name: String,
    pub data_class: DataClass,
    pub desired_replicas: u32,
    pub placements: Vec<PlacementReport>,
    pub unplaced: u32,
    pub reasons: Vec<String>,
    pub cost_per_hour: f64,
    /// The planned route (components with `traffic` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Vec<TrafficReport>>,
    /// Replicas and weights per version, for a deployment whose status shows a rollout under
    /// way (see `add_rollout_view`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::RolloutView>,
}

/// One backend of a component's planned route.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficReport {
    /// The pool behind the backend (the home pool for the local Service).
    pub pool: String,
    pub cloud: Cloud,
    /// `Service/<name>` (local) or `ServiceImport/<name>` (a remote pool's export).
    pub backend: String,
    /// Per mille of the component's requests.
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementReport {
    pub pool: String,
    pub cloud: Cloud,
    pub replicas: u32,
    pub reason: String,
}

/// Groups a plan by deployment, in key order.
pub fn plan_report(plan: &Plan) -> PlanReport {
    let mut components: Vec<_> = plan.components.iter().collect();
    components.sort_by(|a, b| a.key.cmp(&b.key));
    let mut deployments: Vec<DeploymentReport> = Vec::new();
    for component in components {
        let key = &component.key;
        let same = deployments
            .last()
            .is_some_and(|d| d.namespace == key.namespace && d.name == key.deployment);
        if !same {
            deployments.push(DeploymentReport {
                namespace: key.namespace.clone(),
                name: key.deployment.clone(),
                components: Vec::new(),
            });
        }
        let deployment = deployments.last_mut().expect("pushed above");
        deployment.components.push(ComponentReport {
            name: key.component.clone(),
            data_class: component.data_class,
            desired_replicas: component.desired_replicas,
            placements: component
                .placements
                .iter()
                .map(|p| PlacementReport {
                    pool: p.pool.clone(),
                    cloud: p.cloud,
                    replicas: p.replicas,
                    reason: p.reason.clone(),
                })
                .collect(),
            unplaced: component.unplaced,
            reasons: component.reasons.clone(),
            cost_per_hour: component.cost_per_hour,
            traffic: None,
            rollout: None,
        });
    }
    PlanReport {
        deployments,
        cost_per_hour: plan.cost_per_hour(),
    }
}

/// Adds each routed component's planned traffic: its route as if every placed replica were
/// ready, from the pure traffic decision.
pub fn add_planned_traffic(report: &mut PlanReport, estate: &Estate) {
    for deployment_report in &mut report.deployments {
        let Some(deployment) =
            estate.deployment(&deployment_report.namespace, &deployment_report.name)
        else {
            continue;
        };
        for component_report in &mut deployment_report.components {
            let Some(component) = deployment
                .spec
                .components
                .iter()
                .find(|c| c.name == component_report.name)
            else {
                continue;
            };
            let Some(home_pool) = traffic_home_pool(deployment, component) else {
                continue;
            };
            let cluster_of = |pool: &str| {
                estate
                    .pools
                    .get(pool)
                    .map_or_else(|| format!("(unknown pool {pool})"), |p| cluster_id(&p.spec))
            };
            let placements: Vec<(String, String, Cloud, u32)> = component_report
                .placements
                .iter()
                .map(|p| (p.pool.clone(), cluster_of(&p.pool), p.cloud, p.replicas))
                .collect();
            let decision = planned(
                component.data_class,
                home_pool,
                &cluster_of(home_pool),
                &placements,
            );
            component_report.traffic = Some(
                decision
                    .backends
                    .iter()
                    .map(|b| TrafficReport {
                        pool: b.pool.clone(),
                        cloud: b.cloud,
                        backend: match b.kind {
                            crate::api::BackendKind::Service => {
                                format!("Service/{}", route_name(deployment, &component.name))
                            }
                            crate::api::BackendKind::ServiceImport => format!(
                                "ServiceImport/{}",
                                export_name(deployment, &component.name, &b.pool)
                            ),
                        },
                        weight: b.weight,
                    })
                    .collect(),
            );
        }
    }
}

impl PlanReport {
    /// A table for people: one row per placement, unplaced replicas as their own row.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY);
        table.set_header([
            "DEPLOYMENT",
            "COMPONENT",
            "CLASS",
            "DESIRED",
            "POOL",
            "CLOUD",
            "REPLICAS",
            "REASON",
        ]);
        for deployment in &self.deployments {
            let name = format!("{}/{}", deployment.namespace, deployment.name);
            for component in &deployment.components {
                let mut first = true;
                let mut row = |pool: &str, cloud: &str, replicas: String, reason: &str| {
                    let (d, c, class, desired) = if first {
                        (
                            name.as_str(),
                            component.name.as_str(),
                            component.data_class.as_str(),
                            component.desired_replicas.to_string(),
                        )
                    } else {
                        ("", "", "", String::new())
                    };
                    first = false;
                    table.add_row([
                        d,
                        c,
                        class,
                        desired.as_str(),
                        pool,
                        cloud,
                        replicas.as_str(),
                        reason,
                    ]);
                };
                for p in &component.placements {
                    row(&p.pool, p.cloud.as_str(), p.replicas.to_string(), &p.reason);
                }
                if component.unplaced > 0 {
                    let why = component.reasons.join("; ");
                    row("(unplaced)", "-", component.unplaced.to_string(), &why);
                }
            }
        }
        let mut traffic = String::new();
        for deployment in &self.deployments {
            for component in &deployment.components {
                let Some(backends) = &component.traffic else {
                    continue;
                };
                let shares: Vec<String> = backends
                    .iter()
                    .map(|b| {
                        format!(
                            "{} {} ({}) {:.1}%",
                            b.backend,
                            b.pool,
                            b.cloud,
                            f64::from(b.weight) / 10.0
                        )
                    })
                    .collect();
                let shares = if shares.is_empty() {
                    "no backend (nothing placed)".to_string()
                } else {
                    shares.join(", ")
                };
                traffic.push_str(&format!(
                    "Traffic {}/{}/{}: {shares}\n",
                    deployment.namespace, deployment.name, component.name
                ));
            }
        }
        for deployment in &self.deployments {
            for component in &deployment.components {
                if let Some(rollout) = &component.rollout {
                    traffic.push_str(&rollout.to_line(&format!(
                        "{}/{}/{}",
                        deployment.namespace, deployment.name, component.name
                    )));
                }
            }
        }
        format!(
            "{table}\n{traffic}Total cost: {:.2}/h\n",
            self.cost_per_hour
        )
    }
}
