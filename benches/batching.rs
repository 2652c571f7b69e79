//! Batching costs: merging requests into a batch and splitting outputs back, and the per-request
//! overhead of the scheduler (queue, batcher thread, worker thread, oneshot) around a backend
//! that does nothing. `cargo bench --bench batching`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchyard::batching::Scheduler;
use switchyard::batching::batch::{merge, split};
use switchyard::core::tensor::{Tensor, TensorData};
use switchyard::error::Result;
use switchyard::monitoring::metrics::VersionMetrics;
use switchyard::registry::config::BatchSettings;
use switchyard::runtime::Backend;

fn request(width: usize) -> Vec<Tensor> {
    vec![Tensor::new(
        "x",
        vec![1, width as i64],
        TensorData::Fp32(vec![0.5; width]),
    )]
}

/// Returns its input as the output: the cost measured is the scheduler's alone.
struct Echo;
impl Backend for Echo {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(inputs.to_vec())
    }
}

fn merge_split(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge_split");
    for (n, width) in [(8usize, 30usize), (64, 30), (64, 256)] {
        let reqs: Vec<Vec<Tensor>> = (0..n).map(|_| request(width)).collect();
        let parts: Vec<&[Tensor]> = reqs.iter().map(|r| &r[..]).collect();
        let rows = vec![1usize; n];
        g.throughput(Throughput::Elements(n as u64));
        let id = format!("{n}x{width}");
        g.bench_with_input(BenchmarkId::new("merge", &id), &parts, |b, parts| {
            b.iter(|| merge(black_box(parts), &rows).unwrap())
        });
        let merged = merge(&parts, &rows).unwrap();
        g.bench_with_input(BenchmarkId::new("split", &id), &merged, |b, merged| {
            b.iter(|| split(black_box(merged.clone()), &rows).unwrap())
        });
    }
    g.finish();
}

fn scheduler(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("scheduler");
    for max_batch in [0usize, 64] {
        let settings = BatchSettings {
            max_batch_size: max_batch,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: vec![],
            max_queue_size: 1 << 20,
            default_timeout: None,
        };
        let s = std::sync::Arc::new(
            Scheduler::start(
                "bench".into(),
                "bench",
                settings,
                vec![Box::new(Echo)],
                VersionMetrics::noop(),
            )
            .unwrap(),
        );
        g.bench_function(BenchmarkId::new("round_trip_batch1", max_batch), |b| {
            b.iter(|| rt.block_on(s.run(request(30), Some(1), None)).unwrap())
        });
        // 64 callers at once: the cost per request when batches form.
        g.throughput(Throughput::Elements(64));
        g.bench_function(BenchmarkId::new("burst_of_64", max_batch), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..64)
                        .map(|_| {
                            let s = s.clone();
                            tokio::spawn(async move { s.run(request(30), Some(1), None).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                })
            })
        });
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

criterion_group!(benches, merge_split, scheduler);
criterion_main!(benches);
