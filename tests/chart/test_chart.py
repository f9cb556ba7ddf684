"""Checks of the Helm charts (rendered by a real Helm v4 engine, helm-python-sdk) and of the Argo
CD health checks (run by a real Lua 5.1 interpreter, lupa). Run by scripts/test:

    python3 -m unittest discover -s tests/chart -v
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import helm_python as helm
import yaml
from lupa import lua51

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "skybridge"
MEMBER = ROOT / "charts" / "skybridge-member"
GITOPS = ROOT / "docs" / "gitops"
NAMESPACE = "skybridge-system"

# Every optional feature on.
ALL_ON = {
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True},
    },
    "networkPolicy": {
        "enabled": True,
        "apiServers": {"cidrs": ["10.0.0.1/32", "203.0.113.10/32"]},
        "objectStores": {"cidrs": ["198.51.100.0/24"], "ports": [443, 9000]},
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "192.0.2.7/32"}}], "ports": [{"port": 8200}]}],
    },
    "podAnnotations": {"example.com/a": "b"},
    "image": {"fetchModelImage": "mirror.example.com/skybridge:0.1.0"},
}


def render(chart: Path, values: dict | None = None) -> list[dict]:
    """Every object the chart renders, parsed."""
    manifests = helm.Chart.load(str(chart)).render(
        values or {}, name="skybridge", namespace=NAMESPACE, is_install=True
    )
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_template"] = path
                objects.append(doc)
    return objects


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def granted(objects: list[dict], kinds=("ClusterRole", "Role")) -> set[tuple[str, str, str, str]]:
    """(role kind, apiGroup, resource, verb) for every rule."""
    out = set()
    for role in (o for o in objects if o["kind"] in kinds):
        for rule in role.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        out.add((role["kind"], group, resource, verb))
    return out


def metric_names() -> set[str]:
    """Series names the operator exports, from src/operator/kubernetes/metrics.rs (prefix skybridge_,
    `_total` on counters, `_bucket`/`_sum`/`_count` on histograms)."""
    source = (ROOT / "src" / "operator" / "kubernetes" / "metrics.rs").read_text()
    assert 'Registry::with_prefix("skybridge")' in source
    types = dict(re.findall(r"pub (\w+): (?:Family<\w+, )?(Counter|Gauge|Histogram)", source))
    names = set()
    for name, field in re.findall(
        r'registry\.register\(\s*"(\w+)",\s*"[^"]*",\s*metrics\.(\w+)\.clone\(\)', source
    ):
        base = f"skybridge_{name}"
        kind = types[field]
        if kind == "Counter":
            names.add(base + "_total")
        elif kind == "Histogram":
            names.update({base + "_bucket", base + "_sum", base + "_count"})
        else:
            names.add(base)
    assert len(names) >= 10, names
    return names


class OperatorChart(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.default = render(CHART)
        cls.all_on = render(CHART, ALL_ON)

    def test_lints_clean_with_default_and_all_features(self):
        for values in ({}, ALL_ON):
            report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
            errors = [m for m in report["messages"] if m["severity"] >= 2]
            self.assertEqual(report["errors"], [], report)
            self.assertEqual(errors, [], report)

    def test_optional_features_are_off_by_default_and_on_when_asked(self):
        kinds = {o["kind"] for o in self.default}
        for kind in ("ServiceMonitor", "PrometheusRule", "NetworkPolicy"):
            self.assertNotIn(kind, kinds)
            self.assertEqual(len(of_kind(self.all_on, kind)), 1, kind)
        for kind in ("Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                     "RoleBinding", "PodDisruptionBudget", "Service"):
            self.assertEqual(len(of_kind(self.default, kind)), 1, kind)

    def test_rbac_has_no_wildcards(self):
        for objects in (self.default, self.all_on):
            for kind, group, resource, verb in granted(objects):
                for field in (group, resource, verb):
                    self.assertNotIn("*", field, (kind, group, resource, verb))

    def test_secrets_and_leases_only_through_a_role_in_the_operator_namespace(self):
        for objects in (self.default, self.all_on):
            cluster_wide = granted(objects, ("ClusterRole",))
            for _, group, resource, _ in cluster_wide:
                self.assertNotIn(resource, ("secrets", "leases"), "cluster-wide " + resource)
            role = one(objects, "Role")
            self.assertEqual(role["metadata"]["namespace"], NAMESPACE)
            namespaced = granted(objects, ("Role",))
            self.assertIn(("Role", "", "secrets", "get"), namespaced)
            self.assertIn(("Role", "coordination.k8s.io", "leases", "create"), namespaced)
            # Read a named Secret; never list every Secret, never write one.
            secret_verbs = {v for _, _, r, v in namespaced if r == "secrets"}
            self.assertEqual(secret_verbs, {"get"})
            binding = one(objects, "RoleBinding")
            self.assertEqual(binding["metadata"]["namespace"], NAMESPACE)
            self.assertEqual(binding["roleRef"]["name"], role["metadata"]["name"])

    def test_rbac_grants_what_the_operator_calls(self):
        # Every Kubernetes call in src/operator (Api::<...> uses), as (group, resource, verb).
        needs = {
            ("skybridge.io", "modeldeployments", "list"),
            ("skybridge.io", "modeldeployments", "watch"),
            ("skybridge.io", "modeldeployments", "patch"),  # the skybridge.io/cleanup finalizer
            ("skybridge.io", "modeldeployments/status", "patch"),
            ("skybridge.io", "modeldeployments/finalizers", "update"),
            ("skybridge.io", "computepools", "list"),
            ("skybridge.io", "computepools", "watch"),
            ("skybridge.io", "computepools/status", "patch"),
            ("skybridge.io", "burstpolicies", "list"),
            ("skybridge.io", "burstpolicies", "watch"),
            ("", "nodes", "list"),
            ("", "pods", "list"),  # gpusFree: what the pods on a pool's Nodes request
            ("", "pods", "patch"),  # the serving label of pods drained off a doomed node
            ("", "events", "list"),  # cluster-autoscaler's NotTriggerScaleUp (elastic pools)
            ("apps", "deployments", "list"),
            ("apps", "deployments", "watch"),
            ("apps", "deployments", "create"),
            ("apps", "deployments", "patch"),
            ("apps", "deployments", "delete"),
            ("", "services", "list"),
            ("", "services", "create"),
            ("", "services", "patch"),
            ("", "services", "delete"),
            ("", "namespaces", "create"),
            ("", "namespaces", "patch"),
            ("events.k8s.io", "events", "create"),
            ("events.k8s.io", "events", "patch"),
            # Traffic (src/operator/traffic): routes in the home cluster, exports per pool.
            ("gateway.networking.k8s.io", "httproutes", "patch"),
            ("gateway.networking.k8s.io", "httproutes", "list"),
            ("gateway.networking.k8s.io", "httproutes", "delete"),
            ("gateway.networking.k8s.io", "grpcroutes", "patch"),
            ("gateway.networking.k8s.io", "grpcroutes", "list"),
            ("gateway.networking.k8s.io", "grpcroutes", "delete"),
            ("multicluster.x-k8s.io", "serviceexports", "patch"),
            ("multicluster.x-k8s.io", "serviceexports", "list"),
            ("multicluster.x-k8s.io", "serviceexports", "delete"),
        }
        have = {(g, r, v) for _, g, r, v in granted(self.default, ("ClusterRole",))}
        self.assertEqual(needs - have, set())
        events = {v for _, g, r, v in granted(self.default) if r == "events" and g == "events.k8s.io"}
        self.assertEqual(events, {"create", "patch"})
        # Core Events are only read: cluster-autoscaler's NotTriggerScaleUp on pending pods.
        core_events = {v for _, g, r, v in granted(self.default) if r == "events" and g == ""}
        self.assertEqual(core_events, {"list"})
        # Without local workloads, the operator only watches the Deployments it owns here.
        remote_only = render(CHART, {"rbac": {"localWorkloads": False}})
        have = {(g, r, v) for _, g, r, v in granted(remote_only, ("ClusterRole",))}
        self.assertNotIn(("apps", "deployments", "create"), have)
        self.assertNotIn(("", "namespaces", "create"), have)
        self.assertIn(("apps", "deployments", "watch"), have)

    def test_pod_is_hardened(self):
        for objects in (self.default, self.all_on):
            pod = one(objects, "Deployment")["spec"]["template"]["spec"]
            self.assertTrue(pod["securityContext"]["runAsNonRoot"])
            self.assertEqual(pod["securityContext"]["runAsUser"], 65532)
            self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
            for container in pod["containers"] + pod.get("initContainers", []):
                sc = container["securityContext"]
                self.assertTrue(sc["runAsNonRoot"])
                self.assertTrue(sc["readOnlyRootFilesystem"])
                self.assertIs(sc["allowPrivilegeEscalation"], False)
                self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
                self.assertNotIn("add", sc["capabilities"])
                self.assertEqual(sc["seccompProfile"]["type"], "RuntimeDefault")
            self.assertNotIn("hostNetwork", pod)

    def test_deployment_runs_the_operator_with_leader_election_and_probes(self):
        deployment = one(self.default, "Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 2)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        self.assertEqual(args[0], "run")
        self.assertIn("--leader-election=true", args)
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
        self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/livez")
        port = container["ports"][0]
        self.assertEqual(container["readinessProbe"]["httpGet"]["port"], port["name"])
        self.assertIn(f"--probe-addr=0.0.0.0:{port['containerPort']}", args)
        env = {e["name"]: e for e in container["env"]}
        self.assertEqual(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
                         "metadata.namespace")
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        self.assertEqual(env["SKYBRIDGE_IMAGE"]["value"], container["image"])
        pdb = one(self.default, "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"],
                         deployment["spec"]["selector"]["matchLabels"])
        mirrored = one(self.all_on, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual({e["name"]: e for e in mirrored["env"]}["SKYBRIDGE_IMAGE"]["value"],
                         "mirror.example.com/skybridge:0.1.0")

    def test_every_flag_the_chart_passes_exists_in_skybridge_run(self):
        source = (ROOT / "src" / "cli" / "run.rs").read_text()
        struct = source[source.index("pub struct RunArgs"):source.index("\n}\n", source.index("pub struct RunArgs"))]
        flags = {"--" + f.replace("_", "-") for f in re.findall(r"^\s+(\w+): ", struct, re.M)}
        self.assertIn("--probe-addr", flags)
        args = one(self.all_on, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        for arg in args[1:]:
            self.assertIn(arg.split("=")[0], flags, arg)
        # Flags that read the environment get it from the pod.
        for env in re.findall(r'env = "(\w+)"', struct):
            if env != "KUBECONFIG":
                self.assertIn(env, json.dumps(one(self.default, "Deployment")))

    def test_metrics_service_servicemonitor_and_alerts(self):
        service = one(self.all_on, "Service")
        monitor = one(self.all_on, "ServiceMonitor")
        self.assertEqual(monitor["spec"]["endpoints"][0]["port"], service["spec"]["ports"][0]["name"])
        self.assertEqual(monitor["spec"]["endpoints"][0]["path"], "/metrics")
        labels = service["metadata"]["labels"]
        self.assertEqual(labels | monitor["spec"]["selector"]["matchLabels"], labels)
        rules = [r for g in one(self.all_on, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
        alerts = {r["alert"]: r for r in rules}
        for required in ("SkybridgeReconcileErrors", "SkybridgePoolUnreachable",
                         "SkybridgeBudgetExhausted", "SkybridgeArtifactSyncFailing"):
            self.assertIn(required, alerts)
        exported = metric_names()
        for alert in rules:
            used = set(re.findall(r"\bskybridge_\w+", alert["expr"]))
            self.assertTrue(used, alert["alert"])
            self.assertEqual(used - exported, set(), f"{alert['alert']} uses unknown metrics")
            self.assertIn("runbook_url", alert["annotations"])
            anchor = alert["annotations"]["runbook_url"].split("#")[1]
            self.assertIn(anchor, runbook_anchors(), alert["alert"])

    def test_alert_expressions_parse_and_read_the_leader(self):
        """promtool (Debian package `prometheus`) checks every rule and evaluates three of them on
        series shaped like the operator's, a stale standby included. Skipped without promtool."""
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool not installed (Debian package prometheus)")
        rule = one(self.all_on, "PrometheusRule")
        exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "rules.yaml"
            rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
            check = subprocess.run([promtool, "check", "rules", str(rules)],
                                   capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
            leader_a = {"series": 'skybridge_leader{instance="a"}', "values": "1x20"}
            standby_b = {"series": 'skybridge_leader{instance="b"}', "values": "0x20"}
            tests = {
                "rule_files": [],
                "evaluation_interval": "1m",
                "tests": [
                    {   # the leader sees the pool down; a standby's stale 1 must not hide it
                        "interval": "1m",
                        "input_series": [
                            leader_a, standby_b,
                            {"series": 'skybridge_pool_reachable{pool="dc1-l4",cloud="private",instance="a"}', "values": "0x20"},
                            {"series": 'skybridge_pool_reachable{pool="dc1-l4",cloud="private",instance="b"}', "values": "1x20"},
                            {"series": 'skybridge_pool_reachable{pool="cloud-l4",cloud="public",instance="a"}', "values": "1x20"},
                        ],
                        "promql_expr_test": [{
                            "expr": exprs["SkybridgePoolUnreachable"], "eval_time": "10m",
                            "exp_samples": [{"labels": '{cloud="private", pool="dc1-l4"}', "value": 0}],
                        }],
                    },
                    {   # nobody scraped holds the lease
                        "interval": "1m",
                        "input_series": [{"series": 'skybridge_leader{instance="b"}', "values": "0x20"}],
                        "promql_expr_test": [{
                            "expr": exprs["SkybridgeNoLeader"], "eval_time": "10m",
                            "exp_samples": [{"labels": "{}", "value": 0}],
                        }],
                    },
                    {   # 0.1 errors/s of kind cluster
                        "interval": "1m",
                        "input_series": [{"series": 'skybridge_reconcile_errors_total{controller="modeldeployment",kind="cluster",instance="a"}', "values": "0+6x20"}],
                        "promql_expr_test": [{
                            "expr": exprs["SkybridgeReconcileErrors"], "eval_time": "10m",
                            "exp_samples": [{"labels": '{controller="modeldeployment", kind="cluster"}', "value": 0.1}],
                        }],
                    },
                ],
            }
            spec = Path(tmp) / "tests.yaml"
            spec.write_text(yaml.safe_dump(tests))
            run = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)

    def test_network_policy_allows_metrics_and_dns(self):
        policy = one(self.all_on, "NetworkPolicy")
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress", "Egress"])
        self.assertEqual(policy["spec"]["ingress"][0]["ports"][0]["port"], "http")
        self.assertEqual(policy["spec"]["egress"][0]["ports"][0]["port"], 53)

    def test_network_policy_limits_egress_to_dns_api_servers_stores_and_prometheus(self):
        egress = one(self.all_on, "NetworkPolicy")["spec"]["egress"]
        # No rule without a destination: an empty `to` would open egress to everything.
        for rule in egress:
            self.assertTrue(rule.get("to"), rule)
            self.assertTrue(rule.get("ports"), rule)

        def allowed(rule):
            cidrs = {p["ipBlock"]["cidr"] for p in rule["to"] if "ipBlock" in p}
            ports = {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
            return cidrs, ports

        dns = egress[0]
        self.assertEqual(allowed(dns)[1], {(53, "UDP"), (53, "TCP")})
        self.assertEqual(dns["to"][0]["podSelector"]["matchLabels"], {"k8s-app": "kube-dns"})
        by_cidr = {frozenset(allowed(r)[0]): allowed(r)[1] for r in egress[1:]}
        self.assertEqual(by_cidr[frozenset({"10.0.0.1/32", "203.0.113.10/32"})],
                         {(443, "TCP"), (6443, "TCP")})
        self.assertEqual(by_cidr[frozenset({"198.51.100.0/24"})], {(443, "TCP"), (9000, "TCP")})
        self.assertEqual(by_cidr[frozenset({"192.0.2.7/32"})], {(8200, "TCP")})
        prometheus = [r for r in egress if r["to"][0].get("namespaceSelector", {}).get(
            "matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"]
        self.assertEqual(len(prometheus), 1)
        self.assertEqual(allowed(prometheus[0])[1], {(9090, "TCP")})
        # Exactly DNS, API servers, stores, Prometheus and the one extra rule.
        self.assertEqual(len(egress), 5)

    def test_network_policy_egress_choices(self):
        # Egress restricted with no API server to reach: the operator could do nothing, so the
        # install fails with a message rather than rendering a policy that cuts it off.
        chart = helm.Chart.load(str(CHART))
        with self.assertRaises(helm.HelmError) as failed:
            chart.render({"networkPolicy": {"enabled": True}}, name="s", namespace=NAMESPACE)
        self.assertIn("apiServers", str(failed.exception))
        # Explicitly unrestricted egress: ingress only.
        open_egress = render(CHART, {"networkPolicy": {"enabled": True, "restrictEgress": False}})
        policy = one(open_egress, "NetworkPolicy")
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress"])
        self.assertNotIn("egress", policy["spec"])
        # Destinations without CIDRs or peers get no rule (an empty `to` would allow all).
        minimal = render(CHART, {"networkPolicy": {
            "enabled": True, "apiServers": {"cidrs": ["10.0.0.1/32"]}, "prometheus": {"peers": []}}})
        egress = one(minimal, "NetworkPolicy")["spec"]["egress"]
        self.assertEqual(len(egress), 2, egress)
        for bad in ({"networkPolicy": {"apiServers": {"cidrs": ["not-a-cidr"]}}},
                    {"networkPolicy": {"apiServers": {"ports": [0]}}},
                    {"networkPolicy": {"egress": []}},  # the old key: a typo must not be ignored
                    {"networkPolicy": {"prometheus": {"cidr": "10.0.0.0/8"}}}):
            with self.subTest(values=bad):
                with self.assertRaises(helm.HelmValuesError):
                    chart.render(bad, name="skybridge", namespace=NAMESPACE)

    def test_chart_crds_are_the_generated_ones(self):
        generated = (ROOT / "crds" / "skybridge.yaml").read_text()
        in_chart = (CHART / "crds" / "skybridge.yaml").read_text()
        self.assertEqual(in_chart, generated,
                         "charts/skybridge/crds is stale: cp crds/skybridge.yaml charts/skybridge/crds/")
        loaded = helm.Chart.load(str(CHART)).crds
        self.assertEqual(len(loaded), 1)
        kinds = sorted(d["spec"]["names"]["kind"] for d in yaml.safe_load_all(in_chart) if d)
        self.assertEqual(kinds, ["BurstPolicy", "ComputePool", "ModelDeployment"])

    def test_bad_values_fail_at_install(self):
        chart = helm.Chart.load(str(CHART))
        for bad in (
            {"replicaCount": "two"},
            {"replicaCount": 0},
            {"replicas": 2},  # unknown key: a typo must not be ignored
            {"operator": {"logFormat": "xml"}},
            {"operator": {"port": 80}},
            {"operator": {"periodSeconds": "15s"}},
            {"image": {"pullPolicy": "Sometimes"}},
            {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
            {"rbac": {"create": True, "clusterAdmin": True}},
        ):
            with self.subTest(values=bad):
                with self.assertRaises(helm.HelmValuesError):
                    chart.render(bad, name="skybridge", namespace=NAMESPACE)
                report = helm.lint(str(CHART), bad)
                self.assertTrue(report["errors"], report)
        # Schema-valid but contradictory: two writers without leader election.
        with self.assertRaises(helm.HelmError):
            chart.render({"operator": {"leaderElection": False}}, name="s", namespace=NAMESPACE)
        single = render(CHART, {"replicaCount": 1, "operator": {"leaderElection": False}})
        self.assertIn("--leader-election=false",
                      one(single, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


def runbook_anchors() -> set[str]:
    return anchors(ROOT / "docs" / "operations.md")


class Docs(unittest.TestCase):
    def test_relative_links_and_anchors_resolve(self):
        files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
        self.assertGreater(len(files), 8)
        for md in files:
            text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)
            text = re.sub(r"`[^`\n]*`", "", text)  # code spans: patterns, not links
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"^[a-z]+:", target):
                    continue
                path, _, anchor = target.partition("#")
                resolved = (md.parent / path).resolve() if path else md
                with self.subTest(file=md.name, link=target):
                    self.assertTrue(resolved.exists(), f"{md}: {target}")
                    if anchor and resolved.suffix == ".md":
                        self.assertIn(anchor, anchors(resolved))


class MemberChart(unittest.TestCase):
    def test_lints_and_grants_least_privilege(self):
        for values in ({}, {"storeCredentials": True, "tokenSecret": True}):
            report = helm.lint(str(MEMBER), values, strict=True)
            self.assertEqual(report["errors"], [], report)
            objects = render(MEMBER, values)
            for kind, group, resource, verb in granted(objects):
                for field in (group, resource, verb):
                    self.assertNotIn("*", field)
            have = {(g, r, v) for _, g, r, v in granted(objects)}
            for need in (("", "nodes", "list"), ("", "pods", "list"), ("", "pods", "patch"),
                         ("", "events", "list"),
                         ("apps", "deployments", "patch"),
                         ("apps", "deployments", "list"), ("apps", "deployments", "delete"),
                         ("apps", "deployments", "watch"),
                         ("", "services", "patch"), ("", "services", "delete"),
                         # The operator watches its children there, to find orphans by index.
                         ("", "services", "list"), ("", "services", "watch"),
                         ("", "namespaces", "create"),
                         ("multicluster.x-k8s.io", "serviceexports", "patch"),
                         ("multicluster.x-k8s.io", "serviceexports", "delete"),
                         ("gateway.networking.k8s.io", "httproutes", "patch"),
                         ("gateway.networking.k8s.io", "grpcroutes", "patch")):
                self.assertIn(need, have)
            self.assertEqual(("", "secrets", "create") in have, values.get("storeCredentials", False))
            for forbidden in ("pods/exec", "clusterroles", "roles", "rolebindings", "nodes/proxy"):
                self.assertFalse([h for h in have if h[1] == forbidden])
            node_verbs = {v for g, r, v in have if r == "nodes"}
            self.assertEqual(node_verbs, {"get", "list"})
            self.assertEqual(len(of_kind(objects, "Secret")), 1 if values.get("tokenSecret") else 0)
        with self.assertRaises(helm.HelmValuesError):
            helm.Chart.load(str(MEMBER)).render({"clusterAdmin": True}, name="m", namespace="m")


    def test_no_long_lived_token_unless_asked(self):
        self.assertEqual(of_kind(render(MEMBER), "Secret"), [])
        secret = one(render(MEMBER, {"tokenSecret": True}), "Secret")
        self.assertEqual(secret["type"], "kubernetes.io/service-account-token")
        self.assertEqual(secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
                         "skybridge-member")
        # The ServiceAccount itself never mounts its token into a pod.
        account = one(render(MEMBER), "ServiceAccount")
        self.assertIs(account["automountServiceAccountToken"], False)
        # The docs show the bound-token way, and the chart's notes point to it.
        guide = (ROOT / "docs" / "platform-guide.md").read_text()
        self.assertIn("kubectl --context $CTX -n $NS create token skybridge-member --duration", guide)


class Image(unittest.TestCase):
    def test_dockerfile_builds_one_non_root_image_for_operator_and_init_container(self):
        dockerfile = (ROOT / "Dockerfile").read_text()
        stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
        self.assertEqual(len(stages), 2, stages)
        self.assertIn("distroless", stages[-1])
        self.assertIn("cargo build --profile image --locked --bin skybridge", dockerfile)
        final = dockerfile[dockerfile.rindex("FROM "):]
        self.assertIn("USER 65532:65532", final)
        self.assertIn('ENTRYPOINT ["/usr/local/bin/skybridge"]', final)
        # The init container the operator builds runs `fetch-model` from the same image.
        workloads = (ROOT / "src" / "operator" / "deployment" / "build.rs").read_text()
        self.assertIn('"fetch-model".to_string()', workloads)
        ignored = (ROOT / ".dockerignore").read_text().split()
        for needed in ("src", "benches", "harness", "Cargo.toml", "Cargo.lock"):
            self.assertNotIn(needed, ignored)


# ---- Argo CD health checks -------------------------------------------------------------------


def condition(type_, status, reason, message="", generation=3):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": "2026-11-28T10:00:00Z"}


def md(conditions=None, generation=3, observed=3, status=True):
    obj = {"apiVersion": "skybridge.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": "ctr-ranker", "namespace": "recsys", "generation": generation}}
    if status:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions or [],
                         "readyReplicas": 4, "desiredReplicas": 4, "costPerHour": 1.5}
    return obj


# Condition sets as src/operator/deployment/status.rs writes them.
MD_READY = [
    condition("Ready", "True", "Ready", "4/4 replicas ready"),
    condition("Reconciling", "False", "Reconciled", "observed state matches the spec"),
    condition("Stalled", "False", "Valid", "the spec is valid"),
    condition("Placed", "True", "AllReplicasPlaced", "4 replicas placed"),
    condition("Bursting", "True", "PublicReplicas", "2 replicas on public pools: cloud-l4=2"),
    condition("Degraded", "False", "AllReplicasPlaced", "every desired replica has a pool"),
]
MD_PROGRESSING = [
    condition("Ready", "False", "Progressing", "1/4 replicas ready"),
    condition("Reconciling", "True", "Progressing", "1/4 replicas ready"),
    condition("Stalled", "False", "Valid", "the spec is valid"),
    condition("Placed", "True", "AllReplicasPlaced", "4 replicas placed"),
    condition("Bursting", "False", "PrivateOnly", "every replica runs on private pools"),
    condition("Degraded", "False", "AllReplicasPlaced", "every desired replica has a pool"),
]
MD_STALLED = [
    condition("Ready", "False", "InvalidSpec", "spec.components[0].burstPolicy: no such policy"),
    condition("Reconciling", "False", "InvalidSpec", "waiting for the spec to change"),
    condition("Stalled", "True", "InvalidSpec", "spec.components[0].burstPolicy: no such policy"),
]
MD_SHORTAGE = [
    condition("Ready", "False", "InsufficientCapacity", "ranker: 2 of 6 replicas unplaced (sensitive: private pools only)"),
    condition("Reconciling", "True", "InsufficientCapacity", "ranker: 2 of 6 replicas unplaced"),
    condition("Stalled", "False", "Valid", "the spec is valid"),
    condition("Placed", "False", "InsufficientCapacity", "ranker: 2 of 6 replicas unplaced"),
    condition("Bursting", "False", "PrivateOnly", "every replica runs on private pools"),
    condition("Degraded", "True", "InsufficientCapacity", "ranker: 2 of 6 replicas unplaced (sensitive: private pools only)"),
]


def pool(conditions=None, generation=1, observed=1, status=True):
    obj = {"apiVersion": "skybridge.io/v1alpha1", "kind": "ComputePool",
           "metadata": {"name": "dc1-l4", "generation": generation}}
    if status:
        obj["status"] = {"observedGeneration": observed, "conditions": conditions or []}
    return obj


POOL_READY = [
    condition("Reachable", "True", "ProbeSucceeded", "the cluster answers", 1),
    condition("Ready", "True", "NodesReady", "2 of 2 matching nodes ready, 16 GPUs allocatable", 1),
]
POOL_UNREACHABLE = [
    condition("Reachable", "False", "ProbeFailed", "no answer within 5s", 1),
    condition("Ready", "False", "Unreachable", "the pool's cluster does not answer: no answer within 5s", 1),
]
POOL_NO_NODES = [
    condition("Reachable", "True", "ProbeSucceeded", "the cluster answers", 1),
    condition("Ready", "False", "NoReadyNodes", "0 of 2 matching nodes ready, 0 GPUs allocatable", 1),
]


def health(script: str, obj: dict) -> dict:
    """Runs an Argo CD health script as Argo CD does: `obj` global, the script returns a table."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


class ArgoHealth(unittest.TestCase):
    md_script = (GITOPS / "modeldeployment-health.lua").read_text()
    pool_script = (GITOPS / "computepool-health.lua").read_text()

    def assertHealth(self, script, obj, status, message_part=""):
        result = health(script, obj)
        self.assertEqual(result["status"], status, result)
        self.assertIn(message_part, result["message"])

    def test_model_deployment(self):
        s = self.md_script
        self.assertHealth(s, md(status=False), "Progressing", "Waiting")
        self.assertHealth(s, md([]), "Progressing", "Waiting")
        self.assertHealth(s, md(MD_READY), "Healthy", "4/4 replicas ready")
        self.assertHealth(s, md(MD_PROGRESSING), "Progressing", "1/4")
        self.assertHealth(s, md(MD_STALLED), "Degraded", "InvalidSpec")
        self.assertHealth(s, md(MD_SHORTAGE), "Degraded", "sensitive")
        # A status about an older spec says nothing about the current one.
        self.assertHealth(s, md(MD_READY, generation=4, observed=3), "Progressing", "generation 4")
        self.assertHealth(s, md(MD_STALLED, generation=4, observed=3), "Progressing")
        self.assertHealth(s, md(MD_READY, observed=None), "Progressing")
        self.assertHealth(s, md([condition("Bursting", "False", "PrivateOnly")]), "Unknown")
        unknown = [condition("Ready", "Unknown", "Probing")]
        self.assertHealth(s, md(unknown), "Progressing", "Probing")

    def test_compute_pool(self):
        s = self.pool_script
        self.assertHealth(s, pool(status=False), "Progressing", "Waiting")
        self.assertHealth(s, pool(POOL_READY), "Healthy", "16 GPUs")
        self.assertHealth(s, pool(POOL_UNREACHABLE), "Degraded", "ProbeFailed")
        self.assertHealth(s, pool(POOL_NO_NODES), "Degraded", "NoReadyNodes")
        self.assertHealth(s, pool(POOL_READY, generation=2, observed=1), "Progressing", "generation 2")
        self.assertHealth(s, pool([condition("Reachable", "True", "ProbeSucceeded")]), "Unknown")

    def test_scripts_read_the_conditions_the_operator_writes(self):
        written = set()
        for source in ("deployment/status.rs", "pool/mod.rs"):
            text = (ROOT / "src" / "operator" / source).read_text()
            written |= set(re.findall(r'Decided::new\(\s*"(\w+)"', text))
        for script, types in ((self.md_script, {"Ready", "Reconciling", "Stalled", "Degraded"}),
                              (self.pool_script, {"Ready", "Reachable"})):
            read = set(re.findall(r'find\(conditions, "(\w+)"\)', script))
            self.assertTrue(types <= read, read)
            self.assertTrue(types <= written, written)

    def test_argocd_cm_snippet_carries_the_scripts(self):
        cm = yaml.safe_load((GITOPS / "argocd-cm.yaml").read_text())
        self.assertEqual(cm["data"]["resource.customizations.health.skybridge.io_ModelDeployment"],
                         self.md_script)
        self.assertEqual(cm["data"]["resource.customizations.health.skybridge.io_ComputePool"],
                         self.pool_script)


if __name__ == "__main__":
    unittest.main()
