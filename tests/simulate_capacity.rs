//! `simulate` with public capacity as it really is (issue #19): stockouts and spot
//! interruptions, on an estate and a trace built here.

use skybridge::estate::{Estate, load_paths};
use skybridge::planner::ComponentKey;
use skybridge::simulate::capacity_events::{CapacityEvents, StockoutWindow, busiest_week};
use skybridge::simulate::{
    Simulation, SimulationOptions, Trace, parse_trace, simulate_with_events,
};
use std::path::Path;

const DAY: i64 = 86_400;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;

/// A private pool of 2 GPUs, a spot pool (elastic, one node of `spot_node_gpus`, short after 60 s
/// unschedulable, 600 s back-off, 300 s recovery) and an on-demand pool, both 32 GPUs; a policy
/// bursting spot first with `floor` % on-demand; one internal component of 1..30 replicas
/// serving 100/s each.
fn estate(floor: u32, spot_node_gpus: u32) -> Estate {
    let text = format!(
        r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: dc}}
spec: {{cloud: private, provider: onprem, region: fra, capacity: {{gpu: {{type: l4, count: 2}}}}, cost: {{gpuHour: 0.2}}, startupSeconds: 30, artifactStore: {{bucket: models}}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: spot}}
spec:
  cloud: public
  provider: aws
  region: euc1
  capacityType: Spot
  capacity: {{gpu: {{type: l4, count: 32}}}}
  cost: {{gpuHour: 0.4}}
  startupSeconds: 300
  elastic: {{autoscaler: Karpenter, nodeStartupSeconds: 120, gpusPerNode: {spot_node_gpus}}}
  stockout: {{unschedulableSeconds: 60, backoffSeconds: 600, recoverySeconds: 300}}
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: {{name: ondemand}}
spec: {{cloud: public, provider: aws, region: euc1, capacity: {{gpu: {{type: l4, count: 32}}}}, cost: {{gpuHour: 1.0}}, startupSeconds: 300}}
---
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: {{name: burst}}
spec:
  metric: {{prometheusUrl: "http://127.0.0.1:1", query: q, targetPerReplica: 100}}
  burst: {{enabled: true, pools: [spot, ondemand], onDemandFloorPercent: {floor}}}
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: {{name: recs, namespace: shop}}
spec:
  model: {{source: {{uri: "s3://models/recs", pool: dc}}, version: "1"}}
  components:
  - {{name: ranker, dataClass: internal, image: "serve:1", resources: {{gpu: {{count: 1, type: l4}}}}, replicas: {{min: 1, max: 30}}, burstPolicy: burst}}
"#
    );
    let dir = std::env::temp_dir().join(format!(
        "skybridge-sim-capacity-{}-{floor}-{spot_node_gpus}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("estate.yaml"), text).unwrap();
    load_paths(&[dir]).unwrap()
}

/// `days` days of demand every 10 minutes: a daily peak of 2,000/s (20 replicas) in the
/// afternoon, 100/s at night; day 3's peak is the largest (2,400/s).
fn trace(days: i64) -> Trace {
    let mut text = String::from("timestamp,value\n");
    for k in 0..days * 144 {
        let t = START + k * 600;
        let hour = (k % 144) as f64 / 6.0;
        let daily = (-(hour - 15.0).powi(2) / 8.0).exp();
        let scale = if k / 144 == 2 { 2_400.0 } else { 2_000.0 };
        text.push_str(&format!("{t},{:.1}\n", 100.0 + daily * (scale - 100.0)));
    }
    parse_trace(&text, Path::new("constructed.csv")).unwrap()
}

fn ranker() -> ComponentKey {
    ComponentKey {
        namespace: "shop".into(),
        deployment: "recs".into(),
        component: "ranker".into(),
    }
}

fn run(estate: &Estate, trace: &Trace, events: &CapacityEvents) -> Simulation {
    let options = SimulationOptions {
        peak: Some(2_400.0),
        ..Default::default()
    };
    simulate_with_events(
        estate,
        Some(&ranker()),
        trace,
        options,
        events,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn random_episodes_are_the_same_for_a_seed_and_differ_between_seeds() {
    let (estate, trace) = (estate(0, 4), trace(6));
    let events = |seed| CapacityEvents {
        stockouts_per_week: 3.0,
        stockout_seconds: 3 * 3600,
        interruptions_per_day: 4.0,
        notice_seconds: 120,
        seed,
        ..Default::default()
    };
    let a = run(&estate, &trace, &events(7));
    let b = run(&estate, &trace, &events(7));
    assert_eq!(a.policy.metrics, b.policy.metrics);
    assert_eq!(a.policy.capacity, b.policy.capacity);
    assert!(
        a.policy.capacity.interruptions > 0,
        "{:?}",
        a.policy.capacity
    );
    let c = run(&estate, &trace, &events(8));
    assert_ne!(
        (a.policy.capacity, a.policy.metrics),
        (c.policy.capacity, c.policy.metrics),
        "another seed, other episodes"
    );
}

#[test]
fn a_stockout_over_a_peak_makes_the_spot_pool_short_and_moves_its_shortfall_on_demand() {
    let (estate, trace) = (estate(0, 4), trace(4));
    let calm = run(&estate, &trace, &CapacityEvents::default());
    assert_eq!(calm.policy.capacity, Default::default());
    // Spot runs out from 10:00 to 20:00 on day 2, across the afternoon peak.
    let stockout = CapacityEvents {
        stockouts: vec![StockoutWindow {
            pool: "spot".into(),
            start: START + DAY + 10 * 3600,
            end: START + DAY + 20 * 3600,
        }],
        ..Default::default()
    };
    let short = run(&estate, &trace, &stockout);
    let figures = short.policy.capacity;
    assert_eq!(figures.stockouts, 1);
    assert!(figures.pools_short >= 1, "{figures:?}");
    assert!(figures.shortfall_replaced > 0, "{figures:?}");
    // The replicas that waited in the stockout cost unmet demand; the shortfall then runs on
    // the dearer on-demand pool.
    let (before, after) = (calm.policy.metrics, short.policy.metrics);
    assert!(
        after.unmet_demand_fraction > before.unmet_demand_fraction,
        "{before:?} {after:?}"
    );
    assert!(
        after.public_cost > before.public_cost,
        "{before:?} {after:?}"
    );
    // Runs see the same episode; the lower bound and oracle do not.
    assert_eq!(short.static_threshold.capacity.stockouts, 1);
    assert_eq!(short.oracle, calm.oracle);
}

#[test]
fn an_on_demand_floor_reduces_unmet_demand_under_spot_interruptions() {
    // One spot node holds every spot replica (32 GPUs): an interruption takes them all, with
    // 30 s notice against a 300 s start-up.
    let trace = trace(6);
    let events = CapacityEvents {
        interruptions_per_day: 6.0,
        notice_seconds: 30,
        seed: 3,
        ..Default::default()
    };
    let without = run(&estate(0, 32), &trace, &events);
    let with = run(&estate(50, 32), &trace, &events);
    assert!(without.policy.capacity.replicas_interrupted > 0);
    let (a, b) = (without.policy.metrics, with.policy.metrics);
    assert!(
        b.unmet_demand_fraction < a.unmet_demand_fraction,
        "floor 50%: {b:?}; none: {a:?}"
    );
    assert!(
        b.public_cost > a.public_cost,
        "the floor costs on-demand prices"
    );
}

#[test]
fn elastic_node_start_up_slows_the_bursts_that_need_new_nodes() {
    // Every afternoon's burst needs spot nodes the pool scaled away overnight: modelled, those
    // replicas take the 120 s node start-up on top of the pool's 300 s.
    let (estate, trace) = (estate(0, 4), trace(4));
    let instant = run(&estate, &trace, &CapacityEvents::default());
    let nodes = CapacityEvents {
        node_kept_seconds: Some(600),
        ..Default::default()
    };
    let modelled = run(&estate, &trace, &nodes);
    let (a, b) = (instant.policy.metrics, modelled.policy.metrics);
    assert!(
        b.unmet_demand_fraction > a.unmet_demand_fraction,
        "with node start-up {b:?}; without {a:?}"
    );
    // Nodes kept up a whole day: every burst after the first finds its nodes.
    let kept = run(
        &estate,
        &trace,
        &CapacityEvents {
            node_kept_seconds: Some(4 * DAY),
            ..Default::default()
        },
    );
    assert!(
        kept.policy.metrics.unmet_demand_fraction < b.unmet_demand_fraction,
        "{:?}",
        kept.policy.metrics
    );
}

#[test]
fn the_busiest_week_is_the_one_with_the_most_demand() {
    // 21 days; days 8 to 14 carry twice the demand.
    let mut text = String::from("timestamp,value\n");
    for h in 0..21 * 24 {
        let value = if (7 * 24..14 * 24).contains(&h) {
            200
        } else {
            100
        };
        text.push_str(&format!("{},{value}\n", START + h * 3600));
    }
    let trace = parse_trace(&text, Path::new("weeks.csv")).unwrap();
    assert_eq!(busiest_week(&trace), START + 7 * DAY);
    // Shorter than a week: its start.
    assert_eq!(busiest_week(&self::trace(3)), START);
}

#[test]
fn bad_capacity_flags_are_refused_with_exit_2_and_say_why() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let trace = root.join("examples/traces/nyc_taxi.csv");
    for (flags, says) in [
        (
            vec!["--stockout", "nope@busiest-week"],
            "pool nope, which is not in the given files",
        ),
        (
            vec!["--stockout", "aws-euc1-l4-spot@2014-11-01"],
            "expected POOL@START+HOURS",
        ),
        (
            vec!["--stockout", "aws-euc1-l4-spot@2014-11-01T00:00:00+0"],
            "HOURS must be",
        ),
        (
            vec!["--stockouts-per-week", "NaN"],
            "--stockouts-per-week NaN",
        ),
        (vec!["--on-demand-floor", "101"], "must be 0..100"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skybridge"))
            .args(["simulate", "-f"])
            .arg(root.join("examples/ecommerce"))
            .arg("--trace")
            .arg(&trace)
            .args(&flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
