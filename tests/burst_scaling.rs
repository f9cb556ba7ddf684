//! Properties of the HPA-style scaling rules and of the controller's decisions.

use proptest::prelude::*;
use skybridge::api::FallbackAction;
use skybridge::burst::{
    Behavior, BurstController, ControllerConfig, ControllerState, Observation, ScaleHistory,
};

fn behavior() -> impl Strategy<Value = Behavior> {
    (
        0i64..900,
        prop::option::of(1u32..20),
        prop::option::of(1u32..200),
        1i64..300,
    )
        .prop_map(|(window, step, pct, period)| Behavior {
            window_seconds: window,
            max_step_replicas: step,
            max_step_percent: pct,
            period_seconds: period,
        })
}

fn config(up: Behavior, down: Behavior, min: u32, max: u32) -> ControllerConfig {
    ControllerConfig {
        target_per_replica: 100.0,
        headroom_percent: 5,
        tolerance_percent: 5,
        interval_seconds: 30,
        min,
        max,
        up,
        down,
        failback_after_seconds: 600,
        prewarm: Vec::new(),
        fallback: FallbackAction::HoldLast,
        fallback_floor: None,
        private_startup_seconds: 60,
        public_startup_seconds: Some(300),
        keep_private_warm: true,
        volatility_sigmas: 1.0,
    }
}

proptest! {
    /// A step limit moves towards the target, never past it, never the other way.
    #[test]
    fn rate_limit_moves_towards_the_target(
        up in behavior(),
        down in behavior(),
        current in 0u32..200,
        target in 0u32..200,
    ) {
        let h = ScaleHistory::default();
        let next = h.rate_limited(0, current, target, &up, &down);
        prop_assert!(next >= current.min(target) && next <= current.max(target));
        if let (true, Some(step)) = (target > current, up.max_step_replicas) {
            let by_pct = up.max_step_percent.map_or(0, |p| {
                (u64::from(current) * (100 + u64::from(p)))
                    .div_ceil(100)
                    .max(u64::from(current) + 1)
            });
            let allowed = (u64::from(current) + u64::from(step)).max(by_pct);
            prop_assert!(u64::from(next) <= allowed);
        }
    }

    /// Stabilisation holds within the window's extremes: never above the highest recommendation
    /// of the down-window when scaling down, never below the lowest of the up-window when up.
    #[test]
    fn stabilized_stays_within_the_window(
        up in behavior(),
        down in behavior(),
        recs in prop::collection::vec(0u32..100, 1..40),
        current in 0u32..100,
    ) {
        let mut h = ScaleHistory::default();
        let keep = up.window_seconds.max(down.window_seconds);
        for (i, &r) in recs.iter().enumerate() {
            h.record_recommendation(i as i64 * 30, r, keep);
        }
        let now = (recs.len() as i64 - 1) * 30;
        let s = h.stabilized(now, current, &up, &down);
        let in_window = |w: i64| recs.iter().enumerate().filter(move |(i, _)| now - (*i as i64) * 30 <= w).map(|(_, &r)| r);
        let up_min = in_window(up.window_seconds).min().unwrap();
        let down_max = in_window(down.window_seconds).max().unwrap();
        if s > current {
            prop_assert_eq!(s, up_min);
        }
        if s < current {
            prop_assert_eq!(s, down_max);
        }
    }

    /// The monotonic queues give exactly what a scan of every recommendation in each window
    /// gives, recorded either way (expiring by the longest window, or per window as the
    /// controller records), at irregular times.
    #[test]
    fn stabilized_equals_a_scan_of_the_windows(
        up in behavior(),
        down in behavior(),
        steps in prop::collection::vec((1i64..200, 0u32..60), 1..80),
        current in 0u32..60,
    ) {
        let keep = up.window_seconds.max(down.window_seconds);
        let (mut kept, mut per_window) = (ScaleHistory::default(), ScaleHistory::default());
        let mut all = Vec::new();
        let mut now = 0;
        for &(gap, r) in &steps {
            now += gap;
            kept.record_recommendation(now, r, keep);
            per_window.record_for_windows(now, r, &up, &down);
            all.push((now, r));
            let in_window = |w: i64| all.iter().filter(move |&&(t, _)| now - t <= w).map(|&(_, r)| r);
            let up_min = in_window(up.window_seconds).min().unwrap();
            let down_max = in_window(down.window_seconds).max().unwrap_or(0);
            let scanned = current.max(up_min).min(down_max);
            prop_assert_eq!(kept.stabilized(now, current, &up, &down), scanned);
            prop_assert_eq!(per_window.stabilized(now, current, &up, &down), scanned);
        }
    }

    /// Whatever the demand (or its absence), decisions stay within min and max.
    #[test]
    fn decisions_stay_within_bounds(
        up in behavior(),
        down in behavior(),
        min in 0u32..10,
        extra in 1u32..100,
        demand in prop::collection::vec(prop::option::of(0.0f64..50_000.0), 1..80),
        private_capacity in 0u32..50,
    ) {
        let max = min + extra;
        let controller = BurstController::new(config(up, down, min, max));
        let mut state = ControllerState::default();
        for (k, d) in demand.iter().enumerate() {
            let r = controller.recommend_in_place(&mut state, &Observation {
                demand: *d,
                current_replicas: min,
                public_replicas: 0,
                private_capacity,
            }, k as i64 * 30);
            prop_assert!(r.desired >= min && r.desired <= max, "{} not in {min}..={max}", r.desired);
        }
    }
}
