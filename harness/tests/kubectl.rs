//! The real kubectl (v1.32 at /usr/bin/kubectl, or $KUBECTL) against the harness: discovery,
//! client-side and server-side apply of the project's CRDs and a custom object, `get -o yaml`,
//! `wait --for=condition=Ready` on a status the test sets, validation errors, and `delete`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use kube_harness::{Cluster, ClusterConfig};
use serde_json::{Value, json};

fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn cmd(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(kubectl_bin());
    c.env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .stdin(Stdio::null());
    c
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
    let mut c = cmd(kubeconfig, cache, args);
    let args = args.join(" ");
    tokio::task::spawn_blocking(move || {
        c.output()
            .unwrap_or_else(|e| panic!("running kubectl {args}: {e}"))
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn ok(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let o = kubectl(kubeconfig, cache, args).await;
    assert!(
        o.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        text(&o)
    );
    text(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_wait_delete() {
    let dir = std::env::temp_dir().join(format!("kube-harness-kubectl-{}", std::process::id()));
    let cache = dir.join("cache");
    let c = Cluster::start(ClusterConfig::new("hub").kubeconfig_dir(&dir))
        .await
        .unwrap();
    let kc = c.kubeconfig_path().to_path_buf();
    assert_eq!(kc, dir.join("hub.kubeconfig"));
    let crds = manifest("../crds/skybridge.yaml");
    let crds = crds.to_str().unwrap();
    let pool = manifest("tests/fixtures/pool.yaml");
    let pool = pool.to_str().unwrap();

    let out = ok(&kc, &cache, &["version"]).await;
    assert!(out.contains("Server Version: v1.32.0"), "{out}");
    let out = ok(&kc, &cache, &["apply", "-f", crds]).await;
    assert_eq!(out.matches(" created").count(), 3, "{out}");
    let out = ok(&kc, &cache, &["apply", "-f", crds]).await;
    assert_eq!(out.matches(" unchanged").count(), 3, "{out}");
    let out = ok(&kc, &cache, &["apply", "--server-side", "-f", crds]).await;
    assert_eq!(out.matches("serverside-applied").count(), 3, "{out}");
    let out = ok(&kc, &cache, &["api-resources", "--api-group=skybridge.io"]).await;
    assert!(
        out.contains("computepools") && out.contains("cpool") && out.contains("modeldeployments"),
        "{out}"
    );

    // A custom object: apply, re-apply server-side, read back as YAML with defaults applied.
    let out = ok(&kc, &cache, &["apply", "-f", pool]).await;
    assert!(
        out.contains("computepool.skybridge.io/dc1-a100 created"),
        "{out}"
    );
    let out = ok(
        &kc,
        &cache,
        &["apply", "--server-side", "--force-conflicts", "-f", pool],
    )
    .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let yaml = ok(&kc, &cache, &["get", "cpool", "dc1-a100", "-o", "yaml"]).await;
    let obj: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(obj["kind"], "ComputePool");
    assert_eq!(obj["spec"]["startupSeconds"], 120);
    assert_eq!(obj["spec"]["capacity"]["gpu"]["count"], 16);
    // Default output is a server-side Table with the CRD's printer columns.
    let table = ok(&kc, &cache, &["get", "cpool"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        vec![
            "NAME",
            "CLOUD",
            "REGION",
            "GPU",
            "GPUS-FREE",
            "READY",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("dc1-a100   private   fra-dc1   nvidia-a100-80gb"),
        "{table}"
    );
    let names = ok(&kc, &cache, &["get", "computepools", "-o", "name"]).await;
    assert_eq!(names.trim(), "computepool.skybridge.io/dc1-a100");

    // Invalid object: the server's 422 (CEL rule message) reaches the user.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata:\n  name: bad\nspec:\n  cloud: public\n  provider: aws\n  region: eu\n  capacity: {}\n  dataClasses: [sensitive]\n").unwrap();
    let o = kubectl(&kc, &cache, &["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(!o.status.success());
    assert!(
        text(&o).contains("a public pool must not admit the sensitive data class"),
        "{}",
        text(&o)
    );

    // kubectl wait blocks until the test sets the Ready condition through the status subresource.
    let mut waiter = cmd(
        &kc,
        &cache,
        &[
            "wait",
            "--for=condition=Ready",
            "computepool/dc1-a100",
            "--timeout=30s",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "wait must not finish before Ready is set"
    );
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Observed",
        "message": "nodes found", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let a = http(
        "PATCH",
        &format!(
            "{}/apis/skybridge.io/v1alpha1/computepools/dc1-a100/status",
            c.url()
        ),
        Some("application/merge-patch+json"),
        &status.to_string(),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    let out = tokio::task::spawn_blocking(move || waiter.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("condition met"), "{}", text(&out));

    // Built-in kinds: apply, re-apply with a change (strategic merge patch), label, patch, get.
    let cm = dir.join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"1\"\n",
    )
    .unwrap();
    ok(&kc, &cache, &["apply", "-f", cm.to_str().unwrap()]).await;
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: \"3\"\n",
    )
    .unwrap();
    let out = ok(&kc, &cache, &["apply", "-f", cm.to_str().unwrap()]).await;
    assert!(out.contains("configured"), "{out}");
    ok(&kc, &cache, &["label", "configmap", "settings", "tier=gpu"]).await;
    ok(
        &kc,
        &cache,
        &[
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ],
    )
    .await;
    let out = ok(
        &kc,
        &cache,
        &[
            "get",
            "configmap",
            "-l",
            "tier=gpu",
            "-o",
            "jsonpath={.items[0].data.a}{.items[0].data.b}",
        ],
    )
    .await;
    assert_eq!(out.trim(), "32", "applied change and patch both present");

    // Delete (kubectl waits for the object to disappear), then it is NotFound.
    let out = ok(&kc, &cache, &["delete", "-f", pool]).await;
    assert!(out.contains("deleted"), "{out}");
    let o = kubectl(&kc, &cache, &["get", "cpool", "dc1-a100"]).await;
    assert!(!o.status.success());
    assert!(text(&o).contains("NotFound"), "{}", text(&o));
    let out = ok(&kc, &cache, &["delete", "-f", crds]).await;
    assert_eq!(out.matches("deleted").count(), 3, "{out}");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
