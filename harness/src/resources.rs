//! The resource types a cluster serves: the built-in kinds the operator uses, plus whatever
//! CustomResourceDefinitions are created at runtime.

use std::sync::Arc;

use serde_json::Value;

/// One served resource (one group/version/plural).
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name (discovery).
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Discovery short names.
    pub short_names: Vec<String>,
    /// Discovery categories.
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (then main writes ignore `.status` and vice versa).
    pub status_subresource: bool,
    /// CRD-defined schema (`openAPIV3Schema`); `None` for built-in kinds.
    pub schema: Option<Arc<CrdSchema>>,
    /// True for custom resources (affects unconditional updates and strategic merge patch).
    pub custom: bool,
    /// A CRD version's `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
}

/// The compiled CRD schema of one version.
pub struct CrdSchema {
    /// The raw `openAPIV3Schema`.
    pub raw: Value,
    /// CEL rules compiled once per CRD version.
    pub compiled: kube_cel::CompiledSchema,
    /// The top-level fields with CEL rules at or below them (all of them: `None`, when the
    /// root itself has rules), found once so that a write skips the rest without a walk.
    pub ruled_fields: Option<std::collections::BTreeSet<String>>,
}

impl CrdSchema {
    pub fn new(raw: Value) -> Self {
        let compiled = kube_cel::compile_schema(&raw);
        let ruled_fields = crate::crd_schema::ruled_fields(&compiled);
        Self {
            raw,
            compiled,
            ruled_fields,
        }
    }
}

impl std::fmt::Debug for CrdSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdSchema").finish_non_exhaustive()
    }
}

impl ResourceType {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// A review kind (`SelfSubjectAccessReview`): created to get an answer, never stored.
    pub fn is_review(&self) -> bool {
        self.group == "authorization.k8s.io" && self.plural == "selfsubjectaccessreviews"
    }

    /// Verbs advertised by discovery; every stored kind supports every verb here.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.is_review() {
            return vec!["create"];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Key of the storage bucket: versions of one group/plural share objects, and core Events
    /// are a view of `events.k8s.io` Events (see `events`).
    pub fn storage_key(&self) -> (String, String) {
        if crate::events::is_core_view(self) {
            return ("events.k8s.io".into(), "events".into());
        }
        (self.group.clone(), self.plural.clone())
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    categories: &[&str],
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        status_subresource: status,
        schema: None,
        custom: false,
        printer_columns: Vec::new(),
    }
}

/// The built-in kinds served by every cluster.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            &[],
            true,
        ),
        builtin("", "v1", "nodes", "Node", false, &["no"], &[], true),
        builtin("", "v1", "pods", "Pod", true, &["po"], &["all"], true),
        builtin("", "v1", "secrets", "Secret", true, &[], &[], false),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            &[],
            false,
        ),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            &["svc"],
            &["all"],
            true,
        ),
        builtin("", "v1", "events", "Event", true, &["ev"], &[], false),
        builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
            &[],
            false,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            &[],
            false,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            &["all"],
            true,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            &[],
            false,
        ),
        builtin(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            false,
            &[],
            &[],
            false,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            &["api-extensions"],
            true,
        ),
    ]
}

/// The resource types a CRD object serves (one per served version), or an explanation why none.
pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let mut out = Vec::new();
    for version in spec["versions"].as_array().into_iter().flatten() {
        if version["served"].as_bool() == Some(false) {
            continue;
        }
        let schema = version["schema"]["openAPIV3Schema"].clone();
        let schema = (!schema.is_null()).then(|| Arc::new(CrdSchema::new(schema)));
        out.push(ResourceType {
            group: group.into(),
            version: version["name"].as_str().unwrap_or_default().into(),
            plural: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: version["subresources"]["status"].is_object(),
            schema,
            custom: true,
            printer_columns: version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        });
    }
    out
}
