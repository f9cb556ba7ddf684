//! The `skybridge simulate` report. Its JSON shape is a contract for scripts:
//! `{"component","policyName","peak","stepSeconds","start","end","steps","privateCapacity",
//! "policy":RESULT,"baselines":{"privateOnly":RESULT|null,"publicOnly":RESULT|null,
//! "staticThreshold":RESULT,"optimalLowerBound":RESULT},"costRatioToLowerBound","notes":[...]}`
//! with RESULT = `{"cost","unmetDemandFraction","publicReplicaHours","burstEvents","scaleEvents",
//! "privateCost","publicCost","peakPublicReplicas"}`. Fields may be added, none renamed.

use crate::simulate::{RunMetrics, Simulation, format_timestamp};
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
    /// Controller events of the policy run, by kind.
    pub policy_events: BTreeMap<String, u64>,
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
        "cost: owned private capacity at its amortised price for the whole run (paid whether used or not) plus public replicas while requested, start-up included".into(),
    );
    if sim.private_only.is_none() {
        notes.push("private-only baseline: no private pool may run this component".into());
    }
    if sim.public_only.is_none() {
        notes.push("public-only baseline: no public pool may run this component".into());
    }
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
        },
        cost_ratio_to_lower_bound: sim.cost_ratio_to_lower_bound,
        policy_events: sim
            .policy
            .events
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect(),
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
            "COST",
            "VS BOUND",
            "UNMET",
            "PUBLIC REPLICA-H",
            "BURSTS",
            "SCALE CHANGES",
        ]);
        let bound = self.baselines.optimal_lower_bound.cost;
        let mut row = |name: &str, m: Option<&RunMetrics>| match m {
            Some(m) => {
                table.add_row([
                    name.to_string(),
                    format!("{:.2}", m.cost),
                    if bound > 0.0 {
                        format!("{:.3}", m.cost / bound)
                    } else {
                        "-".into()
                    },
                    format!("{:.4}%", m.unmet_demand_fraction * 100.0),
                    format!("{:.1}", m.public_replica_hours),
                    m.burst_events.to_string(),
                    m.scale_events.to_string(),
                ]);
            }
            None => {
                table.add_row([name, "n/a", "", "", "", "", ""]);
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
        row(
            "optimal lower bound",
            Some(&self.baselines.optimal_lower_bound),
        );
        for i in 1..7 {
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
