//! Prediction capture: the records per second the writer thread sustains to disk for the iris
//! classifier's record (4 FP32 inputs; an INT64 label and 3 FP32 probabilities out), batch-1
//! requests, the writer thread's own CPU per record, and what `submit` costs a request when
//! the queue has room.
//! `cargo bench --bench capture`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::core::signature::{Signature, TensorSpec};
use switchyard::core::tensor::{DataType, Tensor, TensorData};
use switchyard::monitoring::capture::{
    Capture, CaptureRequest, CaptureSchema, CaptureSettings, DEFAULT_QUEUE_ROWS,
};

fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
    }
}

fn iris_schema() -> Arc<CaptureSchema> {
    let signature = Signature::new(
        vec![spec("X", DataType::Fp32, &[-1, 4])],
        vec![
            spec("label", DataType::Int64, &[-1]),
            spec("probabilities", DataType::Fp32, &[-1, 3]),
        ],
    )
    .expect("the iris signature has an input");
    CaptureSchema::new(&signature)
}

/// One batch-1 request, values varying with `i` so the encoder sees realistic data.
fn request(schema: &Arc<CaptureSchema>, model: &Arc<str>, i: u64) -> CaptureRequest {
    let f = (i % 1000) as f32 / 100.0;
    CaptureRequest {
        time: SystemTime::now(),
        request_id: Some(format!("{i:016x}")),
        model: model.clone(),
        version: 1,
        variant: None,
        latency: Duration::from_micros(150 + i % 50),
        schema: schema.clone(),
        inputs: vec![Tensor::new(
            "X",
            vec![1, 4],
            TensorData::Fp32(vec![5.1 + f, 3.5 - f, 1.4 + f, 0.2]),
        )],
        outputs: vec![
            Tensor::new("label", vec![1], TensorData::Int64(vec![(i % 3) as i64])),
            Tensor::new(
                "probabilities",
                vec![1, 3],
                TensorData::Fp32(vec![0.9 - f / 20.0, 0.05 + f / 40.0, 0.05 + f / 40.0]),
            ),
        ],
    }
}

/// CPU time used so far by `clock` (this process, or this thread).
fn cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the whole call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn wait_drained(capture: &Capture) {
    while capture.stats().queued_rows > 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn bench(c: &mut Criterion) {
    let schema = iris_schema();
    let model: Arc<str> = Arc::from("iris");
    let mut g = c.benchmark_group("capture");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));

    // Producer kept just under the queue bound, so the figure is what the writer sustains (files
    // closed, fsync'd and renamed included), not how fast records can be dropped.
    g.bench_function("sustained_iris_batch1", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("a temporary folder");
            let capture = Capture::start(CaptureSettings::new(dir.path())).expect("capture starts");
            let start = Instant::now();
            for i in 0..iters {
                while capture.stats().queued_rows >= DEFAULT_QUEUE_ROWS {
                    std::thread::yield_now();
                }
                capture.submit(request(&schema, &model, i));
            }
            capture.close();
            let elapsed = start.elapsed();
            let stats = capture.stats();
            assert_eq!(stats.written + stats.dropped, iters);
            assert_eq!(stats.failed, 0);
            elapsed
        })
    });

    // The writer thread's CPU per record (the process's CPU less this thread's, which builds and
    // submits the requests): what capture takes from serving on a small box, and steadier than
    // the wall time above when other work shares the cores.
    g.bench_function("writer_cpu_iris_batch1", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("a temporary folder");
            let process = cpu(libc::CLOCK_PROCESS_CPUTIME_ID);
            let thread = cpu(libc::CLOCK_THREAD_CPUTIME_ID);
            let capture = Capture::start(CaptureSettings::new(dir.path())).expect("capture starts");
            for i in 0..iters {
                while capture.stats().queued_rows >= DEFAULT_QUEUE_ROWS {
                    std::thread::yield_now();
                }
                capture.submit(request(&schema, &model, i));
            }
            capture.close();
            let process = cpu(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(process);
            let thread = cpu(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(thread);
            assert_eq!(capture.stats().failed, 0);
            process.saturating_sub(thread)
        })
    });

    // The request path's cost: building the record is the caller's (clones of its tensors), so
    // only `submit` is timed; the queue is drained between rounds outside the clock.
    g.bench_function("submit_iris_batch1", |b| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let capture = Capture::start(CaptureSettings::new(dir.path())).expect("capture starts");
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut i = 0;
            while i < iters {
                let round = (iters - i).min(DEFAULT_QUEUE_ROWS as u64 / 2);
                let reqs: Vec<_> = (i..i + round)
                    .map(|k| request(&schema, &model, k))
                    .collect();
                let start = Instant::now();
                for req in reqs {
                    black_box(capture.submit(req));
                }
                timed += start.elapsed();
                wait_drained(&capture);
                i += round;
            }
            timed
        });
        capture.close();
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
