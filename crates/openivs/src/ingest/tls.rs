//! The TLS configuration of the RTMPS listener (and of the HTTP listener with `--http-tls`): the
//! certificate and key from the settings, or a self-signed certificate for `--public-host`,
//! generated once into the data directory (so a broadcaster that pinned it keeps working across
//! restarts). HTTPS offers HTTP/2 and HTTP/1.1 by ALPN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::settings::Settings;

/// Where the generated certificate and key live.
pub fn generated_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("rtmps-certificate.pem"), data_dir.join("rtmps-key.pem"))
}

fn generate(public_host: &str, cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let mut names = vec![public_host.to_owned()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| format!("cannot make a certificate: {e}"))?;
    if let Some(dir) = key_path.parent() {
        crate::store::files::create_private_dir(dir)?;
    }
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, certified.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
    tracing::info!("generated a self-signed RTMPS certificate for {public_host} in {}", cert_path.display());
    Ok(())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The RTMPS listener's acceptor, and, with `--http-tls`, the HTTP listener's: the same
/// certificate (read once), HTTP/2 or HTTP/1.1 as the client prefers.
pub fn acceptors(settings: &Settings) -> Result<(TlsAcceptor, Option<TlsAcceptor>), String> {
    let config = server_config(settings)?;
    let https = settings.http_tls.then(|| {
        let mut https = config.clone();
        https.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(https))
    });
    Ok((TlsAcceptor::from(Arc::new(config)), https))
}

fn server_config(settings: &Settings) -> Result<rustls::ServerConfig, String> {
    let (cert_path, key_path) = match (&settings.tls_certificate, &settings.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, None) => {
            let (cert, key) = generated_paths(&settings.data_dir);
            if !cert.exists() || !key.exists() {
                generate(&settings.public_host, &cert, &key)?;
            }
            (cert, key)
        }
        _ => return Err("--tls-certificate and --tls-key go together".into()),
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert_path.display()))?;
    // Never echo key material: the error names the file only.
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|_| format!("cannot read the private key {}", key_path.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|e| format!("the TLS certificate and key do not fit together: {e}"))?;
    Ok(config)
}
