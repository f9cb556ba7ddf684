//! Rules between objects that no single object's schema can express: references must resolve,
//! and residency must hold across them. Pure: the operator reports these as a `Stalled`
//! condition, `skybridge plan` as exit status 2.

use super::document::ObjectRef;
use super::{Estate, ModelClasses, StoreIdentity};
use crate::api::{Cloud, ComputePool, DataClass, ModelDeployment, SecretRef, quantity};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;

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
        issues.extend(validate_pool(estate, pool, None));
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
    let classes = ModelClasses::of(estate);
    for deployment in estate.deployments.values() {
        issues.extend(deployment_issues(estate, &classes, deployment));
    }
    issues
}

/// The rules `validate` checks for one pool, against the other pools of `estate`. A
/// credentials Secret reference naming a namespace is an issue unless it names
/// `operator_namespace` (the operator knows its own; files checked by `skybridge plan` do not,
/// and the schema forbids the field anyway).
pub fn validate_pool(
    estate: &Estate,
    pool: &ComputePool,
    operator_namespace: Option<&str>,
) -> Vec<Issue> {
    let mut issues = Vec::new();
    let object = ObjectRef::of(pool);
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
    if let Some(store) = &pool.spec.artifact_store {
        if store
            .credentials_secret_ref
            .as_ref()
            .and_then(|r| r.namespace.as_deref())
            .is_some_and(|ns| Some(ns) != operator_namespace)
        {
            push(
                "spec.artifactStore.credentialsSecretRef.namespace",
                "credentials Secrets are read from the operator's namespace only; remove namespace"
                    .into(),
            );
        }
        if let Some(why) = private_store_named_by(pool, &estate.pools) {
            push("spec.artifactStore", why);
        }
    }
    issues
}

/// Why a *public* pool's `artifactStore` is not its own: it is the same store (endpoint and
/// bucket, however spelled) as a private pool's, or names the credentials Secret a private
/// pool's store uses. Either would hand a public cluster access to a private store. `None` for
/// private pools and for public pools with a store of their own.
pub fn private_store_named_by(
    pool: &ComputePool,
    pools: &BTreeMap<String, Arc<ComputePool>>,
) -> Option<String> {
    if pool.spec.cloud != Cloud::Public {
        return None;
    }
    let store = pool.spec.artifact_store.as_ref()?;
    let identity = StoreIdentity::of(store);
    for (name, private) in pools {
        if private.spec.cloud != Cloud::Private {
            continue;
        }
        let Some(private_store) = &private.spec.artifact_store else {
            continue;
        };
        if StoreIdentity::of(private_store).same_as(&identity) {
            return Some(format!(
                "public ComputePool {:?} names bucket {:?} of the artifact store of private ComputePool {name:?}; a public pool needs a store of its own",
                pool.name_any(),
                store.bucket
            ));
        }
        if let (Some(mine), Some(theirs)) = (
            &store.credentials_secret_ref,
            &private_store.credentials_secret_ref,
        ) && same_secret(mine, theirs)
        {
            return Some(format!(
                "public ComputePool {:?} names Secret {:?}, the credentials of the artifact store of private ComputePool {name:?}; a public pool needs credentials of its own",
                pool.name_any(),
                mine.name
            ));
        }
    }
    None
}

/// Whether two references may name one Secret: same name, and the same namespace or either
/// left to the default (the operator's namespace, which this pure code does not know).
fn same_secret(a: &SecretRef, b: &SecretRef) -> bool {
    a.name == b.name
        && match (&a.namespace, &b.namespace) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

/// The rules `validate` checks for one deployment, against the pools and policies of `estate`
/// (and its deployments, which share the class of a model they read).
pub fn validate_deployment(estate: &Estate, deployment: &ModelDeployment) -> Vec<Issue> {
    deployment_issues(estate, &ModelClasses::of(estate), deployment)
}

fn deployment_issues(
    estate: &Estate,
    classes: &ModelClasses,
    deployment: &ModelDeployment,
) -> Vec<Issue> {
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
        let model_class = classes.class_of(deployment);
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
                            "the model is read by a sensitive component (of this deployment or another that reads the same model), so it must live in a private store; {:?} is public",
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
            if let Some(traffic) = &component.traffic {
                let field = if traffic.home_pool.is_some() {
                    at("traffic.homePool")
                } else {
                    "spec.model.source.pool".to_string()
                };
                let home = traffic
                    .home_pool
                    .as_deref()
                    .unwrap_or(&spec.model.source.pool);
                match estate.pools.get(home) {
                    None => push(
                        field,
                        format!("unknown ComputePool {home:?} (traffic home)"),
                    ),
                    Some(pool) if !component.data_class.may_reside_in(pool.spec.cloud) => push(
                        field,
                        format!(
                            "component {:?} is sensitive, so its traffic home must be a private pool; {home:?} is public",
                            component.name
                        ),
                    ),
                    Some(_) => {}
                }
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
