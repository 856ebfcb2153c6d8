//! Playback tokens, viewer-session ids and the viewer's headers (X-Forwarded-For, Origin): no
//! panic, and no forged token or session id is ever accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openivs::fuzzing::playback_access(data);
});
