//! Request payloads: inputs generated from the model's metadata (seeded), read from a file of
//! rows, or taken from a complete request file; encoded once, before the run, for each protocol.

use std::path::Path;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::pb;
use crate::target::Protocol;

/// One input of the model, as its metadata describes it (`-1` for variable dimensions).
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Every numeric datatype, converted when encoding.
    Num(Vec<f64>),
    Bool(Vec<bool>),
    Bytes(Vec<Vec<u8>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorValues {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub values: Values,
}

/// A request ready to send.
#[derive(Debug, Clone)]
pub enum Body {
    Rest {
        bytes: Bytes,
        /// `Inference-Header-Content-Length` for binary bodies.
        header_len: Option<usize>,
    },
    /// A `ModelInferRequest`, protobuf-encoded once (as REST bodies are serialised once).
    Grpc(Bytes),
}

fn concrete_shape(spec: &InputSpec, batch: usize) -> Vec<i64> {
    spec.shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if i == 0 && d < 0 {
                batch as i64
            } else {
                d.max(1)
            }
        })
        .collect()
}

fn count(shape: &[i64]) -> usize {
    shape.iter().map(|&d| d.max(0) as usize).product()
}

/// Random inputs for `specs` with `batch` rows: floats in [0, 1), small integers, random booleans
/// and short ASCII strings.
pub fn generate(specs: &[InputSpec], batch: usize, rng: &mut StdRng) -> Vec<TensorValues> {
    specs
        .iter()
        .map(|spec| {
            let shape = concrete_shape(spec, batch);
            let n = count(&shape);
            let values = match spec.datatype.as_str() {
                "BOOL" => Values::Bool((0..n).map(|_| rng.random()).collect()),
                "BYTES" => Values::Bytes(
                    (0..n)
                        .map(|_| (0..8).map(|_| rng.random_range(b'a'..=b'z')).collect())
                        .collect(),
                ),
                dt if dt.starts_with("FP") => {
                    Values::Num((0..n).map(|_| rng.random::<f64>()).collect())
                }
                _ => Values::Num((0..n).map(|_| rng.random_range(0..10) as f64).collect()),
            };
            TensorValues {
                name: spec.name.clone(),
                datatype: spec.datatype.clone(),
                shape,
                values,
            }
        })
        .collect()
}

/// Request `k` of a run over `rows` (a model with one input): rows `k*batch ..` cycling.
pub fn from_rows(
    spec: &InputSpec,
    rows: &[Vec<f64>],
    batch: usize,
    k: usize,
) -> Result<TensorValues, String> {
    if rows.is_empty() {
        return Err("the rows file holds no rows".into());
    }
    let mut shape = concrete_shape(spec, batch);
    let width = rows[0].len();
    if let Some(bad) = rows.iter().position(|r| r.len() != width) {
        return Err(format!(
            "row {bad} has {} values, row 0 has {width}",
            rows[bad].len()
        ));
    }
    if shape.len() == 2 {
        shape[1] = width as i64;
    }
    let data = (0..batch)
        .flat_map(|j| rows[(k * batch + j) % rows.len()].iter().copied())
        .collect();
    Ok(TensorValues {
        name: spec.name.clone(),
        datatype: spec.datatype.clone(),
        shape,
        values: Values::Num(data),
    })
}

pub fn read_rows(path: &Path) -> Result<Vec<Vec<f64>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: expected a JSON array of rows of numbers: {e}",
            path.display()
        )
    })
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

/// The inputs of a complete V2 JSON inference request.
pub fn read_request_file(path: &Path) -> Result<Vec<TensorValues>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let req: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let inputs = req["inputs"]
        .as_array()
        .ok_or_else(|| format!("{}: no \"inputs\" array", path.display()))?;
    inputs
        .iter()
        .map(|i| {
            let name = i["name"]
                .as_str()
                .ok_or("an input has no name")?
                .to_string();
            let datatype = i["datatype"]
                .as_str()
                .ok_or("an input has no datatype")?
                .to_string();
            let shape: Vec<i64> = serde_json::from_value(i["shape"].clone())
                .map_err(|e| format!("input '{name}' shape: {e}"))?;
            let mut flat = Vec::new();
            flatten(&i["data"], &mut flat);
            let values = match datatype.as_str() {
                "BOOL" => Values::Bool(flat.iter().map(|v| v.as_bool().unwrap_or(false)).collect()),
                "BYTES" => Values::Bytes(
                    flat.iter()
                        .map(|v| v.as_str().unwrap_or_default().as_bytes().to_vec())
                        .collect(),
                ),
                _ => Values::Num(flat.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect()),
            };
            Ok(TensorValues {
                name,
                datatype,
                shape,
                values,
            })
        })
        .collect()
}

fn json_values(t: &TensorValues) -> Value {
    match &t.values {
        Values::Bool(v) => json!(v),
        Values::Bytes(v) => json!(
            v.iter()
                .map(|b| String::from_utf8_lossy(b))
                .collect::<Vec<_>>()
        ),
        Values::Num(v) => match t.datatype.as_str() {
            "FP32" | "FP16" => json!(v.iter().map(|&x| x as f32).collect::<Vec<_>>()),
            "FP64" => json!(v),
            dt if dt.starts_with("UINT") => json!(v.iter().map(|&x| x as u64).collect::<Vec<_>>()),
            _ => json!(v.iter().map(|&x| x as i64).collect::<Vec<_>>()),
        },
    }
}

/// Little-endian bytes as the binary extension and gRPC raw contents carry them.
pub fn le_bytes(t: &TensorValues) -> Vec<u8> {
    let mut out = Vec::new();
    match &t.values {
        Values::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Values::Bytes(v) => {
            for b in v {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
        Values::Num(v) => {
            for &x in v {
                match t.datatype.as_str() {
                    "FP16" => out.extend_from_slice(&half::f16::from_f64(x).to_le_bytes()),
                    "FP32" => out.extend_from_slice(&(x as f32).to_le_bytes()),
                    "FP64" => out.extend_from_slice(&x.to_le_bytes()),
                    "INT8" => out.extend_from_slice(&(x as i8).to_le_bytes()),
                    "INT16" => out.extend_from_slice(&(x as i16).to_le_bytes()),
                    "INT32" => out.extend_from_slice(&(x as i32).to_le_bytes()),
                    "UINT8" => out.push(x as u8),
                    "UINT16" => out.extend_from_slice(&(x as u16).to_le_bytes()),
                    "UINT32" => out.extend_from_slice(&(x as u32).to_le_bytes()),
                    "UINT64" => out.extend_from_slice(&(x as u64).to_le_bytes()),
                    _ => out.extend_from_slice(&(x as i64).to_le_bytes()),
                }
            }
        }
    }
    out
}

pub fn encode(protocol: Protocol, model: &str, version: &str, inputs: &[TensorValues]) -> Body {
    match protocol {
        Protocol::RestJson => {
            // Field order as tritonclient and wrk scripts send it: name, shape, datatype, data.
            #[derive(serde::Serialize)]
            struct Input<'a> {
                name: &'a str,
                shape: &'a [i64],
                datatype: &'a str,
                data: Value,
            }
            #[derive(serde::Serialize)]
            struct Request<'a> {
                inputs: Vec<Input<'a>>,
            }
            let req = Request {
                inputs: inputs
                    .iter()
                    .map(|t| Input {
                        name: &t.name,
                        shape: &t.shape,
                        datatype: &t.datatype,
                        data: json_values(t),
                    })
                    .collect(),
            };
            let bytes = serde_json::to_vec(&req).unwrap_or_default();
            Body::Rest {
                bytes: Bytes::from(bytes),
                header_len: None,
            }
        }
        Protocol::RestBinary => {
            let raws: Vec<Vec<u8>> = inputs.iter().map(le_bytes).collect();
            let header_inputs: Vec<Value> = inputs
                .iter()
                .zip(&raws)
                .map(|(t, raw)| {
                    json!({"name": t.name, "shape": t.shape, "datatype": t.datatype,
                                       "parameters": {"binary_data_size": raw.len()}})
                })
                .collect();
            let mut body =
                json!({"inputs": header_inputs, "parameters": {"binary_data_output": true}})
                    .to_string()
                    .into_bytes();
            let header_len = body.len();
            raws.iter().for_each(|r| body.extend_from_slice(r));
            Body::Rest {
                bytes: Bytes::from(body),
                header_len: Some(header_len),
            }
        }
        Protocol::Grpc => Body::Grpc(Bytes::from(prost::Message::encode_to_vec(
            &pb::ModelInferRequest {
                model_name: model.to_string(),
                model_version: version.to_string(),
                inputs: inputs
                    .iter()
                    .map(|t| pb::model_infer_request::InferInputTensor {
                        name: t.name.clone(),
                        datatype: t.datatype.clone(),
                        shape: t.shape.clone(),
                        ..Default::default()
                    })
                    .collect(),
                raw_input_contents: inputs.iter().map(le_bytes).collect(),
                ..Default::default()
            },
        ))),
    }
}

/// `variants` input sets: from `rows` when given, else random from `specs` with `seed`.
pub fn input_sets(
    specs: &[InputSpec],
    rows: Option<&[Vec<f64>]>,
    batch: usize,
    variants: usize,
    seed: u64,
) -> Result<Vec<Vec<TensorValues>>, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..variants.max(1))
        .map(|k| match rows {
            Some(rows) => {
                let [spec] = specs else {
                    return Err(format!(
                        "--rows needs a model with one input; this one has {}",
                        specs.len()
                    ));
                };
                Ok(vec![from_rows(spec, rows, batch, k)?])
            }
            None => Ok(generate(specs, batch, &mut rng)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InputSpec {
        InputSpec {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![-1, 3],
        }
    }

    #[test]
    fn generation_is_seeded_and_shaped() {
        let a = input_sets(&[spec()], None, 4, 2, 7).unwrap();
        let b = input_sets(&[spec()], None, 4, 2, 7).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0][0].shape, vec![4, 3]);
        assert_ne!(a[0], a[1]);
        let Values::Num(v) = &a[0][0].values else {
            panic!()
        };
        assert_eq!(v.len(), 12);
    }

    #[test]
    fn rows_cycle_in_order() {
        let rows = vec![
            vec![1.0, 2.0, 3.0],
            vec![4.0, 5.0, 6.0],
            vec![7.0, 8.0, 9.0],
        ];
        let t = from_rows(&spec(), &rows, 2, 1).unwrap();
        assert_eq!(t.values, Values::Num(vec![7.0, 8.0, 9.0, 1.0, 2.0, 3.0]));
        assert_eq!(t.shape, vec![2, 3]);
    }

    #[test]
    fn encodings() {
        let t = TensorValues {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            values: Values::Num(vec![0.5, 1.0]),
        };
        let Body::Rest {
            bytes,
            header_len: None,
        } = encode(Protocol::RestJson, "m", "", std::slice::from_ref(&t))
        else {
            panic!()
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["inputs"][0]["data"], json!([0.5, 1.0]));
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(
            text.find("\"datatype\"").unwrap() < text.find("\"data\"").unwrap(),
            "{text}"
        );
        let Body::Rest {
            bytes,
            header_len: Some(n),
        } = encode(Protocol::RestBinary, "m", "", std::slice::from_ref(&t))
        else {
            panic!()
        };
        assert_eq!(
            &bytes[n..],
            &[0.5f32.to_le_bytes(), 1.0f32.to_le_bytes()].concat()[..]
        );
        let Body::Grpc(message) = encode(Protocol::Grpc, "m", "2", &[t]) else {
            panic!()
        };
        let g = <pb::ModelInferRequest as prost::Message>::decode(message).unwrap();
        assert_eq!(g.model_version, "2");
        assert_eq!(g.raw_input_contents[0].len(), 8);
    }
}
