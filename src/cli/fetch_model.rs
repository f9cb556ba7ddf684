//! `skybridge fetch-model`: download a model and verify it, or leave nothing complete behind.

use super::sync::{Output, fail, init_logging, location, runtime};
use clap::Args;
use skybridge::artifacts::{Digest, FetchReport, FetchRequest, RetryPolicy, fetch_model};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct FetchModelArgs {
    /// Model location, s3://BUCKET/PREFIX.
    #[arg(long, value_name = "URI")]
    from: String,
    /// Endpoint URL (MinIO, Ceph, ...); default: AWS.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// Path-style addressing.
    #[arg(long)]
    path_style: bool,
    /// AWS profile; default: the standard AWS environment variables and chain.
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
    /// Directory the verified model is placed in (atomically).
    #[arg(long, value_name = "DIR")]
    dest: PathBuf,
    /// Refuse unless the model's digest is exactly this (sha256:<hex>).
    #[arg(long, value_name = "DIGEST")]
    digest: Option<Digest>,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    parallel: u16,
    /// Largest manifest accepted, in MiB (about 6,000 files per MiB).
    #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_manifest_mib: u64,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

pub fn run(args: FetchModelArgs) -> ExitCode {
    init_logging();
    let source = match location(
        &args.from,
        args.endpoint.as_deref(),
        args.region.as_deref(),
        args.path_style,
        args.profile.as_deref(),
    ) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let request = FetchRequest {
        source,
        dest: args.dest.clone(),
        expected_digest: args.digest,
        parallel: usize::from(args.parallel),
        retry: RetryPolicy::default(),
        max_manifest_bytes: args.max_manifest_mib * 1024 * 1024,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(fetch_model(&request)) {
        Ok(report) => {
            print_report(&report, args.output);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn print_report(r: &FetchReport, output: Output) {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(r).expect("report serializes")
        );
        return;
    }
    println!("source        {}", r.source);
    println!("dest          {}", r.dest.display());
    println!(
        "files         {} ({:.1} MiB)",
        r.files,
        r.bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "status        {}",
        if r.already_present {
            "already present, verified"
        } else {
            "downloaded, verified"
        }
    );
    println!("time          {:.2} s", r.elapsed_seconds);
    println!("digest        {}", r.digest);
}
