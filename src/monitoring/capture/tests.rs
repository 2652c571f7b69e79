//! Capture end to end: requests in, Parquet files read back with the parquet crate's reader.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int64Type, TimestampMicrosecondType, UInt8Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ListArray, RecordBatch, StructArray};
use half::f16;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::schema::{Layout, layout};
use super::writer::{Gate, Hooks};
use super::*;
use crate::core::signature::{Signature, TensorSpec};
use crate::core::tensor::{ByteStrings, DataType, Tensor, TensorData};

/// Counters by `name{label=value,...}` (labels sorted), for checking exact metric names.
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl TestRecorder {
    fn get(&self, id: &str) -> u64 {
        let counters = self.counters.lock().unwrap();
        counters
            .get(id)
            .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let id = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(counters.entry(id).or_default().clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
    }
}

/// The iris classifier's signature: 4 features in, a label and 3 probabilities out.
fn iris() -> Arc<CaptureSchema> {
    let signature = Signature::new(
        vec![spec("X", DataType::Fp32, &[-1, 4])],
        vec![
            spec("label", DataType::Int64, &[-1]),
            spec("probabilities", DataType::Fp32, &[-1, 3]),
        ],
    )
    .unwrap();
    CaptureSchema::new(&signature)
}

/// 2024-03-05T07:30:00Z plus `secs`.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_709_623_800 + secs)
}

fn feature(req: usize, row: usize, col: usize) -> f32 {
    (req * 100 + row * 10 + col) as f32 + 0.5
}

/// Request `i` with `rows` rows; `probabilities` only when asked.
fn iris_request(schema: &Arc<CaptureSchema>, i: usize, rows: usize, probs: bool) -> CaptureRequest {
    let x: Vec<f32> = (0..rows)
        .flat_map(|r| (0..4).map(move |c| feature(i, r, c)))
        .collect();
    let mut outputs = vec![Tensor::new(
        "label",
        vec![rows as i64],
        TensorData::Int64((0..rows).map(|r| (i + r) as i64 % 3).collect()),
    )];
    if probs {
        outputs.push(Tensor::new(
            "probabilities",
            vec![rows as i64, 3],
            TensorData::Fp32(
                (0..rows)
                    .flat_map(|r| (0..3).map(move |c| (i * 10 + r * 3 + c) as f32 / 100.0))
                    .collect(),
            ),
        ));
    }
    CaptureRequest {
        time: at(i as u64),
        request_id: i.is_multiple_of(2).then(|| format!("req-{i}")),
        model: Arc::from("iris"),
        version: 2,
        variant: i.is_multiple_of(3).then_some("candidate"),
        latency: Duration::from_micros(1000 + i as u64),
        schema: schema.clone(),
        inputs: vec![Tensor::new("X", vec![rows as i64, 4], TensorData::Fp32(x))],
        outputs,
    }
}

fn settings(dir: &Path) -> CaptureSettings {
    CaptureSettings::new(dir)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

fn read(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn read_all(dir: &Path) -> Vec<RecordBatch> {
    files(dir).iter().flat_map(|p| read(p)).collect()
}

fn list<'a>(batch: &'a RecordBatch, side: &str, name: &str) -> &'a ListArray {
    let side: &StructArray = batch.column_by_name(side).unwrap().as_struct();
    side.column_by_name(name).unwrap().as_list::<i32>()
}

/// Row `i` of a list column as `T`'s values, `None` when null.
fn values<T: arrow_array::ArrowPrimitiveType>(
    list: &ListArray,
    i: usize,
) -> Option<Vec<T::Native>> {
    (!list.is_null(i)).then(|| list.value(i).as_primitive::<T>().values().to_vec())
}

#[test]
fn every_captured_value_reads_back_from_its_hive_partition() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let capture = Capture::start(settings(dir.path())).unwrap();
    let sizes = [1usize, 3, 2, 1, 4];
    for (i, &rows) in sizes.iter().enumerate() {
        assert!(capture.submit(iris_request(&schema, i, rows, i != 1)));
    }
    capture.close();
    assert_eq!(
        capture.stats(),
        CaptureStats {
            written: 11,
            dropped: 0,
            failed: 0,
            queued_rows: 0,
            queued_bytes: 0,
        }
    );

    let all = files(dir.path());
    assert_eq!(all.len(), 1, "{all:?}");
    let rel = all[0].strip_prefix(dir.path()).unwrap();
    let folder = rel.parent().unwrap();
    assert_eq!(
        folder,
        Path::new("model=iris/version=2/date=2024-03-05/hour=07")
    );
    let name = rel.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("part-") && name.ends_with(".parquet"),
        "{name}"
    );

    let batches = read(&all[0]);
    let mut seen = Vec::new();
    for batch in &batches {
        let time = batch
            .column_by_name("time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let request_id = batch
            .column_by_name("request_id")
            .unwrap()
            .as_string::<i32>();
        let row = batch
            .column_by_name("row")
            .unwrap()
            .as_primitive::<UInt32Type>();
        let variant = batch.column_by_name("variant").unwrap().as_string::<i32>();
        let latency = batch
            .column_by_name("latency_us")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let x = list(batch, "inputs", "X");
        let label = list(batch, "outputs", "label");
        let probs = list(batch, "outputs", "probabilities");
        for k in 0..batch.num_rows() {
            // The request is recovered from its latency (1000 + i µs).
            let i = (latency.value(k) - 1000) as usize;
            let r = row.value(k) as usize;
            assert_eq!(
                time.value(k),
                (1_709_623_800 + i as i64) * 1_000_000,
                "time of request {i}"
            );
            let want_id = i.is_multiple_of(2).then(|| format!("req-{i}"));
            assert_eq!(
                (!request_id.is_null(k)).then(|| request_id.value(k).to_string()),
                want_id
            );
            let want_variant = i.is_multiple_of(3).then_some("candidate");
            assert_eq!(
                (!variant.is_null(k)).then(|| variant.value(k)),
                want_variant
            );
            assert_eq!(
                values::<Float32Type>(x, k).unwrap(),
                (0..4).map(|c| feature(i, r, c)).collect::<Vec<_>>()
            );
            assert_eq!(
                values::<Int64Type>(label, k).unwrap(),
                vec![(i + r) as i64 % 3]
            );
            let want_probs = (i != 1).then(|| {
                (0..3)
                    .map(|c| (i * 10 + r * 3 + c) as f32 / 100.0)
                    .collect::<Vec<_>>()
            });
            assert_eq!(values::<Float32Type>(probs, k), want_probs);
            seen.push((i, r));
        }
    }
    seen.sort();
    let want: Vec<(usize, usize)> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| (0..n).map(move |r| (i, r)))
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn every_datatype_maps_to_its_arrow_type_and_fp16_widens_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let signature = Signature::new(
        vec![
            spec("b", DataType::Bool, &[-1, 2]),
            spec("u8", DataType::Uint8, &[-1, 1]),
            spec("i16", DataType::Int16, &[-1, 1]),
            spec("h", DataType::Fp16, &[-1, 1]),
            spec("d", DataType::Fp64, &[-1, 1]),
            spec("s", DataType::Bytes, &[-1]),
        ],
        vec![],
    )
    .unwrap();
    let schema = CaptureSchema::new(&signature);
    assert!(schema.arrow_schema().field_with_name("outputs").is_err());
    let capture = Capture::start(settings(dir.path())).unwrap();
    let req = CaptureRequest {
        time: at(0),
        request_id: None,
        model: Arc::from("types"),
        version: 1,
        variant: None,
        latency: Duration::ZERO,
        schema,
        inputs: vec![
            Tensor::new(
                "b",
                vec![2, 2],
                TensorData::Bool(vec![true, false, false, true]),
            ),
            Tensor::new("u8", vec![2, 1], TensorData::Uint8(vec![7, 255])),
            Tensor::new("i16", vec![2, 1], TensorData::Int16(vec![-3, 300])),
            Tensor::new(
                "h",
                vec![2, 1],
                TensorData::Fp16(vec![f16::from_f32(0.1), f16::from_f32(-2.5)]),
            ),
            Tensor::new("d", vec![2, 1], TensorData::Fp64(vec![1e300, -0.25])),
            Tensor::new(
                "s",
                vec![2],
                TensorData::Bytes(ByteStrings::from_items(["héllo", ""]).unwrap()),
            ),
        ],
        outputs: vec![],
    };
    assert!(capture.submit(req));
    capture.close();
    let batches = read_all(dir.path());
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 2);
    let b = list(batch, "inputs", "b");
    assert_eq!(
        b.value(1).as_boolean().iter().collect::<Vec<_>>(),
        vec![Some(false), Some(true)]
    );
    assert_eq!(
        values::<UInt8Type>(list(batch, "inputs", "u8"), 1),
        Some(vec![255])
    );
    assert_eq!(
        values::<Int16Type>(list(batch, "inputs", "i16"), 0),
        Some(vec![-3])
    );
    assert_eq!(
        values::<Float32Type>(list(batch, "inputs", "h"), 0),
        Some(vec![f16::from_f32(0.1).to_f32()])
    );
    assert_eq!(
        values::<Float64Type>(list(batch, "inputs", "d"), 0),
        Some(vec![1e300])
    );
    let s = list(batch, "inputs", "s");
    let first = s.value(0);
    assert_eq!(first.as_binary::<i32>().value(0), "héllo".as_bytes());
    let second = s.value(1);
    assert_eq!(second.as_binary::<i32>().value(0), b"");
}

#[test]
fn a_tensor_of_the_wrong_datatype_is_stored_as_null_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let capture = Capture::start(settings(dir.path())).unwrap();
    let mut req = iris_request(&schema, 0, 2, true);
    req.outputs[0].data = TensorData::Int32(vec![1, 2]);
    assert!(capture.submit(req));
    capture.close();
    let batches = read_all(dir.path());
    let batch = &batches[0];
    let label = list(batch, "outputs", "label");
    assert!(label.is_null(0) && label.is_null(1));
    assert_eq!(
        values::<Float32Type>(list(batch, "inputs", "X"), 1).unwrap(),
        (0..4).map(|c| feature(0, 1, c)).collect::<Vec<_>>()
    );
}

#[test]
fn no_hidden_file_remains_and_a_roll_by_size_gives_one_file_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let mut s = settings(dir.path());
    s.max_file_bytes = 1;
    let capture = Capture::start(s).unwrap();
    for i in 0..4 {
        assert!(capture.submit(iris_request(&schema, i, 2, true)));
    }
    capture.close();
    let all = files(dir.path());
    assert_eq!(all.len(), 4, "{all:?}");
    for path in &all {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(!name.starts_with('.'), "hidden file left: {name}");
        assert_eq!(
            read(path).iter().map(RecordBatch::num_rows).sum::<usize>(),
            2
        );
    }
    assert_eq!(capture.stats().written, 8);
}

#[test]
fn requests_in_different_hours_and_versions_land_in_their_own_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let capture = Capture::start(settings(dir.path())).unwrap();
    let mut late = iris_request(&schema, 0, 1, true);
    late.time = at(45 * 60); // 08:15
    let mut other = iris_request(&schema, 1, 1, true);
    other.version = 3;
    other.model = Arc::from("iris-b");
    assert!(capture.submit(iris_request(&schema, 2, 1, true)));
    assert!(capture.submit(late));
    assert!(capture.submit(other));
    capture.close();
    let folders: Vec<PathBuf> = files(dir.path())
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .strip_prefix(dir.path())
                .unwrap()
                .to_path_buf()
        })
        .collect();
    assert_eq!(
        folders,
        vec![
            PathBuf::from("model=iris/version=2/date=2024-03-05/hour=07"),
            PathBuf::from("model=iris/version=2/date=2024-03-05/hour=08"),
            PathBuf::from("model=iris-b/version=3/date=2024-03-05/hour=07"),
        ]
    );
}

#[test]
fn a_stalled_writer_makes_submit_drop_and_count_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let gate = Arc::new(Gate::default());
    let recorder = Arc::new(TestRecorder::default());
    let mut s = settings(dir.path());
    s.queue_rows = 4;
    let capture = Capture::start_with(
        s,
        Hooks {
            gate: Some(gate.clone()),
            recorder: Some(recorder.clone()),
        },
    )
    .unwrap();
    // Opens the gate even if an assertion fails, so dropping the capture cannot hang.
    struct Open(Arc<Gate>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open();
        }
    }
    let open = Open(gate);

    metrics::with_local_recorder(&*recorder, || {
        assert!(capture.submit(iris_request(&schema, 0, 2, true)));
        assert!(capture.submit(iris_request(&schema, 1, 2, true)));
        // The writer takes nothing: the queue holds 4 rows, so these are refused.
        assert!(!capture.submit(iris_request(&schema, 2, 1, true)));
        assert!(!capture.submit(iris_request(&schema, 3, 3, true)));
    });
    assert_eq!(capture.stats().dropped, 4);
    assert_eq!(capture.stats().queued_rows, 4);
    assert_eq!(
        recorder.get("switchyard_capture_records_total{model=iris,outcome=dropped}"),
        4
    );

    drop(open);
    capture.close();
    assert_eq!(capture.stats().written, 4);
    assert_eq!(capture.stats().queued_rows, 0);
    assert_eq!(
        recorder.get("switchyard_capture_records_total{model=iris,outcome=written}"),
        4
    );
    assert_eq!(
        read_all(dir.path())
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        4
    );
}

#[test]
fn an_unwritable_folder_counts_failed_rows_and_does_not_stop_capture() {
    let dir = tempfile::tempdir().unwrap();
    // A folder under a regular file cannot be created, whoever runs the test (root included).
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let schema = iris();
    let recorder = Arc::new(TestRecorder::default());
    let capture = Capture::start_with(
        settings(&blocker.join("capture")),
        Hooks {
            gate: None,
            recorder: Some(recorder.clone()),
        },
    )
    .unwrap();
    for i in 0..3 {
        assert!(capture.submit(iris_request(&schema, i, 2, true)));
    }
    capture.close();
    let stats = capture.stats();
    assert_eq!((stats.written, stats.failed, stats.dropped), (0, 6, 0));
    assert_eq!(
        recorder.get("switchyard_capture_records_total{model=iris,outcome=failed}"),
        6
    );
}

#[test]
fn close_is_idempotent_and_later_submits_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let capture = Capture::start(settings(dir.path())).unwrap();
    assert!(capture.submit(iris_request(&schema, 0, 3, true)));
    capture.close();
    capture.close();
    assert!(!capture.submit(iris_request(&schema, 1, 2, true)));
    let stats = capture.stats();
    assert_eq!((stats.written, stats.dropped, stats.queued_rows), (3, 2, 0));
    drop(capture);
    assert_eq!(files(dir.path()).len(), 1);
}

#[test]
fn dropping_the_capture_writes_what_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    {
        let capture = Capture::start(settings(dir.path())).unwrap();
        assert!(capture.submit(iris_request(&schema, 0, 2, true)));
    }
    assert_eq!(
        read_all(dir.path())
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        2
    );
}

#[test]
fn settings_that_would_capture_nothing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_rows = 0;
    assert!(matches!(Capture::start(s), Err(CaptureError::ZeroQueue)));
    let mut s = settings(dir.path());
    s.max_file_bytes = 0;
    assert!(matches!(
        Capture::start(s),
        Err(CaptureError::ZeroFileBytes)
    ));
    let mut s = settings(dir.path());
    s.max_file_age = Duration::ZERO;
    assert!(matches!(Capture::start(s), Err(CaptureError::ZeroFileAge)));
}

fn t(name: &str, shape: &[i64], len: usize) -> Tensor {
    Tensor::new(name, shape.to_vec(), TensorData::Fp32(vec![0.0; len]))
}

#[test]
fn rows_are_the_shared_first_dimension_else_one_whole_row() {
    let split = |rows| Layout { rows, split: true };
    let whole = Layout {
        rows: 1,
        split: false,
    };
    assert_eq!(layout(&[t("a", &[3, 4], 12)], &[t("y", &[3], 3)]), split(3));
    assert_eq!(layout(&[t("a", &[0, 4], 0)], &[]), split(0));
    // Disagreeing first dimensions, a scalar, or a length that is not a whole number of rows.
    assert_eq!(layout(&[t("a", &[3, 4], 12)], &[t("y", &[1], 1)]), whole);
    assert_eq!(layout(&[t("a", &[], 1)], &[]), whole);
    assert_eq!(layout(&[t("a", &[3, 4], 12)], &[t("y", &[], 1)]), whole);
    assert_eq!(layout(&[t("a", &[3], 4)], &[]), whole);
}

#[test]
fn a_request_whose_tensors_disagree_on_rows_is_one_row_holding_everything() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let capture = Capture::start(settings(dir.path())).unwrap();
    let mut req = iris_request(&schema, 0, 2, false);
    req.outputs = vec![Tensor::new("label", vec![1], TensorData::Int64(vec![7]))];
    assert!(capture.submit(req));
    capture.close();
    let batches = read_all(dir.path());
    let batch = &batches[0];
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(
        values::<Float32Type>(list(batch, "inputs", "X"), 0)
            .unwrap()
            .len(),
        8
    );
    assert_eq!(
        values::<Int64Type>(list(batch, "outputs", "label"), 0),
        Some(vec![7])
    );
}

/// Waits (without a deadline of its own beyond a generous bound) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..30_000 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("never happened: {what}");
}

#[test]
fn after_a_failed_file_the_writer_goes_on_with_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("capture");
    std::fs::write(&root, b"a file where the folder should be").unwrap();
    let schema = iris();
    let mut s = settings(&root);
    s.max_file_bytes = 1; // every request its own file
    let capture = Capture::start(s).unwrap();
    assert!(capture.submit(iris_request(&schema, 0, 2, true)));
    eventually("the first file fails", || capture.stats().failed == 2);
    std::fs::remove_file(&root).unwrap();
    assert!(capture.submit(iris_request(&schema, 1, 3, true)));
    capture.close();
    let stats = capture.stats();
    assert_eq!((stats.failed, stats.written), (2, 3));
    assert_eq!(
        read_all(&root)
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        3
    );
}

#[test]
fn files_roll_when_their_hour_ends_or_they_pass_their_age_and_not_before() {
    use std::time::Instant;

    use super::writer::{Writer, hour_of, micros};

    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let shared = Arc::new(Shared::new(100, DEFAULT_QUEUE_BYTES));
    let s = settings(dir.path());
    let max_age = s.max_file_age;
    let mut writer = Writer::new(s, shared.clone(), Hooks::default());
    let envelope = |req: CaptureRequest| Envelope {
        layout: layout(&req.inputs, &req.outputs),
        bytes: payload_bytes(&req.inputs, &req.outputs),
        req,
    };
    let req = iris_request(&schema, 0, 2, true);
    let hour = hour_of(micros(req.time));
    let start = Instant::now();
    writer.record(envelope(req));
    writer.maintain(start, hour);
    assert_eq!(shared.written.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(files(dir.path()).is_empty());

    // The hour is over: the file is renamed into view.
    writer.maintain(start, hour + 1);
    assert_eq!(shared.written.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(files(dir.path()).len(), 1);

    // Within the hour, a file is kept until its first row is max_file_age old.
    writer.record(envelope(iris_request(&schema, 1, 3, true)));
    let first_row = Instant::now();
    writer.maintain(first_row + max_age / 2, hour);
    assert_eq!(files(dir.path()).len(), 1);
    writer.maintain(first_row + max_age, hour);
    assert_eq!(shared.written.load(std::sync::atomic::Ordering::Relaxed), 5);
    assert_eq!(files(dir.path()).len(), 2);
}

/// A capture whose writer takes nothing until the returned guard is dropped (a stalled disk).
fn stalled(s: CaptureSettings, recorder: Arc<TestRecorder>) -> (Capture, impl Drop) {
    struct Open(Arc<Gate>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open();
        }
    }
    let gate = Arc::new(Gate::default());
    let capture = Capture::start_with(
        s,
        Hooks {
            gate: Some(gate.clone()),
            recorder: Some(recorder),
        },
    )
    .unwrap();
    (capture, Open(gate))
}

/// Tensor bytes of `iris_request(_, _, rows, true)`: 4 FP32 in, an INT64 and 3 FP32 out per row.
const IRIS_ROW_BYTES: u64 = 4 * 4 + 8 + 3 * 4;

#[test]
fn payload_bytes_are_elements_times_their_size_and_bytes_by_length() {
    let schema = iris();
    let req = iris_request(&schema, 0, 3, true);
    assert_eq!(payload_bytes(&req.inputs, &req.outputs), 3 * IRIS_ROW_BYTES);
    let strings = Tensor::new(
        "s",
        vec![2],
        TensorData::Bytes(ByteStrings::from_items(["héllo", ""]).unwrap()),
    );
    let half = Tensor::new("h", vec![3], TensorData::Fp16(vec![f16::ZERO; 3]));
    // Six bytes of text and a 4-byte length for each of the two strings; 2 bytes per FP16.
    assert_eq!(payload_bytes(&[strings], &[half]), 6 + 2 * 4 + 3 * 2);
}

#[test]
fn the_queue_is_bounded_in_bytes_as_well_as_rows() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let recorder = Arc::new(TestRecorder::default());
    let mut s = settings(dir.path());
    s.queue_rows = 1000;
    s.queue_bytes = 4 * IRIS_ROW_BYTES;
    let (capture, open) = stalled(s, recorder.clone());
    metrics::with_local_recorder(&*recorder, || {
        assert!(capture.submit(iris_request(&schema, 0, 3, true)));
        // Rows to spare, but the two rows' bytes would pass the budget.
        assert!(!capture.submit(iris_request(&schema, 1, 2, true)));
        assert!(capture.submit(iris_request(&schema, 2, 1, true)));
    });
    let stats = capture.stats();
    assert_eq!(
        (stats.queued_rows, stats.queued_bytes, stats.dropped),
        (4, 4 * IRIS_ROW_BYTES, 2)
    );
    assert_eq!(
        recorder.get("switchyard_capture_records_total{model=iris,outcome=dropped}"),
        2
    );
    drop(open);
    capture.close();
    // The writer gave back exactly what was reserved.
    let stats = capture.stats();
    assert_eq!((stats.queued_rows, stats.queued_bytes), (0, 0));
    assert_eq!(stats.written, 4);
}

#[test]
fn a_request_larger_than_the_whole_byte_budget_is_always_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let mut s = settings(dir.path());
    s.queue_bytes = 2 * IRIS_ROW_BYTES - 1;
    let capture = Capture::start(s).unwrap();
    assert!(!capture.submit(iris_request(&schema, 0, 2, true)));
    assert!(capture.submit(iris_request(&schema, 1, 1, true)));
    capture.close();
    let stats = capture.stats();
    assert_eq!(
        (stats.written, stats.dropped, stats.queued_bytes),
        (1, 2, 0)
    );
}

#[test]
fn has_room_looks_at_rows_bytes_and_close_without_reserving() {
    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let recorder = Arc::new(TestRecorder::default());
    let mut s = settings(dir.path());
    s.queue_rows = 4;
    s.queue_bytes = 3 * IRIS_ROW_BYTES;
    let (capture, open) = stalled(s, recorder.clone());
    assert!(capture.has_room(4));
    assert!(!capture.has_room(5));
    assert!(capture.has_room(2));
    assert!(capture.has_room(2), "has_room reserved nothing");
    assert_eq!(capture.stats().queued_rows, 0);

    assert!(capture.submit(iris_request(&schema, 0, 2, true)));
    assert!(capture.has_room(2));
    assert!(!capture.has_room(3));
    assert!(capture.submit(iris_request(&schema, 1, 1, true)));
    // One row left, but the byte budget is spent.
    assert!(!capture.has_room(1));

    // The request path skipped its copy: the rows still count as dropped.
    metrics::with_local_recorder(&*recorder, || capture.count_dropped("iris", 5));
    assert_eq!(capture.stats().dropped, 5);
    assert_eq!(
        recorder.get("switchyard_capture_records_total{model=iris,outcome=dropped}"),
        5
    );

    drop(open);
    capture.close();
    assert_eq!(capture.stats().queued_rows, 0);
    assert!(!capture.has_room(0), "closed");
    assert!(!capture.has_room(1), "closed");
}

#[test]
fn queue_limits_that_cannot_be_counted_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.queue_bytes = 0;
    assert!(matches!(
        Capture::start(s),
        Err(CaptureError::ZeroQueueBytes)
    ));
    let mut s = settings(dir.path());
    s.queue_bytes = MAX_QUEUE_BYTES + 1;
    assert!(matches!(
        Capture::start(s),
        Err(CaptureError::QueueBytesTooLarge(_))
    ));
    let mut s = settings(dir.path());
    s.queue_rows = MAX_QUEUE_ROWS + 1;
    assert!(matches!(
        Capture::start(s),
        Err(CaptureError::QueueRowsTooLarge(_))
    ));
    // The largest of both is fine: a full queue does not carry rows into bytes.
    let queued = Queued(AtomicU64::new(0));
    assert!(queued.reserve(
        MAX_QUEUE_ROWS,
        MAX_QUEUE_BYTES,
        MAX_QUEUE_ROWS,
        MAX_QUEUE_BYTES
    ));
    assert_eq!(queued.load(), (MAX_QUEUE_ROWS, MAX_QUEUE_BYTES));
    assert!(!queued.reserve(0, 1, MAX_QUEUE_ROWS, MAX_QUEUE_BYTES));
    assert!(!queued.reserve(1, 0, MAX_QUEUE_ROWS, MAX_QUEUE_BYTES));
    queued.release(MAX_QUEUE_ROWS - 1, 1);
    assert_eq!(queued.load(), (1, MAX_QUEUE_BYTES - 1));
}

fn hidden_files(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect()
}

#[test]
fn a_roll_that_fails_to_rename_leaves_no_hidden_file() {
    use std::time::Instant;

    use super::writer::{BATCH_ROWS, Writer, hour_of, micros};

    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let shared = Arc::new(Shared::new(100_000, DEFAULT_QUEUE_BYTES));
    let mut writer = Writer::new(settings(dir.path()), shared.clone(), Hooks::default());
    // A full batch opens the hidden file without rolling it.
    let req = iris_request(&schema, 0, BATCH_ROWS, true);
    let hour = hour_of(micros(req.time));
    writer.record(Envelope {
        layout: layout(&req.inputs, &req.outputs),
        bytes: payload_bytes(&req.inputs, &req.outputs),
        req,
    });
    let hidden = hidden_files(dir.path());
    assert_eq!(hidden.len(), 1, "{hidden:?}");
    // A folder where the file is to be renamed to: the rename fails (EISDIR), for root too.
    let name = hidden[0].file_name().unwrap().to_str().unwrap();
    let dest = hidden[0].with_file_name(&name[1..name.len() - ".tmp".len()]);
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep"), b"x").unwrap();

    writer.maintain(Instant::now(), hour + 1);
    let load = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (load(&shared.failed), load(&shared.written)),
        (BATCH_ROWS as u64, 0)
    );
    assert_eq!(hidden_files(dir.path()), Vec::<PathBuf>::new());
    assert!(dest.join("keep").exists());
}

/// Sets a file's modification time `age` ago.
fn age(path: &Path, age: Duration) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn start_sweeps_only_stale_hidden_part_files_in_partition_folders() {
    use super::writer::STALE_TMP_AGE;

    let dir = tempfile::tempdir().unwrap();
    let hour = dir
        .path()
        .join("model=iris/version=1/date=2024-03-05/hour=07");
    std::fs::create_dir_all(&hour).unwrap();
    let old = STALE_TMP_AGE + Duration::from_secs(60);
    let plant = |path: PathBuf, how_old: Duration| {
        std::fs::write(&path, b"PAR1").unwrap();
        age(&path, how_old);
        path
    };
    let crashed = [
        plant(hour.join(".part-1-2-000001.parquet.tmp"), old),
        plant(hour.join(".part-1-2-000002.parquet.tmp"), old * 10),
    ];
    let kept = [
        // Maybe another live process's, in a shared folder.
        plant(hour.join(".part-3-4-000001.parquet.tmp"), Duration::ZERO),
        // Not hidden parts, or not in a partition folder.
        plant(hour.join("part-1-2-000000.parquet"), old),
        plant(hour.join(".notes.tmp"), old),
        plant(hour.join(".part-1-2-000003.parquet"), old),
        plant(dir.path().join(".part-1-2-000004.parquet.tmp"), old),
        plant(
            dir.path()
                .join("model=iris/version=1/.part-1-2-000005.parquet.tmp"),
            old,
        ),
    ];
    let folder = hour.join(".part-1-2-000006.parquet.tmp");
    std::fs::create_dir(&folder).unwrap();

    let capture = Capture::start(settings(dir.path())).unwrap();
    capture.close();
    for path in &crashed {
        assert!(!path.exists(), "{} was not swept", path.display());
    }
    for path in kept.iter().chain([&folder]) {
        assert!(path.exists(), "{} was swept", path.display());
    }
}

#[test]
fn row_groups_stay_within_their_byte_bound() {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::writer::ROW_GROUP_BYTES;

    let dir = tempfile::tempdir().unwrap();
    let signature = Signature::new(vec![spec("blob", DataType::Bytes, &[-1])], vec![]).unwrap();
    let schema = CaptureSchema::new(&signature);
    let capture = Capture::start(settings(dir.path())).unwrap();
    // 20 MiB that snappy cannot shrink, 64 KiB a row.
    const ROW: usize = 64 * 1024;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..320 {
        let blob: Vec<u8> = (0..ROW)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let req = CaptureRequest {
            time: at(0),
            request_id: None,
            model: Arc::from("blobs"),
            version: 1,
            variant: None,
            latency: Duration::from_micros(i),
            schema: schema.clone(),
            inputs: vec![Tensor::new(
                "blob",
                vec![1],
                TensorData::Bytes(ByteStrings::from_items([blob]).unwrap()),
            )],
            outputs: vec![],
        };
        assert!(capture.submit(req));
    }
    capture.close();
    assert_eq!(capture.stats().written, 320);
    let all = files(dir.path());
    assert_eq!(all.len(), 1, "{all:?}");
    let reader = SerializedFileReader::new(File::open(&all[0]).unwrap()).unwrap();
    let groups = reader.metadata().row_groups();
    assert!(groups.len() >= 2, "{} row group(s)", groups.len());
    for group in groups {
        // The writer closes a group once it passes the bound, so by at most about a row.
        let size = usize::try_from(group.compressed_size()).unwrap();
        assert!(
            size <= ROW_GROUP_BYTES + 2 * ROW,
            "a row group of {size} bytes"
        );
    }
}

#[test]
fn only_variant_is_dictionary_encoded_and_statistics_are_per_chunk() {
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    let schema = iris();
    let capture = Capture::start(settings(dir.path())).unwrap();
    for i in 0..50 {
        assert!(capture.submit(iris_request(&schema, i, 2, true)));
    }
    capture.close();
    let all = files(dir.path());
    assert_eq!(all.len(), 1, "{all:?}");
    let reader = SerializedFileReader::new(File::open(&all[0]).unwrap()).unwrap();
    let mut seen = Vec::new();
    for group in reader.metadata().row_groups() {
        for column in group.columns() {
            let path = column.column_path().string();
            let dictionary = column
                .encodings()
                .any(|e| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY));
            assert_eq!(dictionary, path == "variant", "{path}: dictionary");
            assert!(column.column_index_offset().is_none(), "{path}: page index");
            let stats = column.statistics().unwrap_or_else(|| panic!("{path}"));
            assert!(stats.min_bytes_opt().is_some(), "{path}: chunk min");
            seen.push(path);
        }
    }
    assert!(seen.iter().any(|p| p.starts_with("inputs.X.")), "{seen:?}");
    assert!(seen.iter().any(|p| p == "time"), "{seen:?}");
}
