//! A worker thread: owns one model instance and runs the batches the batcher hands it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::batch::{merge, split};
use super::{Completed, Job};
use crate::core::tensor::Tensor;
use crate::error::{Error, Result};
use crate::monitoring::metrics::VersionMetrics;
use crate::runtime::Backend;

pub(crate) fn run(
    mut backend: Box<dyn Backend>,
    work: Receiver<Vec<Job>>,
    idle: Sender<()>,
    metrics: VersionMetrics,
) {
    // Ends when the batcher has gone and the channel is drained; the backend (and its ONNX
    // Runtime session) is dropped here, on this thread.
    for batch in work.iter() {
        execute(backend.as_mut(), batch, &metrics);
        // The batcher may already have exited during shutdown; the work channel still decides.
        let _ = idle.send(());
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

fn execute(backend: &mut dyn Backend, batch: Vec<Job>, metrics: &VersionMetrics) {
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
        Err(_) if batch.len() > 1 => {
            for job in batch {
                execute(backend, vec![job], metrics);
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
