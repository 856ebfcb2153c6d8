//! A minimal keep-alive HTTP/1.1 client that signs IVS requests with SigV4 (openivs's own signer,
//! the client half of the server's verifier). Minimal on purpose: the benchmark should measure
//! the servers, not a client stack. It reconnects when a server closes the connection.

use std::time::SystemTime;

use openivs::auth::sigv4::{RequestParts, sign};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Connection {
    port: u16,
    stream: Option<BufReader<TcpStream>>,
}

impl Connection {
    pub fn new(port: u16) -> Connection {
        Connection { port, stream: None }
    }

    /// Sends one request and reads its response, (re)connecting as needed: a kept-alive
    /// connection the server closed is reopened once.
    async fn send(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let stream = TcpStream::connect(("127.0.0.1", self.port)).await.map_err(|e| e.to_string())?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                self.stream = Some(BufReader::new(stream));
            }
            match exchange(self.stream.as_mut().expect("connected"), request).await {
                Ok((status, body, keep_alive)) => {
                    if !keep_alive {
                        self.stream = None;
                    }
                    return Ok((status, body));
                }
                Err(_) if attempt == 0 => self.stream = None,
                Err(error) => return Err(error),
            }
        }
        Err("no response".into())
    }
}

pub struct SignedClient {
    access_key_id: String,
    secret: String,
    region: String,
}

impl SignedClient {
    pub fn new() -> SignedClient {
        SignedClient { access_key_id: "test".into(), secret: "test".into(), region: "us-west-2".into() }
    }

    /// The signature headers of a POST of `body` (JSON) to `path` on `host`.
    pub fn signature(&self, host: &str, path: &str, body: &str) -> Vec<(String, String)> {
        let unsigned = RequestParts {
            method: "POST",
            raw_path: path,
            raw_query: None,
            headers: vec![("host", host.as_bytes()), ("content-type", b"application/json")],
            body: body.as_bytes(),
        };
        sign(
            &unsigned,
            &self.access_key_id,
            &self.secret,
            &self.region,
            openivs::auth::sigv4::SERVICE,
            time::OffsetDateTime::from(SystemTime::now()),
        )
    }

    /// POSTs one signed IVS operation; returns the status and body.
    pub async fn call(
        &self,
        connection: &mut Connection,
        operation: &str,
        body: &str,
    ) -> Result<(u16, Vec<u8>), String> {
        let host = format!("127.0.0.1:{}", connection.port);
        let path = format!("/{operation}");
        let signature = self.signature(&host, &path, body);
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (name, value) in signature {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        connection.send(request.as_bytes()).await
    }
}

/// GETs a path on a keep-alive connection; returns the status and body.
pub async fn get(connection: &mut Connection, path: &str) -> Result<(u16, Vec<u8>), String> {
    request(connection, "GET", path).await
}

/// An unsigned request with no body on a keep-alive connection; returns the status and body.
pub async fn request(connection: &mut Connection, method: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    let request =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-length: 0\r\n\r\n", connection.port);
    connection.send(request.as_bytes()).await
}

async fn exchange(stream: &mut BufReader<TcpStream>, request: &[u8]) -> Result<(u16, Vec<u8>, bool), String> {
    stream.get_mut().write_all(request).await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    if stream.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
        return Err("connection closed".into());
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("").to_owned();
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    let mut content_length = 0usize;
    let mut keep_alive = version == "HTTP/1.1";
    loop {
        line.clear();
        stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().map_err(|_| "bad content-length")?;
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = vec![0; content_length];
    stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok((status, body, keep_alive))
}
