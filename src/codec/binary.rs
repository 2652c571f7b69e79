//! Triton's binary tensor data extension: a body is a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw little-endian tensor bytes. Inputs with
//! a `binary_data_size` parameter take their bytes from that tail, in input order; outputs asked
//! for as binary are appended to the response the same way.

use crate::core::tensor::TensorData;
use crate::error::{Error, Result};

/// Splits a body into its JSON header and its binary tail. `header_len` is
/// `Inference-Header-Content-Length` when the request had one.
pub fn split_body(body: &[u8], header_len: Option<usize>) -> Result<(&[u8], Tail<'_>)> {
    match header_len {
        None => Ok((
            body,
            Tail {
                rest: &[],
                present: false,
            },
        )),
        Some(n) => match body.split_at_checked(n) {
            Some((json, rest)) => Ok((
                json,
                Tail {
                    rest,
                    present: true,
                },
            )),
            None => Err(Error::invalid(format!(
                "Inference-Header-Content-Length is {n}, but the body has only {} bytes",
                body.len()
            ))),
        },
    }
}

/// The binary part of a request body, handed out to inputs in order.
#[derive(Debug)]
pub struct Tail<'a> {
    rest: &'a [u8],
    /// Whether the request declared a binary part at all.
    present: bool,
}

impl<'a> Tail<'a> {
    /// The next `size` bytes, for the input `owner` (e.g. "input 'x'").
    pub fn take(&mut self, owner: &str, size: usize) -> Result<&'a [u8]> {
        if !self.present {
            return Err(Error::invalid(format!(
                "{owner} has binary data, but the request has no Inference-Header-Content-Length header"
            )));
        }
        let Some((mine, rest)) = self.rest.split_at_checked(size) else {
            return Err(Error::invalid(format!(
                "{owner} claims {size} bytes of binary data, but only {} remain in the body",
                self.rest.len()
            )));
        };
        self.rest = rest;
        Ok(mine)
    }

    /// Checks that every byte was claimed by an input.
    pub fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "the body has {} bytes of binary data that no input claims",
                self.rest.len()
            )))
        }
    }
}

/// Appends a tensor's binary encoding to a response's tail; returns its size.
pub fn append(tail: &mut Vec<u8>, data: &TensorData) -> usize {
    let before = tail.len();
    data.write_le_bytes(tail);
    tail.len() - before
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_hands_out_bytes_in_order_and_checks_the_rest() {
        let (json, mut tail) = split_body(b"{}abcdef", Some(2)).unwrap();
        assert_eq!(json, b"{}");
        assert_eq!(tail.take("input 'a'", 2).unwrap(), b"ab");
        assert_eq!(tail.take("input 'b'", 0).unwrap(), b"");
        let e = tail.take("input 'c'", 5).unwrap_err().to_string();
        assert!(
            e.contains("input 'c' claims 5 bytes") && e.contains("only 4 remain"),
            "{e}"
        );
        assert!(tail.finish().unwrap_err().to_string().contains("4 bytes"));

        let e = split_body(b"{}", Some(3)).unwrap_err().to_string();
        assert!(e.contains("only 2 bytes"), "{e}");
        let (_, mut none) = split_body(b"{}", None).unwrap();
        let e = none.take("input 'a'", 0).unwrap_err().to_string();
        assert!(e.contains("no Inference-Header-Content-Length"), "{e}");
    }
}
