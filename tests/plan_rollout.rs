//! `skybridge plan` for a deployment in the middle of a rollout: replicas and route weights per
//! version from its `status.rollout`, on an estate constructed here.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const ESTATE: &str = r#"apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: { name: dc1 }
spec:
  cloud: private
  provider: onprem
  region: r1
  capacity: { gpu: { type: l4, count: 16 }, cpu: "128", memory: 512Gi }
  cost: { gpuHour: 0.5 }
  artifactStore: { endpoint: "http://127.0.0.1:9000", bucket: models }
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: { name: ranker, namespace: shop }
spec:
  model: { source: { uri: "s3://models/ranker", pool: dc1 }, version: "2" }
  rollout: { strategy: Canary, steps: [{ setWeight: 25, pause: {} }, { setWeight: 50 }] }
  components:
    - name: r
      dataClass: internal
      image: triton
      resources: { gpu: { count: 1, type: l4 }, cpu: "4", memory: 16Gi }
      replicas: { min: 8, max: 8 }
      traffic: { parentRefs: [{ name: gw }] }
"#;

const STATUS: &str = r#"status:
  rollout:
    from: { version: "1", uri: "s3://models/ranker", pool: dc1 }
    to: { version: "2", uri: "s3://models/ranker", pool: dc1 }
    step: 0
    trafficPercent: 25
    phase: PHASE
    reason: WaitingForResume
    startedAt: "2026-12-03T10:00:00Z"
"#;

fn plan(estate: &str) -> Value {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skybridge-plan-rollout-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("estate.yaml");
    std::fs::write(&path, estate).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["plan", "-o", "json", "-f"])
        .arg(&path)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn component(report: &Value) -> &Value {
    &report["deployments"][0]["components"][0]
}

#[test]
fn a_paused_rollout_splits_replicas_and_weights_by_its_share() {
    let report = plan(&format!("{ESTATE}{}", STATUS.replace("PHASE", "Paused")));
    let rollout = &component(&report)["rollout"];
    assert_eq!(rollout["fromVersion"], "1");
    assert_eq!(rollout["toVersion"], "2");
    assert_eq!(rollout["trafficPercent"], 25);
    assert_eq!(rollout["phase"], "Paused");
    assert_eq!(
        rollout["pools"],
        serde_json::json!([{"pool": "dc1", "old": 6, "new": 2}]),
        "8 planned: a quarter on the new version"
    );
    assert_eq!(
        rollout["weights"],
        serde_json::json!([{"backend": "Service/ranker-r", "old": 750, "new": 250}])
    );
}

#[test]
fn the_table_has_a_rollout_line() {
    let dir = std::env::temp_dir().join(format!(
        "skybridge-plan-rollout-table-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("estate.yaml");
    std::fs::write(
        &path,
        format!("{ESTATE}{}", STATUS.replace("PHASE", "Progressing")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["plan", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Rollout shop/ranker/r: 1 -> 2, step 1 at 25% (Progressing): dc1 old 6 new 2; weights Service/ranker-r old 75.0% new 25.0%"),
        "{text}"
    );
}

#[test]
fn without_a_rollout_under_way_there_is_no_rollout_view() {
    assert!(component(&plan(ESTATE)).get("rollout").is_none());
    for ended in ["Succeeded", "RolledBack", "Aborted"] {
        let report = plan(&format!("{ESTATE}{}", STATUS.replace("PHASE", ended)));
        assert!(component(&report).get("rollout").is_none(), "{ended}");
    }
}
