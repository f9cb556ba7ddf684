//! `skybridge run`: the operator.

use clap::{Args, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use skybridge::operator::artifacts::syncer::ArtifactsConfig;
use skybridge::operator::runtime::{RunConfig, run_with_artifacts as run_operator};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Namespace the operator runs in: its Lease, and the default namespace of kubeconfig and
    /// store-credential Secrets.
    #[arg(long, env = "POD_NAMESPACE", default_value = "skybridge-system")]
    namespace: String,
    /// Identity in leader election; unique per replica.
    #[arg(long, env = "POD_NAME", default_value = "skybridge-local")]
    identity: String,
    /// Run leader election on a Lease so that only one replica writes; disable for a single
    /// replica run by hand.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "skybridge-leader")]
    lease_name: String,
    /// Seconds a leader holds the Lease without renewing; a standby takes over after that.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Address of the `/metrics`, `/readyz` and `/livez` server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    probe_addr: SocketAddr,
    /// Seconds between probes of each pool and between re-plans without other triggers.
    #[arg(long, default_value_t = 15)]
    period_seconds: u64,
    /// Image with this binary, for the `fetch-model` init container of every serving pod.
    #[arg(
        long,
        env = "SKYBRIDGE_IMAGE",
        default_value = "ghcr.io/skybridge-io/skybridge:latest"
    )]
    image: String,
    /// Sync models to the pools' artifact stores in the background and give every serving pod a
    /// `fetch-model` init container that verifies the model's digest. Disable when models are
    /// baked into the serving images or distributed by other means.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    manage_artifacts: bool,
    /// Seconds before a failed model sync is retried; doubles per consecutive failure.
    #[arg(long, default_value_t = 5)]
    artifact_retry_seconds: u64,
    /// Longest wait between attempts of a failing model sync, in seconds.
    #[arg(long, default_value_t = 300)]
    artifact_retry_max_seconds: u64,
    /// Seconds after which a verified copy is synced and verified again (picks up a model
    /// changed at its source).
    #[arg(long, default_value_t = 600)]
    artifact_reverify_seconds: u64,
    /// Objects (and parts per object) in flight per model sync.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    artifact_parallel: u16,
    /// Most requests per second to any one cluster.
    #[arg(long, default_value_t = 50)]
    cluster_qps: u32,
    /// Kubeconfig of the cluster the operator runs in; default: in-cluster, then $KUBECONFIG.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    #[arg(long)]
    context: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: RunArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    // One thread: the operator mostly waits on its clusters, and between two worker threads
    // the hand-offs of every request and watch event cost about a fifth of its CPU (see
    // docs/benchmarks.md). Model syncs, the one heavy job, run on runtimes of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main(args: RunArgs) -> anyhow::Result<()> {
    let client = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            let options = KubeConfigOptions {
                context: args.context.clone(),
                ..Default::default()
            };
            pooled_client(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?)?
        }
        None => pooled_client(kube::Config::infer().await?)?,
    };
    let config = RunConfig {
        namespace: args.namespace,
        identity: args.identity,
        leader_election: args.leader_election,
        lease_name: args.lease_name,
        lease_seconds: args.lease_seconds,
        probe_addr: args.probe_addr,
        period: Duration::from_secs(args.period_seconds.max(1)),
        image: args.image,
        cluster_qps: args.cluster_qps.max(1),
    };
    let artifacts = args.manage_artifacts.then(|| ArtifactsConfig {
        retry_min: Duration::from_secs(args.artifact_retry_seconds.max(1)),
        retry_max: Duration::from_secs(
            args.artifact_retry_max_seconds
                .max(args.artifact_retry_seconds.max(1)),
        ),
        reverify: Duration::from_secs(args.artifact_reverify_seconds.max(1)),
        parallel: usize::from(args.artifact_parallel),
        ..ArtifactsConfig::default()
    });
    run_operator(client, config, artifacts, shutdown_signal()).await?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
/// The operator's own cluster's client, over a connection pool of bounded size (see
/// `MAX_IDLE_CONNECTIONS`).
fn pooled_client(config: kube::Config) -> kube::Result<kube::Client> {
    use skybridge::operator::kubernetes::clusters;
    clusters::pooled_client(config, clusters::MAX_IDLE_CONNECTIONS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    log_shutdown("SIGINT");
                    return;
                }
            };
        let signal = tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        log_shutdown(signal);
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        log_shutdown("Ctrl-C");
    }
}

/// Said as soon as the signal arrives: stopping takes a moment (watches, the Lease) and a silent
/// process looks hung.
fn log_shutdown(signal: &str) {
    tracing::info!(
        signal,
        "received {signal}: shutting down (stopping controllers, releasing the leader Lease)"
    );
}
