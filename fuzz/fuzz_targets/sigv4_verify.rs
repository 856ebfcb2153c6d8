//! Any bytes as a request's headers, path, query and body: SigV4 verification never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openivs::fuzzing::sigv4_verify(data);
});
