//! The gRPC converter on any `ModelInferRequest` that arbitrary bytes decode to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use switchyard::grpc::{convert, pb};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = pb::ModelInferRequest::decode(data) {
        let _ = convert::decode_request(req);
    }
});
