//! The REST wire format, shared by the REST front end and the warm-up loader (a version's
//! `warmup.json` is a V2 request): V2 JSON bodies ([`json`]) and Triton's binary tensor data
//! extension ([`binary`]).
//!
//! Bodies are untrusted, so decoding is bounded: the memory a decoded request holds stays within
//! a small constant of the body's size (see [`json`] for how), and a malformed body of any shape
//! is a clear 400, never a panic or a stack overflow.

pub mod binary;
pub mod json;

pub use json::{OutputFormat, decode_request, encode_response, param_json};
