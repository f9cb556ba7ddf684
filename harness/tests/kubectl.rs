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
            "SHORT",
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

/// A ModelDeployment for describe: small, valid against the project's CRD.
const MODEL_DEPLOYMENT: &str = "apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata:
  name: ranker
  namespace: shop
spec:
  model:
    source: { uri: \"s3://models/ranker\", pool: dc1-a100 }
    version: \"1\"
  components:
    - name: ranker
      dataClass: internal
      image: example.com/ranker:1
      port: 8080
      resources: { cpu: \"2\", memory: 4Gi }
      replicas: { min: 1, max: 4 }
";

/// What platform engineers type from the guides: the typed `kubectl create` commands (protobuf
/// bodies), `expose`, Events as kubectl reads them (core v1) while controllers write them as
/// `events.k8s.io`, and `auth can-i`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_expose_events_describe_and_auth() {
    let dir = std::env::temp_dir().join(format!(
        "kube-harness-kubectl-create-{}",
        std::process::id()
    ));
    let cache = dir.join("cache");
    let c = Cluster::start(ClusterConfig::new("hub").kubeconfig_dir(&dir))
        .await
        .unwrap();
    let kc = c.kubeconfig_path().to_path_buf();
    let crds = manifest("../crds/skybridge.yaml");
    ok(&kc, &cache, &["apply", "-f", crds.to_str().unwrap()]).await;

    // kubectl create namespace / secret / configmap / deployment send protobuf.
    let out = ok(&kc, &cache, &["create", "namespace", "shop"]).await;
    assert!(out.contains("namespace/shop created"), "{out}");
    let phase = ok(
        &kc,
        &cache,
        &["get", "namespace", "shop", "-o", "jsonpath={.status.phase}"],
    )
    .await;
    assert_eq!(phase, "Active");

    // Bytes that are not UTF-8 survive the protobuf `bytes` map and come back base64.
    let key_file = dir.join("kubeconfig");
    std::fs::write(&key_file, [0u8, 159, 146, 150, b'k', b'c']).unwrap();
    let from_file = format!("--from-file=kubeconfig={}", key_file.display());
    let out = ok(
        &kc,
        &cache,
        &[
            "create",
            "secret",
            "generic",
            "private-kubeconfig",
            "-n",
            "shop",
            &from_file,
        ],
    )
    .await;
    assert!(out.contains("secret/private-kubeconfig created"), "{out}");
    let data = ok(
        &kc,
        &cache,
        &[
            "get",
            "secret",
            "private-kubeconfig",
            "-n",
            "shop",
            "-o",
            "jsonpath={.type} {.data.kubeconfig}",
        ],
    )
    .await;
    assert_eq!(data, "Opaque AJ+Slmtj");

    ok(
        &kc,
        &cache,
        &[
            "create",
            "configmap",
            "settings",
            "-n",
            "shop",
            "--from-literal=tier=gold",
            "--from-literal=zone=fra",
        ],
    )
    .await;
    let cm = ok(
        &kc,
        &cache,
        &[
            "get",
            "configmap",
            "settings",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.tier}/{.data.zone}",
        ],
    )
    .await;
    assert_eq!(cm, "gold/fra");

    let out = ok(
        &kc,
        &cache,
        &[
            "create",
            "deployment",
            "web",
            "-n",
            "shop",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ],
    )
    .await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let yaml = ok(
        &kc,
        &cache,
        &["get", "deployment", "web", "-n", "shop", "-o", "yaml"],
    )
    .await;
    let d: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(d["spec"]["replicas"], 2, "{yaml}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{yaml}");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27", "{yaml}");
    assert_eq!(container["ports"][0]["containerPort"], 80, "{yaml}");
    assert!(
        container.get("stdin").is_none(),
        "Go zero values stay out: {yaml}"
    );
    // Zero replicas is a value (a pointer field in Go), not "unset".
    ok(
        &kc,
        &cache,
        &[
            "create",
            "deployment",
            "idle",
            "-n",
            "shop",
            "--image=nginx:1.27",
            "--replicas=0",
        ],
    )
    .await;
    let idle = ok(
        &kc,
        &cache,
        &[
            "get",
            "deployment",
            "idle",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    )
    .await;
    assert_eq!(idle, "0");

    let out = ok(
        &kc,
        &cache,
        &[
            "expose",
            "deployment",
            "web",
            "-n",
            "shop",
            "--port=8080",
            "--target-port=80",
        ],
    )
    .await;
    assert!(out.contains("service/web exposed"), "{out}");
    let svc = ok(
        &kc,
        &cache,
        &[
            "get",
            "service",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.ports[0].port}>{.spec.ports[0].targetPort} {.spec.selector.app}",
        ],
    )
    .await;
    assert_eq!(svc, "8080>80 web");

    // auth can-i: the harness authorizes everything, and says so.
    let out = ok(
        &kc,
        &cache,
        &["auth", "can-i", "create", "secrets", "-n", "shop"],
    )
    .await;
    assert_eq!(out.trim(), "yes");
    let out = ok(
        &kc,
        &cache,
        &[
            "auth",
            "can-i",
            "patch",
            "modeldeployments.skybridge.io/status",
        ],
    )
    .await;
    assert_eq!(out.trim(), "yes");

    // An operator Event, written as kube's Recorder writes it (events.k8s.io/v1).
    let md = dir.join("md.yaml");
    std::fs::write(&md, MODEL_DEPLOYMENT).unwrap();
    ok(&kc, &cache, &["apply", "-f", md.to_str().unwrap()]).await;
    let uid = ok(
        &kc,
        &cache,
        &[
            "get",
            "md",
            "ranker",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    )
    .await;
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "ranker.burst1", "namespace": "shop"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "skybridge.io/operator", "reportingInstance": "skybridge-0",
        "action": "Burst", "reason": "BurstStarted", "type": "Normal",
        "regarding": {"apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
            "name": "ranker", "namespace": "shop", "uid": uid},
        "note": "2 replicas of ranker to aws-euc1-l4-spot",
    });
    let a = http(
        "POST",
        &format!("{}/apis/events.k8s.io/v1/namespaces/shop/events", c.url()),
        Some("application/json"),
        &event.to_string(),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);
    // An Event about something else, which describe must not show.
    let other = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "shop"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "deployment-controller", "reportingInstance": "x",
        "action": "Scale", "reason": "ScalingReplicaSet", "type": "Normal",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "shop"},
        "note": "scaled up web",
    });
    let a = http(
        "POST",
        &format!("{}/apis/events.k8s.io/v1/namespaces/shop/events", c.url()),
        Some("application/json"),
        &other.to_string(),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.body);

    let table = ok(&kc, &cache, &["get", "events", "-n", "shop"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains("BurstStarted"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("modeldeployment/ranker")
            && row.contains("2 replicas of ranker to aws-euc1-l4-spot"),
        "{table}"
    );
    let out = ok(
        &kc,
        &cache,
        &["events", "-n", "shop", "--for", "modeldeployment/ranker"],
    )
    .await;
    assert!(
        out.contains("BurstStarted") && out.contains("2 replicas of ranker"),
        "{out}"
    );
    assert!(!out.contains("ScalingReplicaSet"), "--for filters: {out}");
    let out = ok(&kc, &cache, &["describe", "md", "ranker", "-n", "shop"]).await;
    let events = out
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        events.contains("BurstStarted")
            && events.contains("skybridge.io/operator")
            && events.contains("2 replicas of ranker to aws-euc1-l4-spot"),
        "{out}"
    );
    assert!(!events.contains("ScalingReplicaSet"), "{out}");

    // A core Event written by a client of the core API is the same object under events.k8s.io.
    let core_event = dir.join("core-event.yaml");
    std::fs::write(
        &core_event,
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web.2\n  namespace: shop\ninvolvedObject:\n  kind: Deployment\n  name: web\n  namespace: shop\nreason: Pulled\nmessage: image pulled\ntype: Normal\ncount: 3\nsource:\n  component: kubelet\n  host: node-a\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:00:09Z\"\n",
    )
    .unwrap();
    ok(&kc, &cache, &["create", "-f", core_event.to_str().unwrap()]).await;
    let a = http(
        "GET",
        &format!(
            "{}/apis/events.k8s.io/v1/namespaces/shop/events/web.2",
            c.url()
        ),
        None,
        "",
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["apiVersion"], "events.k8s.io/v1");
    assert_eq!(a.body["note"], "image pulled");
    assert_eq!(a.body["regarding"]["name"], "web");
    assert_eq!(a.body["deprecatedCount"], 3);
    assert_eq!(a.body["deprecatedSource"]["host"], "node-a");
    assert_eq!(a.body["deprecatedLastTimestamp"], "2026-01-01T00:00:09Z");
    assert!(a.body.get("message").is_none(), "{}", a.body);
    let out = ok(
        &kc,
        &cache,
        &["delete", "events.events.k8s.io", "web.2", "-n", "shop"],
    )
    .await;
    assert!(out.contains("deleted"), "{out}");
    let o = kubectl(&kc, &cache, &["get", "event", "web.2", "-n", "shop"]).await;
    assert!(
        text(&o).contains("NotFound"),
        "one object, gone from both groups: {}",
        text(&o)
    );

    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A watch on core Events sees events.k8s.io writes, converted, with selectors on core fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_event_watch_is_a_view_of_events_k8s_io() {
    let c = Cluster::start(ClusterConfig::new("hub")).await.unwrap();
    let (code, mut events) = watch_events(&format!(
        "{}/api/v1/namespaces/default/events?watch=true&fieldSelector=involvedObject.name%3Dranker",
        c.url()
    ))
    .await;
    assert_eq!(code, 200);
    for (name, regarding) in [("other.1", "web"), ("ranker.1", "ranker")] {
        let e = json!({"metadata": {"name": name}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "skybridge.io/operator", "reportingInstance": "op",
            "action": "Burst", "reason": "BurstStarted", "type": "Normal",
            "regarding": {"kind": "ModelDeployment", "name": regarding, "namespace": "default"},
            "note": format!("about {regarding}")});
        let a = http(
            "POST",
            &format!(
                "{}/apis/events.k8s.io/v1/namespaces/default/events",
                c.url()
            ),
            Some("application/json"),
            &e.to_string(),
        )
        .await;
        assert_eq!(a.code, 201, "{}", a.body);
    }
    let ev = next_event(&mut events, 10)
        .await
        .expect("the watch goes on");
    assert_eq!(ev["type"], "ADDED", "{ev}");
    let obj = &ev["object"];
    assert_eq!(obj["apiVersion"], "v1", "{ev}");
    assert_eq!(
        obj["metadata"]["name"], "ranker.1",
        "only the selected Event: {ev}"
    );
    assert_eq!(obj["message"], "about ranker", "{ev}");
    assert_eq!(obj["involvedObject"]["kind"], "ModelDeployment", "{ev}");
    assert_eq!(obj["reportingComponent"], "skybridge.io/operator", "{ev}");
    assert!(obj.get("note").is_none(), "{ev}");
}
