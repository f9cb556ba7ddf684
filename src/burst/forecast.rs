//! Demand forecast for the look-ahead: Holt's linear (double exponential) smoothing on samples at
//! irregular times. The controller asks "what will demand be when a replica requested now is
//! ready?", i.e. `startupSeconds` ahead, so that it bursts early enough on a rising trend.

use serde::{Deserialize, Serialize};

/// Smoothed level and trend (per second) of demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holt {
    pub level: f64,
    /// Change of demand per second.
    pub trend: f64,
    /// Unix seconds of the last sample; `None` before the first.
    pub last: Option<i64>,
}

/// Time constant of the level: short, so the level follows demand closely.
const LEVEL_TAU_SECONDS: f64 = 60.0;
/// Time constant of the trend: longer, so noise between reads does not look like a trend.
const TREND_TAU_SECONDS: f64 = 600.0;

/// Smoothing factors and `1 / dt` for a gap of `dt` seconds. Ticks come at a fixed interval, so
/// the last gap's factors are remembered per thread: `exp` is costly in the simulator's loop.
fn factors(dt: i64) -> (f64, f64, f64) {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<(i64, f64, f64, f64)> = const { Cell::new((0, 0.0, 0.0, 0.0)) };
    }
    LAST.with(|last| {
        let cached = last.get();
        if cached.0 == dt {
            return (cached.1, cached.2, cached.3);
        }
        let seconds = dt as f64;
        let alpha = 1.0 - (-seconds / LEVEL_TAU_SECONDS).exp();
        let beta = 1.0 - (-seconds / TREND_TAU_SECONDS).exp();
        let computed = (dt, alpha, beta, 1.0 / seconds);
        last.set(computed);
        (computed.1, computed.2, computed.3)
    })
}

impl Holt {
    /// Folds in a sample. Smoothing factors derive from the time since the last sample, so the
    /// forecast behaves the same at 30 s metric intervals and at 60 s simulation steps.
    pub fn update(&mut self, now: i64, value: f64) {
        let Some(last) = self.last else {
            *self = Holt {
                level: value,
                trend: 0.0,
                last: Some(now),
            };
            return;
        };
        let dt = (now - last) as f64;
        if dt <= 0.0 {
            // Same instant again: replace the level, keep the trend.
            self.level = value;
            return;
        }
        let (alpha, beta, inverse_dt) = factors(now - last);
        let predicted = self.level + self.trend * dt;
        let level = alpha * value + (1.0 - alpha) * predicted;
        self.trend = beta * (level - self.level) * inverse_dt + (1.0 - beta) * self.trend;
        self.level = level;
        self.last = Some(now);
    }

    /// Demand expected `ahead_seconds` after the last sample (never negative).
    pub fn forecast(&self, ahead_seconds: f64) -> f64 {
        (self.level + self.trend * ahead_seconds).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_linear_ramp_ahead() {
        let mut h = Holt::default();
        for i in 0..120 {
            h.update(i * 60, 1000.0 + 2.0 * (i * 60) as f64);
        }
        let now = 119 * 60;
        let expected = 1000.0 + 2.0 * (now + 420) as f64;
        let got = h.forecast(420.0);
        assert!(
            (got - expected).abs() / expected < 0.02,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn flat_demand_has_no_trend() {
        let mut h = Holt::default();
        for i in 0..50 {
            h.update(i * 30, 500.0);
        }
        assert!((h.forecast(600.0) - 500.0).abs() < 1e-6);
    }
}
