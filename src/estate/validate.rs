//! Rules between objects that no single object's schema can express: references must resolve,
//! and residency must hold across them. Pure: the operator reports these as a `Stalled`
//! condition, `skybridge plan` as exit status 2.

use super::Estate;
use super::document::ObjectRef;
use crate::api::{Cloud, DataClass, ModelDeployment, quantity};
use kube::ResourceExt;

/// One violated rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub object: ObjectRef,
    /// Dotted path of the offending field.
    pub field: String,
    pub message: String,
}

/// Every rule violated in `estate`, in a stable order.
pub fn validate(estate: &Estate) -> Vec<Issue> {
    let mut issues = Vec::new();
    for pool in estate.pools.values() {
        let object = ObjectRef::of(pool.as_ref());
        let mut push = |field: &str, message: String| {
            issues.push(Issue {
                object: object.clone(),
                field: field.into(),
                message,
            })
        };
        if pool.spec.cloud == Cloud::Public
            && pool
                .spec
                .data_classes
                .as_ref()
                .is_some_and(|c| c.contains(&DataClass::Sensitive))
        {
            push(
                "spec.dataClasses",
                "a public pool must not admit the sensitive data class".into(),
            );
        }
        if let Some(cpu) = &pool.spec.capacity.cpu
            && let Err(err) = quantity::parse_milli(cpu)
        {
            push("spec.capacity.cpu", err.to_string());
        }
        if let Some(memory) = &pool.spec.capacity.memory
            && let Err(err) = quantity::parse_units(memory)
        {
            push("spec.capacity.memory", err.to_string());
        }
    }
    for policy in estate.policies.values() {
        let object = ObjectRef::of(policy.as_ref());
        for (i, name) in policy.spec.burst.pools.iter().enumerate() {
            let field = format!("spec.burst.pools[{i}]");
            match estate.pools.get(name) {
                None => issues.push(Issue {
                    object: object.clone(),
                    field,
                    message: format!("unknown ComputePool {name:?}"),
                }),
                Some(pool) if pool.spec.cloud != Cloud::Public => issues.push(Issue {
                    object: object.clone(),
                    field,
                    message: format!(
                        "ComputePool {name:?} is private; burst.pools lists public pools"
                    ),
                }),
                Some(_) => {}
            }
        }
    }
    for deployment in estate.deployments.values() {
        issues.extend(validate_deployment(estate, deployment));
    }
    issues
}

/// The rules `validate` checks for one deployment, against the pools and policies of `estate`.
pub fn validate_deployment(estate: &Estate, deployment: &ModelDeployment) -> Vec<Issue> {
    let mut issues = Vec::new();
    {
        let object = ObjectRef::of(deployment);
        let mut push = |field: String, message: String| {
            issues.push(Issue {
                object: object.clone(),
                field,
                message,
            })
        };
        let spec = &deployment.spec;
        let model_class = spec.model_data_class();
        match estate.pools.get(&spec.model.source.pool) {
            None => push(
                "spec.model.source.pool".into(),
                format!("unknown ComputePool {:?}", spec.model.source.pool),
            ),
            Some(pool) => {
                if pool.spec.artifact_store.is_none() {
                    push(
                        "spec.model.source.pool".into(),
                        format!(
                            "ComputePool {:?} has no artifactStore to hold the model",
                            pool.name_any()
                        ),
                    );
                }
                if !model_class.may_reside_in(pool.spec.cloud) {
                    push(
                        "spec.model.source.pool".into(),
                        format!(
                            "the model serves a sensitive component, so it must live in a private store; {:?} is public",
                            pool.name_any()
                        ),
                    );
                }
            }
        }
        for (i, component) in spec.components.iter().enumerate() {
            let at = |field: &str| format!("spec.components[{i}].{field}");
            if let Err(err) = quantity::parse_milli(&component.resources.cpu) {
                push(at("resources.cpu"), err.to_string());
            }
            if let Err(err) = quantity::parse_units(&component.resources.memory) {
                push(at("resources.memory"), err.to_string());
            }
            if let Some(policy) = &component.burst_policy
                && !estate.policies.contains_key(policy)
            {
                push(at("burstPolicy"), format!("unknown BurstPolicy {policy:?}"));
            }
            for (j, name) in component.pools.iter().flatten().enumerate() {
                let field = at(&format!("pools[{j}]"));
                match estate.pools.get(name) {
                    None => push(field, format!("unknown ComputePool {name:?}")),
                    Some(pool) if !component.data_class.may_reside_in(pool.spec.cloud) => push(
                        field,
                        format!(
                            "component {:?} is sensitive but ComputePool {name:?} is public",
                            component.name
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    issues
}
