//! What this replica measured of each variant during the open analysis interval. Requests add
//! to it after they are answered (a short lock, no allocation); the controller reads a
//! [`Summary`] when the interval ends. Each interval gets a fresh window.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::compare::Agreement;

/// Which side of a rollout answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Stable,
    Candidate,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Candidate => "candidate",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Stable => Self::Candidate,
            Self::Candidate => Self::Stable,
        }
    }
}

/// How a request ended, as the analysis sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; with the number of rows and how many had a NaN or infinite output.
    Answered { rows: u64, non_finite_rows: u64 },
    /// Failed on the server's side (inference error, timeout, overload, unavailable), or the
    /// version refused inputs that fit its signature.
    ServerError,
}

struct VariantStats {
    requests: u64,
    errors: u64,
    rows: u64,
    non_finite_rows: u64,
    /// Latency in microseconds.
    latency: Histogram<u64>,
}

impl VariantStats {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            rows: 0,
            non_finite_rows: 0,
            // 1 µs .. 1 h, 2 significant digits: ~1% precision, a few KiB.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("constant histogram bounds are valid"),
        }
    }

    fn summary(&self) -> VariantSummary {
        let q = |q: f64| {
            if self.latency.is_empty() {
                f64::NAN
            } else {
                self.latency.value_at_quantile(q) as f64 / 1000.0
            }
        };
        VariantSummary {
            requests: self.requests,
            errors: self.errors,
            error_rate: ratio(self.errors, self.requests),
            rows: self.rows,
            non_finite_rows: self.non_finite_rows,
            nan_rate: ratio(self.non_finite_rows, self.rows),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// One interval's measurements on this replica.
pub struct Window {
    stable: Mutex<VariantStats>,
    candidate: Mutex<VariantStats>,
    agreement: Mutex<Agreement>,
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    pub fn new() -> Self {
        Self {
            stable: Mutex::new(VariantStats::new()),
            candidate: Mutex::new(VariantStats::new()),
            agreement: Mutex::new(Agreement::default()),
        }
    }

    fn side(&self, variant: Variant) -> &Mutex<VariantStats> {
        match variant {
            Variant::Stable => &self.stable,
            Variant::Candidate => &self.candidate,
        }
    }

    /// Counts one request a variant ran (a caller's or a copy).
    pub fn record(&self, variant: Variant, outcome: Outcome, latency: Duration) {
        let mut s = self.side(variant).lock().unwrap_or_else(|p| p.into_inner());
        s.requests += 1;
        match outcome {
            Outcome::Answered {
                rows,
                non_finite_rows,
            } => {
                s.rows += rows;
                s.non_finite_rows += non_finite_rows;
                // Saturates at the top bound rather than failing.
                s.latency
                    .saturating_record(latency.as_micros().max(1) as u64);
            }
            Outcome::ServerError => s.errors += 1,
        }
    }

    /// Adds what two versions answered to the same request.
    pub fn compare(&self, f: impl FnOnce(&mut Agreement)) {
        let mut a = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut a);
    }

    pub fn summary(&self) -> Summary {
        let lock = |m: &Mutex<VariantStats>| m.lock().unwrap_or_else(|p| p.into_inner()).summary();
        Summary {
            stable: lock(&self.stable),
            candidate: lock(&self.candidate),
            agreement: {
                let copy = self
                    .agreement
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .snapshot();
                copy.summary()
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantSummary {
    pub requests: u64,
    /// Server-side failures.
    pub errors: u64,
    pub error_rate: f64,
    pub rows: u64,
    pub non_finite_rows: u64,
    /// Fraction of rows with a NaN or infinite output.
    pub nan_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgreementSummary {
    /// Requests both versions answered.
    pub requests: u64,
    pub rows: u64,
    /// "classification" or "regression" (how disagreement was measured).
    pub measure: &'static str,
    /// Classifiers: the fraction of rows whose label or arg-max differs. Regressors: the mean
    /// absolute difference relative to the stable output's spread.
    pub disagreement: f64,
    /// Regressors: the p99 of the relative absolute difference (NaN for classifiers).
    pub p99_relative_difference: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub stable: VariantSummary,
    pub candidate: VariantSummary,
    pub agreement: AgreementSummary,
}

impl Summary {
    pub fn variant(&self, v: Variant) -> &VariantSummary {
        match v {
            Variant::Stable => &self.stable,
            Variant::Candidate => &self.candidate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_latency_per_variant() {
        let w = Window::new();
        for i in 0..100u64 {
            w.record(
                Variant::Stable,
                Outcome::Answered {
                    rows: 2,
                    non_finite_rows: 0,
                },
                Duration::from_micros(100 + i),
            );
        }
        w.record(Variant::Candidate, Outcome::ServerError, Duration::ZERO);
        w.record(
            Variant::Candidate,
            Outcome::Answered {
                rows: 4,
                non_finite_rows: 1,
            },
            Duration::from_millis(3),
        );
        let s = w.summary();
        assert_eq!(
            (s.stable.requests, s.stable.errors, s.stable.rows),
            (100, 0, 200)
        );
        assert!((s.stable.p50_ms - 0.15).abs() < 0.01, "{}", s.stable.p50_ms);
        assert!(
            (s.stable.p99_ms - 0.199).abs() < 0.01,
            "{}",
            s.stable.p99_ms
        );
        assert_eq!(s.candidate.error_rate, 0.5);
        assert_eq!(s.candidate.nan_rate, 0.25);
        assert!((s.candidate.p99_ms - 3.0).abs() < 0.05);
        assert!(s.agreement.disagreement.is_nan());
    }
}
