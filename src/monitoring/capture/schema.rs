//! The capture files' columns (contract11.md) and the conversion of captured requests into
//! Arrow record batches, one row per predicted row.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType as ArrowType, Field, FieldRef, Fields, Schema, SchemaRef};

use super::CaptureRequest;
use crate::core::signature::Signature;
use crate::core::tensor::{DataType, Tensor, TensorData};

/// The columns of one model version's capture files, built once per loaded version so that the
/// request path only clones an `Arc`.
#[derive(Debug, PartialEq)]
pub struct CaptureSchema {
    arrow: SchemaRef,
    inputs: Vec<Column>,
    outputs: Vec<Column>,
    input_fields: Fields,
    output_fields: Fields,
}

/// One input or output tensor: a `List<T>` field inside the `inputs` or `outputs` struct.
#[derive(Debug, PartialEq)]
struct Column {
    name: String,
    datatype: DataType,
    item: FieldRef,
}

impl Column {
    fn new(name: &str, datatype: DataType) -> Self {
        Self {
            name: name.to_string(),
            datatype,
            item: Arc::new(Field::new_list_field(arrow_type(datatype), true)),
        }
    }

    fn field(&self) -> Field {
        Field::new(self.name.as_str(), ArrowType::List(self.item.clone()), true)
    }
}

/// The Arrow type a tensor datatype's elements are stored as; FP16 widens exactly to Float32 (few
/// readers handle Parquet's half floats).
fn arrow_type(datatype: DataType) -> ArrowType {
    match datatype {
        DataType::Bool => ArrowType::Boolean,
        DataType::Uint8 => ArrowType::UInt8,
        DataType::Uint16 => ArrowType::UInt16,
        DataType::Uint32 => ArrowType::UInt32,
        DataType::Uint64 => ArrowType::UInt64,
        DataType::Int8 => ArrowType::Int8,
        DataType::Int16 => ArrowType::Int16,
        DataType::Int32 => ArrowType::Int32,
        DataType::Int64 => ArrowType::Int64,
        DataType::Fp16 | DataType::Fp32 => ArrowType::Float32,
        DataType::Fp64 => ArrowType::Float64,
        DataType::Bytes => ArrowType::Binary,
    }
}

impl CaptureSchema {
    /// The schema for a version's signature. A side with no tensors (a signature without outputs)
    /// has no column at all: Parquet cannot store an empty struct.
    pub fn new(signature: &Signature) -> Arc<CaptureSchema> {
        let side = |specs: &[crate::core::signature::TensorSpec]| -> Vec<Column> {
            specs
                .iter()
                .map(|s| Column::new(&s.name, s.datatype))
                .collect()
        };
        let inputs = side(&signature.inputs);
        let outputs = side(&signature.outputs);
        let mut fields = vec![
            Field::new(
                "time",
                ArrowType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("request_id", ArrowType::Utf8, true),
            Field::new("row", ArrowType::UInt32, false),
            Field::new("variant", ArrowType::Utf8, true),
            Field::new("latency_us", ArrowType::UInt64, false),
        ];
        let input_fields: Fields = inputs.iter().map(Column::field).collect();
        let output_fields: Fields = outputs.iter().map(Column::field).collect();
        for (name, children) in [("inputs", &input_fields), ("outputs", &output_fields)] {
            if !children.is_empty() {
                fields.push(Field::new_struct(name, children.clone(), false));
            }
        }
        Arc::new(CaptureSchema {
            arrow: Arc::new(Schema::new(fields)),
            inputs,
            outputs,
            input_fields,
            output_fields,
        })
    }

    /// The Arrow schema of the files (what a reader of the folder sees, less the partition keys).
    pub fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }
}

/// How a request's tensors are cut into captured rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub rows: usize,
    /// True: row `r` of a tensor is its `len / rows` elements from `r * width`. False: the request
    /// is one captured row holding every tensor whole.
    pub split: bool,
}

/// Rows are the first dimension shared by every tensor. Tensors that disagree (a model that is
/// not batch-major, a scalar beside a matrix) are kept whole in one row rather than cut wrongly.
pub(crate) fn layout(inputs: &[Tensor], outputs: &[Tensor]) -> Layout {
    let whole = Layout {
        rows: 1,
        split: false,
    };
    let mut rows = None;
    for t in inputs.iter().chain(outputs) {
        let Some(&first) = t.shape.first() else {
            return whole;
        };
        let Ok(first) = usize::try_from(first) else {
            return whole;
        };
        match rows {
            None => rows = Some(first),
            Some(r) if r != first => return whole,
            Some(_) => {}
        }
        if first > 0 && !t.data.len().is_multiple_of(first) {
            return whole;
        }
        if first == 0 && !t.data.is_empty() {
            return whole;
        }
    }
    match rows {
        Some(rows) => Layout { rows, split: true },
        None => whole,
    }
}

/// Typed element storage of one list column's values.
enum Values {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Concatenated bytes and the end offset of each element.
    Bytes(Vec<u8>, Vec<i32>),
}

impl Values {
    fn new(datatype: DataType) -> Self {
        match datatype {
            DataType::Bool => Self::Bool(Vec::new()),
            DataType::Uint8 => Self::U8(Vec::new()),
            DataType::Uint16 => Self::U16(Vec::new()),
            DataType::Uint32 => Self::U32(Vec::new()),
            DataType::Uint64 => Self::U64(Vec::new()),
            DataType::Int8 => Self::I8(Vec::new()),
            DataType::Int16 => Self::I16(Vec::new()),
            DataType::Int32 => Self::I32(Vec::new()),
            DataType::Int64 => Self::I64(Vec::new()),
            DataType::Fp16 | DataType::Fp32 => Self::F32(Vec::new()),
            DataType::Fp64 => Self::F64(Vec::new()),
            DataType::Bytes => Self::Bytes(Vec::new(), Vec::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Bool(v) => v.len(),
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::Bytes(_, ends) => ends.len(),
        }
    }

    /// Appends `data[range]` and returns the bytes added; `None` (nothing appended) when the
    /// datatype differs, the range is not within the tensor, or the column would pass Arrow's
    /// 32-bit offsets.
    fn push(&mut self, data: &TensorData, range: Range<usize>) -> Option<usize> {
        if i32::try_from(self.len() + range.len()).is_err() {
            return None;
        }
        macro_rules! copy {
            ($v:expr, $d:expr) => {{
                let part = $d.get(range)?;
                $v.extend_from_slice(part);
                Some(std::mem::size_of_val(part))
            }};
        }
        match (self, data) {
            (Self::Bool(v), TensorData::Bool(d)) => copy!(v, d),
            (Self::U8(v), TensorData::Uint8(d)) => copy!(v, d),
            (Self::U16(v), TensorData::Uint16(d)) => copy!(v, d),
            (Self::U32(v), TensorData::Uint32(d)) => copy!(v, d),
            (Self::U64(v), TensorData::Uint64(d)) => copy!(v, d),
            (Self::I8(v), TensorData::Int8(d)) => copy!(v, d),
            (Self::I16(v), TensorData::Int16(d)) => copy!(v, d),
            (Self::I32(v), TensorData::Int32(d)) => copy!(v, d),
            (Self::I64(v), TensorData::Int64(d)) => copy!(v, d),
            (Self::F32(v), TensorData::Fp32(d)) => copy!(v, d),
            (Self::F64(v), TensorData::Fp64(d)) => copy!(v, d),
            (Self::F32(v), TensorData::Fp16(d)) => {
                let part = d.get(range)?;
                v.extend(part.iter().map(|x| x.to_f32()));
                Some(4 * part.len())
            }
            (Self::Bytes(bytes, ends), TensorData::Bytes(d)) => {
                if range.end > d.len() {
                    return None;
                }
                let start = bytes.len();
                let added: usize = range
                    .clone()
                    .filter_map(|i| d.get(i))
                    .map(<[u8]>::len)
                    .sum();
                i32::try_from(start + added).ok()?;
                let elements = range.len();
                for i in range {
                    bytes.extend_from_slice(d.get(i)?);
                    // Fits: checked above.
                    ends.push(bytes.len() as i32);
                }
                Some(added + 4 * elements)
            }
            _ => None,
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        fn take<T>(v: &mut Vec<T>) -> Vec<T> {
            std::mem::take(v)
        }
        Ok(match self {
            Self::Bool(v) => Arc::new(BooleanArray::from(take(v))),
            Self::U8(v) => Arc::new(UInt8Array::from(take(v))),
            Self::U16(v) => Arc::new(UInt16Array::from(take(v))),
            Self::U32(v) => Arc::new(UInt32Array::from(take(v))),
            Self::U64(v) => Arc::new(UInt64Array::from(take(v))),
            Self::I8(v) => Arc::new(Int8Array::from(take(v))),
            Self::I16(v) => Arc::new(Int16Array::from(take(v))),
            Self::I32(v) => Arc::new(Int32Array::from(take(v))),
            Self::I64(v) => Arc::new(Int64Array::from(take(v))),
            Self::F32(v) => Arc::new(Float32Array::from(take(v))),
            Self::F64(v) => Arc::new(Float64Array::from(take(v))),
            Self::Bytes(bytes, ends) => {
                let mut offsets = Vec::with_capacity(ends.len() + 1);
                offsets.push(0i32);
                offsets.append(ends);
                Arc::new(BinaryArray::try_new(
                    offsets_buffer(offsets)?,
                    Buffer::from_vec(take(bytes)),
                    None,
                )?)
            }
        })
    }
}

fn offsets_buffer(offsets: Vec<i32>) -> Result<OffsetBuffer<i32>, ArrowError> {
    // `OffsetBuffer::new` panics on bad offsets; ours are built increasing, but say so as an
    // error rather than trust it.
    if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(ArrowError::InvalidArgumentError(
            "capture offsets are not increasing".into(),
        ));
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(offsets)))
}

/// What `ListColumn::push` stored.
enum Pushed {
    /// The tensor's elements, this many bytes of them.
    Bytes(usize),
    /// Null: the request had no such tensor (an output not asked for).
    Absent,
    /// Null: the tensor did not fit the column.
    Unfit,
}

/// One `List<T>` column being filled row by row.
struct ListColumn {
    datatype: DataType,
    item: FieldRef,
    /// End offset of each row's list within `values`.
    ends: Vec<i32>,
    valid: Vec<bool>,
    values: Values,
}

impl ListColumn {
    fn new(column: &Column) -> Self {
        Self {
            datatype: column.datatype,
            item: column.item.clone(),
            ends: Vec::new(),
            valid: Vec::new(),
            values: Values::new(column.datatype),
        }
    }

    /// Appends a row: the elements `range` of `data`, or null when there is no tensor. A tensor
    /// that does not fit (wrong datatype, too large for one batch) is stored as null too.
    fn push(&mut self, data: Option<&TensorData>, range: Range<usize>) -> Pushed {
        let pushed = match data {
            None => Pushed::Absent,
            Some(d) if d.datatype() != self.datatype => Pushed::Unfit,
            Some(d) => self
                .values
                .push(d, range)
                .map_or(Pushed::Unfit, Pushed::Bytes),
        };
        self.valid.push(matches!(pushed, Pushed::Bytes(_)));
        // Fits: `Values::push` refuses anything past i32::MAX elements.
        self.ends.push(self.values.len() as i32);
        pushed
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let mut offsets = Vec::with_capacity(self.ends.len() + 1);
        offsets.push(0i32);
        offsets.append(&mut self.ends);
        let nulls = NullBuffer::from(std::mem::take(&mut self.valid));
        Ok(Arc::new(ListArray::try_new(
            self.item.clone(),
            offsets_buffer(offsets)?,
            self.values.finish()?,
            Some(nulls),
        )?))
    }
}

/// A nullable UTF-8 column filled row by row into one buffer: no allocation per row, where an
/// owned string per row cost the writer a malloc and a free each.
#[derive(Default)]
struct StringColumn {
    bytes: Vec<u8>,
    /// End offset of each row's string within `bytes`.
    ends: Vec<i32>,
    valid: Vec<bool>,
}

impl StringColumn {
    /// Appends a row; returns the bytes added. A string that would pass Arrow's 32-bit offsets
    /// is stored as null.
    fn push(&mut self, value: Option<&str>) -> usize {
        let value = value.filter(|v| i32::try_from(self.bytes.len() + v.len()).is_ok());
        if let Some(v) = value {
            self.bytes.extend_from_slice(v.as_bytes());
        }
        self.valid.push(value.is_some());
        // Fits: checked above.
        self.ends.push(self.bytes.len() as i32);
        value.map_or(0, str::len)
    }

    fn finish(&mut self) -> Result<StringArray, ArrowError> {
        let mut offsets = Vec::with_capacity(self.ends.len() + 1);
        offsets.push(0i32);
        offsets.append(&mut self.ends);
        StringArray::try_new(
            offsets_buffer(offsets)?,
            Buffer::from_vec(std::mem::take(&mut self.bytes)),
            Some(NullBuffer::from(std::mem::take(&mut self.valid))),
        )
    }
}

/// Fixed bytes a captured row costs besides its tensors (time, row, latency, offsets).
const ROW_OVERHEAD: usize = 32;

/// Rows of one partition waiting to become a record batch.
pub(crate) struct BatchBuilder {
    schema: Arc<CaptureSchema>,
    time: Vec<i64>,
    request_id: StringColumn,
    row: Vec<u32>,
    variant: Vec<Option<&'static str>>,
    latency_us: Vec<u64>,
    inputs: Vec<ListColumn>,
    outputs: Vec<ListColumn>,
    bytes: usize,
}

impl BatchBuilder {
    pub(crate) fn new(schema: Arc<CaptureSchema>) -> Self {
        let inputs = schema.inputs.iter().map(ListColumn::new).collect();
        let outputs = schema.outputs.iter().map(ListColumn::new).collect();
        Self {
            schema,
            time: Vec::new(),
            request_id: StringColumn::default(),
            row: Vec::new(),
            variant: Vec::new(),
            latency_us: Vec::new(),
            inputs,
            outputs,
            bytes: 0,
        }
    }

    pub(crate) fn schema(&self) -> &Arc<CaptureSchema> {
        &self.schema
    }

    pub(crate) fn rows(&self) -> usize {
        self.time.len()
    }

    /// Approximate bytes held (and about what they take in a file before compression).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends the request's rows; returns how many values had to be stored as null because the
    /// tensor did not match the schema (a wrong datatype) or was too large for one batch.
    pub(crate) fn push(&mut self, req: &CaptureRequest, layout: Layout, time_us: i64) -> usize {
        let latency_us = u64::try_from(req.latency.as_micros()).unwrap_or(u64::MAX);
        let mut mismatches = 0;
        for r in 0..layout.rows {
            self.time.push(time_us);
            self.bytes += self.request_id.push(req.request_id.as_deref());
            self.row.push(u32::try_from(r).unwrap_or(u32::MAX));
            self.variant.push(req.variant);
            self.latency_us.push(latency_us);
            self.bytes += ROW_OVERHEAD;
            let sides = [
                (&mut self.inputs, &self.schema.inputs, &req.inputs),
                (&mut self.outputs, &self.schema.outputs, &req.outputs),
            ];
            for (builders, columns, tensors) in sides {
                for (builder, column) in builders.iter_mut().zip(columns) {
                    let tensor = tensors.iter().find(|t| t.name == column.name);
                    let range = match (tensor, layout.split) {
                        (Some(t), true) => {
                            let width = t.data.len() / layout.rows.max(1);
                            r * width..(r + 1) * width
                        }
                        (Some(t), false) => 0..t.data.len(),
                        (None, _) => 0..0,
                    };
                    match builder.push(tensor.map(|t| &t.data), range) {
                        Pushed::Bytes(bytes) => self.bytes += bytes,
                        Pushed::Absent => {}
                        Pushed::Unfit => mismatches += 1,
                    }
                }
            }
        }
        mismatches
    }

    /// The rows pushed so far as a record batch; the builder is empty afterwards.
    pub(crate) fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let time =
            TimestampMicrosecondArray::from(std::mem::take(&mut self.time)).with_timezone("UTC");
        let request_id = self.request_id.finish()?;
        let variant: StringArray = self.variant.drain(..).collect();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(time),
            Arc::new(request_id),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.row))),
            Arc::new(variant),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.latency_us))),
        ];
        let sides = [
            (&mut self.inputs, &self.schema.input_fields),
            (&mut self.outputs, &self.schema.output_fields),
        ];
        for (builders, fields) in sides {
            if builders.is_empty() {
                continue;
            }
            let arrays = builders
                .iter_mut()
                .map(ListColumn::finish)
                .collect::<Result<Vec<_>, _>>()?;
            columns.push(Arc::new(StructArray::try_new(
                fields.clone(),
                arrays,
                None,
            )?));
        }
        self.bytes = 0;
        RecordBatch::try_new(self.schema.arrow.clone(), columns)
    }
}
