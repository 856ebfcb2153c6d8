//! Any bytes as an MPEG-TS (a transcoder's output): demuxed into rendition hubs, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openivs::fuzzing::transport_stream(data);
});
