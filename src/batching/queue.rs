//! The queue the workers share: callers push requests, and a worker that frees up takes the
//! next batch itself. No thread sits between them, so under load a request costs no wake-up on
//! the way in (workers are busy and find it there), and a batch costs none on the way to a worker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

use super::Job;
use super::batch::compatible;
use crate::error::Error;
use crate::monitoring::metrics::VersionMetrics;
use crate::registry::config::BatchSettings;

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
        // Never asked for (workers plan only a non-empty queue); nothing is due.
        return Plan::WaitUntil(now + s.max_queue_delay.max(Duration::from_millis(50)));
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

struct State {
    queue: VecDeque<Job>,
    /// Workers blocked on `work`: a new request wakes one only when some are.
    waiting: usize,
    /// False once the scheduler is stopped: workers finish what is queued and end.
    open: bool,
    /// Names each request, so a caller can withdraw its own.
    next_seq: u64,
}

pub(crate) struct Queue {
    /// "model 'x' version 1", for messages.
    pub(crate) name: String,
    settings: BatchSettings,
    state: Mutex<State>,
    work: Condvar,
    /// Requests in `state.queue`, readable without the lock (admission, shedding, metrics).
    queued: AtomicUsize,
    metrics: VersionMetrics,
}

impl Queue {
    pub(crate) fn new(name: String, settings: BatchSettings, metrics: VersionMetrics) -> Self {
        Self {
            name,
            settings,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                waiting: 0,
                open: true,
                next_seq: 0,
            }),
            work: Condvar::new(),
            queued: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Nothing that runs under the lock can panic half-way through a change (pushes, removals,
    /// drains and counters), so a poisoned lock still guards a consistent queue.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn max_queue_size(&self) -> usize {
        self.settings.max_queue_size
    }

    /// Queues `job` and returns its sequence number; refuses at once when the queue is full or
    /// the scheduler is stopping.
    pub(crate) fn push(&self, mut job: Job) -> Result<u64, Error> {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before >= self.settings.max_queue_size {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.overloaded());
        }
        let mut st = self.lock();
        if !st.open {
            drop(st);
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Unavailable(format!(
                "{} is shutting down",
                self.name
            )));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        job.seq = seq;
        st.queue.push_back(job);
        // Counted before a worker can take it, so the gauge never reads below zero.
        self.metrics.pending.increment(1.0);
        let wake = st.waiting > 0;
        drop(st);
        if wake {
            self.work.notify_one();
        }
        Ok(seq)
    }

    pub(crate) fn overloaded(&self) -> Error {
        Error::Overloaded(format!(
            "{} is overloaded: its queue holds the maximum of {} waiting requests \
             (batching.max_queue_size); retry later",
            self.name, self.settings.max_queue_size
        ))
    }

    /// Takes request `seq` out of the queue if it is still waiting there; false when a worker
    /// has already taken it.
    pub(crate) fn withdraw(&self, seq: u64) -> bool {
        let mut st = self.lock();
        // Sequence numbers rise along the queue: a binary search finds it.
        let Ok(i) = st.queue.binary_search_by_key(&seq, |j| j.seq) else {
            return false;
        };
        let job = st.queue.remove(i);
        // A new front may make a batch due now (a preferred size, say): a waiting worker re-plans.
        let wake = i == 0 && st.waiting > 0 && !st.queue.is_empty();
        drop(st);
        drop(job);
        self.left_queue(1);
        if wake {
            self.work.notify_one();
        }
        true
    }

    fn left_queue(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.metrics.pending.decrement(n as f64);
    }

    /// Stops taking requests and wakes every waiting worker so it can finish and end.
    pub(crate) fn close(&self) {
        self.lock().open = false;
        self.work.notify_all();
    }

    /// Blocks until there is a batch for this worker, and takes it; `None` once the scheduler
    /// is stopped and the queue is empty. Requests whose deadline passed are answered here
    /// rather than run (their caller's own timer usually withdraws them first).
    pub(crate) fn next_batch(&self) -> Option<Vec<Job>> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let plan = if st.queue.is_empty() {
                if !st.open {
                    return None;
                }
                None
            } else if !st.open {
                // Stopping: what is left goes without waiting for a delay (a wait means the
                // whole queue would merge).
                match plan(&st.queue, &self.settings, now) {
                    Plan::WaitUntil(_) => Some(Plan::Dispatch(st.queue.len())),
                    p => Some(p),
                }
            } else {
                Some(plan(&st.queue, &self.settings, now))
            };
            match plan {
                Some(Plan::Dispatch(n)) => {
                    let batch: Vec<Job> = st.queue.drain(..n).collect();
                    // What is left may be a batch due now too (it did not fit this one): the
                    // wake-up that brought this worker is passed on to another waiting one.
                    let more = !st.queue.is_empty() && st.waiting > 0;
                    drop(st);
                    if more {
                        self.work.notify_one();
                    }
                    self.left_queue(n);
                    let batch = self.expire(batch, now);
                    if batch.is_empty() {
                        st = self.lock();
                        continue;
                    }
                    return Some(batch);
                }
                Some(Plan::WaitUntil(due)) => {
                    st.waiting += 1;
                    let wait = due.saturating_duration_since(now);
                    st = self
                        .work
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    st.waiting -= 1;
                }
                None => {
                    // A short spin-then-yield first: under steady load the next request is
                    // usually microseconds away, and taking it without sleeping saves the
                    // caller a futex wake-up and this thread a context switch.
                    drop(st);
                    let backoff = Backoff::new();
                    while self.queued() == 0 && !backoff.is_completed() {
                        backoff.snooze();
                    }
                    st = self.lock();
                    if !st.queue.is_empty() || !st.open {
                        continue;
                    }
                    st.waiting += 1;
                    st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                    st.waiting -= 1;
                }
            }
        }
    }

    /// Fails the requests of `batch` whose deadline passed and returns the rest.
    fn expire(&self, batch: Vec<Job>, now: Instant) -> Vec<Job> {
        if !batch.iter().any(|j| j.deadline.is_some_and(|d| d <= now)) {
            return batch;
        }
        let mut kept = Vec::with_capacity(batch.len());
        for job in batch {
            match job.deadline {
                Some(d) if d <= now => {
                    let _ = job.reply.send(Err(self.timed_out(job.enqueued, d, now)));
                }
                _ => kept.push(job),
            }
        }
        kept
    }

    /// The error of a request that waited past its deadline without running.
    pub(crate) fn timed_out(&self, enqueued: Instant, deadline: Instant, now: Instant) -> Error {
        let waited = now.saturating_duration_since(enqueued);
        let limit = deadline.saturating_duration_since(enqueued);
        Error::Timeout(format!(
            "{}: the request waited {:.1} ms in the queue, past its timeout of {:.1} ms, \
             and was not run",
            self.name,
            waited.as_secs_f64() * 1e3,
            limit.as_secs_f64() * 1e3
        ))
    }
}
