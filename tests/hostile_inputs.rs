//! A catalogue of hostile input to `skybridge plan` and `skybridge simulate`, run through the real
//! binary: oversized, deeply nested, empty, non-finite, misnamed and terminal-escaping input. Each
//! must end in exit status 2 with a message naming the file, line, object or field, never a panic,
//! a hang, unbounded memory or a silently wrong report. Every estate and trace here is built by
//! the test, not taken from the examples. Input sizes are kept small (or the caps lowered by flag)
//! so that each case is quick; nothing here measures time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn skybridge<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(args)
        .output()
        .expect("skybridge runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit status 2, no panic, and every one of `mentions` in the message.
#[track_caller]
fn assert_bad_input(out: &Output, mentions: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for m in mentions {
        assert!(err.contains(m), "{err:?} should mention {m:?}");
    }
}

const POOLS: &str = "\
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: home}
spec:
  cloud: private
  provider: onprem
  region: dc
  capacity: {gpu: {type: t4, count: 4}, cpu: \"64\", memory: 256Gi}
  cost: {gpuHour: 0.5, cpuHour: 0.01, gibHour: 0.001}
  startupSeconds: 60
  artifactStore: {bucket: models}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {name: cloud}
spec:
  cloud: public
  provider: aws
  region: r1
  capacity: {gpu: {type: t4, count: 16}}
  cost: {gpuHour: 0.9, cpuHour: 0.02, gibHour: 0.002}
  startupSeconds: 120
";

const POLICY: &str = "\
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {name: web}
spec:
  metric: {prometheusUrl: 'http://prom:9090', query: q, targetPerReplica: 100}
  burst: {enabled: true, pools: [cloud], maxCostPerHour: 50}
";

const DEPLOYMENT: &str = "\
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {name: ranker, namespace: shop}
spec:
  model: {source: {uri: 's3://models/ranker', pool: home}, version: '1'}
  components:
    - name: score
      dataClass: internal
      image: serve:1
      resources: {gpu: {count: 1}, cpu: '2', memory: 8Gi}
      replicas: {min: 1, max: 12}
      burstPolicy: web
";

/// A directory holding a valid estate (pools, policy, deployment) in three files.
fn estate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pools.yaml"), POOLS).unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    std::fs::write(dir.path().join("deployment.yaml"), DEPLOYMENT).unwrap();
    dir
}

/// `plan` on the valid estate plus `extra` as one more file (named `name`).
fn plan_with_file(name: &str, extra: &[u8], flags: &[&str]) -> Output {
    let dir = estate();
    let extra_dir = tempfile::tempdir().unwrap();
    let file = extra_dir.path().join(name);
    std::fs::write(&file, extra).unwrap();
    let mut args: Vec<std::ffi::OsString> = vec!["plan".into(), "-f".into()];
    args.push(dir.path().into());
    args.push("-f".into());
    args.push(file.into());
    args.extend(flags.iter().map(|f| f.into()));
    skybridge(&args)
}

fn plan_with(extra: &str) -> Output {
    plan_with_file("extra.yaml", extra.as_bytes(), &[])
}

#[test]
fn the_constructed_estate_plans() {
    let dir = estate();
    let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn help_lists_every_limit() {
    for (command, flags) in [
        (
            "plan",
            &[
                "--max-file-bytes",
                "--max-input-bytes",
                "--max-files",
                "--max-yaml-depth",
            ][..],
        ),
        (
            "simulate",
            &[
                "--max-file-bytes",
                "--max-input-bytes",
                "--max-files",
                "--max-yaml-depth",
                "--max-steps",
                "--max-trace-bytes",
                "at most 1e15",
            ][..],
        ),
    ] {
        let out = skybridge(&[command, "--help"]);
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in flags {
            assert!(
                help.contains(flag),
                "{command} --help lacks {flag}:\n{help}"
            );
        }
        assert!(
            help.contains("docs/security.md, \"Input limits\""),
            "{help}"
        );
    }
}

// ---- Nesting and size ----------------------------------------------------------------------

#[test]
fn deeply_nested_yaml_is_rejected_before_parsing() {
    // 200 KB of nested flow mappings: the YAML parser took seconds on this before the cap.
    let flow = "{a: ".repeat(50_000) + "1" + &"}".repeat(50_000) + "\n";
    let out = plan_with(&flow);
    assert_bad_input(&out, &["extra.yaml:1", "nests", "--max-yaml-depth"]);
    // The same in flow sequences and in block style, indentation or dashes.
    let brackets = "[".repeat(60_000) + &"]".repeat(60_000) + "\n";
    assert_bad_input(&plan_with(&brackets), &["extra.yaml:1", "nests"]);
    let dashes = "- ".repeat(60_000) + "x\n";
    assert_bad_input(&plan_with(&dashes), &["extra.yaml:1", "nests"]);
    let block: String = (0..2_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    assert_bad_input(&plan_with(&block), &["extra.yaml:33", "nests 33 levels"]);
}

#[test]
fn aliases_cannot_multiply_size_or_nesting() {
    // A "billion laughs": each anchor repeats the previous ten times (10^12 leaves if expanded).
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    assert_bad_input(&plan_with(&laughs), &["extra.yaml", "YAML syntax"]);
    // Nesting through aliases: every line is shallow, the expanded value is 200 levels deep.
    let mut deep = String::from("a0: &a0 [1]\n");
    for i in 1..200 {
        deep.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
    }
    assert_bad_input(
        &plan_with(&deep),
        &["extra.yaml", "YAML syntax", "recursion limit"],
    );
}

#[test]
fn the_nesting_cap_counts_levels_not_text_and_the_flag_raises_it() {
    // 40 levels inside an unknown field: over the default cap of 32, the nesting is named...
    let nested = "{a: ".repeat(40) + "1" + &"}".repeat(40);
    let doc = format!(
        "apiVersion: skybridge.io/v1alpha1\nkind: BurstPolicy\nmetadata: {{name: deep}}\n\
         spec: {{metric: {{prometheusUrl: 'http://p:9090', query: q, targetPerReplica: 1}}, x: {nested}}}\n"
    );
    assert_bad_input(&plan_with(&doc), &["extra.yaml:4", "nests"]);
    // ...and with the cap raised the document is parsed and its real problem named instead.
    let out = plan_with_file("extra.yaml", doc.as_bytes(), &["--max-yaml-depth", "64"]);
    assert_bad_input(&out, &["BurstPolicy deep", "spec.x", "unknown field"]);
    assert!(!stderr(&out).contains("nests"), "{}", stderr(&out));
    // Brackets inside quoted strings, comments and block scalars are text, not nesting.
    let text_only = format!(
        "{}# {}\n---\napiVersion: skybridge.io/v1alpha1\nkind: BurstPolicy\nmetadata: {{name: texty}}\n\
         spec:\n  metric:\n    prometheusUrl: 'http://p:9090'\n    query: \"{}\"\n    targetPerReplica: 1\n  \
         prewarm:\n  - name: |\n{}",
        "",
        "[".repeat(100),
        "{[".repeat(100),
        (1..60)
            .map(|i| format!("{}x\n", " ".repeat(4 + i)))
            .collect::<String>()
    );
    let out = plan_with(&text_only);
    assert!(!stderr(&out).contains("nests"), "{}", stderr(&out));
}

#[test]
fn files_over_the_size_caps_are_not_read() {
    // Over the default per-file cap of 8 MiB: a comment is enough to be big.
    let big = format!("# {}\n", "x".repeat((8 << 20) + 16));
    assert_bad_input(
        &plan_with(&big),
        &[
            "extra.yaml",
            "larger than the limit of 8388608 bytes",
            "--max-file-bytes",
        ],
    );
    // The flag raises it (the comment alone holds no object, which is then the problem).
    let out = plan_with_file(
        "extra.yaml",
        big.as_bytes(),
        &["--max-file-bytes", "16777216"],
    );
    assert_bad_input(&out, &["extra.yaml", "holds no objects"]);
    assert!(!stderr(&out).contains("larger than"), "{}", stderr(&out));
    // And lowers it.
    let small = plan_with_file(
        "extra.yaml",
        POLICY.as_bytes(),
        &["--max-file-bytes", "100"],
    );
    assert_bad_input(
        &small,
        &["extra.yaml", "larger than the limit of 100 bytes"],
    );
}

#[test]
fn the_total_of_all_files_and_their_number_are_capped() {
    let dir = estate();
    let path = dir.path().to_str().unwrap();
    let total = POOLS.len() + POLICY.len() + DEPLOYMENT.len();
    let just_under = (total - 1).to_string();
    let out = skybridge(&["plan", "-f", path, "--max-input-bytes", &just_under]);
    assert_bad_input(&out, &["--max-input-bytes", "in all"]);
    let exactly = total.to_string();
    let out = skybridge(&["plan", "-f", path, "--max-input-bytes", &exactly]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = skybridge(&["plan", "-f", path, "--max-files", "2"]);
    assert_bad_input(
        &out,
        &["more than the limit of 2 YAML files", "--max-files"],
    );
    let out = skybridge(&["plan", "-f", path, "--max-files", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_ends() {
    let dir = estate();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
    let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap()]);
    assert_bad_input(&out, &["nest deeper than"]);
}

// ---- Document shapes and empty input -------------------------------------------------------

#[test]
fn documents_that_are_not_mappings_are_named() {
    for (what, text, mentions) in [
        (
            "scalar after ---",
            "--- hello\n",
            ["extra.yaml:1", "a scalar"],
        ),
        ("list after ---", "--- [1, 2]\n", ["extra.yaml:1", "a list"]),
        ("block list", "- a\n- b\n", ["extra.yaml:1", "a list"]),
        ("bare number", "42\n", ["extra.yaml:1", "a scalar"]),
    ] {
        let out = plan_with(text);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        for m in mentions {
            assert!(stderr(&out).contains(m), "{what}: {}", stderr(&out));
        }
    }
    // A list document between two objects is named on its own line; the objects still load.
    let mixed = format!("{POLICY}--- [a]\n");
    let out = plan_with_file(
        "mixed.yaml",
        mixed.replace("name: web", "name: web2").as_bytes(),
        &[],
    );
    assert_bad_input(&out, &["mixed.yaml:7", "a list"]);
}

#[test]
fn empty_inputs_are_errors() {
    let empty_dir = tempfile::tempdir().unwrap();
    let out = skybridge(&["plan", "-f", empty_dir.path().to_str().unwrap()]);
    assert_bad_input(&out, &["holds no .yaml or .yml files"]);
    // A directory of other files is as empty.
    std::fs::write(empty_dir.path().join("README.md"), "# not yaml\n").unwrap();
    let out = skybridge(&["plan", "-f", empty_dir.path().to_str().unwrap()]);
    assert_bad_input(&out, &["holds no .yaml or .yml files"]);
    for (what, text) in [
        ("empty file", ""),
        ("comments only", "# nothing\n"),
        ("only separators", "---\n---\n"),
    ] {
        let out = plan_with(text);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("extra.yaml: the file holds no objects"),
            "{what}"
        );
    }
}

#[cfg(unix)]
#[test]
fn special_files_are_not_read() {
    let out = skybridge(&["plan", "-f", "/dev/zero"]);
    assert_bad_input(&out, &["/dev/zero", "not a regular file or a directory"]);
}

#[test]
fn files_that_are_not_utf8_are_named() {
    let out = plan_with_file("binary.yaml", &[0x61, 0x3a, 0x20, 0xff, 0xfe, 0x0a], &[]);
    assert_bad_input(&out, &["binary.yaml", "not UTF-8", "offset 3"]);
}

// ---- Object names --------------------------------------------------------------------------

#[test]
fn object_names_must_be_dns_names() {
    let long = "a".repeat(254);
    for (name, problem) in [
        ("Upper", "lowercase"),
        ("under_score", "lowercase"),
        ("-leading", "start and end"),
        ("trailing-", "start and end"),
        ("a..b", "empty"),
        ("sp ace", "lowercase"),
        (long.as_str(), "longer than 253"),
    ] {
        let doc = POLICY.replace("name: web", &format!("name: '{name}'"));
        let out = plan_with(&doc);
        assert_bad_input(
            &out,
            &[
                "extra.yaml",
                "metadata.name",
                "not a valid object name",
                problem,
            ],
        );
    }
    let doc = DEPLOYMENT.replace("namespace: shop", "namespace: Shop.Prod");
    assert_bad_input(
        &plan_with(&doc),
        &["metadata.namespace", "not a valid namespace"],
    );
    let doc = DEPLOYMENT.replace("namespace: shop", "namespace: [a]");
    assert_bad_input(
        &plan_with(&doc),
        &["metadata.namespace", "must be a string"],
    );
    // A valid subdomain with dots is a valid name.
    let doc = POLICY.replace("name: web", "name: web.v2");
    let out = plan_with(&doc);
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---- Numbers -------------------------------------------------------------------------------

/// Replaces `from` (which must occur) in `text`.
fn with(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the fixture");
    text.replacen(from, to, 1)
}

#[test]
fn non_finite_numbers_are_named_with_file_line_object_and_field() {
    // Before: `.nan` and `.inf` became JSON null and then the field's default, so a price of
    // NaN was silently a price of zero.
    let cases = [
        (
            "gpuHour: 0.5",
            "gpuHour: .nan",
            "spec.cost.gpuHour",
            "pools.yaml:9",
            "ComputePool home",
        ),
        (
            "cpuHour: 0.01",
            "cpuHour: .inf",
            "spec.cost.cpuHour",
            "pools.yaml:9",
            "ComputePool home",
        ),
        (
            "gibHour: 0.002",
            "gibHour: -.Inf",
            "spec.cost.gibHour",
            "pools.yaml:21",
            "ComputePool cloud",
        ),
        (
            "startupSeconds: 120",
            "startupSeconds: .inf",
            "spec.startupSeconds",
            "pools.yaml:22",
            "ComputePool cloud",
        ),
        (
            "count: 16",
            "count: .NaN",
            "spec.capacity.gpu.count",
            "pools.yaml:20",
            "ComputePool cloud",
        ),
    ];
    for (from, to, field, at, object) in cases {
        let dir = estate();
        std::fs::write(dir.path().join("pools.yaml"), with(POOLS, from, to)).unwrap();
        let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap()]);
        assert_bad_input(&out, &[at, object, field, "not a finite number"]);
    }
    // YAML reads a number too large for a double as a string: the field's type names it.
    let dir = estate();
    let pools = with(POOLS, "gpuHour: 0.9", "gpuHour: 1e400");
    std::fs::write(dir.path().join("pools.yaml"), pools).unwrap();
    let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap()]);
    assert_bad_input(
        &out,
        &["ComputePool cloud", "spec.cost.gpuHour", "not of type"],
    );
    for (from, to, field) in [
        (
            "targetPerReplica: 100",
            "targetPerReplica: .nan",
            "spec.metric.targetPerReplica",
        ),
        (
            "maxCostPerHour: 50",
            "maxCostPerHour: .inf",
            "spec.burst.maxCostPerHour",
        ),
    ] {
        let out = plan_with(&with(POLICY, from, to).replace("name: web", "name: web2"));
        assert_bad_input(
            &out,
            &[
                "extra.yaml:",
                "BurstPolicy web2",
                field,
                "not a finite number",
            ],
        );
    }
}

#[test]
fn absurd_finite_numbers_are_rejected_by_the_schema() {
    for (from, to, field) in [
        ("gpuHour: 0.5", "gpuHour: 1e308", "spec.cost.gpuHour"),
        ("cpuHour: 0.01", "cpuHour: 2000000", "spec.cost.cpuHour"),
        ("gpuHour: 0.5", "gpuHour: -1", "spec.cost.gpuHour"),
    ] {
        let dir = estate();
        std::fs::write(dir.path().join("pools.yaml"), with(POOLS, from, to)).unwrap();
        let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap()]);
        assert_bad_input(&out, &["ComputePool home", field]);
    }
    for (from, to, field) in [
        (
            "targetPerReplica: 100",
            "targetPerReplica: 1e308",
            "spec.metric.targetPerReplica",
        ),
        (
            "maxCostPerHour: 50",
            "maxCostPerHour: 1e308",
            "spec.burst.maxCostPerHour",
        ),
    ] {
        let out = plan_with(&with(POLICY, from, to).replace("name: web", "name: web2"));
        assert_bad_input(&out, &["BurstPolicy web2", field]);
    }
    // Quantities: finite but beyond any machine, or not quantities at all.
    for (from, to, field, says) in [
        (
            "cpu: \"64\"",
            "cpu: \"1e99\"",
            "spec.capacity.cpu",
            "too large",
        ),
        (
            "memory: 256Gi",
            "memory: 2000000Pi",
            "spec.capacity.memory",
            "too large",
        ),
        (
            "memory: 256Gi",
            "memory: .nan",
            "spec.capacity.memory",
            "not a finite number",
        ),
        (
            "cpu: \"64\"",
            "cpu: \"nan\"",
            "spec.capacity.cpu",
            "invalid quantity",
        ),
        (
            "cpu: \"64\"",
            "cpu: \"inf\"",
            "spec.capacity.cpu",
            "invalid quantity",
        ),
    ] {
        let dir = estate();
        std::fs::write(dir.path().join("pools.yaml"), with(POOLS, from, to)).unwrap();
        let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap()]);
        assert_bad_input(&out, &["ComputePool home", field, says]);
    }
    for (from, to, field) in [
        (
            "cpu: '2'",
            "cpu: '1e12'",
            "spec.components[0].resources.cpu",
        ),
        (
            "memory: 8Gi",
            "memory: '1e30'",
            "spec.components[0].resources.memory",
        ),
        ("max: 12", "max: 1e308", "spec.components[0].replicas.max"),
    ] {
        let dir = estate();
        std::fs::write(
            dir.path().join("deployment.yaml"),
            with(DEPLOYMENT, from, to),
        )
        .unwrap();
        let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap()]);
        assert_bad_input(&out, &["ModelDeployment shop/ranker", field]);
    }
}

#[test]
fn demand_flags_take_replica_counts_only() {
    let dir = estate();
    let path = dir.path().to_str().unwrap();
    for bad in [
        "shop/ranker/score=NaN",
        "shop/ranker/score=inf",
        "shop/ranker/score=1e308",
        "shop/ranker/score=-1",
    ] {
        let out = skybridge(&["plan", "-f", path, "--demand", bad]);
        assert_bad_input(&out, &["--demand", "not a replica count"]);
    }
    // The largest count is clamped to the component's max, not overflowed.
    let out = skybridge(&[
        "plan",
        "-f",
        path,
        "-o",
        "json",
        "--demand",
        "shop/ranker/score=4294967295",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let component = &report["deployments"][0]["components"][0];
    assert_eq!(component["desiredReplicas"], 12, "{component}");
}

// ---- Terminal escapes ----------------------------------------------------------------------

const ESC: char = '\u{1b}';

#[track_caller]
fn assert_no_raw_controls(out: &Output) {
    let err = stderr(out);
    let raw: Vec<char> = err
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in {err:?}");
}

#[cfg(unix)]
#[test]
fn escape_bytes_in_paths_names_and_values_are_escaped() {
    // A file name carrying a terminal title sequence and a colour change.
    let name = format!("evil{ESC}]0;pwned\u{7}{ESC}[31m.yaml");
    let out = plan_with_file(&name, b"kind: [unclosed\n", &[]);
    assert_bad_input(&out, &["evil\\u{1b}]0;pwned\\u{7}\\u{1b}[31m.yaml"]);
    assert_no_raw_controls(&out);
    // A path that does not exist.
    let missing = format!("/nonexistent/{ESC}[2J.yaml");
    let out = skybridge(&["plan", "-f", &missing]);
    assert_bad_input(&out, &["\\u{1b}[2J"]);
    assert_no_raw_controls(&out);
    // An object name and a value: both quoted back in messages.
    // YAML forbids raw control characters but writes them as escapes (`\e` is ESC).
    let doc = POLICY.replace("name: web", "name: \"web\\e[8m\"");
    let out = plan_with(&doc);
    assert_bad_input(&out, &["web\\u{1b}[8m"]);
    assert_no_raw_controls(&out);
    let doc = with(DEPLOYMENT, "cpu: '2'", "cpu: \"2\\e[0m\\u202e\"");
    let out = plan_with_file(
        "deployment2.yaml",
        doc.replace("name: ranker", "name: r2").as_bytes(),
        &[],
    );
    assert_bad_input(&out, &["\\u{1b}[0m", "\\u{202e}"]);
    assert_no_raw_controls(&out);
    assert!(!stderr(&out).contains('\u{202e}'));
    // A flag value.
    let dir = estate();
    let out = skybridge(&[
        "plan",
        "-f",
        dir.path().to_str().unwrap(),
        "--demand",
        &format!("shop/ranker/{ESC}[31m=1"),
    ]);
    assert_bad_input(&out, &["\\u{1b}[31m"]);
    assert_no_raw_controls(&out);
}

#[test]
fn values_quoted_in_the_table_are_escaped() {
    // A GPU type no pool has is quoted in the unplaced reason of the table.
    let dir = estate();
    let deployment = with(
        DEPLOYMENT,
        "gpu: {count: 1}",
        "gpu: {count: 1, type: \"big\\e[31m\"}",
    );
    std::fs::write(dir.path().join("deployment.yaml"), deployment).unwrap();
    let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("big\\u{1b}[31m"), "{table}");
    assert!(!table.contains(ESC), "{table:?}");
    // JSON keeps the value exact, escaped by JSON itself.
    let out = skybridge(&["plan", "-f", dir.path().to_str().unwrap(), "-o", "json"]);
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(
        !json.contains(ESC) && json.contains("big\\u001b[31m"),
        "{json}"
    );
}

// ---- simulate ------------------------------------------------------------------------------

fn write_trace(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A day of demand rising and falling, every 30 minutes.
fn day_trace() -> String {
    let mut text = String::from("timestamp,value\n");
    for k in 0..48 {
        let value = 10.0 + 90.0 * (std::f64::consts::PI * k as f64 / 47.0).sin();
        text.push_str(&format!("{},{value:.1}\n", 1_700_000_000 + k * 1800));
    }
    text
}

fn simulate_on(trace: &Path, flags: &[&str]) -> Output {
    let dir = estate();
    let mut args: Vec<std::ffi::OsString> = vec!["simulate".into(), "-f".into()];
    args.push(dir.path().into());
    args.push("--trace".into());
    args.push(trace.into());
    args.extend(flags.iter().map(|f| f.into()));
    skybridge(&args)
}

/// The figures of a JSON report: a non-finite float serialises as `null`, so no figure of the
/// policy run or of a baseline may be null, and the table's `NaN`/`inf` must not appear at all.
fn assert_figures_finite(out: &Output) {
    fn no_nulls(value: &serde_json::Value, path: &str) {
        match value {
            serde_json::Value::Null => panic!("{path} is null (a NaN or infinity)"),
            serde_json::Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| no_nulls(v, &format!("{path}.{k}"))),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| no_nulls(v, &format!("{path}[{i}]"))),
            _ => {}
        }
    }
    assert!(out.status.success(), "{}", stderr(out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("NaN") && !text.contains("inf\""), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["policy", "baselines", "peak"] {
        let figures = report
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {report}"));
        no_nulls(figures, key);
    }
}

#[test]
fn the_constructed_trace_simulates() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), "day.csv", &day_trace());
    let out = simulate_on(&trace, &["-o", "json"]);
    assert_figures_finite(&out);
}

#[test]
fn absurd_peaks_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), "day.csv", &day_trace());
    // Before: --peak 1e308 printed NaN% and exit 0.
    for peak in ["1e308", "1e16", "NaN", "inf", "-5", "0"] {
        let out = simulate_on(&trace, &[&format!("--peak={peak}")]);
        assert_bad_input(&out, &["--peak", "positive number of at most 1e15"]);
    }
    let out = simulate_on(&trace, &["--peak", "1e15", "-o", "json"]);
    assert_figures_finite(&out);
}

#[test]
fn trace_values_that_are_not_finite_numbers_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["NaN", "inf", "-inf", "1e400", "-1", "x"] {
        let text = format!("timestamp,value\n0,1\n60,{bad}\n120,1\n");
        let trace = write_trace(dir.path(), "bad.csv", &text);
        let out = simulate_on(&trace, &[]);
        assert_bad_input(&out, &["bad.csv:3", "not a finite non-negative number"]);
    }
}

#[test]
fn extreme_but_finite_trace_values_scale_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    // A peak of 1e308, and one so small (subnormal) that 1/peak is infinite: scaling must keep
    // the shape and give finite figures, not NaN.
    for (low, high) in [("1e300", "1e308"), ("0", "1e-320")] {
        let text = format!("timestamp,value\n0,{low}\n3600,{high}\n7200,{low}\n");
        let trace = write_trace(dir.path(), "extreme.csv", &text);
        let out = simulate_on(&trace, &["-o", "json", "--peak", "500"]);
        assert_figures_finite(&out);
    }
}

#[test]
fn a_huge_time_range_at_a_small_step_is_refused_before_any_sample_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    // Ten thousand years at one-second steps: 3e11 samples, terabytes if allocated.
    let text = "timestamp,value\n0000-01-01 00:00:00,1\n9999-12-31 23:59:59,2\n";
    let trace = write_trace(dir.path(), "eons.csv", text);
    let out = simulate_on(&trace, &["--step", "1"]);
    assert_bad_input(
        &out,
        &[
            "eons.csv",
            "315569519999 s",
            "315569520000 steps",
            "more than --max-steps 1000000",
        ],
    );
    // Just over and just at a lowered cap.
    let text = "timestamp,value\n0,1\n600,2\n";
    let trace = write_trace(dir.path(), "short.csv", text);
    let out = simulate_on(&trace, &["--step", "60", "--max-steps", "10"]);
    assert_bad_input(&out, &["11 steps", "more than --max-steps 10"]);
    let out = simulate_on(&trace, &["--step", "60", "--max-steps", "11", "-o", "json"]);
    assert_figures_finite(&out);
}

#[test]
fn a_step_longer_than_the_trace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), "short.csv", "timestamp,value\n0,1\n600,2\n");
    for step in ["601", "4294967295"] {
        let out = simulate_on(&trace, &["--step", step]);
        assert_bad_input(&out, &["--step", "longer than the trace", "600 s"]);
    }
    let out = simulate_on(&trace, &["--step", "600", "-o", "json"]);
    assert_figures_finite(&out);
}

#[test]
fn timestamps_at_the_edges_of_the_integer_range_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (first, second, line) in [
        (i64::MIN.to_string(), "0".to_string(), 2),
        ("0".to_string(), i64::MAX.to_string(), 3),
        ((i64::MAX - 1).to_string(), i64::MAX.to_string(), 2),
        ("-62167219201".to_string(), "0".to_string(), 2),
        ("0".to_string(), "253402300800".to_string(), 3),
    ] {
        let text = format!("timestamp,value\n{first},1\n{second},2\n");
        let trace = write_trace(dir.path(), "edges.csv", &text);
        let out = simulate_on(&trace, &[]);
        assert_bad_input(
            &out,
            &[
                &format!("edges.csv:{line}"),
                "outside the years 0000 to 9999",
            ],
        );
    }
    // Beyond i64 altogether: not a timestamp.
    let text = "timestamp,value\n0,1\n99999999999999999999,2\n";
    let trace = write_trace(dir.path(), "edges.csv", text);
    assert_bad_input(&simulate_on(&trace, &[]), &["edges.csv:3", "timestamp"]);
}

#[test]
fn empty_traces_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, says) in [
        ("empty.csv", "", "the trace is empty"),
        ("blank.csv", "\n\n", "the trace is empty"),
        ("header.csv", "timestamp,value\n", "found 0"),
        ("one.csv", "timestamp,value\n0,1\n", "found 1"),
    ] {
        let trace = write_trace(dir.path(), name, text);
        assert_bad_input(&simulate_on(&trace, &[]), &[name, says]);
    }
}

#[test]
fn trace_files_over_the_cap_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let text = day_trace();
    let trace = write_trace(dir.path(), "day.csv", &text);
    let cap = (text.len() - 1).to_string();
    let out = simulate_on(&trace, &["--max-trace-bytes", &cap]);
    assert_bad_input(
        &out,
        &["day.csv", "larger than the limit", "--max-trace-bytes"],
    );
    let cap = text.len().to_string();
    let out = simulate_on(&trace, &["--max-trace-bytes", &cap, "-o", "json"]);
    assert_figures_finite(&out);
}

#[test]
fn simulate_shares_the_estate_caps() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), "day.csv", &day_trace());
    let out = simulate_on(&trace, &["--max-files", "1"]);
    assert_bad_input(&out, &["--max-files"]);
    let out = simulate_on(&trace, &["--max-yaml-depth", "2"]);
    assert_bad_input(&out, &["nests", "--max-yaml-depth"]);
}

#[cfg(unix)]
#[test]
fn escape_bytes_in_trace_paths_and_cells_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("t{ESC}]0;x\u{7}.csv");
    let trace = write_trace(
        dir.path(),
        &name,
        &format!("timestamp,value\n0,1\n60,{ESC}[31m\n"),
    );
    let out = simulate_on(&trace, &[]);
    assert_bad_input(&out, &["t\\u{1b}]0;x\\u{7}.csv:3", "\\u{1b}[31m"]);
    assert_no_raw_controls(&out);
    let missing = dir.path().join(format!("gone{ESC}[2J.csv"));
    let out = simulate_on(&missing, &[]);
    assert_bad_input(&out, &["gone\\u{1b}[2J.csv"]);
    assert_no_raw_controls(&out);
    // An output path that cannot be written: a runtime failure (1), escaped all the same.
    let trace = write_trace(dir.path(), "day.csv", &day_trace());
    let csv = dir.path().join(format!("no{ESC}[5m/dir/out.csv"));
    let out = simulate_on(&trace, &["--csv", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no\\u{1b}[5m/dir/out.csv"),
        "{}",
        stderr(&out)
    );
    assert_no_raw_controls(&out);
}
