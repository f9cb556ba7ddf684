//! Build, the third step of a reconcile: pure functions from the spec, the decision and what
//! was observed to the children the operator wants in each pool's cluster (Deployments,
//! Services, store-credential Secrets), serialized once for the applier. Adding a kind of
//! child is adding a builder here.

use super::decide::Decision;
use super::observe::{Observed, SecretData};
use crate::api::ComputePool;
use crate::api::{Component, ComputePoolSpec, ContainerSecurity, ModelDeployment};
pub use crate::operator::artifacts::plan::ModelFetch;
use crate::operator::artifacts::syncer::{
    CREDENTIAL_KEYS, may_copy_store_credentials, store_secret_name,
};
use crate::operator::kubernetes::applier::{ChildId, DesiredChild, Kind};
use crate::operator::kubernetes::names::{
    ANNOTATION_DIGEST, ANNOTATION_VERSION, component_labels, placement_labels,
};
use crate::operator::kubernetes::names::{
    LABEL_POOL, LABEL_SERVING, SERVING, cluster_key, deployment_labels, target_namespace,
};
pub use crate::operator::kubernetes::names::{deployment_name, service_name};
use crate::operator::kubernetes::service::serving_spec;
use crate::operator::rollout::canary;
use crate::operator::rollout::children::{VersionNames, model_at};
use crate::operator::rollout::step::Serving;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecurityContext, Service, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A child that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("serialising {kind} {name}")]
    Serialize {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// The copy of a pool's store credentials is refused (see `may_copy_store_credentials`).
    #[error("pool {pool}: {reason}")]
    CredentialsRefused { pool: String, reason: String },
    /// The store credentials to copy could not be read.
    #[error("pool {pool}: store credentials: {message}")]
    Credentials { pool: String, message: String },
}

/// Every child a deployment wants, in every pool's cluster.
#[derive(Default)]
pub struct Desired {
    pub children: Vec<DesiredChild>,
    /// The (component, pool) of each Deployment child, by index in `children`: readiness is
    /// reported per placement.
    pub placements: BTreeMap<usize, (String, String)>,
    /// Per pool, the children kept in its cluster: the desired ones, and the stranded
    /// workloads (with their Services) the partition rules keep outside the plan.
    pub keep: BTreeMap<String, BTreeSet<ChildId>>,
    /// Children that could not be built; the others are applied, and the reconcile fails
    /// after its report.
    pub problems: Vec<BuildError>,
}

/// The children `md` wants for `decision`: one Deployment per (component, pool) with replicas,
/// one Service per component per cluster and namespace, and (with managed artifacts) one copy
/// of a pool's store credentials per serving pool whose store has them. `operator_ns`: where
/// credentials are read from; `image`: the operator's own, for the `fetch-model` init
/// container.
pub fn build(
    md: &ModelDeployment,
    observed: &Observed,
    decision: &Decision,
    operator_ns: &str,
    image: &str,
) -> Desired {
    let pools = &decision.estate.pools;
    let fetches = decision
        .artifacts
        .as_ref()
        .map(|stage| stage.fetches(md, pools, &decision.plans, image))
        .unwrap_or_default();
    let mut desired = Desired::default();
    let push = |desired: &mut Desired,
                kind: Kind,
                pool: &str,
                namespace: &str,
                name: &str,
                object: Result<DesiredChild, serde_json::Error>| {
        match object {
            Ok(child) => {
                desired
                    .keep
                    .entry(pool.to_string())
                    .or_default()
                    .insert(child.id());
                desired.children.push(child);
                true
            }
            Err(source) => {
                // Not applied, but not an orphan either.
                desired.keep.entry(pool.to_string()).or_default().insert((
                    kind,
                    namespace.to_string(),
                    name.to_string(),
                ));
                desired.problems.push(BuildError::Serialize {
                    kind: kind.name(),
                    name: name.to_string(),
                    source,
                });
                false
            }
        }
    };
    // Secrets first: the pods of the Deployments name them.
    for (pool_name, fetch) in &fetches {
        let Some(pool) = pools.get(pool_name) else {
            continue;
        };
        if fetch.credentials_secret.is_none() {
            continue;
        }
        match store_secret(
            md,
            pool_name,
            pool,
            pools,
            operator_ns,
            &observed.credentials,
        ) {
            Ok(secret) => {
                let (namespace, name) =
                    (target_namespace(md, pool), store_secret_name(md, pool_name));
                let child = DesiredChild::new(Kind::Secret, pool_name, &namespace, &name, &secret);
                push(
                    &mut desired,
                    Kind::Secret,
                    pool_name,
                    &namespace,
                    &name,
                    child,
                );
            }
            Err(problem) => desired.problems.push(problem),
        }
    }
    // Which versions run where: the plan's replicas for the one version serving, or during a
    // rollout each version's replicas per (component, pool) as the rollout decided.
    let rollout = &decision.rollout.serving;
    let label_pods = canary(md).is_some() || rollout.stable_names().key.is_some();
    let old_fetches = match (rollout, &decision.old_artifacts) {
        (Serving::Two { replicas, .. }, Some(stage)) => {
            let old_pools: BTreeSet<String> = replicas
                .iter()
                .filter(|(_, (old, _))| *old > 0)
                .map(|((_, pool), _)| pool.clone())
                .collect();
            stage.fetches_in(md, pools, old_pools, image)
        }
        _ => BTreeMap::new(),
    };
    let new_fetches = match (rollout, &decision.artifacts) {
        (Serving::Two { replicas, .. }, Some(stage)) => {
            let new_pools: BTreeSet<String> = replicas
                .iter()
                .filter(|(_, (_, new))| *new > 0)
                .map(|((_, pool), _)| pool.clone())
                .collect();
            stage.fetches_in(md, pools, new_pools, image)
        }
        _ => BTreeMap::new(),
    };
    let mut services: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (component, plan) in md.spec.components.iter().zip(&decision.plans) {
        // (pool, version's names, its model, its replicas, how its pods fetch).
        let mut workloads: Vec<(
            String,
            &VersionNames,
            ModelDeployment,
            u32,
            Option<&ModelFetch>,
        )> = Vec::new();
        match rollout {
            Serving::One { names, .. } => {
                for placement in plan.placements.iter().filter(|p| p.replicas > 0) {
                    workloads.push((
                        placement.pool.clone(),
                        names,
                        md.clone(),
                        placement.replicas,
                        fetches.get(&placement.pool),
                    ));
                }
            }
            Serving::Two {
                from,
                old,
                new,
                replicas,
                ..
            } => {
                let old_model = model_at(md, from);
                for ((c, pool), (old_replicas, new_replicas)) in replicas {
                    if c != &component.name {
                        continue;
                    }
                    if *old_replicas > 0 {
                        workloads.push((
                            pool.clone(),
                            old,
                            old_model.clone(),
                            *old_replicas,
                            old_fetches.get(pool),
                        ));
                    }
                    if *new_replicas > 0 {
                        workloads.push((
                            pool.clone(),
                            new,
                            md.clone(),
                            *new_replicas,
                            new_fetches.get(pool),
                        ));
                    }
                }
            }
        }
        for (pool_name, names, model, planned, fetch) in workloads {
            let Some(pool) = pools.get(&pool_name) else {
                continue;
            };
            let local = cluster_key(pool) == "local";
            let owner = if local {
                md.controller_owner_ref(&())
            } else {
                None
            };
            let namespace = target_namespace(md, pool);
            // Replicas held for stranded workloads' replacements and for draining traffic
            // backends (see `decide::TrafficHolds`) are kept: max(planned, held). During a
            // rollout they hold the stable version's workload.
            let key = (component.name.clone(), pool_name.clone());
            let replicas = if names == rollout.stable_names() {
                [
                    &decision.stranded.hold,
                    &decision.traffic.holds,
                    &decision.capacity_holds,
                ]
                .into_iter()
                .filter_map(|hold| hold.get(&key).copied())
                .fold(planned, u32::max)
            } else {
                planned
            };
            let deployment = build_deployment(&Placement {
                deployment: &model,
                component,
                pool_name: &pool_name,
                pool: &pool.spec,
                replicas,
                namespace: &namespace,
                model: fetch,
                owner: owner.clone(),
            });
            let deployment =
                names.apply_to(deployment, md, &component.name, &pool_name, label_pods);
            let name = names.deployment_name(md, &component.name, &pool_name);
            let child =
                DesiredChild::new(Kind::Deployment, &pool_name, &namespace, &name, &deployment);
            if push(
                &mut desired,
                Kind::Deployment,
                &pool_name,
                &namespace,
                &name,
                child,
            ) {
                desired.placements.insert(
                    desired.children.len() - 1,
                    (component.name.clone(), pool_name.clone()),
                );
            }
            // One Service per (cluster, namespace, component), applied with its first workload.
            // During a rollout a routed component's Service selects the stable version only
            // (the new one has its own, written by the traffic layer with the route).
            let service_key = (cluster_key(pool), namespace.clone(), component.name.clone());
            let name = service_name(md, &component.name);
            if services.insert(service_key) {
                let mut service = build_service(md, component, &namespace, owner);
                if let Serving::Two { old, .. } = rollout
                    && component.traffic.is_some()
                {
                    service = old.narrow(service, name.clone());
                }
                let child =
                    DesiredChild::new(Kind::Service, &pool_name, &namespace, &name, &service);
                push(
                    &mut desired,
                    Kind::Service,
                    &pool_name,
                    &namespace,
                    &name,
                    child,
                );
            } else {
                desired.keep.entry(pool_name.clone()).or_default().insert((
                    Kind::Service,
                    namespace.clone(),
                    name,
                ));
            }
        }
    }
    // Stranded workloads kept outside the plan, and pools whose traffic backend drains (a
    // pool dropped from the plan keeps its workload until the drain ends), with their Services.
    for (component, pool_name) in decision
        .stranded
        .protect
        .iter()
        .chain(decision.traffic.holds.keys())
        .chain(decision.capacity_holds.keys())
    {
        let Some(pool) = pools.get(pool_name) else {
            continue;
        };
        let namespace = target_namespace(md, pool);
        let keep = desired.keep.entry(pool_name.clone()).or_default();
        keep.insert((
            Kind::Deployment,
            namespace.clone(),
            rollout
                .stable_names()
                .deployment_name(md, component, pool_name),
        ));
        keep.insert((Kind::Service, namespace, service_name(md, component)));
    }
    desired
}

/// The copy of `pool`'s store credentials for `md`'s pods in `pool`'s cluster (target
/// namespace): the AWS key fields only, checked right before whatever validation said (see
/// `may_copy_store_credentials`).
pub fn store_secret(
    md: &ModelDeployment,
    pool_name: &str,
    pool: &ComputePool,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    operator_ns: &str,
    credentials: &BTreeMap<String, Result<Arc<SecretData>, String>>,
) -> Result<Secret, BuildError> {
    // Defence in depth: the route to this pool is already forbidden and validation reports the
    // pool, but a private store's keys must not reach a public cluster even if both missed it.
    may_copy_store_credentials(pool, pools, operator_ns).map_err(|reason| {
        BuildError::CredentialsRefused {
            pool: pool_name.to_string(),
            reason,
        }
    })?;
    let secret_ref = pool
        .spec
        .artifact_store
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
        .ok_or_else(|| BuildError::Credentials {
            pool: pool_name.to_string(),
            message: "the store names no credentials".into(),
        })?;
    let data = match credentials.get(&secret_ref.name) {
        Some(Ok(data)) => data,
        Some(Err(message)) => {
            return Err(BuildError::Credentials {
                pool: pool_name.to_string(),
                message: message.clone(),
            });
        }
        None => {
            return Err(BuildError::Credentials {
                pool: pool_name.to_string(),
                message: format!("Secret {} was not read", secret_ref.name),
            });
        }
    };
    let data: BTreeMap<String, k8s_openapi::ByteString> = data
        .iter()
        .filter(|(k, _)| CREDENTIAL_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut labels = deployment_labels(&md.namespace().unwrap_or_default(), &md.name_any());
    labels.insert(LABEL_POOL.to_string(), pool_name.to_string());
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(store_secret_name(md, pool_name)),
            namespace: Some(target_namespace(md, pool)),
            labels: Some(labels),
            owner_references: if cluster_key(pool) == "local" {
                md.controller_owner_ref(&()).map(|o| vec![o])
            } else {
                None
            },
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// One component's replicas in one pool.
pub struct Placement<'a> {
    pub deployment: &'a ModelDeployment,
    pub component: &'a Component,
    pub pool_name: &'a str,
    pub pool: &'a ComputePoolSpec,
    pub replicas: u32,
    /// Namespace in the pool's cluster.
    pub namespace: &'a str,
    pub model: Option<&'a ModelFetch>,
    /// Set for children in the operator's own cluster, so that garbage collection removes them.
    pub owner: Option<OwnerReference>,
}

/// Mount point of the verified model in every serving container.
pub const MODEL_DIR: &str = "/models";

pub fn build_deployment(p: &Placement) -> Deployment {
    let md_namespace = p.deployment.namespace().unwrap_or_default();
    let md_name = p.deployment.name_any();
    let labels = placement_labels(&md_namespace, &md_name, &p.component.name, p.pool_name);
    let mut annotations = BTreeMap::from([(
        ANNOTATION_VERSION.to_string(),
        p.deployment.spec.model.version.clone(),
    )]);
    if let Some(digest) = p.model.and_then(|m| m.digest.clone()) {
        annotations.insert(ANNOTATION_DIGEST.to_string(), digest);
    }
    // In the Services' endpoints (not in the workload's selector: draining relabels, see
    // `capacity::drain`).
    let mut pod_labels = labels.clone();
    pod_labels.insert(LABEL_SERVING.to_string(), SERVING.to_string());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            // The digest in the template rolls the pods when the model changes.
            annotations: Some(annotations.clone()),
            ..Default::default()
        }),
        spec: Some(pod_spec(p)),
    };
    Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(
                p.deployment,
                &p.component.name,
                p.pool_name,
            )),
            namespace: Some(p.namespace.to_string()),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            owner_references: p.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(i32::try_from(p.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..Default::default()
            },
            template,
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // Never dip below the placed count while a new model rolls out.
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            ..Default::default()
        },
        status: None,
    }
}

fn pod_spec(p: &Placement) -> PodSpec {
    let component = p.component;
    let mut requests = BTreeMap::from([
        ("cpu".to_string(), Quantity(component.resources.cpu.clone())),
        (
            "memory".to_string(),
            Quantity(component.resources.memory.clone()),
        ),
    ]);
    let mut limits = BTreeMap::from([(
        "memory".to_string(),
        Quantity(component.resources.memory.clone()),
    )]);
    if let Some(gpu) = &component.resources.gpu {
        requests.insert("nvidia.com/gpu".into(), Quantity(gpu.count.to_string()));
        limits.insert("nvidia.com/gpu".into(), Quantity(gpu.count.to_string()));
    }
    let model_volume = VolumeMount {
        name: "model".into(),
        mount_path: MODEL_DIR.into(),
        ..Default::default()
    };
    let read_only_root = component.security.read_only_root_filesystem;
    let mut serving_mounts = vec![VolumeMount {
        read_only: Some(true),
        ..model_volume.clone()
    }];
    if read_only_root {
        // Most serving images write scratch files under /tmp; it stays writable, nothing else.
        serving_mounts.push(VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        });
    }
    let serving = Container {
        name: component.name.clone(),
        image: Some(component.image.clone()),
        args: (!component.args.is_empty()).then(|| component.args.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("serving".into()),
            container_port: i32::from(component.port),
            ..Default::default()
        }]),
        env: Some(model_env(p)),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(component.port)),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        volume_mounts: Some(serving_mounts),
        security_context: Some(serving_security_context(&component.security)),
        ..Default::default()
    };
    let init_containers = p.model.map(|model| {
        let mut args = vec![
            "fetch-model".to_string(),
            "--from".into(),
            model.uri.clone(),
            "--dest".into(),
            MODEL_DIR.into(),
        ];
        if let Some(endpoint) = &model.endpoint {
            args.extend(["--endpoint".into(), endpoint.clone()]);
        }
        if let Some(region) = &model.region {
            args.extend(["--region".into(), region.clone()]);
        }
        if model.path_style {
            args.push("--path-style".into());
        }
        if let Some(digest) = &model.digest {
            args.extend(["--digest".into(), digest.clone()]);
        }
        vec![Container {
            name: "fetch-model".into(),
            image: Some(model.image.clone()),
            args: Some(args),
            env_from: model.credentials_secret.as_ref().map(|name| {
                vec![EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: name.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }]
            }),
            volume_mounts: Some(vec![model_volume.clone()]),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                // The image's distroless `nonroot` user, stated so that the kubelet can check
                // runAsNonRoot without reading the image, and a mirror image cannot run as root.
                run_as_user: Some(FETCH_MODEL_UID),
                run_as_group: Some(FETCH_MODEL_UID),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Default::default()
                }),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    let mut volumes = vec![Volume {
        name: "model".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if read_only_root {
        volumes.push(Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    PodSpec {
        containers: vec![serving],
        // Serving pods never call the API server of the cluster they run in.
        automount_service_account_token: Some(false),
        init_containers,
        node_selector: (!p.pool.node_selector.is_empty()).then(|| p.pool.node_selector.clone()),
        tolerations: (!p.pool.tolerations.is_empty()).then(|| p.pool.tolerations.clone()),
        volumes: Some(volumes),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Uid and gid of the `fetch-model` init container: the operator image's distroless `nonroot`.
pub const FETCH_MODEL_UID: i64 = 65532;

/// The writable scratch volume mounted at `/tmp` when the root filesystem is read-only.
const TMP_VOLUME: &str = "tmp";

/// The serving container's security context: the component's choices for user and root
/// filesystem, and the parts no component may relax.
fn serving_security_context(security: &ContainerSecurity) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(security.read_only_root_filesystem),
        run_as_non_root: Some(security.run_as_non_root),
        run_as_user: security.run_as_user,
        run_as_group: security.run_as_group,
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model_env(p: &Placement) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar {
            name: "SKYBRIDGE_MODEL_DIR".into(),
            value: Some(MODEL_DIR.into()),
            ..Default::default()
        },
        EnvVar {
            name: "SKYBRIDGE_MODEL_VERSION".into(),
            value: Some(p.deployment.spec.model.version.clone()),
            ..Default::default()
        },
        EnvVar {
            name: "SKYBRIDGE_POOL".into(),
            value: Some(p.pool_name.to_string()),
            ..Default::default()
        },
    ];
    if let Some(digest) = p.model.and_then(|m| m.digest.clone()) {
        env.push(EnvVar {
            name: "SKYBRIDGE_MODEL_DIGEST".into(),
            value: Some(digest),
            ..Default::default()
        });
    }
    env
}

/// The Service of one component in one cluster: it selects the component's replicas of every
/// pool in that cluster.
pub fn build_service(
    deployment: &ModelDeployment,
    component: &Component,
    namespace: &str,
    owner: Option<OwnerReference>,
) -> Service {
    let md_namespace = deployment.namespace().unwrap_or_default();
    let labels = component_labels(&md_namespace, &deployment.name_any(), &component.name);
    Service {
        metadata: ObjectMeta {
            name: Some(service_name(deployment, &component.name)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(serving_spec(labels, component.port)),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComputePool, ModelDeployment};

    fn fixtures() -> (ModelDeployment, ComputePool) {
        let md: ModelDeployment = serde_yaml_ng::from_str(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {name: ctr-ranker, namespace: recsys, uid: "1234"}
spec:
  model: {source: {uri: "s3://shop-models/recsys/deepfm", pool: dc1-l4}, version: "2026.11.5"}
  components:
    - name: ranker
      dataClass: internal
      image: pytorch/torchserve:0.12.0-gpu
      args: ["torchserve", "--foreground"]
      resources: {gpu: {count: 1, type: nvidia-l4}, cpu: "4", memory: 16Gi}
      replicas: {min: 2, max: 10}
"#,
        )
        .unwrap();
        let pool: ComputePool = serde_yaml_ng::from_str(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: aws-spot}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  nodeSelector: {pool: spot}
  tolerations: [{key: spot, operator: Exists, effect: NoSchedule}]
  capacity: {gpu: {type: nvidia-l4, count: 8}}
"#,
        )
        .unwrap();
        (md, pool)
    }

    #[test]
    fn deployment_carries_pool_scheduling_gpu_and_labels() {
        let (md, pool) = fixtures();
        let fetch = ModelFetch {
            image: "ghcr.io/skybridge/skybridge:0.1.0".into(),
            uri: "s3://shop-models-euc1/recsys/deepfm".into(),
            endpoint: None,
            region: Some("eu-central-1".into()),
            path_style: false,
            digest: Some("sha256:abc".into()),
            credentials_secret: Some("skybridge-store-aws-spot".into()),
        };
        let built = build_deployment(&Placement {
            deployment: &md,
            component: &md.spec.components[0],
            pool_name: "aws-spot",
            pool: &pool.spec,
            replicas: 3,
            namespace: "shop-burst",
            model: Some(&fetch),
            owner: None,
        });
        assert_eq!(
            built.metadata.name.as_deref(),
            Some("ctr-ranker-ranker-aws-spot")
        );
        assert_eq!(built.metadata.namespace.as_deref(), Some("shop-burst"));
        let labels = built.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "skybridge");
        assert_eq!(labels["skybridge.io/pool"], "aws-spot");
        let spec = built.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["pool"], "spot");
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("spot"));
        let limits = pod.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap();
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
        let init = &pod.init_containers.unwrap()[0];
        let args = init.args.as_ref().unwrap();
        assert!(args.windows(2).any(|w| w == ["--digest", "sha256:abc"]));
        assert_eq!(
            init.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
    }

    fn pod_of(md: &ModelDeployment, pool: &ComputePool, fetch: Option<&ModelFetch>) -> PodSpec {
        build_deployment(&Placement {
            deployment: md,
            component: &md.spec.components[0],
            pool_name: "aws-spot",
            pool: &pool.spec,
            replicas: 1,
            namespace: "shop-burst",
            model: fetch,
            owner: None,
        })
        .spec
        .template
        .spec
        .unwrap()
    }

    fn fetch() -> ModelFetch {
        ModelFetch {
            image: "ghcr.io/skybridge/skybridge:0.1.0".into(),
            uri: "s3://shop-models-euc1/recsys/deepfm".into(),
            endpoint: None,
            region: None,
            path_style: false,
            digest: None,
            credentials_secret: None,
        }
    }

    /// What no container may relax: no privilege escalation, no privileged mode, every
    /// capability dropped, RuntimeDefault seccomp.
    fn assert_confined(context: &SecurityContext, container: &str) {
        assert_eq!(
            context.allow_privilege_escalation,
            Some(false),
            "{container}"
        );
        assert_eq!(context.privileged, Some(false), "{container}");
        let dropped = context.capabilities.as_ref().and_then(|c| c.drop.clone());
        assert_eq!(dropped, Some(vec!["ALL".to_string()]), "{container}");
        let added = context.capabilities.as_ref().and_then(|c| c.add.clone());
        assert_eq!(added, None, "{container}");
        assert_eq!(
            context.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{container}"
        );
    }

    #[test]
    fn every_container_runs_non_root_read_only_and_confined_by_default() {
        let (md, pool) = fixtures();
        let pod = pod_of(&md, &pool, Some(&fetch()));
        let serving = &pod.containers[0];
        let context = serving.security_context.as_ref().unwrap();
        assert_confined(context, "serving");
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.read_only_root_filesystem, Some(true));
        // A writable /tmp, backed by its own emptyDir, since the root filesystem is read-only.
        let mounts = serving.volume_mounts.as_ref().unwrap();
        let tmp = mounts.iter().find(|m| m.mount_path == "/tmp").unwrap();
        assert_ne!(tmp.read_only, Some(true));
        let volumes = pod.volumes.as_ref().unwrap();
        let tmp_volume = volumes.iter().find(|v| v.name == tmp.name).unwrap();
        assert!(tmp_volume.empty_dir.is_some());
        // The model stays read-only for the serving container.
        let model = mounts.iter().find(|m| m.mount_path == MODEL_DIR).unwrap();
        assert_eq!(model.read_only, Some(true));

        let init = &pod.init_containers.as_ref().unwrap()[0];
        let context = init.security_context.as_ref().unwrap();
        assert_confined(context, "fetch-model");
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.run_as_user, Some(FETCH_MODEL_UID));
        assert_eq!(context.run_as_group, Some(FETCH_MODEL_UID));
        assert_eq!(context.read_only_root_filesystem, Some(true));
        let pod_seccomp = pod
            .security_context
            .as_ref()
            .unwrap()
            .seccomp_profile
            .as_ref();
        assert_eq!(
            pod_seccomp.map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn a_component_relaxes_only_user_and_root_filesystem() {
        let (mut md, pool) = fixtures();
        md.spec.components[0].security = ContainerSecurity {
            read_only_root_filesystem: false,
            run_as_non_root: false,
            run_as_user: Some(0),
            run_as_group: Some(0),
        };
        let pod = pod_of(&md, &pool, Some(&fetch()));
        let serving = &pod.containers[0];
        let context = serving.security_context.as_ref().unwrap();
        assert_eq!(context.read_only_root_filesystem, Some(false));
        assert_eq!(context.run_as_non_root, Some(false));
        assert_eq!(context.run_as_user, Some(0));
        assert_confined(context, "serving");
        // No scratch volume when the root filesystem is writable anyway.
        assert!(
            !serving
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.mount_path == "/tmp")
        );
        assert_eq!(pod.volumes.as_ref().unwrap().len(), 1);
        // The init container is ours, not the component's: it stays locked down.
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            init.security_context.as_ref().unwrap().run_as_user,
            Some(FETCH_MODEL_UID)
        );

        md.spec.components[0].security = ContainerSecurity {
            run_as_user: Some(1000),
            ..ContainerSecurity::default()
        };
        let pod = pod_of(&md, &pool, None);
        let context = pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(context.run_as_user, Some(1000));
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn service_selects_every_pool_of_the_component() {
        let (md, _) = fixtures();
        let svc = build_service(&md, &md.spec.components[0], "recsys", None);
        let selector = svc.spec.unwrap().selector.unwrap();
        assert!(!selector.contains_key("skybridge.io/pool"));
        assert_eq!(selector["skybridge.io/component"], "ranker");
    }

    fn yaml_pool(yaml: &str) -> Arc<ComputePool> {
        Arc::new(serde_yaml_ng::from_str(yaml).unwrap())
    }

    fn two_component_deployment() -> ModelDeployment {
        serde_yaml_ng::from_str(
            r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {name: shop, namespace: web, uid: "u-1"}
spec:
  model: {source: {uri: "s3://models/m", pool: a}, version: "1"}
  components:
  - {name: enc, dataClass: internal, image: "serve:1", resources: {gpu: {count: 1, type: l4}, cpu: "1", memory: 1Gi}, replicas: {min: 1, max: 4}}
  - {name: rank, dataClass: internal, image: "serve:1", resources: {gpu: {count: 1, type: l4}, cpu: "1", memory: 1Gi}, replicas: {min: 1, max: 4}}
"#,
        )
        .unwrap()
    }

    fn component_plan(component: &str, pools: &[(&str, u32)]) -> crate::planner::ComponentPlan {
        crate::planner::ComponentPlan {
            key: crate::planner::ComponentKey {
                namespace: "web".into(),
                deployment: "shop".into(),
                component: component.into(),
            },
            data_class: crate::api::DataClass::Internal,
            desired_replicas: pools.iter().map(|p| p.1).sum(),
            placements: pools
                .iter()
                .map(|&(pool, replicas)| crate::planner::Placement {
                    pool: pool.into(),
                    cloud: crate::api::Cloud::Private,
                    replicas,
                    reason: String::new(),
                })
                .collect(),
            unplaced: 0,
            reasons: Vec::new(),
            cost_per_hour: 0.0,
        }
    }

    fn observed(estate: crate::estate::Estate) -> Observed {
        Observed {
            estate,
            invalid: Vec::new(),
            demand: super::super::observe::DemandReading {
                demand: BTreeMap::new(),
                failures: Vec::new(),
                next_read: std::time::Duration::from_secs(15),
            },
            reachability: BTreeMap::new(),
            stranded_before: Vec::new(),
            watched_ready: BTreeMap::new(),
            stranded_gone: BTreeSet::new(),
            credentials: BTreeMap::new(),
            rollout: Default::default(),
        }
    }

    /// Two pools in the operator's cluster, one in a member cluster: a Deployment per
    /// (component, pool) with replicas, a Service per component per cluster, the owner
    /// reference only where garbage collection can follow it, and what the partition rules
    /// protect kept (not applied).
    #[test]
    fn the_desired_set_has_one_service_per_component_and_cluster() {
        let local = |name: &str| {
            yaml_pool(&format!(
                "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {{name: {name}}}\nspec: {{cloud: private, provider: onprem, region: fra, capacity: {{}}}}\n"
            ))
        };
        let remote = yaml_pool(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: c}\nspec: {cloud: private, provider: onprem, region: fra, capacity: {}, cluster: {namespace: serve, kubeconfigSecretRef: {name: member}}}\n",
        );
        let mut estate = crate::estate::Estate::default();
        for pool in [local("a"), local("b"), remote] {
            estate.pools.insert(pool.name_any(), pool);
        }
        let md = two_component_deployment();
        let mut protect = BTreeSet::new();
        protect.insert(("rank".to_string(), "b".to_string()));
        let decision = Decision {
            plans: vec![
                component_plan("enc", &[("a", 1), ("b", 2), ("c", 1)]),
                component_plan("rank", &[("a", 0), ("c", 2)]),
            ],
            artifacts: None,
            estate: Arc::new(estate.clone()),
            stranded: crate::operator::deployment::stranded::StrandedOutcome {
                protect,
                ..Default::default()
            },
            sweep: crate::operator::kubernetes::applier::SweepMode::Indexed,
            signature: 0,
            notes: Vec::new(),
            traffic: Default::default(),
            capacity_holds: Default::default(),
            rollout: crate::operator::rollout::step::RolloutOutcome {
                serving: Serving::One {
                    stable: crate::operator::rollout::spec_version(&md),
                    names: VersionNames::default(),
                },
                record: None,
                conditions: Vec::new(),
                events: Vec::new(),
                remove_annotation: false,
                next_change_at: None,
            },
            old_artifacts: None,
        };
        let desired = build(&md, &observed(estate), &decision, "skybridge-system", "img");
        assert!(desired.problems.is_empty());
        let ids: Vec<(Kind, String, String, String)> = desired
            .children
            .iter()
            .map(|c| (c.kind, c.pool.clone(), c.namespace.clone(), c.name.clone()))
            .collect();
        let id = |kind, pool: &str, ns: &str, name: &str| {
            (kind, pool.to_string(), ns.to_string(), name.to_string())
        };
        assert_eq!(
            ids,
            vec![
                id(Kind::Deployment, "a", "web", "shop-enc-a"),
                id(Kind::Service, "a", "web", "shop-enc"),
                id(Kind::Deployment, "b", "web", "shop-enc-b"),
                id(Kind::Deployment, "c", "serve", "shop-enc-c"),
                id(Kind::Service, "c", "serve", "shop-enc"),
                id(Kind::Deployment, "c", "serve", "shop-rank-c"),
                id(Kind::Service, "c", "serve", "shop-rank"),
            ]
        );
        assert_eq!(desired.placements.len(), 4, "readiness per Deployment");
        assert_eq!(
            desired.placements[&5],
            ("rank".to_string(), "c".to_string())
        );
        let owned = |i: usize| {
            serde_json::from_str::<serde_json::Value>(desired.children[i].body.json.get()).unwrap()
                ["metadata"]["ownerReferences"]
                .is_array()
        };
        assert!(
            owned(0) && owned(1) && !owned(3) && !owned(4),
            "owner references stay local"
        );
        // Pool b keeps its Service (applied with pool a's placement) and the stranded rank.
        let keep_b = &desired.keep["b"];
        assert!(keep_b.contains(&(Kind::Service, "web".into(), "shop-enc".into())));
        assert!(keep_b.contains(&(Kind::Deployment, "web".into(), "shop-rank-b".into())));
        assert!(keep_b.contains(&(Kind::Service, "web".into(), "shop-rank".into())));
        assert!(
            !desired.keep["a"].contains(&(Kind::Deployment, "web".into(), "shop-rank-a".into())),
            "no replicas: an orphan"
        );
    }

    /// A store's credentials are copied with their AWS keys only; a copy the residency rules
    /// refuse, or whose Secret could not be read, is an error naming the pool, never a Secret.
    #[test]
    fn store_credentials_are_copied_with_their_keys_only_and_refusals_are_errors() {
        let private = yaml_pool(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: dc1}\nspec: {cloud: private, provider: onprem, region: fra, capacity: {}, artifactStore: {bucket: models, credentialsSecretRef: {name: dc1-store}}}\n",
        );
        let public = yaml_pool(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: aws}\nspec: {cloud: public, provider: aws, region: r, capacity: {}, cluster: {kubeconfigSecretRef: {name: aws}}, artifactStore: {bucket: models, credentialsSecretRef: {name: dc1-store}}}\n",
        );
        let pools = BTreeMap::from([
            ("dc1".to_string(), private.clone()),
            ("aws".to_string(), public.clone()),
        ]);
        let md = two_component_deployment();
        let data: SecretData = [
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("OTHER", "not copied"),
        ]
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                k8s_openapi::ByteString(v.as_bytes().to_vec()),
            )
        })
        .collect();
        let read = BTreeMap::from([("dc1-store".to_string(), Ok(Arc::new(data)))]);
        let secret = store_secret(&md, "dc1", &private, &pools, "skybridge-system", &read).unwrap();
        let keys: Vec<&str> = secret
            .data
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
        assert_eq!(secret.metadata.name.as_deref(), Some("shop-store-dc1"));
        assert_eq!(secret.metadata.labels.as_ref().unwrap()[LABEL_POOL], "dc1");
        assert!(
            secret.metadata.owner_references.is_some(),
            "local: garbage-collected"
        );
        match store_secret(&md, "aws", &public, &pools, "skybridge-system", &read) {
            Err(BuildError::CredentialsRefused { pool, .. }) => assert_eq!(pool, "aws"),
            other => panic!("a private store's keys for a public cluster: {other:?}"),
        }
        let failed = BTreeMap::from([("dc1-store".to_string(), Err("forbidden".to_string()))]);
        match store_secret(&md, "dc1", &private, &pools, "skybridge-system", &failed) {
            Err(BuildError::Credentials { pool, message }) => {
                assert_eq!((pool.as_str(), message.as_str()), ("dc1", "forbidden"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store_secret(
                &md,
                "dc1",
                &private,
                &pools,
                "skybridge-system",
                &BTreeMap::new()
            ),
            Err(BuildError::Credentials { .. })
        ));
    }
}
