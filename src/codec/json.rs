//! V2 JSON request and response bodies (the Open Inference Protocol's REST form), with the
//! binary tensor data extension's parts in [`super::binary`].
//!
//! Decoding is bounded: tensor data is parsed from the borrowed text into storage sized once from
//! that text (see [`TensorData::from_json`]), at most 4 bytes per body byte (one-digit INT64
//! values); the request's structure (inputs, outputs, shapes, parameters, which cost more per
//! byte than tensor data) has capped counts, so it adds at most a fixed few MiB; parameters are
//! scalars, never a `serde_json::Value` tree; and tensor data nested deeper than serde_json's
//! recursion limit (128) is an error.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::binary;
use crate::core::infer::{InferRequest, InferResponse, ParamValue, Parameters};
use crate::core::tensor::{Tensor, TensorData, element_count, parse_datatype};
use crate::error::{Error, Result};

/// Most dimensions a shape may have.
pub const MAX_RANK: usize = 64;
/// Most inputs, and most outputs, a request may name.
pub const MAX_TENSORS: usize = 1024;
/// Most entries in one `parameters` object.
pub const MAX_PARAMETERS: usize = 32;

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<ParamsJson>,
    #[serde(borrow)]
    inputs: Capped<InputJson<'a>, Inputs>,
    #[serde(default, borrow)]
    outputs: Option<Capped<OutputJson<'a>, Outputs>>,
}

struct InputJson<'a> {
    name: Cow<'a, str>,
    shape: Vec<i64>,
    datatype: Cow<'a, str>,
    parameters: Parameters,
    /// Kept as borrowed text and parsed once the datatype and shape are known, whatever the key
    /// order, so its storage can be sized in one allocation.
    data: Option<&'a RawValue>,
}

/// A string borrowed from the body when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// A length cap and what it limits, for [`Capped`].
trait Cap {
    const MAX: usize;
    const WHAT: &'static str;
}
struct Dims;
impl Cap for Dims {
    const MAX: usize = MAX_RANK;
    const WHAT: &'static str = "dimensions in a shape";
}
struct Inputs;
impl Cap for Inputs {
    const MAX: usize = MAX_TENSORS;
    const WHAT: &'static str = "inputs";
}
struct Outputs;
impl Cap for Outputs {
    const MAX: usize = MAX_TENSORS;
    const WHAT: &'static str = "outputs";
}

/// A JSON array of at most `C::MAX` elements, refused as soon as one more is seen.
struct Capped<T, C>(Vec<T>, PhantomData<C>);

impl<'de, T: Deserialize<'de>, C: Cap> Deserialize<'de> for Capped<T, C> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, C>(PhantomData<(T, C)>);
        impl<'de, T: Deserialize<'de>, C: Cap> Visitor<'de> for V<T, C> {
            type Value = Capped<T, C>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of at most {} {}", C::MAX, C::WHAT)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if out.len() == C::MAX {
                        return Err(de::Error::custom(format!(
                            "more than {} {} (the limit)",
                            C::MAX,
                            C::WHAT
                        )));
                    }
                    out.push(item);
                }
                Ok(Capped(out, PhantomData))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A `parameters` object: at most [`MAX_PARAMETERS`] scalar entries, parsed straight into
/// [`Parameters`].
#[derive(Default)]
struct ParamsJson(Parameters);

/// One parameter value: a boolean, a number or a string.
struct ParamJson(ParamValue);

impl<'de> Deserialize<'de> for ParamJson {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ParamJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean, a number or a string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ParamJson, E> {
                Ok(ParamJson(ParamValue::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamJson, E> {
                Ok(ParamJson(ParamValue::Int(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamJson, E> {
                Ok(ParamJson(match i64::try_from(v) {
                    Ok(i) => ParamValue::Int(i),
                    Err(_) => ParamValue::Uint(v),
                }))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamJson, E> {
                Ok(ParamJson(ParamValue::Double(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamJson, E> {
                Ok(ParamJson(ParamValue::String(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ParamsJson {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamsJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of parameters")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ParamsJson, A::Error> {
                let mut out = Parameters::new();
                while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
                    if out.len() == MAX_PARAMETERS {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_PARAMETERS} parameters in one object (the limit)"
                        )));
                    }
                    let ParamJson(value) = map.next_value().map_err(|e: A::Error| {
                        de::Error::custom(format!("parameter '{key}': {}", strip_pos(&e)))
                    })?;
                    out.insert(key.into_owned(), value);
                }
                Ok(ParamsJson(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The message of a nested error without serde_json's position, which the outer error adds.
fn strip_pos(e: &impl fmt::Display) -> String {
    crate::core::tensor::strip_position(e.to_string())
}

impl<'de: 'a, 'a> Deserialize<'de> for InputJson<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = InputJson<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an input tensor object")
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<InputJson<'a>, A::Error> {
                let (mut name, mut shape, mut datatype) = (None, None, None);
                let (mut parameters, mut data) = (None, None);
                while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
                    match key.as_ref() {
                        "name" => name = Some(map.next_value::<CowStr<'de>>()?.0),
                        "shape" => shape = Some(map.next_value::<Capped<i64, Dims>>()?.0),
                        "datatype" => datatype = Some(map.next_value::<CowStr<'de>>()?.0),
                        "parameters" => parameters = map.next_value::<Option<ParamsJson>>()?,
                        "data" => data = Some(map.next_value::<&'de RawValue>()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(InputJson {
                    name: name.ok_or_else(|| de::Error::missing_field("name"))?,
                    shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
                    datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
                    parameters: parameters.unwrap_or_default().0,
                    data,
                })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

#[derive(Deserialize)]
struct OutputJson<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Option<ParamsJson>,
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

/// A parameter as JSON.
pub fn param_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Bool(b) => Value::Bool(*b),
        ParamValue::Int(i) => Value::from(*i),
        ParamValue::Uint(u) => Value::from(*u),
        ParamValue::Double(d) => Value::from(*d),
        ParamValue::String(s) => Value::String(s.clone()),
    }
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
    let (json, mut tail) = binary::split_body(body, header_len)?;
    let req: RequestJson<'_> = serde_json::from_slice(json)
        .map_err(|e| Error::invalid(format!("malformed inference request JSON: {e}")))?;

    let mut inputs = Vec::with_capacity(req.inputs.0.len());
    for input in req.inputs.0 {
        let name = input.name.into_owned();
        let owner = format!("input '{name}'");
        let datatype =
            parse_datatype(&input.datatype).map_err(|e| Error::invalid(format!("{owner}: {e}")))?;
        let binary_size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(ParamValue::Int(n)) if *n >= 0 => usize::try_from(*n).ok(),
            Some(ParamValue::Uint(n)) => usize::try_from(*n).ok(),
            Some(other) => {
                return Err(Error::invalid(format!(
                    "{owner}: parameter 'binary_data_size' must be a non-negative integer, not {other:?}"
                )));
            }
        };
        let data = match (
            input.data,
            input.parameters.contains_key("binary_data_size"),
        ) {
            (Some(_), true) => {
                return Err(Error::invalid(format!(
                    "{owner} has both 'data' and a 'binary_data_size' parameter; give one"
                )));
            }
            (Some(raw), false) => {
                TensorData::from_json(datatype, raw.get(), element_count(&input.shape))
                    .map_err(|e| Error::invalid(format!("{owner}: {e}")))?
            }
            (None, true) => {
                // A size that does not fit in usize cannot fit in the body either.
                let size = binary_size.unwrap_or(usize::MAX);
                let mine = tail.take(&owner, size)?;
                TensorData::from_le_bytes(datatype, mine)
                    .map_err(|e| Error::invalid(format!("{owner}: {e}")))?
            }
            (None, false) => {
                return Err(Error::invalid(format!(
                    "{owner} has neither 'data' nor binary data"
                )));
            }
        };
        inputs.push(Tensor::new(name, input.shape, data));
    }
    tail.finish()?;

    let parameters = req.parameters.unwrap_or_default().0;
    let mut format = OutputFormat {
        binary_by_default: bool_param(&parameters, "binary_data_output", "request")?
            .unwrap_or(false),
        binary: HashMap::new(),
    };
    let requested = req.outputs.map(|o| o.0).unwrap_or_default();
    let mut outputs = Vec::with_capacity(requested.len());
    for out in requested {
        let name = out.name.into_owned();
        let params = out.parameters.unwrap_or_default().0;
        if params.contains_key("classification") {
            return Err(Error::invalid(format!(
                "output '{name}': the classification extension is not supported; request the raw output"
            )));
        }
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
            OutputTensorJson {
                name: &t.name,
                datatype: t.datatype().as_str(),
                shape: &t.shape,
                parameters: binary.then(|| BinarySize {
                    binary_data_size: binary::append(&mut tail, &t.data),
                }),
                data: (!binary).then_some(&t.data),
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
    use crate::core::tensor::{ByteStrings, DataType};

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
                "input 'a': element 1 is the string \"x\", expected an integer in \
                 -2147483648..=2147483647 (INT32)"
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
        assert_eq!(
            req.inputs[1].data,
            TensorData::Bytes(ByteStrings::from_items(["abc"]).unwrap())
        );
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
    fn int64_values_outside_the_range_are_a_400_naming_input_and_range() {
        let body = br#"{"inputs":[{"name":"ids","shape":[2],"datatype":"INT64",
            "data":[1, 9223372036854775808.0]}]}"#;
        let e = decode_request(body, None).unwrap_err();
        assert!(matches!(e, crate::error::Error::InvalidInput(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "input 'ids': element 1 is 9223372036854776000, expected an integer in \
             -9223372036854775808..=9223372036854775807 (INT64)"
        );
    }

    #[test]
    fn hostile_structure_is_refused_cleanly() {
        let deep = |inner: &str| {
            format!(r#"{{"inputs":[{{"name":"a","shape":[1],"datatype":"FP32",{inner}}}]}}"#)
        };
        let nested = format!("\"data\":{}1{}", "[".repeat(50_000), "]".repeat(50_000));
        let params = format!(
            "\"parameters\":{{\"p\":{}1{}}},\"data\":[1]",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        let unknown = format!(
            "\"extra\":{}1{},\"data\":[1]",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        let many_params: Vec<String> = (0..=MAX_PARAMETERS)
            .map(|i| format!("\"p{i}\":1"))
            .collect();
        let many_params = format!("\"parameters\":{{{}}},\"data\":[1]", many_params.join(","));
        let rank = format!(
            "\"shape\":[{}],\"data\":[1]",
            vec!["1"; MAX_RANK + 1].join(",")
        );
        let cases = [
            (deep(&nested), "input 'a': recursion limit exceeded"),
            (deep(&params), "parameter 'p': invalid type: sequence"),
            (deep(&many_params), "more than 32 parameters in one object"),
            (deep(&rank), "more than 64 dimensions in a shape"),
            (
                deep("\"data\":[1,2]"),
                "input 'a': more than the 1 elements its shape holds",
            ),
            (
                format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
                "malformed inference request JSON",
            ),
        ];
        for (body, want) in cases {
            let e = decode_request(body.as_bytes(), None).unwrap_err();
            assert!(matches!(e, crate::error::Error::InvalidInput(_)), "{e:?}");
            assert!(e.to_string().contains(want), "{e} does not contain {want}");
        }
        // Skipping an unknown field is iterative (one byte of state per level): harmless.
        assert!(decode_request(deep(&unknown).as_bytes(), None).is_ok());
        let outputs: Vec<String> = (0..=MAX_TENSORS)
            .map(|i| format!("{{\"name\":\"o{i}\"}}"))
            .collect();
        let body = format!(r#"{{"inputs":[],"outputs":[{}]}}"#, outputs.join(","));
        let e = decode_request(body.as_bytes(), None).unwrap_err();
        assert!(e.to_string().contains("more than 1024 outputs"), "{e}");
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
