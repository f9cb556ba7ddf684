//! End to end, through the Kubernetes API and two real S3 servers (moto on loopback, the private
//! and the public store): the operator syncs a model to the public store before it bursts
//! there, wires the verified digest into every pod's `fetch-model` init container, keeps a
//! sensitive model and private credentials out of the public cloud, and recovers from a broken
//! source.

mod e2e_support;
#[path = "support/s3.rs"]
mod s3;
#[path = "support/s3_proxy.rs"]
mod s3_proxy;

use e2e_support::TestCluster;
use e2e_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use s3::{
    create_bucket, delete, keys, location, model_files, put, seed_model, stores, unique_bucket,
};
use s3_proxy::FaultConfig;
use skybridge::api::common::{Cloud, DataClass};
use skybridge::api::{ModelDeployment, StoreState, StoreStatus};
use skybridge::artifacts::{RetryPolicy, SyncOptions, SyncRequest, read_manifest, sync_model};
use skybridge::operator::artifacts::syncer::ArtifactsConfig;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const PRIVATE_KEY_ID: &str = "dc1-store-key-id";
const PRIVATE_SECRET: &str = "dc1-store-secret-value";
const PUBLIC_KEY_ID: &str = "cloud-store-key-id";
const PUBLIC_SECRET: &str = "cloud-store-secret-value";

/// Quick operator-level retries, and patient request-level ones (the fault proxy makes many
/// requests fail).
fn artifacts_config() -> ArtifactsConfig {
    ArtifactsConfig {
        retry_min: Duration::from_millis(300),
        retry_max: Duration::from_secs(2),
        reverify: Duration::from_secs(3600),
        parallel: 4,
        request_retry: RetryPolicy {
            max_attempts: 12,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
        },
    }
}

/// Publishes a model at `s3://bucket/prefix` of the private store the way a team would, with
/// `skybridge sync` from a staging bucket: the objects plus the manifest. Returns its digest.
async fn publish(bucket: &str, prefix: &str, files: &[(String, Vec<u8>)]) -> String {
    let a = &stores().a.endpoint;
    let staging = unique_bucket("staging");
    seed_model(a, &staging, "m", files).await;
    let report = sync_model(&SyncRequest {
        source: location(a, &staging, "m"),
        destination: location(a, bucket, prefix),
        data_class: DataClass::Internal,
        destination_cloud: Cloud::Private,
        options: SyncOptions::default(),
    })
    .await
    .expect("publish the model");
    report.digest.to_string()
}

/// The two pools, their stores (private: moto A; public: `public_endpoint`, moto B or a fault
/// proxy in front of it) and the stores' credentials Secrets.
fn apply_pools_with_stores(
    estate: &Estate,
    private_bucket: &str,
    public_endpoint: &str,
    public_bucket: &str,
) {
    let a = &stores().a.endpoint;
    estate.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: dc1-store, namespace: {OPERATOR_NAMESPACE}}}
stringData: {{AWS_ACCESS_KEY_ID: {PRIVATE_KEY_ID}, AWS_SECRET_ACCESS_KEY: {PRIVATE_SECRET}, note: not-copied}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cloud-store, namespace: {OPERATOR_NAMESPACE}}}
stringData: {{AWS_ACCESS_KEY_ID: {PUBLIC_KEY_ID}, AWS_SECRET_ACCESS_KEY: {PUBLIC_SECRET}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: dc1-l4}}
spec:
  cloud: private
  provider: onprem
  region: fra-dc1
  cluster: {{kubeconfigSecretRef: {{name: private-kubeconfig}}, namespace: {APP_NAMESPACE}}}
  nodeSelector: {{{POOL_LABEL}: dc1-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.3}}
  startupSeconds: 30
  artifactStore:
    bucket: {private_bucket}
    endpoint: "{a}"
    region: us-east-1
    pathStyle: true
    credentialsSecretRef: {{name: dc1-store}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: cloud-l4}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: burst}}
  nodeSelector: {{{POOL_LABEL}: cloud-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 64}}}}
  cost: {{gpuHour: 0.9}}
  startupSeconds: 120
  artifactStore:
    bucket: {public_bucket}
    prefix: mirror
    endpoint: "{public_endpoint}"
    region: us-east-1
    pathStyle: true
    credentialsSecretRef: {{name: cloud-store}}
"#
    ));
}

/// A deployment of the model at `uri` with `components` (YAML list items), mode `Eager`.
fn model_deployment(name: &str, uri: &str, components: &str) -> String {
    model_deployment_in_mode(name, uri, components, "Eager")
}

fn model_deployment_in_mode(name: &str, uri: &str, components: &str, mode: &str) -> String {
    format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: {APP_NAMESPACE}}}
spec:
  model: {{source: {{uri: "{uri}", pool: dc1-l4}}, version: "1"}}
  artifacts: {{mode: {mode}}}
  components:
{components}
"#
    )
}

fn gpu_component(name: &str, class: &str, replicas: u32) -> String {
    format!(
        "    - {{name: {name}, dataClass: {class}, image: triton:24.10, resources: {{gpu: {{count: 1, type: nvidia-l4}}, cpu: \"1\", memory: 1Gi}}, replicas: {{min: {replicas}, max: {replicas}}}}}\n"
    )
}

fn store<'a>(md: &'a ModelDeployment, pool: &str) -> Option<&'a StoreStatus> {
    md.status
        .as_ref()?
        .artifacts
        .as_ref()?
        .stores
        .iter()
        .find(|s| s.pool == pool)
}

fn store_state(md: &ModelDeployment, pool: &str) -> Option<StoreState> {
    store(md, pool).map(|s| s.state)
}

/// Every Secret of a cluster, all namespaces.
async fn secrets(cluster: &TestCluster) -> Vec<Secret> {
    Api::<Secret>::all(cluster.client().expect("client"))
        .list(&ListParams::default())
        .await
        .expect("list secrets")
        .items
}

fn holds_value(secret: &Secret, value: &str) -> bool {
    secret
        .data
        .iter()
        .flatten()
        .any(|(_, v)| v.0 == value.as_bytes())
        || secret.string_data.iter().flatten().any(|(_, v)| v == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_is_synced_and_verified_before_replicas_burst_to_the_public_pool() {
    let started = Instant::now();
    let (a, b) = (&stores().a.endpoint, &stores().b.endpoint);
    let (private_bucket, public_bucket) = (unique_bucket("dc1"), unique_bucket("cloud"));
    create_bucket(a, &private_bucket).await;
    create_bucket(b, &public_bucket).await;
    let digest = publish(
        &private_bucket,
        "recsys/ranker/v1",
        &model_files(3, 300_000),
    )
    .await;
    // First the public store answers every request with 500 or 503 SlowDown.
    let down = s3_proxy::start(
        b,
        FaultConfig {
            seed: 3,
            error_rate: 1.0,
            ..Default::default()
        },
    )
    .await;

    // Two private GPUs for four replicas: two must burst to the public pool.
    let estate = Estate::start(2, 8).await;
    if !estate.harness_only("model_is_synced_and_verified_before_replicas_burst_to_the_public_pool")
    {
        return;
    }
    apply_pools_with_stores(&estate, &private_bucket, &down.endpoint, &public_bucket);
    let operator = Operator::start_with_artifacts(&estate, artifacts_config()).await;
    let uri = format!("s3://{private_bucket}/recsys/ranker/v1");
    estate.apply(&model_deployment(
        "ranker",
        &uri,
        &gpu_component("ranker", "internal", 4),
    ));

    // The sync fails (visibly, after the request retries), and the two replicas that would
    // burst are held, with the reason, instead of starting pods whose fetch would fail.
    let md = wait_for(&estate, "ranker", "public store Failed, burst held", |md| {
        store_state(md, "cloud-l4") == Some(StoreState::Failed)
            && md.status.as_ref().unwrap().components[0].unplaced_replicas == 2
    })
    .await;
    let failed = store(&md, "cloud-l4").unwrap().message.clone().unwrap();
    assert!(failed.contains("HTTP 5"), "{failed}");
    let reason = md.status.as_ref().unwrap().components[0]
        .unplaced_reason
        .clone()
        .unwrap();
    assert!(
        reason.contains("cloud-l4: held until its store holds the verified model (sync failed"),
        "{reason}"
    );
    assert_eq!(store_state(&md, "dc1-l4"), Some(StoreState::Synced));
    assert!(!is_true(&md, "Bursting"));
    assert!(children(&estate.public).await.is_empty());
    assert!(down.stats.injected() > 0);

    // Then the store comes back, flaky: a proxy that fails a fifth of the requests with 500
    // or 503 SlowDown. The operator retries the sync with backoff, the library retries each
    // request, and the model gets through.
    let proxy = s3_proxy::start(
        b,
        FaultConfig {
            seed: 7,
            error_rate: 0.2,
            ..Default::default()
        },
    )
    .await;
    apply_pools_with_stores(&estate, &private_bucket, &proxy.endpoint, &public_bucket);

    let md = wait_for(&estate, "ranker", "Ready, bursting, model verified", |md| {
        is_true(md, "Ready") && is_true(md, "Bursting") && is_true(md, "ArtifactsReady")
    })
    .await;
    let artifacts = md.status.as_ref().unwrap().artifacts.as_ref().unwrap();
    assert_eq!(artifacts.digest.as_deref(), Some(digest.as_str()));
    for pool in ["dc1-l4", "cloud-l4"] {
        let s = store(&md, pool).unwrap();
        assert_eq!(s.state, StoreState::Synced, "{pool}: {s:?}");
        assert_eq!(s.bytes, 3 * 300_000 + 10_000 + 15, "{pool}: {s:?}");
        assert!(s.verified_at.is_some());
    }
    let placements = &md.status.as_ref().unwrap().components[0].placements;
    assert!(
        placements
            .iter()
            .any(|p| p.pool == "cloud-l4" && p.replicas == 2),
        "{placements:?}"
    );
    assert!(
        proxy.stats.injected() > 0,
        "faults were injected: {} requests",
        proxy.stats.requests.load(Ordering::SeqCst)
    );

    // The public store holds the verified copy (manifest written last) under its prefix.
    let copy_prefix = format!("mirror/{private_bucket}/recsys/ranker/v1");
    let manifest = read_manifest(&location(b, &public_bucket, &copy_prefix))
        .await
        .expect("the public copy has a manifest");
    assert_eq!(manifest.digest().to_string(), digest);

    // The public Deployment fetches from the public store, with the verified digest and the
    // public store's credentials, into the shared model volume.
    let public: Api<Deployment> = Api::namespaced(estate.public.client().unwrap(), "burst");
    let child = public.get("ranker-ranker-cloud-l4").await.unwrap();
    let pod = child.spec.template.spec.unwrap();
    let init = &pod.init_containers.as_ref().expect("init container")[0];
    assert_eq!(init.image.as_deref(), Some("skybridge:e2e"));
    let args = init.args.clone().unwrap();
    let arg = |flag: &str| {
        args.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .unwrap_or_else(|| panic!("{flag} in {args:?}"))
    };
    assert_eq!(args[0], "fetch-model");
    assert_eq!(arg("--digest"), digest);
    assert_eq!(arg("--from"), format!("s3://{public_bucket}/{copy_prefix}"));
    assert_eq!(arg("--endpoint"), proxy.endpoint);
    let secret_name = init.env_from.as_ref().unwrap()[0]
        .secret_ref
        .as_ref()
        .unwrap()
        .name
        .clone();
    assert_eq!(secret_name, "ranker-store-cloud-l4");
    assert!(
        pod.volumes
            .unwrap()
            .iter()
            .any(|v| v.name == "model" && v.empty_dir.is_some())
    );
    // The private Deployment reads the source itself, with the same digest.
    let private: Api<Deployment> = Api::namespaced(estate.private.client().unwrap(), APP_NAMESPACE);
    let child = private.get("ranker-ranker-dc1-l4").await.unwrap();
    let init = &child.spec.template.spec.unwrap().init_containers.unwrap()[0];
    let args = init.args.clone().unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--from", uri.as_str()]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--digest", digest.as_str()]),
        "{args:?}"
    );

    // Credentials: each pool's Secret only in its own cluster, only the AWS keys of it, and
    // the private store's credentials nowhere in the public cluster.
    let public_secrets = secrets(&estate.public).await;
    let copy = public_secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("ranker-store-cloud-l4"))
        .expect("public store credentials copied to the public cluster");
    assert_eq!(copy.metadata.namespace.as_deref(), Some("burst"));
    assert!(holds_value(copy, PUBLIC_SECRET));
    assert_eq!(
        copy.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "skybridge"
    );
    assert!(
        !public_secrets
            .iter()
            .any(|s| holds_value(s, PRIVATE_SECRET) || holds_value(s, PRIVATE_KEY_ID)),
        "private store credentials reached the public cluster"
    );
    let private_secrets = secrets(&estate.private).await;
    let copy = private_secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("ranker-store-dc1-l4"))
        .expect("private store credentials copied to the private cluster");
    assert!(holds_value(copy, PRIVATE_SECRET));
    assert!(
        !holds_value(copy, "not-copied"),
        "only the AWS keys are copied"
    );
    assert!(
        !private_secrets
            .iter()
            .any(|s| holds_value(s, PUBLIC_SECRET))
    );

    // Restarted, the operator knows nothing of earlier syncs: what status recorded keeps the
    // public replicas (same Deployment, same template) until it has verified the copy again.
    let before = public.get("ranker-ranker-cloud-l4").await.unwrap();
    let verified_before = store(&md, "cloud-l4")
        .unwrap()
        .verified_at
        .clone()
        .unwrap()
        .0;
    operator.stop().await;
    // Status keeps whole seconds: let the clock pass that second so that the new verification
    // is told apart from the old one.
    eventually("the clock to pass the recorded verification", || async {
        (k8s_openapi::jiff::Timestamp::now().as_second() > verified_before.as_second())
            .then_some(())
    })
    .await;
    let _operator = Operator::start_with_artifacts(&estate, artifacts_config()).await;
    let md = wait_for(
        &estate,
        "ranker",
        "the copy verified again after the restart",
        |md| {
            store(md, "cloud-l4")
                .and_then(|s| s.verified_at.as_ref())
                .is_some_and(|t| t.0 > verified_before)
                && is_true(md, "Ready")
        },
    )
    .await;
    assert_eq!(store_state(&md, "cloud-l4"), Some(StoreState::Synced));
    let after = public.get("ranker-ranker-cloud-l4").await.unwrap();
    assert_eq!(
        after.metadata.uid, before.metadata.uid,
        "not deleted and re-created"
    );
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "template unchanged: the digest stayed"
    );

    // Deleted: the credential copies go with the workloads, in every cluster.
    estate
        .deployments_api()
        .delete("ranker", &DeleteParams::default())
        .await
        .unwrap();
    eventually("credential copies removed from both clusters", || async {
        let left = secrets(&estate.public)
            .await
            .into_iter()
            .chain(secrets(&estate.private).await)
            .filter(|s| {
                s.metadata.labels.as_ref().is_some_and(|l| {
                    l.get("skybridge.io/deployment").map(String::as_str) == Some("ranker")
                })
            })
            .count();
        (left == 0).then_some(())
    })
    .await;
    eprintln!("sync-before-burst scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_model_stays_private_and_a_broken_source_fails_then_recovers() {
    let started = Instant::now();
    let (a, b) = (&stores().a.endpoint, &stores().b.endpoint);
    let (private_bucket, public_bucket) = (unique_bucket("dc1"), unique_bucket("cloud"));
    create_bucket(a, &private_bucket).await;
    create_bucket(b, &public_bucket).await;
    let files = model_files(2, 100_000);
    publish(&private_bucket, "fraud/encoder/v1", &files).await;
    let digest = publish(&private_bucket, "recsys/ranker/v2", &files).await;
    // Break the second source: one object its manifest lists is gone.
    let missing = format!("recsys/ranker/v2/{}", files[3].0);
    delete(a, &private_bucket, &missing).await;

    let estate = Estate::start(8, 8).await;
    if !estate.harness_only("sensitive_model_stays_private_and_a_broken_source_fails_then_recovers")
    {
        return;
    }
    apply_pools_with_stores(&estate, &private_bucket, b, &public_bucket);
    let _operator = Operator::start_with_artifacts(&estate, artifacts_config()).await;
    // A model read by a sensitive component, and by an internal one that could burst.
    estate.apply(&model_deployment(
        "fraud",
        &format!("s3://{private_bucket}/fraud/encoder/v1"),
        &(gpu_component("encoder", "sensitive", 1) + &gpu_component("scorer", "internal", 1)),
    ));
    estate.apply(&model_deployment(
        "ranker",
        &format!("s3://{private_bucket}/recsys/ranker/v2"),
        &gpu_component("ranker", "internal", 1),
    ));

    // Residency: the public store is Forbidden, said in the condition and an Event.
    let fraud = wait_for(
        &estate,
        "fraud",
        "public store Forbidden, model verified privately",
        |md| {
            store_state(md, "cloud-l4") == Some(StoreState::Forbidden)
                && is_true(md, "ArtifactsReady")
        },
    )
    .await;
    let forbidden = store(&fraud, "cloud-l4").unwrap();
    assert!(
        forbidden.message.as_deref().unwrap().contains("sensitive"),
        "{forbidden:?}"
    );
    let artifacts_ready = condition(&fraud, "ArtifactsReady").unwrap();
    assert!(
        artifacts_ready.message.contains("cloud-l4: forbidden"),
        "{}",
        artifacts_ready.message
    );
    let events: Api<Event> = Api::namespaced(estate.hub_client(), APP_NAMESPACE);
    eventually("an ArtifactForbidden Warning Event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("ArtifactForbidden")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("fraud")
            })
    })
    .await;

    // The broken source: verification and sync fail, visibly, with the reason.
    let ranker = wait_for(
        &estate,
        "ranker",
        "the broken source reported Failed",
        |md| {
            store_state(md, "dc1-l4") == Some(StoreState::Failed)
                && store_state(md, "cloud-l4") == Some(StoreState::Failed)
        },
    )
    .await;
    let failed = store(&ranker, "dc1-l4").unwrap().message.clone().unwrap();
    assert!(failed.contains("is missing"), "{failed}");
    let failed = store(&ranker, "cloud-l4").unwrap().message.clone().unwrap();
    assert!(failed.contains("source"), "{failed}");
    let artifacts_ready = condition(&ranker, "ArtifactsReady").unwrap();
    assert_eq!(
        (
            artifacts_ready.status.as_str(),
            artifacts_ready.reason.as_str()
        ),
        ("False", "SyncFailed")
    );
    assert!(!is_true(&ranker, "Ready"));

    // Repaired at the source: the retry (with backoff) syncs and verifies it.
    put(a, &private_bucket, &missing, files[3].1.clone()).await;
    let ranker = wait_for(
        &estate,
        "ranker",
        "repaired model Synced everywhere",
        |md| {
            store_state(md, "dc1-l4") == Some(StoreState::Synced)
                && store_state(md, "cloud-l4") == Some(StoreState::Synced)
                && is_true(md, "ArtifactsReady")
                && is_true(md, "Ready")
        },
    )
    .await;
    assert_eq!(
        ranker.status.unwrap().artifacts.unwrap().digest.as_deref(),
        Some(digest.as_str())
    );

    // The public bucket holds the ranker's copy, and nothing at all of the sensitive model.
    let public_keys = keys(b, &public_bucket).await;
    assert!(
        public_keys
            .iter()
            .any(|k| k.contains("recsys/ranker/v2/.skybridge/manifest.json")),
        "{public_keys:?}"
    );
    assert!(
        !public_keys.iter().any(|k| k.contains("fraud")),
        "{public_keys:?}"
    );
    // No fraud replicas in the public cluster, hence no credentials of it there either.
    assert!(
        !secrets(&estate.public)
            .await
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("fraud-store-cloud-l4"))
    );
    eprintln!("residency and repair scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_burst_copies_to_the_public_store_only_when_a_burst_needs_it() {
    let started = Instant::now();
    let (a, b) = (&stores().a.endpoint, &stores().b.endpoint);
    let (private_bucket, public_bucket) = (unique_bucket("dc1"), unique_bucket("cloud"));
    create_bucket(a, &private_bucket).await;
    create_bucket(b, &public_bucket).await;
    let files = model_files(2, 50_000);
    publish(&private_bucket, "calm/v1", &files).await;
    let digest = publish(&private_bucket, "busy/v1", &files).await;

    let estate = Estate::start(3, 8).await;
    if !estate.harness_only("on_burst_copies_to_the_public_store_only_when_a_burst_needs_it") {
        return;
    }
    apply_pools_with_stores(&estate, &private_bucket, b, &public_bucket);
    let _operator = Operator::start_with_artifacts(&estate, artifacts_config()).await;

    // Fits on private GPUs: verified at its source, never copied to the public store.
    estate.apply(&model_deployment_in_mode(
        "calm",
        &format!("s3://{private_bucket}/calm/v1"),
        &gpu_component("calm", "internal", 1),
        "OnBurst",
    ));
    let calm = wait_for(
        &estate,
        "calm",
        "calm Ready with its model verified",
        |md| is_true(md, "Ready") && is_true(md, "ArtifactsReady"),
    )
    .await;
    assert_eq!(store_state(&calm, "dc1-l4"), Some(StoreState::Synced));
    assert_eq!(
        store_state(&calm, "cloud-l4"),
        None,
        "not needed, not reported"
    );

    // Needs two more GPUs than the private pool has left: the burst makes the copy.
    estate.apply(&model_deployment_in_mode(
        "busy",
        &format!("s3://{private_bucket}/busy/v1"),
        &gpu_component("busy", "internal", 4),
        "OnBurst",
    ));
    let busy = wait_for(
        &estate,
        "busy",
        "busy bursting with its model verified",
        |md| is_true(md, "Ready") && is_true(md, "Bursting") && is_true(md, "ArtifactsReady"),
    )
    .await;
    assert_eq!(store_state(&busy, "cloud-l4"), Some(StoreState::Synced));
    assert_eq!(
        busy.status
            .clone()
            .unwrap()
            .artifacts
            .unwrap()
            .digest
            .as_deref(),
        Some(digest.as_str())
    );
    let public_keys = keys(b, &public_bucket).await;
    assert!(
        public_keys
            .iter()
            .any(|k| k.ends_with("busy/v1/.skybridge/manifest.json")),
        "{public_keys:?}"
    );
    assert!(
        !public_keys.iter().any(|k| k.contains("calm")),
        "{public_keys:?}"
    );
    let calm = estate.deployments_api().get("calm").await.unwrap();
    assert_eq!(store_state(&calm, "cloud-l4"), None);
    eprintln!("on-burst scenario took {:?}", started.elapsed());
}
