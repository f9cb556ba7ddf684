//! The burst controller driven as the operator drives it: recommend, plan, observe.

use proptest::prelude::*;
use skybridge::api::Cloud;
use skybridge::burst::{
    ControllerState, Event, EventKind, Observation, PlacementSummary, Recommendation,
};
use skybridge::estate::{Estate, load_paths};
use skybridge::planner::{ComponentKey, ComponentPlan, PlanInput, plan};
use skybridge::simulate::{World, policy_world};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn example() -> Estate {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/ecommerce");
    load_paths(&[dir]).expect("the example estate loads")
}

/// Loads an estate from YAML text through a temporary file.
fn estate_from(yaml: &str) -> Estate {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skybridge-burst-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("estate.yaml");
    std::fs::write(&file, yaml).unwrap();
    let estate = load_paths(&[file]).unwrap_or_else(|e| panic!("{e:?}"));
    std::fs::remove_dir_all(&dir).ok();
    estate
}

fn key(text: &str) -> ComponentKey {
    let parts: Vec<&str> = text.split('/').collect();
    ComponentKey {
        namespace: parts[0].into(),
        deployment: parts[1].into(),
        component: parts[2].into(),
    }
}

/// One component under its controller, planned with the whole estate each tick.
struct Loop {
    world: World,
    input: PlanInput,
    state: ControllerState,
    events: Vec<Event>,
}

impl Loop {
    fn new(estate: &Estate, component: &str) -> Self {
        let world = policy_world(estate, &key(component)).unwrap();
        let input = world.input.clone();
        Self {
            world,
            input,
            state: ControllerState::default(),
            events: Vec::new(),
        }
    }

    fn me(&self) -> usize {
        self.world.index
    }

    fn current(&self) -> &BTreeMap<String, u32> {
        &self.input.components[self.me()].current
    }

    fn public_now(&self) -> u32 {
        self.current()
            .iter()
            .filter(|(pool, _)| {
                self.input
                    .pools
                    .iter()
                    .any(|p| &p.name == *pool && p.cloud == Cloud::Public)
            })
            .map(|(_, n)| n)
            .sum()
    }

    fn tick(&mut self, now: i64, demand: Option<f64>) -> (Recommendation, ComponentPlan) {
        let i = self.me();
        let observation = Observation {
            demand,
            current_replicas: self.current().values().sum(),
            public_replicas: self.public_now(),
            private_capacity: self.world.private_capacity,
        };
        let (state, rec) = self
            .world
            .controller
            .recommend(&self.state, &observation, now);
        self.state = state;
        self.events.extend(rec.events.iter().cloned());
        let component = &mut self.input.components[i];
        component.desired = rec.desired;
        component.rebalance = rec.rebalance;
        let planned = plan(&self.input);
        let mine = planned.components[i].clone();
        let (state, events) = self.world.controller.observe_plan(
            &self.state,
            &PlacementSummary::from_plan(&mine),
            now,
        );
        self.state = state;
        self.events.extend(events);
        self.input.components[i].current = mine
            .placements
            .iter()
            .map(|p| (p.pool.clone(), p.replicas))
            .collect();
        (rec, mine)
    }

    fn count(&self, kind: EventKind) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }
}

const RANKER: &str = "recsys/ctr-ranker/ranker";

const TWO_CLOUDS: &str = r#"
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: { name: onprem }
spec:
  cloud: private
  provider: onprem
  region: dc1
  capacity: { cpu: "8", memory: 64Gi }
  cost: { cpuHour: 0.01 }
  startupSeconds: 30
  artifactStore: { endpoint: "https://minio.dc1", bucket: models, region: dc1, credentialsSecretRef: { name: s } }
---
apiVersion: skybridge.io/v1alpha1
kind: ComputePool
metadata: { name: cloud }
spec:
  cloud: public
  provider: aws
  region: eu-central-1
  capacity: { cpu: "1000", memory: 4Ti }
  cost: { cpuHour: 0.05 }
  startupSeconds: 120
  artifactStore: { bucket: models-euc1, region: eu-central-1, credentialsSecretRef: { name: s-public } }
---
apiVersion: skybridge.io/v1alpha1
kind: BurstPolicy
metadata: { name: cpu }
spec:
  metric: { prometheusUrl: "http://prometheus:9090", query: q, targetPerReplica: 100 }
  burst: { maxPublicReplicas: 10, maxCostPerHour: 0.4, failbackAfterSeconds: 300 }
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: { name: secret, namespace: ns }
spec:
  model: { source: { uri: "s3://models/secret", pool: onprem }, version: "1" }
  components:
    - name: c
      dataClass: sensitive
      image: img
      resources: { cpu: "1", memory: 1Gi }
      replicas: { min: 1, max: 100 }
      burstPolicy: cpu
---
apiVersion: skybridge.io/v1alpha1
kind: ModelDeployment
metadata: { name: open, namespace: ns }
spec:
  model: { source: { uri: "s3://models/open", pool: onprem }, version: "1" }
  components:
    - name: c
      dataClass: internal
      image: img
      resources: { cpu: "1", memory: 1Gi }
      replicas: { min: 1, max: 100 }
      burstPolicy: cpu
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A sensitive component never lands on a public pool, whatever the demand; an internal one
    /// under the same policy does burst, so the test is not vacuous.
    #[test]
    fn sensitive_never_on_public(demand in prop::collection::vec(0.0f64..5000.0, 5..40)) {
        let estate = estate_from(TWO_CLOUDS);
        let mut secret = Loop::new(&estate, "ns/secret/c");
        for (k, &d) in demand.iter().enumerate() {
            let (_, planned) = secret.tick(k as i64 * 30, Some(d));
            prop_assert_eq!(planned.replicas_in(Cloud::Public), 0);
        }
        let mut open = Loop::new(&estate, "ns/open/c");
        let mut public = 0;
        for k in 0..10 {
            public = public.max(open.tick(k * 30, Some(5000.0)).1.replicas_in(Cloud::Public));
        }
        prop_assert!(public > 0);
    }

    /// maxPublicReplicas and maxCostPerHour hold for every plan; a shortfall is reported.
    #[test]
    fn budgets_never_exceeded(demand in prop::collection::vec(0.0f64..3000.0, 5..60)) {
        let estate = estate_from(TWO_CLOUDS);
        let mut open = Loop::new(&estate, "ns/open/c");
        let price = 0.05; // one CPU at 0.05 per hour
        for (k, &d) in demand.iter().enumerate() {
            let (rec, planned) = open.tick(k as i64 * 30, Some(d));
            let public = planned.replicas_in(Cloud::Public);
            prop_assert!(public <= 8, "cost 0.4/h allows 8 public replicas, got {public}");
            prop_assert!(f64::from(public) * price <= 0.4 + 1e-9);
            if planned.placed() < rec.desired {
                prop_assert!(planned.reasons.iter().any(|r| r.contains("budget")), "{:?}", planned.reasons);
                prop_assert!(open.state.budget_bound);
            }
        }
        if open.state.budget_bound {
            prop_assert!(open.count(EventKind::BudgetHit) >= 1);
        }
    }

    /// Noisy but constant demand does not make the controller flap: a scale step is never
    /// reversed within the scale-down stabilization window (300 s in the example policy), and
    /// steps stay rare. Scale-ups on upward noise are by design (the example policy scales up
    /// without a window, to serve peaks); what must never happen is up-down-up churn.
    /// The seeds in `burst_controller.proptest-regressions` flapped with a fixed 3% dead band
    /// against ±5% noise; the dead band now widens to the measured noise (`burst::dead_band`).
    #[test]
    fn no_oscillation_on_noisy_constant_demand(
        level in 2000.0f64..20000.0,
        noise in prop::collection::vec(-0.05f64..0.05, 400),
    ) {
        let estate = example();
        let mut ranker = Loop::new(&estate, RANKER);
        let mut changes: Vec<(i64, i64)> = Vec::new(); // (time, direction)
        let mut last = None;
        for (k, n) in noise.iter().enumerate() {
            let now = k as i64 * 30;
            let (rec, _) = ranker.tick(now, Some(level * (1.0 + n)));
            if k >= 40
                && let Some(l) = last
                && l != rec.desired
            {
                changes.push((now, if rec.desired > l { 1 } else { -1 }));
            }
            last = Some(rec.desired);
        }
        let flaps = changes.windows(2).filter(|w| w[0].1 != w[1].1 && w[1].0 - w[0].0 < 300).count();
        prop_assert_eq!(flaps, 0, "a step reversed within the stabilization window: {:?}", changes);
        // 360 ticks (3 hours): at most one step per ten minutes on average.
        prop_assert!(changes.len() <= 18, "{} scale changes on constant demand: {:?}", changes.len(), changes);
    }
}

#[test]
fn budget_shortfall_is_an_event_not_hidden() {
    let estate = estate_from(TWO_CLOUDS);
    let mut open = Loop::new(&estate, "ns/open/c");
    // Default scale-up steps (+4 or +100% per 15 s) reach 50 within a few ticks.
    let (mut rec, mut planned) = open.tick(0, Some(5000.0));
    for k in 1..10 {
        (rec, planned) = open.tick(k * 30, Some(5000.0));
    }
    assert_eq!(rec.desired, 50);
    // 8 private CPUs, one taken by the sensitive deployment's min; 0.4/h buys 8 public.
    assert_eq!(planned.replicas_in(Cloud::Private), 7);
    assert_eq!(planned.replicas_in(Cloud::Public), 8);
    assert_eq!(planned.unplaced, 35);
    assert_eq!(open.count(EventKind::BudgetHit), 1);
    // Still binding: no second event.
    open.tick(300, Some(5000.0));
    assert_eq!(open.count(EventKind::BudgetHit), 1);
}

#[test]
fn public_replicas_go_first_on_scale_down() {
    let estate = example();
    let mut ranker = Loop::new(&estate, RANKER);
    let private = ranker.world.private_capacity;
    let mut t = 0;
    let mut planned = ranker.tick(t, Some(40.0 * 400.0)).1;
    while planned.placed() < 40 {
        t += 30;
        planned = ranker.tick(t, Some(40.0 * 400.0)).1;
    }
    assert_eq!(planned.replicas_in(Cloud::Private), private);
    let public = planned.replicas_in(Cloud::Public);
    assert!(public > 0);
    assert_eq!(ranker.count(EventKind::BurstStart), 1);
    // Demand falls for good; once the window passes, replicas go, public ones first.
    loop {
        t += 30;
        let (_, planned) = ranker.tick(t, Some(15.0 * 400.0));
        if planned.replicas_in(Cloud::Public) > 0 {
            assert_eq!(planned.replicas_in(Cloud::Private), private, "at {t}");
        } else {
            break;
        }
        assert!(t < 3600, "public replicas never left");
    }
    assert_eq!(ranker.count(EventKind::BurstEnd), 1);
}

#[test]
fn failback_only_after_the_window() {
    // Public replicas exist and private has room (e.g. another component shrank): they stay
    // until demand has fitted private capacity for failbackAfterSeconds (900 in the example).
    let estate = example();
    let mut ranker = Loop::new(&estate, RANKER);
    let i = ranker.me();
    ranker.input.components[i].current = [("aws-euc1-l4-spot".to_string(), 6)].into();
    ranker.state.public_replicas = 6;
    ranker.state.desired = Some(6);
    let window = ranker.world.controller.config().failback_after_seconds;
    assert_eq!(window, 900);
    let mut t = 0;
    while t < window {
        let (rec, planned) = ranker.tick(t, Some(6.0 * 400.0 / 1.05));
        assert!(!rec.rebalance, "rebalance allowed at {t}");
        assert_eq!(planned.replicas_in(Cloud::Public), 6, "moved at {t}");
        t += 60;
    }
    let (rec, planned) = ranker.tick(window, Some(6.0 * 400.0 / 1.05));
    assert!(rec.rebalance);
    // The planner keeps a component with min >= 2 in two pools where it can, so one replica may
    // stay on the public pool as the spread partner (dc1-l4 is the only private L4 pool).
    assert!(planned.replicas_in(Cloud::Public) <= 1, "{planned:?}");
    assert!(planned.replicas_in(Cloud::Private) >= 5);
    assert_eq!(ranker.count(EventKind::Failback), 1);
}

#[test]
fn a_misfit_restarts_the_failback_clock() {
    let estate = example();
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    let mut state = ControllerState {
        desired: Some(10),
        ..Default::default()
    };
    let obs = |capacity| Observation {
        demand: Some(10.0 * 400.0 / 1.05),
        current_replicas: 10,
        public_replicas: 3,
        private_capacity: capacity,
    };
    for t in (0..600).step_by(60) {
        assert!(
            !controller
                .recommend_in_place(&mut state, &obs(19), t)
                .rebalance
        );
    }
    // Private capacity dips below the need once: the clock restarts.
    assert!(
        !controller
            .recommend_in_place(&mut state, &obs(5), 600)
            .rebalance
    );
    for t in (660..1500).step_by(60) {
        assert!(
            !controller
                .recommend_in_place(&mut state, &obs(19), t)
                .rebalance,
            "{t}"
        );
    }
    assert!(
        controller
            .recommend_in_place(&mut state, &obs(19), 1560)
            .rebalance
    );
}

#[test]
fn scale_up_steps_follow_the_policy() {
    // Example scale-up: +8 replicas or +100% per 30 s, whichever is more; no window.
    let estate = example();
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    let mut state = ControllerState::default();
    // No private capacity above min, so the warm floor does not lift the count: steps show.
    let obs = Observation {
        demand: Some(80.0 * 400.0),
        current_replicas: 4,
        public_replicas: 0,
        private_capacity: 4,
    };
    let first = controller.recommend_in_place(&mut state, &obs, 0);
    assert_eq!(first.desired, 12, "4 + max(8, 4)");
    assert_eq!(first.why, skybridge::burst::Why::StepLimited);
    // Within the same period nothing more.
    assert_eq!(
        controller.recommend_in_place(&mut state, &obs, 15).desired,
        12
    );
    // Next period: from 12, +100% = 24.
    assert_eq!(
        controller.recommend_in_place(&mut state, &obs, 30).desired,
        24
    );
    assert_eq!(
        controller.recommend_in_place(&mut state, &obs, 60).desired,
        48
    );
    assert_eq!(
        controller.recommend_in_place(&mut state, &obs, 90).desired,
        80
    );
}

#[test]
fn scale_down_waits_for_the_window_and_steps() {
    // A 300 s scale-down window, lengthened to the public start-up (420 s on spot) since the
    // ranker can burst, with a step limit of at most 4 replicas per 60 s (the example releases
    // at once after 60 s). No private capacity above min, so the warm floor does not stop the
    // way down; no public replicas, so no burst quantum either.
    let estate = estate_with_policy(&example(), |spec| {
        spec.scale_down.stabilization_window_seconds = 300;
        spec.scale_down.max_step_replicas = Some(4);
        spec.scale_down.period_seconds = 60;
    });
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    let lengthened = controller.config().effective_down().window_seconds;
    assert_eq!(lengthened, 420);
    // From 40 replicas' worth of demand to `to` (per replica 392, so no dead band holds it):
    // (seconds, desired) every 30 s for 1800 s.
    let run = |to: f64| {
        let mut state = ControllerState::default();
        let at = |d: f64| Observation {
            demand: Some(d),
            current_replicas: 40,
            public_replicas: 0,
            private_capacity: 4,
        };
        assert_eq!(
            controller
                .recommend_in_place(&mut state, &at(40.0 * 392.0), 0)
                .desired,
            40
        );
        (1..=60)
            .map(|k| {
                let t = k * 30;
                let d = controller
                    .recommend_in_place(&mut state, &at(to * 392.0), t)
                    .desired;
                (t, d)
            })
            .collect::<Vec<(i64, u32)>>()
    };
    // Held for `window`, then down 4 per minute to `to`.
    // (A dip within the noise band is held by the lengthened window: see
    // `no_oscillation_on_noisy_constant_demand`.)
    let assert_held = |seen: &[(i64, u32)], window: i64, to: u32| {
        assert!(
            seen.iter()
                .filter(|(t, _)| *t <= window)
                .all(|&(_, d)| d == 40),
            "{seen:?}"
        );
        let after: Vec<u32> = seen
            .iter()
            .filter(|(t, _)| *t > window)
            .map(|&(_, d)| d)
            .collect();
        assert_eq!(after[0], 40 - 4.min(40 - to), "{seen:?}");
        for pair in after.windows(2) {
            assert!(pair[0] - pair[1] <= 4);
        }
        assert_eq!(*after.last().unwrap(), to, "{seen:?}");
    };
    // A fall of three quarters is forecast to go on: only the policy's own window holds it.
    assert_held(&run(10.0), 300, 10);
}

#[test]
fn bursts_ahead_of_a_ramp_by_the_public_start_up() {
    // Demand rises linearly; replicas requested on spot take 420 s. The controller must ask for
    // public replicas at least that long before demand exceeds private capacity.
    let estate = example();
    let mut ranker = Loop::new(&estate, RANKER);
    let private = f64::from(ranker.world.private_capacity) * 400.0;
    let slope = 2.0; // requests per second, per second
    let headroom = 1.0 + f64::from(ranker.world.controller.config().headroom_percent) / 100.0;
    let cross = (private / headroom / slope) as i64; // demand with headroom reaches private capacity
    let mut burst_at = None;
    for k in 0..(cross / 30 + 40) {
        let t = k * 30;
        let (_, planned) = ranker.tick(t, Some(slope * t as f64));
        if burst_at.is_none() && planned.replicas_in(Cloud::Public) > 0 {
            burst_at = Some(t);
        }
    }
    let burst_at = burst_at.expect("it bursts");
    assert!(
        burst_at + 420 <= cross,
        "burst at {burst_at}, capacity crossed at {cross}"
    );
}

#[test]
fn prewarm_raises_the_floor_in_its_window() {
    let estate = example();
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    let window = controller
        .config()
        .prewarm
        .iter()
        .find(|w| w.name == "black-friday-2026")
        .unwrap()
        .clone();
    let mut state = ControllerState::default();
    // No private capacity above min: the warm floor stays out of the way.
    let obs = Observation {
        demand: Some(100.0),
        current_replicas: 4,
        public_replicas: 0,
        private_capacity: 4,
    };
    let before = controller.recommend_in_place(&mut state, &obs, window.start - 60);
    assert_eq!(before.desired, 4);
    let during = controller.recommend_in_place(&mut state, &obs, window.start);
    assert_eq!(during.desired, window.min_replicas);
    assert_eq!(during.why, skybridge::burst::Why::Prewarm);
    assert!(during.events.iter().any(|e| e.kind == EventKind::Prewarm));
    let again = controller.recommend_in_place(&mut state, &obs, window.start + 60);
    assert!(again.events.iter().all(|e| e.kind != EventKind::Prewarm));
    // After the window, the floor is gone; the scale-down window then brings it back to min.
    let mut t = window.end;
    let mut last = window.min_replicas;
    while t < window.end + 3600 {
        last = controller.recommend_in_place(&mut state, &obs, t).desired;
        t += 30;
    }
    assert_eq!(last, 4);
}

#[test]
fn metric_unavailable_hold_last() {
    let estate = example();
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    let mut state = ControllerState::default();
    // Private capacity at the count already running: the warm floor adds nothing.
    let mut obs = Observation {
        demand: Some(10.0 * 390.0),
        current_replicas: 10,
        public_replicas: 0,
        private_capacity: 10,
    };
    assert_eq!(
        controller.recommend_in_place(&mut state, &obs, 0).desired,
        10
    );
    obs.demand = None;
    let r = controller.recommend_in_place(&mut state, &obs, 30);
    assert_eq!(r.desired, 10);
    assert_eq!(r.why, skybridge::burst::Why::HoldLast);
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kind, EventKind::MetricUnavailable);
    assert!(r.events[0].message.contains("HoldLast"));
    // One event per outage, not per tick.
    let r = controller.recommend_in_place(&mut state, &obs, 60);
    assert!(r.events.is_empty());
    obs.demand = Some(f64::NAN);
    assert_eq!(
        controller.recommend_in_place(&mut state, &obs, 90).why,
        skybridge::burst::Why::HoldLast
    );
}

#[test]
fn metric_unavailable_floor() {
    let estate = example();
    let features = Loop::new(&estate, "recsys/ctr-ranker/feature-transform");
    let controller = &features.world.controller;
    let mut state = ControllerState::default();
    // No private capacity above min: the fallback floor is not lifted by the warm floor.
    let mut obs = Observation {
        demand: Some(30.0 * 1500.0),
        current_replicas: 2,
        public_replicas: 0,
        private_capacity: 2,
    };
    let mut last = 0;
    for t in (0..300).step_by(30) {
        last = controller.recommend_in_place(&mut state, &obs, t).desired;
    }
    assert_eq!(last, 30);
    obs.demand = None;
    let r = controller.recommend_in_place(&mut state, &obs, 300);
    assert_eq!(r.desired, 8, "floorReplicas of feature-cpu");
    assert_eq!(r.why, skybridge::burst::Why::FallbackFloor);
    assert!(
        r.events
            .iter()
            .any(|e| e.kind == EventKind::MetricUnavailable && e.message.contains("Floor"))
    );
}

#[test]
fn state_round_trips_through_json() {
    let estate = example();
    let mut ranker = Loop::new(&estate, RANKER);
    for k in 0..50 {
        ranker.tick(k * 30, Some(100.0 * k as f64 * 3.0));
    }
    let json = serde_json::to_string(&ranker.state).unwrap();
    let back: ControllerState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ranker.state);
}

#[test]
fn reconcile_plans_every_controlled_component_at_once() {
    // The four ranking components share maxPublicReplicas 64 and maxCostPerHour 60.
    let estate = example();
    let keys = [
        "recsys/ctr-ranker/ranker",
        "recsys/multitask/search-head",
        "recsys/multitask/recommendation-head",
        "recsys/multitask/ads-head",
    ];
    let loops: Vec<Loop> = keys.iter().map(|k| Loop::new(&estate, k)).collect();
    let input = loops[0].input.clone();
    let mut states: Vec<ControllerState> = vec![ControllerState::default(); keys.len()];
    let mut public_max = 0;
    for k in 0..20 {
        let controlled: Vec<_> = loops
            .iter()
            .zip(&states)
            .map(|(l, s)| {
                (
                    l.me(),
                    &l.world.controller,
                    s,
                    Observation {
                        demand: Some(1.0e6),
                        current_replicas: 0,
                        public_replicas: 0,
                        private_capacity: l.world.private_capacity,
                    },
                )
            })
            .collect();
        let (next, planned, decisions) = skybridge::burst::reconcile(&input, &controlled, k * 30);
        assert_eq!(decisions.len(), keys.len());
        let public: u32 = decisions.iter().map(|d| d.placement.public_replicas).sum();
        let cost: f64 = planned
            .components
            .iter()
            .flat_map(|c| c.placements.iter())
            .filter(|p| p.cloud == Cloud::Public)
            .map(|p| {
                let pool = input.pools.iter().find(|x| x.name == p.pool).unwrap();
                f64::from(p.replicas)
                    * pool
                        .price
                        .per_replica_hour(&input.components[0].per_replica)
            })
            .sum();
        assert!(public <= 64, "{public}");
        assert!(cost <= 60.0 + 1e-9, "{cost}");
        public_max = public_max.max(public);
        states = next;
    }
    assert!(public_max > 0);
}

#[test]
fn owned_private_capacity_stays_warm_unless_shared() {
    let estate = example();
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    assert!(controller.config().keep_private_warm);
    let obs = Observation {
        demand: Some(2.0 * 400.0),
        current_replicas: 19,
        public_replicas: 0,
        private_capacity: 19,
    };
    // Runs an hour of low demand from 19 private replicas held, the private pools holding
    // `capacity` of them for this component; returns the last decision.
    let hold_19 = |controller: &skybridge::burst::BurstController, capacity: u32| {
        let mut state = ControllerState::default();
        let held = PlacementSummary {
            private_replicas: 19,
            ..Default::default()
        };
        controller.observe_plan_in_place(&mut state, &held, 0);
        let obs = Observation {
            private_capacity: capacity,
            ..obs
        };
        let mut last = None;
        for t in (0..3600).step_by(30) {
            let r = controller.recommend_in_place(&mut state, &obs, t);
            let placed = PlacementSummary {
                private_replicas: r.desired.min(capacity),
                public_replicas: r.desired.saturating_sub(capacity),
                ..Default::default()
            };
            controller.observe_plan_in_place(&mut state, &placed, t);
            last = Some(r);
        }
        last.unwrap()
    };
    let last = hold_19(controller, 19);
    assert_eq!(last.desired, 19, "owned replicas are paid anyway: kept");
    assert_eq!(last.why, skybridge::burst::Why::PrivateWarm);
    // A sibling needs room: the room left shrinks to 12, so does what is kept warm.
    let last = hold_19(controller, 12);
    assert_eq!(
        last.desired, 12,
        "warm replicas yield to the others' demand"
    );
    assert_eq!(last.why, skybridge::burst::Why::PrivateWarm);
    // Idle room never held is not claimed: demand decides.
    let mut state = ControllerState::default();
    let mut desired = 0;
    for t in (0..3600).step_by(30) {
        desired = controller.recommend_in_place(&mut state, &obs, t).desired;
    }
    assert!(desired < 19, "idle room is not claimed: {desired}");
    // Shared private capacity: idle replicas go back to the other work.
    let shared = estate_with_policy(&estate, |spec| spec.burst.private_capacity_shared = true);
    let ranker = Loop::new(&shared, RANKER);
    let controller = &ranker.world.controller;
    assert!(!controller.config().keep_private_warm);
    let mut state = ControllerState::default();
    let mut desired = 0;
    for t in (0..3600).step_by(30) {
        desired = controller.recommend_in_place(&mut state, &obs, t).desired;
    }
    assert_eq!(desired, 4, "down to min");
}

/// The example estate with the ranker's policy changed by `change`.
fn estate_with_policy(
    estate: &Estate,
    change: impl Fn(&mut skybridge::api::BurstPolicySpec),
) -> Estate {
    let mut estate = estate.clone();
    let policy = std::sync::Arc::make_mut(estate.policies.get_mut("ranking").unwrap());
    change(&mut policy.spec);
    estate
}

/// The volatility headroom follows how far demand has come in above the forecast: spiky demand
/// gets more replicas than smooth demand of the same level, and none when it is turned off.
#[test]
fn volatility_headroom_follows_measured_spikes() {
    let estate = example();
    let run = |estate: &Estate, spiky: bool| {
        let ranker = Loop::new(estate, RANKER);
        let controller = &ranker.world.controller;
        let mut state = ControllerState::default();
        let mut desired = 0;
        // Six hours at 30 s: level 20 replicas' worth, with one short spike per half hour.
        for k in 0..720i64 {
            let spike = spiky && k % 60 < 3;
            let obs = Observation {
                // A fifth above the level: spikes, not surges (see `burst::SURGE_GROWTH`).
                demand: Some(if spike { 24.0 } else { 20.0 } * 400.0),
                current_replicas: desired.max(4),
                public_replicas: 0,
                private_capacity: 4,
            };
            desired = controller
                .recommend_in_place(&mut state, &obs, k * 30)
                .desired;
        }
        (desired, state.shortfall_square)
    };
    let (smooth, smooth_shortfall) = run(&estate, false);
    let (spiky, spiky_shortfall) = run(&estate, true);
    assert_eq!(smooth_shortfall, 0.0);
    assert!(spiky_shortfall > 0.0);
    assert_eq!(smooth, 20);
    assert!(spiky > 20, "spiky demand keeps headroom: {spiky}");
    let off = estate_with_policy(&estate, |spec| spec.metric.volatility_headroom = Some(0.0));
    let (spiky_off, _) = run(&off, true);
    assert!(spiky_off < spiky, "{spiky_off} vs {spiky}");
}

#[test]
fn the_trend_is_trusted_only_as_far_as_it_has_proved_right() {
    use skybridge::burst::trend_weight;
    assert_eq!(trend_weight(0.0, 0.0), 1.0, "no history: trusted");
    assert_eq!(trend_weight(1.0, 4.0), 1.0, "better than standing still");
    assert_eq!(trend_weight(4.0, 1.0), 0.25);
    // Spikes that revert: the trend overshoots, so its weight falls below one.
    let estate = example();
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    let mut state = ControllerState::default();
    for k in 0..2000i64 {
        let d = if k % 40 < 4 {
            8000.0 + 1500.0 * (k % 40) as f64
        } else {
            8000.0
        };
        let obs = Observation {
            demand: Some(d),
            current_replicas: 20,
            public_replicas: 0,
            private_capacity: 4,
        };
        controller.recommend_in_place(&mut state, &obs, k * 30);
    }
    let trust = trend_weight(state.trend_error_square, state.flat_error_square);
    assert!(trust < 1.0, "{trust}");
    // A steady ramp: the trend is right, fully trusted.
    let mut state = ControllerState::default();
    for k in 0..2000i64 {
        let obs = Observation {
            demand: Some(1000.0 + 5.0 * k as f64),
            current_replicas: 20,
            public_replicas: 0,
            private_capacity: 4,
        };
        controller.recommend_in_place(&mut state, &obs, k * 30);
    }
    assert_eq!(
        trend_weight(state.trend_error_square, state.flat_error_square),
        1.0
    );
}

/// The state stays bounded whatever the interval: forecasts awaiting their outcome are capped.
#[test]
fn pending_forecasts_are_bounded() {
    let estate = example();
    let ranker = Loop::new(&estate, RANKER);
    let controller = &ranker.world.controller;
    let mut state = ControllerState::default();
    for k in 0..5000i64 {
        let obs = Observation {
            demand: Some(5000.0),
            current_replicas: 20,
            public_replicas: 0,
            private_capacity: 19,
        };
        // One tick per second: 420 s of start-up would be 420 forecasts.
        controller.recommend_in_place(&mut state, &obs, k);
        assert!(state.pending_forecasts.len() <= skybridge::burst::MAX_PENDING_FORECASTS);
    }
}

/// The ranker under the example policy without volatility headroom (so counts follow demand
/// alone), holding its 19 private replicas plus `public` public ones.
fn bursting_ranker(public: u32) -> (skybridge::burst::BurstController, ControllerState) {
    let estate = estate_with_policy(&example(), |spec| {
        spec.metric.volatility_headroom = Some(0.0);
    });
    let ranker = Loop::new(&estate, RANKER);
    let controller = ranker.world.controller.clone();
    let mut state = ControllerState {
        desired: Some(19 + public),
        ..Default::default()
    };
    controller.observe_plan_in_place(
        &mut state,
        &PlacementSummary {
            private_replicas: 19,
            public_replicas: public,
            ..Default::default()
        },
        -3600,
    );
    (controller, state)
}

/// One tick at `replicas` worth of demand; the plan places private first, then public.
fn tick_at(
    controller: &skybridge::burst::BurstController,
    state: &mut ControllerState,
    replicas: f64,
    now: i64,
) -> Recommendation {
    let current = state.desired.unwrap_or(19);
    let observation = Observation {
        demand: Some(replicas * 400.0),
        current_replicas: current,
        public_replicas: current.saturating_sub(19),
        private_capacity: 19,
    };
    let r = controller.recommend_in_place(state, &observation, now);
    controller.observe_plan_in_place(
        state,
        &PlacementSummary {
            private_replicas: r.desired.min(19),
            public_replicas: r.desired.saturating_sub(19),
            ..Default::default()
        },
        now,
    );
    r
}

/// The ranker an hour flat at 5 replicas' worth, then a spike to 16 at `t = 3600`: its first
/// surge block. Returns the controller, its state, the public start-up and the block size.
fn after_a_first_surge_block() -> (skybridge::burst::BurstController, ControllerState, i64, u32) {
    use skybridge::burst::{Why, surge_block};
    let (controller, mut state) = bursting_ranker(0);
    let startup = i64::from(controller.config().public_startup_seconds.unwrap());
    let block = surge_block(controller.config().max);
    for t in (0..3600).step_by(30) {
        tick_at(&controller, &mut state, 5.0, t);
    }
    let first = tick_at(&controller, &mut state, 16.0, 3600);
    assert_eq!(first.desired, 19 + block, "{first:?}");
    assert_eq!(first.why, Why::Surge);
    (controller, state, startup, block)
}

/// While public replicas requested earlier are starting, demand creeping up adds none (they
/// would arrive after what they chase); a rise growing the public share by half goes through at
/// once, and after the start-up the creep is served.
#[test]
fn a_burst_does_not_chase_demand_while_its_replicas_start() {
    let (controller, mut state) = bursting_ranker(0);
    let startup = i64::from(controller.config().public_startup_seconds.unwrap());
    // Flat at 18 replicas' worth for an hour: the trend settles.
    for t in (0..3600).step_by(30) {
        assert_eq!(tick_at(&controller, &mut state, 18.0, t).desired, 19);
    }
    // A step to 29 replicas' worth: ten public replicas at once.
    let up = tick_at(&controller, &mut state, 29.0, 3600);
    assert!(up.desired >= 29, "{up:?}");
    let after_up = up.desired;
    // Creeping up by a third of a replica a tick, while those start: held.
    let mut t = 3600;
    let mut demand: f64 = 29.0;
    let mut held_short = 0;
    while t + 30 < 3600 + startup {
        t += 30;
        demand += 0.3;
        let r = tick_at(&controller, &mut state, demand, t);
        if r.desired == after_up && demand.ceil() > f64::from(after_up) {
            held_short += 1;
        }
        if r.desired > after_up {
            let public = after_up - 19;
            assert!(
                r.desired - after_up >= public.div_ceil(2).max(2),
                "a scale-up while replicas start adds at least half the public share: {r:?}"
            );
        } else {
            assert_eq!(r.desired, after_up);
        }
    }
    assert!(
        held_short > 0,
        "demand outgrew the replicas while they started"
    );
    let held = state.desired.unwrap();
    // The step was a surge: once its replicas are ready, a jump of ten more replicas' worth
    // gets a block at once (one block: a jump after the first block may be a spike's peak,
    // gone before any replica for it is ready).
    t += 30;
    demand += 10.0;
    let jump = tick_at(&controller, &mut state, demand, t);
    let block = skybridge::burst::surge_block(controller.config().max);
    assert_eq!(jump.desired, held + block, "{jump:?}");
    // Once nothing is starting, demand is followed again.
    let mut last = jump.desired;
    for _ in 0..(2 * startup / 30) {
        t += 30;
        demand += 0.3;
        last = tick_at(&controller, &mut state, demand, t).desired;
    }
    assert!(
        f64::from(last) >= demand.ceil(),
        "{last} replicas for {demand}"
    );
}

/// Public replicas go back in quanta of a tenth of those running (so a large burst does not
/// step down replica by replica on noise), or all at once when demand fits private capacity.
#[test]
fn public_replicas_are_released_in_quanta_or_all_at_once() {
    let (controller, mut state) = bursting_ranker(40);
    let mut current = 59;
    let mut demand: f64 = 59.0;
    let mut changes = Vec::new();
    for k in 0..400 {
        let t = k * 30;
        demand = (demand - 0.25).max(5.0);
        let r = tick_at(&controller, &mut state, demand, t);
        if r.desired != current {
            changes.push((current, r.desired));
            current = r.desired;
        }
    }
    assert_eq!(current, 19, "down to the warm private floor: {changes:?}");
    assert!(!changes.is_empty());
    for &(from, to) in &changes {
        assert!(to < from, "only releases: {changes:?}");
        let public = from - 19;
        if to > 19 {
            assert!(
                from - to >= skybridge::burst::burst_quantum(public),
                "{from} → {to}: less than a quantum of {public} public: {changes:?}"
            );
        }
    }
    assert!(
        changes.iter().any(|&(from, to)| to > 19 && from - to > 1),
        "a large burst steps down by more than one: {changes:?}"
    );
    assert!(skybridge::burst::burst_quantum(40) == 4 && skybridge::burst::burst_quantum(5) == 1);
}

/// A surge (demand grown by more than a quarter within the public start-up) is met as a
/// threshold scaler meets it: when demand passes 80% of the replicas requested, a block of a
/// tenth of `max` at once (the first at least what demand needs now), nothing more while the block starts
/// however far demand climbs, another block once it is ready if demand still passes 80%, and
/// the blocks released one a tick as demand falls under 60% of what was ready before each.
#[test]
fn a_surge_gets_blocks_at_once_none_while_one_starts_and_all_go_when_it_ends() {
    use skybridge::burst::{SURGE_RELEASE_UTILISATION, SURGE_UTILISATION, Why, surge_block};
    let (controller, mut state) = bursting_ranker(0);
    let startup = i64::from(controller.config().public_startup_seconds.unwrap());
    let block = surge_block(controller.config().max);
    assert_eq!(block, 8, "a tenth of the ranker's max of 80");
    // An hour flat at 5 replicas' worth, the 19 owned private replicas warm.
    for t in (0..3600).step_by(30) {
        assert_eq!(tick_at(&controller, &mut state, 5.0, t).desired, 19);
    }
    // Demand triples within four minutes: below 80% of 19 replicas nothing happens (the owned
    // private replicas serve it), above it a block.
    let mut t = 3600;
    let mut demand = 5.0;
    let mut blocked_at = None;
    while blocked_at.is_none() {
        t += 30;
        demand += 1.5;
        let r = tick_at(&controller, &mut state, demand, t);
        if demand <= SURGE_UTILISATION * 19.0 {
            assert_eq!(r.desired, 19, "{demand}: {r:?}");
        } else {
            assert_eq!(r.desired, 19 + block, "{demand}: {r:?}");
            assert_eq!(r.why, Why::Surge);
            blocked_at = Some(t);
        }
    }
    let blocked_at = blocked_at.unwrap();
    // Demand keeps climbing far past the block while it starts: held.
    while t + 30 < blocked_at + startup {
        t += 30;
        demand += 1.5;
        assert_eq!(
            tick_at(&controller, &mut state, demand, t).desired,
            19 + block
        );
    }
    assert!(
        demand > f64::from(19 + block),
        "demand outgrew the block: {demand}"
    );
    // The block is ready and demand passes 80% of it: the next block.
    t = blocked_at + startup;
    let next = tick_at(&controller, &mut state, demand, t);
    // One block more, though demand needs more (see the test below).
    assert_eq!(next.desired, 19 + 2 * block, "{next:?}");
    // Demand falls back to 70% of the 19 replicas before the first block (between the release
    // and the surge utilisations) while the second block starts: judged against the replicas
    // ready without it, as a threshold scaler judges it, both blocks stay for a rebound.
    t += 30;
    let dipped = 0.7 * 19.0;
    assert!(dipped < SURGE_UTILISATION * 19.0 && dipped > SURGE_RELEASE_UTILISATION * 19.0);
    let dip = tick_at(&controller, &mut state, dipped, t);
    assert_eq!(dip.desired, next.desired, "{dip:?}");
    // Demand collapses under 60% of the replicas before the first block: the blocks go, one a
    // tick, down to the warm private floor.
    t += 30;
    let fallen = SURGE_RELEASE_UTILISATION * 19.0 - 1.0;
    let first = tick_at(&controller, &mut state, fallen, t);
    assert_eq!(first.desired, 19 + block, "{first:?}");
    t += 30;
    let after = tick_at(&controller, &mut state, fallen, t);
    assert_eq!(after.desired, 19, "{after:?}");
    assert_eq!(state.surge, None);
}

/// A spike that falls back and rises again within minutes (news breaking in waves; the
/// second-spike shape of the GOOG and ELB traces of NAB) finds its first block still there,
/// and a spike rising again from a dip surges though demand a start-up ago was higher.
#[test]
fn a_spike_rising_again_after_a_dip_keeps_and_gets_blocks() {
    use skybridge::burst::Why;
    // A spike to 22 replicas' worth: a block.
    let (controller, mut state, startup, block) = after_a_first_surge_block();
    // It falls back to 13 (under 80%, over 60% of the 19 before the block) and rises again:
    // the block stays throughout, and is there when the second wave comes.
    let mut t = 3600;
    for demand in [22.0, 18.0, 13.0, 13.0, 14.0, 17.0] {
        t += 30;
        let r = tick_at(&controller, &mut state, demand, t);
        assert!(r.desired >= 19 + block, "{demand}: {r:?}");
    }
    // Much later, after a quiet spell, a first wave comes and goes (its block goes with it),
    // then a second wave starts from the dip: demand a start-up ago was higher than now, yet
    // the rise from the dip is a surge, and at 80% of the private replicas it gets its block.
    t += 4 * startup;
    for _ in 0..(4 * startup / 30) {
        t += 30;
        tick_at(&controller, &mut state, 5.0, t);
    }
    for demand in [10.0, 17.0, 17.0, 10.0, 8.0, 6.0, 6.0] {
        t += 30;
        tick_at(&controller, &mut state, demand, t);
    }
    t += 30;
    let released = tick_at(&controller, &mut state, 6.0, t);
    assert_eq!(
        released.desired, 19,
        "the first wave's block went: {released:?}"
    );
    t += 30;
    let second = tick_at(&controller, &mut state, 16.0, t);
    assert_eq!(second.desired, 19 + block, "{second:?}");
    assert_eq!(second.why, Why::Surge);
}

/// A spike collapsing in minutes stands, for a while, above where demand was a start-up ago;
/// its block goes all the same once demand is well under the spike's peak, and the forecast
/// of its rise holds no public replica (the AMZN trace of NAB held 5 for 5 minutes).
#[test]
fn a_collapsed_spike_releases_its_block_though_above_a_start_up_ago() {
    let (controller, mut state) = bursting_ranker(0);
    for t in (0..3600).step_by(30) {
        tick_at(&controller, &mut state, 2.0, t);
    }
    let mut t = 3600;
    for demand in [5.0, 8.0, 11.0, 14.0, 16.5] {
        t += 30;
        tick_at(&controller, &mut state, demand, t);
    }
    assert!(state.surge.is_some(), "the spike got a block");
    // Down to 10: under 60% of the 19 replicas before the block, under 80% of the peak, and
    // still far above the 2 of a start-up ago.
    t += 30;
    let r = tick_at(&controller, &mut state, 10.0, t);
    assert_eq!(r.desired, 19, "{r:?}");
    assert_eq!(state.surge, None);
}

/// A block is at least what demand needs now: a step far above the block gets every replica it
/// needs at once (only the forecast's extrapolation of the rise is not trusted).
#[test]
fn a_surge_block_serves_at_least_the_demand_of_now() {
    let (controller, mut state) = bursting_ranker(0);
    for t in (0..3600).step_by(30) {
        tick_at(&controller, &mut state, 10.0, t);
    }
    let r = tick_at(&controller, &mut state, 45.0, 3600);
    assert_eq!(r.desired, 45, "{r:?}");
    assert_eq!(r.why, skybridge::burst::Why::Surge);
}

/// Blocks come a start-up apart, so once the one still starting is released every block left
/// is ready, and is judged so: a falling spike gives back its blocks one a tick, not only the
/// one that never served (the CRM trace of NAB held a ready block two minutes longer).
#[test]
fn after_the_starting_block_goes_the_blocks_left_are_judged_ready() {
    use skybridge::burst::SURGE_RELEASE_UTILISATION;
    // Three blocks a start-up apart, demand climbing all the way.
    let (controller, mut state, startup, block) = after_a_first_surge_block();
    let mut t = 3600 + startup;
    assert_eq!(
        tick_at(&controller, &mut state, 26.0, t).desired,
        19 + 2 * block
    );
    t += startup;
    assert_eq!(
        tick_at(&controller, &mut state, 33.0, t).desired,
        19 + 3 * block
    );
    // Demand falls under 60% of the two blocks' replicas without one: the third (starting)
    // goes, and next tick the second (ready), though within a start-up of the third.
    let fallen = SURGE_RELEASE_UTILISATION * f64::from(19 + block) - 1.0;
    assert!(fallen > SURGE_RELEASE_UTILISATION * 19.0, "{fallen}");
    t += 30;
    let r = tick_at(&controller, &mut state, fallen, t);
    assert_eq!(r.desired, 19 + 2 * block, "{r:?}");
    t += 30;
    let r = tick_at(&controller, &mut state, fallen, t);
    assert_eq!(r.desired, 19 + block, "{r:?}");
}

/// Blocks after the first are one block each, not what demand needs at the time: a spike's
/// peak is gone by the time they are ready (the CRM and FB traces of NAB paid for replicas the
/// threshold never started).
#[test]
fn surge_blocks_after_the_first_are_one_block_each() {
    let (controller, mut state, startup, block) = after_a_first_surge_block();
    let mut t = 3600;
    // Demand climbs to 40 replicas' worth while the block starts: when it is ready, one block
    // more, whether demand is past its peak (36) or at a new one (45).
    for demand in [30.0, 40.0, 38.0] {
        t += 30;
        tick_at(&controller, &mut state, demand, t);
    }
    let before = state.clone();
    t = 3600 + startup;
    assert!(
        36.0 > f64::from(19 + 2 * block),
        "the test needs demand above two blocks"
    );
    for demand in [36.0, 45.0] {
        let mut state = before.clone();
        let r = tick_at(&controller, &mut state, demand, t);
        assert_eq!(r.desired, 19 + 2 * block, "{demand}: {r:?}");
    }
}

/// Smooth ramps and noisy flat demand are no surge: a daily cycle rising steeper than the NYC
/// trace's steepest half-hour is followed replica by replica, never by blocks.
#[test]
fn smooth_ramps_and_noise_are_no_surge() {
    use skybridge::burst::Why;
    let (controller, mut state) = bursting_ranker(0);
    let mut t = 0;
    // From 10 to 40 replicas' worth in four hours (the NYC trace's steepest ramps take 17% of
    // demand per start-up; this one 20% at its start).
    for k in 0..480 {
        t = k * 30;
        let demand = 10.0 + 30.0 * f64::from(k as u32) / 480.0;
        let r = tick_at(&controller, &mut state, demand, t);
        assert_ne!(r.why, Why::Surge, "{demand}: {r:?}");
        let followed = ((demand * 1.25).ceil() as u32 + 2).max(19);
        assert!(r.desired <= followed, "{demand}: {r:?}");
    }
    // ±10% noise around 30 replicas' worth, alternating every tick.
    for k in 0..240 {
        t += 30;
        let demand = 30.0 * if k % 2 == 0 { 1.1 } else { 0.9 };
        let r = tick_at(&controller, &mut state, demand, t);
        assert_ne!(r.why, Why::Surge, "{demand}: {r:?}");
    }
    assert_eq!(state.surge, None);
}
