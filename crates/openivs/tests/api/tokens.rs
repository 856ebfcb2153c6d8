//! Playback keys, tokens and GeoIP databases made by libraries independent of openivs (PyJWT,
//! cryptography and mmdb-writer, through `playback_tokens.py`), for the private-channel tests
//! here and in the players tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

const TOKENS_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/playback_tokens.py");

/// Runs the helper with the test environment's python (scripts/test puts .venv first on PATH).
pub fn python(args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg(TOKENS_PY)
        .args(args)
        .output()
        .expect("python3 (with PyJWT, cryptography and mmdb-writer from tests-requirements.txt) must be installed");
    assert!(output.status.success(), "playback_tokens.py {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A P-384 key pair written by `cryptography`: (private key file, public key PEM).
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    python(&["keypair", dir.to_str().unwrap(), name]);
    let public = std::fs::read_to_string(dir.join(format!("{name}-public.pem"))).unwrap();
    (dir.join(format!("{name}-private.pem")), public)
}

/// An ES384 token signed by PyJWT.
pub fn token(private_key: &Path, claims: &Value) -> String {
    python(&["token", private_key.to_str().unwrap(), &claims.to_string()])
}
