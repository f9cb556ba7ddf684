//! The `skybridge` command line: one binary, one subcommand per job.

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::process::ExitCode;

mod crd;
mod fetch_model;
mod plan;
mod run;
mod simulate;
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
    /// Dry-run placement of ModelDeployments over ComputePools, with reasons.
    Plan(plan::PlanArgs),
    /// Run the operator: reconcile ModelDeployments across private and public clusters.
    Run(run::RunArgs),
    /// Replay a demand trace through the burst controller, baselines and a lower bound.
    Simulate(simulate::SimulateArgs),
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
        Command::Plan(args) => plan::run(args),
        Command::Run(args) => run::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Sync(args) => sync::run(args),
        Command::FetchModel(args) => fetch_model::run(args),
    }
}

/// How a command prints its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// Prints `report` in `format`, as `table` renders it for people; serialisation failures are
/// runtime errors (exit 1).
pub fn print<T: Serialize>(
    report: &T,
    format: OutputFormat,
    table: impl Fn(&T) -> String,
) -> ExitCode {
    let rendered = match format {
        // Names and values from the input reach the table: escape them line by line (JSON and
        // YAML escape control characters themselves).
        OutputFormat::Table => Ok(table(report)
            .split_inclusive('\n')
            .map(|line| {
                let (text, newline) = match line.strip_suffix('\n') {
                    Some(text) => (text, "\n"),
                    None => (line, ""),
                };
                format!("{}{newline}", skybridge::estate::printable(text))
            })
            .collect()),
        OutputFormat::Json => serde_json::to_string_pretty(report)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        OutputFormat::Yaml => serde_yaml_ng::to_string(report).map_err(|e| e.to_string()),
    };
    match rendered {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: cannot render the report: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Reports a runtime failure (exit status 1), escaped like `bad_input`: it often names a path.
pub fn runtime_error(message: String) -> ExitCode {
    eprintln!("error: {}", skybridge::estate::printable(&message));
    ExitCode::FAILURE
}

/// Reports bad input and returns exit status 2. The message is escaped: it often quotes a flag
/// value or path the user (or a script fed with someone else's file names) passed.
pub fn bad_input(message: String) -> ExitCode {
    eprintln!("error: {}", skybridge::estate::printable(&message));
    ExitCode::from(EXIT_BAD_INPUT)
}
