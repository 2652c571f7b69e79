//! A worker thread: owns one model instance, takes batches from the shared queue and runs them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::batch::{merge, split};
use super::queue::Queue;
use super::{Completed, Job};
use crate::core::tensor::Tensor;
use crate::error::{Error, Result};
use crate::monitoring::metrics::VersionMetrics;
use crate::runtime::Backend;

/// How often a version may log that a merged batch failed; the failures in between are counted
/// and reported with the next line (and always in `switchyard_batch_fallbacks_total`).
const FALLBACK_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the workers of one version share to report merged batches that failed.
pub(crate) struct Fallbacks {
    /// "model 'x' version 1".
    name: String,
    log: RateLimit,
}

impl Fallbacks {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            log: RateLimit::new(FALLBACK_LOG_EVERY),
        }
    }

    fn report(&self, metrics: &VersionMetrics, requests: usize, error: &Error) {
        metrics.batch_fallbacks.increment(1);
        if let Some(suppressed) = self.log.allow(Instant::now()) {
            tracing::warn!(
                version = %self.name, requests, suppressed, %error,
                "a merged batch failed; rerunning its requests one by one. If every merged batch \
                 fails, the model's outputs are not batch-major: set batching.max_batch_size = 0"
            );
        }
    }
}

/// Lets one event through per interval and counts the ones it holds back.
pub(crate) struct RateLimit {
    every: Duration,
    /// When the last event went through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one)` when an event at `now` may go through.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, held) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < self.every => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

pub(crate) fn run(
    mut backend: Box<dyn Backend>,
    queue: &Queue,
    metrics: VersionMetrics,
    fallbacks: &Fallbacks,
) {
    // Ends when the scheduler has stopped and the queue is drained; the backend (and its ONNX
    // Runtime session) is dropped here, on this thread.
    while let Some(batch) = queue.next_batch() {
        execute(backend.as_mut(), batch, &metrics, fallbacks);
    }
}

/// A panic inside the runtime fails the batch instead of killing the worker.
fn run_guarded(backend: &mut dyn Backend, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    catch_unwind(AssertUnwindSafe(|| backend.run(inputs))).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(Error::Inference(format!(
            "the model runtime panicked: {msg}"
        )))
    })
}

fn execute(
    backend: &mut dyn Backend,
    batch: Vec<Job>,
    metrics: &VersionMetrics,
    fallbacks: &Fallbacks,
) {
    let started = Instant::now();
    let rows: Vec<usize> = batch.iter().map(|j| j.rows.unwrap_or(1)).collect();
    let total: usize = rows.iter().sum();
    let result = if let [job] = &batch[..] {
        run_guarded(backend, &job.inputs).map(|out| vec![out])
    } else {
        let parts: Vec<&[Tensor]> = batch.iter().map(|j| &j.inputs[..]).collect();
        merge(&parts, &rows)
            .and_then(|merged| run_guarded(backend, &merged))
            .and_then(|outputs| split(outputs, &rows))
    };
    let compute_time = started.elapsed();
    metrics.executions.increment(1);
    metrics.inference_rows.increment(total as u64);
    metrics.batch_size.record(total as f64);
    metrics.compute_duration.record(compute_time.as_secs_f64());

    match result {
        Ok(outputs) => {
            for (job, outputs) in batch.into_iter().zip(outputs) {
                let queue_time = started.saturating_duration_since(job.enqueued);
                metrics.queue_duration.record(queue_time.as_secs_f64());
                let _ = job.reply.send(Ok(Completed {
                    outputs,
                    queue_time,
                    compute_time,
                    batch_rows: total,
                }));
            }
        }
        // One request's data can make a merged run fail; rerun each alone so only it fails.
        Err(e) if batch.len() > 1 => {
            fallbacks.report(metrics, batch.len(), &e);
            for job in batch {
                execute(backend, vec![job], metrics, fallbacks);
            }
        }
        Err(e) => {
            for job in batch {
                metrics.queue_duration.record(
                    started
                        .saturating_duration_since(job.enqueued)
                        .as_secs_f64(),
                );
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_lets_one_through_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow(t0), Some(0));
        assert_eq!(limit.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(9)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(limit.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(30)), Some(1));
    }
}
