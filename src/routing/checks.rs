//! The analysis of one interval: each check is one small type that reads the interval's
//! [`Summary`] and the spec's threshold and says pass, fail or inconclusive. Adding a check (the
//! serving-data monitoring's skew, for one) is adding a type to [`CHECKS`].

use super::spec::{Kind, RolloutSpec};
use super::state::{CheckResult, Verdict};
use super::window::{Summary, Variant};

pub trait Check: Send + Sync {
    /// The name in results, reasons and the `check` metric label.
    fn name(&self) -> &'static str;
    fn evaluate(&self, summary: &Summary, spec: &RolloutSpec) -> CheckResult;
}

/// Every check an interval runs, in the order reasons list them.
pub const CHECKS: &[&dyn Check] = &[&ErrorRate, &Latency, &NonFinite, &Disagreement];

/// Runs every check on an interval's summary.
pub fn analyse(summary: &Summary, spec: &RolloutSpec) -> Vec<CheckResult> {
    CHECKS.iter().map(|c| c.evaluate(summary, spec)).collect()
}

fn result(check: &dyn Check, value: f64, threshold: f64, detail: String) -> CheckResult {
    CheckResult {
        check: check.name().into(),
        verdict: if value.is_nan() {
            Verdict::Inconclusive
        } else if value > threshold {
            Verdict::Fail
        } else {
            Verdict::Pass
        },
        value,
        threshold,
        detail,
    }
}

/// Inconclusive unless each listed variant ran at least `min_requests` requests.
fn too_few(
    check: &dyn Check,
    summary: &Summary,
    spec: &RolloutSpec,
    variants: &[Variant],
) -> Option<CheckResult> {
    let short: Vec<String> = variants
        .iter()
        .filter(|&&v| summary.variant(v).requests < spec.min_requests)
        .map(|&v| format!("{} {}", v.as_str(), summary.variant(v).requests))
        .collect();
    (!short.is_empty()).then(|| CheckResult {
        check: check.name().into(),
        verdict: Verdict::Inconclusive,
        value: f64::NAN,
        threshold: f64::NAN,
        detail: format!(
            "requests: {} < min_requests {}",
            short.join(", "),
            spec.min_requests
        ),
    })
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// Server-side failures (inference errors, timeouts, overload) and inputs refused at run time,
/// candidate minus stable.
pub struct ErrorRate;

impl Check for ErrorRate {
    fn name(&self) -> &'static str {
        "error_rate_increase"
    }

    fn evaluate(&self, s: &Summary, spec: &RolloutSpec) -> CheckResult {
        let both = [Variant::Stable, Variant::Candidate];
        if let Some(r) = too_few(self, s, spec, &both) {
            return r;
        }
        let (c, st) = (s.candidate.error_rate, s.stable.error_rate);
        result(
            self,
            c - st,
            spec.max_error_rate_increase,
            format!(
                "candidate {} of {} vs stable {} of {}",
                pct(c),
                s.candidate.requests,
                pct(st),
                s.stable.requests
            ),
        )
    }
}

/// The candidate's p99 latency over stable's.
pub struct Latency;

impl Check for Latency {
    fn name(&self) -> &'static str {
        "p99_ratio"
    }

    fn evaluate(&self, s: &Summary, spec: &RolloutSpec) -> CheckResult {
        let both = [Variant::Stable, Variant::Candidate];
        if let Some(r) = too_few(self, s, spec, &both) {
            return r;
        }
        let (c, st) = (s.candidate.p99_ms, s.stable.p99_ms);
        let ratio = if st > 0.0 { c / st } else { f64::NAN };
        let mut r = result(
            self,
            ratio,
            spec.max_p99_ratio,
            format!("candidate p99 {c:.3} ms vs stable {st:.3} ms"),
        );
        if r.verdict == Verdict::Fail && c - st <= spec.p99_slack_ms {
            r.verdict = Verdict::Pass;
            r.detail
                .push_str(&format!(", within the {} ms slack", spec.p99_slack_ms));
        }
        r
    }
}

/// The fraction of the candidate's rows with a NaN or infinite output.
pub struct NonFinite;

impl Check for NonFinite {
    fn name(&self) -> &'static str {
        "nan_rate"
    }

    fn evaluate(&self, s: &Summary, spec: &RolloutSpec) -> CheckResult {
        if let Some(r) = too_few(self, s, spec, &[Variant::Candidate]) {
            return r;
        }
        result(
            self,
            if s.candidate.rows == 0 {
                0.0
            } else {
                s.candidate.nan_rate
            },
            spec.max_nan_rate,
            format!(
                "{} of {} candidate rows",
                s.candidate.non_finite_rows, s.candidate.rows
            ),
        )
    }
}

/// How often the versions' predictions differ on the requests both answered.
pub struct Disagreement;

impl Check for Disagreement {
    fn name(&self) -> &'static str {
        "disagreement"
    }

    fn evaluate(&self, s: &Summary, spec: &RolloutSpec) -> CheckResult {
        let a = &s.agreement;
        if spec.kind != Kind::Shadow && spec.compare_fraction == 0.0 {
            return CheckResult {
                check: self.name().into(),
                verdict: Verdict::Pass,
                value: f64::NAN,
                threshold: spec.max_disagreement,
                detail: "not measured: compare_fraction is 0".into(),
            };
        }
        if a.requests < spec.min_requests {
            return CheckResult {
                check: self.name().into(),
                verdict: Verdict::Inconclusive,
                value: f64::NAN,
                threshold: f64::NAN,
                detail: format!(
                    "compared requests: {} < min_requests {}",
                    a.requests, spec.min_requests
                ),
            };
        }
        let detail = if a.measure == "regression" {
            format!(
                "regression: mean |difference| {:.4} and p99 {:.4} of stable's spread, {} rows",
                a.disagreement, a.p99_relative_difference, a.rows
            )
        } else {
            format!(
                "classification: {} of {} rows differ",
                pct(a.disagreement),
                a.rows
            )
        };
        // An infinite difference (NaN answers) fails; a NaN value means nothing was compared.
        result(self, a.disagreement, spec.max_disagreement, detail)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::tensor::{Tensor, TensorData};
    use crate::routing::compare::Measure;
    use crate::routing::window::{Outcome, Window};

    fn answered(rows: u64, bad: u64) -> Outcome {
        Outcome::Answered {
            rows,
            non_finite_rows: bad,
        }
    }

    fn spec() -> RolloutSpec {
        let mut s = RolloutSpec::new(2);
        s.min_requests = 10;
        s.p99_slack_ms = 0.5;
        s
    }

    fn verdicts(w: &Window) -> Vec<(String, Verdict)> {
        analyse(&w.summary(), &spec())
            .into_iter()
            .map(|r| (r.check, r.verdict))
            .collect()
    }

    fn label(v: i64) -> Vec<Tensor> {
        vec![Tensor::new("label", vec![1], TensorData::Int64(vec![v]))]
    }

    #[test]
    fn a_healthy_candidate_passes_every_check() {
        let w = Window::new();
        for _ in 0..20 {
            w.record(Variant::Stable, answered(1, 0), Duration::from_micros(200));
            w.record(
                Variant::Candidate,
                answered(1, 0),
                Duration::from_micros(220),
            );
            w.compare(|a| a.add(Measure::Auto, &label(1), &label(1)));
        }
        assert!(
            verdicts(&w).iter().all(|(_, v)| *v == Verdict::Pass),
            "{:?}",
            verdicts(&w)
        );
    }

    #[test]
    fn too_little_traffic_is_inconclusive_not_a_pass() {
        let w = Window::new();
        for _ in 0..5 {
            w.record(Variant::Stable, answered(1, 0), Duration::from_micros(200));
        }
        let r = analyse(&w.summary(), &spec());
        assert!(
            r.iter().all(|c| c.verdict == Verdict::Inconclusive),
            "{r:?}"
        );
        assert!(
            r[0].detail.contains("stable 5, candidate 0"),
            "{}",
            r[0].detail
        );
        assert_eq!(Verdict::combine(&r), Verdict::Inconclusive);
    }

    #[test]
    fn each_check_fails_on_its_own_symptom() {
        let w = Window::new();
        for i in 0..20 {
            w.record(Variant::Stable, answered(1, 0), Duration::from_micros(200));
            let slow = Duration::from_micros(2_000);
            if i < 3 {
                w.record(Variant::Candidate, Outcome::ServerError, slow);
            } else {
                w.record(Variant::Candidate, answered(1, u64::from(i == 5)), slow);
            }
            w.compare(|a| a.add(Measure::Auto, &label(1), &label(i % 2)));
        }
        let r = analyse(&w.summary(), &spec());
        assert!(r.iter().all(|c| c.verdict == Verdict::Fail), "{r:?}");
        // The same slowness within the slack passes.
        let mut lenient = spec();
        lenient.p99_slack_ms = 5.0;
        let l = Latency.evaluate(&w.summary(), &lenient);
        assert_eq!(l.verdict, Verdict::Pass, "{}", l.detail);
        assert!(l.detail.contains("slack"));
        assert!((r[0].value - 0.15).abs() < 1e-9);
        assert!(r[1].value > 9.0, "{}", r[1].value);
        assert!(
            r[2].describe().starts_with("nan_rate 0.0588 > 0"),
            "{}",
            r[2].describe()
        );
        assert_eq!(r[3].value, 0.5);
    }
}
