//! Protocol-agnostic tensors: the V2 datatypes, typed element storage, and the conversions every
//! front end needs (little-endian bytes for binary/raw transports, nested JSON arrays).

use std::fmt;

use half::f16;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, SerializeSeq, Serializer};

pub use crate::core::bytes::ByteStrings;

/// A tensor datatype, as the Open Inference Protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp16,
        Self::Fp32,
        Self::Fp64,
        Self::Bytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }

    /// Parses a V2 datatype name (exact, upper case, as the protocol spells it).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element, or `None` for variable-length BYTES.
    pub fn element_size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::Uint8 | Self::Int8 => Some(1),
            Self::Uint16 | Self::Int16 | Self::Fp16 => Some(2),
            Self::Uint32 | Self::Int32 | Self::Fp32 => Some(4),
            Self::Uint64 | Self::Int64 | Self::Fp64 => Some(8),
            Self::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a datatype name into a readable error naming the valid ones.
pub fn parse_datatype(s: &str) -> Result<DataType, String> {
    DataType::parse(s).ok_or_else(|| {
        let names: Vec<_> = DataType::ALL.iter().map(|d| d.as_str()).collect();
        format!(
            "unknown datatype '{s}' (expected one of {})",
            names.join(", ")
        )
    })
}

/// Typed, row-major tensor elements.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
    Bytes(ByteStrings),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of whichever variant `$data` is.
macro_rules! each_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

/// Runs `$body` with `$v` bound to the inner `Vec` and `$ctor` to the variant's constructor, for
/// every fixed-size variant; `$bytes` with `$v` bound to the BYTES storage.
macro_rules! each_variant_ctor {
    ($data:expr, $v:ident, $ctor:ident => $body:expr, bytes => $bytes:expr) => {
        match $data {
            TensorData::Bool($v) => {
                let $ctor = TensorData::Bool;
                $body
            }
            TensorData::Uint8($v) => {
                let $ctor = TensorData::Uint8;
                $body
            }
            TensorData::Uint16($v) => {
                let $ctor = TensorData::Uint16;
                $body
            }
            TensorData::Uint32($v) => {
                let $ctor = TensorData::Uint32;
                $body
            }
            TensorData::Uint64($v) => {
                let $ctor = TensorData::Uint64;
                $body
            }
            TensorData::Int8($v) => {
                let $ctor = TensorData::Int8;
                $body
            }
            TensorData::Int16($v) => {
                let $ctor = TensorData::Int16;
                $body
            }
            TensorData::Int32($v) => {
                let $ctor = TensorData::Int32;
                $body
            }
            TensorData::Int64($v) => {
                let $ctor = TensorData::Int64;
                $body
            }
            TensorData::Fp16($v) => {
                let $ctor = TensorData::Fp16;
                $body
            }
            TensorData::Fp32($v) => {
                let $ctor = TensorData::Fp32;
                $body
            }
            TensorData::Fp64($v) => {
                let $ctor = TensorData::Fp64;
                $body
            }
            TensorData::Bytes($v) => $bytes,
        }
    };
}

/// Runs `$fixed` for every fixed-size variant with `$t` as its element type, `$bytes` for BYTES.
macro_rules! by_datatype {
    ($dt:expr, $t:ident => $fixed:expr, bytes => $bytes:expr) => {
        match $dt {
            DataType::Bool => {
                type $t = bool;
                $fixed
            }
            DataType::Uint8 => {
                type $t = u8;
                $fixed
            }
            DataType::Uint16 => {
                type $t = u16;
                $fixed
            }
            DataType::Uint32 => {
                type $t = u32;
                $fixed
            }
            DataType::Uint64 => {
                type $t = u64;
                $fixed
            }
            DataType::Int8 => {
                type $t = i8;
                $fixed
            }
            DataType::Int16 => {
                type $t = i16;
                $fixed
            }
            DataType::Int32 => {
                type $t = i32;
                $fixed
            }
            DataType::Int64 => {
                type $t = i64;
                $fixed
            }
            DataType::Fp16 => {
                type $t = ::half::f16;
                $fixed
            }
            DataType::Fp32 => {
                type $t = f32;
                $fixed
            }
            DataType::Fp64 => {
                type $t = f64;
                $fixed
            }
            DataType::Bytes => $bytes,
        }
    };
}
pub(crate) use by_datatype;

/// A fixed-size element type: how it maps to a datatype and to little-endian bytes.
pub trait Element: Copy + Send + Sync + fmt::Debug + 'static {
    const DATATYPE: DataType;
    const SIZE: usize;
    fn read_le(bytes: &[u8]) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    fn wrap(v: Vec<Self>) -> TensorData;
    fn unwrap(data: TensorData) -> Option<Vec<Self>>;
}

macro_rules! numeric_element {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl Element for $t {
            const DATATYPE: DataType = DataType::$variant;
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            #[inline]
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
            fn unwrap(data: TensorData) -> Option<Vec<Self>> {
                match data {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}
numeric_element!(
    u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64,
    f16 => Fp16, f32 => Fp32, f64 => Fp64,
);

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    const SIZE: usize = 1;
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn wrap(v: Vec<Self>) -> TensorData {
        TensorData::Bool(v)
    }
    fn unwrap(data: TensorData) -> Option<Vec<Self>> {
        match data {
            TensorData::Bool(v) => Some(v),
            _ => None,
        }
    }
}

fn decode_fixed<T: Element>(bytes: &[u8]) -> Result<TensorData, String> {
    if !bytes.len().is_multiple_of(T::SIZE) {
        return Err(format!(
            "{} bytes is not a whole number of {} elements ({} bytes each)",
            bytes.len(),
            T::DATATYPE,
            T::SIZE
        ));
    }
    Ok(T::wrap(
        bytes.chunks_exact(T::SIZE).map(T::read_le).collect(),
    ))
}

/// Walks BYTES elements, each prefixed by its length as a 4-byte little-endian integer.
fn each_prefixed(mut bytes: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), String> {
    let mut i = 0usize;
    while !bytes.is_empty() {
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "BYTES element {i} has a truncated 4-byte length prefix"
            ));
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if rest.len() < len {
            return Err(format!(
                "BYTES element {i} claims {len} bytes but only {} remain",
                rest.len()
            ));
        }
        let (element, rest) = rest.split_at(len);
        f(element);
        bytes = rest;
        i += 1;
    }
    Ok(())
}

/// Decodes length-prefixed BYTES elements. A first pass counts them, so the storage is allocated
/// once at its exact size.
fn decode_bytes(bytes: &[u8]) -> Result<TensorData, String> {
    let mut count = 0usize;
    each_prefixed(bytes, |_| count += 1)?;
    let mut out = ByteStrings::with_capacity(count, bytes.len() - 4 * count);
    let mut too_large = None;
    each_prefixed(bytes, |element| {
        if let Err(e) = out.push(element) {
            too_large = Some(e);
        }
    })?;
    match too_large {
        Some(e) => Err(e.to_string()),
        None => Ok(TensorData::Bytes(out)),
    }
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Bool,
            Self::Uint8(_) => DataType::Uint8,
            Self::Uint16(_) => DataType::Uint16,
            Self::Uint32(_) => DataType::Uint32,
            Self::Uint64(_) => DataType::Uint64,
            Self::Int8(_) => DataType::Int8,
            Self::Int16(_) => DataType::Int16,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::Fp16(_) => DataType::Fp16,
            Self::Fp32(_) => DataType::Fp32,
            Self::Fp64(_) => DataType::Fp64,
            Self::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty tensor of `datatype` with room for `capacity` elements.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> Self {
        by_datatype!(datatype, T => <T as Element>::wrap(Vec::with_capacity(capacity)),
            bytes => Self::Bytes(ByteStrings::with_capacity(capacity, 0)))
    }

    /// Decodes little-endian bytes (the binary-data extension and gRPC raw contents).
    pub fn from_le_bytes(datatype: DataType, bytes: &[u8]) -> Result<Self, String> {
        by_datatype!(datatype, T => decode_fixed::<T>(bytes), bytes => decode_bytes(bytes))
    }

    /// Size of `write_le_bytes`'s output.
    pub fn byte_len(&self) -> usize {
        match self {
            Self::Bytes(v) => 4 * v.len() + v.total_bytes(),
            other => other.len() * other.datatype().element_size().unwrap_or(0),
        }
    }

    /// Appends the little-endian encoding (BYTES: 4-byte length prefix per element).
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.byte_len());
        match self {
            Self::Bytes(v) => {
                for b in v.iter() {
                    // Fits: ByteStrings holds at most u32::MAX bytes in all.
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
            }
            Self::Bool(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Uint8(v) => out.extend_from_slice(v),
            Self::Uint16(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Uint32(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Uint64(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Int8(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Int16(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Int32(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Int64(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Fp16(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Fp32(v) => v.iter().for_each(|x| x.write_le(out)),
            Self::Fp64(v) => v.iter().for_each(|x| x.write_le(out)),
        }
    }

    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_le_bytes(&mut out);
        out
    }

    /// Appends a copy of `other`'s elements; both must have the same datatype.
    pub fn append(&mut self, other: &TensorData) -> Result<(), String> {
        let (want, got) = (self.datatype(), other.datatype());
        macro_rules! join {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => {
                        a.extend_from_slice(b);
                        Ok(())
                    })*
                    (TensorData::Bytes(a), TensorData::Bytes(b)) => {
                        a.extend(b).map_err(|e| e.to_string())
                    }
                    _ => Err(format!("cannot append {got} elements to a {want} tensor")),
                }
            };
        }
        join!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64
        )
    }

    /// Splits into consecutive parts of `counts` elements each (which must sum to `len()`).
    pub fn split(self, counts: &[usize]) -> Result<Vec<TensorData>, String> {
        let total = counts
            .iter()
            .try_fold(0usize, |acc, &c| acc.checked_add(c))
            .filter(|&t| t == self.len());
        if total.is_none() {
            return Err(format!(
                "cannot split {} elements into parts of {counts:?} elements",
                self.len()
            ));
        }
        if counts.len() == 1 {
            return Ok(vec![self]);
        }
        let mut start = 0;
        counts
            .iter()
            .map(|&c| {
                let part = self.slice(start, start + c);
                start += c;
                part
            })
            .collect()
    }

    /// Copies the elements `[start, end)` into a new tensor; an error when the range is not
    /// within the tensor.
    pub fn slice(&self, start: usize, end: usize) -> Result<TensorData, String> {
        let out_of_range = || {
            format!(
                "cannot take elements {start}..{end} of a tensor of {} elements",
                self.len()
            )
        };
        Ok(
            each_variant_ctor!(self, v, ctor => ctor(v.get(start..end).ok_or_else(out_of_range)?.to_vec()),
            bytes => TensorData::Bytes(v.slice(start, end).ok_or_else(out_of_range)?)),
        )
    }

    /// Parses a JSON array (nested to any depth, flattened in row-major order) of `datatype`
    /// elements. `expected` is the element count the tensor's shape holds: more is an error as soon
    /// as it is seen. Storage is allocated once, for `expected` elements or as many as the text can
    /// hold, whichever is fewer, so decoded memory stays within a constant of the text's size.
    pub fn from_json(
        datatype: DataType,
        json: &str,
        expected: Option<usize>,
    ) -> Result<Self, String> {
        fn parse<S: JsonSink>(mut sink: S, json: &str, max: usize) -> Result<S, String> {
            let mut de = serde_json::Deserializer::from_str(json);
            Flatten {
                sink: &mut sink,
                max,
            }
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| strip_position(e.to_string()))?;
            Ok(sink)
        }
        let max = expected.unwrap_or(usize::MAX);
        Ok(by_datatype!(datatype, T => {
            // Each element is at least one character and a separator.
            let cap = max.min(json.len() / 2 + 1);
            <T as Element>::wrap(parse(Vec::<T>::with_capacity(cap), json, max)?)
        }, bytes => {
            // Each element is at least two quotes and a separator.
            let cap = max.min(json.len() / 3 + 1);
            Self::Bytes(parse(ByteStrings::with_capacity(cap, 0), json, max)?)
        }))
    }
}

/// serde_json appends " at line 1 column 57" to messages; the column of a sub-document means
/// nothing to the caller, so drop it.
pub fn strip_position(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Bool(v) => s.collect_seq(v),
            Self::Uint8(v) => s.collect_seq(v),
            Self::Uint16(v) => s.collect_seq(v),
            Self::Uint32(v) => s.collect_seq(v),
            Self::Uint64(v) => s.collect_seq(v),
            Self::Int8(v) => s.collect_seq(v),
            Self::Int16(v) => s.collect_seq(v),
            Self::Int32(v) => s.collect_seq(v),
            Self::Int64(v) => s.collect_seq(v),
            Self::Fp16(v) => s.collect_seq(v.iter().map(|x| x.to_f32())),
            Self::Fp32(v) => s.collect_seq(v),
            Self::Fp64(v) => s.collect_seq(v),
            Self::Bytes(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for (i, b) in v.iter().enumerate() {
                    let text = std::str::from_utf8(b).map_err(|_| {
                        S::Error::custom(format!(
                            "BYTES element {i} is not valid UTF-8, so it cannot be sent as JSON; \
                             request this output as binary data"
                        ))
                    })?;
                    seq.serialize_element(text)?;
                }
                seq.end()
            }
        }
    }
}

/// How a JSON scalar becomes an element; `None` means "wrong kind of value".
trait JsonElement: Sized {
    const EXPECTED: &'static str;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
}

impl JsonElement for bool {
    const EXPECTED: &'static str = "true or false (BOOL)";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

macro_rules! json_int {
    ($($t:ty => $what:literal),*) => {$(
        impl JsonElement for $t {
            const EXPECTED: &'static str = $what;
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            // 3.0 is accepted as 3; 3.5 is not an integer. The upper bound is exclusive and a
            // power of two, exact as an f64 (`MAX as f64` rounds up to it for 64-bit types, and
            // `as` would then saturate 2^63 to i64::MAX).
            fn from_f64(v: f64) -> Option<Self> {
                let below = (<$t>::MAX as u128 + 1) as f64;
                (v.fract() == 0.0 && v >= <$t>::MIN as f64 && v < below).then(|| v as $t)
            }
        }
    )*};
}
json_int!(
    u8 => "an integer in 0..=255 (UINT8)",
    u16 => "an integer in 0..=65535 (UINT16)",
    u32 => "an integer in 0..=4294967295 (UINT32)",
    u64 => "an integer in 0..=18446744073709551615 (UINT64)",
    i8 => "an integer in -128..=127 (INT8)",
    i16 => "an integer in -32768..=32767 (INT16)",
    i32 => "an integer in -2147483648..=2147483647 (INT32)",
    i64 => "an integer in -9223372036854775808..=9223372036854775807 (INT64)"
);

macro_rules! json_float {
    ($($t:ty => $what:literal, $from:expr),*) => {$(
        impl JsonElement for $t {
            const EXPECTED: &'static str = $what;
            fn from_u64(v: u64) -> Option<Self> { Some($from(v as f64)) }
            fn from_i64(v: i64) -> Option<Self> { Some($from(v as f64)) }
            fn from_f64(v: f64) -> Option<Self> { Some($from(v)) }
        }
    )*};
}
json_float!(
    f16 => "a number (FP16)", f16::from_f64,
    f32 => "a number (FP32)", |v: f64| v as f32,
    f64 => "a number (FP64)", |v: f64| v
);

/// A JSON scalar as the parser saw it.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'a str),
    Null,
    Object,
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(v) => write!(f, "{v}"),
            Self::U64(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
            Self::Str(v) => write!(f, "the string {v:?}"),
            Self::Null => f.write_str("null"),
            Self::Object => f.write_str("an object"),
        }
    }
}

/// Where flattened JSON scalars go: a typed `Vec`, or BYTES storage.
trait JsonSink {
    const EXPECTED: &'static str;
    fn count(&self) -> usize;
    /// Stores `v`; `Ok(false)` when it is the wrong kind of value.
    fn take(&mut self, v: Scalar<'_>) -> Result<bool, String>;
}

impl<T: JsonElement> JsonSink for Vec<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn count(&self) -> usize {
        self.len()
    }
    fn take(&mut self, v: Scalar<'_>) -> Result<bool, String> {
        let v = match v {
            Scalar::Bool(b) => T::from_bool(b),
            Scalar::U64(n) => T::from_u64(n),
            Scalar::I64(n) => T::from_i64(n),
            Scalar::F64(n) => T::from_f64(n),
            Scalar::Str(_) | Scalar::Null | Scalar::Object => None,
        };
        Ok(v.map(|v| self.push(v)).is_some())
    }
}

impl JsonSink for ByteStrings {
    const EXPECTED: &'static str = "a string (BYTES)";
    fn count(&self) -> usize {
        self.len()
    }
    fn take(&mut self, v: Scalar<'_>) -> Result<bool, String> {
        match v {
            Scalar::Str(s) => self
                .push(s.as_bytes())
                .map(|()| true)
                .map_err(|e| e.to_string()),
            _ => Ok(false),
        }
    }
}

/// A serde seed that flattens nested arrays of scalars into one sink, converting each scalar as
/// it is read, so a request's tensor data never goes through an intermediate `serde_json::Value`
/// nor a per-array allocation. More than `max` elements is an error.
struct Flatten<'a, S> {
    sink: &'a mut S,
    max: usize,
}

impl<S: JsonSink> Flatten<'_, S> {
    fn push<E: de::Error>(self, v: Scalar<'_>) -> Result<(), E> {
        let n = self.sink.count();
        if n >= self.max {
            return Err(E::custom(format!(
                "more than the {} elements its shape holds were given",
                self.max
            )));
        }
        match self.sink.take(v) {
            Ok(true) => Ok(()),
            Ok(false) => Err(E::custom(format!(
                "element {n} is {v}, expected {}",
                S::EXPECTED
            ))),
            Err(e) => Err(E::custom(format!("element {n}: {e}"))),
        }
    }
}

impl<'de, S: JsonSink> DeserializeSeed<'de> for Flatten<'_, S> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: JsonSink> Visitor<'de> for Flatten<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", S::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let max = self.max;
        while seq
            .next_element_seed(Flatten {
                sink: &mut *self.sink,
                max,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::F64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(Scalar::Null)
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.push(Scalar::Object)
    }
}

/// Number of elements a shape holds, or `None` for a negative dimension or an overflow.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// A named tensor with its shape; the datatype is the data's.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn new(name: impl Into<String>, shape: Vec<i64>, data: TensorData) -> Self {
        Self {
            name: name.into(),
            shape,
            data,
        }
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert!(parse_datatype("FLOAT").unwrap_err().contains("FP32"));
    }

    #[test]
    fn json_nested_and_flat_give_the_same_elements() {
        let flat = TensorData::from_json(DataType::Fp32, "[1, 2.5, -3, 4]", None).unwrap();
        let nested = TensorData::from_json(DataType::Fp32, "[[1, 2.5], [-3, 4]]", None).unwrap();
        assert_eq!(flat, TensorData::Fp32(vec![1.0, 2.5, -3.0, 4.0]));
        assert_eq!(flat, nested);
    }

    #[test]
    fn json_rejects_wrong_kinds_with_the_element_index() {
        let e = TensorData::from_json(DataType::Fp32, r#"[1, "x"]"#, None).unwrap_err();
        assert!(e.contains("element 1") && e.contains("FP32"), "{e}");
        let e = TensorData::from_json(DataType::Int64, "[1, 2.5]", None).unwrap_err();
        assert!(e.contains("element 1") && e.contains("INT64"), "{e}");
        let e = TensorData::from_json(DataType::Uint8, "[256]", None).unwrap_err();
        assert!(e.contains("UINT8"), "{e}");
        let e = TensorData::from_json(DataType::Bool, "[1]", None).unwrap_err();
        assert!(e.contains("BOOL"), "{e}");
        assert!(TensorData::from_json(DataType::Fp32, "[1, null]", None).is_err());
        assert!(TensorData::from_json(DataType::Fp32, "[1, {}]", None).is_err());
        assert_eq!(
            TensorData::from_json(DataType::Int32, "[3.0]", None).unwrap(),
            TensorData::Int32(vec![3])
        );
    }

    #[test]
    fn le_bytes_round_trip_for_every_datatype() {
        let samples = vec![
            TensorData::Bool(vec![true, false, true]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![1, 65535]),
            TensorData::Uint32(vec![7, u32::MAX]),
            TensorData::Uint64(vec![9, u64::MAX]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-2, 300]),
            TensorData::Int32(vec![i32::MIN, 5]),
            TensorData::Int64(vec![i64::MIN, i64::MAX]),
            TensorData::Fp16(vec![f16::from_f32(1.5), f16::from_f32(-0.25)]),
            TensorData::Fp32(vec![1.5, f32::MIN_POSITIVE, -0.0]),
            TensorData::Fp64(vec![std::f64::consts::PI]),
            TensorData::Bytes(ByteStrings::from_items([&b"abc"[..], b"", &[0, 255]]).unwrap()),
        ];
        for data in samples {
            let bytes = data.to_le_bytes();
            assert_eq!(bytes.len(), data.byte_len());
            let back = TensorData::from_le_bytes(data.datatype(), &bytes).unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn le_bytes_reject_partial_elements() {
        assert!(TensorData::from_le_bytes(DataType::Fp32, &[0; 6]).is_err());
        assert!(TensorData::from_le_bytes(DataType::Bytes, &[5, 0, 0, 0, b'a']).is_err());
        assert!(TensorData::from_le_bytes(DataType::Bytes, &[1, 0]).is_err());
    }

    #[test]
    fn split_and_append_are_inverse() {
        let data = TensorData::Int64((0..10).collect());
        let parts = data.clone().split(&[3, 0, 7]).unwrap();
        assert_eq!(parts[0], TensorData::Int64(vec![0, 1, 2]));
        assert!(parts[1].is_empty());
        let mut joined = TensorData::with_capacity(DataType::Int64, 10);
        for p in parts {
            joined.append(&p).unwrap();
        }
        assert_eq!(joined, data);
        assert!(data.clone().split(&[3]).is_err());
        assert!(joined.append(&TensorData::Fp32(vec![1.0])).is_err());
    }

    #[test]
    fn json_output_of_bytes_requires_utf8() {
        let ok = ByteStrings::from_items(["hi", ""]).unwrap();
        let ok = serde_json::to_string(&TensorData::Bytes(ok)).unwrap();
        assert_eq!(ok, r#"["hi",""]"#);
        let bad = ByteStrings::from_items([[0xff]]).unwrap();
        assert!(serde_json::to_string(&TensorData::Bytes(bad)).is_err());
    }

    #[test]
    fn integers_outside_the_datatype_range_are_refused_not_saturated() {
        // 2^63 and 2^64 (as floats, or as integers too large for u64, which serde_json reads as
        // floats) used to pass the `<= MAX as f64` check and saturate to MAX.
        for (dt, text) in [
            (DataType::Int64, "[9223372036854775808.0]"),
            (DataType::Int64, "[9.3e18]"),
            (DataType::Int64, "[-9223372036854777856.0]"),
            (DataType::Int64, "[9223372036854775808]"),
            (DataType::Uint64, "[18446744073709551616]"),
            (DataType::Uint64, "[18446744073709551616.0]"),
            (DataType::Uint64, "[-1]"),
            (DataType::Int32, "[2147483648.0]"),
            (DataType::Uint8, "[256.0]"),
        ] {
            let e = TensorData::from_json(dt, text, None).unwrap_err();
            assert!(
                e.starts_with("element 0 is ")
                    && e.contains(&format!("({dt})"))
                    && e.contains(".."),
                "{dt} {text}: {e}"
            );
        }
        let e =
            TensorData::from_json(DataType::Int64, "[1, 9223372036854775808.0]", None).unwrap_err();
        assert_eq!(
            e,
            "element 1 is 9223372036854776000, expected an integer in \
             -9223372036854775808..=9223372036854775807 (INT64)"
        );
        let edges = "[9223372036854775807, -9223372036854775808, -9223372036854775808.0]";
        assert_eq!(
            TensorData::from_json(DataType::Int64, edges, None).unwrap(),
            TensorData::Int64(vec![i64::MAX, i64::MIN, i64::MIN])
        );
        assert_eq!(
            TensorData::from_json(DataType::Uint64, "[18446744073709551615, 9.2e18]", None)
                .unwrap(),
            TensorData::Uint64(vec![u64::MAX, 9_200_000_000_000_000_000])
        );
    }

    #[test]
    fn slice_out_of_range_is_an_error_not_a_panic() {
        let data = TensorData::Fp32(vec![1.0, 2.0, 3.0]);
        assert_eq!(data.slice(1, 3).unwrap(), TensorData::Fp32(vec![2.0, 3.0]));
        assert_eq!(data.slice(3, 3).unwrap(), TensorData::Fp32(vec![]));
        let e = data.slice(2, 4).unwrap_err();
        assert_eq!(e, "cannot take elements 2..4 of a tensor of 3 elements");
        assert!(data.slice(2, 1).is_err());
        let bytes = TensorData::Bytes(ByteStrings::from_items(["a", "b"]).unwrap());
        assert!(bytes.slice(1, 3).is_err());
        assert_eq!(
            bytes.slice(1, 2).unwrap(),
            TensorData::Bytes(ByteStrings::from_items(["b"]).unwrap())
        );
        assert!(data.split(&[usize::MAX, 4]).is_err());
    }

    #[test]
    fn json_elements_are_bounded_by_the_shape_and_the_nesting_limit() {
        let e = TensorData::from_json(DataType::Fp32, "[1, 2, 3]", Some(2)).unwrap_err();
        assert_eq!(e, "more than the 2 elements its shape holds were given");
        assert_eq!(
            TensorData::from_json(DataType::Fp32, "[[1], [2]]", Some(2)).unwrap(),
            TensorData::Fp32(vec![1.0, 2.0])
        );
        // Fewer is left for validation to report with the shape.
        assert_eq!(
            TensorData::from_json(DataType::Bytes, r#"["a"]"#, Some(1_000_000)).unwrap(),
            TensorData::Bytes(ByteStrings::from_items(["a"]).unwrap())
        );
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = TensorData::from_json(DataType::Fp32, &deep, None).unwrap_err();
        assert!(e.contains("recursion limit"), "{e}");
    }

    #[test]
    fn element_count_checks_sign_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }
}
