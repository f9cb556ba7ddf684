//! Public capacity as it really is, in `simulate` (issue #19): stockout episodes and spot
//! interruptions, from flags, deterministic for a seed. Pure: the episodes are drawn once per
//! simulation (every run of it sees the same ones) and applied step by step by the replay.
//!
//! What the replay does with them, as the operator would:
//! - **stockout** of pool P over `[start, end)`: replicas P is asked for meanwhile do not start
//!   (they wait, unschedulable); the pool's own tracker (`capacity::assess`, with the pool's
//!   `stockout` settings and, for an elastic pool, its node start-up) marks P short once one has
//!   waited past its limit; the planner then gives P no new replicas and re-places the waiting
//!   ones on the next eligible pool (with that pool's start-up). P comes back after its
//!   back-off and recovery hysteresis; if the stockout still holds, the next replicas sent there
//!   wait again. Replicas P ran before the stockout keep running.
//! - **spot interruption** of a spot pool at `t`: one node's replicas (the pool's
//!   `elastic.gpusPerNode` over the replica's GPUs, else one replica) are doomed: replacements
//!   are planned at once (the node's capacity is gone), while the doomed replicas serve until
//!   `t + notice` and then vanish; the node's capacity comes back after the pool's node start-up
//!   (elastic) or start-up (fixed).
//!
//! Waiting replicas are paid as requested (a conservative reading: a real pod without a node
//! costs nothing, but these waits last minutes).

use crate::api::CapacityType;
use crate::capacity::{
    Assessment, PendingCause, PendingReplica, PoolObservation, PoolSettings, TrackerState, assess,
};
use crate::estate::Estate;
use crate::planner::{ComponentKey, PoolView};
use crate::simulate::World;
use k8s_openapi::jiff::Timestamp;

/// A stockout given on the command line: pool, start and end (seconds since the epoch).
#[derive(Clone, Debug, PartialEq)]
pub struct StockoutWindow {
    pub pool: String,
    pub start: i64,
    pub end: i64,
}

/// What `simulate` is asked to inject.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CapacityEvents {
    /// Stockouts at given times.
    pub stockouts: Vec<StockoutWindow>,
    /// Random stockouts of each spot pool: mean episodes per week (0: none).
    pub stockouts_per_week: f64,
    /// Length of each random stockout, seconds.
    pub stockout_seconds: i64,
    /// Random interruptions of each spot pool: mean per day (0: none).
    pub interruptions_per_day: f64,
    /// Notice before an interrupted node goes, seconds (AWS: 120).
    pub notice_seconds: i64,
    /// Seed of the random episodes.
    pub seed: u64,
    /// Elastic pools' node start-up: a replica that needs a node the pool does not have up
    /// takes the pool's `elastic.nodeStartupSeconds` more; a node stays up this many seconds
    /// after it was last needed (cluster-autoscaler's scale-down-unneeded-time is 600).
    /// `None`: every replica starts in the pool's `startupSeconds`.
    pub node_kept_seconds: Option<i64>,
}

impl CapacityEvents {
    pub fn is_empty(&self) -> bool {
        self.stockouts.is_empty()
            && self.stockouts_per_week <= 0.0
            && self.interruptions_per_day <= 0.0
            && self.node_kept_seconds.is_none()
    }
}

/// Why the events cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventsError {
    #[error("--stockout names pool {0}, which is not in the given files")]
    UnknownPool(String),
    #[error("{0}")]
    Invalid(String),
}

/// The episodes of one simulation, per pool (in `world.input.pools` order), and how each pool
/// handles them.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// Per pool: stockout windows `[start, end)`, sorted.
    pub stockouts: Vec<Vec<(i64, i64)>>,
    /// Per pool: interruption times, sorted.
    pub interruptions: Vec<Vec<i64>>,
    /// Per pool: its capacity settings (stockout handling, node start-up).
    pub settings: Vec<PoolSettings>,
    /// Per pool: replicas of the component one interruption takes.
    pub node_replicas: Vec<u32>,
    /// Per pool: seconds until an interrupted node's capacity is back.
    pub node_back_after: Vec<i64>,
    pub notice_seconds: i64,
    /// See [`CapacityEvents::node_kept_seconds`].
    pub node_kept_seconds: Option<i64>,
}

/// splitmix64: deterministic per seed, no dependency; quality enough for arrival times.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Arrival times of a Poisson process of `per_second` over `[start, end)`.
    fn arrivals(&mut self, per_second: f64, start: i64, end: i64) -> Vec<i64> {
        let mut out = Vec::new();
        if per_second <= 0.0 {
            return out;
        }
        let mut t = start as f64;
        loop {
            t += -self.unit().ln() / per_second;
            if t >= end as f64 {
                return out;
            }
            out.push(t as i64);
        }
    }
}

impl Timeline {
    /// Draws the episodes for `world` over `[start, end)`. Random episodes hit spot pools only
    /// (stockouts at given times may name any pool); each pool's draws use their own stream of
    /// the seed, so adding a pool does not move another pool's episodes.
    pub fn new(
        events: &CapacityEvents,
        estate: &Estate,
        world: &World,
        start: i64,
        end: i64,
    ) -> Result<Self, EventsError> {
        if events.stockout_seconds < 0
            || events.notice_seconds < 0
            || events.node_kept_seconds.is_some_and(|k| k < 0)
        {
            return Err(EventsError::Invalid(
                "durations must not be negative".into(),
            ));
        }
        if !(events.stockouts_per_week.is_finite() && events.interruptions_per_day.is_finite())
            || events.stockouts_per_week < 0.0
            || events.interruptions_per_day < 0.0
        {
            return Err(EventsError::Invalid(
                "rates must be finite and not negative".into(),
            ));
        }
        let pools = &world.input.pools;
        let mut stockouts = vec![Vec::new(); pools.len()];
        let mut interruptions = vec![Vec::new(); pools.len()];
        for window in &events.stockouts {
            let p = pools
                .iter()
                .position(|p| p.name == window.pool)
                .ok_or_else(|| EventsError::UnknownPool(window.pool.clone()))?;
            if window.end <= window.start {
                return Err(EventsError::Invalid(format!(
                    "--stockout {}: it must end after it starts",
                    window.pool
                )));
            }
            stockouts[p].push((window.start, window.end));
        }
        let gpus = world.per_replica().gpus.max(1);
        let mut settings = Vec::with_capacity(pools.len());
        let mut node_replicas = Vec::with_capacity(pools.len());
        let mut node_back_after = Vec::with_capacity(pools.len());
        for (p, view) in pools.iter().enumerate() {
            let spec = estate.pools.get(&view.name).map(|pool| &pool.spec);
            let pool_settings = spec.map_or_else(
                || PoolSettings {
                    capacity_type: view.capacity_type,
                    node_startup_seconds: None,
                    stockout: Default::default(),
                },
                PoolSettings::of,
            );
            let per_node = spec
                .and_then(|s| s.elastic.as_ref())
                .and_then(|e| e.gpus_per_node)
                .map_or(1, |g| (g / gpus).max(1));
            node_replicas.push(per_node);
            node_back_after.push(i64::from(
                pool_settings
                    .node_startup_seconds
                    .unwrap_or(view.startup_seconds),
            ));
            if view.capacity_type == CapacityType::Spot {
                // One stream per pool and kind, from the seed.
                let stream = |kind: u64| {
                    Random(
                        events
                            .seed
                            .wrapping_mul(0x2545_f491_4f6c_dd1d)
                            .wrapping_add((p as u64) << 8 | kind),
                    )
                };
                for at in stream(1).arrivals(events.stockouts_per_week / 604_800.0, start, end) {
                    stockouts[p].push((at, at.saturating_add(events.stockout_seconds.max(1))));
                }
                interruptions[p] =
                    stream(2).arrivals(events.interruptions_per_day / 86_400.0, start, end);
            }
            stockouts[p].sort_unstable();
            settings.push(pool_settings);
        }
        Ok(Self {
            stockouts,
            interruptions,
            settings,
            node_replicas,
            node_back_after,
            notice_seconds: events.notice_seconds,
            node_kept_seconds: events.node_kept_seconds,
        })
    }

    /// Whether pool `p` is out of stock at `t`.
    pub fn stocked_out(&self, p: usize, t: i64) -> bool {
        self.stockouts[p].iter().any(|&(s, e)| s <= t && t < e)
    }

    /// Interruptions of pool `p` in `[from, to)`.
    pub fn interruptions_in(&self, p: usize, from: i64, to: i64) -> usize {
        self.interruptions[p]
            .iter()
            .filter(|&&t| from <= t && t < to)
            .count()
    }

    /// Episodes drawn, for the report: (stockouts, interruptions).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.stockouts.iter().map(Vec::len).sum(),
            self.interruptions.iter().map(Vec::len).sum(),
        )
    }
}

/// The replay's capacity state of one pool.
#[derive(Clone, Debug, Default)]
pub struct PoolState {
    pub tracker: TrackerState,
    /// Replicas waiting in a stockout, with since when.
    pub waiting: Vec<(i64, u32)>,
    /// Replicas of interrupted nodes: (gone at, replicas).
    pub doomed: Vec<(i64, u32)>,
    /// Capacity of interrupted nodes: (back at, replicas).
    pub lost: Vec<(i64, u32)>,
    /// Replicas requested at each recent step (elastic node start-up): nodes stay up a while
    /// after they were last needed.
    pub history: Vec<(i64, u32)>,
}

impl PoolState {
    pub fn waiting_total(&self) -> u32 {
        self.waiting.iter().map(|w| w.1).sum()
    }

    pub fn lost_total(&self) -> u32 {
        self.lost.iter().map(|l| l.1).sum()
    }
}

/// What the replay counts of the episodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityFigures {
    pub stockouts: u64,
    pub interruptions: u64,
    /// Times a pool was marked short.
    pub pools_short: u64,
    /// Replicas re-placed from a short pool.
    pub shortfall_replaced: u64,
    /// Replicas lost to interruptions (replaced ahead).
    pub replicas_interrupted: u64,
}

/// The pool's tracker on the replicas waiting in it: `waiting` as (since, replicas).
pub fn assess_waiting(
    settings: &PoolSettings,
    previous: &TrackerState,
    component: &ComponentKey,
    waiting: &[(i64, u32)],
    now: i64,
) -> Assessment {
    let at = |t: i64| Timestamp::from_second(t).unwrap_or(Timestamp::UNIX_EPOCH);
    let pending = waiting
        .iter()
        .flat_map(|&(since, n)| {
            (0..n).map(move |_| PendingReplica {
                component: component.clone(),
                since: at(since),
                cause: PendingCause::Unschedulable,
            })
        })
        .collect();
    assess(
        settings,
        previous,
        &PoolObservation {
            at: at(now),
            pending,
            nodes: Vec::new(),
        },
    )
}

/// The planner's pools under `conditions` (per pool: short, replicas of capacity lost): a short
/// pool is marked so (no new replicas), a pool that lost nodes holds that much less of the
/// component, from the world's own capacities.
pub fn condition_pools(world: &World, pools: &mut [PoolView], conditions: &[(bool, u32)]) {
    let per_replica = world.per_replica();
    for ((pool, base), &(short, lost)) in pools.iter_mut().zip(&world.input.pools).zip(conditions) {
        pool.short = short.then(|| "stockout (simulated)".to_string());
        let mut capacity = base.capacity;
        let (fits, _) = capacity.fits(&per_replica);
        capacity.take(&per_replica, lost.min(fits));
        pool.capacity = capacity;
    }
}

/// Of `fresh` replicas just requested on an elastic pool that ran `before`, how many land on
/// nodes still up: the pool's highest replica count over the last `kept` seconds (`history`,
/// as (time, replicas)) less `before`. The others wait for new nodes.
pub fn on_nodes_up(history: &[(i64, u32)], now: i64, kept: i64, before: u32, fresh: u32) -> u32 {
    let peak = history
        .iter()
        .filter(|&&(t, _)| t >= now - kept)
        .map(|&(_, n)| n)
        .max()
        .unwrap_or(0);
    peak.saturating_sub(before).min(fresh)
}

/// Start of the busiest 7 days of `trace` (largest total demand, hour by hour), or its start
/// when it is shorter than a week.
pub fn busiest_week(trace: &crate::simulate::Trace) -> i64 {
    const HOUR: i64 = 3600;
    const WEEK_HOURS: usize = 168;
    let hourly = trace.sample(HOUR);
    if hourly.len() <= WEEK_HOURS {
        return trace.start();
    }
    let mut sum: f64 = hourly[..WEEK_HOURS].iter().sum();
    let (mut best, mut best_sum) = (0usize, sum);
    for i in 1..=hourly.len() - WEEK_HOURS {
        sum += hourly[i + WEEK_HOURS - 1] - hourly[i - 1];
        if sum > best_sum {
            (best, best_sum) = (i, sum);
        }
    }
    trace.start() + best as i64 * HOUR
}

/// Parses `--stockout POOL@START+HOURS` (START as in a trace: `2014-11-02 00:00:00` or epoch
/// seconds) or `POOL@busiest-week` (the whole busiest week of the trace).
pub fn parse_stockout(
    text: &str,
    trace: &crate::simulate::Trace,
) -> Result<StockoutWindow, String> {
    let bad = || {
        format!(
            "--stockout {text}: expected POOL@START+HOURS (START like 2014-11-02T00:00:00) or POOL@busiest-week"
        )
    };
    let (pool, when) = text.split_once('@').ok_or_else(bad)?;
    if pool.is_empty() {
        return Err(bad());
    }
    let (start, end) = if when == "busiest-week" {
        let start = busiest_week(trace);
        (start, start + 7 * 86_400)
    } else {
        let (start, hours) = when.rsplit_once('+').ok_or_else(bad)?;
        let start = crate::simulate::parse_timestamp(start).ok_or_else(bad)?;
        let hours: f64 = hours.parse().map_err(|_| bad())?;
        if !(hours > 0.0 && hours <= 24.0 * 366.0) {
            return Err(format!("--stockout {text}: HOURS must be in (0, 8784]"));
        }
        (start, start + (hours * 3600.0) as i64)
    };
    Ok(StockoutWindow {
        pool: pool.to_string(),
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_replicas_use_nodes_kept_up_and_wait_for_the_rest() {
        // The pool ran 6 replicas 5 minutes ago, 2 now; 5 more are asked for: 4 fit on the
        // nodes still up (kept 10 minutes), 1 waits for a new node.
        let history = [(0, 6), (300, 2), (540, 2)];
        assert_eq!(on_nodes_up(&history, 600, 600, 2, 5), 4);
        // 11 minutes later the 6-replica nodes are gone.
        assert_eq!(on_nodes_up(&history, 960, 600, 2, 5), 0);
        assert_eq!(on_nodes_up(&[], 0, 600, 0, 3), 0, "a pool scaled from zero");
        assert_eq!(on_nodes_up(&history, 600, 600, 2, 1), 1);
    }

    #[test]
    fn arrivals_are_deterministic_per_seed_and_follow_the_rate() {
        let a = Random(7).arrivals(1.0 / 3600.0, 0, 3600 * 10_000);
        let b = Random(7).arrivals(1.0 / 3600.0, 0, 3600 * 10_000);
        assert_eq!(a, b);
        assert_ne!(a, Random(8).arrivals(1.0 / 3600.0, 0, 3600 * 10_000));
        // 10,000 hours at one an hour: within 3 % of 10,000.
        assert!((9_700..=10_300).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert!(Random(7).arrivals(0.0, 0, 1_000).is_empty());
    }
}
