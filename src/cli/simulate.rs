//! `skybridge simulate`: replay a demand trace through the burst controller and baselines.
//! Files are read and written here; everything else is the library's pure simulation.

use super::{EXIT_BAD_INPUT, OutputFormat, bad_input};
use clap::Args;
use skybridge::estate::load_paths;
use skybridge::planner::ComponentKey;
use skybridge::report::simulate_report;
use skybridge::simulate::{SimulationOptions, csv_out, parse_trace, plot, simulate};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// YAML file (multi-document) or directory of them with ComputePool, BurstPolicy and
    /// ModelDeployment objects. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<PathBuf>,
    /// Demand trace: CSV with a `timestamp,value` header (e.g. examples/traces/nyc_taxi.csv).
    #[arg(long, value_name = "CSV")]
    trace: PathBuf,
    /// The component to simulate; default: the first, in key order, with a burst policy.
    #[arg(long, value_name = "NAMESPACE/NAME/COMPONENT")]
    component: Option<String>,
    /// Peak demand (requests per second) the trace is scaled to; default: what the component's
    /// `max` replicas serve (max × targetPerReplica).
    #[arg(long, value_name = "RPS")]
    peak: Option<f64>,
    /// Seconds per simulated step; the trace is interpolated linearly between its rows.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    step: u32,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Write an SVG plot of demand and ready capacity by pool.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Write the policy run's per-step series as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
}

pub fn run(args: SimulateArgs) -> ExitCode {
    let estate = match load_paths(&args.files) {
        Ok(estate) => estate,
        Err(errors) => {
            for err in &errors {
                eprintln!("error: {err}");
            }
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let component = match args.component.as_deref().map(parse_key).transpose() {
        Ok(key) => key,
        Err(message) => return bad_input(message),
    };
    if let Some(peak) = args.peak
        && !(peak > 0.0 && peak.is_finite())
    {
        return bad_input(format!("--peak {peak}: must be a positive number"));
    }
    if args.step == 0 {
        return bad_input("--step 0: must be at least 1 second".into());
    }
    let text = match std::fs::read_to_string(&args.trace) {
        Ok(text) => text,
        Err(e) => return bad_input(format!("{}: {e}", args.trace.display())),
    };
    let trace = match parse_trace(&text, &args.trace) {
        Ok(trace) => trace,
        Err(e) => return bad_input(e.to_string()),
    };
    let options = SimulationOptions {
        peak: args.peak,
        step: i64::from(args.step),
        record: args.plot.is_some() || args.csv.is_some(),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("simulating {bar:40} {percent}% {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let result = simulate(
        &estate,
        component.as_ref(),
        &trace,
        options,
        &mut |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            }
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let sim = match result {
        Ok(sim) => sim,
        Err(e) => return bad_input(e.to_string()),
    };
    if let Some(series) = &sim.policy.series {
        if let Some(path) = &args.plot {
            let title = format!("{} under BurstPolicy {}", sim.component, sim.policy_name);
            let svg = match plot::render_svg(series, &title) {
                Ok(svg) => svg,
                Err(e) => {
                    eprintln!("error: cannot draw the plot: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = std::fs::write(path, svg) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        if let Some(path) = &args.csv {
            let text = match csv_out::series_csv(series) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("error: cannot write the series: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let report = simulate_report(&sim);
    super::print(&report, args.output, |r| r.to_table())
}

fn parse_key(text: &str) -> Result<ComponentKey, String> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [namespace, deployment, component] if parts.iter().all(|p| !p.is_empty()) => {
            Ok(ComponentKey {
                namespace: namespace.to_string(),
                deployment: deployment.to_string(),
                component: component.to_string(),
            })
        }
        _ => Err(format!(
            "--component {text}: expected NAMESPACE/NAME/COMPONENT"
        )),
    }
}
