//! An estate: the `ComputePool`s, `BurstPolicy`s and `ModelDeployment`s one decision sees, and
//! how it becomes planner input. Loading from files is the only I/O here (`load`).

mod document;
mod load;
mod plan_input;
mod validate;

pub use document::{DocumentError, Object, ObjectRef, parse_documents};
pub use load::{LoadError, load_paths};
pub use plan_input::{
    DemandOverrides, budgets, component_key, component_request, per_replica, plan_input, pool_view,
};
pub use validate::{Issue, validate};

use crate::api::{BurstPolicy, ComputePool, ModelDeployment};
use std::collections::BTreeMap;

/// The objects of one estate, keyed by name (deployments by namespace and name).
#[derive(Clone, Debug, Default)]
pub struct Estate {
    pub pools: BTreeMap<String, ComputePool>,
    pub policies: BTreeMap<String, BurstPolicy>,
    pub deployments: BTreeMap<(String, String), ModelDeployment>,
}

impl Estate {
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<&ModelDeployment> {
        self.deployments
            .get(&(namespace.to_string(), name.to_string()))
    }
}
