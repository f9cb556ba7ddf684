//! `skybridge simulate` from the outside: figures on a short trace, files written, and bad input
//! rejected with exit status 2 and a message naming the file and line, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skybridge-simulate-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn simulate(args: &[&str]) -> Output {
    let estate = root().join("examples/ecommerce");
    Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .arg("simulate")
        .arg("-f")
        .arg(&estate)
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Two days of the NYC trace: enough for bursts, quick in a debug build.
fn short_trace(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples/traces/nyc_taxi.csv")).unwrap();
    let lines: Vec<&str> = text.lines().take(1 + 96).collect();
    let path = dir.join("two-days.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_bad_input(out: &Output, mentions: &[&str]) {
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(out));
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{err}");
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
}

#[test]
fn json_has_the_documented_keys() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let out = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--component",
        "recsys/ctr-ranker/ranker",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for path in [
        "/policy",
        "/baselines/privateOnly",
        "/baselines/publicOnly",
        "/baselines/staticThreshold",
        "/baselines/optimalLowerBound",
        "/costRatioToLowerBound",
        "/baselines/oracle",
        "/headline/unmetDemandFraction",
        "/headline/publicSpendRatioToOracle",
        "/headline/chargebackRatioToOracle",
        "/headlines/staticThreshold/publicSpendRatioToOracle",
    ] {
        assert!(v.pointer(path).is_some(), "missing {path}");
    }
    for run in [
        "/policy",
        "/baselines/privateOnly",
        "/baselines/publicOnly",
        "/baselines/staticThreshold",
        "/baselines/optimalLowerBound",
    ] {
        for field in [
            "cost",
            "unmetDemandFraction",
            "publicReplicaHours",
            "burstEvents",
            "scaleEvents",
            "replicaChanges",
            "privateReplicaHours",
            "chargebackCost",
        ] {
            assert!(
                v.pointer(&format!("{run}/{field}")).is_some(),
                "missing {run}/{field}"
            );
        }
    }
    let ratio = v["costRatioToLowerBound"].as_f64().unwrap();
    assert!(ratio >= 1.0 - 1e-9, "the bound must not cost more: {ratio}");
    assert_eq!(v["component"], "recsys/ctr-ranker/ranker");
    assert!(v["policy"]["burstEvents"].as_u64().unwrap() >= 1);
}

#[test]
fn default_component_is_named_and_files_are_written() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let svg = dir.join("run.svg");
    let csv = dir.join("run.csv");
    let out = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--step",
        "120",
        "--plot",
        svg.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("recsys/ctr-ranker/feature-transform chosen by default"),
        "{table}"
    );
    assert!(table.contains("optimal lower bound"));
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("demand") && svg.contains("requests per second"));
    let csv = std::fs::read_to_string(csv).unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("timestamp,demand,ready_capacity,")
    );
    // 47.5 hours at 120 s steps, plus the first.
    assert_eq!(lines.count(), 47 * 30 + 15 + 1);
}

#[test]
fn missing_trace_file() {
    let out = simulate(&["--trace", "/nonexistent/trace.csv"]);
    assert_bad_input(&out, &["/nonexistent/trace.csv"]);
}

#[test]
fn missing_estate_file() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["simulate", "-f", "/nonexistent/estate.yaml", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert_bad_input(&out, &["/nonexistent/estate.yaml"]);
}

#[test]
fn malformed_row_names_file_and_line() {
    let dir = scratch();
    let path = dir.join("bad.csv");
    std::fs::write(
        &path,
        "timestamp,value\n2014-07-01 00:00:00,100\n2014-07-01 00:30:00,lots\n",
    )
    .unwrap();
    let out = simulate(&["--trace", path.to_str().unwrap()]);
    assert_bad_input(&out, &[&format!("{}:3", path.display()), "lots"]);
}

#[test]
fn short_row_names_file_and_line() {
    let dir = scratch();
    let path = dir.join("short.csv");
    std::fs::write(
        &path,
        "timestamp,value\n2014-07-01 00:00:00,100\n2014-07-01 00:30:00\n",
    )
    .unwrap();
    let out = simulate(&["--trace", path.to_str().unwrap()]);
    assert_bad_input(&out, &[&format!("{}:3", path.display())]);
}

#[test]
fn non_monotonic_timestamps_name_the_line() {
    let dir = scratch();
    let path = dir.join("backwards.csv");
    std::fs::write(
        &path,
        "timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:30:00,2\n2014-07-01 00:30:00,3\n",
    )
    .unwrap();
    let out = simulate(&["--trace", path.to_str().unwrap()]);
    assert_bad_input(
        &out,
        &[&format!("{}:4", path.display()), "does not come after"],
    );
}

#[test]
fn unknown_component() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let out = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--component",
        "recsys/ctr-ranker/nope",
    ]);
    assert_bad_input(&out, &["recsys/ctr-ranker/nope"]);
    let out = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--component",
        "nonsense",
    ]);
    assert_bad_input(&out, &["NAMESPACE/NAME/COMPONENT"]);
}

#[test]
fn component_without_policy() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let out = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--component",
        "search/query-encoder/encoder",
    ]);
    assert_bad_input(&out, &["search/query-encoder/encoder", "burstPolicy"]);
}

#[test]
fn bad_peak_and_step() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let t = trace.to_str().unwrap();
    assert_bad_input(&simulate(&["--trace", t, "--peak", "0"]), &["--peak"]);
    assert_bad_input(&simulate(&["--trace", t, "--step", "0"]), &["--step"]);
}

#[test]
fn sweep_prints_the_frontier_and_draws_it() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let svg = dir.join("frontier.svg");
    let out = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--component",
        "recsys/ctr-ranker/ranker",
        "--sweep",
        "metric.targetPerReplica=300..500:100",
        "--sweep",
        "metric.volatilityHeadroom=0,2",
        "--jobs",
        "2",
        "--plot",
        svg.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let variants = v["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 6, "3 × 2 variants");
    assert!(variants.iter().any(|x| x["pareto"] == true));
    assert_eq!(variants[0]["values"]["metric.targetPerReplica"], 300.0);
    assert_eq!(variants[1]["values"]["metric.volatilityHeadroom"], 2.0);
    for path in [
        "/current/publicCost",
        "/current/headline/publicSpendRatioToOracle",
        "/baselines/staticThreshold/unmetDemandFraction",
        "/baselines/oracle/publicCost",
        "/baselines/optimalLowerBound/publicCost",
        "/variants/0/unmetDemandFraction",
    ] {
        assert!(v.pointer(path).is_some(), "missing {path}");
    }
    // A bigger replica serves more: the 500 variants never spend more than the 300 ones.
    let spend = |i: usize| variants[i]["publicCost"].as_f64().unwrap();
    assert!(spend(4) <= spend(0), "{} vs {}", spend(4), spend(0));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg"), "an SVG");
    assert!(drawn.contains("Pareto frontier") && drawn.contains("current policy"));
    // The table marks the current policy and the baselines.
    let table = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--sweep",
        "metric.headroomPercent=0,5",
    ]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    for row in ["frontier", "* current", "static threshold", "oracle"] {
        assert!(text.contains(row), "{text}");
    }
}

#[test]
fn bad_sweeps_are_bad_input() {
    let dir = scratch();
    let trace = short_trace(&dir);
    let t = trace.to_str().unwrap();
    for (spec, mentions) in [
        ("metric.targetPerReplica", "expected FIELD=FROM..TO:STEP"),
        (
            "metric.targetPerReplica=500..300:50",
            "must not end before it starts",
        ),
        (
            "metric.targetPerReplica=300..500:0",
            "step must be positive",
        ),
        ("metric.noSuchField=1,2", "metric.noSuchField"),
        ("nowhere.targetPerReplica=1", "no section nowhere"),
        ("metric.headroomPercent=2.5", "metric.headroomPercent"),
        ("metric.targetPerReplica=0..1e9:1", "at most 10000"),
    ] {
        let out = simulate(&["--trace", t, "--sweep", spec]);
        assert_bad_input(&out, &[mentions]);
    }
    // A value the policy cannot take is refused, not run.
    let out = simulate(&["--trace", t, "--sweep", "metric.targetPerReplica=0,400"]);
    assert_bad_input(&out, &["targetPerReplica must be positive"]);
    let out = simulate(&[
        "--trace",
        t,
        "--sweep",
        "metric.headroomPercent=1",
        "--jobs",
        "0",
    ]);
    assert_bad_input(&out, &["--jobs 0"]);
}
