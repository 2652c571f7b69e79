//! What a rollout costs per request on the serving path: the split (weighted draw, sticky hash),
//! counting the answer in the interval's window (NaN scan, lock, histogram), and comparing a
//! sampled pair of answers. Compare with the ~40-50 µs of server CPU a small-model request costs
//! end to end (`loadtest/rollout_bench.sh`). `cargo bench --bench routing`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::core::tensor::{Tensor, TensorData};
use switchyard::routing::compare::{Agreement, Measure, non_finite_rows};
use switchyard::routing::split::choose;
use switchyard::routing::window::{Outcome, Variant, Window};
use switchyard::routing::{Kind, Rollout, RolloutSpec};

fn rollout(kind: Kind) -> Rollout {
    let mut spec = RolloutSpec::new(2);
    spec.kind = kind;
    spec.steps = (kind != Kind::Shadow).then(|| vec![50.0]);
    Rollout::start(spec, 1, 0, "bench")
}

fn bench(c: &mut Criterion) {
    let canary = rollout(Kind::Canary);
    let ab = rollout(Kind::Ab);
    let mut g = c.benchmark_group("rollout_per_request");
    g.bench_function("split_canary", |b| {
        b.iter(|| choose(black_box(&canary), None))
    });
    g.bench_function("split_ab_sticky_key", |b| {
        b.iter(|| choose(black_box(&ab), Some(black_box("user-12345"))))
    });
    // mlp_small's answer: one row of 64 floats.
    let answer = vec![Tensor::new(
        "output",
        vec![1, 64],
        TensorData::Fp32((0..64).map(|i| i as f32 / 64.0).collect()),
    )];
    let window = Window::new();
    g.bench_function("observe_answer", |b| {
        b.iter(|| {
            let (rows, non_finite_rows) = non_finite_rows(black_box(&answer));
            window.record(
                Variant::Candidate,
                Outcome::Answered {
                    rows,
                    non_finite_rows,
                },
                Duration::from_micros(180),
            );
        })
    });
    let mut agreement = Agreement::default();
    g.bench_function("compare_sampled_pair", |b| {
        b.iter(|| agreement.add(Measure::Auto, black_box(&answer), black_box(&answer)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
