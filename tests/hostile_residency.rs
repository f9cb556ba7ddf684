//! End to end, through the Kubernetes API (issue #18, a hostile review): a second deployment in
//! another namespace that names a sensitive model with another spelling, with an internal
//! component pinned to a public pool, gets no replica in the public cluster; and a public pool
//! naming a private store is reported `Stalled` with a Warning Event and takes no replicas.

mod e2e_support;

use e2e_support::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use skybridge::api::{ComputePool, ModelDeployment};

const OTHER_NAMESPACE: &str = "ads";

fn deployment(namespace: &str, name: &str, uri: &str, component: &str) -> String {
    format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  model: {{source: {{uri: "{uri}", pool: dc1-l4}}, version: "1"}}
  components:
    - {component}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensitive_model_named_otherwise_from_another_namespace_never_runs_in_the_public_cluster()
{
    let estate = Estate::start(4, 8).await;
    estate.apply_pools();
    let namespaces: Api<Namespace> = Api::all(estate.hub_client());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": OTHER_NAMESPACE}
    }))
    .unwrap();
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let _operator = Operator::start(&estate).await;

    estate.apply(&deployment(
        APP_NAMESPACE,
        "fraud",
        "s3://models/fraud/encoder/v1",
        "{name: encoder, dataClass: sensitive, image: triton:24.10, resources: {gpu: {count: 1, type: nvidia-l4}}, replicas: {min: 1, max: 1}}",
    ));
    // The same model: a trailing slash, another namespace, an internal component pinned to the
    // public pool.
    estate.apply(&deployment(
        OTHER_NAMESPACE,
        "copycat",
        "s3://models/fraud/encoder/v1/",
        "{name: scorer, dataClass: internal, image: triton:24.10, resources: {gpu: {count: 1, type: nvidia-l4}}, replicas: {min: 2, max: 2}, pools: [cloud-l4]}",
    ));

    wait_for(
        &estate,
        "fraud",
        "the sensitive encoder runs privately",
        |md| replicas_on(md, "dc1-l4") == 1,
    )
    .await;
    let copycats: Api<ModelDeployment> = Api::namespaced(estate.hub_client(), OTHER_NAMESPACE);
    let copycat = eventually(
        "copycat's replicas reported unplaced by residency",
        || async {
            let public = children(&estate.public).await;
            assert!(
                public.is_empty(),
                "a sensitive model's replicas in the public cluster: {public:?}"
            );
            let md = copycats.get_opt("copycat").await.ok().flatten()?;
            let status = md.status.as_ref()?;
            let scorer = status.components.first()?;
            (status.observed_generation == md.metadata.generation
                && scorer.unplaced_replicas == 2
                && scorer
                    .unplaced_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("residency")))
            .then_some(md)
        },
    )
    .await;
    assert_eq!(replicas_on(&copycat, "cloud-l4"), 0);
    // Planned and applied: the fraud encoder has its child; the public cluster has none.
    eventually("the encoder's child in the private cluster", || async {
        (!children(&estate.private).await.is_empty()).then_some(())
    })
    .await;
    assert!(
        children(&estate.public).await.is_empty(),
        "a sensitive model's replicas in the public cluster: {:?}",
        children(&estate.public).await
    );

    // A public pool naming the private store (another spelling of its endpoint) is stalled,
    // says why, and takes no replicas.
    estate.apply(&format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: leaky}}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  cluster: {{kubeconfigSecretRef: {{name: public-kubeconfig}}, namespace: burst}}
  nodeSelector: {{{POOL_LABEL}: cloud-l4}}
  capacity: {{gpu: {{type: nvidia-l4, count: 8}}}}
  artifactStore: {{bucket: models, endpoint: "http://127.0.0.1:1/"}}
"#
    ));
    let pools: Api<ComputePool> = estate.pools_api();
    let stalled = eventually("the leaky pool Stalled by InvalidSpec", || async {
        let pool = pools.get_opt("leaky").await.ok().flatten()?;
        let conditions = pool.status?.conditions;
        let stalled = conditions
            .iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")?
            .clone();
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "InvalidSpec")
            .then_some(stalled)
    })
    .await;
    assert!(
        stalled.message.contains("private ComputePool \"dc1-l4\""),
        "{}",
        stalled.message
    );
    let event = event_with_reason(&estate, "default", "leaky", "InvalidSpec").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // Clean up what a real cluster would keep.
    let _ = copycats.delete("copycat", &DeleteParams::default()).await;
    let _ = pools.delete("leaky", &DeleteParams::default()).await;
}
