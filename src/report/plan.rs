//! The `skybridge plan` report. Its JSON shape is a contract for scripts:
//! `{"deployments":[{"namespace","name","components":[{"name","dataClass","desiredReplicas",
//! "placements":[{"pool","cloud","replicas","reason"}],"unplaced","reasons":[...]}]}]}`.
//! Fields may be added; none are renamed or removed within `v1alpha1`.

use crate::api::{Cloud, DataClass};
use crate::planner::Plan;
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
        });
    }
    PlanReport {
        deployments,
        cost_per_hour: plan.cost_per_hour(),
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
        format!("{table}\nTotal cost: {:.2}/h\n", self.cost_per_hour)
    }
}
