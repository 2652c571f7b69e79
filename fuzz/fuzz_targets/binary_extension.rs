//! The binary tensor extension: the first two bytes choose `Inference-Header-Content-Length`,
//! the rest is the body (JSON header and binary tail).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((len, body)) = data.split_first_chunk::<2>() {
        let header_len = u16::from_le_bytes(*len) as usize;
        let _ = switchyard::codec::decode_request(body, Some(header_len));
    }
});
