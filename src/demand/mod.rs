//! Demand signals: the edge that reads a `BurstPolicy` metric from Prometheus.

mod prometheus;

pub use prometheus::{Prometheus, QueryError, expand_query};
