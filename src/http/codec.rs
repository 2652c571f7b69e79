//! The REST wire format: V2 JSON bodies and Triton's binary tensor data extension.
//!
//! A request body is a JSON header, optionally followed by raw tensor bytes when the
//! `Inference-Header-Content-Length` header gives the JSON's length. Inputs with a
//! `binary_data_size` parameter take their bytes from that tail, in input order. Outputs are
//! returned as binary when asked (`binary_data` per output, or `binary_data_output` for all).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::core::infer::{InferRequest, InferResponse, ParamValue, Parameters};
use crate::core::tensor::{DataSeed, DataType, Tensor, TensorData, parse_datatype, strip_position};
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<OutputJson<'a>>>,
}

struct InputJson<'a> {
    name: Cow<'a, str>,
    shape: Vec<i64>,
    datatype: Cow<'a, str>,
    parameters: Option<Map<String, Value>>,
    data: DataField<'a>,
}

/// An input's `data`: parsed straight into typed storage when `datatype` came first (the usual
/// order, and what tritonclient sends), else kept as raw text and parsed once the datatype is known.
enum DataField<'a> {
    Absent,
    Parsed(TensorData),
    Raw(&'a RawValue),
}

/// A string borrowed from the body when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'de>, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for InputJson<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = InputJson<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an input tensor object")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InputJson<'a>, A::Error> {
                let (mut name, mut shape, mut datatype, mut parameters) = (None, None, None, None);
                let mut data = DataField::Absent;
                while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
                    match key.as_ref() {
                        "name" => name = Some(map.next_value::<CowStr<'de>>()?.0),
                        "shape" => shape = Some(map.next_value::<Vec<i64>>()?),
                        "datatype" => datatype = Some(map.next_value::<CowStr<'de>>()?.0),
                        "parameters" => {
                            parameters = map.next_value::<Option<Map<String, Value>>>()?
                        }
                        "data" => {
                            data = match datatype.as_deref().and_then(DataType::parse) {
                                Some(dt) => DataField::Parsed(
                                    map.next_value_seed(DataSeed(dt)).map_err(|e| {
                                        let who =
                                            name.as_deref().map_or("an input".to_string(), |n| {
                                                format!("input '{n}'")
                                            });
                                        de::Error::custom(format!(
                                            "{who}: {}",
                                            strip_position(e.to_string())
                                        ))
                                    })?,
                                ),
                                None => DataField::Raw(map.next_value::<&'de RawValue>()?),
                            }
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(InputJson {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
                    datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
                    parameters,
                    data,
                })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct OutputJson<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// How the caller wants each output encoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputFormat {
    /// `binary_data_output` at request level: the default for every output.
    pub binary_by_default: bool,
    /// Per-output `binary_data` overrides.
    pub binary: HashMap<String, bool>,
}

impl OutputFormat {
    pub fn is_binary(&self, name: &str) -> bool {
        self.binary
            .get(name)
            .copied()
            .unwrap_or(self.binary_by_default)
    }
}

fn param_value(key: &str, v: Value) -> Result<ParamValue> {
    Ok(match v {
        Value::Bool(b) => ParamValue::Bool(b),
        Value::String(s) => ParamValue::String(s),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ParamValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ParamValue::Uint(u)
            } else {
                ParamValue::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        other => {
            return Err(Error::invalid(format!(
                "parameter '{key}' must be a boolean, a number or a string, not {other}"
            )));
        }
    })
}

/// A parameter as JSON (the inverse of [`param_value`]).
pub fn param_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Bool(b) => Value::Bool(*b),
        ParamValue::Int(i) => Value::from(*i),
        ParamValue::Uint(u) => Value::from(*u),
        ParamValue::Double(d) => Value::from(*d),
        ParamValue::String(s) => Value::String(s.clone()),
    }
}

fn parameters(map: Option<Map<String, Value>>) -> Result<Parameters> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| param_value(&k, v).map(|v| (k, v)))
        .collect()
}

fn bool_param(params: &Parameters, key: &str, owner: &str) -> Result<Option<bool>> {
    match params.get(key) {
        None => Ok(None),
        Some(ParamValue::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::invalid(format!(
            "{owner}: parameter '{key}' must be true or false, not {other:?}"
        ))),
    }
}

/// Decodes a request body. `header_len` is `Inference-Header-Content-Length` when present.
pub fn decode_request(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<(InferRequest, OutputFormat)> {
    let (json, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(Error::invalid(format!(
                "Inference-Header-Content-Length is {n}, but the body has only {} bytes",
                body.len()
            )));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let req: RequestJson<'_> = serde_json::from_slice(json).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("input '") || msg.starts_with("an input:") {
            // A tensor's data did not fit its datatype: the JSON itself is fine.
            Error::invalid(strip_position(msg))
        } else {
            Error::invalid(format!("malformed inference request JSON: {msg}"))
        }
    })?;

    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let name = input.name.into_owned();
        let owner = format!("input '{name}'");
        let datatype =
            parse_datatype(&input.datatype).map_err(|e| Error::invalid(format!("{owner}: {e}")))?;
        let params = parameters(input.parameters)?;
        let binary_size = match params.get("binary_data_size") {
            None => None,
            Some(ParamValue::Int(n)) if *n >= 0 => Some(*n as usize),
            Some(ParamValue::Uint(n)) => Some(*n as usize),
            Some(other) => {
                return Err(Error::invalid(format!(
                    "{owner}: parameter 'binary_data_size' must be a non-negative integer, not {other:?}"
                )));
            }
        };
        let data = match (input.data, binary_size) {
            (DataField::Parsed(_) | DataField::Raw(_), Some(_)) => {
                return Err(Error::invalid(format!(
                    "{owner} has both 'data' and a 'binary_data_size' parameter; give one"
                )));
            }
            (DataField::Parsed(data), None) => data,
            (DataField::Raw(raw), None) => TensorData::from_json(datatype, raw.get())
                .map_err(|e| Error::invalid(format!("{owner}: {e}")))?,
            (DataField::Absent, Some(size)) => {
                if header_len.is_none() {
                    return Err(Error::invalid(format!(
                        "{owner} has binary data, but the request has no Inference-Header-Content-Length header"
                    )));
                }
                if size > binary.len() {
                    return Err(Error::invalid(format!(
                        "{owner} claims {size} bytes of binary data, but only {} remain in the body",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                TensorData::from_le_bytes(datatype, mine)
                    .map_err(|e| Error::invalid(format!("{owner}: {e}")))?
            }
            (DataField::Absent, None) => {
                return Err(Error::invalid(format!(
                    "{owner} has neither 'data' nor binary data"
                )));
            }
        };
        inputs.push(Tensor::new(name, input.shape, data));
    }
    if !binary.is_empty() {
        return Err(Error::invalid(format!(
            "the body has {} bytes of binary data that no input claims",
            binary.len()
        )));
    }

    let parameters = parameters(req.parameters)?;
    let mut format = OutputFormat {
        binary_by_default: bool_param(&parameters, "binary_data_output", "request")?
            .unwrap_or(false),
        binary: HashMap::new(),
    };
    let mut outputs = Vec::new();
    for out in req.outputs.unwrap_or_default() {
        let name = out.name.into_owned();
        let params = parameters_of_output(out.parameters, &name)?;
        if let Some(b) = bool_param(&params, "binary_data", &format!("output '{name}'"))? {
            format.binary.insert(name.clone(), b);
        }
        outputs.push(name);
    }
    Ok((
        InferRequest {
            id: req.id.map(Cow::into_owned),
            inputs,
            outputs,
            parameters,
        },
        format,
    ))
}

fn parameters_of_output(map: Option<Map<String, Value>>, name: &str) -> Result<Parameters> {
    let params = parameters(map)?;
    if params.contains_key("classification") {
        return Err(Error::invalid(format!(
            "output '{name}': the classification extension is not supported; request the raw output"
        )));
    }
    Ok(params)
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensorJson<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutputTensorJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

/// Encodes a response. Returns the body and, when binary outputs follow the JSON, the JSON's
/// length for the `Inference-Header-Content-Length` header.
pub fn encode_response(
    resp: &InferResponse,
    format: &OutputFormat,
) -> Result<(Vec<u8>, Option<usize>)> {
    let mut tail = Vec::new();
    let outputs = resp
        .outputs
        .iter()
        .map(|t| {
            let binary = format.is_binary(&t.name);
            if binary {
                let before = tail.len();
                t.data.write_le_bytes(&mut tail);
                OutputTensorJson {
                    name: &t.name,
                    datatype: t.datatype().as_str(),
                    shape: &t.shape,
                    parameters: Some(BinarySize {
                        binary_data_size: tail.len() - before,
                    }),
                    data: None,
                }
            } else {
                OutputTensorJson {
                    name: &t.name,
                    datatype: t.datatype().as_str(),
                    shape: &t.shape,
                    parameters: None,
                    data: Some(&t.data),
                }
            }
        })
        .collect();
    let json = ResponseJson {
        model_name: &resp.model_name,
        model_version: resp.model_version.to_string(),
        id: resp.id.as_deref(),
        outputs,
    };
    let mut body = Vec::with_capacity(256 + tail.len());
    serde_json::to_writer(&mut body, &json).map_err(|e| Error::invalid(e.to_string()))?;
    if tail.is_empty() && !resp.outputs.iter().any(|t| format.is_binary(&t.name)) {
        return Ok((body, None));
    }
    let header_len = body.len();
    body.extend_from_slice(&tail);
    Ok((body, Some(header_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::tensor::DataType;

    #[test]
    fn json_request_with_nested_data_id_outputs_and_parameters() {
        let body = br#"{"id":"r1","parameters":{"timeout":5,"binary_data_output":true},
            "inputs":[{"name":"X","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],
            "outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"z"}]}"#;
        let (req, fmt) = decode_request(body, None).unwrap();
        assert_eq!(req.id.as_deref(), Some("r1"));
        assert_eq!(
            req.inputs[0].data,
            TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])
        );
        assert_eq!(req.outputs, vec!["y", "z"]);
        assert_eq!(req.parameters.get("timeout"), Some(&ParamValue::Int(5)));
        assert!(!fmt.is_binary("y"));
        assert!(fmt.is_binary("z"));
    }

    #[test]
    fn data_before_or_after_datatype_decodes_the_same() {
        let first = br#"{"inputs":[{"name":"a","shape":[2],"datatype":"INT32","data":[1,[2]]}]}"#;
        let last = br#"{"inputs":[{"data":[1,[2]],"shape":[2],"name":"a","datatype":"INT32"}]}"#;
        let (a, _) = decode_request(first, None).unwrap();
        let (b, _) = decode_request(last, None).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.inputs[0].data, TensorData::Int32(vec![1, 2]));
        for body in [
            &br#"{"inputs":[{"name":"a","shape":[2],"datatype":"INT32","data":[1,"x"]}]}"#[..],
            &br#"{"inputs":[{"data":[1,"x"],"shape":[2],"name":"a","datatype":"INT32"}]}"#[..],
        ] {
            let e = decode_request(body, None).unwrap_err().to_string();
            assert_eq!(
                e,
                "input 'a': element 1 is the string \"x\", expected an integer in the INT32 range"
            );
        }
        let e = decode_request(
            br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]"#,
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed inference request JSON"),
            "{e}"
        );
        let e = decode_request(
            br#"{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing field `name`"), "{e}");
    }

    #[test]
    fn binary_inputs_are_taken_in_order() {
        let header = br#"{"inputs":[
            {"name":"a","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},
            {"name":"b","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":7}},
            {"name":"c","shape":[1],"datatype":"FP64","data":[0.5]}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&1i32.to_le_bytes());
        body.extend_from_slice(&(-2i32).to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        let (req, _) = decode_request(&body, Some(header.len())).unwrap();
        assert_eq!(req.inputs[0].data, TensorData::Int32(vec![1, -2]));
        assert_eq!(req.inputs[1].data, TensorData::Bytes(vec![b"abc".to_vec()]));
        assert_eq!(req.inputs[2].data, TensorData::Fp64(vec![0.5]));
    }

    #[test]
    fn bad_bodies_get_clear_messages() {
        let cases: Vec<(Vec<u8>, Option<usize>, &str)> = vec![
            (b"{".to_vec(), None, "malformed inference request JSON"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FLOAT","data":[1]}]}"#.to_vec(), None, "unknown datatype 'FLOAT'"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32"}]}"#.to_vec(), None, "neither 'data' nor binary"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":["x"]}]}"#.to_vec(), None, "input 'a': element 0"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#.to_vec(), None, "no Inference-Header-Content-Length"),
            (b"{}".to_vec(), Some(10), "only 2 bytes"),
            (br#"{"inputs":[],"parameters":{"binary_data_output":1}}"#.to_vec(), None, "must be true or false"),
            (br#"{"inputs":[],"outputs":[{"name":"y","parameters":{"classification":2}}]}"#.to_vec(), None, "classification"),
        ];
        for (body, header, want) in cases {
            let e = decode_request(&body, header).unwrap_err();
            assert!(matches!(e, crate::error::Error::InvalidInput(_)), "{e:?}");
            assert!(e.to_string().contains(want), "{e} does not contain {want}");
        }
        let header = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[0u8; 6]);
        let e = decode_request(&body, Some(header.len())).unwrap_err();
        assert!(
            e.to_string()
                .contains("2 bytes of binary data that no input claims"),
            "{e}"
        );
    }

    #[test]
    fn response_mixes_json_and_binary_outputs() {
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: 2,
            id: Some("r".into()),
            outputs: vec![
                Tensor::new("label", vec![2], TensorData::Int64(vec![1, 0])),
                Tensor::new("p", vec![2, 1], TensorData::Fp32(vec![0.25, 0.5])),
            ],
            parameters: Parameters::new(),
        };
        let (body, header) = encode_response(&resp, &OutputFormat::default()).unwrap();
        assert_eq!(header, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model_version"], "2");
        assert_eq!(v["id"], "r");
        assert_eq!(v["outputs"][1]["data"], serde_json::json!([0.25, 0.5]));

        let mut fmt = OutputFormat::default();
        fmt.binary.insert("p".into(), true);
        let (body, header) = encode_response(&resp, &fmt).unwrap();
        let n = header.unwrap();
        let v: Value = serde_json::from_slice(&body[..n]).unwrap();
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert!(v["outputs"][1].get("data").is_none());
        let tail = TensorData::from_le_bytes(DataType::Fp32, &body[n..]).unwrap();
        assert_eq!(tail, TensorData::Fp32(vec![0.25, 0.5]));
    }
}
