//! The test harness: runs the real `openivs` binary on a free loopback port with its own data
//! directory, and gives tests real clients for it: the AWS SDK for Rust, raw HTTP signed by the
//! `aws-sigv4` crate, and the AWS CLI.
//!
//! With `OPENIVS_TEST_DATABASE_URL` set (a PostgreSQL server's URL without a database, as
//! scripts/test sets it for the suite's second run), every server keeps its resources in a
//! database of its own there (`--database-url`), except those a test asks to run on the embedded
//! SQLite store ([`Server::on_sqlite`]: tests of the SQLite file itself).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ivs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ivs::error::ProvideErrorMetadata;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-west-2";

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub endpoint: String,
    pub port: u16,
    /// `127.0.0.1:PORT` of the plain RTMP and the RTMPS ingest listeners.
    pub rtmp_address: String,
    pub rtmps_address: String,
    /// `127.0.0.1:PORT` of the SRT ingest listener.
    pub srt_address: String,
    extra_args: Vec<String>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// What the server printed on standard output (the start-up banner).
    banner: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start() -> Server {
        Server::with_args(&[])
    }

    /// A server with extra `openivs serve` flags (quotas, credentials, …).
    pub fn with_args(extra_args: &[&str]) -> Server {
        Server::in_data_dir(Server::fresh_data_dir(), extra_args)
    }

    /// A data directory no server has used.
    pub fn fresh_data_dir() -> PathBuf {
        let data_dir = std::env::temp_dir().join(format!(
            "openivs-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        data_dir
    }

    /// A server on the embedded SQLite store whatever `OPENIVS_TEST_DATABASE_URL` says.
    pub fn on_sqlite(data_dir: PathBuf, extra_args: &[&str]) -> Server {
        Server::launched(data_dir, extra_args, false)
    }

    /// A server keeping its data in `data_dir` (removed when the server is dropped).
    pub fn in_data_dir(data_dir: PathBuf, extra_args: &[&str]) -> Server {
        Server::launched(data_dir, extra_args, true)
    }

    fn launched(data_dir: PathBuf, extra_args: &[&str], shared_database: bool) -> Server {
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        if let Ok(base) = std::env::var("OPENIVS_TEST_DATABASE_URL")
            && shared_database
            && !extra_args.iter().any(|a| a == "--database-url")
        {
            // One database per server (named after its data directory), kept across restarts.
            let name = data_dir.file_name().unwrap().to_string_lossy().replace('-', "_");
            extra_args.extend(["--database-url".to_owned(), format!("{}/{name}", base.trim_end_matches('/'))]);
        }
        // The buckets the tests' recording configurations name (a bucket is a folder).
        for bucket in TEST_BUCKETS {
            std::fs::create_dir_all(data_dir.join("buckets").join(bucket)).unwrap();
        }
        let mut server = Server {
            child: None,
            data_dir,
            endpoint: String::new(),
            port: 0,
            rtmp_address: String::new(),
            rtmps_address: String::new(),
            srt_address: String::new(),
            extra_args,
            log: Arc::new(Mutex::new(Vec::new())),
            banner: Arc::new(Mutex::new(Vec::new())),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        // Transcoding (STANDARD channels' renditions, an ffmpeg per stream) only where a test
        // asks for it with `--ffmpeg`: elsewhere it would only load the machine.
        let transcoding =
            if self.extra_args.iter().any(|a| a == "--ffmpeg") { &[][..] } else { &["--ffmpeg", "none"][..] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_openivs"))
            .arg("serve")
            .args(["--http-addr", "127.0.0.1:0", "--rtmp-addr", "127.0.0.1:0", "--rtmps-addr", "127.0.0.1:0"])
            .args(["--srt-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(transcoding)
            .args(&self.extra_args)
            .env("OPENIVS_LOG", "debug")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the openivs binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        // Standard output holds the start-up banner, kept apart from the log (standard error).
        let stdout = child.stdout.take().expect("stdout is piped");
        let banner_log = self.banner.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                banner_log.lock().unwrap().push(line);
            }
        });
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for scheme in ["rtmp", "rtmps", "srt", "http", "https"] {
                    if let Some(rest) = line.split(&format!("listening on {scheme}://")).nth(1) {
                        let address = rest.split(['/', ' ', '?']).next().unwrap_or("").to_owned();
                        let _ = address_tx.send((scheme, address));
                    }
                }
                log.lock().unwrap().push(line);
            }
        });
        let (mut address, mut http_scheme) = (String::new(), "http");
        while address.is_empty() {
            let (scheme, found) = address_rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("openivs did not start; log: {:?}", self.log.lock().unwrap()));
            match scheme {
                "rtmp" => self.rtmp_address = found,
                "rtmps" => self.rtmps_address = found,
                "srt" => self.srt_address = found,
                scheme => (address, http_scheme) = (found, scheme),
            }
        }
        self.port = address.rsplit(':').next().unwrap().parse().unwrap();
        self.endpoint = format!("{http_scheme}://{address}");
        self.child = Some(child);
    }

    /// Stops the server with SIGINT (a clean shutdown, without SIGTERM's drain) and starts it
    /// again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Kills the server with SIGKILL (no chance to flush anything), as a machine's loss does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and starts it again.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends the server a signal (`TERM`, `INT`, …).
    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    /// The server's exit status once it has exited, waiting at most `limit`.
    pub fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Stops the server with SIGINT: a clean shutdown at once (SIGTERM would drain first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "INT");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("openivs did not stop within 10 s of SIGINT");
        }
    }

    pub fn client(&self) -> aws_sdk_ivs::Client {
        self.client_for(REGION, "test", "test")
    }

    pub fn client_for(&self, region: &str, access_key: &str, secret: &str) -> aws_sdk_ivs::Client {
        client_at(&self.endpoint, region, access_key, secret)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The start-up banner, as printed so far.
    pub fn banner_text(&self) -> String {
        self.banner.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// An SDK client of the IVS API at `endpoint` (a server, or a load balancer in front of several).
pub fn client_at(endpoint: &str, region: &str, access_key: &str, secret: &str) -> aws_sdk_ivs::Client {
    let config = aws_sdk_ivs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(access_key, secret, None, None, "openivs-tests"))
        .retry_config(aws_sdk_ivs::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ivs::Client::from_conf(config)
}

/// Sends `kill -{name}` to `pid` (the command keeps the tests free of libc bindings).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
}

/// The error code and HTTP status of a failed SDK call.
pub fn error_of<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, aws_sdk_ivs::error::SdkError<E, aws_smithy_runtime_api::http::Response>>,
) -> (String, u16) {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => {
            let status = error.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            let code = error.code().unwrap_or("<none>").to_owned();
            (code, status)
        }
    }
}

/// Asserts that a call failed with this IVS error code and HTTP status.
#[macro_export]
macro_rules! assert_error {
    ($call:expr, $code:expr, $status:expr) => {{
        let (code, status) = $crate::harness::error_of($call.await);
        assert_eq!((code.as_str(), status), ($code, $status), "{}", stringify!($call));
    }};
}

/// A raw HTTP/1.1 exchange, for what SDKs will not send (unsigned, stale, garbled requests).
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub body_bytes: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn raw_request(server: &Server, method: &str, path: &str, headers: &[(String, String)], body: &str) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nconnection: close\r\ncontent-length: {}\r\n",
        server.port,
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |p| p + 4);
    let body_bytes = response[head_end..].to_vec();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    RawResponse { status, headers, body: body.to_owned(), body_bytes }
}

/// Signs a request with the `aws-sigv4` crate (an implementation independent of the server's)
/// as of `time`, returning the headers to send.
pub fn sigv4_headers(
    server: &Server,
    method: &str,
    path_and_query: &str,
    body: &str,
    access_key: &str,
    secret: &str,
    time: SystemTime,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = Credentials::new(access_key, secret, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("ivs")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = format!("127.0.0.1:{}", server.port);
    let uri = format!("http://{host}{path_and_query}");
    let mut headers = vec![("host".to_owned(), host)];
    if !body.is_empty() {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
    let signable = SignableRequest::new(
        method,
        uri,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    for (name, value) in instructions.headers() {
        headers.push((name.to_owned(), value.to_owned()));
    }
    headers.retain(|(n, _)| n != "host");
    headers
}

/// Buckets every test server has (folders of its buckets directory).
pub const TEST_BUCKETS: [&str; 5] = ["bucket", "bucket-1", "my-bucket", "other.bucket", "cli-bucket"];

/// A recording destination in an S3 bucket.
pub fn destination(bucket: &str) -> aws_sdk_ivs::types::DestinationConfiguration {
    aws_sdk_ivs::types::DestinationConfiguration::builder()
        .s3(aws_sdk_ivs::types::S3DestinationConfiguration::builder().bucket_name(bucket).build().unwrap())
        .build()
}

/// Public halves of four ECDSA P-384 key pairs (made with `openssl ecparam -name secp384r1`).
pub const P384_PUBLIC_KEYS: [&str; 4] = [KEY1, KEY2, KEY3, KEY4];
const KEY1: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEO5C/6pVbynslxW+YovwqVRxlxFx/Q7OH
7+I5vhTg6o+FBtySyGiUgU08gqoA8XdvDh98QlpbJV+OEkEMOcfOTqaSYczTr/Di
qFjeBb8Ah4klmvojpzuoKx0ulSX6wk41
-----END PUBLIC KEY-----";
const KEY2: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEW0zVuuYEEgMPOXL/KGXnnt7pUjwrrqsF
dcdKJD1p6i6+ICRuRs4c3xc1Q57WhlO8C6+/5lovS79FrM8Y2ov+HZ00BrVvjTRh
6CvPM+bTnjO8R5SUmNe5a/kaj0GThQlQ
-----END PUBLIC KEY-----";
const KEY3: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEM/JeftbHbXOrFWW4JB2OVQZuRewsmpfA
0HfsyQR2F+XNoY0Nsz0xBPaT9OGJMAZO/wHu/JOvLC2yg5ToztT5sA08ABUSl3Fa
D+T5YozcBbF7S05CM7OwKoAwClWDxp+f
-----END PUBLIC KEY-----";
const KEY4: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAER9cFtIVq8d5T3x+njH2KeI55EagW6oxt
mPjFJvI8+rEJ7UQk0e7VscrJjHZvUguLZoW4ku8FoU7XP1J4xcxD+4sI0C2wpO5+
rEyM58PXh+iQ4o7DgO+fyJv/WwPEvB0V
-----END PUBLIC KEY-----";
/// An ECDSA P-256 public key: not a key IVS accepts.
pub const P256_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER8P2rf0t3CebEUvTOedbuHZwoLGj
ewVL0yitprn0Kjm4zHuerBRkXEXsh68rmdXdHo7f9FML2WFXtU1mAx7vfw==
-----END PUBLIC KEY-----";

/// Waits until GetStream finds the channel live (at most `limit`).
pub(crate) async fn wait_live(server: &Server, arn: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if server.client().get_stream().channel_arn(arn).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{arn} did not go live within {limit:?}; log:\n{}", server.log_text());
}

/// Waits until GetStream no longer finds the channel live (at most `limit`).
pub(crate) async fn wait_offline(server: &Server, arn: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if server.client().get_stream().channel_arn(arn).send().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{arn} was still live after {limit:?}; log:\n{}", server.log_text());
}

/// Creates a channel with `latency` and `container` and whatever `configure` adds; the output
/// and the channel's RTMPS publish URL.
pub(crate) async fn create_channel_with(
    server: &Server,
    latency: aws_sdk_ivs::types::ChannelLatencyMode,
    container: aws_sdk_ivs::types::ContainerFormat,
    configure: impl FnOnce(
        aws_sdk_ivs::operation::create_channel::builders::CreateChannelFluentBuilder,
    ) -> aws_sdk_ivs::operation::create_channel::builders::CreateChannelFluentBuilder,
) -> (aws_sdk_ivs::operation::create_channel::CreateChannelOutput, String) {
    let builder = server.client().create_channel().latency_mode(latency).container_format(container);
    let out = configure(builder).send().await.unwrap();
    let url = rtmps_url(&out);
    (out, url)
}

/// The RTMPS URL a broadcaster publishes a new channel to: its ingest endpoint and stream key.
pub fn rtmps_url(out: &aws_sdk_ivs::operation::create_channel::CreateChannelOutput) -> String {
    let channel = out.channel().expect("a channel");
    let key = out.stream_key().and_then(|k| k.value()).expect("a stream key");
    format!("rtmps://{}/app/{key}", channel.ingest_endpoint().expect("an ingest endpoint"))
}

/// Every file under `dir`.
pub fn walkdir(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    files
}
