//! Speed of the simulator: one year at one-minute steps (525,600 steps) for 100 deployments,
//! on one core, against a target of 2 s. Prints figures; asserts nothing.
//!
//! Each deployment is the example ranker (`recsys/ctr-ranker/ranker` under BurstPolicy
//! `ranking`) with its own demand: the NYC taxi trace tiled to a year, shifted by a different
//! phase and scaled to a different peak (50% to 100% of what its max serves), so the controller,
//! the planner cache and the start-up queues see 100 different runs. Run with
//! `cargo bench --bench simulate`.

use skybridge::estate::load_paths;
use skybridge::planner::ComponentKey;
use skybridge::simulate::{ControllerScaler, parse_trace, policy_world, replay};
use std::path::PathBuf;
use std::time::Instant;

const STEPS: usize = 525_600;
const DEPLOYMENTS: usize = 100;
const TARGET_SECONDS: f64 = 2.0;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let estate = load_paths(&[root.join("examples/ecommerce")]).expect("example estate");
    let key = ComponentKey {
        namespace: "recsys".into(),
        deployment: "ctr-ranker".into(),
        component: "ranker".into(),
    };
    let world = policy_world(&estate, &key).expect("ranker world");
    let path = root.join("examples/traces/nyc_taxi.csv");
    let text = std::fs::read_to_string(&path).expect("trace");
    let trace = parse_trace(&text, &path).expect("trace parses");
    let full_peak = f64::from(world.max()) * world.target();
    let base = trace.scaled_to(1.0).sample(60);

    // Demand per deployment is built before the clock starts: the benchmark times the replay.
    let demands: Vec<Vec<f64>> = (0..DEPLOYMENTS)
        .map(|d| {
            let phase = d * 7919 % base.len();
            let peak = full_peak * (0.5 + 0.5 * (d as f64 / DEPLOYMENTS as f64));
            (0..STEPS)
                .map(|k| base[(k + phase) % base.len()] * peak)
                .collect()
        })
        .collect();

    let cpu_started = cpu_seconds();
    let started = Instant::now();
    let mut cost = 0.0;
    let mut planner_calls = 0;
    for demand in &demands {
        let mut scaler = ControllerScaler::new(&world.controller);
        let out = replay(
            &world,
            demand,
            trace.start(),
            60,
            &mut scaler,
            false,
            &mut |_| {},
        );
        cost += out.metrics.cost;
        planner_calls += out.planner_calls;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds()
        .zip(cpu_started)
        .map(|(end, start)| end - start);
    let steps = (STEPS * DEPLOYMENTS) as f64;
    println!("simulate: {DEPLOYMENTS} deployments x {STEPS} one-minute steps (one year), one core");
    println!("  time:           {elapsed:.3} s");
    println!("  per step:       {:.1} ns", elapsed / steps * 1e9);
    println!(
        "  planner calls:  {planner_calls} (cache misses; {:.3}% of steps)",
        planner_calls as f64 / steps * 100.0
    );
    println!(
        "  ratio to the {TARGET_SECONDS} s target: {:.2}",
        elapsed / TARGET_SECONDS
    );
    if let Some(cpu) = cpu {
        // On a shared machine the wall time includes waiting for a core; the thread's own CPU
        // time does not.
        println!(
            "  thread CPU time: {cpu:.2} s ({:.1} ns per step, ratio {:.2} to the target)",
            cpu / steps * 1e9,
            cpu / TARGET_SECONDS
        );
    }
    println!("  (total simulated cost {cost:.0}, printed so the work is not optimised away)");
}

/// CPU time (user + system) of this thread in seconds, from Linux's `/proc/thread-self/stat`
/// (clock ticks, assumed 100 per second as on every common Linux build); `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
