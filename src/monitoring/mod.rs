//! Monitoring: Prometheus metrics today; the feature log and skew detection live here too.

pub mod baseline;
pub mod drift;
pub mod metrics;
pub mod offline;
pub mod skew;
