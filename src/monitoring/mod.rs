//! Monitoring: Prometheus metrics.

pub mod baseline;
pub mod capture;
pub mod drift;
pub mod feedback;
pub mod metrics;
pub mod offline;
pub mod quality;
pub mod skew;
