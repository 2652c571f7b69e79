//! Skew from capture files: reads the Parquet records the gateway captured, rebuilds the tensors
//! of each batch of records and counts them with the same [`Profiler::observe`] the serving path
//! uses, so offline and online numbers agree by construction.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
    UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, GenericListArray, OffsetSizeTrait, RecordBatch, StructArray};
use arrow_schema::{DataType as ArrowType, Fields};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::core::tensor::{ByteStrings, Tensor, TensorData};
use crate::monitoring::baseline::Baseline;
use crate::monitoring::skew::{Profile, Profiler};

/// The counts of every captured record under a folder.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineProfile {
    pub profile: Profile,
    /// Parquet files read.
    pub files: usize,
    /// Records (rows) read.
    pub records: u64,
}

/// Why capture files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("capture folder {} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a readable Parquet file: {source}", .path.display())]
    NotParquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{} has no column '{column}', which the baseline's features need", .path.display())]
    MissingColumn { path: PathBuf, column: String },
    #[error("{}: column '{column}' is {found}; expected {expected}", .path.display())]
    WrongType {
        path: PathBuf,
        column: String,
        found: String,
        expected: &'static str,
    },
    #[error("{}: reading records failed: {message}", .path.display())]
    Read { path: PathBuf, message: String },
}

/// The struct column holding each side's tensors, as the capture writes it.
const INPUTS: &str = "inputs";
const OUTPUTS: &str = "outputs";

/// Counts every record of every `*.parquet` file under `dir` (recursively; `dir` may also be one
/// file). Names starting with `.` or `_` are skipped, as pyarrow and Spark skip them: files being
/// written (`.part-*.tmp`) and job markers (`_SUCCESS`).
pub fn profile_capture(dir: &Path, profiler: &Profiler) -> Result<OfflineProfile, OfflineError> {
    let meta = fs::metadata(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => OfflineError::Missing {
            path: dir.to_path_buf(),
        },
        _ => OfflineError::Io {
            path: dir.to_path_buf(),
            source,
        },
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        collect(dir, &mut files)?;
        files.sort();
    } else {
        files.push(dir.to_path_buf());
    }
    let mut out = OfflineProfile {
        profile: profiler.empty(),
        files: 0,
        records: 0,
    };
    for path in &files {
        read_file(path, profiler, &mut out)?;
        out.files += 1;
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), OfflineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OfflineError::Io { path, source }
    };
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            collect(&path, out)?;
        } else if name.ends_with(".parquet") && fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

/// The tensors each side needs: `(struct column, tensor names)`.
fn needs(profiler: &Profiler) -> [(&'static str, Vec<&str>); 2] {
    [
        (INPUTS, profiler.input_tensors()),
        (OUTPUTS, profiler.output_tensors()),
    ]
}

fn read_file(
    path: &Path,
    profiler: &Profiler,
    out: &mut OfflineProfile,
) -> Result<(), OfflineError> {
    let file = File::open(path).map_err(|source| OfflineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
        OfflineError::NotParquet {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let needs = needs(profiler);
    for (column, tensors) in &needs {
        if tensors.is_empty() {
            continue;
        }
        let field =
            builder
                .schema()
                .field_with_name(column)
                .map_err(|_| OfflineError::MissingColumn {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                })?;
        let ArrowType::Struct(children) = field.data_type() else {
            return Err(OfflineError::WrongType {
                path: path.to_path_buf(),
                column: column.to_string(),
                found: field.data_type().to_string(),
                expected: "a struct with one list per tensor",
            });
        };
        check_tensors(path, column, children, tensors)?;
    }
    // Read only the leaves of the tensors the features need: a capture also holds ids, times
    // and tensors no feature reads.
    let schema = builder.parquet_schema();
    let leaves: Vec<usize> = schema
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| match c.path().parts() {
            [side, tensor, ..] => needs
                .iter()
                .any(|(col, ts)| col == side && ts.iter().any(|t| t == tensor)),
            _ => false,
        })
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::leaves(schema, leaves);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| OfflineError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    for batch in reader {
        let batch = batch.map_err(|e| OfflineError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        out.records += batch.num_rows() as u64;
        observe_batch(&batch, &needs, profiler, &mut out.profile).map_err(|message| {
            OfflineError::Read {
                path: path.to_path_buf(),
                message,
            }
        })?;
    }
    Ok(())
}

fn check_tensors(
    path: &Path,
    column: &str,
    children: &Fields,
    tensors: &[&str],
) -> Result<(), OfflineError> {
    for t in tensors {
        let name = format!("{column}.{t}");
        let Some(child) = children.iter().find(|f| f.name() == t) else {
            return Err(OfflineError::MissingColumn {
                path: path.to_path_buf(),
                column: name,
            });
        };
        let item = match child.data_type() {
            ArrowType::List(item) | ArrowType::LargeList(item) => item,
            other => {
                return Err(OfflineError::WrongType {
                    path: path.to_path_buf(),
                    column: name,
                    found: other.to_string(),
                    expected: "a list of tensor elements",
                });
            }
        };
        if !supported(item.data_type()) {
            return Err(OfflineError::WrongType {
                path: path.to_path_buf(),
                column: name,
                found: format!("a list of {}", item.data_type()),
                expected: "a list of booleans, integers, floats or binary",
            });
        }
    }
    Ok(())
}

fn supported(t: &ArrowType) -> bool {
    use ArrowType::*;
    matches!(
        t,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float16
            | Float32
            | Float64
            | Binary
            | LargeBinary
            | Utf8
            | LargeUtf8
    )
}

fn observe_batch(
    batch: &RecordBatch,
    needs: &[(&'static str, Vec<&str>)],
    profiler: &Profiler,
    into: &mut Profile,
) -> Result<(), String> {
    for (column, tensors) in needs {
        let Some(side) = batch.column_by_name(column).and_then(|c| c.as_struct_opt()) else {
            continue;
        };
        for t in tensors {
            let Some(list) = side.column_by_name(t) else {
                continue;
            };
            let mut observe = |tensor: Tensor| {
                let one = std::slice::from_ref(&tensor);
                if *column == INPUTS {
                    profiler.observe(one, &[], into);
                } else {
                    profiler.observe(&[], one, into);
                }
            };
            if let Some(l) = list.as_list_opt::<i32>() {
                each_run(side, l, t, &mut observe)?;
            } else if let Some(l) = list.as_list_opt::<i64>() {
                each_run(side, l, t, &mut observe)?;
            }
        }
    }
    Ok(())
}

/// Calls `f` with one `[rows, width]` tensor per run of consecutive records whose list is present
/// and `width` long. Tabular captures are one run per batch; a null list (an output the caller
/// did not ask for) or a change of width starts a new run.
fn each_run<O: OffsetSizeTrait>(
    side: &StructArray,
    list: &GenericListArray<O>,
    name: &str,
    f: &mut impl FnMut(Tensor),
) -> Result<(), String> {
    let offsets = list.value_offsets();
    let mut run: Option<(usize, usize, usize)> = None; // (first value, width, rows)
    let mut flush = |run: Option<(usize, usize, usize)>| -> Result<(), String> {
        if let Some((start, width, rows)) = run {
            let data = tensor_data(list.values(), start, width * rows)
                .map_err(|e| format!("column '{name}': {e}"))?;
            f(Tensor::new(name, vec![rows as i64, width as i64], data));
        }
        Ok(())
    };
    for i in 0..list.len() {
        let present = side.is_valid(i) && list.is_valid(i);
        let start = offsets[i].as_usize();
        let width = offsets[i + 1].as_usize().saturating_sub(start);
        if !present || width == 0 {
            flush(run.take())?;
            continue;
        }
        run = match run {
            Some((s, w, rows)) if w == width && s + w * rows == start => Some((s, w, rows + 1)),
            other => {
                flush(other)?;
                Some((start, width, 1))
            }
        };
    }
    flush(run)
}

/// The `len` list elements from `start` as tensor data. Null elements (which the capture never
/// writes) become NaN, so they count as non-finite rather than as a made-up value.
fn tensor_data(values: &ArrayRef, start: usize, len: usize) -> Result<TensorData, String> {
    if start.checked_add(len).is_none_or(|end| end > values.len()) {
        return Err(format!(
            "list offsets point past the {} stored elements",
            values.len()
        ));
    }
    let v = values.slice(start, len);
    macro_rules! primitive {
        ($arrow:ty, $variant:ident, $to_f64:expr) => {{
            let a = v
                .as_primitive_opt::<$arrow>()
                .ok_or_else(|| format!("elements are not {}", v.data_type()))?;
            if a.null_count() == 0 {
                TensorData::$variant(a.values().to_vec())
            } else {
                TensorData::Fp64(a.iter().map(|x| x.map_or(f64::NAN, $to_f64)).collect())
            }
        }};
    }
    let bytes = |items: Vec<&[u8]>| ByteStrings::from_items(items).map_err(|e| e.to_string());
    Ok(match v.data_type() {
        ArrowType::Boolean => {
            let a = v.as_boolean_opt().ok_or("elements are not booleans")?;
            if a.null_count() == 0 {
                TensorData::Bool(a.values().iter().collect())
            } else {
                TensorData::Fp64(
                    a.iter()
                        .map(|x| x.map_or(f64::NAN, |b| f64::from(u8::from(b))))
                        .collect(),
                )
            }
        }
        ArrowType::Int8 => primitive!(Int8Type, Int8, f64::from),
        ArrowType::Int16 => primitive!(Int16Type, Int16, f64::from),
        ArrowType::Int32 => primitive!(Int32Type, Int32, f64::from),
        ArrowType::Int64 => primitive!(Int64Type, Int64, |x| x as f64),
        ArrowType::UInt8 => primitive!(UInt8Type, Uint8, f64::from),
        ArrowType::UInt16 => primitive!(UInt16Type, Uint16, f64::from),
        ArrowType::UInt32 => primitive!(UInt32Type, Uint32, f64::from),
        ArrowType::UInt64 => primitive!(UInt64Type, Uint64, |x| x as f64),
        ArrowType::Float16 => primitive!(Float16Type, Fp16, |x| x.to_f64()),
        ArrowType::Float32 => primitive!(Float32Type, Fp32, f64::from),
        ArrowType::Float64 => primitive!(Float64Type, Fp64, |x| x),
        // A null string is no value: it matches no category (unseen).
        ArrowType::Binary => TensorData::Bytes(bytes(
            v.as_binary_opt::<i32>()
                .ok_or("elements are not binary")?
                .iter()
                .map(|x| x.unwrap_or_default())
                .collect(),
        )?),
        ArrowType::LargeBinary => TensorData::Bytes(bytes(
            v.as_binary_opt::<i64>()
                .ok_or("elements are not binary")?
                .iter()
                .map(|x| x.unwrap_or_default())
                .collect(),
        )?),
        ArrowType::Utf8 => TensorData::Bytes(bytes(
            v.as_string_opt::<i32>()
                .ok_or("elements are not strings")?
                .iter()
                .map(|x| x.unwrap_or_default().as_bytes())
                .collect(),
        )?),
        ArrowType::LargeUtf8 => TensorData::Bytes(bytes(
            v.as_string_opt::<i64>()
                .ok_or("elements are not strings")?
                .iter()
                .map(|x| x.unwrap_or_default().as_bytes())
                .collect(),
        )?),
        other => return Err(format!("elements of type {other} are not tensor elements")),
    })
}

/// The `<prefix>VALUE` folders directly under `dir` (hive partitions), by value.
fn partitions(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .map(str::to_string)
        })
        .collect();
    found.sort();
    found
}

/// `switchyard skew --capture DIR --baseline PATH`: the skew of captured rows against a
/// baseline, with the thresholds of `config` (a model's config.toml) or the defaults. `model` and
/// `version` narrow the read to their partition folders. The JSON has the online report's shape
/// plus the files and records read.
pub fn skew_of_capture(
    dir: &Path,
    model: Option<&str>,
    version: Option<u64>,
    baseline: &Path,
    config: Option<&Path>,
) -> Result<serde_json::Value, String> {
    let origin = baseline.display().to_string();
    let bytes = std::fs::read(baseline).map_err(|e| format!("cannot read {origin}: {e}"))?;
    let baseline = Baseline::parse(&bytes, &origin).map_err(|e| e.to_string())?;
    let profiler = Profiler::new(&baseline, None).map_err(|e| e.to_string())?;
    let model_config = match config {
        None => crate::registry::ModelConfig::default(),
        Some(path) => {
            let text =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            crate::registry::ModelConfig::parse_bytes(&text, &path.display().to_string())
                .map_err(|e| e.to_string())?
        }
    };
    let origin_cfg = config.map_or("defaults".to_string(), |p| p.display().to_string());
    let settings = model_config
        .resolve(&crate::registry::config::Defaults::default(), &origin_cfg)
        .map_err(|e| e.to_string())?
        .monitoring;
    let cfg = super::version::skew_config(
        &settings,
        &profiler.feature_names(),
        model.unwrap_or("model"),
        &origin,
    )?;
    let mut root = dir.to_path_buf();
    match model {
        Some(m) => {
            root.push(format!("model={m}"));
            if let Some(v) = version {
                root.push(format!("version={v}"));
            }
        }
        // One baseline describes one model: a folder holding several models' captures must say
        // which (a capture folder of one model, or a partition folder, is read whole).
        None => {
            let models = partitions(dir, "model=");
            if models.len() > 1 {
                return Err(format!(
                    "{} holds captures of several models ({}): name the model (and --version)",
                    dir.display(),
                    models.join(", ")
                ));
            }
        }
    }
    let read = profile_capture(&root, &profiler).map_err(|e| e.to_string())?;
    let report = super::skew::report(&profiler, &read.profile, &cfg);
    let mut value =
        serde_json::to_value(&report).map_err(|e| format!("cannot encode the skew report: {e}"))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("files".into(), read.files.into());
        obj.insert("records".into(), read.records.into());
        if let Some(m) = model {
            obj.insert("model".into(), m.into());
        }
        if let Some(v) = version {
            obj.insert("version".into(), v.into());
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_folder_of_several_models_needs_the_model_named() {
        let dir = tempfile::tempdir().unwrap();
        for m in ["model=iris", "model=diabetes"] {
            std::fs::create_dir_all(dir.path().join(m).join("version=1")).unwrap();
        }
        let baseline =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris/1/baseline.json");
        let e = super::skew_of_capture(dir.path(), None, None, &baseline, None).unwrap_err();
        assert!(
            e.contains("several models") && e.contains("diabetes, iris"),
            "{e}"
        );
        // Named, it reads only that model's (empty) folder.
        let ok =
            super::skew_of_capture(dir.path(), Some("iris"), Some(1), &baseline, None).unwrap();
        assert_eq!(ok["records"], 0);
        assert_eq!(ok["verdict"], "insufficient_data");
    }
    use std::sync::Arc;

    use arrow_array::builder::{Float32Builder, Int64Builder, ListBuilder};
    use arrow_array::{
        ListArray, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
    };
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::monitoring::baseline::Baseline;
    use crate::monitoring::skew::{SkewConfig, report};

    fn profiler() -> Profiler {
        let json = r#"{"input": "X",
            "features": [
              {"name": "a", "index": 0, "type": "numeric",
               "histogram": {"bin_edges": [0, 1, 2, 3], "proportions": [0.3, 0.4, 0.3]}},
              {"name": "b", "index": 1, "type": "numeric",
               "histogram": {"bin_edges": [0, 1, 2, 3], "proportions": [0.3, 0.4, 0.3]}}],
            "outputs": [
              {"name": "label", "output": "label", "index": 0, "type": "categorical",
               "values": ["0", "1"], "proportions": [0.6, 0.4]},
              {"name": "probabilities[1]", "output": "probabilities", "index": 1,
               "type": "numeric",
               "histogram": {"bin_edges": [0, 0.5, 1], "proportions": [0.6, 0.4]}}]}"#;
        Profiler::new(&Baseline::parse(json.as_bytes(), "b.json").unwrap(), None).unwrap()
    }

    /// One request as the gateway saw it: rows of X, and its outputs when the caller asked.
    struct Request {
        x: Vec<[f32; 2]>,
        outputs: Option<(Vec<i64>, Vec<[f32; 2]>)>,
    }

    impl Request {
        fn tensors(&self) -> (Vec<Tensor>, Vec<Tensor>) {
            let rows = self.x.len() as i64;
            let inputs = vec![Tensor::new(
                "X",
                vec![rows, 2],
                TensorData::Fp32(self.x.iter().flatten().copied().collect()),
            )];
            let outputs = match &self.outputs {
                None => vec![],
                Some((label, probs)) => vec![
                    Tensor::new("label", vec![rows], TensorData::Int64(label.clone())),
                    Tensor::new(
                        "probabilities",
                        vec![rows, 2],
                        TensorData::Fp32(probs.iter().flatten().copied().collect()),
                    ),
                ],
            };
            (inputs, outputs)
        }
    }

    fn requests() -> Vec<Request> {
        vec![
            Request {
                x: vec![[0.5, 1.5], [2.5, 9.0]],
                outputs: Some((vec![0, 1], vec![[0.8, 0.2], [0.3, 0.7]])),
            },
            Request {
                x: vec![[1.5, 1.5], [1.2, 0.1], [2.9, 3.0]],
                outputs: None,
            },
            Request {
                x: vec![[f32::NAN, -1.0]],
                outputs: Some((vec![5], vec![[0.5, 0.5]])),
            },
        ]
    }

    /// A list column holding, per record, the row of a tensor (or null).
    fn floats(rows: &[Option<Vec<f32>>]) -> ListArray {
        let mut b = ListBuilder::new(Float32Builder::new());
        for r in rows {
            match r {
                Some(v) => {
                    b.values().append_slice(v);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        b.finish()
    }

    fn ints(rows: &[Option<Vec<i64>>]) -> ListArray {
        let mut b = ListBuilder::new(Int64Builder::new());
        for r in rows {
            match r {
                Some(v) => {
                    b.values().append_slice(v);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        b.finish()
    }

    fn struct_of(columns: Vec<(&str, ListArray)>) -> StructArray {
        let pairs: Vec<(Arc<Field>, ArrayRef)> = columns
            .into_iter()
            .map(|(name, a)| {
                (
                    Arc::new(Field::new(name, a.data_type().clone(), true)),
                    Arc::new(a) as ArrayRef,
                )
            })
            .collect();
        StructArray::from(pairs)
    }

    /// The capture schema: one record per predicted row.
    fn capture_batch(requests: &[Request], with_outputs: bool) -> RecordBatch {
        let mut time = vec![];
        let mut ids = vec![];
        let mut row = vec![];
        let mut x = vec![];
        let mut label = vec![];
        let mut probs = vec![];
        for (i, r) in requests.iter().enumerate() {
            for (j, xr) in r.x.iter().enumerate() {
                time.push(1_700_000_000_000_000 + i as i64);
                ids.push(Some(format!("req-{i}")));
                row.push(j as u32);
                x.push(Some(xr.to_vec()));
                match &r.outputs {
                    Some((l, p)) => {
                        label.push(Some(vec![l[j]]));
                        probs.push(Some(p[j].to_vec()));
                    }
                    None => {
                        label.push(None);
                        probs.push(None);
                    }
                }
            }
        }
        let n = row.len();
        let mut columns: Vec<(&str, ArrayRef)> = vec![
            (
                "time",
                Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC")),
            ),
            ("request_id", Arc::new(StringArray::from(ids))),
            ("row", Arc::new(UInt32Array::from(row))),
            (
                "variant",
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ),
            ("latency_us", Arc::new(UInt64Array::from(vec![1234u64; n]))),
            ("inputs", Arc::new(struct_of(vec![("X", floats(&x))]))),
        ];
        if with_outputs {
            columns.push((
                "outputs",
                Arc::new(struct_of(vec![
                    ("label", ints(&label)),
                    ("probabilities", floats(&probs)),
                ])),
            ));
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap()
    }

    fn write(path: &Path, batches: &[RecordBatch]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = File::create(path).unwrap();
        let mut w = ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }

    #[test]
    fn capture_files_give_the_same_profile_as_observing_the_requests() {
        let p = profiler();
        let reqs = requests();
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("model=iris/version=1/date=2025-01-01");
        write(
            &part.join("hour=00/part-a.parquet"),
            &[
                capture_batch(&reqs[..1], true),
                capture_batch(&reqs[1..2], true),
            ],
        );
        write(
            &part.join("hour=01/part-b.parquet"),
            &[capture_batch(&reqs[2..], true)],
        );
        // A file being written, a hidden one and a job marker are not records.
        fs::write(part.join("hour=01/.part-c.parquet.tmp"), b"half a file").unwrap();
        fs::write(part.join("hour=01/.hidden.parquet"), b"not parquet").unwrap();
        fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
        fs::write(dir.path().join("README.txt"), b"notes").unwrap();

        let offline = profile_capture(dir.path(), &p).unwrap();
        let mut online = p.empty();
        for r in &reqs {
            let (inputs, outputs) = r.tensors();
            p.observe(&inputs, &outputs, &mut online);
        }
        assert_eq!(offline.files, 2);
        assert_eq!(offline.records, 6);
        assert_eq!(offline.profile, online);
        assert_eq!(online.rows(), 6);
        // And so the reports agree, including the output rows (3 of 6 records had outputs).
        let cfg = SkewConfig {
            min_rows: 1,
            ..SkewConfig::default()
        };
        let r = report(&p, &offline.profile, &cfg);
        assert_eq!(r, report(&p, &online, &cfg));
        let label = r
            .features
            .iter()
            .find(|f| f.feature == "output:label")
            .unwrap();
        assert_eq!(label.rows, 3);
        let a = r.features.iter().find(|f| f.feature == "a").unwrap();
        assert_eq!((a.rows, a.non_finite), (6, 1));

        // One file can be read on its own.
        let one = profile_capture(&part.join("hour=01/part-b.parquet"), &p).unwrap();
        assert_eq!((one.files, one.records), (1, 1));
    }

    #[test]
    fn errors_name_the_file_and_the_column() {
        let p = profiler();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let e = profile_capture(&missing, &p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("capture folder {} does not exist", missing.display())
        );

        let garbage = dir.path().join("bad/x.parquet");
        fs::create_dir_all(garbage.parent().unwrap()).unwrap();
        fs::write(&garbage, b"this is not parquet at all").unwrap();
        let e = profile_capture(&garbage, &p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{} is not a readable Parquet file",
                garbage.display()
            )),
            "{e}"
        );

        let no_outputs = dir.path().join("no_outputs.parquet");
        write(&no_outputs, &[capture_batch(&requests(), false)]);
        let e = profile_capture(&no_outputs, &p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{} has no column 'outputs', which the baseline's features need",
                no_outputs.display()
            )
        );

        let no_x = dir.path().join("no_x.parquet");
        let batch = RecordBatch::try_from_iter([(
            "inputs",
            Arc::new(struct_of(vec![("Y", floats(&[Some(vec![1.0])]))])) as ArrayRef,
        )])
        .unwrap();
        write(&no_x, &[batch]);
        let e = profile_capture(&no_x, &p).unwrap_err().to_string();
        assert!(e.contains("has no column 'inputs.X'"), "{e}");

        let flat = dir.path().join("flat.parquet");
        let batch = RecordBatch::try_from_iter([(
            "inputs",
            Arc::new(UInt64Array::from(vec![1u64])) as ArrayRef,
        )])
        .unwrap();
        write(&flat, &[batch]);
        let e = profile_capture(&flat, &p).unwrap_err().to_string();
        assert!(
            e.contains("column 'inputs' is UInt64; expected a struct"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_folder_has_no_records() {
        let p = profiler();
        let dir = tempfile::tempdir().unwrap();
        let out = profile_capture(dir.path(), &p).unwrap();
        assert_eq!((out.files, out.records), (0, 0));
        assert_eq!(out.profile, p.empty());
    }

    #[test]
    fn null_elements_count_as_non_finite() {
        let values: ArrayRef = Arc::new(arrow_array::Float32Array::from(vec![Some(1.0), None]));
        let data = tensor_data(&values, 0, 2).unwrap();
        match data {
            TensorData::Fp64(v) => assert!(v[0] == 1.0 && v[1].is_nan()),
            other => panic!("{other:?}"),
        }
        assert!(tensor_data(&values, 1, 2).is_err());
    }
}
