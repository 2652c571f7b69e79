//! The batching thread: owns the FIFO queue, decides when a batch goes, and hands it to a free
//! worker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{self as channel, Receiver, Sender};

use super::Job;
use super::batch::compatible;
use crate::error::Error;
use crate::monitoring::metrics::VersionMetrics;
use crate::registry::config::BatchSettings;

/// How long the thread sleeps with nothing due, so withdrawn requests are purged even when no
/// event arrives.
const IDLE_TICK: Duration = Duration::from_millis(50);

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Send the first `n` queued requests as one batch now.
    Dispatch(usize),
    /// Nothing to send before this instant (the first request's delay runs out).
    WaitUntil(Instant),
}

/// Decides the next batch from the front of a non-empty queue (Triton's dynamic batcher rules):
/// take requests in arrival order while they are compatible with the first and fit in
/// `max_batch_size` rows; send at once when the batch is full, cannot grow (the next request does
/// not fit), or reaches a preferred size; otherwise wait until the first request has waited
/// `max_queue_delay`.
pub(crate) fn plan(queue: &VecDeque<Job>, s: &BatchSettings, now: Instant) -> Plan {
    let Some(front) = queue.front() else {
        return Plan::WaitUntil(now + IDLE_TICK);
    };
    let Some(front_rows) = front.rows else {
        return Plan::Dispatch(1);
    };
    if s.max_batch_size == 0 || front_rows >= s.max_batch_size {
        return Plan::Dispatch(1);
    }
    let (mut rows, mut n, mut blocked, mut preferred_cut) = (0usize, 0usize, false, None);
    for job in queue {
        match job.rows {
            Some(r) if rows + r <= s.max_batch_size && compatible(&front.inputs, &job.inputs) => {
                rows += r;
                n += 1;
                if s.preferred_batch_sizes.contains(&rows) {
                    preferred_cut = Some(n);
                }
            }
            _ => {
                blocked = true;
                break;
            }
        }
    }
    if rows == s.max_batch_size || blocked {
        return Plan::Dispatch(n);
    }
    if let Some(cut) = preferred_cut {
        return Plan::Dispatch(cut);
    }
    let due = front.enqueued + s.max_queue_delay;
    if due <= now {
        Plan::Dispatch(n)
    } else {
        Plan::WaitUntil(due)
    }
}

pub(crate) struct Batcher {
    name: String,
    settings: BatchSettings,
    rx: Receiver<Job>,
    idle_rx: Receiver<()>,
    work_tx: Sender<Vec<Job>>,
    idle: usize,
    queue: VecDeque<Job>,
    queued: Arc<AtomicUsize>,
    metrics: VersionMetrics,
}

impl Batcher {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        settings: BatchSettings,
        rx: Receiver<Job>,
        idle_rx: Receiver<()>,
        work_tx: Sender<Vec<Job>>,
        instances: usize,
        queued: Arc<AtomicUsize>,
        metrics: VersionMetrics,
    ) -> Self {
        Self {
            name,
            settings,
            rx,
            idle_rx,
            work_tx,
            idle: instances,
            queue: VecDeque::new(),
            queued,
            metrics,
        }
    }

    /// Runs until the scheduler is dropped and every queued request has been dispatched.
    pub(crate) fn run(mut self) {
        let never = channel::never::<Job>();
        let mut open = true;
        loop {
            if open {
                loop {
                    match self.rx.try_recv() {
                        Ok(job) => self.queue.push_back(job),
                        Err(channel::TryRecvError::Empty) => break,
                        Err(channel::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
            while self.idle_rx.try_recv().is_ok() {
                self.idle += 1;
            }
            let now = Instant::now();
            self.purge(now);
            let mut wake = now + IDLE_TICK;
            while self.idle > 0 && !self.queue.is_empty() {
                match plan(&self.queue, &self.settings, now) {
                    Plan::Dispatch(n) => self.dispatch(n),
                    Plan::WaitUntil(t) => {
                        wake = wake.min(t);
                        break;
                    }
                }
            }
            if let Some(d) = self.queue.iter().filter_map(|j| j.deadline).min() {
                wake = wake.min(d);
            }
            if !open && self.queue.is_empty() {
                return;
            }
            // With every worker busy, new requests cannot go anywhere: leave them in the channel
            // (senders then wake nobody) and sleep until a worker frees up or a deadline or the
            // purge tick is due. Under load this saves a thread wake-up per request.
            let rx = if open && self.idle > 0 {
                &self.rx
            } else {
                &never
            };
            let timeout = wake.saturating_duration_since(Instant::now());
            channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(job) => self.queue.push_back(job),
                    Err(_) => open = false,
                },
                recv(self.idle_rx) -> msg => {
                    if msg.is_ok() {
                        self.idle += 1;
                    }
                }
                default(timeout) => {}
            }
        }
    }

    fn left_queue(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.metrics.pending.decrement(n as f64);
    }

    fn dispatch(&mut self, n: usize) {
        let batch: Vec<Job> = self.queue.drain(..n).collect();
        self.left_queue(batch.len());
        self.idle -= 1;
        if let Err(channel::SendError(batch)) = self.work_tx.send(batch) {
            // Every worker is gone (cannot happen while the batcher holds the receiver's twin);
            // answer rather than leave callers waiting.
            for job in batch {
                let _ = job.reply.send(Err(Error::Internal(format!(
                    "{} has no workers",
                    self.name
                ))));
            }
        }
    }

    /// Drops requests whose caller went away and fails those whose deadline passed.
    fn purge(&mut self, now: Instant) {
        let stale = |j: &Job| j.reply.is_closed() || j.deadline.is_some_and(|d| d <= now);
        if !self.queue.iter().any(stale) {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        let mut removed = 0;
        for job in self.queue.drain(..) {
            if job.reply.is_closed() {
                removed += 1;
            } else if let Some(d) = job.deadline.filter(|&d| d <= now) {
                removed += 1;
                let waited = now - job.enqueued;
                let limit = d - job.enqueued;
                let _ = job.reply.send(Err(Error::Timeout(format!(
                    "{}: the request waited {:.1} ms in the queue, past its timeout of {:.1} ms, \
                     and was not run",
                    self.name,
                    waited.as_secs_f64() * 1e3,
                    limit.as_secs_f64() * 1e3
                ))));
            } else {
                kept.push_back(job);
            }
        }
        self.queue = kept;
        self.left_queue(removed);
    }
}
