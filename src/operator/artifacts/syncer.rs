//! The artifacts edge of the deployment controller: background syncs of models between pool
//! stores, source verification, store-credential Secrets in the pools' clusters, and the glue
//! between them and the pure decisions of [`crate::operator::artifacts::plan`].
//!
//! **Syncs** run as tasks of their own, never inside a reconcile. A job is keyed by (source,
//! destination) location, so deployments that share a model share its copies. A reconcile asks
//! the [`Syncer`] to *ensure* the jobs it needs: a job starts when it never ran, when its last
//! attempt failed and its backoff (doubling from `retry_min` to `retry_max`) has passed, or when
//! its last verification is older than `reverify`. When a job finishes, every deployment that
//! asked for it is reconciled again (through the controller's `reconcile_on` trigger), and a
//! failed job triggers them again when its backoff is over. Each S3 request inside a sync is
//! itself retried on 5xx, throttling and resets by the artifacts library's [`RetryPolicy`].
//!
//! **Credentials** for a store come from its pool's `credentialsSecretRef` (keys
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`), else the default
//! AWS chain. A pool's Secret is read only from the operator's namespace and copied only into
//! that pool's cluster, for that pool's pods; a private store's Secret never into a public
//! cluster (checked right before each copy, [`may_copy_store_credentials`]).

use crate::api::{ArtifactStore, ComputePool, DataClass, ModelDeployment, SecretRef};
use crate::artifacts::{
    ArtifactError, Credentials, RetryPolicy, Store, StoreLocation, SyncOptions, SyncReport,
    SyncRequest, sync_model,
};
use crate::estate::private_store_named_by;
use crate::operator::artifacts::plan::{CopyView, Route, Verified};
use crate::operator::error::{Error, Result};
use crate::operator::kubernetes::names::child_name;
use crate::operator::kubernetes::retry::idempotent;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Keys copied from a store-credentials Secret; nothing else of it leaves the operator's cluster.
pub const CREDENTIAL_KEYS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Settings of artifact management (`skybridge run --artifact-*`).
#[derive(Clone, Debug)]
pub struct ArtifactsConfig {
    /// First backoff after a failed sync; doubles per consecutive failure.
    pub retry_min: Duration,
    /// Longest backoff between attempts of a failing sync.
    pub retry_max: Duration,
    /// How often a verified copy is verified (and synced) again, which also picks up a model
    /// changed at its source.
    pub reverify: Duration,
    /// Objects (and parts per object) in flight per sync.
    pub parallel: usize,
    /// Retries of single S3 requests inside a sync.
    pub request_retry: RetryPolicy,
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        Self {
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            reverify: Duration::from_secs(600),
            parallel: 16,
            request_retry: RetryPolicy::default(),
        }
    }
}

/// A sync job: (source, destination) location ids.
pub type JobKey = (String, String);

struct Job {
    running: bool,
    last: Option<std::result::Result<Verified, String>>,
    previous: Option<Verified>,
    finished: Option<Instant>,
    failures: u32,
    watchers: HashSet<ObjectRef<ModelDeployment>>,
}

/// Background model syncs, de-duplicated per (source, destination).
pub struct Syncer {
    config: ArtifactsConfig,
    jobs: Mutex<HashMap<JobKey, Job>>,
    notify: mpsc::UnboundedSender<ObjectRef<ModelDeployment>>,
}

impl Syncer {
    pub fn new(
        config: ArtifactsConfig,
        notify: mpsc::UnboundedSender<ObjectRef<ModelDeployment>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            jobs: Mutex::new(HashMap::new()),
            notify,
        })
    }

    pub fn config(&self) -> &ArtifactsConfig {
        &self.config
    }

    pub fn view(&self, key: &JobKey) -> Option<CopyView> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(key).map(|job| CopyView {
            running: job.running,
            last: job.last.clone(),
            previous: job.previous.clone(),
        })
    }

    fn backoff(&self, failures: u32) -> Duration {
        backoff(&self.config, failures)
    }

    /// Starts `work` for `key` unless it runs already or its last outcome is still current;
    /// `watcher` is reconciled when it finishes.
    fn ensure(
        self: &Arc<Self>,
        key: JobKey,
        watcher: ObjectRef<ModelDeployment>,
        work: impl FnOnce() -> BoxFuture<'static, std::result::Result<Verified, String>>,
    ) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let job = jobs.entry(key.clone()).or_insert_with(|| Job {
            running: false,
            last: None,
            previous: None,
            finished: None,
            failures: 0,
            watchers: HashSet::new(),
        });
        job.watchers.insert(watcher);
        let last = job.last.as_ref().map(|outcome| outcome.is_ok());
        if !job_due(
            &self.config,
            job.running,
            last,
            job.finished,
            job.failures,
            Instant::now(),
        ) {
            return;
        }
        job.running = true;
        let future = work();
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = future.await;
            let (watchers, retry_in) = {
                let mut jobs = this.jobs.lock().unwrap_or_else(|e| e.into_inner());
                let Some(job) = jobs.get_mut(&key) else {
                    return;
                };
                job.running = false;
                job.finished = Some(Instant::now());
                let retry_in = match &outcome {
                    Ok(v) => {
                        info!(source = %key.0, destination = %key.1, digest = %v.digest, "model verified");
                        job.failures = 0;
                        job.previous = Some(v.clone());
                        None
                    }
                    Err(message) => {
                        job.failures += 1;
                        let delay = this.backoff(job.failures);
                        warn!(source = %key.0, destination = %key.1, %message, ?delay, "model sync failed; retrying after backoff");
                        Some(delay)
                    }
                };
                job.last = Some(outcome);
                (job.watchers.iter().cloned().collect::<Vec<_>>(), retry_in)
            };
            for watcher in &watchers {
                let _ = this.notify.send(watcher.clone());
            }
            if let Some(delay) = retry_in {
                tokio::time::sleep(delay).await;
                for watcher in watchers {
                    let _ = this.notify.send(watcher);
                }
            }
        });
    }

    /// Stops reconciling `md` for jobs it no longer needs (it was deleted).
    pub fn forget(&self, md: &ObjectRef<ModelDeployment>) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        for job in jobs.values_mut() {
            job.watchers.remove(md);
        }
        jobs.retain(|_, job| job.running || !job.watchers.is_empty());
    }
}

/// A sync the artifact plan of one reconcile decided on: a copy (or a verification at the
/// source) of `md`'s model for `pool`. The [`Syncer`] carries it out, once per job key.
pub struct SyncIntent {
    pub key: JobKey,
    /// Reconciled when the job finishes.
    pub watcher: ObjectRef<ModelDeployment>,
    pub md: Arc<ModelDeployment>,
    pub source_pool: Arc<ComputePool>,
    pub pool: Arc<ComputePool>,
    pub route: Route,
    pub class: DataClass,
}

impl Syncer {
    /// Carries out the intents: starts each job unless it runs already or its last outcome is
    /// still current (see `ensure`). Credentials are read from `client`'s `operator_ns`.
    pub fn carry_out(
        self: &Arc<Self>,
        intents: Vec<SyncIntent>,
        client: &Client,
        operator_ns: &str,
    ) {
        for intent in intents {
            let SyncIntent {
                key,
                watcher,
                md,
                source_pool,
                pool,
                route,
                class,
            } = intent;
            let client = client.clone();
            let operator_ns = operator_ns.to_string();
            let config = self.config().clone();
            self.ensure(key, watcher, move || {
                Box::pin(async move {
                    let run = async {
                        let source_store =
                            source_pool.spec.artifact_store.as_ref().ok_or_else(|| {
                                Error::Artifacts("source pool has no artifactStore".into())
                            })?;
                        let mut source = source_location(&md, source_store)?;
                        source.credentials =
                            credentials(client.clone(), &operator_ns, source_store).await?;
                        match route {
                            Route::Source => verify_source(source, config.request_retry.clone())
                                .await
                                .map_err(Error::Artifacts),
                            Route::Copy { model_path } => {
                                let store = pool.spec.artifact_store.as_ref().ok_or_else(|| {
                                    Error::Artifacts("pool has no artifactStore".into())
                                })?;
                                let destination = StoreLocation::from_artifact_store(
                                    store,
                                    &model_path,
                                    credentials(client, &operator_ns, store).await?,
                                )
                                .map_err(|e| Error::Artifacts(describe(&e)))?;
                                let request = SyncRequest {
                                    source,
                                    destination,
                                    data_class: class,
                                    destination_cloud: pool.spec.cloud,
                                    options: SyncOptions {
                                        parallel: config.parallel.max(1),
                                        retry: config.request_retry.clone(),
                                        ..SyncOptions::default()
                                    },
                                };
                                let report = tokio::task::spawn_blocking(move || {
                                    sync_on_own_runtime(&request)
                                })
                                .await
                                .map_err(|e| Error::Artifacts(format!("sync task: {e}")))??;
                                Ok(Verified {
                                    digest: report.digest.to_string(),
                                    bytes: report.bytes,
                                    at: verified_now(),
                                })
                            }
                            Route::Forbidden(why) => Err(Error::Artifacts(why)),
                            Route::NoStore => Err(Error::Artifacts("no artifactStore".into())),
                        }
                    };
                    run.await.map_err(|e| match e {
                        Error::Artifacts(message) => message,
                        other => other.to_string(),
                    })
                })
            });
        }
    }
}

/// Identity of a location for de-duplication: endpoint, bucket and prefix.
/// The wait after `failures` consecutive failed syncs: `retry_min`, doubling per failure, at
/// most `retry_max`.
pub fn backoff(config: &ArtifactsConfig, failures: u32) -> Duration {
    config
        .retry_min
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(config.retry_max)
}

/// Whether a sync job is due at `now`: never while it runs; at once if it never finished; a
/// verified copy (`last == Some(true)`) again after `reverify`; a failed one (`Some(false)`)
/// after its backoff.
pub fn job_due(
    config: &ArtifactsConfig,
    running: bool,
    last: Option<bool>,
    finished: Option<Instant>,
    failures: u32,
    now: Instant,
) -> bool {
    let since = |at: Instant| now.saturating_duration_since(at);
    match (last, finished) {
        _ if running => false,
        (None, _) | (_, None) => true,
        (Some(true), Some(at)) => since(at) >= config.reverify,
        (Some(false), Some(at)) => since(at) >= backoff(config, failures),
    }
}

pub fn location_id(l: &StoreLocation) -> String {
    format!(
        "{}|{}|{}",
        l.endpoint.as_deref().unwrap_or("aws"),
        l.bucket,
        l.prefix
    )
}

/// Reads a store's credentials Secret in the operator's cluster.
async fn credentials(
    client: Client,
    operator_ns: &str,
    store: &ArtifactStore,
) -> Result<Credentials> {
    let Some(secret_ref) = &store.credentials_secret_ref else {
        return Ok(Credentials::DefaultChain);
    };
    let namespace = secret_namespace(secret_ref, operator_ns).map_err(Error::Artifacts)?;
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = idempotent(|| api.get(&secret_ref.name)).await?;
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    match (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token: value("AWS_SESSION_TOKEN"),
        }),
        _ => Err(Error::Artifacts(format!(
            "Secret {namespace}/{} lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY",
            secret_ref.name
        ))),
    }
}

/// An artifacts error as status and Events show it: one line, the S3 error code rather than the
/// SDK's debug dump, at most 300 characters.
pub fn describe(err: &ArtifactError) -> String {
    let text = match err {
        ArtifactError::S3(e) => format!(
            "S3 {} s3://{}/{}: {}{}",
            e.operation,
            e.bucket,
            e.key,
            e.code.clone().unwrap_or_else(|| e
                .message
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()),
            e.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
        ),
        other => other.to_string(),
    };
    // Object keys are anyone's text: no control character reaches a condition or an Event.
    let text = crate::artifacts::error::printable(&text);
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 300 {
        format!("{}...", line.chars().take(297).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Runs one model sync to the end on a runtime of its own, on the calling (blocking) thread.
/// Its transfers and hashing are heavy and long, and the operator's own runtime has a single
/// thread that must stay free for reconciles, probes and the Lease. (`sync_model`'s future is
/// not `Send` either: its stream closures are not general over lifetimes.)
fn sync_on_own_runtime(request: &SyncRequest) -> Result<SyncReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("skybridge-sync")
        .enable_all()
        .build()
        .map_err(|e| Error::Artifacts(format!("cannot start a runtime for the sync: {e}")))?;
    runtime
        .block_on(sync_model(request))
        .map_err(|e| Error::Artifacts(describe(&e)))
}

/// Now, in whole seconds: what a `metav1.Time` in status keeps, so that a status read back
/// equals the one written and an unchanged state is not written again.
fn verified_now() -> k8s_openapi::jiff::Timestamp {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// Where the model lives in its source store (without credentials).
pub fn source_location(
    md: &ModelDeployment,
    source_store: &ArtifactStore,
) -> Result<StoreLocation> {
    let mut location = StoreLocation::parse_uri(&md.spec.model.source.uri)
        .map_err(|e| Error::Artifacts(describe(&e)))?;
    location.endpoint = source_store.endpoint.clone();
    location.region = source_store.region.clone();
    location.path_style = source_store.path_style;
    Ok(location)
}

/// Verifies the source: its manifest must exist and describe exactly what is listed (paths and
/// sizes). Content hashes are checked by every sync and every fetch.
async fn verify_source(
    location: StoreLocation,
    retry: RetryPolicy,
) -> std::result::Result<Verified, String> {
    let store = Store::connect(&location, retry)
        .await
        .map_err(|e| describe(&e))?;
    let manifest = store.read_manifest().await.map_err(|e| describe(&e))?.ok_or_else(|| {
        format!(
            "no manifest at {}: publish the model with `skybridge sync` so that pods can verify it",
            location.uri()
        )
    })?;
    let listed = store.list().await.map_err(|e| describe(&e))?;
    let listed: BTreeMap<&str, u64> = listed.iter().map(|o| (o.path.as_str(), o.size)).collect();
    let mut problems = Vec::new();
    for entry in manifest.entries() {
        match listed.get(entry.path.as_str()) {
            None => problems.push(format!("{} is missing", entry.path)),
            Some(size) if *size != entry.size => problems.push(format!(
                "{} has {size} bytes, the manifest says {}",
                entry.path, entry.size
            )),
            Some(_) => {}
        }
    }
    for path in listed.keys() {
        if manifest.get(path).is_none() {
            problems.push(format!("{path} is not in the manifest"));
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "source {} disagrees with its manifest: {}",
            location.uri(),
            problems.join(", ")
        ));
    }
    Ok(Verified {
        digest: manifest.digest().to_string(),
        bytes: manifest.total_size(),
        at: verified_now(),
    })
}

/// Name of the copy of a pool's store credentials for one deployment's pods.
pub fn store_secret_name(md: &ModelDeployment, pool: &str) -> String {
    child_name(&[&md.name_any(), "store", pool])
}

/// The namespace a store-credentials Secret is read from: the operator's own, only. A reference
/// naming another namespace is refused rather than followed (validation reports it too), so a
/// pool's author cannot make the operator read, and copy out, any Secret of the cluster.
fn secret_namespace<'a>(
    secret_ref: &SecretRef,
    operator_ns: &'a str,
) -> std::result::Result<&'a str, String> {
    match secret_ref.namespace.as_deref() {
        None => Ok(operator_ns),
        Some(ns) if ns == operator_ns => Ok(operator_ns),
        Some(ns) => Err(format!(
            "credentials Secret {ns}/{} is outside the operator's namespace {operator_ns}; credentials are read from the operator's namespace only",
            secret_ref.name
        )),
    }
}

/// Whether `pool`'s store credentials may be copied into its cluster, checked right before the
/// copy whatever validation said: never from outside the operator's namespace, and never the
/// credentials (or the store) of a private pool into a public pool's cluster.
pub fn may_copy_store_credentials(
    pool: &ComputePool,
    pools: &BTreeMap<String, Arc<ComputePool>>,
    operator_ns: &str,
) -> std::result::Result<(), String> {
    let Some(secret_ref) = pool
        .spec
        .artifact_store
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
    else {
        return Ok(());
    };
    secret_namespace(secret_ref, operator_ns)?;
    match private_store_named_by(pool, pools) {
        Some(why) => Err(format!("store credentials not copied: {why}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::S3Error;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn md(name: &str) -> ObjectRef<ModelDeployment> {
        ObjectRef::new(name).within("shop")
    }

    fn config() -> ArtifactsConfig {
        ArtifactsConfig {
            // Long enough that "within the backoff" holds on a loaded machine.
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_millis(500),
            reverify: Duration::from_secs(3600),
            ..ArtifactsConfig::default()
        }
    }

    fn verified() -> Verified {
        Verified {
            digest: "sha256:aa".into(),
            bytes: 1,
            at: k8s_openapi::jiff::Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn one_job_per_source_and_destination_and_every_watcher_is_told() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let syncer = Syncer::new(config(), tx);
        let started = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let key = ("src".to_string(), "dst".to_string());
        let counter = started.clone();
        syncer.ensure(key.clone(), md("a"), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let _ = released.await;
                Ok(verified())
            })
        });
        // A second deployment of the same model: the running job is shared, not duplicated.
        let counter = started.clone();
        syncer.ensure(key.clone(), md("b"), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(verified()) })
        });
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert!(syncer.view(&key).unwrap().running);
        release.send(()).unwrap();
        let mut told = BTreeSet::new();
        told.insert(rx.recv().await.unwrap().name);
        told.insert(rx.recv().await.unwrap().name);
        assert_eq!(told, BTreeSet::from(["a".to_string(), "b".to_string()]));
        let view = syncer.view(&key).unwrap();
        assert!(!view.running && view.verified().is_some());
        // Verified and not yet due for re-verification: nothing starts.
        let counter = started.clone();
        syncer.ensure(key.clone(), md("a"), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(verified()) })
        });
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn jobs_are_due_after_their_reverify_or_backoff_and_never_while_running() {
        let config = ArtifactsConfig {
            retry_min: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            reverify: Duration::from_secs(600),
            ..ArtifactsConfig::default()
        };
        let at = Instant::now();
        let later = |s: u64| at + Duration::from_secs(s);
        assert!(job_due(&config, false, None, None, 0, at), "never ran");
        assert!(!job_due(&config, true, None, None, 0, at), "running");
        assert!(!job_due(
            &config,
            true,
            Some(false),
            Some(at),
            9,
            later(9999)
        ));
        assert!(!job_due(
            &config,
            false,
            Some(true),
            Some(at),
            0,
            later(599)
        ));
        assert!(job_due(&config, false, Some(true), Some(at), 0, later(600)));
        // Failures: 10 s, 20 s, 40 s, then capped at 60 s.
        for (failures, wait) in [(1, 10), (2, 20), (3, 40), (4, 60), (30, 60)] {
            assert_eq!(backoff(&config, failures), Duration::from_secs(wait));
            assert!(!job_due(
                &config,
                false,
                Some(false),
                Some(at),
                failures,
                later(wait - 1)
            ));
            assert!(job_due(
                &config,
                false,
                Some(false),
                Some(at),
                failures,
                later(wait)
            ));
        }
        // A clock read before the finish (another thread's) is not a wait already served.
        assert!(!job_due(&config, false, Some(false), Some(later(5)), 1, at));
    }

    #[tokio::test]
    async fn a_failed_job_is_retried_only_after_its_backoff() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let syncer = Syncer::new(config(), tx);
        let key = ("src".to_string(), "dst".to_string());
        let attempts = Arc::new(AtomicUsize::new(0));
        let attempt = |attempts: Arc<AtomicUsize>| {
            move || -> BoxFuture<'static, std::result::Result<Verified, String>> {
                attempts.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Err("S3 GetObject: SlowDown (HTTP 503)".to_string()) })
            }
        };
        syncer.ensure(key.clone(), md("a"), attempt(attempts.clone()));
        rx.recv().await.unwrap(); // finished (failed)
        assert_eq!(
            syncer.view(&key).unwrap().last,
            Some(Err("S3 GetObject: SlowDown (HTTP 503)".to_string()))
        );
        syncer.ensure(key.clone(), md("a"), attempt(attempts.clone()));
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "within the backoff");
        rx.recv().await.unwrap(); // the backoff is over: the watcher is told to come back
        syncer.ensure(key.clone(), md("a"), attempt(attempts.clone()));
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        // Forgotten by its only watcher, an idle job is dropped.
        rx.recv().await.unwrap();
        syncer.forget(&md("a"));
        assert!(syncer.view(&key).is_none());
    }

    #[test]
    fn verification_times_survive_a_round_trip_through_status() {
        let at = verified_now();
        let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at);
        let back: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(serde_json::to_value(&time).unwrap()).unwrap();
        assert_eq!(back, time);
    }

    #[test]
    fn errors_are_one_short_line() {
        let err = ArtifactError::S3(S3Error {
            operation: "GetObject",
            bucket: "models".into(),
            key: "m/a.bin".into(),
            status: Some(503),
            code: Some("SlowDown".into()),
            message: "service error: unhandled error (SlowDown): Error { ... }\nmore".into(),
            transient: true,
        });
        assert_eq!(
            describe(&err),
            "S3 GetObject s3://models/m/a.bin: SlowDown (HTTP 503)"
        );
        let long = ArtifactError::SourceChanged("x".repeat(1000));
        assert_eq!(describe(&long).chars().count(), 300);
        let hostile = ArtifactError::S3(S3Error {
            key: "m/a\nFAKE\u{1b}[2J.bin".into(),
            code: Some("NoSuchKey".into()),
            ..match err {
                ArtifactError::S3(e) => e,
                _ => unreachable!(),
            }
        });
        assert_eq!(
            describe(&hostile),
            "S3 GetObject s3://models/m/a\\nFAKE\\u{1b}[2J.bin: NoSuchKey (HTTP 503)"
        );
    }

    fn pool(yaml: &str) -> Arc<ComputePool> {
        Arc::new(serde_yaml_ng::from_str(yaml).unwrap())
    }

    /// Issue #18: the operator copied whatever Secret a public pool's store named into the
    /// public cluster, a private store's keys included. Checked right before every copy.
    #[test]
    fn private_store_credentials_are_never_copied_for_a_public_pool() {
        let private = pool(
            "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {name: dc1}\nspec: {cloud: private, provider: onprem, region: fra, capacity: {}, artifactStore: {bucket: models, endpoint: 'http://minio:9000', credentialsSecretRef: {name: dc1-store}}}\n",
        );
        let public = |store: &str| {
            pool(&format!(
                "apiVersion: skybridge.io/v1alpha1\nkind: ComputePool\nmetadata: {{name: aws}}\nspec: {{cloud: public, provider: aws, region: r, capacity: {{}}, artifactStore: {store}}}\n"
            ))
        };
        let estate = |public: &Arc<ComputePool>| {
            BTreeMap::from([
                ("dc1".to_string(), private.clone()),
                ("aws".to_string(), public.clone()),
            ])
        };
        for store in [
            "{bucket: models-euc1, credentialsSecretRef: {name: dc1-store}}",
            "{bucket: models, endpoint: 'http://minio:9000/', credentialsSecretRef: {name: aws-store}}",
        ] {
            let aws = public(store);
            let refused = may_copy_store_credentials(&aws, &estate(&aws), "skybridge-system")
                .expect_err(store);
            assert!(
                refused.contains("not copied") && refused.contains("private ComputePool \"dc1\""),
                "{refused}"
            );
        }
        // Its own store and keys: copied. The private pool's own keys go to its own cluster.
        let aws = public("{bucket: models-euc1, credentialsSecretRef: {name: aws-store}}");
        assert_eq!(
            may_copy_store_credentials(&aws, &estate(&aws), "skybridge-system"),
            Ok(())
        );
        assert_eq!(
            may_copy_store_credentials(&private, &estate(&aws), "skybridge-system"),
            Ok(())
        );
        // A Secret outside the operator's namespace is never read, for any pool.
        let mut elsewhere = (*private).clone();
        elsewhere
            .spec
            .artifact_store
            .as_mut()
            .unwrap()
            .credentials_secret_ref
            .as_mut()
            .unwrap()
            .namespace = Some("kube-system".into());
        let refused = may_copy_store_credentials(&elsewhere, &estate(&aws), "skybridge-system")
            .expect_err("another namespace");
        assert!(refused.contains("operator's namespace only"), "{refused}");
        let mut same = elsewhere.clone();
        same.spec
            .artifact_store
            .as_mut()
            .unwrap()
            .credentials_secret_ref
            .as_mut()
            .unwrap()
            .namespace = Some("skybridge-system".into());
        assert_eq!(
            may_copy_store_credentials(&same, &estate(&aws), "skybridge-system"),
            Ok(())
        );
    }
}
