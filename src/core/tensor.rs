//! Protocol-agnostic tensors: the V2 datatypes, typed element storage, and the conversions every
//! front end needs (little-endian bytes for binary/raw transports, nested JSON arrays).

use std::fmt;

use half::f16;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, Serializer};

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
    Bytes(Vec<Vec<u8>>),
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

/// Runs `$body` with `$v` bound to the inner `Vec` and `$ctor` to the variant's constructor.
macro_rules! each_variant_ctor {
    ($data:expr, $v:ident, $ctor:ident => $body:expr) => {
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
            TensorData::Bytes($v) => {
                let $ctor = TensorData::Bytes;
                $body
            }
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

/// Decodes BYTES elements, each prefixed by its length as a 4-byte little-endian integer.
fn decode_bytes(mut bytes: &[u8]) -> Result<TensorData, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(format!(
                "BYTES element {} has a truncated 4-byte length prefix",
                out.len()
            ));
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        bytes = &bytes[4..];
        if bytes.len() < len {
            return Err(format!(
                "BYTES element {} claims {len} bytes but only {} remain",
                out.len(),
                bytes.len()
            ));
        }
        out.push(bytes[..len].to_vec());
        bytes = &bytes[len..];
    }
    Ok(TensorData::Bytes(out))
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
            bytes => Self::Bytes(Vec::with_capacity(capacity)))
    }

    /// Decodes little-endian bytes (the binary-data extension and gRPC raw contents).
    pub fn from_le_bytes(datatype: DataType, bytes: &[u8]) -> Result<Self, String> {
        by_datatype!(datatype, T => decode_fixed::<T>(bytes), bytes => decode_bytes(bytes))
    }

    /// Size of `write_le_bytes`'s output.
    pub fn byte_len(&self) -> usize {
        match self {
            Self::Bytes(v) => v.iter().map(|b| 4 + b.len()).sum(),
            other => other.len() * other.datatype().element_size().unwrap_or(0),
        }
    }

    /// Appends the little-endian encoding (BYTES: 4-byte length prefix per element).
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.byte_len());
        match self {
            Self::Bytes(v) => {
                for b in v {
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

    /// Appends `other`'s elements; both must have the same datatype.
    pub fn append(&mut self, other: TensorData) -> Result<(), String> {
        let (want, got) = (self.datatype(), other.datatype());
        macro_rules! join {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => {
                        a.extend(b);
                        Ok(())
                    })*
                    _ => Err(format!("cannot append {got} elements to a {want} tensor")),
                }
            };
        }
        join!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
        )
    }

    /// Splits into consecutive parts of `counts` elements each (which must sum to `len()`).
    pub fn split(self, counts: &[usize]) -> Result<Vec<TensorData>, String> {
        let total: usize = counts.iter().sum();
        if total != self.len() {
            return Err(format!(
                "cannot split {} elements into parts totalling {total}",
                self.len()
            ));
        }
        if counts.len() == 1 {
            return Ok(vec![self]);
        }
        Ok(each_variant_ctor!(self, v, ctor => {
            // Slice copies (memcpy for numbers) are much faster than moving element by element.
            let mut start = 0;
            counts
                .iter()
                .map(|&c| {
                    let part = ctor(v[start..start + c].to_vec());
                    start += c;
                    part
                })
                .collect()
        }))
    }

    /// Copies the elements `[start, end)` into a new tensor.
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        each_variant_ctor!(self, v, ctor => ctor(v[start..end].to_vec()))
    }

    /// Parses a JSON array (nested to any depth, flattened in row-major order) of `datatype` elements.
    pub fn from_json(datatype: DataType, json: &str) -> Result<Self, String> {
        fn parse<T: JsonElement>(json: &str) -> Result<Vec<T>, String> {
            let mut out = Vec::new();
            let mut de = serde_json::Deserializer::from_str(json);
            Flatten(&mut out)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(|e| strip_position(e.to_string()))?;
            Ok(out)
        }
        Ok(
            by_datatype!(datatype, T => <T as Element>::wrap(parse::<T>(json)?),
            bytes => Self::Bytes(parse::<Vec<u8>>(json)?.into_iter().collect())),
        )
    }
}

/// Deserializes a JSON array (nested to any depth) of `datatype` elements straight into typed
/// storage, in one pass over the text.
pub struct DataSeed(pub DataType);

impl<'de> DeserializeSeed<'de> for DataSeed {
    type Value = TensorData;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TensorData, D::Error> {
        fn typed<'de, T: JsonElement, D: de::Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
            let mut out = Vec::new();
            Flatten(&mut out).deserialize(d)?;
            Ok(out)
        }
        Ok(
            by_datatype!(self.0, T => <T as Element>::wrap(typed::<T, D>(d)?),
            bytes => TensorData::Bytes(typed::<Vec<u8>, D>(d)?)),
        )
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
                let mut strings = Vec::with_capacity(v.len());
                for (i, b) in v.iter().enumerate() {
                    strings.push(std::str::from_utf8(b).map_err(|_| {
                        S::Error::custom(format!(
                            "BYTES element {i} is not valid UTF-8, so it cannot be sent as JSON; \
                             request this output as binary data"
                        ))
                    })?);
                }
                s.collect_seq(strings)
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
    fn from_str(_: &str) -> Option<Self> {
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
            // 3.0 is accepted as 3; 3.5 is not an integer.
            fn from_f64(v: f64) -> Option<Self> {
                (v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64).then(|| v as $t)
            }
        }
    )*};
}
json_int!(
    u8 => "an integer in 0..=255 (UINT8)",
    u16 => "an integer in 0..=65535 (UINT16)",
    u32 => "an integer in 0..=4294967295 (UINT32)",
    u64 => "a non-negative integer (UINT64)",
    i8 => "an integer in -128..=127 (INT8)",
    i16 => "an integer in -32768..=32767 (INT16)",
    i32 => "an integer in the INT32 range",
    i64 => "an integer in the INT64 range"
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

impl JsonElement for Vec<u8> {
    const EXPECTED: &'static str = "a string (BYTES)";
    fn from_str(v: &str) -> Option<Self> {
        Some(v.as_bytes().to_vec())
    }
}

/// A serde seed that flattens nested arrays of scalars into one `Vec`, converting each scalar as
/// it is read, so a request's tensor data never goes through an intermediate `serde_json::Value`.
struct Flatten<'a, T>(&'a mut Vec<T>);

impl<T: JsonElement> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, found: impl fmt::Display) -> Result<(), E> {
        match v {
            Some(v) => {
                self.0.push(v);
                Ok(())
            }
            None => Err(E::custom(format!(
                "element {} is {found}, expected {}",
                self.0.len(),
                T::EXPECTED
            ))),
        }
    }
}

impl<'de, T: JsonElement> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", T::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), format_args!("the string {v:?}"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(None, "null")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.push(None, "an object")
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
        let flat = TensorData::from_json(DataType::Fp32, "[1, 2.5, -3, 4]").unwrap();
        let nested = TensorData::from_json(DataType::Fp32, "[[1, 2.5], [-3, 4]]").unwrap();
        assert_eq!(flat, TensorData::Fp32(vec![1.0, 2.5, -3.0, 4.0]));
        assert_eq!(flat, nested);
    }

    #[test]
    fn json_rejects_wrong_kinds_with_the_element_index() {
        let e = TensorData::from_json(DataType::Fp32, r#"[1, "x"]"#).unwrap_err();
        assert!(e.contains("element 1") && e.contains("FP32"), "{e}");
        let e = TensorData::from_json(DataType::Int64, "[1, 2.5]").unwrap_err();
        assert!(e.contains("element 1") && e.contains("INT64"), "{e}");
        let e = TensorData::from_json(DataType::Uint8, "[256]").unwrap_err();
        assert!(e.contains("UINT8"), "{e}");
        let e = TensorData::from_json(DataType::Bool, "[1]").unwrap_err();
        assert!(e.contains("BOOL"), "{e}");
        assert!(TensorData::from_json(DataType::Fp32, "[1, null]").is_err());
        assert!(TensorData::from_json(DataType::Fp32, "[1, {}]").is_err());
        assert_eq!(
            TensorData::from_json(DataType::Int32, "[3.0]").unwrap(),
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
            TensorData::Bytes(vec![b"abc".to_vec(), vec![], vec![0, 255]]),
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
            joined.append(p).unwrap();
        }
        assert_eq!(joined, data);
        assert!(data.clone().split(&[3]).is_err());
        assert!(joined.append(TensorData::Fp32(vec![1.0])).is_err());
    }

    #[test]
    fn json_output_of_bytes_requires_utf8() {
        let ok = serde_json::to_string(&TensorData::Bytes(vec![b"hi".to_vec()])).unwrap();
        assert_eq!(ok, r#"["hi"]"#);
        assert!(serde_json::to_string(&TensorData::Bytes(vec![vec![0xff]])).is_err());
    }

    #[test]
    fn element_count_checks_sign_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }
}
