//! The status of a `BurstPolicy`, worked out from what the deployments that name it report:
//! public replicas and their cost against the policy's budgets. Pure: the policy controller
//! fetches the objects and writes the result.

use crate::api::{BurstPolicy, BurstPolicyStatus, Cloud, ComputePool, ModelDeployment};
use crate::estate::{per_replica, price};
use crate::operator::kubernetes::conditions::{Decided, merge};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Condition type set while one of the policy's budgets binds.
pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";

/// Relative slack when comparing spend with `maxCostPerHour`, so that a budget filled exactly
/// (up to float rounding) counts as reached.
const COST_EPSILON: f64 = 1e-9;

/// What the policy's components use now.
#[derive(Debug, Default, PartialEq)]
struct Usage {
    components: Vec<String>,
    public_replicas: u32,
    cost_per_hour: f64,
    /// `namespace/deployment/component` → replicas left unplaced because of this policy's budget.
    held_back: BTreeMap<String, u32>,
}

/// The status `policy` should have, given every deployment and pool the operator sees.
pub fn policy_status<'a>(
    policy: &BurstPolicy,
    deployments: impl IntoIterator<Item = &'a ModelDeployment>,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    now: Timestamp,
) -> BurstPolicyStatus {
    let name = policy.name_any();
    let usage = usage(&name, deployments, pools);
    let previous = policy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let decided = vec![validity(policy, pools), budget_condition(policy, &usage)];
    BurstPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions: merge(previous, decided, policy.metadata.generation, now),
        public_replicas: usage.public_replicas,
        cost_per_hour: (usage.cost_per_hour * 100.0).round() / 100.0,
        components: usage.components,
    }
}

fn usage<'a>(
    policy: &str,
    deployments: impl IntoIterator<Item = &'a ModelDeployment>,
    pools: &BTreeMap<String, Arc<ComputePool>>,
) -> Usage {
    let mut usage = Usage::default();
    let budget_words = format!("of policy {policy} reached");
    for md in deployments {
        for component in &md.spec.components {
            if component.burst_policy.as_deref() != Some(policy) {
                continue;
            }
            let key = format!(
                "{}/{}/{}",
                md.namespace().unwrap_or_default(),
                md.name_any(),
                component.name
            );
            usage.components.push(key.clone());
            let Some(status) = md
                .status
                .as_ref()
                .and_then(|s| s.components.iter().find(|c| c.name == component.name))
            else {
                continue;
            };
            let replica = per_replica(component);
            for placement in status
                .placements
                .iter()
                .filter(|p| p.cloud == Cloud::Public)
            {
                usage.public_replicas += placement.replicas;
                if let Some(price) = pools.get(&placement.pool).map(|pool| price(pool)) {
                    usage.cost_per_hour +=
                        f64::from(placement.replicas) * price.per_replica_hour(&replica);
                }
            }
            let budget_bound = status
                .unplaced_reason
                .as_deref()
                .is_some_and(|r| r.contains("budget:") && r.contains(&budget_words));
            if budget_bound && status.unplaced_replicas > 0 {
                usage.held_back.insert(key, status.unplaced_replicas);
            }
        }
    }
    usage.components.sort();
    usage
}

/// `Ready`: the policy names only pools that exist and are public.
fn validity(policy: &BurstPolicy, pools: &BTreeMap<String, Arc<ComputePool>>) -> Decided {
    let missing: Vec<&str> = policy
        .spec
        .burst
        .pools
        .iter()
        .filter(|p| !pools.contains_key(p.as_str()))
        .map(String::as_str)
        .collect();
    let private: Vec<&str> = policy
        .spec
        .burst
        .pools
        .iter()
        .filter(|p| {
            pools
                .get(p.as_str())
                .is_some_and(|pool| pool.spec.cloud != Cloud::Public)
        })
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        Decided::new(
            "Ready",
            false,
            "UnknownPools",
            format!(
                "burst.pools names pools that do not exist: {}",
                missing.join(", ")
            ),
        )
    } else if !private.is_empty() {
        Decided::new(
            "Ready",
            false,
            "NotPublicPools",
            format!(
                "burst.pools names pools that are not public, so they never take a burst: {}",
                private.join(", ")
            ),
        )
    } else {
        Decided::new("Ready", true, "Valid", "the policy is in force")
    }
}

/// `BudgetExhausted`: a budget is used up, or replicas wait because of it.
fn budget_condition(policy: &BurstPolicy, usage: &Usage) -> Decided {
    let burst = &policy.spec.burst;
    let mut reached = Vec::new();
    if let Some(max) = burst.max_public_replicas
        && usage.public_replicas >= max
    {
        reached.push(format!(
            "maxPublicReplicas {max} reached ({} public replicas)",
            usage.public_replicas
        ));
    }
    if let Some(max) = burst.max_cost_per_hour
        && usage.cost_per_hour >= max * (1.0 - COST_EPSILON)
    {
        reached.push(format!(
            "maxCostPerHour {max} reached ({:.2}/h)",
            usage.cost_per_hour
        ));
    }
    let held_back: u32 = usage.held_back.values().sum();
    if reached.is_empty() && held_back == 0 {
        return Decided::new(
            BUDGET_EXHAUSTED,
            false,
            "WithinBudget",
            format!(
                "{} public replicas, {:.2}/h",
                usage.public_replicas, usage.cost_per_hour
            ),
        );
    }
    let mut message = if reached.is_empty() {
        "a budget binds".to_string()
    } else {
        reached.join("; ")
    };
    if held_back > 0 {
        let who: Vec<String> = usage
            .held_back
            .iter()
            .map(|(key, n)| format!("{key} ({n})"))
            .collect();
        message.push_str(&format!(
            "; {held_back} replicas unplaced for it: {}",
            who.join(", ")
        ));
    }
    let reason = if held_back > 0 {
        "ReplicasHeldBack"
    } else {
        "BudgetReached"
    };
    Decided::new(BUDGET_EXHAUSTED, true, reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComponentStatus, ModelDeploymentStatus, PlacementStatus};

    fn policy(max_public: Option<u32>, max_cost: Option<f64>, pools: &[&str]) -> BurstPolicy {
        let mut policy: BurstPolicy = serde_yaml_ng::from_str(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {name: ranking, generation: 3}
spec:
  metric: {prometheusUrl: "http://prometheus:9090", query: "sum(rate(x[1m]))", targetPerReplica: 100}
"#,
        )
        .unwrap();
        policy.spec.burst.max_public_replicas = max_public;
        policy.spec.burst.max_cost_per_hour = max_cost;
        policy.spec.burst.pools = pools.iter().map(|p| p.to_string()).collect();
        policy
    }

    fn pool(name: &str, cloud: &str, gpu_hour: f64) -> (String, Arc<ComputePool>) {
        let pool: ComputePool = serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: {name}}}
spec:
  cloud: {cloud}
  provider: test
  region: r1
  cluster: {{kubeconfigSecretRef: {{name: k}}, namespace: ns}}
  capacity: {{gpu: {{type: nvidia-l4, count: 8}}}}
  cost: {{gpuHour: {gpu_hour}}}
  artifactStore: {{bucket: models}}
"#
        ))
        .unwrap();
        (name.to_string(), Arc::new(pool))
    }

    fn pools() -> BTreeMap<String, Arc<ComputePool>> {
        [
            pool("dc1", "private", 0.3),
            pool("cloud-a", "public", 0.9),
            pool("cloud-b", "public", 1.5),
        ]
        .into_iter()
        .collect()
    }

    /// A deployment whose `ranker` names `ranking` and whose status places it as given.
    fn deployment(
        name: &str,
        placements: &[(&str, Cloud, u32)],
        unplaced: u32,
        reason: Option<&str>,
    ) -> ModelDeployment {
        let mut md: ModelDeployment = serde_yaml_ng::from_str(&format!(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: shop}}
spec:
  model: {{source: {{uri: "s3://models/m", pool: dc1}}, version: "1"}}
  components:
    - name: ranker
      dataClass: internal
      image: img
      resources: {{gpu: {{count: 1, type: nvidia-l4}}, cpu: "1", memory: 1Gi}}
      replicas: {{min: 1, max: 20}}
      burstPolicy: ranking
    - name: encoder
      dataClass: sensitive
      image: img
      resources: {{gpu: {{count: 1}}, cpu: "1", memory: 1Gi}}
      replicas: {{min: 1, max: 2}}
"#
        ))
        .unwrap();
        md.status = Some(ModelDeploymentStatus {
            components: vec![ComponentStatus {
                name: "ranker".into(),
                placements: placements
                    .iter()
                    .map(|(pool, cloud, replicas)| PlacementStatus {
                        pool: pool.to_string(),
                        cloud: *cloud,
                        replicas: *replicas,
                        ready_replicas: *replicas,
                        reason: "test".into(),
                    })
                    .collect(),
                unplaced_replicas: unplaced,
                unplaced_reason: reason.map(String::from),
                ..Default::default()
            }],
            ..Default::default()
        });
        md
    }

    fn now() -> Timestamp {
        "2026-11-28T20:00:00Z".parse().unwrap()
    }

    fn condition<'a>(status: &'a BurstPolicyStatus, type_: &str) -> &'a str {
        &status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .status
    }

    #[test]
    fn counts_public_replicas_and_their_cost_across_deployments() {
        let mds = [
            deployment(
                "a",
                &[("dc1", Cloud::Private, 4), ("cloud-a", Cloud::Public, 2)],
                0,
                None,
            ),
            deployment("b", &[("cloud-b", Cloud::Public, 1)], 0, None),
        ];
        let status = policy_status(&policy(Some(10), None, &[]), &mds, &pools(), now());
        assert_eq!(status.public_replicas, 3);
        // 2 × 0.9 + 1 × 1.5; private replicas cost the deployment, not the burst budget.
        assert_eq!(status.cost_per_hour, 3.3);
        assert_eq!(status.components, vec!["shop/a/ranker", "shop/b/ranker"]);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(condition(&status, "Ready"), "True");
        assert_eq!(condition(&status, BUDGET_EXHAUSTED), "False");
    }

    #[test]
    fn replica_budget_reached_is_exhausted_and_names_who_waits() {
        let mds = [
            deployment(
                "a",
                &[("cloud-a", Cloud::Public, 2)],
                3,
                Some("budget: maxPublicReplicas 3 of policy ranking reached"),
            ),
            deployment("b", &[("cloud-a", Cloud::Public, 1)], 0, None),
        ];
        let status = policy_status(&policy(Some(3), None, &[]), &mds, &pools(), now());
        let exhausted = status
            .conditions
            .iter()
            .find(|c| c.type_ == BUDGET_EXHAUSTED)
            .unwrap();
        assert_eq!(exhausted.status, "True");
        assert_eq!(exhausted.reason, "ReplicasHeldBack");
        assert!(
            exhausted.message.contains("maxPublicReplicas 3 reached"),
            "{}",
            exhausted.message
        );
        assert!(
            exhausted.message.contains("shop/a/ranker (3)"),
            "{}",
            exhausted.message
        );
    }

    #[test]
    fn cost_budget_binds_before_it_is_reached_when_the_next_replica_would_exceed_it() {
        // 1 × 0.9 spent of 1.0: not reached, but the planner held replicas back for it.
        let mds = [deployment(
            "a",
            &[("cloud-a", Cloud::Public, 1)],
            2,
            Some("budget: maxCostPerHour 1 of policy ranking reached"),
        )];
        let status = policy_status(&policy(None, Some(1.0), &[]), &mds, &pools(), now());
        assert_eq!(condition(&status, BUDGET_EXHAUSTED), "True");
        // Another policy's budget words do not count against this one.
        let other = [deployment(
            "a",
            &[],
            2,
            Some("budget: maxCostPerHour 1 of policy other reached"),
        )];
        let status = policy_status(&policy(None, Some(1.0), &[]), &other, &pools(), now());
        assert_eq!(condition(&status, BUDGET_EXHAUSTED), "False");
    }

    #[test]
    fn cost_budget_filled_exactly_counts_as_reached() {
        let mds = [deployment("a", &[("cloud-a", Cloud::Public, 3)], 0, None)];
        let status = policy_status(&policy(None, Some(2.7), &[]), &mds, &pools(), now());
        assert_eq!(condition(&status, BUDGET_EXHAUSTED), "True");
        let status = policy_status(&policy(None, Some(2.8), &[]), &mds, &pools(), now());
        assert_eq!(condition(&status, BUDGET_EXHAUSTED), "False");
    }

    #[test]
    fn unknown_or_private_burst_pools_make_the_policy_not_ready() {
        let status = policy_status(
            &policy(None, None, &["cloud-a", "gone"]),
            [],
            &pools(),
            now(),
        );
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "UnknownPools")
        );
        assert!(ready.message.contains("gone"));
        let status = policy_status(&policy(None, None, &["dc1"]), [], &pools(), now());
        assert_eq!(condition(&status, "Ready"), "False");
        let status = policy_status(
            &policy(None, None, &["cloud-b", "cloud-a"]),
            [],
            &pools(),
            now(),
        );
        assert_eq!(condition(&status, "Ready"), "True");
    }

    #[test]
    fn deployments_of_other_policies_are_not_counted() {
        let mut md = deployment("a", &[("cloud-a", Cloud::Public, 2)], 0, None);
        md.spec.components[0].burst_policy = Some("other".into());
        let status = policy_status(&policy(Some(1), None, &[]), [&md], &pools(), now());
        assert_eq!(status.public_replicas, 0);
        assert!(status.components.is_empty());
        assert_eq!(condition(&status, BUDGET_EXHAUSTED), "False");
    }
}
