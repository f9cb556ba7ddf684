//! The `skybridge` command line: one binary, one subcommand per job.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod crd;
mod fetch_model;
mod sync;

/// Skybridge: burst model replicas from private to public clouds, keep sensitive work private.
#[derive(Parser, Debug)]
#[command(name = "skybridge", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML (pipe into `kubectl apply -f -`).
    Crd(crd::CrdArgs),
    /// Copy a model between S3 stores, verified and incremental; the manifest is written last.
    Sync(sync::SyncArgs),
    /// Download a model into a directory, verified against its manifest and digest (fail closed).
    FetchModel(fetch_model::FetchModelArgs),
}

/// Exit status for bad input (files, flags, objects), distinct from runtime failures (1).
pub const EXIT_BAD_INPUT: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd(args) => crd::run(args),
        Command::Sync(args) => sync::run(args),
        Command::FetchModel(args) => fetch_model::run(args),
    }
}
