//! What the controller tells people and the operator: one event per change, not per tick.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Something worth a Kubernetes Event: a change of course, not a steady state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    pub kind: EventKind,
    pub message: String,
}

/// The kinds of events, as the operator's Event `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    ScaleUp,
    ScaleDown,
    BurstStart,
    BurstEnd,
    Failback,
    BudgetHit,
    Prewarm,
    MetricUnavailable,
}

impl EventKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [EventKind; 8] = [
        EventKind::ScaleUp,
        EventKind::ScaleDown,
        EventKind::BurstStart,
        EventKind::BurstEnd,
        EventKind::Failback,
        EventKind::BudgetHit,
        EventKind::Prewarm,
        EventKind::MetricUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ScaleUp => "ScaleUp",
            EventKind::ScaleDown => "ScaleDown",
            EventKind::BurstStart => "BurstStart",
            EventKind::BurstEnd => "BurstEnd",
            EventKind::Failback => "Failback",
            EventKind::BudgetHit => "BudgetHit",
            EventKind::Prewarm => "Prewarm",
            EventKind::MetricUnavailable => "MetricUnavailable",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.at, self.kind, self.message)
    }
}
