//! The in-process limit: ONNX Runtime called directly, with the same session settings the server
//! uses (one intra-op thread per session, one session per thread), no network and no scheduler.
//!
//! cargo run --release --example ort_throughput -- target/bench-models/mlp_mid/1/model.onnx 64 2 10
//!   (model, rows per call, threads, seconds[, device: cpu (default), cuda or cuda:N])

use std::time::{Duration, Instant};

use switchyard::models::loader::warmup_inputs;
use switchyard::registry::config::Device;
use switchyard::runtime::Backend;
use switchyard::runtime::onnx::{self, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: ort_throughput MODEL.onnx [BATCH] [THREADS] [SECONDS] [DEVICE]")?;
    let batch: usize = args
        .get(2)
        .map_or(Ok(64), |s| s.parse())
        .map_err(|e| format!("batch: {e}"))?;
    let threads: usize = args
        .get(3)
        .map_or(Ok(2), |s| s.parse())
        .map_err(|e| format!("threads: {e}"))?;
    let secs: f64 = args
        .get(4)
        .map_or(Ok(10.0), |s| s.parse())
        .map_err(|e| format!("seconds: {e}"))?;

    let device = match args.get(5) {
        Some(d) => Device::parse(d)?,
        None => Device::Cpu,
    };

    let env = switchyard::runtime::library::init(None)?;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let model = onnx::load(
        env,
        &bytes,
        &LoadOptions {
            instances: threads,
            intra_op_threads: 1,
            device,
        },
    )?;
    let mut inputs = warmup_inputs(&model.signature)?;
    for t in &mut inputs {
        // `batch` rows of varied values instead of one row of zeros.
        let mut shape = t.shape.clone();
        shape[0] = batch as i64;
        let n: usize = shape.iter().product::<i64>() as usize;
        let data: Vec<f32> = (0..n).map(|i| (i % 97) as f32 / 97.0).collect();
        *t = switchyard::core::tensor::Tensor::new(
            t.name.clone(),
            shape,
            switchyard::core::tensor::TensorData::Fp32(data),
        );
    }
    let duration = Duration::from_secs_f64(secs);
    let handles: Vec<_> = model
        .sessions
        .into_iter()
        .map(|mut session| {
            let inputs = inputs.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let _ = session.run(&inputs);
                }
                let start = Instant::now();
                let mut lat = Vec::new();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    session.run(&inputs).expect("inference");
                    lat.push(t.elapsed());
                }
                (lat, start.elapsed())
            })
        })
        .collect();
    let mut calls = 0usize;
    let mut all = Vec::new();
    let mut elapsed = Duration::ZERO;
    for h in handles {
        let (lat, e) = h.join().map_err(|_| "a thread panicked")?;
        calls += lat.len();
        elapsed = elapsed.max(e);
        all.extend(lat);
    }
    all.sort();
    let q = |p: f64| all[((all.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    let calls_s = calls as f64 / elapsed.as_secs_f64();
    println!(
        "model={path} device={device} batch={batch} threads={threads} seconds={:.1}: {:.0} calls/s, {:.0} rows/s, call p50 {:.3} ms, p99 {:.3} ms",
        elapsed.as_secs_f64(),
        calls_s,
        calls_s * batch as f64,
        q(0.5),
        q(0.99)
    );
    Ok(())
}
