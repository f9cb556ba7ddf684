//! `metav1.Condition`s: set with `observedGeneration`, and a `lastTransitionTime` that moves
//! only when the status flips, so that writing the same state twice changes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// One condition as the reconciler decides it, before times are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Decided {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Merges decided conditions into the previous ones: a condition whose status did not change
/// keeps its transition time. Conditions not decided now are dropped.
pub fn merge(
    previous: &[Condition],
    decided: Vec<Decided>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    decided
        .into_iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let since = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason,
                message: d.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Whether two condition lists say the same thing (ignoring times), to skip no-op writes.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-28T11:00:00Z".parse().unwrap();
        let first = merge(
            &[],
            vec![Decided::new("Ready", false, "Progressing", "1/3 ready")],
            Some(1),
            t0,
        );
        let same_status = merge(
            &first,
            vec![Decided::new("Ready", false, "Progressing", "2/3 ready")],
            Some(1),
            t1,
        );
        assert_eq!(same_status[0].last_transition_time.0, t0);
        let flipped = merge(
            &same_status,
            vec![Decided::new("Ready", true, "Ready", "3/3 ready")],
            Some(1),
            t1,
        );
        assert_eq!(flipped[0].last_transition_time.0, t1);
        assert_eq!(flipped[0].observed_generation, Some(1));
        assert!(!same(&first, &same_status));
        assert!(same(
            &same_status,
            &merge(
                &same_status,
                vec![Decided::new("Ready", false, "Progressing", "2/3 ready")],
                Some(1),
                t1
            )
        ));
    }
}
