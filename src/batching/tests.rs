//! Scheduler tests with a fake backend whose runs can be held back, so queues build up
//! deterministically. No test asserts a time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel as channel;
use tokio::sync::oneshot;

use super::queue::{Plan, plan};
use super::*;
use crate::core::tensor::TensorData;
use crate::runtime::{LiveSessions, SessionToken};

/// Doubles input `x` into output `y`; fails on a NaN; records each run's rows and first values.
struct Doubler {
    entered: Arc<AtomicUsize>,
    gate: Option<channel::Receiver<()>>,
    log: Arc<Mutex<Vec<Vec<f32>>>>,
    _live: SessionToken,
}

impl Backend for Doubler {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        if let Some(g) = &self.gate {
            let _ = g.recv();
        }
        let x = &inputs[0];
        let TensorData::Fp32(v) = &x.data else {
            return Err(Error::Inference("want FP32".into()));
        };
        let cols = x.shape[1..].iter().product::<i64>() as usize;
        self.log
            .lock()
            .unwrap()
            .push(v.iter().step_by(cols.max(1)).copied().collect());
        if v.iter().any(|f| f.is_nan()) {
            return Err(Error::Inference("NaN in input".into()));
        }
        let y = v.iter().map(|f| f * 2.0).collect();
        Ok(vec![Tensor::new("y", x.shape.clone(), TensorData::Fp32(y))])
    }
}

struct Harness {
    scheduler: Arc<Scheduler>,
    entered: Arc<AtomicUsize>,
    permits: channel::Sender<()>,
    log: Arc<Mutex<Vec<Vec<f32>>>>,
    live: LiveSessions,
    /// `switchyard_batch_fallbacks_total` of this scheduler.
    fallbacks: Arc<AtomicU64>,
}

fn settings(max_batch_size: usize, max_queue_size: usize) -> BatchSettings {
    BatchSettings {
        max_batch_size,
        max_queue_delay: Duration::ZERO,
        preferred_batch_sizes: vec![],
        max_queue_size,
        default_timeout: None,
    }
}

fn harness(s: BatchSettings, gated: bool) -> Harness {
    let (permits, gate) = channel::unbounded();
    let log = Arc::new(Mutex::new(Vec::new()));
    let entered = Arc::new(AtomicUsize::new(0));
    let live = LiveSessions::default();
    let backend = Doubler {
        entered: entered.clone(),
        gate: gated.then_some(gate),
        log: log.clone(),
        _live: live.token(),
    };
    let fallbacks = Arc::new(AtomicU64::new(0));
    let metrics = VersionMetrics {
        batch_fallbacks: metrics::Counter::from_arc(fallbacks.clone()),
        ..VersionMetrics::noop()
    };
    let scheduler = Scheduler::start(
        "model 'test' version 1".into(),
        "test",
        s,
        vec![Box::new(backend)],
        metrics,
    )
    .unwrap();
    Harness {
        scheduler: Arc::new(scheduler),
        entered,
        permits,
        log,
        live,
        fallbacks,
    }
}

fn rows(first: f32, n: usize, cols: usize) -> Vec<Tensor> {
    let data = (0..n * cols).map(|i| first + (i / cols) as f32).collect();
    vec![Tensor::new(
        "x",
        vec![n as i64, cols as i64],
        TensorData::Fp32(data),
    )]
}

fn spawn(
    h: &Harness,
    inputs: Vec<Tensor>,
    batchable: bool,
    timeout: Option<Duration>,
) -> tokio::task::JoinHandle<Result<Completed>> {
    let s = h.scheduler.clone();
    let r = batchable.then(|| inputs[0].shape[0] as usize);
    tokio::spawn(async move { s.run(inputs, r, timeout).await })
}

/// Waits until the backend has started `n` runs (the worker is then busy on the n-th).
async fn wait_entered(h: &Harness, n: usize) {
    while h.entered.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_queued(s: &Scheduler, n: usize) {
    while s.queued() != n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn doubled(inputs: &[Tensor]) -> Vec<f32> {
    match &inputs[0].data {
        TensorData::Fp32(v) => v.iter().map(|f| f * 2.0).collect(),
        _ => unreachable!(),
    }
}

fn output(c: &Completed) -> Vec<f32> {
    match &c.outputs[0].data {
        TensorData::Fp32(v) => v.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn requests_queued_behind_a_busy_worker_are_merged_and_split_exactly() {
    let h = harness(settings(64, 100), true);
    let first = spawn(&h, rows(0.0, 1, 3), true, None);
    // The worker holds the first request; the others queue up behind it.
    wait_entered(&h, 1).await;
    let mut tasks = Vec::new();
    for i in 1..=9 {
        let inputs = rows(i as f32 * 10.0, i % 3 + 1, 3);
        tasks.push((inputs.clone(), spawn(&h, inputs, true, None)));
    }
    wait_queued(&h.scheduler, 9).await;
    for _ in 0..10 {
        h.permits.send(()).unwrap();
    }
    let c = first.await.unwrap().unwrap();
    assert_eq!(output(&c), doubled(&rows(0.0, 1, 3)));
    let mut batch_rows = Vec::new();
    for (inputs, task) in tasks {
        let c = task.await.unwrap().unwrap();
        assert_eq!(
            output(&c),
            doubled(&inputs),
            "each request gets exactly its rows back"
        );
        assert_eq!(c.outputs[0].shape, inputs[0].shape);
        batch_rows.push(c.batch_rows);
    }
    // 9 requests of 1..=3 rows (18 rows) ran as one execution.
    assert!(batch_rows.iter().all(|&r| r == 18), "{batch_rows:?}");
    assert_eq!(h.log.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn max_batch_size_zero_runs_every_request_alone() {
    let h = harness(settings(0, 100), true);
    let mut tasks = Vec::new();
    for i in 0..5 {
        let inputs = rows(i as f32, 1, 2);
        tasks.push((inputs.clone(), spawn(&h, inputs, true, None)));
    }
    for _ in 0..5 {
        h.permits.send(()).unwrap();
    }
    for (inputs, task) in tasks {
        let c = task.await.unwrap().unwrap();
        assert_eq!(output(&c), doubled(&inputs));
        assert_eq!(c.batch_rows, 1);
    }
    assert_eq!(h.log.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn mixed_shapes_and_oversized_requests_run_correctly() {
    let h = harness(settings(4, 100), true);
    let first = spawn(&h, rows(0.0, 1, 2), true, None);
    wait_entered(&h, 1).await;
    let mut tasks = Vec::new();
    // Widths 2, 2, 5, 2 and one 6-row request over max_batch_size = 4.
    for (i, (n, cols)) in [(1, 2), (1, 2), (1, 5), (1, 2), (6, 2), (2, 2)]
        .into_iter()
        .enumerate()
    {
        let inputs = rows(100.0 * (i + 1) as f32, n, cols);
        tasks.push((inputs.clone(), spawn(&h, inputs, true, None)));
        wait_queued(&h.scheduler, i + 1).await;
    }
    for _ in 0..10 {
        h.permits.send(()).unwrap();
    }
    first.await.unwrap().unwrap();
    let mut seen = Vec::new();
    for (inputs, task) in tasks {
        let c = task.await.unwrap().unwrap();
        assert_eq!(output(&c), doubled(&inputs));
        seen.push(c.batch_rows);
    }
    // FIFO: [w2, w2] stop at the w5 request; w5 alone; [w2] stops at the 6-row one; 6 alone; 2.
    assert_eq!(seen, vec![2, 2, 1, 1, 6, 2]);
}

#[tokio::test]
async fn a_bad_request_in_a_merged_batch_fails_alone() {
    let h = harness(settings(64, 100), true);
    let first = spawn(&h, rows(0.0, 1, 1), true, None);
    wait_entered(&h, 1).await;
    let good1 = spawn(&h, rows(1.0, 1, 1), true, None);
    let bad = spawn(&h, rows(f32::NAN, 1, 1), true, None);
    let good2 = spawn(&h, rows(3.0, 2, 1), true, None);
    wait_queued(&h.scheduler, 3).await;
    for _ in 0..10 {
        h.permits.send(()).unwrap();
    }
    first.await.unwrap().unwrap();
    assert_eq!(output(&good1.await.unwrap().unwrap()), vec![2.0]);
    let e = bad.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Inference(_)), "{e:?}");
    assert_eq!(output(&good2.await.unwrap().unwrap()), vec![6.0, 8.0]);
    assert_eq!(
        h.fallbacks.load(Ordering::SeqCst),
        1,
        "the failed merged batch is counted"
    );
}

#[tokio::test]
async fn stop_returns_after_the_threads_dropped_their_backends() {
    let h = harness(settings(64, 100), false);
    let done = spawn(&h, rows(1.0, 1, 1), true, None);
    assert_eq!(output(&done.await.unwrap().unwrap()), vec![2.0]);
    let scheduler = Arc::try_unwrap(h.scheduler).ok().unwrap();
    assert_eq!(h.live.count(), 1);
    let stopped = tokio::task::spawn_blocking(move || scheduler.stop(Duration::from_secs(60)));
    assert!(stopped.await.unwrap(), "the threads ended");
    assert_eq!(
        h.live.count(),
        0,
        "the backend was dropped before stop returned"
    );
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_recovers() {
    let h = harness(settings(64, 3), true);
    let running = spawn(&h, rows(0.0, 1, 1), true, None);
    wait_entered(&h, 1).await;
    let queued: Vec<_> = (1..=3)
        .map(|i| spawn(&h, rows(i as f32, 1, 1), true, None))
        .collect();
    wait_queued(&h.scheduler, 3).await;
    let e = h
        .scheduler
        .run(rows(9.0, 1, 1), Some(1), None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Overloaded(_)));
    assert!(
        e.to_string().contains("maximum of 3 waiting requests"),
        "{e}"
    );
    for _ in 0..10 {
        h.permits.send(()).unwrap();
    }
    running.await.unwrap().unwrap();
    for t in queued {
        t.await.unwrap().unwrap();
    }
    h.permits.send(()).unwrap();
    let c = h
        .scheduler
        .run(rows(5.0, 1, 1), Some(1), None)
        .await
        .unwrap();
    assert_eq!(output(&c), vec![10.0]);
}

#[tokio::test]
async fn an_expired_deadline_fails_without_running() {
    let h = harness(settings(64, 10), true);
    let running = spawn(&h, rows(0.0, 1, 1), true, None);
    wait_entered(&h, 1).await;
    let late = spawn(&h, rows(42.0, 1, 1), true, Some(Duration::from_millis(1)));
    // Not a timing assertion: the request waits for a permit that comes only after it expired.
    let e = late.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert!(e.to_string().contains("was not run"), "{e}");
    h.permits.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(h.log.lock().unwrap().iter().all(|run| !run.contains(&42.0)));
    assert_eq!(h.scheduler.queued(), 0);
}

#[tokio::test]
async fn a_withdrawn_request_is_removed_and_not_run() {
    let h = harness(settings(64, 10), true);
    let running = spawn(&h, rows(0.0, 1, 1), true, None);
    wait_entered(&h, 1).await;
    let gone = spawn(&h, rows(77.0, 1, 1), true, None);
    wait_queued(&h.scheduler, 1).await;
    gone.abort();
    // The caller's dropped future takes it out of the queue, without any worker being free.
    wait_queued(&h.scheduler, 0).await;
    h.permits.send(()).unwrap();
    running.await.unwrap().unwrap();
    let stay = spawn(&h, rows(5.0, 1, 1), true, None);
    h.permits.send(()).unwrap();
    stay.await.unwrap().unwrap();
    assert!(h.log.lock().unwrap().iter().all(|run| !run.contains(&77.0)));
}

/// Holds every run whose first value is 1.0 until released; doubles otherwise.
struct HoldOnes {
    release: channel::Receiver<()>,
    _live: SessionToken,
}

impl Backend for HoldOnes {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let TensorData::Fp32(v) = &inputs[0].data else {
            return Err(Error::Inference("want FP32".into()));
        };
        if v.first() == Some(&1.0) {
            let _ = self.release.recv();
        }
        Ok(vec![Tensor::new(
            "y",
            inputs[0].shape.clone(),
            TensorData::Fp32(doubled(inputs)),
        )])
    }
}

/// Two workers, a queue delay longer than any test: a request that cannot join the batch a worker
/// is waiting to fill must not wait for that delay while the other worker is free. Without the
/// wake-up passed on, B waits for A's worker, held here until B is done: the test hangs and the
/// guard timeout fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_join_the_waiting_batch_goes_to_the_other_free_worker() {
    let mut s = settings(8, 100);
    s.max_queue_delay = Duration::from_secs(3600);
    let live = LiveSessions::default();
    let (release, hold) = channel::unbounded();
    let backends: Vec<Box<dyn Backend>> = (0..2)
        .map(|_| {
            Box::new(HoldOnes {
                release: hold.clone(),
                _live: live.token(),
            }) as Box<dyn Backend>
        })
        .collect();
    let scheduler = Arc::new(
        Scheduler::start(
            "model 'test' version 1".into(),
            "test",
            s,
            backends,
            VersionMetrics::noop(),
        )
        .unwrap(),
    );
    // Both workers wait (an hour) for A to find company; B (9 rows, over the maximum of 8) cannot
    // join it, so A's batch goes now and is held, and B must go to the other worker.
    let (a, b) = (scheduler.clone(), scheduler.clone());
    let first = tokio::spawn(async move { a.run(rows(1.0, 1, 2), Some(1), None).await });
    wait_queued(&scheduler, 1).await;
    let second = tokio::spawn(async move { b.run(rows(2.0, 9, 2), Some(9), None).await });
    let guard = Duration::from_secs(60);
    let b_out = tokio::time::timeout(guard, second)
        .await
        .expect("B waited behind A's held worker");
    assert_eq!(output(&b_out.unwrap().unwrap()).len(), 18);
    release.send(()).unwrap();
    let a_out = first.await.unwrap().unwrap();
    assert_eq!(output(&a_out), vec![2.0, 2.0]);
}

fn job(rows_: Option<usize>, cols: usize, enqueued: Instant) -> Job {
    let (reply, _rx) = oneshot::channel();
    Job {
        seq: 0,
        inputs: rows(0.0, rows_.unwrap_or(1), cols),
        rows: rows_,
        enqueued,
        deadline: None,
        reply,
    }
}

#[test]
fn plan_follows_the_dynamic_batcher_rules() {
    let now = Instant::now();
    let mut s = settings(8, 100);
    s.max_queue_delay = Duration::from_millis(5);
    let q = |jobs: Vec<Job>| jobs.into_iter().collect::<VecDeque<_>>();

    // Not full and the delay has not run out: wait until the first request's delay ends.
    let queue = q(vec![job(Some(2), 3, now), job(Some(2), 3, now)]);
    assert_eq!(
        plan(&queue, &s, now),
        Plan::WaitUntil(now + s.max_queue_delay)
    );
    // Delay over: send what there is.
    assert_eq!(plan(&queue, &s, now + s.max_queue_delay), Plan::Dispatch(2));
    // Full: send at once.
    let queue = q((0..4).map(|_| job(Some(2), 3, now)).collect());
    assert_eq!(plan(&queue, &s, now), Plan::Dispatch(4));
    // The next request does not fit (too many rows, or other trailing dims): send at once.
    let queue = q(vec![job(Some(2), 3, now), job(Some(7), 3, now)]);
    assert_eq!(plan(&queue, &s, now), Plan::Dispatch(1));
    let queue = q(vec![job(Some(2), 3, now), job(Some(1), 4, now)]);
    assert_eq!(plan(&queue, &s, now), Plan::Dispatch(1));
    // Non-batchable and oversized requests go alone.
    let queue = q(vec![job(None, 3, now), job(Some(1), 3, now)]);
    assert_eq!(plan(&queue, &s, now), Plan::Dispatch(1));
    let queue = q(vec![job(Some(9), 3, now)]);
    assert_eq!(plan(&queue, &s, now), Plan::Dispatch(1));
    // A preferred size that can be formed goes at once (the largest one).
    s.preferred_batch_sizes = vec![2, 4];
    let queue = q((0..5).map(|_| job(Some(1), 3, now)).collect());
    assert_eq!(plan(&queue, &s, now), Plan::Dispatch(4));
    // Zero delay: never wait.
    s.preferred_batch_sizes.clear();
    s.max_queue_delay = Duration::ZERO;
    let queue = q(vec![job(Some(1), 3, now)]);
    assert_eq!(plan(&queue, &s, now), Plan::Dispatch(1));
}
