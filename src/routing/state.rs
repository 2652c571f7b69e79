//! A rollout's state as kept in the registry (`routing.toml`): where it is (step, interval), what
//! was decided and why. Every replica sharing the registry reads the same state, so they route by
//! the same weights, and a restart resumes at the step written here.
//!
//! The transitions are pure functions of the state and the time, applied inside the registry's
//! read-modify-write: a replica deciding an interval that another replica already decided
//! changes nothing (except a failure, which always counts: safety wins over progress).

use serde::{Deserialize, Serialize};

use super::spec::RolloutSpec;

/// Where a rollout is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    /// Weights stay as they are; no analysis, no steps.
    Paused,
    /// The candidate was promoted (pinned).
    Succeeded,
    /// All traffic went back to stable.
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Running,
        Phase::Paused,
        Phase::Succeeded,
        Phase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Aborted => "aborted",
        }
    }

    /// Still splitting traffic.
    pub fn active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }
}

/// The result of one check (or of an interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Too little data to tell: not a pass.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
        }
    }

    /// An interval fails when any check fails, passes only when all pass.
    pub fn combine(results: &[CheckResult]) -> Self {
        if results.iter().any(|r| r.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if results.iter().any(|r| r.verdict == Verdict::Inconclusive) {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }
}

/// One check's value against its threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub verdict: Verdict,
    /// NaN when there was nothing to measure.
    pub value: f64,
    pub threshold: f64,
    /// What the value is, in words ("candidate 2.0% vs stable 0.1%").
    pub detail: String,
}

/// Equal when every field is, NaN values included (a value not measured is NaN, and a state read
/// back from the registry must compare equal to the one written, or every poll would republish it).
impl PartialEq for CheckResult {
    fn eq(&self, other: &Self) -> bool {
        self.check == other.check
            && self.verdict == other.verdict
            && same(self.value, other.value)
            && same(self.threshold, other.threshold)
            && self.detail == other.detail
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

impl CheckResult {
    /// "check value > threshold (detail)", for reasons.
    pub fn describe(&self) -> String {
        let op = match self.verdict {
            Verdict::Fail => ">",
            _ => "<=",
        };
        if self.verdict == Verdict::Inconclusive {
            format!("{} inconclusive ({})", self.check, self.detail)
        } else {
            format!(
                "{} {} {} {} ({})",
                self.check,
                fmt_value(self.value),
                op,
                fmt_value(self.threshold),
                self.detail
            )
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v == v.trunc() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// What happened, for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Started,
    /// An interval passed; the weight went up.
    Advanced,
    /// An interval failed; the step is held (fewer than `failure_limit` failures so far).
    Failed,
    /// Too little data; the interval goes on collecting.
    Inconclusive,
    /// The last step passed: the candidate is pinned.
    Succeeded,
    /// `failure_limit` intervals failed: all traffic back to stable.
    RolledBack,
    Paused,
    Resumed,
    /// An operator promoted the candidate before the last step.
    Promoted,
    /// An operator aborted.
    Aborted,
}

/// One decision, kept in the rollout's history and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time, milliseconds.
    pub at_ms: u64,
    pub decision: Decision,
    /// The step (index) in effect after the decision.
    pub step: usize,
    /// The analysis interval the decision is about.
    pub interval: u64,
    /// Which replica decided (host/pid), or the operator's action.
    pub by: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
}

/// At most this many events are kept; the oldest go first (the start is always kept).
pub const MAX_HISTORY: usize = 200;

/// A rollout, persisted. Unknown fields are ignored (not refused) so that a replica still on an
/// older build keeps reading a state a newer one wrote during a rolling upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Unique per rollout: salts the sticky hash and tells one rollout's windows from the next.
    pub id: String,
    pub spec: RolloutSpec,
    /// The version that serves callers outside the candidate's share.
    pub stable: u64,
    pub phase: Phase,
    /// Index into the spec's steps.
    pub step: usize,
    /// The analysis interval now open (counts from 0 over the whole rollout).
    pub interval: u64,
    /// When the open interval started (unix ms). Every replica times the interval from here.
    pub interval_started_ms: u64,
    pub failures: u32,
    /// The intervals whose failure was counted (each counts once, whoever sees it; at most
    /// `failure_limit` entries, since the last one ends the rollout).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_intervals: Vec<u64>,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// End of the interval whose failure rolled the candidate back (time to restore counts from
    /// here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_interval_end_ms: Option<u64>,
    /// Why the rollout is where it is (the last decision's reason).
    pub reason: String,
    #[serde(default)]
    pub history: Vec<Event>,
}

/// A unix time in milliseconds as RFC 3339 ("2026-11-27T09:30:00Z").
pub fn format_time(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map_or_else(|_| format!("{ms} ms"), |t| t.to_string())
}

/// Why an operator action was refused.
pub type Refusal = String;

impl Rollout {
    /// A new rollout of `spec` (validated, stable filled in) starting at `now_ms`.
    pub fn start(spec: RolloutSpec, stable: u64, now_ms: u64, by: &str) -> Self {
        let id = format!("{now_ms:x}-{:08x}", fastrand::u32(..));
        let reason = format!(
            "{} rollout of version {} over stable version {}, steps {}, interval {}",
            spec.kind.as_str(),
            spec.candidate,
            stable,
            spec.weights()
                .iter()
                .map(|w| format!("{}%", w * 100.0))
                .collect::<Vec<_>>()
                .join(", "),
            super::spec::format_duration(spec.interval)
        );
        let mut r = Self {
            id,
            spec: RolloutSpec {
                stable: Some(stable),
                ..spec
            },
            stable,
            phase: Phase::Running,
            step: 0,
            interval: 0,
            interval_started_ms: now_ms,
            failures: 0,
            failed_intervals: Vec::new(),
            started_ms: now_ms,
            finished_ms: None,
            failed_interval_end_ms: None,
            reason: String::new(),
            history: Vec::new(),
        };
        r.record(now_ms, Decision::Started, by, reason, Vec::new());
        r
    }

    pub fn candidate(&self) -> u64 {
        self.spec.candidate
    }

    /// The candidate's share of callers now (0 once the rollout ended: the pin decides then).
    pub fn weight(&self) -> f64 {
        if !self.phase.active() {
            return 0.0;
        }
        self.spec.weight_at(self.step)
    }

    /// When the open interval ends (unix ms).
    pub fn interval_end_ms(&self) -> u64 {
        self.interval_started_ms
            .saturating_add(self.spec.interval.as_millis() as u64)
    }

    pub fn last_event(&self) -> Option<&Event> {
        self.history.last()
    }

    /// Records a decision about the open interval.
    fn record(
        &mut self,
        at_ms: u64,
        decision: Decision,
        by: &str,
        reason: String,
        checks: Vec<CheckResult>,
    ) {
        self.record_for(self.interval, at_ms, decision, by, reason, checks);
    }

    /// Records a decision about `interval` (an analysis names the interval it judged, even once
    /// the next one is open).
    fn record_for(
        &mut self,
        interval: u64,
        at_ms: u64,
        decision: Decision,
        by: &str,
        reason: String,
        checks: Vec<CheckResult>,
    ) {
        tracing::info!(
            rollout = %self.id,
            decision = ?decision,
            step = self.step,
            interval,
            by,
            %reason,
            "rollout decision"
        );
        self.reason = reason.clone();
        self.history.push(Event {
            at_ms,
            decision,
            step: self.step,
            interval,
            by: by.to_string(),
            reason,
            checks,
        });
        if self.history.len() > MAX_HISTORY {
            // Keep the start; drop the oldest after it.
            self.history.remove(1);
        }
    }

    fn finish(&mut self, phase: Phase, now_ms: u64) {
        self.phase = phase;
        self.finished_ms = Some(now_ms);
    }

    /// Opens the next interval (a fresh window for every replica).
    fn next_interval(&mut self, now_ms: u64) {
        self.interval += 1;
        self.interval_started_ms = now_ms;
    }

    pub fn pause(&mut self, now_ms: u64, by: &str) -> Result<(), Refusal> {
        if self.phase != Phase::Running {
            return Err(format!(
                "the rollout is {}, not running",
                self.phase.as_str()
            ));
        }
        self.phase = Phase::Paused;
        self.record(
            now_ms,
            Decision::Paused,
            by,
            format!(
                "paused by the operator at step {} ({}% on the candidate)",
                self.step + 1,
                self.weight() * 100.0
            ),
            Vec::new(),
        );
        Ok(())
    }

    /// Resumes with a fresh interval: what was measured before the pause is not judged.
    pub fn resume(&mut self, now_ms: u64, by: &str) -> Result<(), Refusal> {
        if self.phase != Phase::Paused {
            return Err(format!(
                "the rollout is {}, not paused",
                self.phase.as_str()
            ));
        }
        self.phase = Phase::Running;
        self.next_interval(now_ms);
        self.record(
            now_ms,
            Decision::Resumed,
            by,
            "resumed by the operator".into(),
            Vec::new(),
        );
        Ok(())
    }

    /// Skips to the end: the caller pins the candidate.
    pub fn promote(&mut self, now_ms: u64, by: &str) -> Result<(), Refusal> {
        if !self.phase.active() {
            return Err(format!("the rollout already {}", self.phase.as_str()));
        }
        self.finish(Phase::Succeeded, now_ms);
        self.record(
            now_ms,
            Decision::Promoted,
            by,
            format!(
                "promoted by the operator at step {}: version {} is pinned",
                self.step + 1,
                self.candidate()
            ),
            Vec::new(),
        );
        Ok(())
    }

    pub fn abort(&mut self, now_ms: u64, by: &str) -> Result<(), Refusal> {
        if !self.phase.active() {
            return Err(format!("the rollout already {}", self.phase.as_str()));
        }
        self.finish(Phase::Aborted, now_ms);
        self.record(
            now_ms,
            Decision::Aborted,
            by,
            format!(
                "aborted by the operator at step {}: all traffic back to version {}",
                self.step + 1,
                self.stable
            ),
            Vec::new(),
        );
        Ok(())
    }

    /// Rolls back because a version of the rollout cannot serve on a replica (unloaded, removed,
    /// failed to load): the analysis could never conclude, and a candidate that does not load
    /// everywhere must not be promoted anywhere.
    pub fn roll_back_unavailable(&mut self, why: &str, now_ms: u64, by: &str) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        self.failed_interval_end_ms = Some(now_ms);
        self.finish(Phase::Aborted, now_ms);
        let reason = format!("rolled back to version {}: {why}", self.stable);
        self.record(now_ms, Decision::RolledBack, by, reason, Vec::new());
        true
    }

    /// Applies one replica's analysis of `interval`. Returns the decision taken, if any (the
    /// caller pins the candidate on `Succeeded`).
    pub fn conclude(
        &mut self,
        interval: u64,
        checks: Vec<CheckResult>,
        now_ms: u64,
        by: &str,
    ) -> Option<Decision> {
        if self.phase != Phase::Running {
            return None;
        }
        let current = interval == self.interval;
        match Verdict::combine(&checks) {
            Verdict::Fail => {
                if self.failed_intervals.contains(&interval) || interval > self.interval {
                    return None;
                }
                self.failures += 1;
                self.failed_intervals.push(interval);
                let failing: Vec<String> = checks
                    .iter()
                    .filter(|c| c.verdict == Verdict::Fail)
                    .map(CheckResult::describe)
                    .collect();
                if self.failures >= self.spec.failure_limit {
                    // An interval that waited for data ended when the data was enough: now.
                    let waited =
                        self.history.iter().rev().any(|e| {
                            e.interval == interval && e.decision == Decision::Inconclusive
                        });
                    let end = if waited {
                        now_ms
                    } else {
                        self.interval_end_ms()
                    };
                    self.failed_interval_end_ms = Some(end.min(now_ms));
                    self.finish(Phase::Aborted, now_ms);
                    let reason = format!(
                        "rolled back to version {} after {} failed interval(s) (failure_limit {}): {}",
                        self.stable,
                        self.failures,
                        self.spec.failure_limit,
                        failing.join("; ")
                    );
                    self.record_for(interval, now_ms, Decision::RolledBack, by, reason, checks);
                    return Some(Decision::RolledBack);
                }
                let reason = format!(
                    "interval failed ({} of {} allowed failures), holding step {}: {}",
                    self.failures,
                    self.spec.failure_limit,
                    self.step + 1,
                    failing.join("; ")
                );
                if current {
                    self.next_interval(now_ms);
                }
                self.record_for(interval, now_ms, Decision::Failed, by, reason, checks);
                Some(Decision::Failed)
            }
            Verdict::Pass if current => {
                let steps = self.spec.weights().len();
                if self.step + 1 >= steps {
                    self.finish(Phase::Succeeded, now_ms);
                    let reason = format!(
                        "every step passed: version {} is promoted (pinned)",
                        self.candidate()
                    );
                    self.record_for(interval, now_ms, Decision::Succeeded, by, reason, checks);
                    return Some(Decision::Succeeded);
                }
                self.step += 1;
                self.next_interval(now_ms);
                let reason = format!(
                    "interval passed: step {} of {}, {}% on the candidate",
                    self.step + 1,
                    steps,
                    self.weight() * 100.0
                );
                self.record_for(interval, now_ms, Decision::Advanced, by, reason, checks);
                Some(Decision::Advanced)
            }
            Verdict::Inconclusive if current => {
                let logged = self
                    .history
                    .iter()
                    .rev()
                    .any(|e| e.interval == interval && e.decision == Decision::Inconclusive);
                if logged {
                    return None;
                }
                let waiting: Vec<String> = checks
                    .iter()
                    .filter(|c| c.verdict == Verdict::Inconclusive)
                    .map(CheckResult::describe)
                    .collect();
                let reason = format!(
                    "not enough data yet, step {} held while the interval keeps collecting: {}",
                    self.step + 1,
                    waiting.join("; ")
                );
                self.record_for(interval, now_ms, Decision::Inconclusive, by, reason, checks);
                Some(Decision::Inconclusive)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check(verdict: Verdict) -> CheckResult {
        CheckResult {
            check: "error_rate".into(),
            verdict,
            value: 0.5,
            threshold: 0.01,
            detail: "x".into(),
        }
    }

    fn rollout(steps: &[f64], failure_limit: u32) -> Rollout {
        let mut spec = RolloutSpec::new(2);
        spec.steps = Some(steps.to_vec());
        spec.interval = Duration::from_secs(10);
        spec.failure_limit = failure_limit;
        Rollout::start(spec, 1, 1_000, "test")
    }

    #[test]
    fn passing_intervals_walk_the_steps_then_succeed() {
        let mut r = rollout(&[10.0, 50.0], 2);
        assert_eq!(r.weight(), 0.1);
        assert_eq!(r.interval_end_ms(), 11_000);
        assert_eq!(
            r.conclude(0, vec![check(Verdict::Pass)], 11_000, "a"),
            Some(Decision::Advanced)
        );
        assert_eq!((r.step, r.interval, r.weight()), (1, 1, 0.5));
        // Another replica's late pass of interval 0 changes nothing.
        assert_eq!(r.conclude(0, vec![check(Verdict::Pass)], 11_500, "b"), None);
        assert_eq!(
            r.conclude(1, vec![check(Verdict::Pass)], 21_000, "a"),
            Some(Decision::Succeeded)
        );
        assert_eq!(r.phase, Phase::Succeeded);
        assert_eq!(r.weight(), 0.0);
        assert_eq!(r.conclude(2, vec![check(Verdict::Pass)], 31_000, "a"), None);
    }

    #[test]
    fn failures_hold_the_step_then_roll_back_with_the_reason() {
        let mut r = rollout(&[10.0, 50.0], 2);
        assert_eq!(
            r.conclude(0, vec![check(Verdict::Fail)], 11_000, "a"),
            Some(Decision::Failed)
        );
        assert_eq!((r.step, r.interval, r.failures), (0, 1, 1));
        // The same interval's failure seen by a second replica counts once.
        assert_eq!(r.conclude(0, vec![check(Verdict::Fail)], 11_200, "b"), None);
        assert_eq!(
            r.conclude(
                1,
                vec![check(Verdict::Fail), check(Verdict::Pass)],
                21_300,
                "b"
            ),
            Some(Decision::RolledBack)
        );
        assert_eq!(r.phase, Phase::Aborted);
        assert_eq!(r.failed_interval_end_ms, Some(21_000));
        assert!(
            r.reason.contains("error_rate 0.5000 > 0.0100"),
            "{}",
            r.reason
        );
        assert!(r.reason.contains("version 1"), "{}", r.reason);
    }

    #[test]
    fn a_failure_counts_even_after_another_replica_passed_the_interval() {
        let mut r = rollout(&[10.0, 50.0, 100.0], 1);
        r.conclude(0, vec![check(Verdict::Pass)], 11_000, "a");
        assert_eq!(
            r.conclude(0, vec![check(Verdict::Fail)], 11_100, "b"),
            Some(Decision::RolledBack)
        );
    }

    #[test]
    fn inconclusive_is_logged_once_and_holds_the_interval() {
        let mut r = rollout(&[10.0], 2);
        let c = vec![check(Verdict::Inconclusive), check(Verdict::Pass)];
        assert_eq!(
            r.conclude(0, c.clone(), 11_000, "a"),
            Some(Decision::Inconclusive)
        );
        assert_eq!(r.conclude(0, c, 11_100, "a"), None);
        assert_eq!((r.step, r.interval), (0, 0));
        assert_eq!(
            r.conclude(0, vec![check(Verdict::Pass)], 12_000, "a"),
            Some(Decision::Succeeded)
        );
    }

    #[test]
    fn operators_pause_resume_promote_abort() {
        let mut r = rollout(&[10.0, 50.0], 2);
        r.pause(2_000, "op").unwrap();
        assert!(r.pause(2_000, "op").is_err());
        assert_eq!(r.weight(), 0.1, "a paused rollout keeps its weights");
        assert_eq!(r.conclude(0, vec![check(Verdict::Pass)], 11_000, "a"), None);
        r.resume(20_000, "op").unwrap();
        assert_eq!((r.interval, r.interval_started_ms), (1, 20_000));
        r.promote(21_000, "op").unwrap();
        assert_eq!(r.phase, Phase::Succeeded);
        assert!(r.abort(22_000, "op").unwrap_err().contains("succeeded"));
        let kinds: Vec<Decision> = r.history.iter().map(|e| e.decision).collect();
        assert_eq!(
            kinds,
            [
                Decision::Started,
                Decision::Paused,
                Decision::Resumed,
                Decision::Promoted
            ]
        );
    }

    #[test]
    fn history_is_bounded_and_keeps_the_start() {
        let mut r = rollout(&[10.0], 1000);
        for i in 0..(MAX_HISTORY as u64 + 50) {
            r.conclude(i, vec![check(Verdict::Fail)], 11_000 + i, "a");
        }
        assert_eq!(r.history.len(), MAX_HISTORY);
        assert_eq!(r.history[0].decision, Decision::Started);
    }

    #[test]
    fn round_trips_through_toml() {
        let mut r = rollout(&[10.0, 50.0], 2);
        r.conclude(0, vec![check(Verdict::Fail)], 11_000, "a");
        let text = toml::to_string(&r).unwrap();
        let back: Rollout = toml::from_str(&text).unwrap();
        assert_eq!(back, r);
    }
}
