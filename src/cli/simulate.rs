//! `skybridge simulate`: replay a demand trace through the burst controller and baselines.
//! Files are read and written here; everything else is the library's pure simulation.

use super::{EXIT_BAD_INPUT, OutputFormat, bad_input, runtime_error};
use clap::Args;
use skybridge::estate::load_paths_within;
use skybridge::planner::ComponentKey;
use skybridge::report::simulate_report;
use skybridge::simulate::capacity_events::{CapacityEvents, parse_stockout};
use skybridge::simulate::{
    DEFAULT_MAX_STEPS, SimulationOptions, csv_out, parse_trace, plot, simulate_with_events,
};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(after_help = super::plan::LIMITS_HELP)]
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
    /// Peak demand (requests per second) the trace is scaled to, positive and at most 1e15;
    /// default: what the component's `max` replicas serve (max × targetPerReplica).
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
    #[command(flatten)]
    limits: super::plan::InputLimitArgs,
    /// Most simulated steps ((last timestamp - first) / --step + 1); memory grows with them.
    #[arg(long, value_name = "STEPS", default_value_t = DEFAULT_MAX_STEPS)]
    max_steps: u64,
    /// Largest trace file read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_TRACE_BYTES)]
    max_trace_bytes: u64,
    /// Sweep a policy field over values (repeatable: the grid is every combination), e.g.
    /// `metric.targetPerReplica=300..500:50` (inclusive range) or `metric.headroomPercent=0,1,5`.
    /// Prints the Pareto frontier of public spend against unmet demand; `--plot` draws it.
    #[arg(long, value_name = "FIELD=FROM..TO:STEP")]
    sweep: Vec<String>,
    /// Threads for `--sweep`; default: every core.
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Replay a canary rollout of the component's deployment (its `spec.rollout`) starting this
    /// many seconds after the trace's start, and report what its surge costs.
    #[arg(long, value_name = "SECONDS")]
    rollout_at: Option<i64>,
    /// A stockout of a pool (repeatable): `POOL@START+HOURS` (START like 2014-11-02T00:00:00)
    /// or `POOL@busiest-week`. New replicas there wait; the pool's tracker marks it short after
    /// its `stockout.unschedulableSeconds` and its shortfall goes to the next eligible pool.
    #[arg(long, value_name = "POOL@START+HOURS")]
    stockout: Vec<String>,
    /// Random stockouts of each spot pool: mean episodes per week (with --seed).
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    stockouts_per_week: f64,
    /// Length of each random stockout.
    #[arg(long, value_name = "HOURS", default_value_t = 6.0)]
    stockout_hours: f64,
    /// Random interruptions of each spot pool: mean per day (with --seed); each takes one node
    /// (`elastic.gpusPerNode`, else one replica), replaced ahead within the notice.
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    spot_interruptions_per_day: f64,
    /// Notice before an interrupted spot node goes (AWS: 120 s, GCP and Azure: 30 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    interruption_notice: u32,
    /// Seed of the random stockouts and interruptions: the same seed, the same episodes.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Elastic pools' node start-up: a replica that needs a node the pool does not have up (nodes
    /// stay up 10 minutes after they were last needed) takes `elastic.nodeStartupSeconds` more
    /// than the pool's `startupSeconds`. Without it every replica starts in `startupSeconds`.
    #[arg(long)]
    node_startup: bool,
    /// Overrides the simulated component's policy `burst.onDemandFloorPercent` (0..100), to
    /// compare what a floor buys.
    #[arg(long, value_name = "PERCENT")]
    on_demand_floor: Option<u32>,
}

/// Largest trace read by default: about a million rows.
const DEFAULT_MAX_TRACE_BYTES: u64 = 64 << 20;

/// Largest `--peak`: beyond it, sums of demand over a long trace leave the range where costs and
/// percentages stay exact enough to print.
const MAX_PEAK: f64 = 1e15;

pub fn run(args: SimulateArgs) -> ExitCode {
    let estate = match load_paths_within(&args.files, &args.limits.limits()) {
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
        && !(peak > 0.0 && peak <= MAX_PEAK)
    {
        return bad_input(format!(
            "--peak {peak}: must be a positive number of at most {MAX_PEAK:e}"
        ));
    }
    if args.step == 0 {
        return bad_input("--step 0: must be at least 1 second".into());
    }
    let text = match read_trace(&args.trace, args.max_trace_bytes) {
        Ok(text) => text,
        Err(e) => return bad_input(format!("{}: {e}", args.trace.display())),
    };
    let trace = match parse_trace(&text, &args.trace) {
        Ok(trace) => trace,
        Err(e) => return bad_input(e.to_string()),
    };
    let span = trace.end().saturating_sub(trace.start());
    if i64::from(args.step) > span {
        return bad_input(format!(
            "--step {}: longer than the trace, which spans {span} s (the run would be one sample, \
             charged for the whole step)",
            args.step
        ));
    }
    // Checked before anything is sampled: a trace over centuries at one-second steps would
    // otherwise allocate its samples first and fail (or not) afterwards.
    match trace.step_count(i64::from(args.step)) {
        Some(steps) if steps <= args.max_steps => {}
        steps => {
            return bad_input(format!(
                "{}: the trace spans {} s; at --step {} that is {} steps, more than --max-steps \
                 {} (raise --step or --max-steps)",
                args.trace.display(),
                trace.end().saturating_sub(trace.start()),
                args.step,
                steps.map_or("too many".to_string(), |s| s.to_string()),
                args.max_steps
            ));
        }
    }
    let mut estate = estate;
    if let Some(floor) = args.on_demand_floor {
        if floor > 100 {
            return bad_input(format!("--on-demand-floor {floor}: must be 0..100"));
        }
        let key = match skybridge::simulate::select_component(&estate, component.as_ref()) {
            Ok(key) => key,
            Err(e) => return bad_input(e.to_string()),
        };
        if let Err(e) = set_on_demand_floor(&mut estate, &key, floor) {
            return bad_input(e);
        }
    }
    let events = match capacity_events(&args, &trace) {
        Ok(events) => events,
        Err(e) => return bad_input(e),
    };
    if !args.sweep.is_empty() {
        if !events.is_empty() {
            return bad_input(
                "--stockout and the random episodes are not available with --sweep".into(),
            );
        }
        return run_sweep(&args, &estate, component.as_ref(), &trace);
    }
    let options = SimulationOptions {
        peak: args.peak,
        step: i64::from(args.step),
        record: args.plot.is_some() || args.csv.is_some() || args.rollout_at.is_some(),
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("simulating {bar:40} {percent}% {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let result = simulate_with_events(
        &estate,
        component.as_ref(),
        &trace,
        options,
        &events,
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
                Err(e) => return runtime_error(format!("cannot draw the plot: {e}")),
            };
            if let Err(e) = std::fs::write(path, svg) {
                return runtime_error(format!("{}: {e}", path.display()));
            }
        }
        if let Some(path) = &args.csv {
            let text = match csv_out::series_csv(series) {
                Ok(text) => text,
                Err(e) => return runtime_error(format!("cannot write the series: {e}")),
            };
            if let Err(e) = std::fs::write(path, text) {
                return runtime_error(format!("{}: {e}", path.display()));
            }
        }
    }
    let report = simulate_report(&sim);
    if let Some(offset) = args.rollout_at {
        return match skybridge::simulate::rollout::rollout_of(&estate, &sim, offset) {
            Ok(rollout) => super::print(
                &serde_json::json!({"simulation": report, "rollout": rollout}),
                args.output,
                |_| format!("{}\n{}", report.to_table(), rollout.to_table()),
            ),
            Err(e) => bad_input(e.to_string()),
        };
    }
    super::print(&report, args.output, |r| r.to_table())
}

/// The trace's text, refusing a file over `max_bytes` before (and while) reading it.
fn read_trace(path: &std::path::Path, max_bytes: u64) -> Result<String, String> {
    use std::io::Read;
    let over =
        || format!("larger than the limit of {max_bytes} bytes (raise it with --max-trace-bytes)");
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // Pipes (`--trace /dev/stdin`) have no length up front; `take` bounds them below.
    if file
        .metadata()
        .is_ok_and(|m| m.is_file() && m.len() > max_bytes)
    {
        return Err(over());
    }
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max_bytes {
        return Err(over());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
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

/// The capacity events the flags ask for.
fn capacity_events(
    args: &SimulateArgs,
    trace: &skybridge::simulate::Trace,
) -> Result<CapacityEvents, String> {
    let rate_ok = |r: f64| r.is_finite() && (0.0..=10_000.0).contains(&r);
    if !rate_ok(args.stockouts_per_week) {
        return Err(format!(
            "--stockouts-per-week {}: must be 0..10000",
            args.stockouts_per_week
        ));
    }
    if !rate_ok(args.spot_interruptions_per_day) {
        return Err(format!(
            "--spot-interruptions-per-day {}: must be 0..10000",
            args.spot_interruptions_per_day
        ));
    }
    if !(args.stockout_hours > 0.0 && args.stockout_hours <= 24.0 * 366.0) {
        return Err(format!(
            "--stockout-hours {}: must be in (0, 8784]",
            args.stockout_hours
        ));
    }
    Ok(CapacityEvents {
        stockouts: args
            .stockout
            .iter()
            .map(|s| parse_stockout(s, trace))
            .collect::<Result<_, _>>()?,
        stockouts_per_week: args.stockouts_per_week,
        stockout_seconds: (args.stockout_hours * 3600.0) as i64,
        interruptions_per_day: args.spot_interruptions_per_day,
        notice_seconds: i64::from(args.interruption_notice),
        seed: args.seed,
        // cluster-autoscaler's default scale-down-unneeded-time.
        node_kept_seconds: args.node_startup.then_some(600),
    })
}

/// Sets the floor of the policy `key`'s component names.
fn set_on_demand_floor(
    estate: &mut skybridge::estate::Estate,
    key: &ComponentKey,
    floor: u32,
) -> Result<(), String> {
    let policy = estate
        .deployment(&key.namespace, &key.deployment)
        .and_then(|d| d.spec.components.iter().find(|c| c.name == key.component))
        .and_then(|c| c.burst_policy.clone())
        .ok_or_else(|| format!("--on-demand-floor: {key} has no burstPolicy"))?;
    let Some(policy) = estate.policies.get_mut(&policy) else {
        return Err(format!(
            "--on-demand-floor: BurstPolicy {policy} is not in the given files"
        ));
    };
    std::sync::Arc::make_mut(policy)
        .spec
        .burst
        .on_demand_floor_percent = Some(floor);
    Ok(())
}
