//! Any string as a nextToken: decoding never panics and never yields a cursor for a forgery.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openivs::fuzzing::page_token(data);
});
