//! Front-end codec costs: V2 JSON, binary and gRPC tensor decode/encode, and request validation.
//! `cargo bench --bench codec`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use serde_json::json;
use switchyard::codec::{OutputFormat, decode_request, encode_response};
use switchyard::core::infer::{InferResponse, Parameters};
use switchyard::core::signature::{Signature, TensorSpec};
use switchyard::core::tensor::{DataType, Tensor, TensorData};
use switchyard::grpc::{convert, pb};

fn rows(n: usize, width: usize) -> Vec<f32> {
    (0..n * width).map(|i| (i % 997) as f32 / 7.0).collect()
}

fn json_body(n: usize, width: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"inputs": [{"name": "X", "shape": [n, width], "datatype": "FP32", "data": rows(n, width)}]})).unwrap()
}

fn binary_body(n: usize, width: usize) -> (Vec<u8>, usize) {
    let raw: Vec<u8> = rows(n, width)
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let mut body = serde_json::to_vec(
        &json!({"inputs": [{"name": "X", "shape": [n, width], "datatype": "FP32",
        "parameters": {"binary_data_size": raw.len()}}]}),
    )
    .unwrap();
    let header = body.len();
    body.extend_from_slice(&raw);
    (body, header)
}

/// A `ModelInferRequest` as it arrives on the wire (raw little-endian input, as clients send it).
fn grpc_message(n: usize, width: usize) -> Bytes {
    let raw: Vec<u8> = rows(n, width)
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    pb::ModelInferRequest {
        model_name: "breast_cancer".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "X".into(),
            datatype: "FP32".into(),
            shape: vec![n as i64, width as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

fn response(n: usize) -> InferResponse {
    InferResponse {
        model_name: "breast_cancer".into(),
        model_version: 2,
        id: None,
        outputs: vec![
            Tensor::new("label", vec![n as i64], TensorData::Int64(vec![1; n])),
            Tensor::new(
                "probabilities",
                vec![n as i64, 2],
                TensorData::Fp32(rows(n, 2)),
            ),
        ],
        parameters: Parameters::new(),
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for n in [1usize, 64] {
        let body = json_body(n, 30);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("json", n), &body, |b, body| {
            b.iter(|| decode_request(black_box(body), None).unwrap())
        });
        let (body, header) = binary_body(n, 30);
        g.bench_with_input(BenchmarkId::new("binary", n), &body, |b, body| {
            b.iter(|| decode_request(black_box(body), Some(header)).unwrap())
        });
        // What the gRPC handler does with a received message: protobuf, then the core request.
        let message = grpc_message(n, 30);
        g.bench_with_input(BenchmarkId::new("grpc", n), &message, |b, m| {
            b.iter(|| {
                let req = pb::ModelInferRequest::decode(black_box(m.clone())).unwrap();
                convert::decode_request(req).unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    let binary = OutputFormat {
        binary_by_default: true,
        ..Default::default()
    };
    for n in [1usize, 64] {
        let resp = response(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("json", n), &resp, |b, r| {
            b.iter(|| encode_response(black_box(r), &OutputFormat::default()).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("binary", n), &resp, |b, r| {
            b.iter(|| encode_response(black_box(r), &binary).unwrap())
        });
        // The core response to protobuf bytes, as tonic writes them.
        g.bench_with_input(BenchmarkId::new("grpc", n), &resp, |b, r| {
            b.iter_batched(
                || r.clone(),
                |r| convert::encode_response(black_box(r)).encode_to_vec(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let sig = Signature {
        inputs: vec![TensorSpec {
            name: "X".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 30],
        }],
        outputs: vec![
            TensorSpec {
                name: "label".into(),
                datatype: DataType::Int64,
                shape: vec![-1],
            },
            TensorSpec {
                name: "probabilities".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 2],
            },
        ],
    };
    let mut g = c.benchmark_group("validate");
    for n in [1usize, 64] {
        let (req, _) = decode_request(&json_body(n, 30), None).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(n), &req, |b, req| {
            b.iter(|| sig.validate(black_box(req.clone())).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
