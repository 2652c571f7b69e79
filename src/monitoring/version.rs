//! What one loaded version carries for monitoring: its skew profiler and window (from its
//! baseline.json), its capture schema and sample rate, the scorer its feedback goes to, and its
//! model card's figures. The request path calls [`VersionMonitor::watch`] before running a request
//! and [`VersionMonitor::observe`] after; neither blocks or fails the request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::core::infer::{InferRequest, InferResponse};
use crate::core::signature::Signature;
use crate::core::tensor::Tensor;
use crate::error::{Error, Result};
use crate::registry::config::{MonitoringSettings, ThresholdSection};
use crate::routing::window::Variant;

use super::Monitoring;
use super::baseline::Baseline;
use super::capture::{CaptureRequest, CaptureSchema};
use super::drift::SkewWindow;
use super::feedback::{Pending, Scorer};
use super::quality::{QualityWindow, Task, predictions};
use super::skew::{Profile, Profiler, SkewConfig, SkewReport, Thresholds, report};

/// The parts of a version's model card (metadata.json) monitoring uses.
#[derive(Debug, Clone, Default)]
pub struct Card {
    pub task: Option<String>,
    pub classes: Vec<String>,
    pub trained_at: Option<SystemTime>,
    /// `heldout_metrics`: accuracy, mae, ... as the training script measured them.
    pub heldout: Vec<(String, f64)>,
}

struct Skew {
    profiler: Profiler,
    window: SkewWindow,
    config: SkewConfig,
    window_len: Duration,
    /// Metric label values, computed once: only the baseline's names ever become labels.
    features: Vec<String>,
}

pub struct VersionMonitor {
    model: Arc<str>,
    version: u64,
    /// `None` without a baseline.json, or with monitoring off.
    skew: Option<Skew>,
    capture_schema: Arc<CaptureSchema>,
    sample_rate: f64,
    scorer: Arc<Scorer>,
    card: Card,
    enabled: bool,
}

/// What [`VersionMonitor::watch`] took from a request before it ran.
pub struct Watch {
    profile: Option<Profile>,
    /// The inputs' copy and the arrival time, for a request sampled for capture.
    captured: Option<(Vec<Tensor>, SystemTime)>,
    id: Option<String>,
    feedback: bool,
}

impl Watch {
    /// For a copy of a request (shadow, comparison): captured and binned, never joined with
    /// feedback (the caller's id belongs to the answer it got).
    pub fn no_feedback(mut self) -> Self {
        self.feedback = false;
        self
    }
}

/// The rows of a request: the first dimension its inputs share (1 for scalars).
fn request_rows(req: &InferRequest) -> usize {
    req.inputs
        .first()
        .and_then(|t| t.shape.first())
        .and_then(|&d| usize::try_from(d).ok())
        .unwrap_or(1)
}

fn thresholds(base: Thresholds, over: &ThresholdSection) -> Thresholds {
    Thresholds {
        js_distance: over.js_distance.unwrap_or(base.js_distance),
        psi: over.psi.unwrap_or(base.psi),
        linf: over.linf.unwrap_or(base.linf),
        out_of_range: over.out_of_range.unwrap_or(base.out_of_range),
        non_finite: over.non_finite.unwrap_or(base.non_finite),
    }
}

/// The skew thresholds of a model's config.toml, checked against its baseline's feature names.
/// Online (at load) and offline (`switchyard skew --capture`) use this one function.
pub fn skew_config(
    settings: &MonitoringSettings,
    features: &[String],
    model: &str,
    origin: &str,
) -> std::result::Result<SkewConfig, String> {
    let model_level = thresholds(Thresholds::default(), &settings.skew_threshold);
    let mut per_feature = std::collections::HashMap::new();
    for (name, over) in &settings.features {
        if !features.contains(name) {
            return Err(format!(
                "{model}/config.toml: monitoring.features.\"{name}\": {origin} has no feature of \
                 that name (it has: {})",
                features.join(", ")
            ));
        }
        per_feature.insert(name.clone(), thresholds(model_level, over));
    }
    Ok(SkewConfig {
        thresholds: model_level,
        per_feature,
        min_rows: settings.skew_min_rows,
    })
}

impl VersionMonitor {
    /// Builds the monitor at load. A baseline.json that does not parse, or that names tensors the
    /// version lacks, or a per-feature threshold for a feature the baseline lacks, fails the load
    /// (naming the file): a reference that silently measures nothing is worse than none.
    pub fn new(
        model: &str,
        version: u64,
        signature: &Signature,
        settings: &MonitoringSettings,
        baseline: Option<&[u8]>,
        card: Card,
    ) -> std::result::Result<Self, String> {
        let enabled = settings.enabled;
        let origin = format!("{model}/{version}/{}", super::BASELINE_FILE);
        let skew = match baseline {
            Some(bytes) if enabled => {
                let baseline = Baseline::parse(bytes, &origin).map_err(|e| e.to_string())?;
                let profiler =
                    Profiler::new(&baseline, Some(signature)).map_err(|e| e.to_string())?;
                let features = profiler.feature_names();
                let config = skew_config(settings, &features, model, &origin)?;
                let window =
                    SkewWindow::new(settings.skew_window, settings.skew_slice, profiler.empty());
                Some(Skew {
                    profiler,
                    window,
                    config,
                    window_len: settings.skew_window,
                    features,
                })
            }
            _ => None,
        };
        let task = Task::from_card(
            card.task.as_deref(),
            card.classes.clone(),
            &signature.outputs,
        );
        Ok(Self {
            model: Arc::from(model),
            version,
            skew,
            capture_schema: CaptureSchema::new(signature),
            sample_rate: settings.capture_sample_rate,
            scorer: Arc::new(Scorer::new(
                task,
                QualityWindow::new(settings.quality_window, settings.quality_slice),
            )),
            card,
            enabled,
        })
    }

    pub fn card(&self) -> &Card {
        &self.card
    }

    /// Before the request runs: bins its inputs (they are moved into the batch afterwards) and,
    /// when this request is sampled for capture, keeps a copy of them.
    pub fn watch(&self, req: &InferRequest, monitoring: &Monitoring) -> Option<Watch> {
        if !self.enabled {
            return None;
        }
        let profile = self.skew.as_ref().map(|s| {
            let mut p = s.profiler.empty();
            s.profiler.observe(&req.inputs, &[], &mut p);
            p
        });
        let sampled = monitoring.capture.as_ref().is_some_and(|capture| {
            let sampled = self.sample_rate > 0.0
                && (self.sample_rate >= 1.0 || fastrand::f64() < self.sample_rate);
            // A full queue costs no copy: the rows are counted as dropped right here.
            let rows = request_rows(req);
            if sampled && !capture.has_room(rows) {
                capture.count_dropped(&self.model, rows as u64);
                return false;
            }
            sampled
        });
        Some(Watch {
            profile,
            captured: sampled.then(|| (req.inputs.clone(), SystemTime::now())),
            id: req.id.clone(),
            feedback: true,
        })
    }

    /// After the request ran: the window counts its rows, the capture queue takes a copy (or
    /// drops and counts it), and its predictions wait for feedback when the caller gave an id.
    /// Requests that failed on the caller's side (bad inputs) are not observed.
    pub fn observe(
        &self,
        watch: Option<Watch>,
        result: &Result<InferResponse>,
        variant: Option<Variant>,
        latency: Duration,
        monitoring: &Monitoring,
    ) {
        let Some(watch) = watch else { return };
        let outputs: &[Tensor] = match result {
            Ok(resp) => &resp.outputs,
            // Inputs the model refused at run time (NaN where it cannot take one) are exactly
            // what the data-invariant counts are for.
            Err(Error::Rejected(_)) => &[],
            Err(_) => return,
        };
        let now_ms = crate::routing::now_ms();
        if let (Some(skew), Some(mut profile)) = (&self.skew, watch.profile) {
            skew.profiler.observe(&[], outputs, &mut profile);
            skew.window.record(&profile, now_ms);
        }
        let Ok(resp) = result else { return };
        if let (Some(capture), Some((inputs, arrived))) = (&monitoring.capture, watch.captured) {
            capture.submit(CaptureRequest {
                time: arrived,
                request_id: watch.id.clone(),
                model: self.model.clone(),
                version: self.version,
                variant: variant.map(Variant::as_str),
                latency,
                schema: self.capture_schema.clone(),
                inputs,
                outputs: resp.outputs.clone(),
            });
        }
        if let Some(id) = watch.id
            && watch.feedback
            && let Some(predictions) = predictions(&self.scorer.task, &resp.outputs)
        {
            monitoring.feedback.insert(
                &self.model,
                &id,
                Pending {
                    version: self.version,
                    variant: variant.map(Variant::as_str),
                    predictions,
                    scorer: self.scorer.clone(),
                },
                now_ms,
            );
        }
    }

    /// The skew report over the window now; `None` without a baseline.
    pub fn skew_report(&self, now_ms: u64) -> Option<(SkewReport, Duration)> {
        let s = self.skew.as_ref()?;
        let profile = s.window.snapshot(now_ms);
        Some((report(&s.profiler, &profile, &s.config), s.window_len))
    }

    /// Sets this version's monitoring gauges (called when /metrics is scraped).
    pub fn export(&self, now_ms: u64) {
        let version = self.version.to_string();
        if let Some((report, _)) = self.skew_report(now_ms) {
            super::metrics::set_skew_rows(&self.model, &version, report.rows);
            for f in &report.features {
                // Label values only from the baseline's own names.
                let Some(name) = self
                    .skew
                    .as_ref()
                    .and_then(|s| s.features.iter().find(|n| **n == f.feature))
                else {
                    continue;
                };
                for (statistic, value) in [
                    ("js_distance", f.js_distance),
                    ("psi", f.psi),
                    ("linf", f.linf),
                    ("out_of_range", f.out_of_range),
                    ("non_finite", Some(f.non_finite as f64)),
                ] {
                    // No rows in the window: NaN, not the last value seen.
                    let v = value.unwrap_or(f64::NAN);
                    super::metrics::set_skew(&self.model, &version, name, statistic, v);
                }
                super::metrics::set_skew_alert(&self.model, &version, name, f.alert);
            }
        }
        self.scorer
            .window
            .summary(now_ms)
            .publish(&self.scorer.task, &self.model, self.version);
        for (metric, value) in &self.card.heldout {
            super::metrics::set_quality_heldout(&self.model, &version, metric, *value);
        }
        if let Some(trained) = self.card.trained_at {
            let age = SystemTime::now()
                .duration_since(trained)
                .unwrap_or_default()
                .as_secs_f64();
            super::metrics::set_model_age(&self.model, &version, age);
        }
    }

    /// Clears this version's gauges when it stops serving: alerts to 0, statistics and figures
    /// to NaN (Prometheus keeps a series' last value otherwise, and its alerts would keep firing).
    pub fn retire(&self) {
        let version = self.version.to_string();
        if let Some(s) = &self.skew {
            for name in &s.features {
                for statistic in ["js_distance", "psi", "linf", "out_of_range", "non_finite"] {
                    super::metrics::set_skew(&self.model, &version, name, statistic, f64::NAN);
                }
                super::metrics::set_skew_alert(&self.model, &version, name, false);
            }
            super::metrics::set_skew_rows(&self.model, &version, 0);
        }
        super::quality::QualitySummary::default().publish(
            &self.scorer.task,
            &self.model,
            self.version,
        );
        for (metric, _) in &self.card.heldout {
            super::metrics::set_quality_heldout(&self.model, &version, metric, f64::NAN);
        }
        if self.card.trained_at.is_some() {
            super::metrics::set_model_age(&self.model, &version, f64::NAN);
        }
    }

    /// The live quality over the window, for status and the rollout's comparison.
    pub fn quality(&self, now_ms: u64) -> super::quality::QualitySummary {
        self.scorer.window.summary(now_ms)
    }
}
