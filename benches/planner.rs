//! Plans 10,000 ModelDeployments of 2 components each over 500 pools and prints the time per
//! full plan and per component decision. Target: a full plan in under 100 ms on one core.
//! Run with `cargo bench --bench planner`.

use skybridge::api::{Cloud, DataClass};
use skybridge::planner::{
    Budget, BurstPreference, ComponentKey, ComponentRequest, Headroom, PlanInput, PlannerOptions,
    PoolHealth, PoolView, Price, Resources, plan,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const POOLS: usize = 500;
const DEPLOYMENTS: usize = 10_000;
const TARGET: Duration = Duration::from_millis(100);

/// A small deterministic generator, so every run plans the same estate.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const GPU_TYPES: [&str; 3] = ["nvidia-a100-80gb", "nvidia-l4", "nvidia-h100"];

/// A large enterprise estate: 150 private and 350 public pools over three GPU types, and
/// 10,000 deployments of an encoder (sensitive in a quarter of them) and a bursting ranker.
fn estate() -> PlanInput {
    let mut rng = SplitMix(42);
    let pools = (0..POOLS)
        .map(|i| {
            let cloud = if i < 150 {
                Cloud::Private
            } else {
                Cloud::Public
            };
            let gpu_type = GPU_TYPES[i % 3].to_string();
            let gpus = match cloud {
                Cloud::Private => 128 + rng.below(384) as u32,
                Cloud::Public => 64 + rng.below(192) as u32,
            };
            PoolView {
                name: format!("pool-{i:03}"),
                cloud,
                admits: match cloud {
                    Cloud::Private => DataClass::ALL.to_vec(),
                    Cloud::Public => vec![DataClass::Public, DataClass::Internal],
                },
                capacity: Headroom {
                    gpus,
                    cpu_milli: Some(u64::from(gpus) * 8_000),
                    memory_bytes: Some(u64::from(gpus) * (64 << 30)),
                    replicas: None,
                },
                gpu_type: Some(gpu_type),
                health: if rng.below(50) == 0 {
                    PoolHealth::Unhealthy("probe failed".into())
                } else {
                    PoolHealth::Healthy
                },
                price: Price {
                    gpu_hour: if cloud == Cloud::Private { 0.3 } else { 0.8 }
                        + rng.below(300) as f64 / 100.0,
                    cpu_hour: 0.02,
                    gib_hour: 0.002,
                },
                startup_seconds: 60,
                cluster: "local".into(),
                exports_traffic: false,
            }
        })
        .collect::<Vec<_>>();
    let mut components = Vec::with_capacity(DEPLOYMENTS * 2);
    for d in 0..DEPLOYMENTS {
        let sensitive_model = d % 4 == 0;
        for (c, name) in ["encoder", "ranker"].iter().enumerate() {
            let data_class = if c == 0 && sensitive_model {
                DataClass::Sensitive
            } else {
                DataClass::Internal
            };
            let gpu_type = GPU_TYPES[(d + c) % 3];
            let min = 1 + rng.below(2) as u32;
            // One deployment in ten names its public pools; the rest take the cheapest.
            let order = if d % 10 == 0 {
                (0..3)
                    .map(|k| format!("pool-{:03}", 150 + (3 * (d + k) + (d + c) % 3) % 350))
                    .collect()
            } else {
                Vec::new()
            };
            components.push(ComponentRequest {
                key: ComponentKey {
                    namespace: format!("team-{}", d % 50),
                    deployment: format!("md-{d:05}"),
                    component: name.to_string(),
                },
                data_class,
                model_data_class: if sensitive_model {
                    DataClass::Sensitive
                } else {
                    DataClass::Internal
                },
                per_replica: Resources {
                    gpus: 1,
                    cpu_milli: 4000,
                    memory_bytes: 16 << 30,
                },
                gpu_type: Some(gpu_type.to_string()),
                min,
                desired: min + rng.below(3) as u32,
                allowed_pools: None,
                policy: Some(format!("policy-{}", d % 20)),
                burst: BurstPreference {
                    enabled: true,
                    order,
                },
                current: BTreeMap::new(),
                rebalance: true,
                traffic_home_cluster: None,
            });
        }
    }
    let budgets = (0..20)
        .map(|p| {
            (
                format!("policy-{p}"),
                Budget {
                    max_public_replicas: Some(2_000),
                    max_cost_per_hour: Some(8_000.0),
                },
            )
        })
        .collect();
    PlanInput {
        pools,
        components,
        budgets,
        options: PlannerOptions::default(),
    }
}

fn time_plan(input: &PlanInput, runs: u32) -> (Duration, skybridge::planner::Plan) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let plan = plan(input);
        best = best.min(start.elapsed());
        last = Some(plan);
    }
    (best, last.expect("at least one run"))
}

fn main() {
    let input = estate();
    let decisions = input.components.len();
    let (fresh, first) = time_plan(&input, 5);
    let placed: u32 = first.components.iter().map(|c| c.placed()).sum();
    let unplaced: u32 = first.components.iter().map(|c| c.unplaced).sum();

    // The steady state the operator meets on every reconcile: the same estate, already placed.
    let mut replan = input.clone();
    for (c, p) in replan.components.iter_mut().zip(&first.components) {
        c.current = p
            .placements
            .iter()
            .map(|pl| (pl.pool.clone(), pl.replicas))
            .collect();
    }
    let (steady, second) = time_plan(&replan, 5);
    assert_eq!(
        first, second,
        "re-planning an unchanged estate must not move anything"
    );

    println!(
        "planner benchmark: {DEPLOYMENTS} deployments x 2 components over {POOLS} pools (best of 5, one core)"
    );
    println!("  replicas placed {placed}, unplaced {unplaced}");
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for c in first.components.iter().filter(|c| c.unplaced > 0) {
        for r in &c.reasons {
            *why.entry(r.split(':').next().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    println!("  unplaced because (components): {why:?}");
    for (label, took) in [("fresh plan", fresh), ("re-plan (steady state)", steady)] {
        println!(
            "  {label:<24} {:>8.1} ms   {:>6.2} us per component decision   {:.2}x of the 100 ms target",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / decisions as f64,
            took.as_secs_f64() / TARGET.as_secs_f64(),
        );
    }
}
