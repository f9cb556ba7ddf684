//! `skybridge plan` as a user runs it: on the examples, and on every kind of bad input.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn skybridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("skybridge runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_example_plans_and_the_json_keeps_its_contract() {
    let out = skybridge(&["plan", "-f", "examples/ecommerce", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deployments = report["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 4);
    for deployment in deployments {
        assert!(deployment["namespace"].is_string() && deployment["name"].is_string());
        for component in deployment["components"].as_array().unwrap() {
            for key in [
                "name",
                "dataClass",
                "desiredReplicas",
                "placements",
                "unplaced",
                "reasons",
            ] {
                assert!(
                    component.get(key).is_some(),
                    "component lacks {key}: {component}"
                );
            }
            assert_eq!(
                component["unplaced"], 0,
                "examples fit at their minimum: {component}"
            );
            for placement in component["placements"].as_array().unwrap() {
                for key in ["pool", "cloud", "replicas", "reason"] {
                    assert!(placement.get(key).is_some(), "placement lacks {key}");
                }
            }
        }
    }
}

#[test]
fn a_peak_bursts_the_ranker_but_never_the_sensitive_encoders() {
    let out = skybridge(&[
        "plan",
        "-f",
        "examples/ecommerce",
        "-o",
        "json",
        "--demand",
        "recsys/ctr-ranker/ranker=60",
        "--demand",
        "search/query-encoder/encoder=6",
        "--demand",
        "search/interest-tagger/tagger=4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ranker_public = 0;
    for deployment in report["deployments"].as_array().unwrap() {
        for component in deployment["components"].as_array().unwrap() {
            for placement in component["placements"].as_array().unwrap() {
                let public = placement["cloud"] == "public";
                if component["dataClass"] == "sensitive" {
                    assert!(!public, "sensitive component on a public pool: {component}");
                }
                if component["name"] == "ranker" && public {
                    ranker_public += placement["replicas"].as_u64().unwrap();
                }
            }
        }
    }
    assert!(
        ranker_public > 0,
        "60 rankers exceed the private L4s, so some burst"
    );
}

#[test]
fn the_table_shows_reasons() {
    let out = skybridge(&[
        "plan",
        "-f",
        "examples/ecommerce",
        "--demand",
        "recsys/ctr-ranker/ranker=40",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("aws-euc1-l4-spot") && table.contains("burst"),
        "{table}"
    );
    assert!(table.contains("Total cost"));
}

/// Runs `plan` on the examples plus `extra` as one more file; returns the exit code and stderr.
fn plan_with(extra: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("extra.yaml");
    std::fs::write(&file, extra).unwrap();
    let out = skybridge(&[
        "plan",
        "-f",
        "examples/ecommerce",
        "-f",
        file.to_str().unwrap(),
    ]);
    (out.status.code().unwrap_or(-1), stderr(&out))
}

const MD_HEAD: &str = "apiVersion: skybridge.io/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: bad\n  namespace: shop\nspec:\n";

#[test]
fn bad_input_exits_2_naming_file_object_and_field() {
    let cases: &[(&str, String, &[&str])] = &[
        ("yaml syntax", "kind: [unclosed\n".into(), &["extra.yaml:2", "YAML syntax"]),
        (
            "unknown kind",
            "apiVersion: skybridge.io/v1alpha1\nkind: GpuPool\nmetadata: {name: x}\n".into(),
            &["extra.yaml", "unknown kind \"GpuPool\""],
        ),
        (
            "missing field",
            format!("{MD_HEAD}  components: [{{name: a, dataClass: internal, image: i, resources: {{}}, replicas: {{min: 1, max: 2}}}}]\n"),
            &["ModelDeployment shop/bad", "model"],
        ),
        (
            "unknown field",
            format!("{MD_HEAD}  model: {{source: {{uri: 's3://shop-models/x', pool: dc1-l4}}, version: '1'}}\n  components: [{{name: a, dataClass: internal, image: i, resources: {{}}, replicas: {{min: 1, max: 2}}, replica: 3}}]\n"),
            &["ModelDeployment shop/bad", "spec.components[0].replica", "unknown field"],
        ),
        (
            "unknown pool",
            format!("{MD_HEAD}  model: {{source: {{uri: 's3://shop-models/x', pool: nowhere}}, version: '1'}}\n  components: [{{name: a, dataClass: internal, image: i, resources: {{}}, replicas: {{min: 1, max: 2}}}}]\n"),
            &["ModelDeployment shop/bad", "spec.model.source.pool", "unknown ComputePool \"nowhere\""],
        ),
        (
            "unknown policy",
            format!("{MD_HEAD}  model: {{source: {{uri: 's3://shop-models/x', pool: dc1-l4}}, version: '1'}}\n  components: [{{name: a, dataClass: internal, image: i, resources: {{}}, replicas: {{min: 1, max: 2}}, burstPolicy: fast}}]\n"),
            &["spec.components[0].burstPolicy", "unknown BurstPolicy \"fast\""],
        ),
        (
            "sensitive on a public pool",
            format!("{MD_HEAD}  model: {{source: {{uri: 's3://shop-models/x', pool: dc1-l4}}, version: '1'}}\n  components: [{{name: a, dataClass: sensitive, image: i, resources: {{}}, replicas: {{min: 1, max: 2}}, pools: [aws-euc1-l4-spot]}}]\n"),
            &["spec.components[0].pools[0]", "sensitive", "public"],
        ),
        (
            "min above max",
            format!("{MD_HEAD}  model: {{source: {{uri: 's3://shop-models/x', pool: dc1-l4}}, version: '1'}}\n  components: [{{name: a, dataClass: internal, image: i, resources: {{}}, replicas: {{min: 3, max: 2}}}}]\n"),
            &["ModelDeployment shop/bad", "replicas.min must not exceed replicas.max"],
        ),
        (
            "bad uri",
            format!("{MD_HEAD}  model: {{source: {{uri: 'https://x/y', pool: dc1-l4}}, version: '1'}}\n  components: [{{name: a, dataClass: internal, image: i, resources: {{}}, replicas: {{min: 1, max: 2}}}}]\n"),
            &["spec.model.source.uri"],
        ),
        (
            "bad quantity",
            format!("{MD_HEAD}  model: {{source: {{uri: 's3://shop-models/x', pool: dc1-l4}}, version: '1'}}\n  components: [{{name: a, dataClass: internal, image: i, resources: {{cpu: lots}}, replicas: {{min: 1, max: 2}}}}]\n"),
            &["spec.components[0].resources.cpu", "invalid quantity"],
        ),
        (
            "duplicate object",
            "apiVersion: skybridge.io/v1alpha1\nkind: BurstPolicy\nmetadata: {name: ranking}\nspec: {metric: {prometheusUrl: 'http://p:9090', query: q, targetPerReplica: 1}}\n".into(),
            &["BurstPolicy ranking", "defined more than once"],
        ),
        (
            "public pool admitting sensitive",
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: leaky}\nspec: {cloud: public, provider: aws, region: r, capacity: {}, dataClasses: [sensitive]}\n".into(),
            &["ComputePool leaky", "must not admit the sensitive"],
        ),
    ];
    for (what, yaml, expected) in cases {
        let (code, err) = plan_with(yaml);
        assert_eq!(code, 2, "{what}: exit code, stderr: {err}");
        for needle in *expected {
            assert!(
                err.contains(needle),
                "{what}: stderr lacks {needle:?}:\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

#[test]
fn bad_flags_exit_2() {
    let missing = skybridge(&["plan", "-f", "no/such/dir"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no/such/dir"));
    let unknown = skybridge(&[
        "plan",
        "-f",
        "examples/ecommerce",
        "--demand",
        "recsys/ctr-ranker/nope=3",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("no component recsys/ctr-ranker/nope"));
    let malformed = skybridge(&[
        "plan",
        "-f",
        "examples/ecommerce",
        "--demand",
        "ranker=many",
    ]);
    assert_eq!(malformed.status.code(), Some(2));
}

#[test]
fn crd_command_prints_what_crds_holds() {
    let out = skybridge(&["crd"]);
    assert!(out.status.success());
    let checked_in =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/skybridge.yaml")).unwrap();
    assert_eq!(out.stdout, checked_in);
}

/// Issue #18: a public pool naming a private store, or the credentials Secret a private pool's
/// store uses, is refused with exit 2, naming the pool, the field and the private pool.
#[test]
fn a_public_pool_naming_a_private_store_or_its_credentials_exits_2() {
    let pool = |store: &str| {
        format!(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {{name: leaky}}\nspec: {{cloud: public, provider: aws, region: r, capacity: {{}}, artifactStore: {store}}}\n"
        )
    };
    for (store, needle) in [
        (
            "{bucket: shop-models, endpoint: 'https://MINIO.dc1.shop.internal:443/'}",
            "names bucket \"shop-models\"",
        ),
        (
            "{bucket: leaky-models, credentialsSecretRef: {name: dc1-minio-credentials}}",
            "names Secret \"dc1-minio-credentials\"",
        ),
    ] {
        let (code, err) = plan_with(&pool(store));
        assert_eq!(code, 2, "{store}: {err}");
        for needle in [
            "ComputePool leaky",
            "spec.artifactStore",
            "private ComputePool \"dc1-",
            needle,
        ] {
            assert!(
                err.contains(needle),
                "{store}: stderr lacks {needle:?}:\n{err}"
            );
        }
    }
    let own = "{bucket: leaky-models, credentialsSecretRef: {name: leaky-credentials}}";
    let (code, err) = plan_with(&pool(own));
    assert_eq!(code, 0, "a store and keys of its own: {err}");
}
