//! Between the protocol's protobuf messages and the core types: typed `contents` and
//! little-endian `raw_input_contents` in, `raw_output_contents` out (the form `tritonclient.grpc`
//! decodes).

use super::pb;
use crate::core::infer::{InferRequest, InferResponse, ParamValue, Parameters};
use crate::core::tensor::{ByteStrings, DataType, Tensor, TensorData, parse_datatype};
use crate::error::{Error, Result};

pub fn param_from_pb(key: &str, p: &pb::InferParameter) -> Result<ParamValue> {
    use pb::infer_parameter::ParameterChoice as C;
    match &p.parameter_choice {
        Some(C::BoolParam(b)) => Ok(ParamValue::Bool(*b)),
        Some(C::Int64Param(i)) => Ok(ParamValue::Int(*i)),
        Some(C::Uint64Param(u)) => Ok(ParamValue::Uint(*u)),
        Some(C::DoubleParam(d)) => Ok(ParamValue::Double(*d)),
        Some(C::StringParam(s)) => Ok(ParamValue::String(s.clone())),
        None => Err(Error::invalid(format!("parameter '{key}' has no value"))),
    }
}

pub fn param_to_pb(v: &ParamValue) -> pb::InferParameter {
    use pb::infer_parameter::ParameterChoice as C;
    let choice = match v {
        ParamValue::Bool(b) => C::BoolParam(*b),
        ParamValue::Int(i) => C::Int64Param(*i),
        ParamValue::Uint(u) => C::Uint64Param(*u),
        ParamValue::Double(d) => C::DoubleParam(*d),
        ParamValue::String(s) => C::StringParam(s.clone()),
    };
    pb::InferParameter {
        parameter_choice: Some(choice),
    }
}

fn parameters<'a>(
    map: impl IntoIterator<Item = (&'a String, &'a pb::InferParameter)>,
) -> Result<Parameters> {
    map.into_iter()
        .map(|(k, v)| param_from_pb(k, v).map(|v| (k.clone(), v)))
        .collect()
}

/// Narrows the protocol's 32-bit typed fields to the element type the datatype names.
fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    name: &str,
    dt: DataType,
    v: Vec<S>,
) -> Result<Vec<T>> {
    v.into_iter()
        .enumerate()
        .map(|(i, x)| {
            T::try_from(x).map_err(|_| {
                Error::invalid(format!(
                    "input '{name}' element {i} is {x}, outside the {dt} range"
                ))
            })
        })
        .collect()
}

/// Reads the typed `contents` field that `dt` uses, refusing data put in another field.
fn typed_contents(name: &str, dt: DataType, c: pb::InferTensorContents) -> Result<TensorData> {
    let filled = [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ];
    let field = match dt {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 => {
            return Err(Error::invalid(format!(
                "input '{name}' is FP16, which has no typed contents field; send it in raw_input_contents"
            )));
        }
    };
    if let Some((other, n)) = filled.iter().find(|(f, n)| *f != field && *n > 0) {
        return Err(Error::invalid(format!(
            "input '{name}' is {dt}, whose elements go in {field}, but {other} holds {n} elements"
        )));
    }
    Ok(match dt {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(name, dt, c.int_contents)?),
        DataType::Int16 => TensorData::Int16(narrow(name, dt, c.int_contents)?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(name, dt, c.uint_contents)?),
        DataType::Uint16 => TensorData::Uint16(narrow(name, dt, c.uint_contents)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => {
            let total = c.bytes_contents.iter().map(Vec::len).sum();
            let mut out = ByteStrings::with_capacity(c.bytes_contents.len(), total);
            for b in &c.bytes_contents {
                out.push(b)
                    .map_err(|e| Error::invalid(format!("input '{name}': {e}")))?;
            }
            TensorData::Bytes(out)
        }
        DataType::Fp16 => unreachable!("handled above"),
    })
}

/// Turns a `ModelInferRequest` into a core request (the model and version stay in `req`).
pub fn decode_request(req: pb::ModelInferRequest) -> Result<InferRequest> {
    let raw = req.raw_input_contents;
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(Error::invalid(format!(
            "raw_input_contents has {} entries but there are {} inputs; give one per input, in order",
            raw.len(),
            req.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let name = input.name;
        let dt = parse_datatype(&input.datatype)
            .map_err(|e| Error::invalid(format!("input '{name}': {e}")))?;
        let data = match (raw.next(), input.contents) {
            (Some(_), Some(c)) if c != pb::InferTensorContents::default() => {
                return Err(Error::invalid(format!(
                    "input '{name}' has both contents and raw_input_contents; use one form for all inputs"
                )));
            }
            (Some(bytes), _) => TensorData::from_le_bytes(dt, &bytes)
                .map_err(|e| Error::invalid(format!("input '{name}': {e}")))?,
            (None, Some(c)) => typed_contents(&name, dt, c)?,
            (None, None) => {
                return Err(Error::invalid(format!(
                    "input '{name}' has neither contents nor raw_input_contents"
                )));
            }
        };
        inputs.push(Tensor::new(name, input.shape, data));
    }
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for out in req.outputs {
        if out.parameters.contains_key("classification") {
            return Err(Error::invalid(format!(
                "output '{}': the classification extension is not supported; request the raw output",
                out.name
            )));
        }
        outputs.push(out.name);
    }
    Ok(InferRequest {
        id: (!req.id.is_empty()).then_some(req.id),
        inputs,
        outputs,
        parameters: parameters(&req.parameters)?,
    })
}

/// Encodes outputs as `raw_output_contents`, which `tritonclient.grpc`'s `as_numpy` requires.
pub fn encode_response(resp: InferResponse) -> pb::ModelInferResponse {
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    let mut raw = Vec::with_capacity(resp.outputs.len());
    for t in resp.outputs {
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name: t.name,
            datatype: t.data.datatype().as_str().to_string(),
            shape: t.shape,
            parameters: Default::default(),
            contents: None,
        });
        raw.push(t.data.to_le_bytes());
    }
    pb::ModelInferResponse {
        model_name: resp.model_name,
        model_version: resp.model_version.to_string(),
        id: resp.id.unwrap_or_default(),
        parameters: resp
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), param_to_pb(v)))
            .collect(),
        outputs,
        raw_output_contents: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(
        name: &str,
        dt: &str,
        shape: Vec<i64>,
        contents: Option<pb::InferTensorContents>,
    ) -> pb::model_infer_request::InferInputTensor {
        pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    #[test]
    fn typed_and_raw_inputs_decode_to_the_same_tensor() {
        let typed = pb::ModelInferRequest {
            inputs: vec![input(
                "x",
                "INT16",
                vec![2],
                Some(pb::InferTensorContents {
                    int_contents: vec![-3, 300],
                    ..Default::default()
                }),
            )],
            ..Default::default()
        };
        let raw = pb::ModelInferRequest {
            inputs: vec![input("x", "INT16", vec![2], None)],
            raw_input_contents: vec![
                [(-3i16).to_le_bytes(), 300i16.to_le_bytes()]
                    .concat()
                    .into(),
            ],
            ..Default::default()
        };
        let a = decode_request(typed).unwrap();
        let b = decode_request(raw).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.inputs[0].data, TensorData::Int16(vec![-3, 300]));
    }

    #[test]
    fn misplaced_or_out_of_range_contents_are_named() {
        let req = |dt: &str, c: pb::InferTensorContents| pb::ModelInferRequest {
            inputs: vec![input("x", dt, vec![1], Some(c))],
            ..Default::default()
        };
        let e = decode_request(req(
            "FP32",
            pb::InferTensorContents {
                int_contents: vec![1],
                ..Default::default()
            },
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("fp32_contents, but int_contents holds 1"),
            "{e}"
        );
        let e = decode_request(req(
            "UINT8",
            pb::InferTensorContents {
                uint_contents: vec![256],
                ..Default::default()
            },
        ))
        .unwrap_err();
        assert!(e.to_string().contains("outside the UINT8 range"), "{e}");
        let e = decode_request(req("FP16", pb::InferTensorContents::default())).unwrap_err();
        assert!(e.to_string().contains("raw_input_contents"), "{e}");
        let e = decode_request(pb::ModelInferRequest {
            inputs: vec![
                input("x", "FP32", vec![1], None),
                input("y", "FP32", vec![1], None),
            ],
            raw_input_contents: vec![vec![0; 4].into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("1 entries but there are 2 inputs"),
            "{e}"
        );
    }

    #[test]
    fn responses_use_raw_output_contents() {
        let r = encode_response(InferResponse {
            model_name: "m".into(),
            model_version: 3,
            id: Some("q".into()),
            outputs: vec![Tensor::new("y", vec![2], TensorData::Fp32(vec![1.0, 2.0]))],
            parameters: Parameters::new(),
        });
        assert_eq!(r.model_version, "3");
        assert_eq!(r.outputs[0].datatype, "FP32");
        assert!(r.outputs[0].contents.is_none());
        assert_eq!(
            r.raw_output_contents[0],
            [1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()
        );
    }
}
