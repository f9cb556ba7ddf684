//! Residency across objects (issue #18): a model's class is shared by every deployment that
//! reads it, however spelled, and a public pool may not name a private store or its credentials.

use super::{Estate, parse_documents, plan_input, validate};
use crate::api::Cloud;
use crate::planner::plan;
use std::sync::Arc;

const POOLS: &str = r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc1}
spec:
  cloud: private
  provider: onprem
  region: fra
  capacity: {gpu: {type: nvidia-l4, count: 2}}
  cost: {gpuHour: 0.3}
  artifactStore: {bucket: models, endpoint: "http://minio.dc1:9000", pathStyle: true, credentialsSecretRef: {name: dc1-store}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: dc1-batch}
spec:
  cloud: private
  provider: onprem
  region: fra
  capacity: {gpu: {type: nvidia-l4, count: 2}}
  cost: {gpuHour: 0.3}
  artifactStore: {bucket: models, endpoint: "http://Minio.DC1.:9000/", pathStyle: true, credentialsSecretRef: {name: dc1-store}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: aws}
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  capacity: {gpu: {type: nvidia-l4, count: 16}}
  cost: {gpuHour: 0.01}
  artifactStore: {bucket: models-euc1, prefix: mirror, credentialsSecretRef: {name: aws-store}}
"#;

fn deployment(namespace: &str, name: &str, uri: &str, pool: &str, components: &str) -> String {
    format!(
        r#"
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  model: {{source: {{uri: "{uri}", pool: {pool}}}, version: "1"}}
  components:
{components}"#
    )
}

fn component(name: &str, class: &str, replicas: u32, pins: &str) -> String {
    format!(
        "    - {{name: {name}, dataClass: {class}, image: x, resources: {{gpu: {{count: 1}}}}, replicas: {{min: {replicas}, max: {replicas}}}{pins}}}\n"
    )
}

fn estate(text: &str) -> Estate {
    let mut estate = Estate::default();
    for object in parse_documents(text) {
        estate.insert(object.expect("valid document"));
    }
    estate
}

/// The defect of issue #18: a second deployment, in another namespace, naming the source of a
/// sensitive model another way, with an internal component pinned to a public pool, was planned
/// onto that public pool.
#[test]
fn a_sensitive_model_named_otherwise_by_another_deployment_is_never_planned_public() {
    for (uri, pool) in [
        ("s3://models/fraud/encoder/v1/", "dc1"),
        ("s3://models//fraud/encoder/v1", "dc1"),
        ("s3://models/fraud/./encoder/v1", "dc1"),
        ("s3://models/fraud/encoder/v1", "dc1-batch"),
        ("s3://models/fraud", "dc1-batch"),
    ] {
        let text = POOLS.to_string()
            + &deployment(
                "risk",
                "fraud",
                "s3://models/fraud/encoder/v1",
                "dc1",
                &component("encoder", "sensitive", 1, ""),
            )
            + &deployment(
                "ads",
                "copycat",
                uri,
                pool,
                &component("scorer", "internal", 3, ", pools: [aws]"),
            );
        let estate = estate(&text);
        let planned = plan(&plan_input(&estate, &Default::default()));
        let copycat = planned
            .components
            .iter()
            .find(|c| c.key.deployment == "copycat")
            .unwrap();
        assert_eq!(
            copycat.replicas_in(Cloud::Public),
            0,
            "{uri} via {pool}: {copycat:?}"
        );
        assert_eq!(copycat.unplaced, 3, "{uri} via {pool}");
        assert!(
            copycat.reasons.iter().any(|r| r.contains("residency")),
            "{uri} via {pool}: {:?}",
            copycat.reasons
        );
    }
}

/// Without a sensitive reader the same second deployment bursts as before: the shared class is
/// not stricter than its readers.
#[test]
fn an_internal_model_shared_by_internal_readers_still_bursts() {
    let text = POOLS.to_string()
        + &deployment(
            "risk",
            "fraud",
            "s3://models/fraud/encoder/v1",
            "dc1",
            &component("encoder", "internal", 1, ""),
        )
        + &deployment(
            "ads",
            "copycat",
            "s3://models/fraud/encoder/v1/",
            "dc1",
            &component("scorer", "internal", 3, ", pools: [aws]"),
        );
    let planned = plan(&plan_input(&estate(&text), &Default::default()));
    let copycat = planned
        .components
        .iter()
        .find(|c| c.key.deployment == "copycat")
        .unwrap();
    assert_eq!(copycat.replicas_in(Cloud::Public), 3, "{copycat:?}");
}

fn issues_of(text: &str) -> Vec<(String, String, String)> {
    validate(&estate(text))
        .into_iter()
        .map(|i| (i.object.name.clone(), i.field, i.message))
        .collect()
}

fn with_public_store(store: &str) -> String {
    POOLS.replace(
        "artifactStore: {bucket: models-euc1, prefix: mirror, credentialsSecretRef: {name: aws-store}}",
        &format!("artifactStore: {store}"),
    )
}

/// Issue #18: nothing stopped a public pool from naming a private store's credentials Secret.
#[test]
fn a_public_pool_naming_a_private_store_or_its_credentials_is_invalid() {
    assert!(issues_of(POOLS).is_empty(), "{:?}", issues_of(POOLS));
    let cases = [
        (
            "{bucket: models-euc1, credentialsSecretRef: {name: dc1-store}}",
            "names Secret \"dc1-store\"",
        ),
        (
            "{bucket: models, endpoint: \"http://minio.dc1:9000/\", credentialsSecretRef: {name: aws-store}}",
            "names bucket \"models\" of the artifact store of private ComputePool",
        ),
        (
            "{bucket: models, endpoint: \"http://minio.dc1\", credentialsSecretRef: {name: aws-store}}",
            "",
        ),
    ];
    for (store, expected) in cases {
        let issues = issues_of(&with_public_store(store));
        if expected.is_empty() {
            // Another port is another server: its own store.
            assert!(issues.is_empty(), "{store}: {issues:?}");
            continue;
        }
        assert_eq!(issues.len(), 1, "{store}: {issues:?}");
        let (object, field, message) = &issues[0];
        assert_eq!(
            (object.as_str(), field.as_str()),
            ("aws", "spec.artifactStore")
        );
        assert!(message.contains(expected), "{store}: {message}");
        assert!(message.contains("private ComputePool \"dc1"), "{message}");
    }
}

/// `SecretRef.namespace` is withdrawn: the schema rejects it (CEL), and an object stored
/// before that (readable still) is reported by validation rather than followed.
#[test]
fn a_credentials_secret_outside_the_operators_namespace_is_rejected() {
    let text = with_public_store(
        "{bucket: models-euc1, credentialsSecretRef: {name: aws-store, namespace: kube-system}}",
    );
    let rejected = parse_documents(&text)
        .into_iter()
        .find_map(Result::err)
        .expect("the schema rejects a namespace");
    assert!(
        rejected.message.contains("operator's namespace only"),
        "{rejected:?}"
    );

    let mut old = estate(POOLS);
    let aws = Arc::make_mut(old.pools.get_mut("aws").unwrap());
    aws.spec
        .artifact_store
        .as_mut()
        .unwrap()
        .credentials_secret_ref
        .as_mut()
        .unwrap()
        .namespace = Some("kube-system".into());
    let issues = validate(&old);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(
        issues[0].field,
        "spec.artifactStore.credentialsSecretRef.namespace"
    );
    assert!(
        issues[0].message.contains("operator's namespace only"),
        "{}",
        issues[0].message
    );
    // The operator knows its namespace: naming it explicitly is harmless.
    let aws = &old.pools["aws"];
    assert_eq!(
        super::validate_pool(&old, aws, Some("kube-system")),
        Vec::new()
    );
    assert_eq!(
        super::validate_pool(&old, aws, Some("skybridge-system")).len(),
        1
    );
}

/// A model whose class is sensitive through another deployment must live in a private store.
#[test]
fn a_model_made_sensitive_by_another_reader_must_come_from_a_private_store() {
    let text = POOLS.to_string()
        + &deployment(
            "risk",
            "fraud",
            "s3://models-euc1/fraud/v1",
            "aws",
            &component("encoder", "sensitive", 1, ""),
        )
        + &deployment(
            "ads",
            "copycat",
            "s3://models-euc1/fraud/v1/",
            "aws",
            &component("scorer", "internal", 1, ""),
        );
    let issues = issues_of(&text);
    assert!(
        issues
            .iter()
            .any(|(object, field, message)| object == "copycat"
                && field == "spec.model.source.pool"
                && message.contains("another that reads the same model")),
        "{issues:?}"
    );
}

/// Issue #15: a routed component's home must exist and, for sensitive data, be private; a pool
/// outside its home cluster serves it only if it exports traffic.
#[test]
fn traffic_homes_are_checked_and_remote_pools_must_export() {
    let routed = |class: &str, home: &str| {
        format!(
            "    - {{name: rank, dataClass: {class}, image: x, resources: {{gpu: {{count: 1}}}}, replicas: {{min: 6, max: 6}}, traffic: {{parentRefs: [{{name: edge}}]{home}}}}}\n"
        )
    };
    let with = |components: String, pools: &str| {
        estate(
            &(pools.to_string()
                + &deployment("shop", "ranker", "s3://models/r", "dc1", &components)),
        )
    };
    let issues = validate(&with(routed("sensitive", ", homePool: aws"), POOLS));
    assert!(
        issues
            .iter()
            .any(|i| i.field == "spec.components[0].traffic.homePool"
                && i.message.contains("must be a private pool")),
        "{issues:?}"
    );
    let issues = validate(&with(routed("internal", ", homePool: nowhere"), POOLS));
    assert!(
        issues
            .iter()
            .any(|i| i.message.contains("unknown ComputePool \"nowhere\"")),
        "{issues:?}"
    );
    assert!(validate(&with(routed("sensitive", ""), POOLS)).is_empty());

    // aws is in another cluster and exports nothing: the component stays in its home cluster.
    let remote_aws = POOLS.replace(
        "  region: eu-central-1\n",
        "  region: eu-central-1\n  cluster: {kubeconfigSecretRef: {name: aws-kubeconfig}}\n",
    );
    let estate_now = with(routed("internal", ""), &remote_aws);
    let planned = plan(&plan_input(&estate_now, &Default::default()));
    let rank = &planned.components[0];
    assert_eq!(rank.replicas_in(Cloud::Public), 0);
    assert_eq!(rank.unplaced, 2);
    assert!(
        rank.reasons
            .iter()
            .any(|r| r.contains("no cross-cluster traffic") && r.contains("aws")),
        "{:?}",
        rank.reasons
    );
    let exporting = remote_aws.replace(
        "  region: eu-central-1\n",
        "  region: eu-central-1\n  traffic: {export: ServiceExport}\n",
    );
    let planned = plan(&plan_input(
        &with(routed("internal", ""), &exporting),
        &Default::default(),
    ));
    assert_eq!(planned.components[0].replicas_in(Cloud::Public), 2);
    assert_eq!(planned.components[0].unplaced, 0);
}
