//! Elastic, short and spot pools and the on-demand floor, from API objects to a plan (issue #19).

use super::{Estate, parse_documents, plan_input, pool_view};
use crate::api::{AddableCapacity, CapacityType, Cloud, ComputePoolStatus, SHORT_CONDITION};
use crate::planner::plan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::sync::Arc;

const ESTATE: &str = r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: spot}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  capacity: {gpu: {type: nvidia-l4, count: 16}}
  cost: {gpuHour: 0.4}
  capacityType: Spot
  elastic: {autoscaler: Karpenter, nodeStartupSeconds: 400, maxNodes: 4, gpusPerNode: 4}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: ondemand}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  capacity: {gpu: {type: nvidia-l4, count: 16}}
  cost: {gpuHour: 1.0}
---
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {name: ranking}
spec:
  metric: {prometheusUrl: "http://prom:9090", query: q, targetPerReplica: 100}
  burst: {pools: [spot, ondemand], onDemandFloorPercent: 50}
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {name: recs, namespace: shop}
spec:
  model: {source: {uri: "s3://models/recs", pool: ondemand}, version: "1"}
  components:
    - {name: ranker, dataClass: internal, image: x, burstPolicy: ranking, resources: {gpu: {count: 1}}, replicas: {min: 4, max: 8}}
"#;

fn estate() -> Estate {
    let mut estate = Estate::default();
    for object in parse_documents(ESTATE) {
        estate.insert(object.expect("valid document"));
    }
    estate
}

fn short_condition(status: &str) -> Condition {
    Condition {
        type_: SHORT_CONDITION.into(),
        status: status.into(),
        reason: "Stockout".into(),
        message: "stockout: 2 replica(s) unschedulable for more than 580s".into(),
        observed_generation: None,
        last_transition_time: Time("2026-12-03T10:00:00Z".parse().unwrap()),
    }
}

#[test]
fn a_pool_view_carries_capacity_type_elasticity_and_shortness() {
    let mut estate = estate();
    let view = pool_view(&estate.pools["spot"]);
    assert_eq!(view.capacity_type, CapacityType::Spot);
    assert_eq!(view.node_startup_seconds, 400);
    assert_eq!(
        view.addable, None,
        "nothing addable until the operator observed the nodes"
    );
    assert_eq!(view.short, None);
    assert_eq!(
        pool_view(&estate.pools["ondemand"]).capacity_type,
        CapacityType::OnDemand
    );

    let spot = Arc::make_mut(estate.pools.get_mut("spot").unwrap());
    spot.status = Some(ComputePoolStatus {
        conditions: vec![short_condition("True")],
        addable_capacity: Some(AddableCapacity {
            gpus: 8,
            nodes: Some(2),
            after_seconds: 400,
        }),
        ..Default::default()
    });
    let view = pool_view(spot);
    assert_eq!(view.addable.map(|a| a.gpus), Some(8));
    assert!(
        view.short
            .as_deref()
            .is_some_and(|r| r.contains("stockout"))
    );
    spot.status.as_mut().unwrap().conditions = vec![short_condition("False")];
    assert_eq!(pool_view(spot).short, None, "Short=False is not short");
}

#[test]
fn the_policy_floor_and_a_short_spot_pool_shape_the_plan() {
    let mut estate = estate();
    let planned = plan(&plan_input(&estate, &Default::default()));
    let ranker = &planned.components[0];
    assert_eq!(ranker.replicas_in(Cloud::Public), 4);
    let on = |plan: &crate::planner::ComponentPlan, pool: &str| {
        plan.placements
            .iter()
            .find(|p| p.pool == pool)
            .map_or(0, |p| p.replicas)
    };
    assert_eq!(
        (on(ranker, "spot"), on(ranker, "ondemand")),
        (2, 2),
        "50 % floor"
    );

    let spot = Arc::make_mut(estate.pools.get_mut("spot").unwrap());
    spot.status = Some(ComputePoolStatus {
        conditions: vec![short_condition("True")],
        ..Default::default()
    });
    let planned = plan(&plan_input(&estate, &Default::default()));
    let ranker = &planned.components[0];
    assert_eq!((on(ranker, "spot"), on(ranker, "ondemand")), (0, 4));
    assert!(
        ranker.placements[0]
            .reason
            .contains("short (stockout): spot"),
        "{}",
        ranker.placements[0].reason
    );
}
