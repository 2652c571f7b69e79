//! Per-model `config.toml`, and its resolution against the server-wide defaults.
//!
//! ```toml
//! version_policy = { latest = 1 }   # or "all" (default), or { specific = [1, 3] }
//!
//! [batching]
//! max_batch_size = 64        # rows; 0 = never merge requests
//! max_queue_delay_us = 500   # how long the first request of a batch may wait for company
//! preferred_batch_sizes = [] # send one of these sizes as soon as it can be formed
//! max_queue_size = 1024      # requests waiting; beyond it callers get 429
//! default_timeout_us = 0     # queue deadline for requests that set none; 0 = none
//!
//! [runtime]
//! instances = 2              # sessions that may run at once
//! intra_op_threads = 1       # ONNX Runtime threads per session; 0 = one per core
//! device = "cpu"             # or "cuda" / "cuda:N"
//!
//! [lifecycle]
//! allow_signature_change = false  # let a new version change input/output names, types or shapes
//!
//! [monitoring]
//! capture_sample_rate = 0.1  # share of requests captured (with --capture-dir); default --capture-sample-rate
//! skew_window = "10m"        # online skew is computed over this sliding window...
//! skew_slice = "1m"          # ...which moves in steps of this
//! skew_min_rows = 1000       # rows in the window before any skew verdict
//! quality_window = "1h"      # live accuracy / MAE from feedback, over this window
//! [monitoring.skew_threshold]  # alert when a statistic is above (defaults shown)
//! js_distance = 0.1          # numeric features (Jensen-Shannon distance, base 2)
//! psi = 0.2                  # numeric features (population stability index)
//! linf = 0.1                 # categorical features (L-infinity distance, as TFDV)
//! out_of_range = 0.05        # share of values outside the training range
//! non_finite = 0             # NaN/inf values in the window
//! [monitoring.features."petal width (cm)"]  # per-feature overrides, same keys
//! psi = 0.3
//! ```
//! Unknown keys are errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub version_policy: VersionPolicy,
    #[serde(default)]
    pub batching: BatchingSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub lifecycle: LifecycleSection,
    #[serde(default)]
    pub monitoring: MonitoringSection,
}

/// Serving-data monitoring of the model's versions: capture sampling, skew window and thresholds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringSection {
    pub capture_sample_rate: Option<f64>,
    pub skew_window: Option<String>,
    pub skew_slice: Option<String>,
    pub skew_min_rows: Option<u64>,
    #[serde(default)]
    pub skew_threshold: ThresholdSection,
    /// Per-feature overrides of `skew_threshold`, by the baseline's feature name (`output:<name>`
    /// for an output); a name the baseline lacks fails the version's load.
    #[serde(default)]
    pub features: BTreeMap<String, ThresholdSection>,
    pub quality_window: Option<String>,
}

/// Skew thresholds; unset ones inherit (feature <- model <- built-in defaults).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSection {
    pub js_distance: Option<f64>,
    pub psi: Option<f64>,
    pub linf: Option<f64>,
    pub out_of_range: Option<f64>,
    pub non_finite: Option<u64>,
}

/// The effective monitoring settings of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringSettings {
    pub enabled: bool,
    pub capture_sample_rate: f64,
    pub skew_window: Duration,
    pub skew_slice: Duration,
    pub skew_min_rows: u64,
    pub skew_threshold: ThresholdSection,
    pub features: BTreeMap<String, ThresholdSection>,
    pub quality_window: Duration,
    pub quality_slice: Duration,
}

/// Default online skew window and its step.
pub const SKEW_WINDOW: Duration = Duration::from_secs(600);
pub const SKEW_SLICE: Duration = Duration::from_secs(60);
/// Rows before a skew verdict: below ~1000 rows, sampling noise alone puts the Jensen-Shannon
/// distance of a 20-bin histogram near the 0.1 threshold.
pub const SKEW_MIN_ROWS: u64 = 1000;
pub const QUALITY_WINDOW: Duration = Duration::from_secs(3600);
/// Windows are rings of slices; more than this many would cost memory per version for nothing.
const MAX_SLICES: u128 = 1440;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSection {
    /// A new version whose signature differs from the serving one is refused unless this is set.
    #[serde(default)]
    pub allow_signature_change: bool,
}

/// Which of the versions present in the registry are served (Triton's `version_policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionPolicy {
    /// Every version present.
    #[default]
    All,
    /// The N highest versions.
    Latest(u32),
    /// Exactly these versions (those present).
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// The versions to serve out of `available` (ascending in, ascending out).
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            Self::All => available.to_vec(),
            Self::Latest(n) => {
                let skip = available.len().saturating_sub(*n as usize);
                available[skip..].to_vec()
            }
            Self::Specific(wanted) => available
                .iter()
                .copied()
                .filter(|v| wanted.contains(v))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSection {
    pub max_batch_size: Option<usize>,
    pub max_queue_delay_us: Option<u64>,
    pub preferred_batch_sizes: Option<Vec<usize>>,
    pub max_queue_size: Option<usize>,
    pub default_timeout_us: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    pub instances: Option<usize>,
    pub intra_op_threads: Option<usize>,
    pub device: Option<String>,
}

/// Where a version's sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(u32),
}

/// A device name that is none of `cpu`, `cuda`, `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device '{0}' (expected \"cpu\", \"cuda\" or \"cuda:N\")")]
pub struct UnknownDevice(pub String);

impl Device {
    pub fn parse(s: &str) -> Result<Self, UnknownDevice> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| UnknownDevice(s.to_string())),
        }
    }
}

/// Why a `config.toml` was refused. Messages name the file (`origin`) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: the file is not UTF-8")]
    NotUtf8 {
        origin: String,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("{origin}: {}", .source.to_string().trim_end())]
    Parse {
        origin: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: &'static str,
        message: String,
    },
    #[error("{origin}: runtime.device: {source}")]
    Device {
        origin: String,
        #[source]
        source: UnknownDevice,
    },
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Server-wide defaults for what `config.toml` leaves out (set by flags).
#[derive(Debug, Clone)]
pub struct Defaults {
    pub max_batch_size: usize,
    pub max_queue_delay_us: u64,
    pub max_queue_size: usize,
    pub default_timeout_us: u64,
    pub instances: usize,
    pub intra_op_threads: usize,
    pub device: Device,
    /// Share of requests captured for models whose config.toml sets none.
    pub capture_sample_rate: f64,
    /// Serving-data monitoring (skew, feedback, capture) on the request path.
    pub monitoring: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            max_queue_delay_us: 0,
            max_queue_size: 1024,
            default_timeout_us: 0,
            instances: default_instances(),
            intra_op_threads: 1,
            device: Device::Cpu,
            capture_sample_rate: 1.0,
            monitoring: true,
        }
    }
}

/// One single-threaded session per core (capped): parallelism from a pool of sessions rather
/// than from ONNX Runtime's intra-op threads, which oversubscribe small machines.
pub fn default_instances() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
}

/// The effective scheduling settings of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSettings {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub preferred_batch_sizes: Vec<usize>,
    pub max_queue_size: usize,
    pub default_timeout: Option<Duration>,
}

/// The effective runtime settings of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    pub instances: usize,
    pub intra_op_threads: usize,
    pub device: Device,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub version_policy: VersionPolicy,
    pub batching: BatchSettings,
    pub runtime: RuntimeSettings,
    pub allow_signature_change: bool,
    pub monitoring: MonitoringSettings,
}

const MAX_BATCH: usize = 1 << 16;
const MAX_INSTANCES: usize = 256;

impl ModelConfig {
    /// Parses `config.toml`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_string(),
            source,
        })
    }

    /// Parses the bytes of `config.toml`, which must be UTF-8.
    pub fn parse_bytes(bytes: &[u8], origin: &str) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes).map_err(|source| ConfigError::NotUtf8 {
            origin: origin.to_string(),
            source,
        })?;
        Self::parse(text, origin)
    }

    /// Fills in defaults and checks every value; errors name the file and the key.
    pub fn resolve(&self, d: &Defaults, origin: &str) -> Result<Resolved, ConfigError> {
        let err = |key: &'static str, message: String| {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key,
                message,
            })
        };
        let b = &self.batching;
        let max_batch_size = b.max_batch_size.unwrap_or(d.max_batch_size);
        if max_batch_size > MAX_BATCH {
            return err(
                "batching.max_batch_size",
                format!("{max_batch_size} is over the limit of {MAX_BATCH}"),
            );
        }
        let mut preferred = b.preferred_batch_sizes.clone().unwrap_or_default();
        for &p in &preferred {
            if p == 0 || p > max_batch_size {
                return err(
                    "batching.preferred_batch_sizes",
                    format!("{p} must be between 1 and max_batch_size ({max_batch_size})"),
                );
            }
        }
        preferred.sort_unstable();
        preferred.dedup();
        let max_queue_size = b.max_queue_size.unwrap_or(d.max_queue_size);
        if max_queue_size == 0 {
            return err("batching.max_queue_size", "must be at least 1".into());
        }
        let timeout_us = b.default_timeout_us.unwrap_or(d.default_timeout_us);

        let r = &self.runtime;
        let instances = r.instances.unwrap_or(d.instances);
        if instances == 0 || instances > MAX_INSTANCES {
            return err(
                "runtime.instances",
                format!("{instances} must be between 1 and {MAX_INSTANCES}"),
            );
        }
        let intra_op_threads = r.intra_op_threads.unwrap_or(d.intra_op_threads);
        if intra_op_threads > MAX_INSTANCES {
            return err(
                "runtime.intra_op_threads",
                format!("{intra_op_threads} is over the limit of {MAX_INSTANCES}"),
            );
        }
        let device = match &r.device {
            Some(s) => Device::parse(s).map_err(|source| ConfigError::Device {
                origin: origin.to_string(),
                source,
            })?,
            None => d.device,
        };
        if let VersionPolicy::Latest(0) = self.version_policy {
            return err("version_policy.latest", "must be at least 1".into());
        }
        let monitoring = self.monitoring.resolve(d, origin)?;
        Ok(Resolved {
            version_policy: self.version_policy.clone(),
            batching: BatchSettings {
                max_batch_size,
                max_queue_delay: Duration::from_micros(
                    b.max_queue_delay_us.unwrap_or(d.max_queue_delay_us),
                ),
                preferred_batch_sizes: preferred,
                max_queue_size,
                default_timeout: (timeout_us > 0).then(|| Duration::from_micros(timeout_us)),
            },
            runtime: RuntimeSettings {
                instances,
                intra_op_threads,
                device,
            },
            allow_signature_change: self.lifecycle.allow_signature_change,
            monitoring,
        })
    }
}

impl MonitoringSection {
    fn resolve(&self, d: &Defaults, origin: &str) -> Result<MonitoringSettings, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        let rate = self.capture_sample_rate.unwrap_or(d.capture_sample_rate);
        if !(0.0..=1.0).contains(&rate) {
            return Err(invalid(
                "monitoring.capture_sample_rate",
                format!("{rate} must be between 0 and 1"),
            ));
        }
        let duration = |key: &'static str, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(t) => match crate::routing::spec::parse_duration(t) {
                Ok(d) if d >= Duration::from_millis(10) => Ok(d),
                Ok(_) => Err(invalid(key, format!("{t:?} is shorter than 10ms"))),
                Err(e) => Err(invalid(key, e)),
            },
        };
        let skew_window = duration("monitoring.skew_window", &self.skew_window, SKEW_WINDOW)?;
        // Ten steps at least, so a short window slides rather than empties all at once.
        let skew_slice = duration(
            "monitoring.skew_slice",
            &self.skew_slice,
            SKEW_SLICE
                .min(skew_window / 10)
                .max(Duration::from_millis(10)),
        )?;
        let quality_window = duration(
            "monitoring.quality_window",
            &self.quality_window,
            QUALITY_WINDOW,
        )?;
        if skew_slice > skew_window {
            return Err(invalid(
                "monitoring.skew_slice",
                "must not be longer than skew_window".into(),
            ));
        }
        if skew_window.as_millis().div_ceil(skew_slice.as_millis()) > MAX_SLICES {
            return Err(invalid(
                "monitoring.skew_slice",
                format!("skew_window holds more than {MAX_SLICES} slices; use a longer slice"),
            ));
        }
        let check = |key: &'static str, t: &ThresholdSection| {
            for (name, v) in [
                ("js_distance", t.js_distance),
                ("psi", t.psi),
                ("linf", t.linf),
                ("out_of_range", t.out_of_range),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    return Err(invalid(
                        key,
                        format!("{name} = {v} must be a non-negative number"),
                    ));
                }
            }
            Ok(())
        };
        check("monitoring.skew_threshold", &self.skew_threshold)?;
        for t in self.features.values() {
            check("monitoring.features", t)?;
        }
        Ok(MonitoringSettings {
            enabled: d.monitoring,
            capture_sample_rate: rate,
            skew_window,
            skew_slice,
            skew_min_rows: self.skew_min_rows.unwrap_or(SKEW_MIN_ROWS),
            skew_threshold: self.skew_threshold.clone(),
            features: self.features.clone(),
            quality_window,
            // Sixty steps per window: fine enough that the window moves smoothly.
            quality_slice: (quality_window / 60).max(Duration::from_millis(10)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            instances: 2,
            ..Defaults::default()
        }
    }

    #[test]
    fn empty_config_takes_defaults() {
        let c = ModelConfig::parse("", "c.toml").unwrap();
        let r = c.resolve(&defaults(), "c.toml").unwrap();
        assert_eq!(r.version_policy, VersionPolicy::All);
        assert_eq!(r.batching.max_batch_size, 64);
        assert_eq!(r.runtime.instances, 2);
        assert_eq!(r.runtime.device, Device::Cpu);
    }

    #[test]
    fn full_config_parses() {
        let text = r#"
            version_policy = { latest = 2 }
            [batching]
            max_batch_size = 32
            max_queue_delay_us = 500
            preferred_batch_sizes = [16, 8, 16]
            max_queue_size = 10
            default_timeout_us = 2000
            [runtime]
            instances = 3
            intra_op_threads = 0
            device = "cuda:1"
            [lifecycle]
            allow_signature_change = true
        "#;
        let r = ModelConfig::parse(text, "c.toml")
            .unwrap()
            .resolve(&defaults(), "c.toml")
            .unwrap();
        assert_eq!(r.version_policy, VersionPolicy::Latest(2));
        assert_eq!(r.batching.preferred_batch_sizes, vec![8, 16]);
        assert_eq!(r.batching.max_queue_delay, Duration::from_micros(500));
        assert_eq!(r.batching.default_timeout, Some(Duration::from_millis(2)));
        assert_eq!(r.runtime.device, Device::Cuda(1));
        assert_eq!(r.runtime.instances, 3);
        assert!(r.allow_signature_change);
    }

    #[test]
    fn policies_in_every_spelling() {
        for (text, want) in [
            ("version_policy = \"all\"", VersionPolicy::All),
            ("[version_policy]\nlatest = 1", VersionPolicy::Latest(1)),
            (
                "version_policy = { specific = [1, 3] }",
                VersionPolicy::Specific(vec![1, 3]),
            ),
        ] {
            assert_eq!(ModelConfig::parse(text, "c").unwrap().version_policy, want);
        }
        let available = [1, 2, 3, 5];
        assert_eq!(VersionPolicy::All.select(&available), vec![1, 2, 3, 5]);
        assert_eq!(VersionPolicy::Latest(2).select(&available), vec![3, 5]);
        assert_eq!(
            VersionPolicy::Latest(9).select(&available),
            vec![1, 2, 3, 5]
        );
        assert_eq!(
            VersionPolicy::Specific(vec![3, 4, 1]).select(&available),
            vec![1, 3]
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = ModelConfig::parse("[batching]\nmax_bach_size = 3", "m/config.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("m/config.toml") && e.contains("max_bach_size"),
            "{e}"
        );
        let e = ModelConfig::parse("[batching]\nmax_batch_size = -3", "m/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_batch_size"), "{e}");
        let e = ModelConfig::parse_bytes(b"\xff", "m/config.toml").unwrap_err();
        assert!(std::error::Error::source(&e).is_some(), "keeps its cause");
        assert_eq!(e.to_string(), "m/config.toml: the file is not UTF-8");
        let bad = [
            (
                "[batching]\npreferred_batch_sizes = [128]",
                "batching.preferred_batch_sizes",
            ),
            ("[batching]\nmax_queue_size = 0", "batching.max_queue_size"),
            ("[runtime]\ninstances = 0", "runtime.instances"),
            ("[runtime]\ndevice = \"tpu\"", "runtime.device"),
            ("version_policy = { latest = 0 }", "version_policy.latest"),
        ];
        for (text, key) in bad {
            let e = ModelConfig::parse(text, "m/config.toml")
                .unwrap()
                .resolve(&defaults(), "m/config.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("m/config.toml: ") && e.contains(key), "{e}");
        }
    }

    #[test]
    fn monitoring_section_resolves_and_names_bad_keys() {
        let text = r#"
            [monitoring]
            capture_sample_rate = 0.25
            skew_window = "2m"
            skew_slice = "10s"
            skew_min_rows = 50
            [monitoring.skew_threshold]
            psi = 0.3
            [monitoring.features."petal width (cm)"]
            js_distance = 0.2
        "#;
        let m = ModelConfig::parse(text, "c.toml")
            .unwrap()
            .resolve(&defaults(), "c.toml")
            .unwrap()
            .monitoring;
        assert_eq!(m.capture_sample_rate, 0.25);
        assert_eq!(m.skew_window, Duration::from_secs(120));
        assert_eq!(m.skew_slice, Duration::from_secs(10));
        assert_eq!(m.skew_min_rows, 50);
        assert_eq!(m.skew_threshold.psi, Some(0.3));
        assert_eq!(m.features["petal width (cm)"].js_distance, Some(0.2));
        let empty = ModelConfig::parse("", "c").unwrap();
        let m = empty.resolve(&defaults(), "c").unwrap().monitoring;
        assert_eq!((m.skew_window, m.skew_slice), (SKEW_WINDOW, SKEW_SLICE));
        assert_eq!(m.capture_sample_rate, 1.0);
        for (text, key) in [
            (
                "[monitoring]\ncapture_sample_rate = 1.5",
                "capture_sample_rate",
            ),
            ("[monitoring]\nskew_window = \"soon\"", "skew_window"),
            (
                "[monitoring]\nskew_window = \"1m\"\nskew_slice = \"2m\"",
                "skew_slice",
            ),
            (
                "[monitoring]\nskew_window = \"24h\"\nskew_slice = \"1s\"",
                "skew_slice",
            ),
            ("[monitoring.skew_threshold]\npsi = -1", "psi"),
        ] {
            let e = ModelConfig::parse(text, "c.toml")
                .unwrap()
                .resolve(&defaults(), "c.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("c.toml"), "{text}: {e}");
        }
        let e = ModelConfig::parse("[monitoring]\nskew_treshold = 1", "c.toml").unwrap_err();
        assert!(e.to_string().contains("skew_treshold"), "{e}");
    }
}
