//! Prediction capture: one Parquet record per predicted row, written by one thread behind a
//! bounded queue, so a slow or full disk drops (and counts) records instead of slowing requests.
//!
//! Files land in `DIR/model=M/version=V/date=YYYY-MM-DD/hour=HH/part-<unique>.parquet` (UTC, hive
//! partitions that pyarrow, DuckDB and Spark read as columns), written under a hidden `.tmp` name
//! and renamed once complete, so a reader listing the folder never sees half a file.

mod schema;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

pub use schema::CaptureSchema;

use crate::core::tensor::Tensor;

/// `switchyard_capture_records_total{model,outcome}`: outcome written, dropped or failed.
pub const CAPTURE_RECORDS: &str = "switchyard_capture_records_total";
/// `switchyard_capture_queue_rows`: rows accepted and not yet taken by the writer.
pub const CAPTURE_QUEUE_ROWS: &str = "switchyard_capture_queue_rows";

pub const DEFAULT_QUEUE_ROWS: usize = 65_536;
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_FILE_AGE: Duration = Duration::from_secs(5 * 60);

/// How often a full queue may be logged; drops in between are counted in the next line.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Describes the capture metrics (the lead calls this when installing the recorder).
pub fn describe() {
    metrics::describe_counter!(
        CAPTURE_RECORDS,
        "Captured prediction rows by model and outcome: written (in a renamed Parquet file), \
         dropped (the capture queue was full) or failed (the file could not be written)."
    );
    metrics::describe_gauge!(
        CAPTURE_QUEUE_ROWS,
        "Captured rows accepted and waiting for the capture writer."
    );
}

/// Where and how much to capture.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    pub dir: PathBuf,
    /// Rows accepted but not yet taken by the writer; beyond this, requests are dropped.
    pub queue_rows: usize,
    /// A file is closed and renamed once it passes this size (estimated before compression of
    /// the rows still buffered).
    pub max_file_bytes: u64,
    /// A file is closed and renamed at the latest this long after its first row.
    pub max_file_age: Duration,
}

impl CaptureSettings {
    /// The defaults (64 Ki rows queued, 64 MiB and 5 minute files) under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            queue_rows: DEFAULT_QUEUE_ROWS,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_file_age: DEFAULT_MAX_FILE_AGE,
        }
    }
}

/// One finished request to capture. `inputs` and `outputs` are matched to the schema by name;
/// an output the caller did not ask for is absent here and null in the file.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    /// When the request arrived.
    pub time: SystemTime,
    pub request_id: Option<String>,
    pub model: Arc<str>,
    pub version: u64,
    /// "stable" or "candidate" during a rollout.
    pub variant: Option<&'static str>,
    pub latency: Duration,
    pub schema: Arc<CaptureSchema>,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture queue_rows must be at least 1 (0 would drop every record)")]
    ZeroQueue,
    #[error("capture max_file_bytes must be at least 1")]
    ZeroFileBytes,
    #[error("capture max_file_age must be longer than zero")]
    ZeroFileAge,
    #[error("cannot start the capture writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Totals since start, as counted in `switchyard_capture_records_total` (all models together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub written: u64,
    pub dropped: u64,
    pub failed: u64,
    /// Rows accepted and not yet taken by the writer.
    pub queued_rows: usize,
}

/// What `submit` and the writer thread share.
struct Shared {
    queue_rows: usize,
    queued: AtomicUsize,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    drop_log: Mutex<(Option<Instant>, u64)>,
}

impl Shared {
    fn new(queue_rows: usize) -> Self {
        Self {
            queue_rows,
            queued: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            drop_log: Mutex::new((None, 0)),
        }
    }
}

/// A request on its way to the writer, with the rows it reserved in the queue.
struct Envelope {
    req: CaptureRequest,
    layout: schema::Layout,
}

/// The capture queue and its writer thread ("sy-capture").
pub struct Capture {
    shared: Arc<Shared>,
    /// `None` once closed: dropping the only sender is what tells the writer to finish.
    tx: RwLock<Option<Sender<Envelope>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Capture {
    /// Starts the writer thread. A folder that cannot be created is logged, not fatal: its
    /// records count as failed until it can be.
    pub fn start(settings: CaptureSettings) -> Result<Capture, CaptureError> {
        Self::start_with(
            settings,
            #[cfg(test)]
            writer::Hooks::default(),
        )
    }

    fn start_with(
        settings: CaptureSettings,
        #[cfg(test)] hooks: writer::Hooks,
    ) -> Result<Capture, CaptureError> {
        if settings.queue_rows == 0 {
            return Err(CaptureError::ZeroQueue);
        }
        if settings.max_file_bytes == 0 {
            return Err(CaptureError::ZeroFileBytes);
        }
        if settings.max_file_age.is_zero() {
            return Err(CaptureError::ZeroFileAge);
        }
        let shared = Arc::new(Shared::new(settings.queue_rows));
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = writer::Writer::new(
            settings,
            shared.clone(),
            #[cfg(test)]
            hooks,
        );
        let thread = std::thread::Builder::new()
            .name("sy-capture".into())
            .spawn(move || writer.run(rx))
            .map_err(CaptureError::Spawn)?;
        Ok(Capture {
            shared,
            tx: RwLock::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a request's rows for writing. Never blocks: false means the rows were dropped
    /// (queue full, or capture closed) and counted as such.
    pub fn submit(&self, req: CaptureRequest) -> bool {
        let layout = schema::layout(&req.inputs, &req.outputs);
        if layout.rows == 0 {
            return true;
        }
        let reserved = self
            .shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued
                    .checked_add(layout.rows)
                    .filter(|&total| total <= self.shared.queue_rows)
            })
            .is_ok();
        if !reserved {
            self.dropped(&req.model, layout.rows, "the capture queue is full");
            return false;
        }
        let tx = self.tx.read().unwrap_or_else(|p| p.into_inner());
        let refused = match tx.as_ref() {
            Some(tx) => tx.send(Envelope { req, layout }).err().map(|e| e.0.req),
            None => Some(req),
        };
        drop(tx);
        match refused {
            None => true,
            Some(req) => {
                self.shared.queued.fetch_sub(layout.rows, Ordering::AcqRel);
                self.dropped(&req.model, layout.rows, "capture is closed");
                false
            }
        }
    }

    fn dropped(&self, model: &Arc<str>, rows: usize, why: &str) {
        let rows = rows as u64;
        self.shared.dropped.fetch_add(rows, Ordering::Relaxed);
        metrics::counter!(CAPTURE_RECORDS, "model" => model.clone(), "outcome" => "dropped")
            .increment(rows);
        let mut log = self
            .shared
            .drop_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (last, held) = &mut *log;
        let now = Instant::now();
        match last {
            Some(t) if now.saturating_duration_since(*t) < DROP_LOG_EVERY => *held += rows,
            _ => {
                *last = Some(now);
                let earlier = std::mem::take(held);
                tracing::warn!(
                    model = %model, rows, dropped_since_last_log = earlier,
                    "capture records dropped: {why} (see {CAPTURE_RECORDS})"
                );
            }
        }
    }

    /// Stops accepting, writes and renames everything accepted, and waits for the writer thread.
    /// Safe to call more than once and from several threads: every caller returns after the
    /// writer has finished.
    pub fn close(&self) {
        let tx = self.tx.write().unwrap_or_else(|p| p.into_inner()).take();
        drop(tx);
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = thread.take()
            && handle.join().is_err()
        {
            tracing::error!("the capture writer thread panicked; records it held are lost");
        }
    }

    /// Totals since start.
    pub fn stats(&self) -> CaptureStats {
        CaptureStats {
            written: self.shared.written.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            queued_rows: self.shared.queued.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
