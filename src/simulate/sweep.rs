//! `skybridge simulate --sweep`: the policy run over a grid of values of named policy fields, in
//! parallel, with the Pareto frontier of public spend against unmet demand. Baselines are run once
//! (they do not depend on the policy's knobs) on the same demand as every variant.

use super::replay::{ControllerScaler, RunMetrics, replay};
use super::world::{SetupError, policy_world, select_component};
use super::{SimulationOptions, Trace, baselines::ThresholdScaler, lower_bound, oracle};
use crate::api::{BurstPolicy, BurstPolicySpec};
use crate::estate::Estate;
use crate::planner::ComponentKey;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most variants a sweep runs: bounds time and memory whatever the grid asks.
pub const MAX_VARIANTS: usize = 10_000;

/// One axis of the grid: a policy field (dotted camelCase path under `spec`, e.g.
/// `metric.targetPerReplica`) and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub field: String,
    pub values: Vec<f64>,
}

/// Why a sweep cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    #[error(
        "--sweep {0}: expected FIELD=FROM..TO:STEP or FIELD=V1,V2,... (e.g. metric.targetPerReplica=300..500:50)"
    )]
    Syntax(String),
    #[error("--sweep {spec}: {reason}")]
    Range { spec: String, reason: String },
    #[error("the grid has {0} variants; at most {MAX_VARIANTS}")]
    TooLarge(usize),
    #[error("--sweep {field}: {reason}")]
    Field { field: String, reason: String },
    #[error(transparent)]
    Setup(#[from] SetupError),
}

impl Axis {
    /// Parses `FIELD=FROM..TO:STEP` (inclusive) or `FIELD=V1,V2,...`.
    pub fn parse(spec: &str) -> Result<Self, SweepError> {
        let syntax = || SweepError::Syntax(spec.to_string());
        let (field, values) = spec.split_once('=').ok_or_else(syntax)?;
        let field = field.trim();
        if field.is_empty()
            || !field
                .split('.')
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            return Err(syntax());
        }
        let number = |text: &str| -> Result<f64, SweepError> {
            let value: f64 = text.trim().parse().map_err(|_| syntax())?;
            if value.is_finite() {
                Ok(value)
            } else {
                Err(SweepError::Range {
                    spec: spec.to_string(),
                    reason: format!("{text} is not a finite number"),
                })
            }
        };
        let values = if let Some((from, rest)) = values.split_once("..") {
            let (to, step) = rest.split_once(':').ok_or_else(syntax)?;
            let (from, to, step) = (number(from)?, number(to)?, number(step)?);
            let range = |reason: &str| SweepError::Range {
                spec: spec.to_string(),
                reason: reason.to_string(),
            };
            if step <= 0.0 {
                return Err(range("the step must be positive"));
            }
            if to < from {
                return Err(range("the range must not end before it starts"));
            }
            let count = ((to - from) / step + 1e-9).floor() + 1.0;
            if count > MAX_VARIANTS as f64 {
                return Err(SweepError::TooLarge(count as usize));
            }
            // Multiples of the step from `from`, so 0.1 steps do not drift.
            (0..count as usize)
                .map(|i| from + step * i as f64)
                .collect()
        } else {
            values
                .split(',')
                .map(number)
                .collect::<Result<Vec<_>, _>>()?
        };
        if values.is_empty() {
            return Err(syntax());
        }
        Ok(Self {
            field: field.to_string(),
            values,
        })
    }
}

/// `spec` with `field` (dotted camelCase path) set to `value`: integral values are written as
/// integers, so integer fields take them. An unknown field or a value the field cannot take is an
/// error, not ignored.
pub fn with_field(
    spec: &BurstPolicySpec,
    field: &str,
    value: f64,
) -> Result<BurstPolicySpec, SweepError> {
    let fail = |reason: String| SweepError::Field {
        field: field.to_string(),
        reason,
    };
    let number = if value.fract() == 0.0 && value.abs() < 9.0e15 {
        serde_json::Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value)
            .map(serde_json::Value::Number)
            .ok_or_else(|| fail(format!("{value} is not a number")))?
    };
    let mut json = serde_json::to_value(spec).map_err(|e| fail(e.to_string()))?;
    let parts: Vec<&str> = field.split('.').collect();
    let (last, parents) = parts.split_last().expect("split gives one part at least");
    let mut node = &mut json;
    for part in parents {
        node = node
            .get_mut(*part)
            .filter(|n| n.is_object())
            .ok_or_else(|| fail(format!("no section {part} in a BurstPolicy spec")))?;
    }
    node.as_object_mut()
        .expect("checked to be an object")
        .insert((*last).to_string(), number.clone());
    let changed: BurstPolicySpec =
        serde_json::from_value(json).map_err(|e| fail(format!("{value}: {e}")))?;
    // A field the spec does not have is dropped on the way back: say so.
    let mut back = serde_json::to_value(&changed).map_err(|e| fail(e.to_string()))?;
    for part in &parts {
        back = back
            .get(*part)
            .cloned()
            .ok_or_else(|| fail("not a field of a BurstPolicy spec".to_string()))?;
    }
    let same = match (back.as_f64(), number.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if !same {
        return Err(fail(format!("not a numeric field that takes {value}")));
    }
    Ok(changed)
}

/// One variant of the grid.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    /// `(field, value)` per axis, in axis order.
    pub values: Vec<(String, f64)>,
    pub metrics: RunMetrics,
    /// Not dominated by another variant on (public spend, unmet demand).
    pub pareto: bool,
}

/// A sweep's runs.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub component: ComponentKey,
    pub policy_name: String,
    pub peak: f64,
    pub step: i64,
    pub steps: usize,
    pub axes: Vec<Axis>,
    pub variants: Vec<Variant>,
    /// The policy as given.
    pub current: RunMetrics,
    pub static_threshold: RunMetrics,
    pub oracle: RunMetrics,
    pub lower_bound: RunMetrics,
}

/// Every combination of the axes' values, first axis slowest.
fn grid(axes: &[Axis]) -> Result<Vec<Vec<f64>>, SweepError> {
    let total = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
        .filter(|&n| n <= MAX_VARIANTS)
        .ok_or_else(|| {
            SweepError::TooLarge(
                axes.iter()
                    .map(|a| a.values.len())
                    .fold(1usize, usize::saturating_mul),
            )
        })?;
    let mut out = Vec::with_capacity(total);
    for mut i in 0..total {
        let mut point = vec![0.0; axes.len()];
        for (a, axis) in axes.iter().enumerate().rev() {
            point[a] = axis.values[i % axis.values.len()];
            i /= axis.values.len();
        }
        out.push(point);
    }
    Ok(out)
}

/// Marks the variants no other variant beats on both public spend and unmet demand (and is at
/// least as good on the other).
fn mark_pareto(variants: &mut [Variant]) {
    let points: Vec<(f64, f64)> = variants
        .iter()
        .map(|v| (v.metrics.public_cost, v.metrics.unmet_demand_fraction))
        .collect();
    for (i, v) in variants.iter_mut().enumerate() {
        let (spend, unmet) = points[i];
        v.pareto = !points
            .iter()
            .enumerate()
            .any(|(j, &(s, u))| j != i && s <= spend && u <= unmet && (s < spend || u < unmet));
    }
}

/// Runs the policy of the component over the grid of `axes`, on `threads` threads (at least
/// one), plus the policy as given and the baselines. The demand is the one `simulate` would
/// replay for the policy as given (its peak, unless `options.peak`).
pub fn sweep(
    estate: &Estate,
    component: Option<&ComponentKey>,
    trace: &Trace,
    options: SimulationOptions,
    axes: &[Axis],
    threads: usize,
) -> Result<Sweep, SweepError> {
    let key = select_component(estate, component)?;
    let world = policy_world(estate, &key)?;
    let policy_name = world.input.components[world.index]
        .policy
        .clone()
        .unwrap_or_default();
    let peak = options
        .peak
        .unwrap_or(f64::from(world.max()) * world.target());
    let step = options.step.max(1);
    let demand = trace.scaled_to(peak).sample(step);
    let start = trace.start();
    let run_policy = |w: &super::World| {
        replay(
            w,
            &demand,
            start,
            step,
            &mut ControllerScaler::new(&w.controller),
            false,
            &mut |_| {},
        )
        .metrics
    };
    // Every variant's world is set up before any runs: a bad value fails the sweep at once.
    let original =
        estate
            .policies
            .get(&policy_name)
            .cloned()
            .ok_or_else(|| SetupError::UnknownPolicy {
                component: key.to_string(),
                policy: policy_name.clone(),
            })?;
    let points = grid(axes)?;
    let mut worlds = Vec::with_capacity(points.len());
    for point in &points {
        let mut spec = original.spec.clone();
        for (axis, &value) in axes.iter().zip(point) {
            spec = with_field(&spec, &axis.field, value)?;
        }
        let mut variant = estate.clone();
        let mut policy: BurstPolicy = (*original).clone();
        policy.spec = spec;
        variant
            .policies
            .insert(policy_name.clone(), Arc::new(policy));
        worlds.push(policy_world(&variant, &key)?);
    }
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<RunMetrics>>> =
        worlds.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(worlds.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = worlds.get(i) else { break };
                    let metrics = run_policy(w);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(metrics);
                }
            });
        }
    });
    let mut variants: Vec<Variant> = points
        .iter()
        .zip(results)
        .map(|(point, result)| Variant {
            values: axes
                .iter()
                .zip(point)
                .map(|(a, &v)| (a.field.clone(), v))
                .collect(),
            metrics: result
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every variant ran"),
            pareto: false,
        })
        .collect();
    mark_pareto(&mut variants);
    let static_threshold = replay(
        &world,
        &demand,
        start,
        step,
        &mut ThresholdScaler::for_world(&world),
        false,
        &mut |_| {},
    )
    .metrics;
    Ok(Sweep {
        component: key,
        policy_name,
        peak,
        step,
        steps: demand.len(),
        axes: axes.to_vec(),
        current: run_policy(&world),
        static_threshold,
        oracle: oracle(&world, &demand, step),
        lower_bound: lower_bound(&world, &demand, step),
        variants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_ranges_and_lists() {
        let a = Axis::parse("metric.targetPerReplica=300..500:50").unwrap();
        assert_eq!(a.field, "metric.targetPerReplica");
        assert_eq!(a.values, vec![300.0, 350.0, 400.0, 450.0, 500.0]);
        let b = Axis::parse("metric.volatilityHeadroom=0,0.5,2").unwrap();
        assert_eq!(b.values, vec![0.0, 0.5, 2.0]);
        let c = Axis::parse("x=0..0.3:0.1").unwrap();
        assert_eq!(c.values.len(), 4);
        for bad in [
            "metric.targetPerReplica",
            "=1..2:1",
            "a=1..2",
            "a=x",
            "a=2..1:1",
            "a=1..2:0",
            "a=1..2:-1",
            "a=1..inf:1",
            "a b=1",
            "a=0..1e9:1",
        ] {
            assert!(Axis::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_grid_is_every_combination() {
        let axes = [
            Axis {
                field: "a".into(),
                values: vec![1.0, 2.0],
            },
            Axis {
                field: "b".into(),
                values: vec![10.0, 20.0, 30.0],
            },
        ];
        let g = grid(&axes).unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec![1.0, 10.0]);
        assert_eq!(g[1], vec![1.0, 20.0]);
        assert_eq!(g[5], vec![2.0, 30.0]);
        let huge = [
            Axis {
                field: "a".into(),
                values: vec![0.0; 200],
            },
            Axis {
                field: "b".into(),
                values: vec![0.0; 200],
            },
        ];
        assert!(matches!(grid(&huge), Err(SweepError::TooLarge(40_000))));
    }

    #[test]
    fn pareto_keeps_only_the_undominated() {
        let v = |spend: f64, unmet: f64| Variant {
            values: vec![],
            metrics: RunMetrics {
                public_cost: spend,
                unmet_demand_fraction: unmet,
                ..Default::default()
            },
            pareto: false,
        };
        let mut vs = vec![
            v(1.0, 0.5),
            v(2.0, 0.1),
            v(2.0, 0.2),
            v(3.0, 0.1),
            v(0.5, 0.9),
        ];
        mark_pareto(&mut vs);
        let marks: Vec<bool> = vs.iter().map(|v| v.pareto).collect();
        assert_eq!(marks, vec![true, true, false, false, true]);
    }
}
