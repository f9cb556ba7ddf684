//! The `skybridge simulate` report. Its JSON shape is a contract for scripts:
//! `{"component","policyName","peak","stepSeconds","start","end","steps","privateCapacity",
//! "policy":RESULT,"baselines":{"privateOnly":RESULT|null,"publicOnly":RESULT|null,
//! "staticThreshold":RESULT,"optimalLowerBound":RESULT,"oracle":RESULT},"costRatioToLowerBound",
//! "headline":HEADLINE,"headlines":{"policy":HEADLINE,"privateOnly":HEADLINE|null,
//! "publicOnly":HEADLINE|null,"staticThreshold":HEADLINE,"optimalLowerBound":HEADLINE},
//! "notes":[...]}` with RESULT = `{"cost","unmetDemandFraction","publicReplicaHours",
//! "burstEvents","scaleEvents","replicaChanges","privateCost","publicCost","peakPublicReplicas",
//! "privateReplicaHours","chargebackCost"}` and HEADLINE = `{"unmetDemandFraction",
//! "publicSpendRatioToOracle","chargebackRatioToOracle"}` (ratios `null` when the oracle pays
//! nothing). Fields may be added, none renamed.

use crate::simulate::sweep::Sweep;
use crate::simulate::{Headline, RunMetrics, Simulation, format_timestamp};
use comfy_table::{CellAlignment, Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulateReport {
    /// `namespace/deployment/component`.
    pub component: String,
    pub policy_name: String,
    /// Peak demand the trace was scaled to.
    pub peak: f64,
    pub step_seconds: i64,
    pub start: String,
    pub end: String,
    pub steps: usize,
    /// Replicas of the component the private pools hold next to the other components.
    pub private_capacity: u32,
    pub policy: RunMetrics,
    pub baselines: Baselines,
    pub cost_ratio_to_lower_bound: Option<f64>,
    /// The policy's headline figures against the oracle (owned and chargeback views).
    pub headline: Headline,
    /// The same for every run.
    pub headlines: Headlines,
    /// Controller events of the policy run, by kind.
    pub policy_events: BTreeMap<String, u64>,
    /// Stockouts and spot interruptions injected, and what the policy run did about them
    /// (issue #19); absent without them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_events: Option<crate::simulate::capacity_events::CapacityFigures>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Baselines {
    /// `null` when no private pool may run the component.
    pub private_only: Option<RunMetrics>,
    /// `null` when no public pool may run the component (sensitive data).
    pub public_only: Option<RunMetrics>,
    pub static_threshold: RunMetrics,
    pub optimal_lower_bound: RunMetrics,
    /// Knows the future but pays the start-up delays: attainable.
    pub oracle: RunMetrics,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Headlines {
    pub policy: Headline,
    pub private_only: Option<Headline>,
    pub public_only: Option<Headline>,
    pub static_threshold: Headline,
    pub optimal_lower_bound: Headline,
}

/// The report of a simulation.
pub fn simulate_report(sim: &Simulation) -> SimulateReport {
    let mut notes = Vec::new();
    if sim.defaulted {
        notes.push(format!(
            "component {} chosen by default: the first, in key order, with a burst policy",
            sim.component
        ));
    }
    notes.push(format!(
        "trace scaled to a peak of {} per second and interpolated linearly to {} s steps; other components stay at their min",
        sim.peak, sim.step_seconds()
    ));
    notes.push(
        "cost (owned view): owned private capacity at its amortised price for the whole run (paid whether used or not, by every run alike) plus public replicas while requested, start-up included; what a policy changes is public spend and unmet demand".into(),
    );
    notes.push(
        "chargeback view: private replica-hours at their pools' prices (internal chargeback) plus public spend".into(),
    );
    notes.push(
        "oracle: knows the future, pays the same start-up delays (attainable); the optimal lower bound also has none".into(),
    );
    if sim.private_only.is_none() {
        notes.push("private-only baseline: no private pool may run this component".into());
    }
    if sim.public_only.is_none() {
        notes.push("public-only baseline: no public pool may run this component".into());
    }
    let figures = sim.policy.capacity;
    let capacity_events = (figures.stockouts + figures.interruptions > 0).then_some(figures);
    if let Some(f) = &capacity_events {
        notes.push(format!(
            "capacity events (same for every replayed run; not for the oracle and the lower bound): {} stockout(s), {} spot interruption(s); in the policy run pools went short {} time(s), {} replica(s) re-placed from short pools, {} replaced ahead of interruptions",
            f.stockouts, f.interruptions, f.pools_short, f.shortfall_replaced, f.replicas_interrupted
        ));
    }
    let oracle = &sim.oracle;
    let headline = |m: &RunMetrics| Headline::of(m, oracle);
    SimulateReport {
        component: sim.component.to_string(),
        policy_name: sim.policy_name.clone(),
        peak: sim.peak,
        step_seconds: sim.step,
        start: format_timestamp(sim.start),
        end: format_timestamp(sim.end),
        steps: sim.steps,
        private_capacity: sim.private_capacity,
        policy: sim.policy.metrics,
        baselines: Baselines {
            private_only: sim.private_only.as_ref().map(|r| r.metrics),
            public_only: sim.public_only.as_ref().map(|r| r.metrics),
            static_threshold: sim.static_threshold.metrics,
            optimal_lower_bound: sim.lower_bound,
            oracle: sim.oracle,
        },
        cost_ratio_to_lower_bound: sim.cost_ratio_to_lower_bound,
        headline: headline(&sim.policy.metrics),
        headlines: Headlines {
            policy: headline(&sim.policy.metrics),
            private_only: sim.private_only.as_ref().map(|r| headline(&r.metrics)),
            public_only: sim.public_only.as_ref().map(|r| headline(&r.metrics)),
            static_threshold: headline(&sim.static_threshold.metrics),
            optimal_lower_bound: headline(&sim.lower_bound),
        },
        policy_events: sim
            .policy
            .events
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect(),
        capacity_events,
        notes,
    }
}

impl Simulation {
    fn step_seconds(&self) -> i64 {
        self.step
    }
}

impl SimulateReport {
    /// A table for people: one row per run, then the ratio and the notes.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY);
        table.set_header([
            "RUN",
            "UNMET",
            "PUBLIC SPEND",
            "÷ ORACLE",
            "CHARGEBACK",
            "÷ ORACLE",
            "COST",
            "VS BOUND",
            "PUBLIC REPLICA-H",
            "BURSTS",
            "SCALE CHANGES",
            "REPLICAS CHANGED",
        ]);
        let bound = self.baselines.optimal_lower_bound.cost;
        let oracle = self.baselines.oracle;
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
        let mut row = |name: &str, m: Option<&RunMetrics>| match m {
            Some(m) => {
                let h = Headline::of(m, &oracle);
                table.add_row([
                    name.to_string(),
                    format!("{:.4}%", m.unmet_demand_fraction * 100.0),
                    format!("{:.2}", m.public_cost),
                    ratio(h.public_spend_ratio_to_oracle),
                    format!("{:.2}", m.chargeback_cost),
                    ratio(h.chargeback_ratio_to_oracle),
                    format!("{:.2}", m.cost),
                    if bound > 0.0 {
                        format!("{:.3}", m.cost / bound)
                    } else {
                        "-".into()
                    },
                    format!("{:.1}", m.public_replica_hours),
                    m.burst_events.to_string(),
                    m.scale_events.to_string(),
                    m.replica_changes.to_string(),
                ]);
            }
            None => {
                table.add_row([name, "n/a", "", "", "", "", "", "", "", "", "", ""]);
            }
        };
        row(
            &format!("policy ({})", self.policy_name),
            Some(&self.policy),
        );
        row(
            "private only (enough capacity)",
            self.baselines.private_only.as_ref(),
        );
        row("public only", self.baselines.public_only.as_ref());
        row(
            "static threshold (80%)",
            Some(&self.baselines.static_threshold),
        );
        row("oracle (knows the future, pays start-ups)", Some(&oracle));
        row(
            "optimal lower bound (no start-ups)",
            Some(&self.baselines.optimal_lower_bound),
        );
        for i in 1..11 {
            if let Some(column) = table.column_mut(i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        let mut out = format!(
            "Simulated {} ({} to {}, {} steps of {} s, peak {}/s, private capacity {} replicas)\n{table}\n",
            self.component,
            self.start,
            self.end,
            self.steps,
            self.step_seconds,
            self.peak,
            self.private_capacity
        );
        let h = &self.headline;
        out += &format!(
            "Headline: unmet {:.4}%, public spend / oracle {} (owned view), chargeback / oracle {}\n",
            h.unmet_demand_fraction * 100.0,
            ratio(h.public_spend_ratio_to_oracle),
            ratio(h.chargeback_ratio_to_oracle)
        );
        match self.cost_ratio_to_lower_bound {
            Some(r) => out += &format!("Policy cost / lower bound: {r:.3}\n"),
            None => out += "Policy cost / lower bound: n/a (the bound costs nothing)\n",
        }
        if !self.policy_events.is_empty() {
            let events: Vec<String> = self
                .policy_events
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            out += &format!("Policy events: {}\n", events.join(", "));
        }
        for note in &self.notes {
            out += &format!("Note: {note}\n");
        }
        out
    }
}

/// The `skybridge simulate --sweep` report: `{"component","policyName","peak","stepSeconds",
/// "steps","fields":[...],"variants":[{"values":{FIELD:VALUE},"pareto",RESULT...,"headline"}],
/// "current":{RESULT...,"headline"},"baselines":{"staticThreshold","oracle","optimalLowerBound"}}`,
/// variants in grid order (first field slowest). Fields may be added, none renamed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub component: String,
    pub policy_name: String,
    pub peak: f64,
    pub step_seconds: i64,
    pub steps: usize,
    /// The swept fields, in grid order.
    pub fields: Vec<String>,
    pub variants: Vec<SweepRow>,
    /// The policy as given.
    pub current: SweepRun,
    pub baselines: SweepBaselines,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepRow {
    pub values: BTreeMap<String, f64>,
    /// On the Pareto frontier of public spend against unmet demand.
    pub pareto: bool,
    #[serde(flatten)]
    pub run: SweepRun,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepRun {
    #[serde(flatten)]
    pub metrics: RunMetrics,
    pub headline: Headline,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepBaselines {
    pub static_threshold: SweepRun,
    pub oracle: SweepRun,
    pub optimal_lower_bound: SweepRun,
}

/// The report of a sweep.
pub fn sweep_report(sweep: &Sweep) -> SweepReport {
    let run = |m: &RunMetrics| SweepRun {
        metrics: *m,
        headline: Headline::of(m, &sweep.oracle),
    };
    SweepReport {
        component: sweep.component.to_string(),
        policy_name: sweep.policy_name.clone(),
        peak: sweep.peak,
        step_seconds: sweep.step,
        steps: sweep.steps,
        fields: sweep.axes.iter().map(|a| a.field.clone()).collect(),
        variants: sweep
            .variants
            .iter()
            .map(|v| SweepRow {
                values: v.values.iter().cloned().collect(),
                pareto: v.pareto,
                run: run(&v.metrics),
            })
            .collect(),
        current: run(&sweep.current),
        baselines: SweepBaselines {
            static_threshold: run(&sweep.static_threshold),
            oracle: run(&sweep.oracle),
            optimal_lower_bound: run(&sweep.lower_bound),
        },
    }
}

impl SweepReport {
    /// The Pareto frontier (cheapest first), then the policy as given and the baselines.
    pub fn to_table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY);
        let mut header = vec!["RUN".to_string()];
        header.extend(self.fields.iter().cloned());
        header.extend(
            [
                "PUBLIC SPEND",
                "÷ ORACLE",
                "UNMET",
                "CHARGEBACK ÷ ORACLE",
                "SCALE CHANGES",
                "REPLICAS CHANGED",
            ]
            .map(String::from),
        );
        table.set_header(header);
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
        let cells = |name: String, values: Vec<String>, r: &SweepRun| {
            let mut row = vec![name];
            row.extend(values);
            row.extend([
                format!("{:.2}", r.metrics.public_cost),
                ratio(r.headline.public_spend_ratio_to_oracle),
                format!("{:.4}%", r.metrics.unmet_demand_fraction * 100.0),
                ratio(r.headline.chargeback_ratio_to_oracle),
                r.metrics.scale_events.to_string(),
                r.metrics.replica_changes.to_string(),
            ]);
            row
        };
        let mut frontier: Vec<&SweepRow> = self.variants.iter().filter(|v| v.pareto).collect();
        frontier.sort_by(|a, b| {
            a.run
                .metrics
                .public_cost
                .total_cmp(&b.run.metrics.public_cost)
        });
        for v in &frontier {
            let values = self
                .fields
                .iter()
                .map(|f| v.values.get(f).map_or("-".into(), |x| format!("{x}")))
                .collect();
            table.add_row(cells("frontier".into(), values, &v.run));
        }
        let blank = || vec![String::new(); self.fields.len()];
        table.add_row(cells(
            format!("* current ({})", self.policy_name),
            blank(),
            &self.current,
        ));
        table.add_row(cells(
            "static threshold (80%)".into(),
            blank(),
            &self.baselines.static_threshold,
        ));
        table.add_row(cells("oracle".into(), blank(), &self.baselines.oracle));
        table.add_row(cells(
            "optimal lower bound".into(),
            blank(),
            &self.baselines.optimal_lower_bound,
        ));
        for i in 1..table.column_count() {
            if let Some(column) = table.column_mut(i) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        format!(
            "Swept {} under BurstPolicy {} ({} variants, {} on the Pareto frontier of public spend against unmet demand; {} steps of {} s, peak {}/s)\n{table}\n",
            self.component,
            self.policy_name,
            self.variants.len(),
            frontier.len(),
            self.steps,
            self.step_seconds,
            self.peak
        )
    }
}
