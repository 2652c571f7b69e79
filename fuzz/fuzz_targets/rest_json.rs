//! The REST V2 JSON decoder on arbitrary bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = switchyard::codec::decode_request(body, None);
});
