//! The status of a ModelDeployment from the plan and what the clusters report: pure, so that
//! every condition is unit-tested and a reconcile that changes nothing writes nothing.

use crate::api::{
    ArtifactsStatus, Cloud, ComponentStatus, DataClass, ModelDeploymentStatus, PlacementStatus,
    StrandedReplicas,
};
use crate::operator::kubernetes::conditions::{Decided, merge};
use crate::planner::ComponentPlan;
use k8s_openapi::jiff::Timestamp;

/// A component's plan with the ready replicas observed per pool.
pub struct Observed<'a> {
    pub plan: &'a ComponentPlan,
    /// Ready replicas per placed pool, in the order of `plan.placements`.
    pub ready: Vec<u32>,
}

/// Whether the model is where the plan needs it.
pub struct ArtifactsState {
    pub ready: bool,
    pub reason: String,
    pub message: String,
    pub status: Option<ArtifactsStatus>,
}

/// Everything status depends on.
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub previous: Option<&'a ModelDeploymentStatus>,
    pub components: Vec<Observed<'a>>,
    /// Set when the spec is invalid: the deployment is `Stalled` until it changes.
    pub invalid: Option<String>,
    pub artifacts: Option<ArtifactsState>,
    /// Replicas stranded by partitions (see `stranded`): reported as they are; their ready
    /// replicas are not counted.
    pub stranded: Vec<StrandedReplicas>,
    pub now: Timestamp,
}

pub fn deployment_status(input: StatusInput) -> ModelDeploymentStatus {
    let previous_conditions = input
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if let Some(message) = input.invalid {
        let conditions = merge(
            previous_conditions,
            vec![
                Decided::new("Ready", false, "InvalidSpec", message.clone()),
                Decided::new(
                    "Reconciling",
                    false,
                    "InvalidSpec",
                    "waiting for the spec to change",
                ),
                Decided::new("Stalled", true, "InvalidSpec", message),
            ],
            input.generation,
            input.now,
        );
        // Keep what was observed before: an invalid change must not hide running replicas.
        let mut status = input.previous.cloned().unwrap_or_default();
        status.conditions = conditions;
        status.observed_generation = input.generation;
        return status;
    }

    let mut components = Vec::new();
    let (mut desired, mut ready, mut unplaced, mut public) = (0, 0, 0, 0);
    let mut cost = 0.0;
    let mut shortfalls = Vec::new();
    let mut public_pools = Vec::new();
    for observed in &input.components {
        let plan = observed.plan;
        let placements: Vec<PlacementStatus> = plan
            .placements
            .iter()
            .zip(observed.ready.iter().copied().chain(std::iter::repeat(0)))
            .map(|(p, r)| PlacementStatus {
                pool: p.pool.clone(),
                cloud: p.cloud,
                replicas: p.replicas,
                ready_replicas: r.min(p.replicas),
                reason: p.reason.clone(),
            })
            .collect();
        let component_ready: u32 = placements.iter().map(|p| p.ready_replicas).sum();
        for p in placements.iter().filter(|p| p.cloud == Cloud::Public) {
            public += p.replicas;
            public_pools.push(format!("{}={}", p.pool, p.replicas));
        }
        if plan.unplaced > 0 {
            let residency = if plan.data_class == DataClass::Sensitive {
                " (sensitive: private pools only)"
            } else {
                ""
            };
            shortfalls.push(format!(
                "{}: {} of {} replicas unplaced{residency}: {}",
                plan.key.component,
                plan.unplaced,
                plan.desired_replicas,
                plan.reasons.join("; ")
            ));
        }
        desired += plan.desired_replicas;
        ready += component_ready;
        unplaced += plan.unplaced;
        cost += plan.cost_per_hour;
        components.push(ComponentStatus {
            name: plan.key.component.clone(),
            desired_replicas: plan.desired_replicas,
            ready_replicas: component_ready,
            placements,
            unplaced_replicas: plan.unplaced,
            unplaced_reason: (plan.unplaced > 0).then(|| plan.reasons.join("; ")),
            traffic: Vec::new(),
        });
    }

    let artifacts_ready = input.artifacts.as_ref().is_none_or(|a| a.ready);
    let all_ready = ready >= desired && unplaced == 0 && artifacts_ready;
    let (ready_reason, ready_message) = if all_ready {
        (
            "Ready".to_string(),
            format!("{ready}/{desired} replicas ready"),
        )
    } else if unplaced > 0 {
        ("InsufficientCapacity".to_string(), shortfalls.join("; "))
    } else if !artifacts_ready {
        let a = input.artifacts.as_ref().expect("not ready implies present");
        (a.reason.clone(), a.message.clone())
    } else {
        (
            "Progressing".to_string(),
            format!("{ready}/{desired} replicas ready"),
        )
    };
    let mut decided = vec![
        Decided::new(
            "Ready",
            all_ready,
            ready_reason.clone(),
            ready_message.clone(),
        ),
        Decided::new(
            "Reconciling",
            !all_ready,
            if all_ready {
                "Reconciled".to_string()
            } else {
                ready_reason
            },
            if all_ready {
                "observed state matches the spec".to_string()
            } else {
                ready_message
            },
        ),
        Decided::new("Stalled", false, "Valid", "the spec is valid"),
        if unplaced == 0 {
            Decided::new(
                "Placed",
                true,
                "AllReplicasPlaced",
                format!("{desired} replicas placed"),
            )
        } else {
            Decided::new(
                "Placed",
                false,
                "InsufficientCapacity",
                shortfalls.join("; "),
            )
        },
        if public > 0 {
            Decided::new(
                "Bursting",
                true,
                "PublicReplicas",
                format!(
                    "{public} replicas on public pools: {}",
                    public_pools.join(", ")
                ),
            )
        } else {
            Decided::new(
                "Bursting",
                false,
                "PrivateOnly",
                "every replica runs on private pools",
            )
        },
        if unplaced > 0 {
            Decided::new(
                "Degraded",
                true,
                "InsufficientCapacity",
                shortfalls.join("; "),
            )
        } else {
            Decided::new(
                "Degraded",
                false,
                "AllReplicasPlaced",
                "every desired replica has a pool",
            )
        },
    ];
    if let Some(a) = &input.artifacts {
        decided.push(Decided::new(
            "ArtifactsReady",
            a.ready,
            a.reason.clone(),
            a.message.clone(),
        ));
    }
    ModelDeploymentStatus {
        observed_generation: input.generation,
        conditions: merge(previous_conditions, decided, input.generation, input.now),
        ready_replicas: ready,
        desired_replicas: desired,
        // Rounded to cents: a float that wobbles in the last digit would rewrite status forever.
        cost_per_hour: (cost * 100.0).round() / 100.0,
        components,
        artifacts: input.artifacts.and_then(|a| a.status),
        stranded: input.stranded,
        rollout: input.previous.and_then(|s| s.rollout.clone()),
    }
}

/// How long a new deployment's first status may wait for its replicas to become ready.
pub const FIRST_REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How much longer the first status of a deployment may wait, or `None` to write it now.
///
/// A deployment with no status yet already reads as in progress to every client (kstatus, Argo
/// CD, `kubectl wait`). When everything is placed and only replicas are still starting, a
/// `Progressing` report a moment before `Ready` tells them nothing new and costs a write plus a
/// watch event to every watcher. So, within the grace after creation, only a status worth
/// reading is written: `Ready`, a shortfall, an artifact state or an error (the caller never
/// defers those). A clock behind the server's (creation in the future) writes at once.
pub fn first_report_wait(
    previous: Option<&ModelDeploymentStatus>,
    created: Option<Timestamp>,
    status: &ModelDeploymentStatus,
    now: Timestamp,
) -> Option<std::time::Duration> {
    if previous.is_some() {
        return None;
    }
    // `Progressing` is the reason of a False `Ready` only.
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    if ready.reason != "Progressing" {
        return None;
    }
    let age = std::time::Duration::try_from(now.duration_since(created?)).ok()?;
    FIRST_REPORT_GRACE.checked_sub(age).filter(|w| !w.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{ComponentKey, Placement};

    fn plan(class: DataClass, placements: &[(&str, Cloud, u32)], unplaced: u32) -> ComponentPlan {
        let placed: u32 = placements.iter().map(|p| p.2).sum();
        ComponentPlan {
            key: ComponentKey {
                namespace: "shop".into(),
                deployment: "md".into(),
                component: "ranker".into(),
            },
            data_class: class,
            desired_replicas: placed + unplaced,
            placements: placements
                .iter()
                .map(|(pool, cloud, n)| Placement {
                    pool: pool.to_string(),
                    cloud: *cloud,
                    replicas: *n,
                    reason: "r".into(),
                })
                .collect(),
            unplaced,
            reasons: if unplaced > 0 {
                vec!["full (gpu): dc1".into()]
            } else {
                vec![]
            },
            cost_per_hour: 1.234,
        }
    }

    fn condition<'a>(
        status: &'a ModelDeploymentStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn now() -> Timestamp {
        "2026-11-28T12:00:00Z".parse().unwrap()
    }

    /// A valid spec at `generation` whose only component is `p`, with `ready` per placement.
    fn observing<'a>(p: &'a ComponentPlan, ready: Vec<u32>, generation: i64) -> StatusInput<'a> {
        StatusInput {
            generation: Some(generation),
            previous: None,
            components: vec![Observed { plan: p, ready }],
            invalid: None,
            artifacts: None,
            stranded: Vec::new(),
            now: now(),
        }
    }

    #[test]
    fn ready_when_every_placed_replica_is_ready() {
        let p = plan(
            DataClass::Internal,
            &[("dc1", Cloud::Private, 2), ("aws", Cloud::Public, 1)],
            0,
        );
        let status = deployment_status(observing(&p, vec![2, 1], 3));
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "Reconciling").status, "False");
        assert_eq!(condition(&status, "Bursting").status, "True");
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.cost_per_hour, 1.23);
        assert_eq!(status.components[0].placements[1].ready_replicas, 1);
    }

    #[test]
    fn sensitive_shortage_is_degraded_not_ready() {
        let p = plan(DataClass::Sensitive, &[("dc1", Cloud::Private, 2)], 3);
        let status = deployment_status(observing(&p, vec![2], 1));
        assert_eq!(condition(&status, "Ready").status, "False");
        assert_eq!(condition(&status, "Degraded").status, "True");
        assert!(
            condition(&status, "Degraded")
                .message
                .contains("sensitive: private pools only")
        );
        assert_eq!(condition(&status, "Bursting").status, "False");
        assert_eq!(status.components[0].unplaced_replicas, 3);
    }

    #[test]
    fn invalid_spec_stalls_and_keeps_what_was_observed() {
        let p = plan(DataClass::Internal, &[("dc1", Cloud::Private, 2)], 0);
        let before = deployment_status(observing(&p, vec![2], 1));
        let after = deployment_status(StatusInput {
            generation: Some(2),
            previous: Some(&before),
            components: vec![],
            invalid: Some("spec.components[0].burstPolicy: unknown BurstPolicy \"x\"".into()),
            artifacts: None,
            stranded: Vec::new(),
            now: now(),
        });
        assert_eq!(condition(&after, "Stalled").status, "True");
        assert_eq!(condition(&after, "Ready").status, "False");
        assert_eq!(after.ready_replicas, 2);
        assert_eq!(after.observed_generation, Some(2));
    }

    #[test]
    fn only_a_new_deployments_progress_waits_and_only_within_the_grace() {
        let p = plan(DataClass::Internal, &[("dc1", Cloud::Private, 2)], 0);
        let starting = deployment_status(observing(&p, vec![1], 1));
        let created = |ago_ms: i64| Some(now() - std::time::Duration::from_millis(ago_ms as u64));
        let wait = |previous, created, status: &ModelDeploymentStatus| {
            first_report_wait(previous, created, status, now())
        };
        assert_eq!(
            wait(None, created(500), &starting),
            Some(FIRST_REPORT_GRACE - std::time::Duration::from_millis(500))
        );
        // Past the grace, or no creation time, or a clock behind the server's: write now.
        assert_eq!(wait(None, created(2_000), &starting), None);
        assert_eq!(wait(None, None, &starting), None);
        assert_eq!(
            wait(
                None,
                Some(now() + std::time::Duration::from_secs(5)),
                &starting
            ),
            None
        );
        // A deployment that already reports something gets every change at once.
        assert_eq!(wait(Some(&starting), created(500), &starting), None);
        // Ready, a shortfall and an artifact state are worth reading at once.
        let ready = deployment_status(observing(&p, vec![2], 1));
        assert_eq!(wait(None, created(500), &ready), None);
        let short = plan(DataClass::Internal, &[("dc1", Cloud::Private, 2)], 1);
        let short = deployment_status(observing(&short, vec![0], 1));
        assert_eq!(wait(None, created(500), &short), None);
        let syncing = deployment_status(StatusInput {
            artifacts: Some(ArtifactsState {
                ready: false,
                reason: "Syncing".into(),
                message: "aws: 3/10 objects".into(),
                status: None,
            }),
            ..observing(&p, vec![2], 1)
        });
        assert_eq!(wait(None, created(500), &syncing), None);
    }

    #[test]
    fn artifacts_not_ready_blocks_ready() {
        let p = plan(DataClass::Internal, &[("dc1", Cloud::Private, 1)], 0);
        let status = deployment_status(StatusInput {
            artifacts: Some(ArtifactsState {
                ready: false,
                reason: "Syncing".into(),
                message: "aws: 3/10 objects".into(),
                status: None,
            }),
            ..observing(&p, vec![1], 1)
        });
        assert_eq!(condition(&status, "Ready").reason, "Syncing");
        assert_eq!(condition(&status, "ArtifactsReady").status, "False");
    }
}
