//! A model's signature (its input and output tensors) and the validation of requests against it.
//!
//! Every rule a request must satisfy lives here, so REST and gRPC reject the same request with the
//! same message.

use std::fmt;

use crate::core::infer::InferRequest;
use crate::core::tensor::{DataType, Tensor, TensorData, element_count};
use crate::error::{Error, Result};

/// One input or output of a model. `-1` in `shape` marks a dimension of variable size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' ({} {})",
            self.name,
            self.datatype,
            ShapeFmt(&self.shape)
        )
    }
}

/// Formats a shape as `[-1,30]`.
pub struct ShapeFmt<'a>(pub &'a [i64]);

impl fmt::Display for ShapeFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A request that fits the signature: inputs in the model's order, requested outputs resolved.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// One tensor per model input, in the signature's order.
    pub inputs: Vec<Tensor>,
    /// Indices into `Signature::outputs` of the outputs to return, in the caller's order.
    pub outputs: Vec<usize>,
    /// Rows along the first dimension when the request can be merged with others into a batch.
    pub rows: Option<usize>,
}

/// Why a model's inputs and outputs cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the model has no inputs; a served model needs at least one")]
    NoInputs,
}

impl Signature {
    /// A model's signature, refusing what cannot be served: a model without inputs (no request
    /// could name anything, and batching counts rows on the first input).
    pub fn new(
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
    ) -> std::result::Result<Self, SignatureError> {
        if inputs.is_empty() {
            return Err(SignatureError::NoInputs);
        }
        Ok(Self { inputs, outputs })
    }

    /// True when every input and output has a variable first dimension, so requests can be
    /// stacked along it and outputs split back by row.
    pub fn batchable(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first() == Some(&-1))
    }

    /// Why a newer version could not replace this one for existing callers: a different set of
    /// input or output names, datatypes, ranks or fixed dimensions. `None` when compatible.
    pub fn incompatibility(&self, newer: &Signature) -> Option<String> {
        fn side(role: &str, old: &[TensorSpec], new: &[TensorSpec]) -> Option<String> {
            for o in old {
                match new.iter().find(|n| n.name == o.name) {
                    None => return Some(format!("{role} {o} is gone")),
                    Some(n) if n.datatype != o.datatype || n.shape != o.shape => {
                        return Some(format!("{role} {o} became {n}"));
                    }
                    Some(_) => {}
                }
            }
            new.iter()
                .find(|n| !old.iter().any(|o| o.name == n.name))
                .map(|n| format!("{role} {n} is new"))
        }
        side("input", &self.inputs, &newer.inputs)
            .or_else(|| side("output", &self.outputs, &newer.outputs))
    }

    fn describe_inputs(&self) -> String {
        let list: Vec<String> = self.inputs.iter().map(ToString::to_string).collect();
        list.join(", ")
    }

    /// Checks names, datatypes, ranks, fixed dimensions and element counts; reorders the inputs
    /// into signature order and resolves the requested outputs.
    pub fn validate(&self, req: InferRequest) -> Result<ValidRequest> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for tensor in req.inputs {
            let Some(i) = self.inputs.iter().position(|s| s.name == tensor.name) else {
                return Err(Error::invalid(format!(
                    "unknown input '{}'; the model expects {}",
                    tensor.name,
                    self.describe_inputs()
                )));
            };
            if slots[i].is_some() {
                return Err(Error::invalid(format!(
                    "input '{}' is given more than once",
                    tensor.name
                )));
            }
            check_tensor(&self.inputs[i], &tensor)?;
            slots[i] = Some(tensor);
        }
        let mut inputs = Vec::with_capacity(slots.len());
        for (spec, slot) in self.inputs.iter().zip(slots) {
            match slot {
                Some(t) => inputs.push(t),
                None => {
                    return Err(Error::invalid(format!("missing input {spec}")));
                }
            }
        }

        let mut outputs = Vec::with_capacity(req.outputs.len());
        for name in &req.outputs {
            let Some(i) = self.outputs.iter().position(|s| &s.name == name) else {
                let names: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
                return Err(Error::invalid(format!(
                    "unknown output '{name}'; the model's outputs are {}",
                    names.join(", ")
                )));
            };
            if outputs.contains(&i) {
                return Err(Error::invalid(format!(
                    "output '{name}' is requested more than once"
                )));
            }
            outputs.push(i);
        }
        if outputs.is_empty() {
            outputs = (0..self.outputs.len()).collect();
        }

        // Validated inputs have the model's rank, which `batchable` says is at least 1.
        let first_dim = |t: &Tensor| t.shape.first().copied();
        let rows = match inputs.first().and_then(first_dim) {
            Some(first) if self.batchable() => inputs
                .iter()
                .all(|t| first_dim(t) == Some(first))
                .then(|| usize::try_from(first).ok())
                .flatten(),
            _ => None,
        };
        Ok(ValidRequest {
            inputs,
            outputs,
            rows,
        })
    }
}

fn check_tensor(spec: &TensorSpec, t: &Tensor) -> Result<()> {
    let name = &spec.name;
    let shape = ShapeFmt(&t.shape);
    if t.datatype() != spec.datatype {
        return Err(Error::invalid(format!(
            "input '{name}' has datatype {}, but the model expects {}",
            t.datatype(),
            spec.datatype
        )));
    }
    if t.shape.iter().any(|&d| d < 0) {
        return Err(Error::invalid(format!(
            "input '{name}' has shape {shape} with a negative dimension"
        )));
    }
    if t.shape.len() != spec.shape.len() {
        return Err(Error::invalid(format!(
            "input '{name}' has shape {shape} of rank {}, but the model expects rank {} ({})",
            t.shape.len(),
            spec.shape.len(),
            ShapeFmt(&spec.shape)
        )));
    }
    for (i, (&got, &want)) in t.shape.iter().zip(&spec.shape).enumerate() {
        if want >= 0 && got != want {
            return Err(Error::invalid(format!(
                "input '{name}' has shape {shape}, but the model expects {} (dimension {i} must be {want})",
                ShapeFmt(&spec.shape)
            )));
        }
    }
    let Some(expected) = element_count(&t.shape) else {
        return Err(Error::invalid(format!(
            "input '{name}' has shape {shape}, which holds too many elements"
        )));
    };
    if expected == 0 {
        return Err(Error::invalid(format!(
            "input '{name}' has shape {shape}, which holds no elements"
        )));
    }
    if t.data.len() != expected {
        return Err(Error::invalid(format!(
            "input '{name}' has shape {shape}, which holds {expected} elements, but {} were given",
            t.data.len()
        )));
    }
    if let TensorData::Bytes(elements) = &t.data {
        // ONNX string tensors hold NUL-terminated UTF-8 text.
        for (i, b) in elements.iter().enumerate() {
            if std::str::from_utf8(b).is_err() || b.contains(&0) {
                return Err(Error::invalid(format!(
                    "input '{name}' element {i} is not UTF-8 text without NUL bytes, \
                     which an ONNX string tensor requires"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> Signature {
        Signature {
            inputs: vec![
                TensorSpec {
                    name: "a".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 3],
                },
                TensorSpec {
                    name: "b".into(),
                    datatype: DataType::Int64,
                    shape: vec![-1],
                },
            ],
            outputs: vec![
                TensorSpec {
                    name: "y".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 2],
                },
                TensorSpec {
                    name: "z".into(),
                    datatype: DataType::Int64,
                    shape: vec![-1],
                },
            ],
        }
    }

    fn req(inputs: Vec<Tensor>) -> InferRequest {
        InferRequest {
            inputs,
            ..Default::default()
        }
    }

    fn a(rows: i64) -> Tensor {
        Tensor::new(
            "a",
            vec![rows, 3],
            TensorData::Fp32(vec![0.0; rows as usize * 3]),
        )
    }
    fn b(rows: i64) -> Tensor {
        Tensor::new("b", vec![rows], TensorData::Int64(vec![0; rows as usize]))
    }

    fn err(r: InferRequest) -> String {
        let e = sig().validate(r).unwrap_err();
        assert!(matches!(e, crate::error::Error::InvalidInput(_)), "{e:?}");
        e.to_string()
    }

    #[test]
    fn accepts_any_order_and_reorders() {
        let v = sig().validate(req(vec![b(2), a(2)])).unwrap();
        assert_eq!(v.inputs[0].name, "a");
        assert_eq!(v.outputs, vec![0, 1]);
        assert_eq!(v.rows, Some(2));
    }

    #[test]
    fn different_first_dims_are_not_batchable() {
        let v = sig().validate(req(vec![a(2), b(3)])).unwrap();
        assert_eq!(v.rows, None);
    }

    #[test]
    fn names_the_problem() {
        assert!(err(req(vec![a(1)])).contains("missing input 'b' (INT64 [-1])"));
        assert!(err(req(vec![a(1), b(1), b(1)])).contains("'b' is given more than once"));
        let e = err(req(vec![
            a(1),
            b(1),
            Tensor::new("c", vec![1], TensorData::Fp32(vec![1.0])),
        ]));
        assert!(
            e.contains("unknown input 'c'") && e.contains("'a' (FP32 [-1,3])"),
            "{e}"
        );
        let e = err(req(vec![
            Tensor::new("a", vec![1, 3], TensorData::Fp64(vec![0.0; 3])),
            b(1),
        ]));
        assert!(
            e.contains("datatype FP64") && e.contains("expects FP32"),
            "{e}"
        );
        let e = err(req(vec![
            Tensor::new("a", vec![3], TensorData::Fp32(vec![0.0; 3])),
            b(1),
        ]));
        assert!(e.contains("rank 1") && e.contains("rank 2"), "{e}");
        let e = err(req(vec![
            Tensor::new("a", vec![1, 4], TensorData::Fp32(vec![0.0; 4])),
            b(1),
        ]));
        assert!(e.contains("dimension 1 must be 3"), "{e}");
        let e = err(req(vec![
            Tensor::new("a", vec![2, 3], TensorData::Fp32(vec![0.0; 5])),
            b(2),
        ]));
        assert!(e.contains("holds 6 elements, but 5 were given"), "{e}");
        let e = err(req(vec![
            Tensor::new("a", vec![-2, 3], TensorData::Fp32(vec![0.0; 6])),
            b(2),
        ]));
        assert!(e.contains("negative"), "{e}");
        let e = err(req(vec![a(0), b(0)]));
        assert!(e.contains("no elements"), "{e}");
    }

    #[test]
    fn a_model_without_inputs_is_refused_where_its_signature_is_built() {
        let outputs = sig().outputs;
        let e = Signature::new(vec![], outputs.clone()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the model has no inputs; a served model needs at least one"
        );
        assert!(Signature::new(sig().inputs, outputs.clone()).is_ok());
        // Built by hand, such a signature still never panics: it just has nothing to batch.
        let bare = Signature {
            inputs: vec![],
            outputs,
        };
        let v = bare.validate(req(vec![])).unwrap();
        assert_eq!(v.rows, None);
    }

    #[test]
    fn incompatibility_names_the_first_difference() {
        let old = sig();
        assert_eq!(old.incompatibility(&sig()), None);
        let mut wider = sig();
        wider.inputs[0].shape = vec![-1, 4];
        assert_eq!(
            old.incompatibility(&wider).unwrap(),
            "input 'a' (FP32 [-1,3]) became 'a' (FP32 [-1,4])"
        );
        let mut renamed = sig();
        renamed.outputs[1].name = "zz".into();
        assert_eq!(
            old.incompatibility(&renamed).unwrap(),
            "output 'z' (INT64 [-1]) is gone"
        );
        let mut extra = sig();
        extra.inputs.push(TensorSpec {
            name: "c".into(),
            datatype: DataType::Bool,
            shape: vec![1],
        });
        assert_eq!(
            old.incompatibility(&extra).unwrap(),
            "input 'c' (BOOL [1]) is new"
        );
    }

    #[test]
    fn outputs_are_resolved_or_rejected() {
        let mut r = req(vec![a(1), b(1)]);
        r.outputs = vec!["z".into()];
        assert_eq!(sig().validate(r.clone()).unwrap().outputs, vec![1]);
        r.outputs = vec!["nope".into()];
        assert!(err(r.clone()).contains("unknown output 'nope'"));
        r.outputs = vec!["y".into(), "y".into()];
        assert!(err(r).contains("more than once"));
    }
}
