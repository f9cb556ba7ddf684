//! `skybridge sync`: make a destination store hold a verified copy of a model.

use super::EXIT_BAD_INPUT;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use skybridge::api::common::{Cloud, DataClass};
use skybridge::artifacts::residency::{self, CloudLabel};
use skybridge::artifacts::{
    ArtifactError, Credentials, StateKey, StoreLocation, SyncEvent, SyncOptions, SyncReport,
    SyncRequest, VerifyMode, sync_model,
};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Source model, s3://BUCKET/PREFIX.
    #[arg(long, value_name = "URI")]
    from: String,
    /// Destination, s3://BUCKET/PREFIX. Objects under it that the source lacks are deleted.
    #[arg(long, value_name = "URI")]
    to: String,
    /// Source endpoint URL (MinIO, Ceph, ...); default: AWS.
    #[arg(long, value_name = "URL")]
    from_endpoint: Option<String>,
    /// Destination endpoint URL; default: AWS.
    #[arg(long, value_name = "URL")]
    to_endpoint: Option<String>,
    #[arg(long, value_name = "REGION")]
    from_region: Option<String>,
    #[arg(long, value_name = "REGION")]
    to_region: Option<String>,
    /// Path-style addressing at the source (MinIO, Ceph).
    #[arg(long)]
    from_path_style: bool,
    #[arg(long)]
    to_path_style: bool,
    /// AWS profile for the source; default: the standard AWS environment variables and chain.
    #[arg(long, value_name = "PROFILE")]
    from_profile: Option<String>,
    #[arg(long, value_name = "PROFILE")]
    to_profile: Option<String>,
    /// Data class of the model. Defaults to the strictest, so that copying to a public cloud
    /// requires saying what the model is.
    #[arg(long, value_parser = parse_data_class, default_value = "sensitive")]
    data_class: DataClass,
    /// Cloud of the destination store. Unset: treated as `public` (an unlabelled store may be
    /// anyone's), so a sensitive model needs `--to-cloud private`. A destination on AWS
    /// (no `--to-endpoint`, or an amazonaws.com endpoint) is public whatever this says.
    #[arg(long, value_parser = parse_cloud)]
    to_cloud: Option<Cloud>,
    /// File holding the secret (at least 16 bytes) that signs the destination's sync state, so
    /// a later run with the same key skips objects verified earlier. Default:
    /// `$XDG_STATE_HOME/skybridge/sync-state.key` (or `~/.local/state/...`), created on first
    /// use with mode 0600. Without a usable key, re-runs re-verify present objects by reading.
    #[arg(long, value_name = "FILE", env = "SKYBRIDGE_SYNC_STATE_KEY_FILE")]
    state_key_file: Option<PathBuf>,
    /// Largest manifest accepted, in MiB (about 6,000 files per MiB).
    #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_manifest_mib: u64,
    /// Largest destination sync state read, in MiB; a larger one is ignored (re-verify).
    #[arg(long, default_value_t = 32, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=8192))]
    max_state_mib: u64,
    /// Most objects a model (source or destination prefix) may have.
    #[arg(long, default_value_t = 200_000, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_objects: u64,
    /// Objects (and parts per object) in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallel: u16,
    /// Multipart part size in MiB (min 5).
    #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = clap::value_parser!(u64).range(5..=5120))]
    part_size_mib: u64,
    /// Upper bound on transfer buffers in MiB.
    #[arg(long, default_value_t = 96, value_name = "MIB", value_parser = clap::value_parser!(u64).range(5..))]
    memory_mib: u64,
    /// `etag`: check the store's ETag against the MD5s of the bytes sent (read back on mismatch);
    /// `reread`: always read every copied object back and hash it.
    #[arg(long, value_enum, default_value = "etag")]
    verify: VerifyArg,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum VerifyArg {
    Etag,
    Reread,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Table,
    Json,
}

pub(crate) fn parse_data_class(s: &str) -> Result<DataClass, String> {
    DataClass::ALL
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| format!("expected public, internal or sensitive, got {s:?}"))
}

fn parse_cloud(s: &str) -> Result<Cloud, String> {
    [Cloud::Private, Cloud::Public]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| format!("expected private or public, got {s:?}"))
}

/// Builds a location from the CLI pieces shared by `sync` and `fetch-model`.
pub(crate) fn location(
    uri: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    path_style: bool,
    profile: Option<&str>,
) -> Result<StoreLocation, ArtifactError> {
    let mut loc = StoreLocation::parse_uri(uri)?;
    if let Some(e) = endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ArtifactError::InvalidRequest(format!(
                "endpoint {e:?} must be an http:// or https:// URL"
            )));
        }
        loc.endpoint = Some(e.trim_end_matches('/').to_string());
    }
    loc.region = region.map(str::to_string);
    loc.path_style = path_style;
    loc.credentials = profile.map_or(Credentials::DefaultChain, |p| {
        Credentials::Profile(p.to_string())
    });
    Ok(loc)
}

pub(crate) fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Exit status of a library error: 2 for bad input (including residency refusals), else 1.
pub(crate) fn fail(e: &ArtifactError) -> ExitCode {
    eprintln!("error: {e}");
    if e.is_bad_input() {
        ExitCode::from(EXIT_BAD_INPUT)
    } else {
        ExitCode::FAILURE
    }
}

pub fn run(args: SyncArgs) -> ExitCode {
    init_logging();
    let (request, label) = match build_request(&args) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut request = request;
    let bar = std::io::stderr().is_terminal().then(progress_bar);
    if let Some(bar) = &bar {
        let bar = bar.clone();
        request.options.progress = Some(Arc::new(move |e: &SyncEvent| match e {
            SyncEvent::Planned {
                copy_bytes,
                copy,
                check,
                delete,
                ..
            } => {
                bar.set_length(*copy_bytes);
                bar.set_message(format!(
                    "{copy} to copy, {check} to verify, {delete} to delete"
                ));
            }
            SyncEvent::Bytes(n) => bar.inc(*n),
            SyncEvent::Object { .. } => {}
        }));
    }
    let result = rt.block_on(sync_model(&request));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => {
            print_report(&report, args.output);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = fail(&e);
            if matches!(e, ArtifactError::Residency(_)) {
                eprintln!("note: {}", label.explain());
            }
            code
        }
    }
}

/// The key that signs the sync state: the named file, else the default key file (created with
/// a fresh random secret, mode 0600, on first use), else a key for this run only.
fn state_key(explicit: Option<&Path>) -> Result<Option<StateKey>, ArtifactError> {
    let read = |path: &Path| {
        let secret = std::fs::read(path).map_err(|e| {
            ArtifactError::InvalidRequest(format!(
                "cannot read the sync state key file {}: {e}",
                path.display()
            ))
        })?;
        StateKey::from_secret(&secret).map_err(|e| match e {
            ArtifactError::InvalidRequest(m) => {
                ArtifactError::InvalidRequest(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    };
    if let Some(path) = explicit {
        return read(path).map(Some);
    }
    let dir = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .map(|d| d.join("skybridge"));
    let from_default = dir.and_then(|dir| {
        let path = dir.join("sync-state.key");
        if !path.exists() {
            create_key_file(&dir, &path)
                .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot create the sync state key file"))
                .ok()?;
        }
        read(&path)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot use the sync state key file"))
            .ok()
    });
    Ok(from_default.or_else(StateKey::per_process))
}

fn create_key_file(dir: &Path, path: &Path) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&secret)?;
    file.sync_all()
}

fn build_request(args: &SyncArgs) -> Result<(SyncRequest, CloudLabel), ArtifactError> {
    let source = location(
        &args.from,
        args.from_endpoint.as_deref(),
        args.from_region.as_deref(),
        args.from_path_style,
        args.from_profile.as_deref(),
    )?;
    let destination = location(
        &args.to,
        args.to_endpoint.as_deref(),
        args.to_region.as_deref(),
        args.to_path_style,
        args.to_profile.as_deref(),
    )?;
    let part_size = args.part_size_mib * 1024 * 1024;
    let options = SyncOptions {
        parallel: usize::from(args.parallel),
        part_size,
        memory_budget: (args.memory_mib * 1024 * 1024).max(part_size),
        verify: match args.verify {
            VerifyArg::Etag => VerifyMode::Etag,
            VerifyArg::Reread => VerifyMode::Reread,
        },
        state_key: state_key(args.state_key_file.as_deref())?,
        max_manifest_bytes: args.max_manifest_mib * 1024 * 1024,
        max_state_bytes: args.max_state_mib * 1024 * 1024,
        max_objects: args.max_objects as usize,
        ..SyncOptions::default()
    };
    let label = residency::destination_cloud(args.to_cloud, destination.endpoint.as_deref());
    Ok((
        SyncRequest {
            source,
            destination,
            data_class: args.data_class,
            destination_cloud: label.cloud(),
            options,
        },
        label,
    ))
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_report(r: &SyncReport, output: Output) {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).expect("report serializes")
        );
        return;
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rate = if r.elapsed_seconds > 0.0 {
        mib(r.bytes_copied) / r.elapsed_seconds
    } else {
        0.0
    };
    println!("source        {}", r.source);
    println!("destination   {}", r.destination);
    println!(
        "copied        {} objects, {:.1} MiB",
        r.copied.len(),
        mib(r.bytes_copied)
    );
    println!(
        "skipped       {} objects (verified earlier, unchanged)",
        r.skipped.len()
    );
    println!(
        "reverified    {} objects (present, verified by reading back)",
        r.reverified.len()
    );
    println!("deleted       {} objects", r.deleted.len());
    println!(
        "verified      {} of {} objects, {:.1} MiB",
        r.verified,
        r.objects,
        mib(r.bytes)
    );
    if r.aborted_uploads > 0 {
        println!(
            "aborted       {} stale multipart uploads",
            r.aborted_uploads
        );
    }
    println!(
        "time          {:.2} s ({rate:.1} MiB/s copied)",
        r.elapsed_seconds
    );
    println!(
        "manifest      {}",
        if r.manifest_written {
            "written"
        } else {
            "unchanged"
        }
    );
    println!("digest        {}", r.digest);
}
