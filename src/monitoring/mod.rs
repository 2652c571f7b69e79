//! Monitoring: Prometheus metrics today; the feature log and skew detection live here too.

pub mod capture;
pub mod metrics;
