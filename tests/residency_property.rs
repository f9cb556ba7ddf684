//! Property (issue #18): in random estates whose deployments share models under every spelling
//! (trailing, repeated and `.` slashes, another pool on the same store, a parent prefix, the
//! operator's copy in another private store), with random classes and pool pins, no model that a
//! sensitive component reads ever gets replicas on a public pool (planner) or a route to a
//! public store (artifact plan), and a public pool naming a private store gets no route at all.
//!
//! The oracle is independent of the code under test: the generator knows which true model each
//! deployment reads, and two models share bytes when they live in the same store and one key is
//! the other or inside it.

use proptest::prelude::*;
use skybridge::api::{
    ArtifactMode, Cloud, Component, ComponentResources, ComputePool, DataClass, GpuRequest,
    ModelDeployment, ModelDeploymentSpec, ModelSource, ModelSpec, ReplicaRange,
};
use skybridge::estate::{Estate, ModelClasses, plan_input};
use skybridge::operator::artifacts::plan::{Route, candidates, to_sync};
use skybridge::planner::plan;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

/// Every pool of every estate (sorted by name, as pins index them). `leak` is public but names
/// the private store of `dc1`: validation refuses it, and the operator must still give it nothing.
const POOLS: &str = r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: aws}
spec: {cloud: public, provider: aws, region: r, capacity: {gpu: {type: l4, count: 64}}, cost: {gpuHour: 0.01}, artifactStore: {bucket: pub-euc1, prefix: mirror, credentialsSecretRef: {name: aws-store}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc1}
spec: {cloud: private, provider: onprem, region: r, capacity: {gpu: {type: l4, count: 3}}, cost: {gpuHour: 0.3}, artifactStore: {bucket: models, endpoint: "http://minio.dc1:9000", credentialsSecretRef: {name: dc1-store}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc1-alias}
spec: {cloud: private, provider: onprem, region: r, capacity: {gpu: {type: l4, count: 3}}, cost: {gpuHour: 0.3}, artifactStore: {bucket: models, endpoint: "http://MINIO.dc1.:9000/", credentialsSecretRef: {name: dc1-store}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc2}
spec: {cloud: private, provider: onprem, region: r, capacity: {gpu: {type: l4, count: 3}}, cost: {gpuHour: 0.3}, artifactStore: {bucket: mirror, prefix: copies/, endpoint: "http://ceph.dc2:7480"}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: gcp}
spec: {cloud: public, provider: gcp, region: r, capacity: {gpu: {type: l4, count: 64}}, cost: {gpuHour: 0.02}, artifactStore: {bucket: pub-gcp, endpoint: "https://storage.example"}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: leak}
spec: {cloud: public, provider: aws, region: r, capacity: {gpu: {type: l4, count: 64}}, cost: {gpuHour: 0.005}, artifactStore: {bucket: models, endpoint: "http://minio.dc1:9000", credentialsSecretRef: {name: leak-store}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: spot}
spec: {cloud: public, provider: aws, region: r, capacity: {gpu: {type: l4, count: 64}}, cost: {gpuHour: 0.003}}
"#;

fn pools() -> &'static BTreeMap<String, Arc<ComputePool>> {
    static POOL_MAP: OnceLock<BTreeMap<String, Arc<ComputePool>>> = OnceLock::new();
    POOL_MAP.get_or_init(|| {
        serde_yaml_ng::Deserializer::from_str(POOLS)
            .map(|d| {
                let pool: ComputePool = serde::Deserialize::deserialize(d).unwrap();
                (kube::ResourceExt::name_any(&pool), Arc::new(pool))
            })
            .collect()
    })
}

/// The true models: (store, key). Store 0 is dc1's MinIO bucket `models`, store 1 dc2's Ceph
/// bucket `mirror`. Model 2 is the parent prefix of models 0 and 1.
const MODELS: [(u8, &str); 5] = [
    (0, "a/m1"),
    (0, "a/m2"),
    (0, "a"),
    (0, "b/m3"),
    (1, "own/m4"),
];

/// `(uri, pool)` of spelling `spelling` of model `model`.
fn spell(model: usize, spelling: u8) -> (String, &'static str) {
    let (store, key) = MODELS[model];
    let (bucket, primary, alias) = match store {
        0 => ("models", "dc1", "dc1-alias"),
        _ => ("mirror", "dc2", "dc2"),
    };
    match spelling {
        0 => (format!("s3://{bucket}/{key}"), primary),
        1 => (format!("s3://{bucket}/{key}/"), primary),
        2 => (
            format!("s3://{bucket}//{}", key.replace('/', "//")),
            primary,
        ),
        3 => (format!("s3://{bucket}/./{key}"), alias),
        4 => (format!("s3://{bucket}/{key}"), alias),
        // The operator's copy in the other private store: `<prefix>/<source bucket>/<key>`.
        _ => match store {
            0 => (format!("s3://mirror/copies/models/{key}"), "dc2"),
            _ => (format!("s3://models/mirror/{key}"), "dc1"),
        },
    }
}

/// Whether the bytes of the two true models overlap.
fn share_bytes(a: usize, b: usize) -> bool {
    let ((sa, ka), (sb, kb)) = (MODELS[a], MODELS[b]);
    let within = |k: &str, outer: &str| k == outer || k.starts_with(&format!("{outer}/"));
    sa == sb && (within(ka, kb) || within(kb, ka))
}

const CLASSES: [DataClass; 3] = [DataClass::Public, DataClass::Internal, DataClass::Sensitive];

/// One deployment: namespace, model, spelling, components (class, pin mask, min replicas).
type Generated = (u8, usize, u8, Vec<(usize, u8, u32)>);

fn deployment(i: usize, (ns, model, spelling, components): &Generated) -> ModelDeployment {
    let (uri, pool) = spell(*model, *spelling);
    let names: Vec<&String> = pools().keys().collect();
    let components = components
        .iter()
        .enumerate()
        .map(|(c, (class, pins, min))| Component {
            name: format!("c{c}"),
            data_class: CLASSES[*class],
            image: "x".into(),
            args: Vec::new(),
            port: 8080,
            resources: ComponentResources {
                gpu: Some(GpuRequest {
                    count: 1,
                    gpu_type: None,
                }),
                cpu: "1".into(),
                memory: "1Gi".into(),
            },
            replicas: ReplicaRange { min: *min, max: 4 },
            burst_policy: None,
            // Mask 0: no pins; otherwise the pools whose bit is set.
            pools: (*pins != 0).then(|| {
                names
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| pins & (1 << b) != 0)
                    .map(|(_, n)| n.to_string())
                    .collect()
            }),
            security: Default::default(),
            traffic: None,
        })
        .collect();
    let mut md = ModelDeployment::new(
        &format!("d{i}"),
        ModelDeploymentSpec {
            model: ModelSpec {
                source: ModelSource {
                    uri,
                    pool: pool.into(),
                },
                version: "1".into(),
            },
            components,
            artifacts: Default::default(),
            rollout: None,
        },
    );
    md.metadata.namespace = Some(format!("ns{ns}"));
    md
}

fn generated() -> impl Strategy<Value = Vec<Generated>> {
    let component = (0..3usize, 0..128u8, 0..4u32);
    let one = (
        0..2u8,
        0..MODELS.len(),
        0..6u8,
        prop::collection::vec(component, 1..=2),
    );
    prop::collection::vec(one, 2..=3)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 100_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_sensitive_model_reaches_a_public_pool_or_store(generated in generated()) {
        let pools = pools();
        let deployments: Vec<ModelDeployment> =
            generated.iter().enumerate().map(|(i, g)| deployment(i, g)).collect();
        let estate = Estate {
            pools: pools.clone(),
            policies: BTreeMap::new(),
            deployments: deployments
                .iter()
                .map(|d| (Estate::key_of(d), Arc::new(d.clone())))
                .collect(),
        };
        // The oracle: a deployment's model is sensitive when it shares bytes with a model a
        // sensitive component reads.
        let sensitive: Vec<bool> = generated
            .iter()
            .map(|(_, model, _, _)| {
                generated.iter().any(|(_, other, _, components)| {
                    share_bytes(*model, *other)
                        && components.iter().any(|c| CLASSES[c.0] == DataClass::Sensitive)
                })
            })
            .collect();

        // Replicas: the planner.
        let planned = plan(&plan_input(&estate, &Default::default()));
        for component in &planned.components {
            let i: usize = component.key.deployment[1..].parse().unwrap();
            if sensitive[i] {
                prop_assert_eq!(
                    component.replicas_in(Cloud::Public), 0,
                    "{} reads a sensitive model: {:?}", component.key, component
                );
            }
        }

        // Bytes: the operator's routes and syncs, as the operator computes the class.
        let classes = ModelClasses::of(&estate);
        let all: BTreeSet<String> = pools.keys().cloned().collect();
        for (i, md) in deployments.iter().enumerate() {
            let routes = candidates(md, pools, classes.class_of(md));
            for c in &routes {
                let reaches = matches!(c.route, Route::Source | Route::Copy { .. });
                if c.cloud == Cloud::Public {
                    prop_assert!(
                        !(reaches && (sensitive[i] || c.pool == "leak")),
                        "deployment {} ({}), pool {}: {:?}", i, md.spec.model.source.uri, c.pool, c.route
                    );
                }
            }
            if sensitive[i] {
                for mode in [ArtifactMode::Eager, ArtifactMode::OnBurst] {
                    let synced = to_sync(mode, &routes, &BTreeMap::new(), &all, &all);
                    for pool in &synced {
                        prop_assert_eq!(pools[pool].spec.cloud, Cloud::Private, "synced to {}", pool);
                    }
                }
            }
        }
    }
}
