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
use crate::runtime::{Backend, LiveSessions, SessionToken};

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
    /// Counts the sessions above (and their clones' successors) until each is dropped.
    pub live: LiveSessions,
}

pub struct OnnxSession {
    session: Session,
    outputs: Vec<TensorSpec>,
    /// Last, so it is given back after the session is released.
    _live: SessionToken,
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

/// Why a model could not be loaded into sessions. Plain words for the status API.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "{role} '{name}' has element type {element}, which the Open Inference Protocol cannot carry"
    )]
    UnsupportedType {
        role: &'static str,
        name: String,
        element: String,
    },
    #[error(
        "{role} '{name}' is a {kind}, not a tensor; only tensor inputs and outputs can be served \
         (for skl2onnx classifiers, convert with options={{'zipmap': False}})"
    )]
    NotATensor {
        role: &'static str,
        name: String,
        kind: String,
    },
    #[error("the model has no inputs; a served model needs at least one")]
    NoInputs,
    #[error("instances must be at least 1")]
    NoInstances,
    #[error("cannot tell whether ONNX Runtime has the CUDA execution provider: {0}")]
    CudaQuery(#[source] ort::Error),
    #[error(
        "device '{device}' was requested, but the loaded ONNX Runtime library ({library}) has no \
         CUDA execution provider; use an onnxruntime-gpu build of the library or set \
         runtime.device = \"cpu\""
    )]
    NoCuda { device: Device, library: String },
    #[error("cannot configure an ONNX Runtime session: {0}")]
    Configure(#[source] ort::Error),
    #[error("cannot enable CUDA device {id}: {source}")]
    Cuda {
        id: u32,
        #[source]
        source: ort::Error,
    },
    #[error("ONNX Runtime cannot load the model: {0}")]
    Model(#[source] ort::Error),
}

fn spec(outlet: &Outlet, role: &'static str) -> Result<TensorSpec, SessionError> {
    match outlet.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let datatype = datatype(*ty).ok_or_else(|| SessionError::UnsupportedType {
                role,
                name: outlet.name().to_string(),
                element: format!("{ty:?}"),
            })?;
            Ok(TensorSpec {
                name: outlet.name().to_string(),
                datatype,
                shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            })
        }
        other => Err(SessionError::NotATensor {
            role,
            name: outlet.name().to_string(),
            kind: format!("{other:?}"),
        }),
    }
}

fn signature(session: &Session) -> Result<Signature, SessionError> {
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
    Signature::new(inputs, outputs).map_err(|_| SessionError::NoInputs)
}

/// Parses `bytes` into `opts.instances` sessions.
pub fn load(
    env: &Environment,
    bytes: &[u8],
    opts: &LoadOptions,
) -> Result<OnnxModel, SessionError> {
    let provider = match opts.device {
        Device::Cpu => ep::CPU::NAME,
        Device::Cuda(_) => {
            let available = ep::CUDA::is_available().map_err(SessionError::CudaQuery)?;
            if !available {
                return Err(SessionError::NoCuda {
                    device: opts.device,
                    // The file name only: this reason reaches callers of infer and metadata.
                    library: crate::runtime::library::loaded_path()
                        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .unwrap_or_default(),
                });
            }
            ep::CUDA::NAME
        }
    };
    let mut sessions = Vec::with_capacity(opts.instances);
    let mut sig: Option<Signature> = None;
    let live = LiveSessions::default();
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
            .map_err(SessionError::Configure)?;
        if let Device::Cuda(id) = opts.device {
            // Full FP32 matrix products, as on the CPU. This alone did not stop TF32 on an H200
            // (outputs still 1e-3 off the CPU path's); main.rs also sets NVIDIA_TF32_OVERRIDE=0,
            // which did (1e-6). A serving path must not change answers with the device.
            let cuda = ep::CUDA::default()
                .with_device_id(id as i32)
                .with_tf32(false)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| SessionError::Cuda {
                    id,
                    source: e.into(),
                })?;
        }
        let session = builder
            .commit_from_memory(bytes)
            .map_err(SessionError::Model)?;
        let s = signature(&session)?;
        sessions.push(OnnxSession {
            session,
            outputs: s.outputs.clone(),
            _live: live.token(),
        });
        sig.get_or_insert(s);
    }
    let signature = sig.ok_or(SessionError::NoInstances)?;
    Ok(OnnxModel {
        signature,
        sessions,
        provider,
        live,
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
            // The graph refused these values (an index out of range, say): a 400 for the caller,
            // a failure of this version for a rollout (another version may answer them).
            ErrorCode::InvalidArgument => {
                Error::Rejected(format!("the model rejected the input: {}", e.message()))
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
