//! Property tests over every decoder of untrusted input: the REST JSON decoder, the binary
//! extension's header and body, the gRPC request converter and `config.toml` parsing. Random and
//! mutated inputs (valid seeds with bytes or fields changed) must never panic, and decoding must
//! stay within its memory bound. A fixed seed and case count keep the run short and repeatable;
//! `fuzz/` has `cargo fuzz` targets for the same entry points, for longer searches.

#[path = "support/alloc.rs"]
mod alloc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use prost::Message;
use switchyard::codec::decode_request;
use switchyard::grpc::{convert, pb};
use switchyard::registry::config::{Defaults, ModelConfig};

#[global_allocator]
static COUNTING: alloc::Counting = alloc::Counting;

/// Tensor data costs at most 4 bytes per body byte; the structure of a small body (one
/// parameter map allocates a whole B-tree node) is covered by the fixed part.
fn within_bound(peak: usize, len: usize) -> bool {
    peak <= 4 * len + (256 << 10)
}

fn config() -> Config {
    Config {
        cases: 384,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x5eed_1234),
        ..Config::default()
    }
}

const JSON_SEEDS: &[&str] = &[
    r#"{"id":"r1","parameters":{"timeout":5,"binary_data_output":true},"inputs":[{"name":"X","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],"outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"z"}]}"#,
    r#"{"inputs":[{"data":[1,[2]],"shape":[2],"name":"a","datatype":"INT64"}]}"#,
    r#"{"inputs":[{"name":"s","shape":[3],"datatype":"BYTES","data":["a","h\u00e9llo",""]}]}"#,
    r#"{"inputs":[{"name":"b","shape":[2],"datatype":"BOOL","data":[true,false]},{"name":"u","shape":[1],"datatype":"UINT8","data":[255]}]}"#,
    r#"{"inputs":[{"name":"h","shape":[1,1],"datatype":"FP16","data":[[0.5]]}],"outputs":[]}"#,
];

/// A header with binary inputs, and its tail.
fn binary_seed() -> (Vec<u8>, usize) {
    let header = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},{"name":"b","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":7}},{"name":"c","shape":[1],"datatype":"FP64","data":[0.5]}]}"#;
    let mut body = header.to_vec();
    body.extend_from_slice(&1i32.to_le_bytes());
    body.extend_from_slice(&(-2i32).to_le_bytes());
    body.extend_from_slice(&3u32.to_le_bytes());
    body.extend_from_slice(b"abc");
    (body, header.len())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop::sample::select(b"[]{}\",:0-.e9tn\\ ".to_vec())
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 0usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 0usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !bytes.is_empty() => bytes[i % len] ^= b,
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Delete(i, n) if !bytes.is_empty() => {
                let start = i % len;
                let end = (start + n).min(bytes.len());
                bytes.drain(start..end);
            }
            Mutation::Duplicate(i, n) if !bytes.is_empty() => {
                let start = i % len;
                let end = (start + n).min(bytes.len());
                let copy = bytes[start..end].to_vec();
                bytes.splice(end..end, copy);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

fn check_rest(body: &[u8], header_len: Option<usize>) -> Result<(), TestCaseError> {
    let (_, peak) = alloc::peak_bytes(|| decode_request(body, header_len));
    prop_assert!(
        within_bound(peak, body.len()),
        "{} byte body held {peak} bytes",
        body.len()
    );
    Ok(())
}

/// JSON text for tensor data: scalars of every kind, nested a little.
fn json_data() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("9223372036854775808.0".to_string()),
        Just("18446744073709551616".to_string()),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z\\\\\"]{0,4}".prop_map(|s| format!("{s:?}")),
        Just("null".to_string()),
        Just("{}".to_string()),
    ];
    scalar.prop_recursive(4, 32, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(|v| format!("[{}]", v.join(",")))
    })
}

fn datatype() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "FP32", "FP64", "BYTES",
        ])
        .prop_map(str::to_string),
        "[A-Z0-9]{0,6}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rest_json_random_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_rest(&body, None)?;
    }

    #[test]
    fn rest_json_mutated_seeds(
        seed in prop::sample::select(JSON_SEEDS),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        check_rest(&mutate(seed.as_bytes().to_vec(), &mutations), None)?;
    }

    #[test]
    fn rest_json_generated_tensors(
        dt in datatype(),
        shape in prop::collection::vec(-2i64..5, 0..4),
        data in json_data(),
        params in prop::collection::vec(("[a-z_]{1,12}", json_data()), 0..3),
    ) {
        let params: Vec<String> = params.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
        let body = format!(
            r#"{{"inputs":[{{"name":"x","shape":{shape:?},"datatype":"{dt}","data":{data},"parameters":{{{}}}}}]}}"#,
            params.join(",")
        );
        check_rest(body.as_bytes(), None)?;
    }

    #[test]
    fn binary_extension_mutated(
        mutations in prop::collection::vec(mutation(), 0..6),
        header_shift in -4isize..4,
        tail in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let (body, header_len) = binary_seed();
        let mut body = mutate(body, &mutations);
        body.extend_from_slice(&tail);
        let header_len = header_len.checked_add_signed(header_shift).unwrap_or(0);
        check_rest(&body, Some(header_len))?;
        check_rest(&body, Some(usize::MAX))?;
    }

    #[test]
    fn binary_extension_sizes(
        dt in datatype(),
        size in prop_oneof![Just(u64::MAX), Just(i64::MAX as u64), 0u64..64],
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = format!(
            r#"{{"inputs":[{{"name":"a","shape":[4],"datatype":"{dt}","parameters":{{"binary_data_size":{size}}}}}]}}"#
        );
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&tail);
        check_rest(&body, Some(header.len()))?;
    }

    #[test]
    fn grpc_random_requests(req in infer_request()) {
        let len = req.encoded_len();
        let (_, peak) = alloc::peak_bytes(|| convert::decode_request(req));
        prop_assert!(within_bound(peak, len), "{len} byte message held {peak} bytes");
    }

    #[test]
    fn grpc_mutated_messages(
        req in infer_request(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let bytes = mutate(req.encode_to_vec(), &mutations);
        if let Ok(req) = pb::ModelInferRequest::decode(&bytes[..]) {
            let (_, peak) = alloc::peak_bytes(|| convert::decode_request(req));
            prop_assert!(within_bound(peak, bytes.len()));
        }
    }

    #[test]
    fn config_toml_random_and_mutated(
        seed in prop::sample::select(CONFIG_SEEDS),
        mutations in prop::collection::vec(mutation(), 0..6),
        random in "\\PC{0,64}",
    ) {
        let text = String::from_utf8_lossy(&mutate(seed.as_bytes().to_vec(), &mutations)).into_owned();
        for text in [text, random] {
            if let Ok(c) = ModelConfig::parse(&text, "config.toml") {
                let _ = c.resolve(&Defaults::default(), "config.toml");
            }
        }
    }
}

const CONFIG_SEEDS: &[&str] = &[
    "version_policy = { latest = 2 }\n[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 500\npreferred_batch_sizes = [16, 8, 16]\nmax_queue_size = 10\ndefault_timeout_us = 2000\n[runtime]\ninstances = 3\nintra_op_threads = 0\ndevice = \"cuda:1\"\n[lifecycle]\nallow_signature_change = true\n",
    "version_policy = { specific = [1, 3] }\n",
    "[batching]\nmax_batch_size = 0\n",
    "",
];

fn contents() -> impl Strategy<Value = pb::InferTensorContents> {
    let small = || 0usize..6;
    (
        prop::collection::vec(any::<bool>(), small()),
        prop::collection::vec(any::<i32>(), small()),
        prop::collection::vec(any::<i64>(), small()),
        prop::collection::vec(any::<u32>(), small()),
        prop::collection::vec(any::<u64>(), small()),
        prop::collection::vec(any::<f32>(), small()),
        prop::collection::vec(any::<f64>(), small()),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..5), small()),
    )
        .prop_map(
            |(b, i, i64s, u, u64s, f, d, bytes)| pb::InferTensorContents {
                bool_contents: b,
                int_contents: i,
                int64_contents: i64s,
                uint_contents: u,
                uint64_contents: u64s,
                fp32_contents: f,
                fp64_contents: d,
                bytes_contents: bytes,
            },
        )
}

fn infer_request() -> impl Strategy<Value = pb::ModelInferRequest> {
    let input = (
        "[a-z]{0,3}",
        datatype(),
        prop::collection::vec(any::<i64>(), 0..4),
        prop::option::of(contents()),
    )
        .prop_map(|(name, datatype, shape, contents)| {
            pb::model_infer_request::InferInputTensor {
                name,
                datatype,
                shape,
                parameters: Default::default(),
                contents,
            }
        });
    (
        prop::collection::vec(input, 0..4),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..4),
        prop::collection::vec("[a-z]{0,14}", 0..3),
    )
        .prop_map(
            |(inputs, raw_input_contents, outputs)| pb::ModelInferRequest {
                model_name: "m".into(),
                inputs,
                raw_input_contents: raw_input_contents.into_iter().map(Into::into).collect(),
                outputs: outputs
                    .into_iter()
                    .map(|name| pb::model_infer_request::InferRequestedOutputTensor {
                        name,
                        parameters: Default::default(),
                    })
                    .collect(),
                ..Default::default()
            },
        )
}

/// Deep nesting in `config.toml` is an error, not a stack overflow.
#[test]
fn deeply_nested_config_toml_is_an_error() {
    let text = format!("x = {}1{}", "[".repeat(20_000), "]".repeat(20_000));
    assert!(ModelConfig::parse(&text, "config.toml").is_err());
    let text = format!("x = {}1{}", "{a = ".repeat(20_000), "}".repeat(20_000));
    assert!(ModelConfig::parse(&text, "config.toml").is_err());
}
