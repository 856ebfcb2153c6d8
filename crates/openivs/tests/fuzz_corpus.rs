//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' functions, so every
//! input the fuzzers kept (and every crash once found) is checked on each test run.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "the corpus of {target} is empty");
}

#[test]
fn validate_input_corpus() {
    replay("validate_input", openivs::fuzzing::validate_input);
}

#[test]
fn sigv4_verify_corpus() {
    replay("sigv4_verify", openivs::fuzzing::sigv4_verify);
}

#[test]
fn page_token_corpus() {
    replay("page_token", openivs::fuzzing::page_token);
}

#[test]
fn rtmp_chunks_corpus() {
    replay("rtmp_chunks", openivs::fuzzing::rtmp_chunks);
}

#[test]
fn media_payload_corpus() {
    replay("media_payload", openivs::fuzzing::media_payload);
}

#[test]
fn playback_access_corpus() {
    replay("playback_access", openivs::fuzzing::playback_access);
}

#[test]
fn transport_stream_corpus() {
    replay("transport_stream", openivs::fuzzing::transport_stream);
}
