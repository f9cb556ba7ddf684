//! The `skybridge` command line: one binary, one subcommand per job.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod crd;

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
}

/// Exit status for bad input (files, flags, objects), distinct from runtime failures (1).
pub const EXIT_BAD_INPUT: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd(args) => crd::run(args),
    }
}
