//! The load drivers: closed loop (N callers) and open loop (a fixed arrival rate, latency from the
//! intended send time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{self, Endpoint, GrpcClient, Outcome, RestConn};
use crate::payload::Body;
use crate::stats::{Stats, intended_offset};
use crate::target::Protocol;
use indicatif::ProgressBar;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// This many callers, each waiting for its answer before sending again.
    Closed(usize),
    /// This many requests per second, whatever the answers.
    Open(f64),
}

#[derive(Clone)]
pub struct Plan {
    pub protocol: Protocol,
    pub endpoint: Arc<Endpoint>,
    pub path: String,
    pub bodies: Arc<Vec<Body>>,
    pub mode: Mode,
    pub connections: usize,
    pub timeout: Duration,
    pub keep_samples: bool,
}

/// What a phase measured.
pub struct Measured {
    pub stats: Stats,
    pub elapsed: Duration,
}

/// One connection of either kind.
enum Conn {
    Rest(RestConn),
    Grpc(GrpcClient),
}

impl Conn {
    async fn send(&mut self, path: &str, body: &Body, timeout: Duration) -> Outcome {
        let call = async {
            match self {
                Conn::Rest(c) => c.infer(path, body).await,
                Conn::Grpc(c) => client::grpc_infer(c, body).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                if let Conn::Rest(c) = self {
                    c.reset();
                }
                Err("timeout".into())
            }
        }
    }
}

async fn connections(plan: &Plan, n: usize) -> Result<Vec<Conn>, String> {
    match plan.protocol {
        Protocol::Grpc => {
            let mut channels = Vec::with_capacity(n);
            for _ in 0..n.max(1) {
                channels.push(client::grpc_load_channel(&plan.endpoint).await?);
            }
            Ok(channels.into_iter().map(Conn::Grpc).collect())
        }
        _ => Ok((0..n.max(1))
            .map(|_| Conn::Rest(RestConn::new(plan.endpoint.clone())))
            .collect()),
    }
}

/// Updates the progress bar until `stop` is dropped.
fn ticker(
    progress: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    start: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(bar) = progress else { return };
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n = done.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            bar.set_position(start.elapsed().as_millis() as u64);
            bar.set_message(format!("{n} requests, {:.0}/s", n as f64 / secs));
        }
    })
}

/// Runs the plan for `duration` (or `limit` requests, whichever comes first).
pub async fn run(
    plan: &Plan,
    duration: Duration,
    limit: Option<u64>,
    progress: Option<ProgressBar>,
) -> Result<Measured, String> {
    match plan.mode {
        Mode::Closed(n) => closed_loop(plan, n, duration, limit, progress).await,
        Mode::Open(rate) => open_loop(plan, rate, duration, limit, progress).await,
    }
}

async fn closed_loop(
    plan: &Plan,
    callers: usize,
    duration: Duration,
    limit: Option<u64>,
    progress: Option<ProgressBar>,
) -> Result<Measured, String> {
    let conns = connections(plan, plan.connections).await?;
    // gRPC callers share channels (HTTP/2 multiplexes); REST callers own a connection each.
    let grpc: Vec<GrpcClient> = conns
        .iter()
        .filter_map(|c| match c {
            Conn::Grpc(g) => Some(g.clone()),
            Conn::Rest(_) => None,
        })
        .collect();
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let tick = ticker(progress, done.clone(), start);
    let mut tasks = Vec::with_capacity(callers);
    for i in 0..callers.max(1) {
        let mut conn = match plan.protocol {
            Protocol::Grpc => Conn::Grpc(grpc[i % grpc.len()].clone()),
            _ => Conn::Rest(RestConn::new(plan.endpoint.clone())),
        };
        let (plan, issued, done) = (plan.clone(), issued.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new(plan.keep_samples);
            let mut k = i;
            loop {
                let now = Instant::now();
                if now >= end || limit.is_some_and(|l| issued.fetch_add(1, Ordering::Relaxed) >= l)
                {
                    break;
                }
                let body = &plan.bodies[k % plan.bodies.len()];
                k += callers;
                let outcome = conn.send(&plan.path, body, plan.timeout).await;
                stats.record(now - start, now.elapsed(), &outcome);
                done.fetch_add(1, Ordering::Relaxed);
            }
            stats
        }));
    }
    let mut stats = Stats::new(plan.keep_samples);
    for t in tasks {
        stats.merge(t.await.map_err(|e| format!("a caller failed: {e}"))?);
    }
    tick.abort();
    Ok(Measured {
        stats,
        elapsed: start.elapsed(),
    })
}

async fn open_loop(
    plan: &Plan,
    rate: f64,
    duration: Duration,
    limit: Option<u64>,
    progress: Option<ProgressBar>,
) -> Result<Measured, String> {
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(format!("--rate must be a positive number, not {rate}"));
    }
    // A pool of connections: a request waits for a free one, and that wait counts in its
    // latency because latency runs from the intended send time.
    let pool: Arc<Mutex<Vec<Conn>>> =
        Arc::new(Mutex::new(connections(plan, plan.connections).await?));
    let permits = Arc::new(Semaphore::new(match plan.protocol {
        Protocol::Grpc => 4096,
        _ => plan.connections.max(1),
    }));
    let grpc: Vec<GrpcClient> = pool
        .lock()
        .map_err(|_| "pool poisoned")?
        .iter()
        .filter_map(|c| match c {
            Conn::Grpc(g) => Some(g.clone()),
            Conn::Rest(_) => None,
        })
        .collect();
    let stats = Arc::new(Mutex::new(Stats::new(plan.keep_samples)));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tick = ticker(progress, done.clone(), start);
    // A dedicated thread paces the arrivals: tokio's timer wheel has 1 ms granularity, which
    // would bunch requests and add up to a millisecond to every latency; thread sleeps are
    // precise to tens of microseconds. Latency still counts from each intended send time.
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Duration)>();
    let pacer = std::thread::spawn(move || {
        let mut k: u64 = 0;
        loop {
            let due = intended_offset(k, rate);
            if due >= duration || limit.is_some_and(|l| k >= l) {
                break;
            }
            let wait = (start + due).saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            if due_tx.send((k, due)).is_err() {
                break;
            }
            k += 1;
        }
    });
    let mut tasks = Vec::new();
    while let Some((k, due)) = due_rx.recv().await {
        let intended = start + due;
        let (plan, pool, permits, stats, done) = (
            plan.clone(),
            pool.clone(),
            permits.clone(),
            stats.clone(),
            done.clone(),
        );
        let grpc_conn = (!grpc.is_empty()).then(|| grpc[k as usize % grpc.len()].clone());
        let body_index = k as usize % plan.bodies.len();
        tasks.push(tokio::spawn(async move {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            let mut conn = match grpc_conn {
                Some(g) => Conn::Grpc(g),
                None => match pool.lock().ok().and_then(|mut p| p.pop()) {
                    Some(c) => c,
                    None => Conn::Rest(RestConn::new(plan.endpoint.clone())),
                },
            };
            let outcome = conn
                .send(&plan.path, &plan.bodies[body_index], plan.timeout)
                .await;
            let latency = intended.elapsed();
            if let Conn::Rest(_) = conn
                && let Ok(mut p) = pool.lock()
            {
                p.push(conn);
            }
            if let Ok(mut s) = stats.lock() {
                s.record(due, latency, &outcome);
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
        // Keep the task list from growing without bound on long runs.
        if tasks.len() >= 4096 {
            tasks.retain(|t| !t.is_finished());
        }
    }
    let _ = pacer.join();
    for t in tasks {
        let _ = t.await;
    }
    tick.abort();
    let elapsed = start.elapsed();
    let stats = Arc::try_unwrap(stats)
        .map_err(|_| "stats still shared".to_string())?
        .into_inner()
        .map_err(|_| "stats poisoned".to_string())?;
    Ok(Measured { stats, elapsed })
}
