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

const TRAFFIC_POOLS: &str = r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: home}
spec:
  cloud: private
  provider: onprem
  region: fra
  cluster: {kubeconfigSecretRef: {name: dc1}}
  capacity: {gpu: {type: l4, count: 3}}
  cost: {gpuHour: 0.3}
  artifactStore: {bucket: models, endpoint: "http://minio:9000"}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: cloud-a}
spec:
  cloud: public
  provider: aws
  region: euc1
  cluster: {kubeconfigSecretRef: {name: aws}}
  capacity: {gpu: {type: l4, count: 8}}
  cost: {gpuHour: 0.5}
  traffic: {export: ServiceExport}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: cloud-b}
spec:
  cloud: public
  provider: gcp
  region: euw4
  cluster: {kubeconfigSecretRef: {name: gcp}}
  capacity: {gpu: {type: l4, count: 8}}
  cost: {gpuHour: 0.1}
"#;

fn routed_deployment(name: &str, class: &str, replicas: u32) -> String {
    format!(
        r#"
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}, namespace: shop}}
spec:
  model: {{source: {{uri: "s3://models/{name}", pool: home}}, version: "1"}}
  components:
    - name: rank
      dataClass: {class}
      image: triton
      resources: {{gpu: {{count: 1}}}}
      replicas: {{min: {replicas}, max: {replicas}}}
      traffic: {{parentRefs: [{{name: edge, namespace: gateways}}], hostnames: [rank.shop.internal]}}
"#
    )
}

/// Runs `plan -o json` on `text` alone; returns the report.
fn plan_json(text: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("estate.yaml");
    std::fs::write(&file, text).unwrap();
    let out = skybridge(&["plan", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn plan_json_shows_each_routed_components_traffic() {
    let report =
        plan_json(&(TRAFFIC_POOLS.to_string() + &routed_deployment("ranker", "internal", 7)));
    let rank = &report["deployments"][0]["components"][0];
    // home holds 3; cloud-b is cheaper but exports nothing, so the burst goes to cloud-a.
    assert_eq!(
        rank["traffic"],
        serde_json::json!([
            {"pool": "home", "cloud": "private", "backend": "Service/ranker-rank", "weight": 429},
            {"pool": "cloud-a", "cloud": "public", "backend": "ServiceImport/ranker-rank-cloud-a", "weight": 571}
        ]),
        "{rank}"
    );
    for key in [
        "name",
        "dataClass",
        "desiredReplicas",
        "placements",
        "unplaced",
        "reasons",
    ] {
        assert!(rank.get(key).is_some(), "the existing keys stay: {key}");
    }

    // Sensitive: never a public backend, whatever the demand; the shortfall says why.
    let report =
        plan_json(&(TRAFFIC_POOLS.to_string() + &routed_deployment("encoder", "sensitive", 7)));
    let encoder = &report["deployments"][0]["components"][0];
    assert_eq!(
        encoder["traffic"],
        serde_json::json!([{"pool": "home", "cloud": "private", "backend": "Service/encoder-rank", "weight": 1000}])
    );
    assert_eq!(encoder["unplaced"], 4);

    // A component without traffic has no traffic key; cloud-b is eligible for it.
    let unrouted = (TRAFFIC_POOLS.to_string() + &routed_deployment("plain", "internal", 7))
        .replace("      traffic: {parentRefs: [{name: edge, namespace: gateways}], hostnames: [rank.shop.internal]}\n", "");
    let report = plan_json(&unrouted);
    let plain = &report["deployments"][0]["components"][0];
    assert!(plain.get("traffic").is_none(), "{plain}");
    assert!(
        plain["placements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pool"] == "cloud-b")
    );
}

#[test]
fn plan_says_why_a_pool_without_traffic_export_is_passed_over() {
    let text = (TRAFFIC_POOLS.to_string() + &routed_deployment("ranker", "internal", 12))
        .replace("  traffic: {export: ServiceExport}\n", "");
    let report = plan_json(&text);
    let rank = &report["deployments"][0]["components"][0];
    assert_eq!(rank["unplaced"], 9);
    let reasons = rank["reasons"].to_string();
    assert!(
        reasons.contains("receives no cross-cluster traffic") && reasons.contains("cloud-a"),
        "{reasons}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("estate.yaml");
    std::fs::write(&file, &text).unwrap();
    let table = skybridge(&["plan", "-f", file.to_str().unwrap()]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("Traffic shop/ranker/rank: Service/ranker-rank home (private) 100.0%"),
        "{table}"
    );
}

#[test]
fn the_examples_route_their_serving_components() {
    let out = skybridge(&[
        "plan",
        "-f",
        "examples/ecommerce",
        "-o",
        "json",
        "--demand",
        "recsys/ctr-ranker/ranker=40",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut routed = 0;
    for deployment in report["deployments"].as_array().unwrap() {
        for component in deployment["components"].as_array().unwrap() {
            let Some(traffic) = component.get("traffic") else {
                continue;
            };
            routed += 1;
            let backends = traffic.as_array().unwrap();
            let placed: u64 = component["placements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["replicas"].as_u64().unwrap())
                .sum();
            let weights: u64 = backends.iter().map(|b| b["weight"].as_u64().unwrap()).sum();
            assert!(placed == 0 || weights >= 1000, "{component}");
            if component["dataClass"] == "sensitive" {
                assert!(
                    backends.iter().all(|b| b["cloud"] == "private"),
                    "{component}"
                );
            }
            // Every pool with replicas is behind a backend.
            for placement in component["placements"].as_array().unwrap() {
                let public = placement["cloud"] == "public";
                assert!(
                    !public || backends.iter().any(|b| b["pool"] == placement["pool"]),
                    "{component}"
                );
            }
        }
    }
    assert!(routed >= 5, "the serving components are routed");
}
