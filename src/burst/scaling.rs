//! Replica counts from demand, and the HPA `behavior` semantics on top: stabilisation windows and
//! step limits per period.
//!
//! Where this differs from the Kubernetes HPA (documented in `docs/simulate.md` too):
//! - recommendations are stored after clamping to the component's bounds and floors (the HPA
//!   stores them before), so a raised floor does not linger in the window after it ends;
//! - a percent step from zero replicas allows one replica (the HPA never scales from zero);
//! - step limits never force a change against the recommendation (a scale-up limit below the
//!   current count holds the count, it does not scale down);
//! - a step limit with neither `maxStepReplicas` nor `maxStepPercent` is unlimited (the HPA
//!   would apply its default policies);
//! - the HPA's 10% tolerance (both directions) is replaced by a scale-down dead band,
//!   `metric.tolerancePercent` widened to the measured noise (see
//!   [`crate::burst::dead_band`]): scale-ups are never delayed by it;
//! - the count windows and steps start from is the controller's last decision, as the HPA uses
//!   the scale's `spec.replicas`, not the replicas observed ready.

use crate::api::ScalingBehavior;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One direction's scaling limits, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behavior {
    pub window_seconds: i64,
    pub max_step_replicas: Option<u32>,
    pub max_step_percent: Option<u32>,
    pub period_seconds: i64,
}

impl From<&ScalingBehavior> for Behavior {
    fn from(b: &ScalingBehavior) -> Self {
        Self {
            window_seconds: i64::from(b.stabilization_window_seconds),
            max_step_replicas: b.max_step_replicas,
            max_step_percent: b.max_step_percent,
            period_seconds: i64::from(b.period_seconds.max(1)),
        }
    }
}

/// Replicas that serve `demand` at `target` per replica with `headroom_percent` spare:
/// `ceil(demand * (1 + headroom%) / target)`. Non-finite or non-positive demand needs none.
pub fn replicas_for(demand: f64, target_per_replica: f64, headroom_percent: u32) -> u32 {
    if demand.is_nan()
        || demand <= 0.0
        || target_per_replica.is_nan()
        || target_per_replica <= 0.0
        || !demand.is_finite()
    {
        return 0;
    }
    replicas_at(
        demand,
        (1.0 + f64::from(headroom_percent) / 100.0) / target_per_replica,
    )
}

/// `ceil(demand * factor)` for a precomputed `factor = (1 + headroom%) / target`: the hot path
/// of [`replicas_for`] without divisions or a libm call.
#[inline]
pub(crate) fn replicas_at(demand: f64, factor: f64) -> u32 {
    // NaN, zero, negative and infinite demand need none (as in `replicas_for`).
    if demand.is_nan() || demand <= 0.0 || demand == f64::INFINITY {
        return 0;
    }
    ceil_u32(demand * factor)
}

/// What [`ceil_u32`] multiplies by before rounding up: a relative epsilon.
pub(crate) const EPSILON_FACTOR: f64 = 1.0 - 1e-12;

/// `ceil(x)` for a positive finite-or-not `x`, saturating at `u32::MAX`, with a relative epsilon
/// that keeps 400.0000001 / 400 from asking for a second replica.
#[inline]
pub(crate) fn ceil_u32(x: f64) -> u32 {
    let exact = x * EPSILON_FACTOR;
    if exact >= f64::from(u32::MAX) {
        return u32::MAX;
    }
    // `as` saturates (NaN and negatives to 0); the comparison adds the fractional replica.
    let floor = exact as u32;
    floor + u32::from(f64::from(floor) < exact)
}

/// What the stabilisation windows and step limits remember.
///
/// The windows keep only the recommendations that can still be a window's extreme (monotonic
/// queues): for the scale-up window's minimum, those lower than every later one; for the
/// scale-down window's maximum, those higher than every later one. Each tick then costs O(1)
/// amortised, however long the windows are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleHistory {
    /// `(unix seconds, recommended replicas)`, oldest first, values strictly increasing: the
    /// candidates for the lowest recommendation of the scale-up window.
    pub lowest: VecDeque<(i64, u32)>,
    /// `(unix seconds, recommended replicas)`, oldest first, values strictly decreasing: the
    /// candidates for the highest recommendation of the scale-down window.
    pub highest: VecDeque<(i64, u32)>,
    /// `(unix seconds, replica change)` of recent scale steps, within the longest period.
    pub changes: VecDeque<(i64, i32)>,
}

impl ScaleHistory {
    /// Remembers a recommendation and forgets those older than `keep_seconds`.
    pub fn record_recommendation(&mut self, now: i64, replicas: u32, keep_seconds: i64) {
        let oldest = now - keep_seconds;
        while self.lowest.front().is_some_and(|&(t, _)| t < oldest) {
            self.lowest.pop_front();
        }
        while self.highest.front().is_some_and(|&(t, _)| t < oldest) {
            self.highest.pop_front();
        }
        self.push_recommendation(now, replicas);
    }

    /// Remembers a recommendation, forgetting in each queue what has left its own window (time
    /// only moves forward, so it never comes back): the window's extreme is then the front,
    /// found without a scan. What the controller calls each tick.
    #[inline]
    pub fn record_for_windows(&mut self, now: i64, replicas: u32, up: &Behavior, down: &Behavior) {
        while self
            .lowest
            .front()
            .is_some_and(|&(t, _)| now - t > up.window_seconds)
        {
            self.lowest.pop_front();
        }
        while self
            .highest
            .front()
            .is_some_and(|&(t, _)| now - t > down.window_seconds)
        {
            self.highest.pop_front();
        }
        self.push_recommendation(now, replicas);
    }

    /// Appends a recommendation to both queues. A later recommendation as low (high) as an
    /// earlier one outlives it in every window, so the earlier one goes.
    #[inline]
    fn push_recommendation(&mut self, now: i64, replicas: u32) {
        while self.lowest.back().is_some_and(|&(_, r)| r >= replicas) {
            self.lowest.pop_back();
        }
        while self.highest.back().is_some_and(|&(_, r)| r <= replicas) {
            self.highest.pop_back();
        }
        self.lowest.push_back((now, replicas));
        self.highest.push_back((now, replicas));
    }

    /// Remembers a scale step and forgets those older than `keep_seconds`.
    pub fn record_change(&mut self, now: i64, change: i32, keep_seconds: i64) {
        while self
            .changes
            .front()
            .is_some_and(|&(t, _)| t <= now - keep_seconds)
        {
            self.changes.pop_front();
        }
        if change != 0 {
            self.changes.push_back((now, change));
        }
    }

    /// HPA stabilisation: scale up only to the lowest recommendation of the up-window, down only
    /// to the highest of the down-window; in between, hold `current`.
    #[inline]
    pub fn stabilized(&self, now: i64, current: u32, up: &Behavior, down: &Behavior) -> u32 {
        // The first candidate still in the window is the window's extreme. An empty window
        // (no history, or all of it older) leaves that direction unbounded.
        let in_window = |queue: &VecDeque<(i64, u32)>, window: i64| match queue.front() {
            // The front is in the window when the queue was recorded for these windows.
            Some(&(t, r)) if now - t <= window => Some(r),
            _ => queue
                .iter()
                .find(|&&(t, _)| now - t <= window)
                .map(|&(_, r)| r),
        };
        let Some(up_rec) = in_window(&self.lowest, up.window_seconds) else {
            // No history at all: nothing to stabilise against.
            return current;
        };
        let down_rec = in_window(&self.highest, down.window_seconds).unwrap_or(0);
        Self::between(current, up_rec, down_rec)
    }

    #[inline]
    fn between(current: u32, up_rec: u32, down_rec: u32) -> u32 {
        let mut replicas = current;
        if replicas < up_rec {
            replicas = up_rec;
        }
        if replicas > down_rec {
            replicas = down_rec;
        }
        replicas
    }

    /// HPA step limits: from the count at the start of the period, the larger change any limit
    /// allows (`selectPolicy: Max`). Returns the count to move to on the way to `target`.
    pub fn rate_limited(
        &self,
        now: i64,
        current: u32,
        target: u32,
        up: &Behavior,
        down: &Behavior,
    ) -> u32 {
        if target > current {
            let added: i64 = self.changes_within(now, up.period_seconds, true);
            let start = (i64::from(current) - added).max(0) as u64;
            let Some(limit) = up_limit(start, up) else {
                return target;
            };
            let limit = limit.max(u64::from(current));
            target.min(u32::try_from(limit).unwrap_or(u32::MAX))
        } else if target < current {
            let removed: i64 = self.changes_within(now, down.period_seconds, false);
            let start = u64::from(current) + removed as u64;
            let Some(limit) = down_limit(start, down) else {
                return target;
            };
            let limit = limit.min(u64::from(current));
            target.max(limit as u32)
        } else {
            current
        }
    }

    /// Sum of additions (`up`) or of removals (as a positive number) in the last `period`.
    fn changes_within(&self, now: i64, period: i64, up: bool) -> i64 {
        self.changes
            .iter()
            .rev()
            .take_while(|&&(t, _)| t > now - period)
            .filter(|&&(_, c)| (c > 0) == up)
            .map(|&(_, c)| i64::from(c).abs())
            .sum()
    }
}

fn up_limit(start: u64, b: &Behavior) -> Option<u64> {
    let by_count = b.max_step_replicas.map(|n| start + u64::from(n));
    let by_percent = b.max_step_percent.map(|p| {
        let grown = (start * (100 + u64::from(p))).div_ceil(100);
        // From zero a percentage allows nothing; allow one so a scaled-to-zero component wakes.
        grown.max(start + 1)
    });
    match (by_count, by_percent) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
    }
}

fn down_limit(start: u64, b: &Behavior) -> Option<u64> {
    let by_count = b
        .max_step_replicas
        .map(|n| start.saturating_sub(u64::from(n)));
    let by_percent = b
        .max_step_percent
        .map(|p| start * 100u64.saturating_sub(u64::from(p).min(100)) / 100);
    match (by_count, by_percent) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(u64::MAX).min(b.unwrap_or(u64::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(window: i64, step: Option<u32>, pct: Option<u32>, period: i64) -> Behavior {
        Behavior {
            window_seconds: window,
            max_step_replicas: step,
            max_step_percent: pct,
            period_seconds: period,
        }
    }

    #[test]
    fn replicas_round_up_with_headroom() {
        assert_eq!(replicas_for(400.0, 400.0, 0), 1);
        assert_eq!(replicas_for(401.0, 400.0, 0), 2);
        assert_eq!(replicas_for(400.0, 400.0, 10), 2);
        assert_eq!(replicas_for(0.0, 400.0, 10), 0);
        assert_eq!(replicas_for(f64::NAN, 400.0, 10), 0);
        assert_eq!(replicas_for(-5.0, 400.0, 10), 0);
    }

    #[test]
    fn scale_down_takes_the_highest_recommendation_of_the_window() {
        let up = b(0, None, None, 15);
        let down = b(300, None, None, 60);
        let mut h = ScaleHistory::default();
        for (t, r) in [(0, 10), (60, 4), (120, 6), (180, 3)] {
            h.record_recommendation(t, r, 300);
        }
        assert_eq!(h.stabilized(180, 10, &up, &down), 10);
        h.record_recommendation(360, 3, 300);
        // 10 at t=0 left the window; 6 at t=120 is the highest left.
        assert_eq!(h.stabilized(360, 10, &up, &down), 6);
    }

    #[test]
    fn scale_up_takes_the_lowest_recommendation_of_the_window() {
        let up = b(120, None, None, 15);
        let down = b(0, None, None, 60);
        let mut h = ScaleHistory::default();
        for (t, r) in [(0, 8), (60, 12), (120, 10)] {
            h.record_recommendation(t, r, 300);
        }
        assert_eq!(h.stabilized(120, 5, &up, &down), 8);
    }

    #[test]
    fn step_limits_take_the_larger_change() {
        let up = b(0, Some(4), Some(100), 60);
        let down = b(0, Some(2), Some(50), 60);
        let h = ScaleHistory::default();
        // From 2: +4 allows 6, +100% allows 4: the larger, 6.
        assert_eq!(h.rate_limited(0, 2, 50, &up, &down), 6);
        // From 20: +4 allows 24, +100% allows 40.
        assert_eq!(h.rate_limited(0, 20, 50, &up, &down), 40);
        // Down from 20: -2 allows 18, -50% allows 10: the larger change, 10.
        assert_eq!(h.rate_limited(0, 20, 1, &up, &down), 10);
    }

    #[test]
    fn step_limits_count_changes_within_the_period() {
        let up = b(0, Some(4), None, 60);
        let down = b(0, None, None, 60);
        let mut h = ScaleHistory::default();
        h.record_change(0, 4, 60);
        // Four added 30 s ago: the period started at 2 replicas, so 6 is the most now.
        assert_eq!(h.rate_limited(30, 6, 20, &up, &down), 6);
        // A period later the budget is back.
        assert_eq!(h.rate_limited(61, 6, 20, &up, &down), 10);
    }

    #[test]
    fn unlimited_without_step_settings() {
        let free = b(0, None, None, 60);
        let h = ScaleHistory::default();
        assert_eq!(h.rate_limited(0, 1, 100, &free, &free), 100);
        assert_eq!(h.rate_limited(0, 100, 1, &free, &free), 1);
    }
}
