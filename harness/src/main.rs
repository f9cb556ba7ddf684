//! `kube-harness` binary: serve one Kubernetes API per named cluster until SIGINT/SIGTERM.
#![deny(warnings)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kube_harness::{Cluster, ClusterConfig, FaultRule, NodeSpec};

/// Serve the Kubernetes HTTP API on 127.0.0.1, one server per simulated cluster, with a kubelet
/// stand-in and fault injection. Writes DIR/<name>.kubeconfig per cluster, prints one line
/// `cluster <name> <url> <kubeconfig>` per cluster, then runs until SIGINT or SIGTERM.
/// Each cluster also serves a control API under /harness/ (see README.md).
#[derive(Debug, Parser)]
#[command(name = "kube-harness", version)]
struct Args {
    /// Names of the clusters to serve, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "hub")]
    clusters: Vec<String>,

    /// Directory for the <name>.kubeconfig files (created if missing).
    #[arg(long, default_value = ".")]
    kubeconfig_dir: PathBuf,

    /// Fixed port of a cluster, CLUSTER=PORT (repeatable); others get a free port.
    #[arg(long = "port", value_name = "CLUSTER=PORT")]
    ports: Vec<String>,

    /// A node, repeatable:
    /// CLUSTER=NAME[,gpu=N][,gpu-type=T][,cpu=Q][,memory=Q][,label:K=V]...[,taint:K[=V]:EFFECT]...[,unschedulable].
    /// Defaults: 0 GPUs, cpu=32, memory=256Gi. gpu-type=T adds label nvidia.com/gpu.product=T.
    /// Example: --node private=gpu-a,gpu=8,gpu-type=nvidia-a100,label:pool=a100,taint:nvidia.com/gpu=present:NoSchedule
    #[arg(long = "node", value_name = "CLUSTER=NODE")]
    nodes: Vec<String>,

    /// Milliseconds from a Deployment replica fitting on a node to it being ready.
    #[arg(long, default_value_t = 1000)]
    readiness_delay_ms: u64,

    /// A fault rule, repeatable: CLUSTER=status=CODE,fraction=F,verb=VERB,path=REGEX,latency-ms=MS,times=N
    /// (all attributes optional; CLUSTER may be '*' for every cluster; the regex must not contain ',').
    /// Example: --fault public=status=503,fraction=0.2,verb=list
    #[arg(long = "fault", value_name = "CLUSTER=RULE")]
    faults: Vec<String>,

    /// Seed of the fault RNG (each cluster uses it as is, so runs are reproducible).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Watch events retained per cluster; watches from older resourceVersions get 410 Expired.
    #[arg(long, default_value_t = 1000)]
    watch_history: usize,

    /// Do not create a Pod per Deployment replica (only Deployment status is maintained).
    #[arg(long)]
    no_pods: bool,

    /// Milliseconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5000)]
    bookmark_interval_ms: u64,
}

fn split_cluster(s: &str) -> anyhow::Result<(&str, &str)> {
    s.split_once('=')
        .ok_or_else(|| anyhow::anyhow!("expected CLUSTER=..., got {s}"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut configs: HashMap<String, ClusterConfig> = HashMap::new();
    for name in &args.clusters {
        configs.insert(
            name.clone(),
            ClusterConfig::new(name)
                .readiness_delay(Duration::from_millis(args.readiness_delay_ms))
                .watch_history(args.watch_history)
                .bookmark_interval(Duration::from_millis(args.bookmark_interval_ms))
                .fault_seed(args.seed)
                .pods(!args.no_pods)
                .kubeconfig_dir(&args.kubeconfig_dir),
        );
    }
    let unknown = |c: &str| anyhow::anyhow!("unknown cluster {c} (not in --clusters)");
    for p in &args.ports {
        let (c, port) = split_cluster(p)?;
        let cfg = configs.get_mut(c).ok_or_else(|| unknown(c))?;
        cfg.port = port.parse()?;
    }
    for n in &args.nodes {
        let (c, spec) = split_cluster(n)?;
        let cfg = configs.get_mut(c).ok_or_else(|| unknown(c))?;
        cfg.nodes.push(NodeSpec::parse(spec)?);
    }
    for f in &args.faults {
        let (c, spec) = split_cluster(f)?;
        let rule = FaultRule::parse(spec)?;
        if c == "*" {
            configs
                .values_mut()
                .for_each(|cfg| cfg.faults.push(rule.clone()));
        } else {
            configs
                .get_mut(c)
                .ok_or_else(|| unknown(c))?
                .faults
                .push(rule);
        }
    }
    let mut handles = Vec::new();
    for name in &args.clusters {
        let cfg = configs.remove(name).ok_or_else(|| unknown(name))?;
        let h = Cluster::start(cfg).await?;
        println!(
            "cluster {} {} {}",
            h.name(),
            h.url(),
            h.kubeconfig_path().display()
        );
        handles.push(h);
    }
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(handles);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await
}
