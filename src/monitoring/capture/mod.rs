//! Prediction capture: one Parquet record per predicted row, written by one thread behind a
//! bounded queue, so a slow or full disk drops (and counts) records instead of slowing requests.
//!
//! Files land in `DIR/model=M/version=V/date=YYYY-MM-DD/hour=HH/part-<unique>.parquet` (UTC, hive
//! partitions that pyarrow, DuckDB and Spark read as columns), written under a hidden `.tmp` name
//! and renamed once complete, so a reader listing the folder never sees half a file.

mod schema;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// `switchyard_capture_queue_bytes`: tensor bytes of the requests accepted and not yet taken.
pub const CAPTURE_QUEUE_BYTES: &str = "switchyard_capture_queue_bytes";

pub const DEFAULT_QUEUE_ROWS: usize = 65_536;
/// A row can be a whole large request, so rows alone do not bound the queue's memory.
pub const DEFAULT_QUEUE_BYTES: u64 = 256 * 1024 * 1024;
/// The largest `queue_rows` and `queue_bytes`: both are counted in one 64-bit word (see `Queued`).
pub const MAX_QUEUE_ROWS: usize = (1 << ROW_BITS) - 1;
pub const MAX_QUEUE_BYTES: u64 = (1 << BYTE_BITS) - 1;
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
    metrics::describe_gauge!(
        CAPTURE_QUEUE_BYTES,
        metrics::Unit::Bytes,
        "Tensor bytes of the captured requests accepted and waiting for the capture writer."
    );
}

/// Where and how much to capture.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    pub dir: PathBuf,
    /// Rows accepted but not yet taken by the writer; beyond this, requests are dropped.
    pub queue_rows: usize,
    /// Tensor bytes (inputs and outputs) of the requests accepted but not yet taken by the
    /// writer; beyond this, requests are dropped. What bounds the queue's memory.
    pub queue_bytes: u64,
    /// A file is closed and renamed once it passes this size (estimated before compression of
    /// the rows still buffered).
    pub max_file_bytes: u64,
    /// A file is closed and renamed at the latest this long after its first row.
    pub max_file_age: Duration,
}

impl CaptureSettings {
    /// The defaults (64 Ki rows and 256 MiB queued, 64 MiB and 5 minute files) under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            queue_rows: DEFAULT_QUEUE_ROWS,
            queue_bytes: DEFAULT_QUEUE_BYTES,
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
    #[error("capture queue_rows {0} is more than the most it can count ({MAX_QUEUE_ROWS})")]
    QueueRowsTooLarge(usize),
    #[error("capture queue_bytes must be at least 1 (0 would drop every record)")]
    ZeroQueueBytes,
    #[error("capture queue_bytes {0} is more than the most it can count ({MAX_QUEUE_BYTES})")]
    QueueBytesTooLarge(u64),
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
    /// Their tensor bytes.
    pub queued_bytes: u64,
}

const BYTE_BITS: u32 = 40;
const ROW_BITS: u32 = 64 - BYTE_BITS;

/// Rows (high 24 bits) and bytes (low 40 bits) in the queue, in one word so that a request
/// reserves both in one compare-and-swap: never one without the other, and never a lock on the
/// request path. Neither part can carry into the other: each stays within its limit, and both
/// limits fit their bits (checked at start).
struct Queued(AtomicU64);

impl Queued {
    fn pack(rows: usize, bytes: u64) -> u64 {
        ((rows as u64) << BYTE_BITS) | bytes
    }

    fn rows(word: u64) -> usize {
        (word >> BYTE_BITS) as usize
    }

    fn bytes(word: u64) -> u64 {
        word & MAX_QUEUE_BYTES
    }

    /// Adds `rows` and `bytes` if both stay within their limits.
    fn reserve(&self, rows: usize, bytes: u64, max_rows: usize, max_bytes: u64) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let r = Self::rows(word).checked_add(rows)?;
                let b = Self::bytes(word).checked_add(bytes)?;
                (r <= max_rows && b <= max_bytes).then(|| Self::pack(r, b))
            })
            .is_ok()
    }

    /// Gives back exactly what one successful `reserve` took.
    fn release(&self, rows: usize, bytes: u64) {
        self.0.fetch_sub(Self::pack(rows, bytes), Ordering::AcqRel);
    }

    fn load(&self) -> (usize, u64) {
        let word = self.0.load(Ordering::Relaxed);
        (Self::rows(word), Self::bytes(word))
    }
}

/// What `submit` and the writer thread share.
struct Shared {
    queue_rows: usize,
    queue_bytes: u64,
    queued: Queued,
    /// Set by `close`, so that `has_room` says no without taking the sender's lock.
    closed: AtomicBool,
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    drop_log: Mutex<(Option<Instant>, u64)>,
}

impl Shared {
    fn new(queue_rows: usize, queue_bytes: u64) -> Self {
        Self {
            queue_rows,
            queue_bytes,
            queued: Queued(AtomicU64::new(0)),
            closed: AtomicBool::new(false),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            drop_log: Mutex::new((None, 0)),
        }
    }
}

/// A request on its way to the writer, with the rows and bytes it reserved in the queue.
struct Envelope {
    req: CaptureRequest,
    layout: schema::Layout,
    bytes: u64,
}

/// What a request's tensors hold: element count × element size, BYTES by their encoded length.
fn payload_bytes(inputs: &[Tensor], outputs: &[Tensor]) -> u64 {
    inputs
        .iter()
        .chain(outputs)
        .map(|t| t.data.byte_len() as u64)
        .fold(0, u64::saturating_add)
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
        if settings.queue_rows > MAX_QUEUE_ROWS {
            return Err(CaptureError::QueueRowsTooLarge(settings.queue_rows));
        }
        if settings.queue_bytes == 0 {
            return Err(CaptureError::ZeroQueueBytes);
        }
        if settings.queue_bytes > MAX_QUEUE_BYTES {
            return Err(CaptureError::QueueBytesTooLarge(settings.queue_bytes));
        }
        if settings.max_file_bytes == 0 {
            return Err(CaptureError::ZeroFileBytes);
        }
        if settings.max_file_age.is_zero() {
            return Err(CaptureError::ZeroFileAge);
        }
        let shared = Arc::new(Shared::new(settings.queue_rows, settings.queue_bytes));
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
    /// (queue full in rows or bytes, or capture closed) and counted as such.
    pub fn submit(&self, req: CaptureRequest) -> bool {
        let layout = schema::layout(&req.inputs, &req.outputs);
        if layout.rows == 0 {
            return true;
        }
        let bytes = payload_bytes(&req.inputs, &req.outputs);
        let shared = &self.shared;
        if !shared
            .queued
            .reserve(layout.rows, bytes, shared.queue_rows, shared.queue_bytes)
        {
            let why = if bytes > shared.queue_bytes {
                "the request is larger than the whole capture queue (queue_bytes)"
            } else if layout.rows > shared.queue_rows {
                "the request has more rows than the whole capture queue (queue_rows)"
            } else {
                "the capture queue is full"
            };
            self.dropped(req.model.into(), layout.rows as u64, why);
            return false;
        }
        let tx = self.tx.read().unwrap_or_else(|p| p.into_inner());
        let refused = match tx.as_ref() {
            Some(tx) => tx
                .send(Envelope { req, layout, bytes })
                .err()
                .map(|e| e.0.req),
            None => Some(req),
        };
        drop(tx);
        match refused {
            None => true,
            Some(req) => {
                shared.queued.release(layout.rows, bytes);
                self.dropped(req.model.into(), layout.rows as u64, "capture is closed");
                false
            }
        }
    }

    /// Whether `rows` more rows would likely be accepted now: a cheap, unsynchronised look (no
    /// reservation; `submit` still decides), so that the request path can skip copying a
    /// request's tensors when the queue is full or capture closed.
    pub fn has_room(&self, rows: usize) -> bool {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Relaxed) {
            return false;
        }
        let (queued_rows, queued_bytes) = shared.queued.load();
        queued_rows.saturating_add(rows) <= shared.queue_rows && queued_bytes < shared.queue_bytes
    }

    /// Counts `rows` of `model` as dropped without a request: for the request path when
    /// `has_room` said no and it did not copy the request.
    pub fn count_dropped(&self, model: &str, rows: u64) {
        if rows > 0 {
            let why = "the capture queue had no room (full, or capture closed)";
            self.dropped(model.to_owned().into(), rows, why);
        }
    }

    fn dropped(&self, model: metrics::SharedString, rows: u64, why: &str) {
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
                    model = &*model,
                    rows,
                    dropped_since_last_log = earlier,
                    "capture records dropped: {why} (see {CAPTURE_RECORDS})"
                );
            }
        }
    }

    /// Stops accepting, writes and renames everything accepted, and waits for the writer thread.
    /// Safe to call more than once and from several threads: every caller returns after the
    /// writer has finished.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
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
        let (queued_rows, queued_bytes) = self.shared.queued.load();
        CaptureStats {
            written: self.shared.written.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            queued_rows,
            queued_bytes,
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
