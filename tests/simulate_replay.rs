//! The simulation core: the bound is a bound, baselines are what they say, the example policy
//! meets its targets on the NYC trace.

use proptest::prelude::*;
use skybridge::estate::{Estate, load_paths};
use skybridge::planner::ComponentKey;
use skybridge::simulate::{SimulationOptions, Trace, parse_trace, simulate};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> Estate {
    load_paths(&[root().join("examples/ecommerce")]).unwrap()
}

fn ranker() -> ComponentKey {
    ComponentKey {
        namespace: "recsys".into(),
        deployment: "ctr-ranker".into(),
        component: "ranker".into(),
    }
}

fn nyc() -> Trace {
    let path = root().join("examples/traces/nyc_taxi.csv");
    parse_trace(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
}

#[test]
fn example_policy_meets_its_targets_on_the_nyc_trace() {
    let sim = simulate(
        &example(),
        Some(&ranker()),
        &nyc(),
        SimulationOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let policy = sim.policy.metrics;
    let ratio = sim.cost_ratio_to_lower_bound.unwrap();
    assert!(ratio >= 1.0, "{ratio}");
    assert!(ratio <= 1.10, "cost ratio to the lower bound {ratio}");
    assert!(policy.unmet_demand_fraction <= 0.001, "{policy:?}");
    assert!(policy.cost < sim.private_only.unwrap().metrics.cost);
    assert!(policy.cost < sim.public_only.unwrap().metrics.cost);
    assert!(policy.cost < sim.static_threshold.metrics.cost);
    assert!(policy.burst_events > 0);
}

#[test]
fn baselines_are_what_they_say() {
    let sim = simulate(
        &example(),
        Some(&ranker()),
        &short(&nyc(), 7 * 48),
        SimulationOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let private = sim.private_only.unwrap().metrics;
    assert_eq!(private.public_replica_hours, 0.0);
    assert_eq!(private.burst_events, 0);
    let public = sim.public_only.unwrap().metrics;
    assert_eq!(public.private_cost, 0.0);
    assert!(public.public_replica_hours > 0.0);
}

/// The static threshold keeps every private replica on, from the first step: a run starting at
/// a third of what they serve bursts nothing (it started with only what the first demand needs
/// and, measuring utilisation against those, burst a block at once).
#[test]
fn the_threshold_baseline_starts_with_every_private_replica_on() {
    use skybridge::simulate::{ThresholdScaler, policy_world, replay};
    let world = policy_world(&example(), &ranker()).unwrap();
    let private = world.private_capacity;
    assert!(private > 3, "{private}");
    let demand = vec![f64::from(private) * world.target() / 3.0; 30];
    let out = replay(
        &world,
        &demand,
        1_400_000_000,
        60,
        &mut ThresholdScaler::for_world(&world),
        true,
        &mut |_| {},
    );
    let series = out.series.unwrap();
    let pools = series.pools.len();
    let ready_at_start: u32 = series.ready[..pools].iter().sum();
    assert_eq!(ready_at_start, private);
    assert_eq!(out.metrics.public_replica_hours, 0.0, "{:?}", out.metrics);
    assert_eq!(out.metrics.scale_events, 0, "{:?}", out.metrics);
}

#[test]
fn sensitive_components_have_no_public_baseline() {
    // The example's sensitive query encoder, given the ranking policy in a copy of the estate:
    // no public pool may run it, so there is no public-only baseline and nothing ever bursts.
    let dir = std::env::temp_dir().join(format!("skybridge-sim-sensitive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["pools.yaml", "policies.yaml", "recommendation.yaml"] {
        std::fs::copy(root().join("examples/ecommerce").join(f), dir.join(f)).unwrap();
    }
    let search = std::fs::read_to_string(root().join("examples/ecommerce/search.yaml")).unwrap();
    let search = search.replace(
        "      replicas: { min: 3, max: 6 }\n      pools: [dc1-a100]",
        "      replicas: { min: 3, max: 6 }\n      pools: [dc1-a100]\n      burstPolicy: ranking",
    );
    std::fs::write(dir.join("search.yaml"), search).unwrap();
    let estate = load_paths(std::slice::from_ref(&dir)).unwrap();
    let key = ComponentKey {
        namespace: "search".into(),
        deployment: "query-encoder".into(),
        component: "encoder".into(),
    };
    let sim = simulate(
        &estate,
        Some(&key),
        &short(&nyc(), 96),
        SimulationOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(sim.public_only.is_none());
    assert_eq!(sim.policy.metrics.public_replica_hours, 0.0);
    assert_eq!(sim.lower_bound.public_replica_hours, 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

fn short(trace: &Trace, rows: usize) -> Trace {
    Trace {
        points: trace.points[..rows].to_vec(),
    }
}

fn synthetic(values: &[f64]) -> Trace {
    let text: String = std::iter::once("timestamp,value\n".to_string())
        .chain(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{},{v}\n", 1_400_000_000 + i as i64 * 1800)),
        )
        .collect();
    parse_trace(&text, Path::new("synthetic.csv")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// No run in the policy's world that serves all demand costs less than the bound.
    #[test]
    fn the_lower_bound_is_a_lower_bound(values in prop::collection::vec(0.0f64..1.0, 3..24)) {
        let sim = simulate(
            &example(),
            Some(&ranker()),
            &synthetic(&values),
            SimulationOptions { step: 300, ..Default::default() },
            &mut |_, _| {},
        )
        .unwrap();
        let bound = sim.lower_bound.cost;
        for run in [&sim.policy.metrics, &sim.static_threshold.metrics] {
            if run.unmet_demand_fraction < 1e-12 {
                prop_assert!(run.cost >= bound - 1e-6, "{} < {bound}", run.cost);
            }
        }
        prop_assert!(sim.lower_bound.unmet_demand_fraction < 1e-9);
    }

    /// The same input gives the same figures.
    #[test]
    fn simulation_is_deterministic(values in prop::collection::vec(0.0f64..1.0, 3..12)) {
        let run = || simulate(
            &example(),
            Some(&ranker()),
            &synthetic(&values),
            SimulationOptions { step: 120, record: true, ..Default::default() },
            &mut |_, _| {},
        )
        .unwrap();
        let (a, b) = (run(), run());
        prop_assert_eq!(a.policy.metrics, b.policy.metrics);
        prop_assert_eq!(a.policy.series, b.policy.series);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// `replicaChanges` is the sum of the sizes of the changes `scaleEvents` counts: recomputed
    /// from the recorded series of the policy, and for the static threshold (whose changes are
    /// whole blocks of a tenth of `max` below `max`, after its first move to its base) at most
    /// a block per change plus that move.
    #[test]
    fn replica_changes_sum_the_sizes_of_the_scale_changes(
        values in prop::collection::vec(0.0f64..1.0, 3..24),
    ) {
        let estate = example();
        let world = skybridge::simulate::policy_world(&estate, &ranker()).unwrap();
        // Peaks up to twice the private capacity: the threshold's blocks stay under `max`.
        let peak = f64::from(world.private_capacity) * world.target() * 2.0;
        let sim = simulate(
            &estate,
            Some(&ranker()),
            &synthetic(&values),
            SimulationOptions { step: 300, peak: Some(peak), record: true },
            &mut |_, _| {},
        )
        .unwrap();
        let series = sim.policy.series.as_ref().unwrap();
        let pools = series.pools.len();
        let totals: Vec<i64> = series
            .requested
            .chunks(pools)
            .map(|step| step.iter().map(|&r| i64::from(r)).sum())
            .collect();
        let deltas: Vec<u64> = totals.windows(2).map(|w| w[0].abs_diff(w[1])).collect();
        let policy = sim.policy.metrics;
        prop_assert_eq!(policy.replica_changes, deltas.iter().sum::<u64>());
        prop_assert_eq!(policy.scale_events, deltas.iter().filter(|&&d| d > 0).count() as u64);
        prop_assert!(policy.replica_changes >= policy.scale_events);
        // The threshold starts from what the first demand needs and moves to its base (every
        // private replica) at once; every later change is one block.
        let threshold = sim.static_threshold.metrics;
        let block = u64::from(world.max().div_ceil(10));
        let base = u64::from(world.private_capacity);
        prop_assert!(threshold.replica_changes >= threshold.scale_events);
        prop_assert!(
            threshold.replica_changes <= block * threshold.scale_events + base,
            "{} replicas changed in {} changes", threshold.replica_changes, threshold.scale_events
        );
    }
}
