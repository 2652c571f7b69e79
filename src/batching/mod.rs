//! The per-version scheduler: a bounded queue, a dedicated batching thread, and a pool of worker
//! threads that each own one model instance.
//!
//! ```text
//! submit ──(bounded count)──▶ batcher thread ──batch──▶ worker 1 (session 1)
//!   ▲  429 when full          forms batches only      ─▶ worker 2 (session 2)
//!   └──────── oneshot per request ◀── split outputs ◀──┘
//! ```
//! Batches are formed when a worker is free (Triton's behaviour), so under load requests that
//! arrived while every worker was busy ride together, and at low load nothing waits unless
//! `max_queue_delay` asks for it. Callers that went away and requests whose deadline passed are
//! removed from the queue without running.

pub mod batch;
mod queue;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel as channel;
use tokio::sync::oneshot;

use crate::core::tensor::Tensor;
use crate::error::{Error, Result};
use crate::monitoring::metrics::VersionMetrics;
use crate::registry::config::BatchSettings;
use crate::runtime::Backend;

/// One request waiting for (or in) a batch.
pub(crate) struct Job {
    inputs: Vec<Tensor>,
    /// Rows along the first dimension when the request may be merged; `None` runs it alone.
    rows: Option<usize>,
    enqueued: Instant,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<Completed>>,
}

/// The outputs of one request, with where its time went.
#[derive(Debug)]
pub struct Completed {
    /// Every model output, in signature order.
    pub outputs: Vec<Tensor>,
    pub queue_time: Duration,
    pub compute_time: Duration,
    /// Rows in the execution this request was part of.
    pub batch_rows: usize,
}

pub struct Scheduler {
    /// "model 'x' version 1", for messages.
    name: String,
    tx: channel::Sender<Job>,
    queued: Arc<AtomicUsize>,
    max_queue_size: usize,
    metrics: VersionMetrics,
    /// Disconnects once every thread has ended (each holds a sender and drops it last, after
    /// its backend), so a stop can wait for that with a bound.
    finished: channel::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the batching thread and one worker thread per backend. `tag` names the threads.
    pub fn start(
        name: String,
        tag: &str,
        settings: BatchSettings,
        backends: Vec<Box<dyn Backend>>,
        metrics: VersionMetrics,
    ) -> std::io::Result<Self> {
        let (tx, rx) = channel::unbounded::<Job>();
        let (work_tx, work_rx) = channel::bounded::<Vec<Job>>(backends.len());
        let (idle_tx, idle_rx) = channel::unbounded::<()>();
        let queued = Arc::new(AtomicUsize::new(0));
        let (finished_tx, finished) = channel::bounded::<()>(0);
        let instances = backends.len();
        let mut threads = Vec::with_capacity(instances + 1);
        let fallbacks = Arc::new(worker::Fallbacks::new(name.clone()));
        for (i, backend) in backends.into_iter().enumerate() {
            let work_rx = work_rx.clone();
            let idle_tx = idle_tx.clone();
            let metrics = metrics.clone();
            let finished_tx = finished_tx.clone();
            let fallbacks = fallbacks.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sy-run-{tag}-{i}"))
                    .spawn(move || {
                        // The backend is dropped inside `run`, before this thread says it ended.
                        worker::run(backend, work_rx, idle_tx, metrics, &fallbacks);
                        drop(finished_tx);
                    })?,
            );
        }
        let batcher = queue::Batcher::new(
            name.clone(),
            settings.clone(),
            rx,
            idle_rx,
            work_tx,
            instances,
            queued.clone(),
            metrics.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("sy-batch-{tag}"))
                .spawn(move || {
                    batcher.run();
                    drop(finished_tx);
                })?,
        );
        Ok(Self {
            name,
            tx,
            queued,
            max_queue_size: settings.max_queue_size,
            metrics,
            finished,
            threads,
        })
    }

    /// Closes the queue and waits, at most `within`, for the threads to finish what they have
    /// and end, dropping the backends they own. True when they all ended in time; otherwise
    /// they end on their own later.
    pub fn stop(self, within: Duration) -> bool {
        let Self {
            tx,
            finished,
            threads,
            ..
        } = self;
        drop(tx);
        let ended = matches!(
            finished.recv_timeout(within),
            Err(channel::RecvTimeoutError::Disconnected)
        );
        if ended {
            for t in threads {
                // Each has returned already; a thread that panicked has nothing left to report.
                let _ = t.join();
            }
        }
        ended
    }

    /// Requests waiting in the queue (not yet running).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// At least half the queue is taken: copies of requests (shadow traffic) are shed here, so
    /// they never crowd out callers.
    pub fn half_full(&self) -> bool {
        self.queued().saturating_mul(2) >= self.max_queue_size
    }

    /// The refusal a full queue gives, before the request is even read: front ends call this
    /// first, so an overloaded version costs no body read or decoding.
    pub fn refuse_if_full(&self) -> Result<()> {
        if self.queued() >= self.max_queue_size {
            Err(self.overloaded())
        } else {
            Ok(())
        }
    }

    fn overloaded(&self) -> Error {
        Error::Overloaded(format!(
            "{} is overloaded: its queue holds the maximum of {} waiting requests \
             (batching.max_queue_size); retry later",
            self.name, self.max_queue_size
        ))
    }

    /// Queues a request and waits for its outputs. Refuses at once when the queue is full.
    /// Dropping the returned future withdraws the request if it has not started running.
    pub async fn run(
        &self,
        inputs: Vec<Tensor>,
        rows: Option<usize>,
        timeout: Option<Duration>,
    ) -> Result<Completed> {
        let rx = self.submit(inputs, rows, timeout)?;
        rx.await.map_err(|_| {
            Error::Internal(format!(
                "{} stopped before answering the request",
                self.name
            ))
        })?
    }

    fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: Option<usize>,
        timeout: Option<Duration>,
    ) -> Result<oneshot::Receiver<Result<Completed>>> {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_queue_size {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.overloaded());
        }
        self.metrics.pending.increment(1.0);
        let now = Instant::now();
        let (reply, rx) = oneshot::channel();
        let job = Job {
            inputs,
            rows,
            enqueued: now,
            deadline: timeout.map(|t| now + t),
            reply,
        };
        if self.tx.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.pending.decrement(1.0);
            return Err(Error::Unavailable(format!(
                "{} is shutting down",
                self.name
            )));
        }
        Ok(rx)
    }
}

#[cfg(test)]
mod tests;
