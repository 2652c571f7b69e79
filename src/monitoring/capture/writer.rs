//! The capture writer thread: owns every open file, one per partition (model, version, UTC hour),
//! and rolls them by size, age and hour.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_schema::ArrowError;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::schema::BatchBuilder;
use super::{
    CAPTURE_QUEUE_BYTES, CAPTURE_QUEUE_ROWS, CAPTURE_RECORDS, CaptureSettings, Envelope, Shared,
};

/// Rows per record batch handed to the Parquet writer (and bytes, for wide rows).
/// Every open partition (model, version, hour: several per version around an hour's end, more
/// with rollouts) holds up to one batch plus one row group in memory, so both stay modest: with
/// 8 MiB row groups and 1 MiB batches, twenty open partitions hold under 200 MiB, where 32 MiB
/// row groups and 8 MiB batches held 800 MiB. 8 MiB is still a large sequential read.
pub(super) const BATCH_ROWS: usize = 1024;
pub(super) const BATCH_BYTES: usize = 1024 * 1024;
/// Row groups: what a reader can skip by, and what an open file holds in memory at most.
pub(super) const ROW_GROUP_ROWS: usize = 64 * 1024;
pub(super) const ROW_GROUP_BYTES: usize = 8 * 1024 * 1024;
/// A hidden `.part-*.parquet.tmp` file untouched this long belongs to no live writer: a live
/// file is renamed at the latest when its hour ends (or its age passes, whichever is first), so
/// even in a folder shared with other processes only a crashed process leaves one this old.
pub(super) const STALE_TMP_AGE: Duration = Duration::from_secs(2 * 3600);
/// How long the writer naps between draining the queue while records keep coming: the most a
/// busy queue holds beyond what the writer can take, and at most one wake-up per nap.
const NAP: Duration = Duration::from_millis(5);
/// How often files are checked for age and the hour's end when no record arrives.
const TICK: Duration = Duration::from_secs(1);
/// How often a write error may be logged; the rows failed in between are counted in the next line.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);
const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// Model names are checked by the registry (`[A-Za-z0-9_.-]`); anything else is encoded as the
/// hive partition readers decode it, so a name can never climb out of its folder.
const PATH_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'.').remove(b'-');

/// Files of all captures in this process: part of every file name, with the start time and pid.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a file could not be written; its rows count as failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("cannot create capture folder {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create capture file {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write capture file {}: {source}", path.display())]
    Parquet { path: PathBuf, source: ParquetError },
    #[error("cannot sync capture file {}: {source}", path.display())]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot rename capture file {} to {}: {source}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build a capture record batch: {0}")]
    Batch(#[from] ArrowError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PartitionKey {
    model: Arc<str>,
    version: u64,
    /// Hours since the Unix epoch (UTC).
    hour: i64,
}

/// A partition's rows not yet in a renamed file.
struct Partition {
    builder: BatchBuilder,
    file: Option<OpenFile>,
    /// Rows already handed to `file`'s writer.
    file_rows: u64,
    /// `file`'s size after its last batch (written plus the row group in progress).
    file_bytes: u64,
    /// When the first row not yet in a renamed file arrived; `None` when there is none.
    first_row: Option<Instant>,
}

struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl OpenFile {
    /// Footer, fsync, rename: after this a reader sees the whole file or, before it, nothing.
    /// On any error the hidden file is removed (best effort): its rows count as failed anyway,
    /// and nothing else would ever clean it up.
    fn finish(self) -> Result<(), WriteError> {
        let tmp = self.tmp.clone();
        let result = self.finish_and_rename();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn finish_and_rename(mut self) -> Result<(), WriteError> {
        self.writer.finish().map_err(|source| WriteError::Parquet {
            path: self.tmp.clone(),
            source,
        })?;
        self.writer
            .inner()
            .sync_all()
            .map_err(|source| WriteError::Sync {
                path: self.tmp.clone(),
                source,
            })?;
        drop(self.writer);
        fs::rename(&self.tmp, &self.dest).map_err(|source| WriteError::Rename {
            from: self.tmp.clone(),
            to: self.dest.clone(),
            source,
        })?;
        // Makes the rename itself durable; the data is already synced, so a failure here only
        // risks the name after a power cut and is not worth failing the rows for.
        if let Some(dir) = self.dest.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Best effort: a file that failed is removed so no hidden leftovers pile up.
    fn discard(self) {
        let tmp = self.tmp;
        drop(self.writer);
        let _ = fs::remove_file(tmp);
    }
}

/// Lets one error line through per interval and counts the rows failed in between.
struct ErrorLog {
    last: Option<Instant>,
    held_rows: u64,
}

impl ErrorLog {
    fn report(&mut self, model: &str, rows: u64, error: &dyn fmt::Display) {
        let now = Instant::now();
        match self.last {
            Some(t) if now.saturating_duration_since(t) < ERROR_LOG_EVERY => {
                self.held_rows += rows;
            }
            _ => {
                self.last = Some(now);
                let earlier = std::mem::take(&mut self.held_rows);
                tracing::error!(
                    model, rows, failed_since_last_log = earlier, %error,
                    "captured rows could not be written (see {CAPTURE_RECORDS}); \
                     the capture writer goes on with the next file"
                );
            }
        }
    }
}

/// How the files are encoded. The writer thread shares the serving cores, so encoding is kept
/// cheap: dictionaries only where values repeat (`variant`; captured tensors, times, latencies
/// and row numbers are mostly distinct, so a dictionary is hashing for nothing), and min/max
/// statistics per column chunk rather than per page (no page index: readers of a capture scan
/// whole row groups, and chunk statistics still let them skip by time).
fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("variant"), true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .build()
}

/// Everything but the partitions, so a partition can be worked on while it is borrowed.
struct Files {
    settings: CaptureSettings,
    shared: Arc<Shared>,
    /// `<start time in ns>-<pid>`, the prefix of every file name.
    unique: String,
    errors: ErrorLog,
    mismatch_log: Option<Instant>,
    properties: WriterProperties,
}

pub(super) struct Writer {
    files: Files,
    partitions: HashMap<PartitionKey, Partition>,
    #[cfg(test)]
    hooks: Hooks,
}

impl Writer {
    pub(super) fn new(
        settings: CaptureSettings,
        shared: Arc<Shared>,
        #[cfg(test)] hooks: Hooks,
    ) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let properties = writer_properties();
        Self {
            files: Files {
                settings,
                shared,
                unique: format!("{started}-{}", std::process::id()),
                errors: ErrorLog {
                    last: None,
                    held_rows: 0,
                },
                mismatch_log: None,
                properties,
            },
            partitions: HashMap::new(),
            #[cfg(test)]
            hooks,
        }
    }

    /// The thread's body: until every sender is gone, then everything buffered is written.
    pub(super) fn run(mut self, rx: Receiver<Envelope>) {
        #[cfg(test)]
        if let Some(recorder) = self.hooks.recorder.clone() {
            return metrics::with_local_recorder(&*recorder, || self.run_loop(rx));
        }
        self.run_loop(rx)
    }

    fn run_loop(&mut self, rx: Receiver<Envelope>) {
        let queue_rows = metrics::gauge!(CAPTURE_QUEUE_ROWS);
        let queue_bytes = metrics::gauge!(CAPTURE_QUEUE_BYTES);
        let dir = &self.files.settings.dir;
        if let Err(e) = fs::create_dir_all(dir) {
            tracing::error!(
                dir = %dir.display(), error = %e,
                "cannot create the capture folder; captured rows count as failed until it can be"
            );
        }
        let removed = sweep_stale(dir, SystemTime::now());
        if removed > 0 {
            tracing::info!(
                dir = %dir.display(), removed,
                "removed hidden capture files that a stopped process never finished"
            );
        }
        let tick = TICK.min(self.files.settings.max_file_age);
        let mut next_tick = Instant::now() + tick;
        // Whether a record came since the last nap: then more are likely, and the thread naps
        // instead of blocking on the queue, so that a busy server's submits never have to wake
        // it (a futex call on the request path and a context switch here, which cost more than
        // encoding the record). Idle, it blocks, and costs nothing until the next request.
        let mut busy = false;
        loop {
            #[cfg(test)]
            self.hooks.wait_for_gate();
            let now = Instant::now();
            if now >= next_tick {
                let (rows, bytes) = self.files.shared.queued.load();
                queue_rows.set(rows as f64);
                queue_bytes.set(bytes as f64);
                self.maintain(now, hour_of(micros(SystemTime::now())));
                next_tick = now + tick;
            }
            let wait = next_tick.saturating_duration_since(now);
            let received = if busy {
                match rx.try_recv() {
                    Ok(envelope) => Ok(envelope),
                    Err(TryRecvError::Empty) => {
                        busy = false;
                        std::thread::sleep(NAP.min(wait));
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                rx.recv_timeout(wait)
            };
            match received {
                Ok(envelope) => {
                    busy = true;
                    let shared = &self.files.shared;
                    shared.queued.release(envelope.layout.rows, envelope.bytes);
                    self.record(envelope);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for (key, part) in self.partitions.iter_mut() {
            self.files.roll(key, part);
        }
        self.partitions.clear();
        queue_rows.set(0.0);
        queue_bytes.set(0.0);
    }

    pub(super) fn record(&mut self, Envelope { req, layout, .. }: Envelope) {
        let time_us = micros(req.time);
        let key = PartitionKey {
            model: req.model.clone(),
            version: req.version,
            hour: hour_of(time_us),
        };
        let files = &mut self.files;
        let part = self
            .partitions
            .entry(key.clone())
            .or_insert_with(|| Partition {
                builder: BatchBuilder::new(req.schema.clone()),
                file: None,
                file_rows: 0,
                file_bytes: 0,
                first_row: None,
            });
        if !Arc::ptr_eq(part.builder.schema(), &req.schema)
            && **part.builder.schema() != *req.schema
        {
            // The version was reloaded with another signature: its rows start a new file.
            files.roll(&key, part);
            part.builder = BatchBuilder::new(req.schema.clone());
        }
        part.first_row.get_or_insert_with(Instant::now);
        let mismatches = part.builder.push(&req, layout, time_us);
        if mismatches > 0 {
            files.report_mismatch(&key, mismatches);
        }
        if part.builder.rows() >= BATCH_ROWS || part.builder.bytes() >= BATCH_BYTES {
            files.write_batch(&key, part);
        }
        let size = part.file_bytes + part.builder.bytes() as u64;
        if size >= files.settings.max_file_bytes {
            files.roll(&key, part);
        }
    }

    /// Rolls files past their age or whose hour has ended, and forgets partitions left empty.
    pub(super) fn maintain(&mut self, now: Instant, hour_now: i64) {
        let files = &mut self.files;
        let max_age = files.settings.max_file_age;
        self.partitions.retain(|key, part| {
            let old = part
                .first_row
                .is_some_and(|t| now.saturating_duration_since(t) >= max_age);
            if old || key.hour < hour_now {
                files.roll(key, part);
            }
            part.first_row.is_some()
        });
    }
}

impl Files {
    /// Writes the buffered rows and closes the file, renaming it into view.
    fn roll(&mut self, key: &PartitionKey, part: &mut Partition) {
        self.write_batch(key, part);
        part.first_row = None;
        part.file_bytes = 0;
        let rows = std::mem::take(&mut part.file_rows);
        let Some(file) = part.file.take() else {
            return;
        };
        match file.finish() {
            Ok(()) => self.count(key, rows, "written"),
            Err(e) => self.fail(key, rows, &e),
        }
    }

    /// Hands the buffered rows to the partition's file, opening one if needed. When the file
    /// fails, it is discarded with every row in it and the next batch starts a new one.
    fn write_batch(&mut self, key: &PartitionKey, part: &mut Partition) {
        let rows = part.builder.rows() as u64;
        if rows == 0 {
            return;
        }
        let batch = match part.builder.finish() {
            Ok(batch) => batch,
            Err(e) => {
                part.builder = BatchBuilder::new(part.builder.schema().clone());
                self.fail(key, rows, &WriteError::Batch(e));
                return;
            }
        };
        if part.file.is_none() {
            match self.open(key, part.builder.schema().arrow_schema()) {
                Ok(file) => part.file = Some(file),
                Err(e) => {
                    self.fail(key, rows, &e);
                    return;
                }
            }
        }
        let Some(file) = part.file.as_mut() else {
            return;
        };
        match file.writer.write(&batch) {
            Ok(()) => {
                part.file_rows += rows;
                let size = file.writer.bytes_written() + file.writer.in_progress_size();
                part.file_bytes = size as u64;
            }
            Err(source) => {
                let lost = rows + std::mem::take(&mut part.file_rows);
                part.file_bytes = 0;
                let e = WriteError::Parquet {
                    path: file.tmp.clone(),
                    source,
                };
                if let Some(file) = part.file.take() {
                    file.discard();
                }
                self.fail(key, lost, &e);
            }
        }
    }

    fn open(
        &self,
        key: &PartitionKey,
        schema: &arrow_schema::SchemaRef,
    ) -> Result<OpenFile, WriteError> {
        let dir = partition_dir(&self.settings.dir, key);
        fs::create_dir_all(&dir).map_err(|source| WriteError::Folder {
            path: dir.clone(),
            source,
        })?;
        let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("part-{}-{n:06}.parquet", self.unique);
        let tmp = dir.join(format!(".{name}.tmp"));
        let dest = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|source| WriteError::Create {
                path: tmp.clone(),
                source,
            })?;
        match ArrowWriter::try_new(file, schema.clone(), Some(self.properties.clone())) {
            Ok(writer) => Ok(OpenFile { writer, tmp, dest }),
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                Err(WriteError::Parquet { path: tmp, source })
            }
        }
    }

    fn count(&self, key: &PartitionKey, rows: u64, outcome: &'static str) {
        let total = match outcome {
            "written" => &self.shared.written,
            _ => &self.shared.failed,
        };
        total.fetch_add(rows, Ordering::Relaxed);
        metrics::counter!(CAPTURE_RECORDS, "model" => key.model.clone(), "outcome" => outcome)
            .increment(rows);
    }

    fn fail(&mut self, key: &PartitionKey, rows: u64, error: &WriteError) {
        self.count(key, rows, "failed");
        self.errors.report(&key.model, rows, error);
    }

    fn report_mismatch(&mut self, key: &PartitionKey, values: usize) {
        let now = Instant::now();
        if self
            .mismatch_log
            .is_some_and(|t| now.saturating_duration_since(t) < ERROR_LOG_EVERY)
        {
            return;
        }
        self.mismatch_log = Some(now);
        tracing::warn!(
            model = %key.model, version = key.version, values,
            "captured tensors did not match the version's signature (datatype) or were too \
             large for one batch; they are stored as null"
        );
    }
}

/// Removes the hidden `.part-*.parquet.tmp` files under `root`'s partition folders that were
/// last modified at least `STALE_TMP_AGE` before `now`; returns how many. Only the
/// `model=/version=/date=/hour=` tree is walked, links are not followed, and nothing else is
/// touched, so a wrong `--capture-dir` cannot lose anyone's files.
pub(super) fn sweep_stale(root: &Path, now: SystemTime) -> usize {
    const LEVELS: [&str; 4] = ["model=", "version=", "date=", "hour="];
    fn entries(dir: &Path) -> impl Iterator<Item = fs::DirEntry> {
        fs::read_dir(dir).into_iter().flatten().flatten()
    }
    fn walk(dir: &Path, level: usize, now: SystemTime, removed: &mut usize) {
        for entry in entries(dir) {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            match LEVELS.get(level) {
                Some(prefix) => {
                    if kind.is_dir() && name.starts_with(prefix) {
                        walk(&entry.path(), level + 1, now, removed);
                    }
                }
                None => {
                    let hidden_part = name.starts_with(".part-") && name.ends_with(".parquet.tmp");
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age >= STALE_TMP_AGE));
                    if kind.is_file() && hidden_part && stale {
                        match fs::remove_file(entry.path()) {
                            Ok(()) => *removed += 1,
                            Err(e) => tracing::warn!(
                                file = %entry.path().display(), error = %e,
                                "cannot remove a stale hidden capture file"
                            ),
                        }
                    }
                }
            }
        }
    }
    let mut removed = 0;
    walk(root, 0, now, &mut removed);
    removed
}

/// `DIR/model=M/version=V/date=YYYY-MM-DD/hour=HH`.
fn partition_dir(root: &Path, key: &PartitionKey) -> PathBuf {
    let ts = jiff::Timestamp::from_second(key.hour.saturating_mul(3600))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let t = jiff::tz::Offset::UTC.to_datetime(ts);
    root.join(format!(
        "model={}",
        utf8_percent_encode(&key.model, PATH_SAFE)
    ))
    .join(format!("version={}", key.version))
    .join(format!(
        "date={:04}-{:02}-{:02}",
        t.year(),
        t.month(),
        t.day()
    ))
    .join(format!("hour={:02}", t.hour()))
}

/// Microseconds since the Unix epoch (negative before it), as the `time` column stores them.
pub(super) fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

pub(super) fn hour_of(micros: i64) -> i64 {
    micros.div_euclid(MICROS_PER_HOUR)
}

/// Test-only controls of the writer thread.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Hooks {
    /// While closed, the writer takes nothing from the queue (a stalled disk, deterministically).
    pub gate: Option<Arc<Gate>>,
    /// Where the writer thread records its metrics instead of the global recorder.
    pub recorder: Option<Arc<dyn metrics::Recorder + Send + Sync>>,
}

#[cfg(test)]
impl Hooks {
    fn wait_for_gate(&self) {
        if let Some(gate) = &self.gate {
            gate.wait();
        }
    }
}

#[cfg(test)]
#[derive(Default)]
pub(super) struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

#[cfg(test)]
impl Gate {
    pub(super) fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_folders_are_hive_style_in_utc_and_names_cannot_escape() {
        // 2024-03-05T07:30:00Z
        let us = 1_709_623_800_i64 * 1_000_000;
        let key = PartitionKey {
            model: Arc::from("iris"),
            version: 3,
            hour: hour_of(us),
        };
        assert_eq!(
            partition_dir(Path::new("/c"), &key),
            Path::new("/c/model=iris/version=3/date=2024-03-05/hour=07")
        );
        let odd = PartitionKey {
            model: Arc::from("../a b/c=d"),
            ..key
        };
        assert_eq!(
            partition_dir(Path::new("/c"), &odd),
            Path::new("/c/model=..%2Fa%20b%2Fc%3Dd/version=3/date=2024-03-05/hour=07")
        );
    }

    #[test]
    fn times_before_the_epoch_fall_in_the_hour_before() {
        let before = UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(micros(before), -1);
        assert_eq!(hour_of(-1), -1);
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(MICROS_PER_HOUR - 1), 0);
    }
}
