//! Loading one version: read, verify, build sessions, warm up, start the scheduler. Runs on a
//! blocking thread, never on the serving path; any failure is a message for the status API.

use std::time::{Duration, Instant, SystemTime};

use ort::environment::Environment;
use sha2::{Digest, Sha256};

use crate::batching::Scheduler;
use crate::core::signature::Signature;
use crate::core::tensor::{Tensor, TensorData};
use crate::models::version::LoadedVersion;
use crate::monitoring::metrics::{RequestMetrics, VersionMetrics};
use crate::monitoring::{BASELINE_FILE, Card, VersionMonitor};
use crate::registry::config::Resolved;
use crate::registry::{METADATA_FILE, MODEL_FILE, Registry, RegistryError, WARMUP_FILE};
use crate::runtime::Backend;
use crate::runtime::onnx::{self, LoadOptions, SessionError};

/// Why a version was refused. The manager shows the message as the version's reason.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{model}/{version}/{MODEL_FILE} does not exist")]
    MissingModel { model: String, version: u64 },
    #[error("{METADATA_FILE} is not valid JSON: {0}")]
    MetadataJson(#[source] serde_json::Error),
    #[error("{METADATA_FILE}: \"sha256\" must be a hex string, found {0}")]
    MetadataSha256(String),
    #[error(
        "{MODEL_FILE} has sha256 {actual}, but {METADATA_FILE} says {expected}: \
         the file is corrupt, truncated or was replaced without updating its metadata"
    )]
    Checksum { actual: String, expected: String },
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(
        "its signature differs from the serving version's ({0}); callers would break. \
         Set lifecycle.allow_signature_change = true in config.toml to allow it"
    )]
    SignatureChanged(String),
    #[error(
        "warm-up input '{name}' of shape {shape:?} would need more than {} MiB; \
         add a {WARMUP_FILE} with a smaller sample",
        MAX_WARMUP_BYTES >> 20
    )]
    WarmupTooLarge { name: String, shape: Vec<i64> },
    #[error("warm-up input '{name}': {message}")]
    WarmupData { name: String, message: String },
    #[error("{WARMUP_FILE}: {0}")]
    WarmupFile(#[source] crate::error::Error),
    #[error("warm-up inference failed: {0}")]
    Warmup(#[source] crate::error::Error),
    /// baseline.json, or config.toml's monitoring thresholds against it.
    #[error("monitoring: {0}")]
    Monitoring(String),
    #[error("cannot start the scheduler threads: {0}")]
    Threads(#[source] std::io::Error),
    /// A bug (ours or the runtime's) hit while loading: the panic's message.
    #[error("loading panicked: {0}")]
    Panicked(String),
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `sha256` a version's metadata.json promises for its model.onnx, if it has one.
fn expected_sha256(
    registry: &dyn Registry,
    model: &str,
    version: u64,
) -> Result<Option<String>, LoadError> {
    let Some(bytes) = registry.read(model, Some(version), METADATA_FILE)? else {
        return Ok(None);
    };
    let meta: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(LoadError::MetadataJson)?;
    match meta.get("sha256") {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.to_ascii_lowercase())),
        Some(other) => Err(LoadError::MetadataSha256(other.to_string())),
    }
}

/// What the serving path uses of a version's model card (metadata.json): the task (how a
/// rollout compares two versions' answers, how feedback is scored), the class names, the training
/// date (deployment lead time, staleness) and the held-out metrics (decay).
/// Never a load error: a card without them, or with values that do not parse, leaves them out.
fn card(registry: &dyn Registry, model: &str, version: u64) -> Card {
    let Ok(Some(bytes)) = registry.read(model, Some(version), METADATA_FILE) else {
        return Card::default();
    };
    let Ok(meta) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Card::default();
    };
    let task = meta
        .get("task")
        .and_then(|t| t.as_str())
        .map(str::to_string);
    let trained_at = meta
        .get("trained_at")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|t| u64::try_from(t.as_millisecond()).ok())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    let classes = meta
        .get("classes")
        .and_then(|c| c.as_array())
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // Bounded: these become metric labels.
    let heldout = meta
        .get("heldout_metrics")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.len() <= 64)
                .filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v)))
                .take(16)
                .collect()
        })
        .unwrap_or_default();
    Card {
        task,
        classes,
        trained_at,
        heldout,
    }
}

/// The largest warm-up input synthesized for one tensor; a model whose declared shape needs
/// more must bring its own (smaller) sample in warmup.json.
const MAX_WARMUP_BYTES: usize = 1 << 30;

/// One row of zeros (empty strings for BYTES) per input, with variable dimensions set to 1.
/// Declared shapes come from the model file, so their size is checked, never trusted.
pub fn warmup_inputs(signature: &Signature) -> Result<Vec<Tensor>, LoadError> {
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = spec
                .shape
                .iter()
                .map(|&d| if d < 0 { 1 } else { d })
                .collect();
            // BYTES: a 4-byte length prefix per (empty) element.
            let wire = spec.datatype.element_size().unwrap_or(4);
            let size = shape
                .iter()
                .try_fold(1usize, |n, &d| {
                    usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
                })
                .and_then(|n| n.checked_mul(wire))
                .filter(|&b| b <= MAX_WARMUP_BYTES)
                .ok_or_else(|| LoadError::WarmupTooLarge {
                    name: spec.name.clone(),
                    shape: shape.clone(),
                })?;
            let data =
                TensorData::from_le_bytes(spec.datatype, &vec![0u8; size]).map_err(|message| {
                    LoadError::WarmupData {
                        name: spec.name.clone(),
                        message,
                    }
                })?;
            Ok(Tensor::new(spec.name.clone(), shape, data))
        })
        .collect()
}

/// The bytes of a version's model.onnx and their sha256, checked against metadata.json's.
pub fn read_model(
    registry: &dyn Registry,
    model: &str,
    version: u64,
) -> Result<(Vec<u8>, String), LoadError> {
    let bytes = registry
        .read(model, Some(version), MODEL_FILE)?
        .ok_or_else(|| LoadError::MissingModel {
            model: model.to_string(),
            version,
        })?;
    let sha256 = sha256_hex(&bytes);
    if let Some(expected) = expected_sha256(registry, model, version)?
        && expected != sha256
    {
        return Err(LoadError::Checksum {
            actual: sha256,
            expected,
        });
    }
    Ok((bytes, sha256))
}

/// Warm-up inputs: the version's warmup.json (a V2 JSON inference request) when present, else
/// one synthesized row per input.
fn warmup(
    registry: &dyn Registry,
    model: &str,
    version: u64,
    signature: &Signature,
) -> Result<Vec<Tensor>, LoadError> {
    let Some(bytes) = registry.read(model, Some(version), WARMUP_FILE)? else {
        return warmup_inputs(signature);
    };
    // The same decoder and validation as a REST request.
    let (request, _) = crate::codec::decode_request(&bytes, None).map_err(LoadError::WarmupFile)?;
    let valid = signature.validate(request).map_err(LoadError::WarmupFile)?;
    Ok(valid.inputs)
}

/// What a new version is checked against before it may serve.
pub struct Expectation<'a> {
    /// The signature of the version it replaces, if any.
    pub signature: Option<&'a Signature>,
    pub allow_signature_change: bool,
}

/// Builds a version from verified bytes: sessions, signature check, warm-up, scheduler.
#[allow(clippy::too_many_arguments)]
pub fn build_version(
    registry: &dyn Registry,
    env: &Environment,
    model: &str,
    version: u64,
    bytes: &[u8],
    sha256: String,
    settings: &Resolved,
    expect: Expectation<'_>,
) -> Result<LoadedVersion, LoadError> {
    let started = Instant::now();
    let rt = &settings.runtime;
    let loaded = onnx::load(
        env,
        bytes,
        &LoadOptions {
            instances: rt.instances,
            intra_op_threads: rt.intra_op_threads,
            device: rt.device,
        },
    )?;
    let signature = loaded.signature;
    let sessions = loaded.live;
    if let Some(serving) = expect.signature
        && !expect.allow_signature_change
        && let Some(diff) = serving.incompatibility(&signature)
    {
        return Err(LoadError::SignatureChanged(diff.to_string()));
    }
    // Monitoring is checked before the sessions warm up: a bad baseline.json fails fast.
    let card = card(registry, model, version);
    let baseline = registry.read(model, Some(version), BASELINE_FILE)?;
    let monitor = VersionMonitor::new(
        model,
        version,
        &signature,
        &settings.monitoring,
        baseline.as_deref(),
        card,
    )
    .map_err(LoadError::Monitoring)?;
    let warm = warmup(registry, model, version, &signature)?;
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(loaded.sessions.len());
    for mut session in loaded.sessions {
        // The first run of a session allocates and plans; pay it here, not on a caller.
        session.run(&warm).map_err(LoadError::Warmup)?;
        backends.push(Box::new(session));
    }
    let max_batch_size = if signature.batchable() {
        settings.batching.max_batch_size
    } else {
        0
    };
    let mut batching = settings.batching.clone();
    batching.max_batch_size = max_batch_size;
    let scheduler = Scheduler::start(
        format!("model '{model}' version {version}"),
        &format!("{model}-{version}"),
        batching,
        backends,
        VersionMetrics::new(model, version),
    )
    .map_err(LoadError::Threads)?;
    Ok(LoadedVersion {
        model: model.to_string(),
        version,
        signature,
        settings: settings.clone(),
        max_batch_size,
        scheduler,
        requests: RequestMetrics::new(model, version),
        sessions,
        provider: loaded.provider,
        sha256,
        loaded_at: SystemTime::now(),
        load_duration: started.elapsed(),
        monitor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::signature::TensorSpec;
    use crate::core::tensor::DataType;

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn warmup_inputs_fill_variable_dims_with_one() {
        let sig = Signature {
            inputs: vec![
                TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 4],
                },
                TensorSpec {
                    name: "s".into(),
                    datatype: DataType::Bytes,
                    shape: vec![-1],
                },
            ],
            outputs: vec![],
        };
        let w = warmup_inputs(&sig).unwrap();
        assert_eq!(w[0].shape, vec![1, 4]);
        assert_eq!(w[0].data, TensorData::Fp32(vec![0.0; 4]));
        assert_eq!(
            w[1].data,
            TensorData::Bytes(crate::core::tensor::ByteStrings::from_items([""]).unwrap())
        );
    }

    #[test]
    fn warmup_inputs_refuse_shapes_too_large_to_synthesize() {
        for shape in [vec![-1, 1 << 32, 1 << 32], vec![1 << 40], vec![i64::MAX, 2]] {
            let sig = Signature {
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape,
                }],
                outputs: vec![],
            };
            let e = warmup_inputs(&sig).unwrap_err();
            assert!(matches!(e, LoadError::WarmupTooLarge { .. }), "{e:?}");
            let e = e.to_string();
            assert!(e.contains("'x'") && e.contains("warmup.json"), "{e}");
        }
    }
}
