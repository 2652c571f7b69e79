//! Protocol-agnostic types: what every front end decodes into and encodes from.

pub mod bytes;
pub mod infer;
pub mod signature;
pub mod tensor;
