//! Monitoring: Prometheus metrics today; the feature log and skew detection live here too.

pub mod feedback;
pub mod metrics;
pub mod quality;
