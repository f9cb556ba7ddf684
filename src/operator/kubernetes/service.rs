//! The spec of every Service the operator puts in front of a component's replicas (the
//! component's Service in a cluster, and a pool's exported Service): one named port, `serving`.

use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// A Service spec selecting `selector`'s pods on their `serving` port, served as `port`, among
/// those labelled in service (`skybridge.io/serving=true`: a pod drained off a node about to be
/// reclaimed is labelled out, see `capacity::drain`).
pub fn serving_spec(mut selector: BTreeMap<String, String>, port: u16) -> ServiceSpec {
    use super::names::{LABEL_SERVING, SERVING};
    selector.insert(LABEL_SERVING.to_string(), SERVING.to_string());
    ServiceSpec {
        selector: Some(selector),
        ports: Some(vec![ServicePort {
            name: Some("serving".into()),
            port: i32::from(port),
            target_port: Some(IntOrString::String("serving".into())),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::kubernetes::names::{LABEL_SERVING, SERVING, placement_labels};

    #[test]
    fn a_service_selects_only_pods_in_service() {
        let component = placement_labels("shop", "recs", "ranker", "spot");
        let spec = serving_spec(component.clone(), 8080);
        let selector = spec.selector.unwrap();
        assert_eq!(selector[LABEL_SERVING], SERVING);
        // Every other label of the selector is the workload's: relabelling a pod `false` takes
        // it out of the Service, not out of its workload (whose selector lacks the label).
        assert!(component.iter().all(|(k, v)| selector.get(k) == Some(v)));
        assert!(!component.contains_key(LABEL_SERVING));
    }
}
