//! `skybridge plan`: a dry run of placement, like `terraform plan` for hybrid clouds.

use super::{EXIT_BAD_INPUT, OutputFormat, bad_input};
use clap::Args;
use skybridge::estate::{DemandOverrides, InputLimits, load_paths_within};
use skybridge::planner::{ComponentKey, plan};
use skybridge::report::plan_report;
use std::path::PathBuf;
use std::process::ExitCode;

/// Printed after the options of `plan` and `simulate`.
pub const LIMITS_HELP: &str = "Bad input is an error (exit status 2) naming file, line, object and field: input over a \
limit above, a number that is not finite or out of range (prices 0 to 1e6), a document that is not a \
mapping, an empty file or directory, an object name that is not a DNS name. Control characters in \
messages are printed escaped. Details: docs/security.md, \"Input limits\".";

#[derive(Args, Debug)]
#[command(after_help = LIMITS_HELP)]
pub struct PlanArgs {
    /// YAML file (multi-document) or directory of them with ComputePool, BurstPolicy and
    /// ModelDeployment objects. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<PathBuf>,
    /// Replicas a component wants, as NAMESPACE/NAME/COMPONENT=REPLICAS; default: its `min`.
    /// Clamped to the component's min and max. Repeatable.
    #[arg(long, value_name = "NAMESPACE/NAME/COMPONENT=REPLICAS")]
    demand: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    #[command(flatten)]
    limits: InputLimitArgs,
}

/// Caps on the YAML input (docs/security.md, "Input limits"); input beyond one is an error
/// (exit 2), found before the oversized part is read or parsed.
#[derive(Args, Debug)]
pub struct InputLimitArgs {
    /// Largest YAML file read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = InputLimits::default().max_file_bytes)]
    max_file_bytes: u64,
    /// Most bytes read over all YAML files together.
    #[arg(long, value_name = "BYTES", default_value_t = InputLimits::default().max_total_bytes)]
    max_input_bytes: u64,
    /// Most YAML files read (directories are searched recursively).
    #[arg(long, value_name = "COUNT", default_value_t = InputLimits::default().max_files)]
    max_files: usize,
    /// Deepest nesting of a YAML document (indentation levels, list entries and brackets).
    #[arg(long, value_name = "LEVELS", default_value_t = InputLimits::default().max_yaml_depth)]
    max_yaml_depth: usize,
}

impl InputLimitArgs {
    pub fn limits(&self) -> InputLimits {
        InputLimits {
            max_file_bytes: self.max_file_bytes,
            max_total_bytes: self.max_input_bytes,
            max_files: self.max_files,
            max_yaml_depth: self.max_yaml_depth,
        }
    }
}

pub fn run(args: PlanArgs) -> ExitCode {
    let estate = match load_paths_within(&args.files, &args.limits.limits()) {
        Ok(estate) => estate,
        Err(errors) => {
            for err in &errors {
                eprintln!("error: {err}");
            }
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let mut demand = DemandOverrides::new();
    for text in &args.demand {
        match parse_demand(text) {
            Ok((key, replicas)) => {
                let known = estate
                    .deployment(&key.namespace, &key.deployment)
                    .is_some_and(|d| d.spec.components.iter().any(|c| c.name == key.component));
                if !known {
                    return bad_input(format!(
                        "--demand {text}: no component {key} in the given files"
                    ));
                }
                demand.insert(key, replicas);
            }
            Err(message) => return bad_input(format!("--demand {text}: {message}")),
        }
    }
    let plan = plan(&skybridge::estate::plan_input(&estate, &demand));
    let mut report = plan_report(&plan);
    skybridge::report::add_planned_traffic(&mut report, &estate);
    skybridge::report::add_rollout_view(&mut report, &estate);
    super::print(&report, args.output, |r| r.to_table())
}

fn parse_demand(text: &str) -> Result<(ComponentKey, u32), String> {
    let (key, replicas) = text
        .split_once('=')
        .ok_or("expected NAMESPACE/NAME/COMPONENT=REPLICAS")?;
    let replicas: u32 = replicas
        .trim()
        .parse()
        .map_err(|_| format!("{replicas:?} is not a replica count"))?;
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [namespace, deployment, component] if parts.iter().all(|p| !p.is_empty()) => Ok((
            ComponentKey {
                namespace: namespace.to_string(),
                deployment: deployment.to_string(),
                component: component.to_string(),
            },
            replicas,
        )),
        _ => Err("expected NAMESPACE/NAME/COMPONENT=REPLICAS".into()),
    }
}
