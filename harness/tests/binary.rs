//! The `kube-harness` binary: several clusters from flags, kubeconfig files, nodes and faults
//! from the command line, the control endpoint, and a clean exit on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_named_clusters_until_sigterm() {
    let dir = std::env::temp_dir().join(format!("kube-harness-bin-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-harness"))
        .args(["--clusters", "hub,private,public", "--kubeconfig-dir"])
        .arg(&dir)
        .args([
            "--node",
            "private=gpu-a,gpu=8,gpu-type=nvidia-a100,label:pool=a100,taint:nvidia.com/gpu=present:NoSchedule",
            "--node",
            "public=cpu-1,cpu=16,memory=64Gi",
            "--fault",
            "public=status=503,verb=list,path=/secrets",
            "--readiness-delay-ms",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let urls: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(parts[0], "cluster", "{l}");
            (parts[1].to_string(), parts[2].to_string())
        })
        .collect();
    assert_eq!(
        urls.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vec!["hub", "private", "public"]
    );
    for (name, url) in &urls {
        let kc = std::fs::read_to_string(dir.join(format!("{name}.kubeconfig"))).unwrap();
        assert!(kc.contains(&format!("server: {url}")), "{kc}");
        assert_eq!(
            http("GET", &format!("{url}/version"), None, "").await.code,
            200
        );
    }
    let private = &urls[1].1;
    let public = &urls[2].1;
    let node = http("GET", &format!("{private}/api/v1/nodes/gpu-a"), None, "")
        .await
        .body;
    assert_eq!(node["status"]["allocatable"]["nvidia.com/gpu"], "8");
    assert_eq!(
        node["metadata"]["labels"]["nvidia.com/gpu.product"],
        "nvidia-a100"
    );
    assert_eq!(
        http("GET", &format!("{public}/api/v1/nodes"), None, "")
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        http(
            "GET",
            &format!("{urls}/api/v1/nodes", urls = urls[0].1),
            None,
            ""
        )
        .await
        .body["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        http("GET", &format!("{public}/api/v1/secrets"), None, "")
            .await
            .code,
        503
    );
    assert_eq!(
        http("GET", &format!("{private}/api/v1/secrets"), None, "")
            .await
            .code,
        200
    );
    // The control endpoint of the running binary.
    http("DELETE", &format!("{public}/harness/faults"), None, "").await;
    assert_eq!(
        http("GET", &format!("{public}/api/v1/secrets"), None, "")
            .await
            .code,
        200
    );
    // A kube::Client from the written kubeconfig.
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.join("private.kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    assert_eq!(
        nodes.list(&Default::default()).await.unwrap().items.len(),
        1
    );

    // SIGTERM: the process exits successfully.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-harness"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--clusters",
        "--kubeconfig-dir",
        "--port",
        "--node",
        "--readiness-delay-ms",
        "--fault",
        "--seed",
        "--watch-history",
        "--bookmark-interval-ms",
        "--no-pods",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_kube-harness"))
        .args(["--clusters", "a", "--node", "b=n1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown cluster b"));
}
