//! An HTTP/2 client over TLS for the fan-out benchmark: one connection per viewer, as a browser
//! keeps one per origin, trusting one certificate (the server's self-signed one). Like the
//! HTTP/1.1 client beside it, minimal on purpose, and it reconnects after an error.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Per-stream and per-connection receive windows: Chromium's (the h2 default, 64 KiB, would
/// make a segment a dozen window updates).
const STREAM_WINDOW: u32 = 6 << 20;
const CONNECTION_WINDOW: u32 = 15 << 20;

/// The TLS side shared by every connection: trusts the certificate in `certificate` (PEM),
/// offers only `h2`.
#[derive(Clone)]
pub struct H2Client {
    connector: TlsConnector,
}

impl H2Client {
    pub fn trusting(certificate: &Path) -> Result<H2Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(certificate).map_err(|e| format!("{}: {e}", certificate.display()))? {
            roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(H2Client { connector: TlsConnector::from(Arc::new(config)) })
    }
}

/// One viewer's connection to `127.0.0.1:port` (the certificate names `localhost`), opened at
/// the first request.
pub struct H2Connection {
    client: H2Client,
    port: u16,
    sender: Option<h2::client::SendRequest<Bytes>>,
}

impl H2Connection {
    pub fn new(client: &H2Client, port: u16) -> H2Connection {
        H2Connection { client: client.clone(), port, sender: None }
    }

    async fn connect(&self) -> Result<h2::client::SendRequest<Bytes>, String> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = self.client.connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err("the server did not choose h2".into());
        }
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(tls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// The authority requests carry (and a signature signs as `host`).
    pub fn authority(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// GET `path`: the status and the body.
    pub async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let request = http::Request::get(format!("https://{}{path}", self.authority()));
        self.exchange(request, None).await
    }

    /// POST `body` to `path` with `headers`: the status and the body.
    pub async fn post(
        &mut self,
        path: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<(u16, Vec<u8>), String> {
        let mut request = http::Request::post(format!("https://{}{path}", self.authority()));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        self.exchange(request, Some(Bytes::copy_from_slice(body.as_bytes()))).await
    }

    async fn exchange(
        &mut self,
        request: http::request::Builder,
        body: Option<Bytes>,
    ) -> Result<(u16, Vec<u8>), String> {
        let outcome = self.send(request, body).await;
        if outcome.is_err() {
            self.sender = None;
        }
        outcome
    }

    async fn send(&mut self, request: http::request::Builder, body: Option<Bytes>) -> Result<(u16, Vec<u8>), String> {
        let sender = match self.sender.take() {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let mut sender = sender.ready().await.map_err(|e| e.to_string())?;
        let request = request.body(()).map_err(|e| e.to_string())?;
        let (response, mut stream) = sender.send_request(request, body.is_none()).map_err(|e| e.to_string())?;
        if let Some(body) = body {
            stream.send_data(body, true).map_err(|e| e.to_string())?;
        }
        self.sender = Some(sender);
        let response = response.await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(piece) = body.data().await {
            let piece = piece.map_err(|e| e.to_string())?;
            let _ = body.flow_control().release_capacity(piece.len());
            bytes.extend_from_slice(&piece);
        }
        Ok((status, bytes))
    }
}
