//! One loaded model version: its signature, its settings and its scheduler (which owns the
//! sessions). Requests hold an `Arc` to it, so a version being replaced or unloaded finishes the
//! requests it already has and is freed when the last of them ends.

use std::time::{Duration, SystemTime};

use crate::batching::Scheduler;
use crate::core::infer::{InferRequest, InferResponse, Parameters};
use crate::core::signature::Signature;
use crate::error::{Error, Result};
use crate::monitoring::metrics::RequestMetrics;
use crate::registry::config::Resolved;
use crate::runtime::LiveSessions;

pub struct LoadedVersion {
    pub model: String,
    pub version: u64,
    pub signature: Signature,
    pub settings: Resolved,
    /// Rows per batch actually used: 0 when the signature cannot be batched.
    pub max_batch_size: usize,
    pub scheduler: Scheduler,
    /// Request counters and latency histograms of this version, made once at load.
    pub requests: RequestMetrics,
    /// The version's sessions still alive (owned by the scheduler's worker threads).
    pub sessions: LiveSessions,
    /// ONNX Runtime execution provider, e.g. `CPUExecutionProvider`.
    pub provider: &'static str,
    /// sha256 of the model.onnx bytes that were loaded.
    pub sha256: String,
    pub loaded_at: SystemTime,
    pub load_duration: Duration,
    /// Skew window, capture schema, feedback scorer, and the model card's task and training
    /// date (`monitor.card()`): see `monitoring::version`.
    pub monitor: crate::monitoring::VersionMonitor,
}

impl LoadedVersion {
    /// Validates the request against the signature, runs it through the scheduler and keeps
    /// the outputs the caller asked for.
    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse> {
        let id = req.id.clone();
        let timeout = req.timeout()?.or(self.settings.batching.default_timeout);
        let valid = self.signature.validate(req)?;
        let rows = valid.rows.filter(|_| self.max_batch_size > 0);
        let done = self.scheduler.run(valid.inputs, rows, timeout).await?;
        let mut all: Vec<Option<_>> = done.outputs.into_iter().map(Some).collect();
        let outputs = valid
            .outputs
            .iter()
            .map(|&i| {
                all.get_mut(i)
                    .and_then(Option::take)
                    .ok_or_else(|| Error::Internal(format!("the runtime returned no output #{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(InferResponse {
            model_name: self.model.clone(),
            model_version: self.version,
            id,
            outputs,
            parameters: Parameters::new(),
        })
    }
}
