//! What an operator asks for when starting a rollout: the kind, the steps, the bake interval and
//! the thresholds of the analysis. The same struct is the body of `PUT /admin/models/{m}/rollout`
//! and is kept (with the stable version filled in) in the model's `routing.toml`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How traffic is split between the stable version and the candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A weighted random split; the weight grows step by step.
    #[default]
    Canary,
    /// A split by a key the caller sends: a key keeps its variant, and as the weight grows keys
    /// only move from stable to candidate.
    Ab,
    /// Stable answers every caller; a fraction of requests is copied to the candidate, whose
    /// answers are compared and thrown away.
    Shadow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Ab => "ab",
            Self::Shadow => "shadow",
        }
    }
}

/// The steps of a canary or A/B rollout when none are given: the candidate's share in percent.
pub const DEFAULT_STEPS: [f64; 4] = [5.0, 25.0, 50.0, 100.0];

/// A rollout as asked for. Every field but `candidate` has a default; unknown fields are refused
/// so a typo in a threshold's name never silently keeps the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The version to roll out.
    pub candidate: u64,
    /// The version that serves now; filled in at start (the pinned version, else the one serving
    /// requests that name no version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<u64>,
    #[serde(default)]
    pub kind: Kind,
    /// The candidate's share of traffic at each step, in percent, increasing. Shadow rollouts
    /// have a single step (callers stay on stable); the default for the others is 5, 25, 50, 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<f64>>,
    /// How long each analysis interval (and so each step, at least) lasts: "60s", "5m", "500ms".
    #[serde(default = "default_interval", with = "duration_text")]
    pub interval: Duration,
    /// A/B only: the request header whose value is the sticky key (the `routing_key` request
    /// parameter works too, for gRPC callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Shadow only: the fraction of requests copied to the candidate.
    #[serde(default = "one")]
    pub shadow_fraction: f64,
    /// Canary and A/B: the fraction of requests also run on the other variant (off the response
    /// path) to measure how often the two versions disagree.
    #[serde(default = "default_compare_fraction")]
    pub compare_fraction: f64,
    /// The candidate's server-side error rate may exceed stable's by at most this much.
    #[serde(default = "default_error_rate_increase")]
    pub max_error_rate_increase: f64,
    /// The candidate's p99 latency may be at most this multiple of stable's.
    #[serde(default = "default_p99_ratio")]
    pub max_p99_ratio: f64,
    /// ...and only fails when the candidate's p99 is also this many milliseconds above stable's,
    /// so sub-millisecond jitter of fast models does not roll a good candidate back.
    #[serde(default = "default_p99_slack_ms")]
    pub p99_slack_ms: f64,
    /// Classifiers: the largest fraction of compared rows whose label or arg-max may differ.
    /// Regressors: the largest mean absolute difference relative to stable's output spread.
    #[serde(default = "default_disagreement")]
    pub max_disagreement: f64,
    /// The largest fraction of the candidate's rows that may have a NaN or infinite output.
    #[serde(default)]
    pub max_nan_rate: f64,
    /// Below this many requests for a variant (or compared requests, for disagreement) a check is
    /// inconclusive: the step is held and the interval keeps collecting.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// This many failed intervals roll the candidate back.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn one() -> f64 {
    1.0
}
fn default_compare_fraction() -> f64 {
    0.1
}
fn default_error_rate_increase() -> f64 {
    0.01
}
fn default_p99_ratio() -> f64 {
    1.5
}
fn default_p99_slack_ms() -> f64 {
    1.0
}
fn default_disagreement() -> f64 {
    0.05
}
fn default_min_requests() -> u64 {
    100
}
fn default_failure_limit() -> u32 {
    2
}

/// The most failed intervals a rollout may wait for (each is kept in its state).
const MAX_FAILURE_LIMIT: u32 = 100;

/// The shortest and longest analysis interval accepted.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

impl RolloutSpec {
    /// A spec with every default, for `candidate`.
    pub fn new(candidate: u64) -> Self {
        Self {
            candidate,
            stable: None,
            kind: Kind::default(),
            steps: None,
            interval: default_interval(),
            sticky_header: None,
            shadow_fraction: one(),
            compare_fraction: default_compare_fraction(),
            max_error_rate_increase: default_error_rate_increase(),
            max_p99_ratio: default_p99_ratio(),
            p99_slack_ms: default_p99_slack_ms(),
            max_disagreement: default_disagreement(),
            max_nan_rate: 0.0,
            min_requests: default_min_requests(),
            failure_limit: default_failure_limit(),
        }
    }

    /// The candidate's share at step `i` (the last step's beyond the end), without allocating:
    /// it is read on every request.
    pub fn weight_at(&self, i: usize) -> f64 {
        let percent = match (self.kind, &self.steps) {
            (Kind::Shadow, _) => return 0.0,
            (_, Some(steps)) => steps.get(i).or(steps.last()).copied(),
            (_, None) => DEFAULT_STEPS.get(i).or(DEFAULT_STEPS.last()).copied(),
        };
        percent.unwrap_or(0.0) / 100.0
    }

    /// The candidate's share (0..=1) of callers at each step. Shadow: one step at 0.
    pub fn weights(&self) -> Vec<f64> {
        match (self.kind, &self.steps) {
            (Kind::Shadow, _) => vec![0.0],
            (_, Some(steps)) => steps.iter().map(|s| s / 100.0).collect(),
            (_, None) => DEFAULT_STEPS.iter().map(|s| s / 100.0).collect(),
        }
    }

    /// Checks every field; the message names the field and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.candidate == 0 {
            return Err("\"candidate\" must be a positive version number".into());
        }
        if self.stable == Some(self.candidate) {
            return Err(format!(
                "the candidate (version {}) is already the stable version",
                self.candidate
            ));
        }
        if let Some(steps) = &self.steps {
            if self.kind == Kind::Shadow {
                return Err(
                    "\"steps\" does not apply to shadow rollouts: callers stay on the \
                            stable version and the candidate is promoted after one passed interval"
                        .into(),
                );
            }
            if steps.is_empty() {
                return Err("\"steps\" must list at least one weight".into());
            }
            for (i, s) in steps.iter().enumerate() {
                if !(s.is_finite() && *s > 0.0 && *s <= 100.0) {
                    return Err(format!(
                        "\"steps\"[{i}] is {s}: each step is the candidate's share in percent, \
                         above 0 and at most 100"
                    ));
                }
                if i > 0 && *s <= steps[i - 1] {
                    return Err(format!(
                        "\"steps\" must increase (step {i} is {s}, after {})",
                        steps[i - 1]
                    ));
                }
            }
        }
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&self.interval) {
            return Err(format!(
                "\"interval\" is {:?}: it must be between {:?} and {:?}",
                self.interval, MIN_INTERVAL, MAX_INTERVAL
            ));
        }
        if let Some(h) = &self.sticky_header {
            if self.kind != Kind::Ab {
                return Err("\"sticky_header\" applies to ab rollouts only".into());
            }
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(format!(
                    "\"sticky_header\" {h:?} is not a valid header name"
                ));
            }
        }
        let fraction = |name: &str, v: f64, zero_ok: bool| {
            if v.is_finite() && v <= 1.0 && (v > 0.0 || (zero_ok && v == 0.0)) {
                Ok(())
            } else {
                Err(format!(
                    "\"{name}\" is {v}: it must be a fraction {} 0 and at most 1",
                    if zero_ok { "of at least" } else { "above" }
                ))
            }
        };
        if self.kind != Kind::Shadow
            && self.compare_fraction == 0.0
            && self.weights().last().is_some_and(|w| *w >= 1.0)
        {
            return Err(
                "a step of 100% sends no caller to the stable version, which is then \
                        measured only through compared copies: \"compare_fraction\" must be \
                        above 0 (or end the steps below 100 and let the success promote)"
                    .into(),
            );
        }
        fraction("shadow_fraction", self.shadow_fraction, false)?;
        fraction("compare_fraction", self.compare_fraction, true)?;
        fraction(
            "max_error_rate_increase",
            self.max_error_rate_increase,
            true,
        )?;
        fraction("max_disagreement", self.max_disagreement, true)?;
        fraction("max_nan_rate", self.max_nan_rate, true)?;
        if !(self.max_p99_ratio.is_finite() && self.max_p99_ratio >= 1.0) {
            return Err(format!(
                "\"max_p99_ratio\" is {}: it must be at least 1",
                self.max_p99_ratio
            ));
        }
        if !(self.p99_slack_ms.is_finite() && self.p99_slack_ms >= 0.0) {
            return Err(format!(
                "\"p99_slack_ms\" is {}: it must be a number of milliseconds, at least 0",
                self.p99_slack_ms
            ));
        }
        if self.min_requests == 0 {
            return Err("\"min_requests\" must be at least 1".into());
        }
        if !(1..=MAX_FAILURE_LIMIT).contains(&self.failure_limit) {
            return Err(format!(
                "\"failure_limit\" is {}: it must be between 1 and {MAX_FAILURE_LIMIT}",
                self.failure_limit
            ));
        }
        Ok(())
    }
}

/// Parses a duration the way operators write it: "60s", "5m", "1h 30m", "500ms" (jiff's friendly
/// format, which also takes ISO 8601 like "PT60S").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like \"60s\" or \"5m\": {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{text:?} is negative"))
}

/// Writes a duration so that [`parse_duration`] reads it back: whole seconds as "60s", else ms.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Serde for durations as text ("60s"), in JSON bodies and in routing.toml.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<RolloutSpec, String> {
        let s: RolloutSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map(|()| s)
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let s = spec(r#"{"candidate": 2}"#).unwrap();
        assert_eq!(s, RolloutSpec::new(2));
        assert_eq!(s.weights(), vec![0.05, 0.25, 0.5, 1.0]);
        assert_eq!(s.interval, Duration::from_secs(60));
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        for d in [Duration::from_secs(60), Duration::from_millis(250)] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn bad_specs_name_the_field() {
        for (json, needle) in [
            (r#"{"candidate": 2, "stepz": [5]}"#, "stepz"),
            (r#"{"candidate": 0}"#, "candidate"),
            (r#"{"candidate": 2, "steps": []}"#, "steps"),
            (r#"{"candidate": 2, "steps": [50, 25]}"#, "increase"),
            (r#"{"candidate": 2, "steps": [0, 25]}"#, "steps\"[0]"),
            (r#"{"candidate": 2, "steps": [150]}"#, "steps\"[0]"),
            (r#"{"candidate": 2, "interval": "1ms"}"#, "interval"),
            (r#"{"candidate": 2, "interval": "often"}"#, "often"),
            (
                r#"{"candidate": 2, "sticky_header": "x-user"}"#,
                "ab rollouts",
            ),
            (
                r#"{"candidate": 2, "kind": "ab", "sticky_header": "x user"}"#,
                "header name",
            ),
            (
                r#"{"candidate": 2, "kind": "shadow", "steps": [5]}"#,
                "shadow",
            ),
            (
                r#"{"candidate": 2, "shadow_fraction": 0}"#,
                "shadow_fraction",
            ),
            (r#"{"candidate": 2, "max_p99_ratio": 0.5}"#, "max_p99_ratio"),
            (
                r#"{"candidate": 2, "max_disagreement": 2}"#,
                "max_disagreement",
            ),
            (r#"{"candidate": 2, "min_requests": 0}"#, "min_requests"),
            (r#"{"candidate": 2, "failure_limit": 0}"#, "failure_limit"),
            (r#"{"candidate": 2, "kind": "blue-green"}"#, "blue-green"),
            (r#"{"candidate": 2, "stable": 2}"#, "already the stable"),
            (
                r#"{"candidate": 2, "compare_fraction": 0}"#,
                "compare_fraction",
            ),
        ] {
            let e = spec(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn shadow_has_one_step_at_zero() {
        let s = spec(r#"{"candidate": 2, "kind": "shadow", "shadow_fraction": 0.5}"#).unwrap();
        assert_eq!(s.weights(), vec![0.0]);
    }
}
