//! The three clusters of an e2e test: `kube-harness` servers on loopback by default, or real
//! clusters named by kube contexts (docs/e2e-real-clusters.md):
//!
//! - `SKYBRIDGE_E2E_KUBECONFIG`: a kubeconfig holding the contexts below;
//! - `SKYBRIDGE_E2E_HUB_CONTEXT`, `SKYBRIDGE_E2E_PRIVATE_CONTEXT`, `SKYBRIDGE_E2E_PUBLIC_CONTEXT`.
//!
//! Tests act on clusters only through the Kubernetes API, so most run unchanged on either. The
//! few that need a harness control (an unreachable cluster, injected faults, resized Nodes) call
//! `Estate::harness_only` first and are skipped, loudly, on real clusters.

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use kube::discovery::{Discovery, Scope};
use kube::{Client, Config};
use kube_harness::ClusterHandle;
use serde_json::{Value, json};
use std::ops::Deref;

pub const KUBECONFIG_VAR: &str = "SKYBRIDGE_E2E_KUBECONFIG";

/// A cluster of the test: a harness instance, or a real cluster reached through a context.
pub enum TestCluster {
    Harness(ClusterHandle),
    Real(RealCluster),
}

pub struct RealCluster {
    pub context: String,
    client: Client,
    /// A kubeconfig with only this context, as the operator gets it from a Secret.
    kubeconfig: String,
}

/// The contexts, when the tests are to run against real clusters.
pub fn real_contexts() -> Option<(String, [String; 3])> {
    let path = std::env::var(KUBECONFIG_VAR).ok()?;
    let context = |role: &str| {
        let var = format!("SKYBRIDGE_E2E_{role}_CONTEXT");
        std::env::var(&var)
            .unwrap_or_else(|_| panic!("{KUBECONFIG_VAR} is set, so {var} must be too"))
    };
    Some((
        path,
        [context("HUB"), context("PRIVATE"), context("PUBLIC")],
    ))
}

impl RealCluster {
    pub async fn connect(path: &str, context: &str) -> Self {
        let kubeconfig = Kubeconfig::read_from(path)
            .unwrap_or_else(|e| panic!("cannot read the kubeconfig {path}: {e}"));
        let minified = minify(&kubeconfig, context);
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap_or_else(|e| panic!("context {context}: {e}"));
        let client = Client::try_from(config).expect("client");
        Self {
            context: context.to_string(),
            client,
            kubeconfig: serde_yaml_ng::to_string(&minified).expect("kubeconfig serializes"),
        }
    }
}

/// The part of `kubeconfig` one context needs, with that context current.
fn minify(kubeconfig: &Kubeconfig, context: &str) -> Kubeconfig {
    let named: NamedContext = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .cloned()
        .unwrap_or_else(|| panic!("no context {context} in the kubeconfig"));
    let inner = named.context.clone().expect("context has a body");
    let clusters: Vec<NamedCluster> = kubeconfig
        .clusters
        .iter()
        .filter(|c| c.name == inner.cluster)
        .cloned()
        .collect();
    let users: Vec<NamedAuthInfo> = kubeconfig
        .auth_infos
        .iter()
        .filter(|u| Some(&u.name) == inner.user.as_ref())
        .cloned()
        .collect();
    Kubeconfig {
        current_context: Some(context.to_string()),
        contexts: vec![named],
        clusters,
        auth_infos: users,
        ..Default::default()
    }
}

impl TestCluster {
    pub fn client(&self) -> kube_harness::Result<Client> {
        match self {
            TestCluster::Harness(h) => h.client(),
            TestCluster::Real(r) => Ok(r.client.clone()),
        }
    }

    pub fn kubeconfig_yaml(&self) -> &str {
        match self {
            TestCluster::Harness(h) => h.kubeconfig_yaml(),
            TestCluster::Real(r) => &r.kubeconfig,
        }
    }

    pub fn is_harness(&self) -> bool {
        matches!(self, TestCluster::Harness(_))
    }

    /// `kubectl apply --server-side` of a multi-document YAML.
    pub fn apply_yaml(&self, yaml: &str, manager: &str) -> Result<Vec<Value>, String> {
        match self {
            TestCluster::Harness(h) => h.apply_yaml(yaml, manager).map_err(|e| e.to_string()),
            TestCluster::Real(r) => {
                let client = r.client.clone();
                let yaml = yaml.to_string();
                let manager = manager.to_string();
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current()
                        .block_on(apply_documents(client, &yaml, &manager))
                })
            }
        }
    }
}

/// Harness controls (faults, reachability, Nodes) are only on harness clusters: tests that use
/// them check `Estate::harness_only` first.
impl Deref for TestCluster {
    type Target = ClusterHandle;

    fn deref(&self) -> &ClusterHandle {
        match self {
            TestCluster::Harness(h) => h,
            TestCluster::Real(r) => panic!(
                "context {}: this needs a kube-harness control; call Estate::harness_only first",
                r.context
            ),
        }
    }
}

async fn apply_documents(client: Client, yaml: &str, manager: &str) -> Result<Vec<Value>, String> {
    let mut discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| e.to_string())?;
    let params = PatchParams::apply(manager).force();
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let object: Value = serde::Deserialize::deserialize(document).map_err(|e| e.to_string())?;
        if object.is_null() {
            continue;
        }
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        if discovery.resolve_gvk(&gvk).is_none() {
            // A CRD applied earlier in this run: discover again.
            discovery = Discovery::new(client.clone())
                .run()
                .await
                .map_err(|e| e.to_string())?;
        }
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| format!("unknown kind {api_version}/{kind}"))?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api: Api<DynamicObject> = match (caps.scope, object["metadata"]["namespace"].as_str()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        let applied = api
            .patch(&name, &params, &Patch::Apply(&object))
            .await
            .map_err(|e| format!("{kind} {name}: {e}"))?;
        out.push(serde_json::to_value(applied).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Real clusters only: advertises `gpus` GPUs on the nodes labelled `label=value` (all on the
/// first, none on the others), as a device plugin would.
pub async fn advertise_gpus(cluster: &TestCluster, label: &str, value: &str, gpus: u32) {
    let client = cluster.client().expect("client");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let listed = nodes
        .list(&ListParams::default().labels(&format!("{label}={value}")))
        .await
        .expect("nodes list");
    assert!(
        !listed.items.is_empty(),
        "no node labelled {label}={value}: see docs/e2e-real-clusters.md"
    );
    for (i, node) in listed.items.iter().enumerate() {
        let count = if i == 0 { gpus } else { 0 }.to_string();
        let patch = json!({"status": {
            "capacity": {"nvidia.com/gpu": count},
            "allocatable": {"nvidia.com/gpu": count},
        }});
        let name = node.metadata.name.clone().unwrap_or_default();
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("node status patch");
    }
}

/// Real clusters only: removes what earlier tests left (deployments with their finalizers,
/// pools, policies, and children), so each test starts from the same state.
pub async fn reset(hub: &TestCluster, members: [&TestCluster; 2], app_namespace: &str) {
    use skybridge::api::{BurstPolicy, ComputePool, ModelDeployment};
    let hub_client = hub.client().expect("client");
    let mds: Api<ModelDeployment> = Api::namespaced(hub_client.clone(), app_namespace);
    if let Ok(list) = mds.list(&ListParams::default()).await {
        for md in list.items {
            let name = md.metadata.name.clone().unwrap_or_default();
            let _ = mds
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
            let _ = mds.delete(&name, &Default::default()).await;
        }
    }
    let pools: Api<ComputePool> = Api::all(hub_client.clone());
    let _ = pools
        .delete_collection(&Default::default(), &ListParams::default())
        .await;
    let policies: Api<BurstPolicy> = Api::all(hub_client);
    let _ = policies
        .delete_collection(&Default::default(), &ListParams::default())
        .await;
    for member in members {
        let client = member.client().expect("client");
        delete_managed::<k8s_openapi::api::apps::v1::Deployment>(&client).await;
        delete_managed::<k8s_openapi::api::core::v1::Service>(&client).await;
    }
}

/// Deletes every object of kind `K` that the operator manages, in every namespace.
async fn delete_managed<K>(client: &Client)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=skybridge");
    let all: Api<K> = Api::all(client.clone());
    for object in all
        .list(&managed)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        let name = object.meta().name.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(client.clone(), &namespace);
        let _ = api.delete(&name, &Default::default()).await;
    }
}
