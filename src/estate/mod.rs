//! An estate: the `ComputePool`s, `BurstPolicy`s and `ModelDeployment`s one decision sees, and
//! how it becomes planner input. Loading from files is the only I/O here (`load`).

mod document;
mod load;
pub mod model_identity;
mod plan_input;
mod validate;

#[cfg(test)]
mod residency_tests;

#[cfg(test)]
mod capacity_tests;

pub use document::{
    DEFAULT_MAX_YAML_DEPTH, DocumentError, Object, ObjectRef, dns_label, dns_subdomain,
    parse_documents, parse_documents_nested_at_most, printable,
};
pub use load::{InputLimits, LoadError, load_paths, load_paths_within};
pub use model_identity::{ModelClasses, ModelLocation, StoreIdentity};
pub use plan_input::{
    DemandOverrides, budgets, component_key, component_request, per_replica, plan_input, pool_view,
    price, traffic_home_cluster, traffic_home_pool,
};
pub use validate::{Issue, private_store_named_by, validate, validate_deployment, validate_pool};

use crate::api::{BurstPolicy, ComputePool, ModelDeployment};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The objects of one estate, keyed by name (deployments by namespace and name).
#[derive(Clone, Debug, Default)]
/// Objects are shared (`Arc`): the operator builds an estate from its caches on every
/// reconcile, which must not copy every object.
pub struct Estate {
    pub pools: BTreeMap<String, Arc<ComputePool>>,
    pub policies: BTreeMap<String, Arc<BurstPolicy>>,
    pub deployments: BTreeMap<(String, String), Arc<ModelDeployment>>,
}

impl Estate {
    /// The key of a deployment in `deployments`: its namespace and name.
    /// Adds a parsed object (replacing one of the same kind and key).
    pub fn insert(&mut self, object: Object) {
        use kube::ResourceExt;
        match object {
            Object::Pool(pool) => {
                self.pools.insert(pool.name_any(), Arc::new(*pool));
            }
            Object::Policy(policy) => {
                self.policies.insert(policy.name_any(), Arc::new(*policy));
            }
            Object::Deployment(deployment) => {
                self.deployments
                    .insert(Self::key_of(&deployment), Arc::new(*deployment));
            }
        }
    }

    pub fn key_of(deployment: &ModelDeployment) -> (String, String) {
        use kube::ResourceExt;
        (
            deployment.namespace().unwrap_or_default(),
            deployment.name_any(),
        )
    }

    /// The burst policy a component names, if the estate has it.
    pub fn policy_of(&self, component: &crate::api::Component) -> Option<&Arc<BurstPolicy>> {
        self.policies.get(component.burst_policy.as_ref()?)
    }

    pub fn deployment(&self, namespace: &str, name: &str) -> Option<&ModelDeployment> {
        self.deployments
            .get(&(namespace.to_string(), name.to_string()))
            .map(|d| d.as_ref())
    }
}
