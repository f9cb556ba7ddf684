//! Real demand for the e2e tests: a load generator that counts requests at a rate the test sets,
//! exposed in the Prometheus text format, and a real Prometheus (the Debian package that
//! `scripts/test` installs) scraping it every second. The operator reads demand from that
//! Prometheus exactly as in production, through its HTTP query API.

use super::eventually;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The counter the load generator exports, one series per deployment.
pub const REQUESTS_METRIC: &str = "shop_requests_total";

/// Requests per second over a few scrapes, per deployment: what a `BurstPolicy` queries.
pub const DEMAND_QUERY: &str = "sum(rate(shop_requests_total{deployment=\"$deployment\"}[4s]))";

#[derive(Default)]
struct Series {
    total: f64,
    rate: f64,
    since: Option<Instant>,
}

impl Series {
    /// Brings the count up to now at the current rate.
    fn advance(&mut self, now: Instant) {
        if let Some(since) = self.since {
            self.total += self.rate * now.duration_since(since).as_secs_f64();
        }
        self.since = Some(now);
    }
}

/// Counts requests per deployment at rates the test changes.
pub struct LoadGenerator {
    pub addr: SocketAddr,
    series: Arc<Mutex<BTreeMap<String, Series>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadGenerator {
    pub async fn start() -> Self {
        let series: Arc<Mutex<BTreeMap<String, Series>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("load generator binds");
        let addr = listener.local_addr().expect("bound");
        let app = {
            let series = series.clone();
            axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let series = series.clone();
                    async move { exposition(&series) }
                }),
            )
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, series, task }
    }

    /// From now on, `deployment` receives `rps` requests per second.
    pub fn set_rate(&self, deployment: &str, rps: f64) {
        let mut all = self.series.lock().unwrap();
        let series = all.entry(deployment.to_string()).or_default();
        series.advance(Instant::now());
        series.rate = rps;
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The counters as of now, each stamped with the time it was read. Without the stamp Prometheus
/// files a sample under the time its scrape started, and on a loaded machine the answer can
/// come a good part of a second later: consecutive samples then count uneven spans of requests
/// as one second each, and a steady rate reads higher or lower than it is (the likely reason a
/// loaded CI run once held 3 replicas for a steady 150 requests per second).
fn exposition(series: &Mutex<BTreeMap<String, Series>>) -> String {
    let mut all = series.lock().unwrap();
    let now = Instant::now();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let mut out = format!("# TYPE {REQUESTS_METRIC} counter\n");
    for (deployment, series) in all.iter_mut() {
        series.advance(now);
        out.push_str(&format!(
            "{REQUESTS_METRIC}{{namespace=\"{}\",deployment=\"{deployment}\"}} {} {stamp}\n",
            super::APP_NAMESPACE,
            series.total
        ));
    }
    out
}

/// A Prometheus server on loopback scraping `target` every second; stopped when dropped.
pub struct Prometheus {
    pub url: String,
    child: Child,
    _data: tempfile::TempDir,
}

impl Prometheus {
    pub async fn start(target: SocketAddr) -> Self {
        let binary = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let data = tempfile::tempdir().expect("temp dir");
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: loadgen\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("config written");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {binary}: {e}; install Prometheus (Debian package `prometheus`, \
                     which scripts/test installs) or set PROMETHEUS to its path"
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let prometheus = Self {
            url,
            child,
            _data: data,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually("Prometheus ready", || {
            let ready = ready.clone();
            async move {
                let response = reqwest::get(&ready).await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
        prometheus
    }

    /// The value of an instant query, once it has one.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A BurstPolicy reading `DEMAND_QUERY` from `prometheus`: 100 requests per second per replica,
/// short windows so that a test sees whole cycles in a minute or two.
pub fn policy_yaml(
    name: &str,
    prometheus: &str,
    target_per_replica: f64,
    extra_burst: &str,
) -> String {
    format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {{name: {name}}}
spec:
  metric:
    prometheusUrl: "{prometheus}"
    query: '{DEMAND_QUERY}'
    targetPerReplica: {target_per_replica}
    intervalSeconds: 5
  scaleUp: {{stabilizationWindowSeconds: 0, periodSeconds: 1}}
  scaleDown: {{stabilizationWindowSeconds: 5, periodSeconds: 1}}
  burst:
    enabled: true
    pools: [cloud-l4]
{extra_burst}
"#
    )
}
