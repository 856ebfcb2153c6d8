//! Any bytes as an RTMP chunk stream after the handshake, split into reads: never a panic, never unbounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openivs::fuzzing::rtmp_chunks(data);
});
