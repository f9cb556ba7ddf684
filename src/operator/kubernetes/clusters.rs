//! Clients for the clusters pools live in: the operator's own, plus one per kubeconfig Secret,
//! cached and rebuilt when the Secret changes, each behind a request-rate limit.

use crate::api::{ComputePool, ModelDeployment, SecretKeyRef};
use crate::operator::error::{Error, Result};
use crate::operator::kubernetes::children_watch::ObservedChildren;
use crate::operator::kubernetes::names::DEPLOYMENT_MANAGER as FIELD_MANAGER;
use crate::operator::kubernetes::retry::idempotent;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Config, ResourceExt};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::AbortHandle;

/// Key under which a kubeconfig Secret holds the kubeconfig when the reference names none.
pub const DEFAULT_KUBECONFIG_KEY: &str = "kubeconfig";

/// How long a remote cluster may take to answer one request (from its last byte sent to the
/// next byte received, and in all with `bounded`) before it counts as not answering. Well below
/// the default 15 s period, so that a hung cluster delays a reconcile by less than a period.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long establishing a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Watches end on the server after this long and are resumed; their reads time out a little
/// later, so that a watch on a cluster that stopped answering (or its list) is retried.
const WATCH_SECONDS: u32 = 60;
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(90);
/// Requests one cluster client sends at once (through `send`); the others wait their turn.
/// Over HTTP/1.1 each request in flight holds a connection of its own, so with the idle bound
/// of the pool (`MAX_IDLE_CONNECTIONS`) this bounds the connections a flood of applies opens.
/// A loopback API server answers a handful at a time anyway: the bound costs no speed.
pub const MAX_IN_FLIGHT: usize = 64;

/// `request`, failed as a transport error if it takes longer than `REQUEST_TIMEOUT` in all
/// (retries included): one cluster that does not answer never holds a reconcile longer.
pub async fn bounded<T>(request: impl Future<Output = kube::Result<T>>) -> kube::Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
        )))),
    }
}

/// Whether an error says the cluster could not be reached or did not answer (as opposed to an
/// answer that refused the request).
pub fn unreachable_error(error: &kube::Error) -> bool {
    matches!(
        error,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_)
    )
}

/// A client for one cluster, with the identity it was built from.
#[derive(Clone)]
pub struct ClusterClient {
    /// `local`, or `namespace/secret@resourceVersion` of the kubeconfig Secret.
    pub id: String,
    /// For single requests: each has a deadline (remote clusters).
    pub client: Client,
    limiter: Arc<RateLimiter>,
    /// When a request last found the cluster unreachable, and why; cleared by one it answers.
    down: Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>,
    /// The children there as their watch sees them (remote clusters with a watch only).
    pub observed: Option<Arc<ObservedChildren>>,
    /// Namespaces known to exist there (see `ensure_namespace`).
    namespaces: Arc<tokio::sync::Mutex<HashSet<String>>>,
    /// Turns to send a request (see `MAX_IN_FLIGHT`).
    in_flight: Arc<Semaphore>,
}

impl ClusterClient {
    /// Waits for the cluster's rate limit, then hands out the client.
    pub async fn client(&self) -> Client {
        self.limiter.acquire().await;
        self.client.clone()
    }

    /// Whether this is the operator's own cluster (children there get owner references).
    pub fn is_local(&self) -> bool {
        self.id == "local"
    }

    /// Sends one request (with its retries): on a remote cluster within `REQUEST_TIMEOUT`,
    /// noting whether the cluster answered. Within `REQUEST_TIMEOUT` of a request that found the
    /// cluster unreachable, a request fails at once with that cause instead of being sent:
    /// requests already on their way to a cluster that stopped answering (reconciles started
    /// before it did, waiting on one another for a namespace) do not each wait a deadline.
    pub async fn send<T>(&self, request: impl Future<Output = kube::Result<T>>) -> kube::Result<T> {
        // Never closed. Waiting for a turn is not part of the request's deadline.
        let _turn = self.in_flight.acquire().await;
        if self.is_local() {
            return request.await;
        }
        // Checked once it is this request's turn: those queued behind a request that found the
        // cluster unreachable fail at once rather than each waiting a deadline.
        if let Some(why) = self.down_within(REQUEST_TIMEOUT) {
            return Err(kube::Error::Service(Box::new(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("not sent: the cluster was found unreachable a moment ago ({why})"),
            ))));
        }
        let result = bounded(request).await;
        self.note(&result);
        result
    }

    /// Records what a request found: a transport error marks the cluster down (as of now), any
    /// answer marks it up.
    pub fn note<T>(&self, result: &kube::Result<T>) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(err) if unreachable_error(err) => {
                *down = Some((std::time::Instant::now(), err.to_string()));
            }
            _ => *down = None,
        }
    }

    /// Why the cluster counts as unreachable, if a request found it so less than `hold` ago:
    /// within that time reconciles send it nothing (each request would wait for its deadline);
    /// after it, the next request tries again.
    pub fn down_within(&self, hold: Duration) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        down.as_ref()
            .filter(|(at, _)| at.elapsed() < hold)
            .map(|(_, why)| why.clone())
    }

    /// Makes sure `namespace` exists there, creating it if missing; once per client unless
    /// `gone` (an apply into it found it missing). The first applies to a new cluster come in
    /// a burst: without this, each of them failed on the missing namespace and created it
    /// again. Concurrent callers wait for the first.
    async fn ensure_namespace(&self, namespace: &str, gone: bool) -> kube::Result<()> {
        let mut known = self.namespaces.lock().await;
        if !gone && known.contains(namespace) {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client().await);
        let exists = !gone
            && match self.send(idempotent(|| api.get_opt(namespace))).await {
                Ok(found) => found.is_some(),
                // May write into it but not read it: assume it is there, as an apply would;
                // one that finds it missing comes back with `gone`.
                Err(kube::Error::Api(status)) if status.code == 403 => true,
                Err(err) => return Err(err),
            };
        if !exists {
            let object = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace},
            });
            let (params, patch) = (PatchParams::apply(FIELD_MANAGER), Patch::Apply(&object));
            self.send(idempotent(|| api.patch(namespace, &params, &patch)))
                .await?;
        }
        known.insert(namespace.to_string());
        Ok(())
    }

    /// `apply` into `namespace`, which is made sure of first, and created again (once) if the
    /// apply finds it gone.
    pub async fn in_namespace<T, F, Fut>(&self, namespace: &str, apply: F) -> kube::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = kube::Result<T>>,
    {
        self.ensure_namespace(namespace, false).await?;
        match apply().await {
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.ensure_namespace(namespace, true).await?;
                apply().await
            }
            other => other,
        }
    }
}

/// A token bucket refilled continuously: at most `per_second` requests a second, bursts up to
/// one second's worth.
struct RateLimiter {
    tokens: Semaphore,
    per_second: u32,
}

impl RateLimiter {
    fn new(per_second: u32) -> Arc<Self> {
        let limiter = Arc::new(Self {
            tokens: Semaphore::new(per_second as usize),
            per_second,
        });
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while let Some(limiter) = weak.upgrade() {
                let room = (limiter.per_second as usize)
                    .saturating_sub(limiter.tokens.available_permits());
                limiter
                    .tokens
                    .add_permits(room.min((limiter.per_second as usize).div_ceil(10)));
                drop(limiter);
                tick.tick().await;
            }
        });
        limiter
    }

    async fn acquire(&self) {
        if let Ok(permit) = self.tokens.acquire().await {
            permit.forget();
        }
    }
}

/// A remote cluster's client and the watch on the children there, which ends with it.
struct Remote {
    cluster: ClusterClient,
    /// When the Secret was last read: within `SECRET_RECHECK` the client is used as is.
    checked: std::time::Instant,
    _children: Option<AbortOnDrop>,
}

/// How often a kubeconfig Secret is re-read to notice rotated credentials. Reading it on every
/// use would add a request to the operator's own cluster per remote request.
const SECRET_RECHECK: Duration = Duration::from_secs(5);

/// Every cluster client the operator uses.
pub struct Clusters {
    local: ClusterClient,
    operator_namespace: String,
    per_second: u32,
    remote: Mutex<HashMap<String, Remote>>,
    /// Where the children watches of remote clusters send the deployments to reconcile.
    child_triggers: Option<UnboundedSender<ObjectRef<ModelDeployment>>>,
}

impl Clusters {
    pub fn new(local: Client, operator_namespace: String, per_second: u32) -> Self {
        Self {
            local: ClusterClient {
                id: "local".into(),
                client: local,
                limiter: RateLimiter::new(per_second),
                down: Default::default(),
                observed: None,
                namespaces: Default::default(),
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            },
            operator_namespace,
            per_second,
            remote: Mutex::new(HashMap::new()),
            child_triggers: None,
        }
    }

    /// Watches the children in every remote cluster a client is built for, and sends their
    /// deployments to `triggers` when their readiness changes.
    pub fn with_child_triggers(
        mut self,
        triggers: UnboundedSender<ObjectRef<ModelDeployment>>,
    ) -> Self {
        self.child_triggers = Some(triggers);
        self
    }

    pub fn local(&self) -> &ClusterClient {
        &self.local
    }

    pub fn operator_namespace(&self) -> &str {
        &self.operator_namespace
    }

    /// The client for `pool`'s cluster. A remote client is rebuilt when its Secret's
    /// resourceVersion changes, so rotated credentials take effect without a restart.
    pub async fn for_pool(&self, pool: &ComputePool) -> Result<ClusterClient> {
        let Some(secret_ref) = pool
            .spec
            .cluster
            .as_ref()
            .and_then(|c| c.kubeconfig_secret_ref.as_ref())
        else {
            return Ok(self.local.clone());
        };
        let namespace = secret_ref
            .namespace
            .clone()
            .unwrap_or_else(|| self.operator_namespace.clone());
        let secret_name = format!("{namespace}/{}", secret_ref.name);
        if let Some(known) = self
            .remote
            .lock()
            .await
            .get(&secret_name)
            .filter(|r| r.checked.elapsed() < SECRET_RECHECK)
        {
            return Ok(known.cluster.clone());
        }
        let secrets: Api<Secret> = Api::namespaced(self.local.client().await, &namespace);
        let secret =
            crate::operator::kubernetes::retry::idempotent(|| secrets.get(&secret_ref.name))
                .await
                .map_err(|source| Error::KubeconfigRead {
                    secret: secret_name.clone(),
                    source,
                })?;
        let id = format!(
            "{secret_name}@{}",
            secret.resource_version().unwrap_or_default()
        );
        let mut remote = self.remote.lock().await;
        if let Some(known) = remote.get_mut(&secret_name).filter(|r| r.cluster.id == id) {
            known.checked = std::time::Instant::now();
            return Ok(known.cluster.clone());
        }
        let (client, watch_client) = clients_from_secret(&secret, secret_ref, &secret_name).await?;
        let observed = self
            .child_triggers
            .as_ref()
            .map(|_| Arc::new(ObservedChildren::default()));
        let children =
            self.child_triggers
                .clone()
                .zip(observed.clone())
                .map(|(triggers, observed)| {
                    AbortOnDrop(
                        crate::operator::kubernetes::children_watch::spawn(
                            watch_client.clone(),
                            WATCH_SECONDS,
                            observed,
                            triggers,
                        )
                        .abort_handle(),
                    )
                });
        let cluster = ClusterClient {
            id,
            client,
            limiter: RateLimiter::new(self.per_second),
            down: Default::default(),
            observed,
            namespaces: Default::default(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        };
        // Replacing an entry drops the old watch with the old credentials.
        remote.insert(
            secret_name,
            Remote {
                cluster: cluster.clone(),
                checked: std::time::Instant::now(),
                _children: children,
            },
        );
        Ok(cluster)
    }
}

/// Two clients of the cluster a kubeconfig Secret names: one for single requests, one for
/// watches (whose reads wait up to the watch's own timeout).
async fn clients_from_secret(
    secret: &Secret,
    secret_ref: &SecretKeyRef,
    name: &str,
) -> Result<(Client, Client)> {
    let key = secret_ref.key.as_deref().unwrap_or(DEFAULT_KUBECONFIG_KEY);
    let bad = |message: String| Error::Kubeconfig {
        secret: name.to_string(),
        message,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| bad(format!("has no key {key:?}")))?;
    let text =
        std::str::from_utf8(&bytes.0).map_err(|e| bad(format!("key {key:?} is not UTF-8: {e}")))?;
    let kubeconfig = Kubeconfig::from_yaml(text)
        .map_err(|e| bad(format!("key {key:?} is not a kubeconfig: {e}")))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let build = |read_timeout: Duration| {
        pooled_client(
            with_deadlines(config.clone(), read_timeout),
            MAX_IDLE_CONNECTIONS,
        )
        .map_err(|e| bad(e.to_string()))
    };
    Ok((build(REQUEST_TIMEOUT)?, build(WATCH_READ_TIMEOUT)?))
}

/// Idle connections a cluster client keeps for reuse; more are closed as they come back from a
/// request. kube's own client keeps every connection it opened for 90 s, and on the operator's
/// one thread a connection goes back to its pool only some scheduling rounds after its answer
/// was read: in a flood of applies most requests found none idle and opened another (about 600
/// to one member cluster in the operator bench, each with its buffers, about 30 KB of resident
/// memory). See docs/benchmarks.md.
pub const MAX_IDLE_CONNECTIONS: usize = 16;

/// A client as kube builds it from `config` (its TLS, deadlines, base URI, retries of server
/// errors, authentication and extra headers), over a connection pool that keeps at most
/// `max_idle` idle connections. Through a proxy, kube's own builder serves (pool unbounded).
/// Unlike kube's, it opens no tracing span per request.
pub fn pooled_client(config: Config, max_idle: usize) -> kube::Result<Client> {
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let pool: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(max_idle)
            .build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(pool);
    Ok(kube::client::ClientBuilder::new(service, config.default_namespace).build())
}

/// A remote cluster that stops answering must fail fast, so its pool is marked unreachable and
/// its replicas move, instead of hanging a reconcile: every connection, write and read has a
/// deadline. The read timeout counts from the request, not from when a pooled connection went
/// idle.
fn with_deadlines(mut config: Config, read_timeout: Duration) -> Config {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(read_timeout);
    config.reset_reader_on_write = true;
    config
}

/// Aborts a task when its owner goes: a task spawned outside `run`'s set when `run` ends or is
/// dropped, a cluster's children watch when its client is replaced.
pub struct AbortOnDrop(pub AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A remote cluster's client whose `send` lets `bound` requests through at once. Nothing
    /// here connects anywhere: the requests sent are futures of the test's own.
    fn remote(bound: usize) -> ClusterClient {
        let config = Config::new("http://127.0.0.1:9".parse().expect("a valid URL"));
        ClusterClient {
            id: "skybridge-system/private@1".into(),
            client: Client::try_from(config).expect("a client"),
            limiter: RateLimiter::new(1000),
            down: Default::default(),
            observed: None,
            namespaces: Default::default(),
            in_flight: Arc::new(Semaphore::new(bound)),
        }
    }

    /// An HTTP server on loopback that answers every request after a moment and counts the
    /// connections it accepted and those still open.
    async fn counting_server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counts = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counts.0.fetch_add(1, Ordering::SeqCst);
                counts.1.fetch_add(1, Ordering::SeqCst);
                let open = counts.1.clone();
                tokio::spawn(async move {
                    let answer = hyper::service::service_fn(|_| async {
                        // Pending a little, so that the client's requests overlap.
                        tokio::task::yield_now().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), answer)
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, accepted, open)
    }

    #[tokio::test]
    async fn a_burst_of_requests_leaves_at_most_the_idle_bound_of_connections_open() {
        let (url, accepted, open) = counting_server().await;
        let config = Config::new(url.parse().expect("a valid URL"));
        let client = pooled_client(config, 2).expect("a client");
        let requests = (0..30).map(|i| {
            let client = client.clone();
            async move {
                let request = hyper::Request::get(format!("/api/v1/namespaces/n{i}"))
                    .body(Vec::new())
                    .expect("a request");
                client.request_text(request).await
            }
        });
        let answers = futures::future::join_all(requests).await;
        assert!(
            answers
                .iter()
                .all(|a| a.as_deref().is_ok_and(|t| t == "{}"))
        );
        assert!(
            accepted.load(Ordering::SeqCst) > 2,
            "the burst opened more connections than the pool keeps"
        );
        // The connections beyond the bound are closed as they come back from their request.
        for _ in 0..1000 {
            if open.load(Ordering::SeqCst) <= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            open.load(Ordering::SeqCst) <= 2,
            "{open:?} connections still open"
        );
    }

    #[tokio::test]
    async fn a_cluster_has_at_most_its_bound_of_requests_in_flight() {
        let cluster = remote(3);
        let (current, most, done) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let requests = (0..20).map(|_| {
            cluster.send(async {
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Pending a while, as a request waiting for its answer is.
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                current.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<_, kube::Error>(())
            })
        });
        let results = futures::future::join_all(requests).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            done.load(Ordering::SeqCst),
            20,
            "every request is sent in turn"
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "never more than the bound at once"
        );
    }

    #[tokio::test]
    async fn requests_waiting_behind_one_that_found_the_cluster_unreachable_are_not_sent() {
        let cluster = remote(1);
        let sent = AtomicUsize::new(0);
        let requests = (0..5).map(|_| {
            cluster.send(async {
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Err::<(), _>(kube::Error::Service(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                ))))
            })
        });
        let results = futures::future::join_all(requests).await;
        assert_eq!(sent.load(Ordering::SeqCst), 1, "only the first went out");
        for result in &results[1..] {
            let err = result.as_ref().expect_err("the cluster is down");
            assert!(
                err.to_string().contains("not sent"),
                "fails at once with the cause: {err}"
            );
        }
        assert!(cluster.down_within(REQUEST_TIMEOUT).is_some());
    }
}
