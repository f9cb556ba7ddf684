//! `skybridge plan` for a deployment in the middle of a rollout (one whose `status.rollout`,
//! as `kubectl get md -o yaml` gives it, is `Progressing` or `Paused`): the plan's replicas per
//! pool split between the old and the new version at the share the rollout has reached, and
//! each route backend's weight per version (from the pure rollout rules, as if every replica were
//! ready).

use super::plan::PlanReport;
use crate::api::{RolloutPhase, RolloutStatus};
use crate::estate::Estate;
use crate::rollout::{VersionedBackend, replicas_for_share, split_weights};
use serde::Serialize;

/// A component's replicas and weights per version mid-rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub from_version: String,
    pub to_version: String,
    /// Index into `spec.rollout.steps`.
    pub step: u32,
    /// The new version's share of the traffic, in percent.
    pub traffic_percent: u32,
    pub phase: RolloutPhase,
    pub pools: Vec<VersionReplicas>,
    /// Per backend of the planned route (components with `traffic`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<VersionWeightsReport>,
}

/// One pool's replicas per version.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReplicas {
    pub pool: String,
    pub old: u32,
    pub new: u32,
}

/// One route backend's weight per version (per mille of the component's requests).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionWeightsReport {
    pub backend: String,
    pub old: u32,
    pub new: u32,
}

/// Whether a rollout recorded in status is under way.
fn under_way(status: &RolloutStatus) -> bool {
    matches!(
        status.phase,
        RolloutPhase::Progressing | RolloutPhase::Paused
    )
}

/// Adds the rollout view to every component of a deployment whose status shows a rollout under
/// way. Call after `add_planned_traffic`.
pub fn add_rollout_view(report: &mut PlanReport, estate: &Estate) {
    for deployment_report in &mut report.deployments {
        let Some(deployment) =
            estate.deployment(&deployment_report.namespace, &deployment_report.name)
        else {
            continue;
        };
        let Some(rollout) = deployment
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .filter(|r| under_way(r))
        else {
            continue;
        };
        let sensitive = deployment.spec.model_data_class() == crate::api::DataClass::Sensitive;
        for component in &mut deployment_report.components {
            let share = rollout.traffic_percent.min(100);
            let pools: Vec<VersionReplicas> = component
                .placements
                .iter()
                .map(|p| {
                    let (old, new) = replicas_for_share(p.replicas, share);
                    VersionReplicas {
                        pool: p.pool.clone(),
                        old,
                        new,
                    }
                })
                .collect();
            let weights = component
                .traffic
                .as_ref()
                .map(|backends| {
                    // A remote backend is its pool's; the local Service serves every other
                    // placed pool (those in the home cluster).
                    let remote: Vec<&str> = backends
                        .iter()
                        .filter(|b| b.backend.starts_with("ServiceImport/"))
                        .map(|b| b.pool.as_str())
                        .collect();
                    let versioned: Vec<VersionedBackend> = backends
                        .iter()
                        .map(|b| {
                            let behind = |v: &VersionReplicas| {
                                if b.backend.starts_with("ServiceImport/") {
                                    v.pool == b.pool
                                } else {
                                    !remote.contains(&v.pool.as_str())
                                }
                            };
                            VersionedBackend {
                                backend: b.backend.clone(),
                                weight: b.weight,
                                public: b.cloud == crate::api::Cloud::Public,
                                old_ready: pools.iter().filter(|v| behind(v)).map(|v| v.old).sum(),
                                new_ready: pools.iter().filter(|v| behind(v)).map(|v| v.new).sum(),
                            }
                        })
                        .collect();
                    split_weights(
                        &versioned,
                        share,
                        sensitive || component.data_class == crate::api::DataClass::Sensitive,
                    )
                    .into_iter()
                    .map(|w| VersionWeightsReport {
                        backend: w.backend,
                        old: w.old,
                        new: w.new,
                    })
                    .collect()
                })
                .unwrap_or_default();
            component.rollout = Some(RolloutView {
                from_version: rollout.from.version.clone(),
                to_version: rollout.to.version.clone(),
                step: rollout.step,
                traffic_percent: share,
                phase: rollout.phase,
                pools,
                weights,
            });
        }
    }
}

impl RolloutView {
    /// One line for people.
    pub fn to_line(&self, key: &str) -> String {
        let pools: Vec<String> = self
            .pools
            .iter()
            .map(|p| format!("{} old {} new {}", p.pool, p.old, p.new))
            .collect();
        let mut line = format!(
            "Rollout {key}: {} -> {}, step {} at {}% ({:?}): {}",
            self.from_version,
            self.to_version,
            self.step + 1,
            self.traffic_percent,
            self.phase,
            pools.join(", ")
        );
        if !self.weights.is_empty() {
            let weights: Vec<String> = self
                .weights
                .iter()
                .map(|w| {
                    format!(
                        "{} old {:.1}% new {:.1}%",
                        w.backend,
                        f64::from(w.old) / 10.0,
                        f64::from(w.new) / 10.0
                    )
                })
                .collect();
            line.push_str("; weights ");
            line.push_str(&weights.join(", "));
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Cloud, DataClass, ModelDeployment, ModelDeploymentStatus, RolloutVersion};
    use crate::report::{PlanReport, TrafficReport};
    use std::sync::Arc;

    fn report(class: DataClass) -> (PlanReport, Estate) {
        let placement =
            |pool: &str, cloud: Cloud, replicas: u32| super::super::plan::PlacementReport {
                pool: pool.into(),
                cloud,
                replicas,
                reason: String::new(),
            };
        let component = super::super::plan::ComponentReport {
            name: "r".into(),
            data_class: class,
            desired_replicas: 12,
            placements: vec![
                placement("dc1", Cloud::Private, 8),
                placement("aws", Cloud::Public, 4),
            ],
            unplaced: 0,
            reasons: vec![],
            cost_per_hour: 0.0,
            traffic: Some(vec![
                TrafficReport {
                    pool: "dc1".into(),
                    cloud: Cloud::Private,
                    backend: "Service/ranker-r".into(),
                    weight: 667,
                },
                TrafficReport {
                    pool: "aws".into(),
                    cloud: Cloud::Public,
                    backend: "ServiceImport/ranker-r-aws".into(),
                    weight: 333,
                },
            ]),
            rollout: None,
        };
        let report = PlanReport {
            deployments: vec![super::super::plan::DeploymentReport {
                namespace: "shop".into(),
                name: "ranker".into(),
                components: vec![component],
            }],
            cost_per_hour: 0.0,
        };
        let version = |v: &str| RolloutVersion {
            version: v.into(),
            uri: "s3://m/r".into(),
            pool: "dc1".into(),
            digest: None,
        };
        let mut md: ModelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "ranker", "namespace": "shop"},
            "spec": {"model": {"source": {"uri": "s3://m/r", "pool": "dc1"}, "version": "2"},
                     "components": [{"name": "r", "dataClass": class, "image": "i", "resources": {}, "replicas": {"min": 1, "max": 20}}]}
        }))
        .unwrap();
        let mut rollout = crate::operator::rollout::steady_status(
            version("1"),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            None,
        );
        rollout.to = version("2");
        rollout.phase = RolloutPhase::Progressing;
        rollout.traffic_percent = 50;
        md.status = Some(ModelDeploymentStatus {
            rollout: Some(rollout),
            ..Default::default()
        });
        let mut estate = Estate::default();
        estate
            .deployments
            .insert(("shop".into(), "ranker".into()), Arc::new(md));
        (report, estate)
    }

    #[test]
    fn each_backend_splits_by_the_replicas_of_its_own_pools() {
        let (mut report, estate) = report(DataClass::Internal);
        add_rollout_view(&mut report, &estate);
        let view = report.deployments[0].components[0].rollout.clone().unwrap();
        assert_eq!(
            view.pools
                .iter()
                .map(|p| (p.pool.as_str(), p.old, p.new))
                .collect::<Vec<_>>(),
            [("dc1", 4, 4), ("aws", 2, 2)]
        );
        let new: u32 = view.weights.iter().map(|w| w.new).sum();
        let old: u32 = view.weights.iter().map(|w| w.old).sum();
        assert_eq!((old, new), (500, 500));
        assert_eq!(
            (view.weights[0].new, view.weights[1].new),
            (333, 167),
            "by new replicas: 4 and 2"
        );
    }

    #[test]
    fn a_sensitive_component_gets_no_public_weight_of_either_version() {
        let (mut report, estate) = report(DataClass::Sensitive);
        add_rollout_view(&mut report, &estate);
        let view = report.deployments[0].components[0].rollout.clone().unwrap();
        assert_eq!((view.weights[1].old, view.weights[1].new), (0, 0));
    }
}
