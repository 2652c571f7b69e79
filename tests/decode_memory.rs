//! Decoding a request body holds at most a small constant times the body's size, whatever the
//! body: worst cases for the allocator (many empty strings, many tiny nested arrays, many small
//! numbers), measured with a counting global allocator.

#[path = "support/alloc.rs"]
mod alloc;

use switchyard::codec::decode_request;

#[global_allocator]
static COUNTING: alloc::Counting = alloc::Counting;

/// Bytes held per body byte: INT64/FP64 values of one digit (`0,`: 8 bytes from 2) need 4.
const PER_BODY_BYTE: usize = 4;
/// Room for the fixed-size parts of a request (names, the inputs vector, output format).
const FIXED: usize = 4096;

const N: usize = 200_000;

fn repeat(item: &str, n: usize) -> String {
    let mut s = String::with_capacity(n * (item.len() + 1));
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(item);
    }
    s
}

fn json_body(datatype: &str, shape: &str, data: &str) -> Vec<u8> {
    format!(
        r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"{datatype}","data":[{data}]}}]}}"#
    )
    .into_bytes()
}

fn check(what: &str, body: &[u8], header_len: Option<usize>, must_decode: bool) {
    let (result, peak) = alloc::peak_bytes(|| decode_request(body, header_len));
    if must_decode {
        result.unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let ratio = peak as f64 / body.len() as f64;
    println!(
        "{what}: body {} bytes, peak {peak} bytes ({ratio:.2}x)",
        body.len()
    );
    assert!(
        peak <= PER_BODY_BYTE * body.len() + FIXED,
        "{what}: decoding a {} byte body held {peak} bytes ({ratio:.2}x)",
        body.len()
    );
}

#[test]
fn many_empty_strings() {
    let data = repeat(r#""""#, N);
    check(
        "BYTES [\"\", ...]",
        &json_body("BYTES", &format!("[{N}]"), &data),
        None,
        true,
    );
    // A shape that lies (far more, or unknown because it comes after the data) does not make
    // the decoder reserve more than the text can hold.
    check(
        "BYTES, huge shape",
        &json_body("BYTES", "[1000000000000]", &data),
        None,
        false,
    );
    let late = format!(
        r#"{{"inputs":[{{"name":"x","datatype":"BYTES","data":[{data}],"shape":[{N}]}}]}}"#
    );
    check("BYTES, shape last", late.as_bytes(), None, true);
    // The binary form: a 4-byte length prefix per element, all zero.
    let header = format!(
        r#"{{"inputs":[{{"name":"x","shape":[{N}],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
        4 * N
    );
    let mut body = header.clone().into_bytes();
    body.resize(header.len() + 4 * N, 0);
    check(
        "BYTES binary, empty elements",
        &body,
        Some(header.len()),
        true,
    );
}

#[test]
fn many_tiny_nested_arrays() {
    let data = repeat("[0]", N);
    check(
        "INT64 [[0], ...]",
        &json_body("INT64", &format!("[{N},1]"), &data),
        None,
        true,
    );
    let data = repeat(r#"[""]"#, N);
    check(
        "BYTES [[\"\"], ...]",
        &json_body("BYTES", &format!("[{N},1]"), &data),
        None,
        true,
    );
    let deep = format!("{}0{}", "[".repeat(N), "]".repeat(N));
    check(
        "deeply nested",
        &json_body("INT64", "[1]", &deep),
        None,
        false,
    );
}

#[test]
fn many_small_numbers() {
    let data = repeat("0", N);
    for dt in ["INT64", "FP64", "UINT64", "FP32", "INT8", "BOOL"] {
        let data = if dt == "BOOL" {
            repeat("true", N)
        } else {
            data.clone()
        };
        check(
            &format!("{dt} [0, ...]"),
            &json_body(dt, &format!("[{N}]"), &data),
            None,
            true,
        );
    }
    check(
        "INT64, huge shape",
        &json_body("INT64", "[1000000000000]", &data),
        None,
        false,
    );
    // Several inputs that each lie about their shape share the body's budget.
    let input = format!(
        r#"{{"name":"x","shape":[1000000000],"datatype":"INT64","data":[{}]}}"#,
        repeat("0", N / 4)
    );
    let body = format!(r#"{{"inputs":[{}]}}"#, repeat(&input, 4));
    check("4 inputs, huge shapes", body.as_bytes(), None, false);
}

/// The request's structure costs more per byte than tensor data, so its counts are capped
/// instead; the largest structure the caps allow stays under a fixed bound.
#[test]
fn the_largest_structure_the_caps_allow() {
    use switchyard::codec::json::{MAX_PARAMETERS, MAX_TENSORS};
    let params: Vec<String> = (0..MAX_PARAMETERS)
        .map(|i| format!(r#""p{i}":{i}"#))
        .collect();
    let params = params.join(",");
    let inputs: Vec<String> = (0..MAX_TENSORS)
        .map(|i| format!(r#"{{"name":"i{i}","shape":[1],"datatype":"FP32","data":[1],"parameters":{{{params}}}}}"#))
        .collect();
    let outputs: Vec<String> = (0..MAX_TENSORS)
        .map(|i| format!(r#"{{"name":"o{i}","parameters":{{{params}}}}}"#))
        .collect();
    let body = format!(
        r#"{{"parameters":{{{params}}},"inputs":[{}],"outputs":[{}]}}"#,
        inputs.join(","),
        outputs.join(",")
    );
    let (result, peak) = alloc::peak_bytes(|| decode_request(body.as_bytes(), None));
    result.unwrap();
    println!(
        "largest structure: body {} bytes, peak {peak} bytes",
        body.len()
    );
    assert!(peak <= 16 << 20, "{peak} bytes");
}
