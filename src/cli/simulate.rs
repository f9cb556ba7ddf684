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
    /// Sweep a policy field over values (repeatable: the grid is every combination), e.g.
    /// `metric.targetPerReplica=300..500:50` (inclusive range) or `metric.headroomPercent=0,1,5`.
    /// Prints the Pareto frontier of public spend against unmet demand; `--plot` draws it.
    #[arg(long, value_name = "FIELD=FROM..TO:STEP")]
    sweep: Vec<String>,
    /// Threads for `--sweep`; default: every core.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
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
    if !args.sweep.is_empty() {
        return run_sweep(&args, &estate, component.as_ref(), &trace);
    }
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

/// `simulate --sweep`: the grid in parallel, the frontier as a table or JSON, and its plot.
fn run_sweep(
    args: &SimulateArgs,
    estate: &skybridge::estate::Estate,
    component: Option<&ComponentKey>,
    trace: &skybridge::simulate::Trace,
) -> ExitCode {
    use skybridge::simulate::sweep::{Axis, sweep};
    if args.csv.is_some() {
        return bad_input(
            "--csv is not available with --sweep (it writes one run's series)".into(),
        );
    }
    if args.jobs == Some(0) {
        return bad_input("--jobs 0: must be at least 1".into());
    }
    let axes = match args
        .sweep
        .iter()
        .map(|s| Axis::parse(s))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(axes) => axes,
        Err(e) => return bad_input(e.to_string()),
    };
    let threads = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let options = SimulationOptions {
        peak: args.peak,
        step: i64::from(args.step),
        record: false,
    };
    let result = match sweep(estate, component, trace, options, &axes, threads) {
        Ok(result) => result,
        Err(e) => return bad_input(e.to_string()),
    };
    if let Some(path) = &args.plot {
        let title = format!(
            "{} under BurstPolicy {}: public spend against unmet demand",
            result.component, result.policy_name
        );
        let svg = match plot::render_frontier_svg(&result, &title) {
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
    let report = skybridge::report::sweep_report(&result);
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
