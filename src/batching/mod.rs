//! The per-version scheduler: a bounded queue shared by a pool of worker threads that each own
//! one model instance.
//!
//! ```text
//! submit ──(bounded)──▶ queue ◀──takes a batch when free── worker 1 (session 1)
//!   ▲  429 when full              ◀──────────────────────── worker 2 (session 2)
//!   └──────── oneshot per request ◀── split outputs ◀──┘
//! ```
//! Batches are formed when a worker is free (Triton's behaviour), so under load requests that
//! arrived while every worker was busy ride together, and at low load nothing waits unless
//! `max_queue_delay` asks for it. A free worker takes its batch itself: no batching thread
//! between callers and workers, so no thread hand-off per batch. Callers that go away and
//! requests whose deadline passes withdraw themselves from the queue without running.

pub mod batch;
mod queue;
mod worker;

use std::sync::Arc;
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
    /// Its place in the queue, set when queued (withdrawals find it by this).
    seq: u64,
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
    queue: Arc<queue::Queue>,
    /// Disconnects once every worker has ended (each holds a sender and drops it last, after
    /// its backend), so a stop can wait for that with a bound.
    finished: channel::Receiver<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Starts one worker thread per backend. `tag` names the threads.
    pub fn start(
        name: String,
        tag: &str,
        settings: BatchSettings,
        backends: Vec<Box<dyn Backend>>,
        metrics: VersionMetrics,
    ) -> std::io::Result<Self> {
        let (finished_tx, finished) = channel::bounded::<()>(0);
        let fallbacks = Arc::new(worker::Fallbacks::new(name.clone()));
        let queue = Arc::new(queue::Queue::new(name, settings, metrics.clone()));
        let mut threads = Vec::with_capacity(backends.len());
        for (i, backend) in backends.into_iter().enumerate() {
            let queue_ = queue.clone();
            let metrics = metrics.clone();
            let finished_tx = finished_tx.clone();
            let fallbacks = fallbacks.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sy-run-{tag}-{i}"))
                .spawn(move || {
                    // The backend is dropped inside `run`, before this thread says it ended.
                    worker::run(backend, &queue_, metrics, &fallbacks);
                    drop(finished_tx);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The workers already started end at once, with the queue closed.
                    queue.close();
                    return Err(e);
                }
            }
        }
        Ok(Self {
            queue,
            finished,
            threads,
        })
    }

    /// Closes the queue and waits, at most `within`, for the workers to finish what they have
    /// and end, dropping the backends they own. True when they all ended in time; otherwise
    /// they end on their own later.
    pub fn stop(mut self, within: Duration) -> bool {
        self.queue.close();
        let ended = matches!(
            self.finished.recv_timeout(within),
            Err(channel::RecvTimeoutError::Disconnected)
        );
        if ended {
            for t in std::mem::take(&mut self.threads) {
                // Each has returned already; a thread that panicked has nothing left to report.
                let _ = t.join();
            }
        }
        ended
    }

    /// Requests waiting in the queue (not yet running).
    pub fn queued(&self) -> usize {
        self.queue.queued()
    }

    /// At least half the queue is taken: copies of requests (shadow traffic) are shed here, so
    /// they never crowd out callers.
    pub fn half_full(&self) -> bool {
        self.queued().saturating_mul(2) >= self.queue.max_queue_size()
    }

    /// The refusal a full queue gives, before the request is even read: front ends call this
    /// first, so an overloaded version costs no body read or decoding.
    pub fn refuse_if_full(&self) -> Result<()> {
        if self.queued() >= self.queue.max_queue_size() {
            Err(self.queue.overloaded())
        } else {
            Ok(())
        }
    }

    /// Queues a request and waits for its outputs. Refuses at once when the queue is full.
    /// Dropping the returned future withdraws the request if it has not started running, and a
    /// request still queued at its deadline withdraws itself and fails (with a `timeout`, a tokio
    /// runtime must have its timers enabled).
    pub async fn run(
        &self,
        inputs: Vec<Tensor>,
        rows: Option<usize>,
        timeout: Option<Duration>,
    ) -> Result<Completed> {
        let enqueued = Instant::now();
        let deadline = timeout.map(|t| enqueued + t);
        let (reply, mut rx) = oneshot::channel();
        let seq = self.queue.push(Job {
            seq: 0,
            inputs,
            rows,
            enqueued,
            deadline,
            reply,
        })?;
        let mut waiting = Withdraw {
            queue: &self.queue,
            seq: Some(seq),
        };
        // The caller's own timer needs tokio's; without one, a worker still refuses to run a
        // request past its deadline, it just answers when it reaches it.
        let timer = deadline.filter(|_| tokio::runtime::Handle::try_current().is_ok());
        let answer = match timer {
            None => (&mut rx).await,
            Some(d) => tokio::select! {
                biased;
                answer = &mut rx => answer,
                () = tokio::time::sleep_until(d.into()) => {
                    waiting.seq = None;
                    if self.queue.withdraw(seq) {
                        return Err(self.queue.timed_out(enqueued, d, Instant::now()));
                    }
                    // A worker has it: the answer comes.
                    rx.await
                }
            },
        };
        waiting.seq = None;
        answer.map_err(|_| {
            Error::Internal(format!(
                "{} stopped before answering the request",
                self.queue.name
            ))
        })?
    }
}

impl Drop for Scheduler {
    /// Without a stop, the workers still end once the queue is empty.
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// Withdraws a queued request whose caller stopped waiting (its future was dropped).
struct Withdraw<'a> {
    queue: &'a queue::Queue,
    /// `None` once there is nothing to withdraw.
    seq: Option<u64>,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.queue.withdraw(seq);
        }
    }
}

#[cfg(test)]
mod tests;
