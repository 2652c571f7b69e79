//! BYTES tensor elements stored contiguously.
//!
//! A `Vec<Vec<u8>>` costs 24 bytes of header plus an allocation per element, so a body of many
//! empty strings (`"",` is 3 bytes on the wire) grew eightfold once decoded. Here a tensor is one
//! byte buffer plus the end offset of each element: 4 bytes per element beyond the text itself.

use std::fmt;

/// The largest BYTES tensor (all elements together): offsets are `u32`.
pub const MAX_TOTAL_BYTES: usize = u32::MAX as usize;

/// A sequence of byte strings in one buffer; element `i` is `data[ends[i-1]..ends[i]]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ByteStrings {
    data: Vec<u8>,
    ends: Vec<u32>,
}

/// Why an element could not be added: the tensor would pass [`MAX_TOTAL_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a BYTES tensor may hold at most {MAX_TOTAL_BYTES} bytes in all")]
pub struct TooLarge;

impl ByteStrings {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `elements` strings of `bytes` bytes in all.
    pub fn with_capacity(elements: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(elements),
        }
    }

    /// Builds from anything that yields byte strings (tests, model outputs).
    pub fn from_items<T: AsRef<[u8]>>(
        items: impl IntoIterator<Item = T>,
    ) -> Result<Self, TooLarge> {
        let mut out = Self::new();
        for item in items {
            out.push(item.as_ref())?;
        }
        Ok(out)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of text in all elements together.
    pub fn total_bytes(&self) -> usize {
        self.data.len()
    }

    fn start(&self, i: usize) -> usize {
        match i.checked_sub(1) {
            Some(prev) => self.ends[prev] as usize,
            None => 0,
        }
    }

    /// Element `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        self.data.get(self.start(i)..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| &self.data[self.start(i)..self.ends[i] as usize])
    }

    /// Appends one element.
    pub fn push(&mut self, s: &[u8]) -> Result<(), TooLarge> {
        let end = u32::try_from(self.data.len() + s.len()).map_err(|_| TooLarge)?;
        self.data.extend_from_slice(s);
        self.ends.push(end);
        Ok(())
    }

    /// Appends every element of `other`.
    pub fn extend(&mut self, other: &ByteStrings) -> Result<(), TooLarge> {
        let base = u32::try_from(self.data.len()).map_err(|_| TooLarge)?;
        u32::try_from(self.data.len() + other.data.len()).map_err(|_| TooLarge)?;
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|e| e + base));
        Ok(())
    }

    /// A copy of elements `[start, end)`, or `None` when the range is not within the tensor.
    pub fn slice(&self, start: usize, end: usize) -> Option<ByteStrings> {
        if start > end || end > self.len() {
            return None;
        }
        let (from, to) = (self.start(start), self.start(end));
        let base = from as u32;
        Some(Self {
            data: self.data[from..to].to_vec(),
            ends: self.ends[start..end].iter().map(|e| e - base).collect(),
        })
    }
}

impl fmt::Debug for ByteStrings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_round_trip_through_push_get_and_iter() {
        let b = ByteStrings::from_items(["abc", "", "de"]).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b.total_bytes(), 5);
        assert_eq!(b.get(0), Some(&b"abc"[..]));
        assert_eq!(b.get(1), Some(&b""[..]));
        assert_eq!(b.get(2), Some(&b"de"[..]));
        assert_eq!(b.get(3), None);
        let all: Vec<&[u8]> = b.iter().collect();
        assert_eq!(all, vec![&b"abc"[..], b"", b"de"]);
        assert_eq!(format!("{b:?}"), r#"["abc", "", "de"]"#);
    }

    #[test]
    fn slice_and_extend_keep_offsets_right() {
        let b = ByteStrings::from_items(["abc", "", "de", "f"]).unwrap();
        let mid = b.slice(1, 3).unwrap();
        assert_eq!(mid, ByteStrings::from_items(["", "de"]).unwrap());
        assert_eq!(b.slice(4, 4).unwrap(), ByteStrings::new());
        assert_eq!(b.slice(3, 5), None);
        assert_eq!(b.slice(3, 2), None);
        let mut joined = b.slice(0, 2).unwrap();
        joined.extend(&b.slice(2, 4).unwrap()).unwrap();
        assert_eq!(joined, b);
    }
}
