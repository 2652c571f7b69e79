//! ONNX Runtime sessions through the `ort` crate.
//!
//! `Session::run` takes `&mut self` (ORT's `Run` is not thread-safe), so a loaded version gets one
//! session per instance and the scheduler gives each its own thread.

use ort::ErrorCode;
use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Outlet, TensorElementType, TensorRef, ValueType};

use crate::core::signature::{Signature, TensorSpec};
use crate::core::tensor::{ByteStrings, DataType, Element, Tensor, TensorData, by_datatype};
use crate::error::{Error, Result};
use crate::registry::config::Device;
use crate::runtime::Backend;

/// How to build a version's sessions.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub instances: usize,
    pub intra_op_threads: usize,
    pub device: Device,
}

/// A model loaded into `instances` identical sessions.
pub struct OnnxModel {
    pub signature: Signature,
    pub sessions: Vec<OnnxSession>,
    /// The execution provider the sessions run on, e.g. `CPUExecutionProvider`.
    pub provider: &'static str,
}

pub struct OnnxSession {
    session: Session,
    outputs: Vec<TensorSpec>,
}

fn datatype(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn spec(outlet: &Outlet, role: &str) -> Result<TensorSpec, String> {
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let datatype = datatype(*ty).ok_or_else(|| {
                format!(
                    "{role} '{}' has element type {ty:?}, which the Open Inference Protocol cannot carry",
                    outlet.name()
                )
            })?;
            Ok(TensorSpec {
                name: outlet.name().to_string(),
                datatype,
                shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            })
        }
        other => Err(format!(
            "{role} '{}' is a {other:?}, not a tensor; only tensor inputs and outputs can be served \
             (for skl2onnx classifiers, convert with options={{'zipmap': False}})",
            outlet.name()
        )),
    }
}

fn signature(session: &Session) -> Result<Signature, String> {
    let inputs = session
        .inputs()
        .iter()
        .map(|o| spec(o, "input"))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = session
        .outputs()
        .iter()
        .map(|o| spec(o, "output"))
        .collect::<Result<Vec<_>, _>>()?;
    Signature::new(inputs, outputs).map_err(|e| e.to_string())
}

/// Parses `bytes` into `opts.instances` sessions. Errors are plain text for the status API.
pub fn load(env: &Environment, bytes: &[u8], opts: &LoadOptions) -> Result<OnnxModel, String> {
    let provider = match opts.device {
        Device::Cpu => ep::CPU::NAME,
        Device::Cuda(_) => {
            let available = ep::CUDA::is_available().map_err(|e| e.to_string())?;
            if !available {
                return Err(format!(
                    "device '{}' was requested, but the loaded ONNX Runtime library ({}) has no CUDA \
                     execution provider; use an onnxruntime-gpu build of the library or set \
                     runtime.device = \"cpu\"",
                    opts.device,
                    crate::runtime::library::loaded_path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
            }
            ep::CUDA::NAME
        }
    };
    let mut sessions = Vec::with_capacity(opts.instances);
    let mut sig: Option<Signature> = None;
    for _ in 0..opts.instances {
        let mut builder = Session::builder(env)
            .and_then(|b| {
                b.with_optimization_level(GraphOptimizationLevel::Level3)
                    .map_err(Into::into)
            })
            .and_then(|b| {
                b.with_intra_threads(opts.intra_op_threads)
                    .map_err(Into::into)
            })
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .map_err(|e| format!("cannot configure an ONNX Runtime session: {e}"))?;
        if let Device::Cuda(id) = opts.device {
            let cuda = ep::CUDA::default()
                .with_device_id(id as i32)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| format!("cannot enable CUDA device {id}: {e}"))?;
        }
        let session = builder
            .commit_from_memory(bytes)
            .map_err(|e| format!("ONNX Runtime cannot load the model: {e}"))?;
        let s = signature(&session)?;
        sessions.push(OnnxSession {
            session,
            outputs: s.outputs.clone(),
        });
        sig.get_or_insert(s);
    }
    let signature = sig.ok_or("instances must be at least 1")?;
    Ok(OnnxModel {
        signature,
        sessions,
        provider,
    })
}

fn input_value(t: &Tensor) -> Result<SessionInputValue<'_>> {
    let shape = t.shape.clone();
    let fail = |e: ort::Error| Error::Internal(format!("input '{}': {e}", t.name));
    macro_rules! view {
        ($v:expr) => {
            TensorRef::from_array_view((shape, &$v[..]))
                .map_err(fail)?
                .into()
        };
    }
    Ok(match &t.data {
        TensorData::Bool(v) => view!(v),
        TensorData::Uint8(v) => view!(v),
        TensorData::Uint16(v) => view!(v),
        TensorData::Uint32(v) => view!(v),
        TensorData::Uint64(v) => view!(v),
        TensorData::Int8(v) => view!(v),
        TensorData::Int16(v) => view!(v),
        TensorData::Int32(v) => view!(v),
        TensorData::Int64(v) => view!(v),
        TensorData::Fp16(v) => view!(v),
        TensorData::Fp32(v) => view!(v),
        TensorData::Fp64(v) => view!(v),
        TensorData::Bytes(v) => {
            // Validation has already checked that every element is UTF-8 without NUL. `ort`
            // wants owned ('static) strings, and copies each into a C string anyway.
            let strings = v
                .iter()
                .map(|b| std::str::from_utf8(b).map(str::to_owned))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|e| Error::invalid(format!("input '{}': {e}", t.name)))?;
            ort::value::Tensor::from_string_array((shape, &strings[..]))
                .map_err(fail)?
                .into()
        }
    })
}

fn extract(spec: &TensorSpec, v: &DynValue) -> Result<Tensor> {
    let fail = |e: ort::Error| Error::Inference(format!("output '{}': {e}", spec.name));
    let (shape, data) = by_datatype!(spec.datatype, T => {
        let (shape, data) = v.try_extract_tensor::<T>().map_err(fail)?;
        (shape.to_vec(), <T as Element>::wrap(data.to_vec()))
    }, bytes => {
        let (shape, strings) = v.try_extract_strings().map_err(fail)?;
        let bytes = ByteStrings::from_items(&strings)
            .map_err(|e| Error::Inference(format!("output '{}': {e}", spec.name)))?;
        (shape.to_vec(), TensorData::Bytes(bytes))
    });
    Ok(Tensor::new(spec.name.clone(), shape, data))
}

impl Backend for OnnxSession {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            values.push((t.name.as_str(), input_value(t)?));
        }
        let outputs = self.session.run(values).map_err(|e| match e.code() {
            // The graph refused these values (an index out of range, say): the caller's problem.
            ErrorCode::InvalidArgument => {
                Error::invalid(format!("the model rejected the input: {}", e.message()))
            }
            _ => Error::Inference(format!("ONNX Runtime failed: {e}")),
        })?;
        self.outputs
            .iter()
            .map(|spec| {
                let v = outputs.get(&spec.name).ok_or_else(|| {
                    Error::Inference(format!("ONNX Runtime returned no output '{}'", spec.name))
                })?;
                extract(spec, v)
            })
            .collect()
    }
}
