//! `openivs keygen` and `openivs token`: the application's side of private channels, for trying
//! them without writing code. `keygen` writes an ECDSA P-384 key pair (the public half is what
//! ImportPlaybackKeyPair takes); `token` signs a playback token (ES384 JWT) with the private
//! half, with the claims IVS defines. The server never holds private keys; these commands run
//! where the application's backend would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{Signature, SigningKey};
use p384::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Map, Value, json};

use crate::playback::access::unix_now;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, readable by its owner only).
    #[arg(long, default_value = "playback-private.pem")]
    pub private_key: PathBuf,
    /// Where to write the public key (PEM), for ImportPlaybackKeyPair.
    #[arg(long, default_value = "playback-public.pem")]
    pub public_key: PathBuf,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The private key (PEM: PKCS#8 `BEGIN PRIVATE KEY` or OpenSSL's `BEGIN EC PRIVATE KEY`).
    #[arg(long)]
    pub key: PathBuf,
    /// The private channel the token opens (`aws:channel-arn`).
    #[arg(long)]
    pub channel_arn: String,
    /// How long the token may open sessions: `90s`, `10m`, `2h`, `1d` (`exp`). A token with a
    /// viewer id or single use may last at most 10 minutes.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub expires_in: Duration,
    /// `aws:viewer-id` (1 to 40 characters), which viewer-session revocation matches.
    #[arg(long)]
    pub viewer_id: Option<String>,
    /// `aws:viewer-session-version`.
    #[arg(long)]
    pub viewer_session_version: Option<i64>,
    /// An origin allowed to play (`aws:access-control-allow-origin`), e.g. `https://example.com`
    /// or `https://*.example.com`; repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub allow_origin: Vec<String>,
    /// `aws:strict-origin-enforcement`: check the origin on every request of the session.
    #[arg(long)]
    pub strict_origin: bool,
    /// `aws:single-use-uuid`: the token opens one session only.
    #[arg(long)]
    pub single_use: bool,
    /// `aws:maximum-resolution`: SD, HD or FULL_HD.
    #[arg(long, value_parser = ["SD", "HD", "FULL_HD"])]
    pub max_resolution: Option<String>,
}

/// `90s`, `10m`, `2h`, `1d`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, "s"), |i| text.split_at(i));
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 10m"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// The private half of a playback key pair: signs playback tokens.
pub struct PlaybackKey(SigningKey);

impl PlaybackKey {
    pub fn generate() -> PlaybackKey {
        loop {
            // A random scalar below the curve order (anything else is astronomically unlikely).
            if let Ok(secret) = p384::SecretKey::from_slice(&rand::random::<[u8; 48]>()) {
                return PlaybackKey(SigningKey::from(secret));
            }
        }
    }

    /// The public half, as ImportPlaybackKeyPair takes it.
    pub fn public_pem(&self) -> Result<String, String> {
        self.0.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| e.to_string())
    }

    fn private_pem(&self) -> Result<String, String> {
        let secret = p384::SecretKey::from(self.0.as_nonzero_scalar());
        Ok(secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?.to_string())
    }

    /// Signs claims as an ES384 JWT (JWS compact form, signature r‖s).
    pub fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "ES384", "typ": "JWT" }).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let signature: Signature = self.0.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Writes a new key pair; refuses to overwrite a file.
pub fn keygen(args: &KeygenArgs) -> Result<(), String> {
    for path in [&args.private_key, &args.public_key] {
        if path.exists() {
            return Err(format!("{} exists already: not overwriting it", path.display()));
        }
    }
    let key = PlaybackKey::generate();
    let private_pem = key.private_pem()?;
    let public_pem = key.public_pem()?;
    write_private(&args.private_key, private_pem.as_bytes())?;
    std::fs::write(&args.public_key, public_pem).map_err(|e| format!("{}: {e}", args.public_key.display()))?;
    eprintln!(
        "wrote {} (keep it secret) and {} (import it: aws ivs import-playback-key-pair --public-key-material file://{})",
        args.private_key.display(),
        args.public_key.display(),
        args.public_key.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_private_key(path: &Path) -> Result<PlaybackKey, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let secret = p384::SecretKey::from_pkcs8_pem(pem.trim())
        .or_else(|_| p384::SecretKey::from_sec1_pem(pem.trim()))
        // Never echo the file: it is a private key.
        .map_err(|_| format!("{} is not a P-384 private key in PEM", path.display()))?;
    Ok(PlaybackKey(SigningKey::from(secret)))
}

/// The claims of a token as `openivs token` makes it.
pub fn claims(args: &TokenArgs, now: i64) -> Value {
    let mut claims = Map::new();
    claims.insert("aws:channel-arn".into(), json!(args.channel_arn));
    claims.insert("exp".into(), json!(now + args.expires_in.as_secs() as i64));
    if !args.allow_origin.is_empty() {
        claims.insert("aws:access-control-allow-origin".into(), json!(args.allow_origin.join(",")));
    }
    if args.strict_origin {
        claims.insert("aws:strict-origin-enforcement".into(), json!(true));
    }
    if args.single_use {
        let mut uuid = rand::random::<[u8; 16]>();
        uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
        uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
        let hex = hex::encode(uuid);
        let uuid = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        claims.insert("aws:single-use-uuid".into(), json!(uuid));
    }
    if let Some(viewer_id) = &args.viewer_id {
        claims.insert("aws:viewer-id".into(), json!(viewer_id));
    }
    if let Some(version) = args.viewer_session_version {
        claims.insert("aws:viewer-session-version".into(), json!(version));
    }
    if let Some(maximum) = &args.max_resolution {
        claims.insert("aws:maximum-resolution".into(), json!(maximum));
    }
    Value::Object(claims)
}

pub fn token(args: &TokenArgs) -> Result<String, String> {
    let key = read_private_key(&args.key)?;
    Ok(key.sign(&claims(args, unix_now())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("10 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }
}
