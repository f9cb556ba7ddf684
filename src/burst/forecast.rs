//! Demand forecast for the look-ahead: Holt's linear (double exponential) smoothing on samples at
//! irregular times. The controller asks "what will demand be when a replica requested now is
//! ready?", i.e. `startupSeconds` ahead, so that it bursts early enough on a rising trend.
//!
//! It also measures how noisy demand is: the peak relative deviation from the one-step prediction
//! of samples where demand reverses (goes to the other side of the prediction), decaying slowly. The controller widens its scale-down dead band to that
//! noise, so that a scale-down is not undone by the next noisy sample.

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
    /// Noise: the peak over recent reversals (a sample on the other side of the one-step
    /// prediction than the previous one) of the relative deviation
    /// `|sample - prediction| / max(sample, prediction)`, decaying with a time constant of
    /// [`NOISE_TAU_SECONDS`]. A trend, or a step the forecast is catching up with, is not noise.
    #[serde(default)]
    pub noise: f64,
    /// The last sample's relative deviation from its prediction (signed).
    #[serde(default)]
    pub residual: f64,
}

/// Time constant of the level: short, so the level follows demand closely.
const LEVEL_TAU_SECONDS: f64 = 60.0;
/// Time constant of the trend: longer, so noise between reads does not look like a trend.
const TREND_TAU_SECONDS: f64 = 600.0;
/// Time constant of the noise peak's decay: long, so a quiet spell between noisy ones does not
/// narrow the dead band at once.
pub const NOISE_TAU_SECONDS: f64 = 1800.0;

/// What [`factors`] computes for a gap of `dt` seconds: the coefficients of Holt's update
/// expanded so that the new level and trend are each one short sum of the old ones (see
/// [`Holt::update`]), and the noise decay.
#[derive(Clone, Copy)]
struct Factors {
    dt: i64,
    /// `alpha`, `1 - alpha` and `(1 - alpha) * dt`: the level's weights of sample, old level
    /// and old trend.
    alpha: f64,
    keep_level: f64,
    level_trend: f64,
    /// `alpha * beta / dt` and `1 - alpha * beta`: the trend's weights of `sample - level` and
    /// old trend.
    trend_gain: f64,
    keep_trend: f64,
    decay: f64,
}

/// Smoothing factors, noise decay and `1 / dt` for a gap of `dt` seconds. Ticks come at a fixed
/// interval, so the last gap's factors are remembered per thread: `exp` is costly in the
/// simulator's loop.
fn factors(dt: i64) -> Factors {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<Factors> = const {
            Cell::new(Factors {
                dt: 0,
                alpha: 0.0,
                keep_level: 0.0,
                level_trend: 0.0,
                trend_gain: 0.0,
                keep_trend: 0.0,
                decay: 0.0,
            })
        };
    }
    LAST.with(|last| {
        let cached = last.get();
        if cached.dt == dt {
            return cached;
        }
        let seconds = dt as f64;
        let alpha = 1.0 - (-seconds / LEVEL_TAU_SECONDS).exp();
        let beta = 1.0 - (-seconds / TREND_TAU_SECONDS).exp();
        let computed = Factors {
            dt,
            alpha,
            keep_level: 1.0 - alpha,
            level_trend: (1.0 - alpha) * seconds,
            trend_gain: alpha * beta / seconds,
            keep_trend: 1.0 - alpha * beta,
            decay: (-seconds / NOISE_TAU_SECONDS).exp(),
        };
        last.set(computed);
        computed
    })
}

impl Holt {
    /// Folds in a sample. Smoothing factors derive from the time since the last sample, so the
    /// forecast behaves the same at 30 s metric intervals and at 60 s simulation steps.
    #[inline]
    pub fn update(&mut self, now: i64, value: f64) {
        let Some(last) = self.last else {
            *self = Holt {
                level: value,
                trend: 0.0,
                last: Some(now),
                noise: 0.0,
                residual: 0.0,
            };
            return;
        };
        let dt = (now - last) as f64;
        if dt <= 0.0 {
            // Same instant again: replace the level, keep the trend.
            self.level = value;
            return;
        }
        let f = factors(now - last);
        let predicted = self.level + self.trend * dt;
        // Noise: a sample on the other side of the prediction than the last one is a reversal,
        // and its deviation is noise (a step or a ramp keeps deviations on one side while the
        // forecast catches up: that is not noise). The peak decays.
        let scale = value.max(predicted);
        let residual = if scale > 0.0 {
            (value - predicted) / scale
        } else {
            0.0
        };
        let reversal = if residual * self.residual < 0.0 {
            residual.abs()
        } else {
            0.0
        };
        let decayed = self.noise * f.decay;
        self.noise = if reversal > decayed {
            reversal
        } else {
            decayed
        };
        self.residual = residual;
        // Holt's update, `level' = alpha * value + (1 - alpha) * (level + trend * dt)` and
        // `trend' = beta * (level' - level) / dt + (1 - beta) * trend`, expanded so that each is a
        // short sum of the old level and trend: the chain from one tick to the next (the
        // simulator's critical path) is two operations deep instead of six.
        let (level, trend) = (self.level, self.trend);
        self.level = f.alpha * value + f.keep_level * level + f.level_trend * trend;
        self.trend = f.trend_gain * (value - level) + f.keep_trend * trend;
        self.last = Some(now);
    }

    /// Demand expected `ahead_seconds` after the last sample (never negative).
    pub fn forecast(&self, ahead_seconds: f64) -> f64 {
        let expected = self.level + self.trend * ahead_seconds;
        if expected > 0.0 { expected } else { 0.0 }
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
        assert_eq!(h.noise, 0.0);
    }

    #[test]
    fn noise_is_the_decaying_peak_of_reversals() {
        let mut h = Holt::default();
        for i in 0..50 {
            h.update(i * 30, 1000.0);
        }
        // 5% above, then below: a reversal; the second deviation (relative to the larger of
        // sample and prediction) is the noise peak, which then decays.
        h.update(50 * 30, 1050.0);
        assert_eq!(h.noise, 0.0, "one deviation alone is not noise yet");
        let predicted = h.forecast(30.0);
        h.update(51 * 30, 950.0);
        let deviation = (predicted - 950.0) / predicted;
        assert!(deviation > 0.05);
        assert!(
            (h.noise - deviation).abs() < 1e-9,
            "{} vs {deviation}",
            h.noise
        );
        let peak = h.noise;
        for i in 52..112 {
            h.update(i * 30, h.forecast(30.0));
        }
        let expected = peak * (-1800.0 / NOISE_TAU_SECONDS).exp();
        assert!(
            (h.noise - expected).abs() < 1e-9,
            "{} vs {expected}",
            h.noise
        );
    }

    #[test]
    fn steps_and_ramps_are_not_noise() {
        // A step down by 75%: deviations stay on one side while the forecast catches up.
        let mut step = Holt::default();
        for i in 0..50 {
            step.update(i * 30, 4000.0);
        }
        for i in 50..100 {
            step.update(i * 30, 1000.0);
        }
        assert!(step.noise < 0.03, "{}", step.noise);
        let mut ramp = Holt::default();
        for i in 0..400 {
            ramp.update(i * 30, 1000.0 + 0.5 * (i * 30) as f64);
        }
        assert!(ramp.noise < 0.002, "{}", ramp.noise);
    }
}
