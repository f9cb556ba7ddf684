//! `skybridge simulate --rollout-at`: a canary rollout replayed over a constructed estate and
//! trace; its surge is within `maxSurge` per pool, it finishes after its pauses, and bad input is
//! exit status 2.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skybridge-simulate-rollout-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One private pool (room for 12 replicas), one public pool, a policy, and a deployment whose
/// `rollout` is given.
fn estate(dir: &Path, rollout: &str) -> PathBuf {
    let text = format!(
        r#"apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{ name: private }}
spec:
  cloud: private
  provider: onprem
  region: r1
  capacity: {{ gpu: {{ type: l4, count: 12 }}, cpu: "96", memory: 384Gi }}
  cost: {{ gpuHour: 0.5 }}
  startupSeconds: 60
  artifactStore: {{ endpoint: "http://127.0.0.1:9000", bucket: models }}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{ name: public }}
spec:
  cloud: public
  provider: aws
  region: r1
  capacity: {{ gpu: {{ type: l4, count: 40 }}, cpu: "320", memory: 1280Gi }}
  cost: {{ gpuHour: 2.0 }}
  startupSeconds: 120
  artifactStore: {{ endpoint: "http://127.0.0.1:9001", bucket: models }}
---
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {{ name: p }}
spec:
  metric: {{ prometheusUrl: "http://127.0.0.1:9090", query: "q", targetPerReplica: 100 }}
  # Idle private replicas are released (not kept warm), so the private pool has room for the
  # surge beside the 8 replicas demand needs.
  burst: {{ enabled: true, pools: [public], privateCapacityShared: true }}
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{ name: ranker, namespace: shop }}
spec:
  model: {{ source: {{ uri: "s3://models/ranker", pool: private }}, version: "2" }}
  {rollout}
  components:
    - name: r
      dataClass: internal
      image: triton
      resources: {{ gpu: {{ count: 1, type: l4 }}, cpu: "4", memory: 16Gi }}
      replicas: {{ min: 4, max: 30 }}
      burstPolicy: p
"#
    );
    let path = dir.join("estate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Flat demand of 800 per second (8 replicas, all private) for six hours, every 10 minutes.
fn flat_trace(dir: &Path) -> PathBuf {
    let mut text = String::from("timestamp,value\n");
    for i in 0..37 {
        text.push_str(&format!("{},800\n", 1_700_000_000 + i * 600));
    }
    let path = dir.join("flat.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn simulate(estate: &Path, trace: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["simulate", "-f"])
        .arg(estate)
        .arg("--trace")
        .arg(trace)
        .args([
            "--component",
            "shop/ranker/r",
            "--peak",
            "800",
            "--step",
            "30",
        ])
        .args(extra)
        .output()
        .expect("the binary runs")
}

const CANARY: &str = "rollout: { strategy: Canary, maxSurge: 2, steps: [{ setWeight: 25, pause: { seconds: 600 } }, { setWeight: 50, pause: { seconds: 600 } }] }";

#[test]
fn a_rollout_on_flat_demand_surges_within_max_surge_and_finishes_after_its_pauses() {
    let dir = scratch();
    let out = simulate(
        &estate(&dir, CANARY),
        &flat_trace(&dir),
        &["--rollout-at", "3600", "-o", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rollout = &report["rollout"];
    assert!(report["simulation"].is_object());
    // 8 replicas, all in the private pool: at most maxSurge (2) beyond them at once.
    let peak = rollout["peakExtraReplicas"].as_u64().unwrap();
    assert!((1..=2).contains(&peak), "{rollout}");
    let started = rollout["startedAt"].as_i64().unwrap();
    let finished = rollout["finishedAt"]
        .as_i64()
        .expect("finished within the trace");
    assert!(
        finished - started >= 1200,
        "both pauses were held: {rollout}"
    );
    let beyond = rollout["secondsBeyondPauses"].as_i64().unwrap();
    assert_eq!(beyond, finished - started - 1200);
    assert!(beyond > 0, "new replicas take their start-up: {rollout}");
    let percents: Vec<u64> = rollout["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[2].as_u64().unwrap())
        .collect();
    assert_eq!(percents, [25, 50, 100], "every step, in order");
    assert_eq!(
        rollout["extraPublicCost"].as_f64(),
        Some(0.0),
        "flat demand within the private pool: no public surge"
    );
    let hours = rollout["extraReplicaHours"].as_f64().unwrap();
    assert!(hours > 0.0 && hours <= peak as f64 * (finished - started) as f64 / 3600.0 + 1e-9);
}

#[test]
fn a_wider_surge_finishes_sooner() {
    let dir = scratch();
    let trace = flat_trace(&dir);
    let time_with = |surge: &str| {
        let rollout = CANARY.replace("maxSurge: 2", &format!("maxSurge: {surge}"));
        let out = simulate(
            &estate(&dir, &rollout),
            &trace,
            &["--rollout-at", "3600", "-o", "json"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            report["rollout"]["secondsBeyondPauses"].as_i64().unwrap(),
            report["rollout"]["peakExtraReplicas"].as_u64().unwrap(),
        )
    };
    let (narrow_time, narrow_peak) = time_with("1");
    let (wide_time, wide_peak) = time_with("4");
    assert!(wide_time < narrow_time, "{wide_time} vs {narrow_time}");
    assert!(wide_peak > narrow_peak, "{wide_peak} vs {narrow_peak}");
}

#[test]
fn without_a_canary_or_outside_the_trace_it_is_bad_input() {
    let dir = scratch();
    let trace = flat_trace(&dir);
    let out = simulate(&estate(&dir, ""), &trace, &["--rollout-at", "3600"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Canary rollout strategy"));
    let out = simulate(&estate(&dir, CANARY), &trace, &["--rollout-at", "999999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the trace"));
    let out = simulate(&estate(&dir, CANARY), &trace, &["--rollout-at", "-5"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
