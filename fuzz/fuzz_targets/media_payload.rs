//! Any bytes as an AMF0, FLV, AVC or HEVC configuration, SPS, AAC configuration or handshake payload: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openivs::fuzzing::media_payload(data);
});
