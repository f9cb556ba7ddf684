//! `skybridge run` says when it is stopped: a log line naming the signal as soon as it arrives
//! (stopping takes a moment and a silent process looks hung) and one when shutdown is complete.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kube_harness::{Cluster, ClusterConfig};

const CRDS: &str = include_str!("../crds/skybridge.yaml");

/// Waits (up to a minute, as a deadline, not a measurement) for a line containing `needle`.
fn wait_for_line(lines: &mpsc::Receiver<String>, seen: &mut Vec<String>, needle: &str) {
    while !seen.iter().any(|l| l.contains(needle)) {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!(
                "no log line with {needle:?} ({e}); log so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

async fn stopped_by(signal: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Cluster::start(ClusterConfig::new("hub").kubeconfig_dir(dir.path()))
        .await
        .unwrap();
    hub.apply_yaml(CRDS, "test-setup").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_skybridge"))
        .args(["run", "--leader-election=false", "--manage-artifacts=false"])
        .args(["--probe-addr", "127.0.0.1:0", "--namespace", "default"])
        .arg("--kubeconfig")
        .arg(hub.kubeconfig_path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skybridge runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let signal = signal.to_string();
    let waited = tokio::task::spawn_blocking(move || {
        wait_for_line(&lines, &mut seen, "caches synced");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for_line(&lines, &mut seen, "shutdown complete");
        let exit = child.wait().unwrap();
        (seen, exit)
    })
    .await
    .unwrap();
    let (seen, exit) = waited;
    let received = seen
        .iter()
        .position(|l| l.contains(&format!("received {name}: shutting down")))
        .unwrap_or_else(|| panic!("no line naming {name}:\n{}", seen.join("\n")));
    let complete = seen
        .iter()
        .position(|l| l.contains("shutdown complete"))
        .unwrap();
    assert!(received < complete, "{}", seen.join("\n"));
    assert!(exit.success(), "{exit:?}\n{}", seen.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_logged_and_so_is_the_end_of_shutdown() {
    stopped_by("TERM", "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_is_logged_and_so_is_the_end_of_shutdown() {
    stopped_by("INT", "SIGINT").await;
}
