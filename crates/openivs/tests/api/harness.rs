//! The test harness: runs the real `openivs` binary on a free loopback port with its own data
//! directory, and gives tests real clients for it: the AWS SDK for Rust, raw HTTP signed by the
//! `aws-sigv4` crate, and the AWS CLI.
//!
//! With `OPENIVS_TEST_DATABASE_URL` set (a PostgreSQL server's URL without a database, as
//! scripts/test sets it for the suite's second run), every server keeps its resources in a
//! database of its own there (`--database-url`), except those a test asks to run on the embedded
//! SQLite store ([`Server::on_sqlite`]: tests of the SQLite file itself).
//!
//! With `OPENIVS_TEST_CLUSTER` set as well (scripts/test's second run), every such
//! server is a cluster: three nodes on that database, behind nginx running the shipped load
//! balancer configuration with round-robin HTTP (so consecutive calls reach different nodes),
//! and the test talks to nginx only. The nodes listen on 127.0.0.21-23 with nginx's own ports
//! and `--public-host 127.0.0.1`, as a cluster's nodes run on one port set behind their load
//! balancer (see the README), share node a's RTMPS certificate, and share one buckets folder
//! (as a shared file system would).
//! This process's `pid`, `signal` and `rss_kib` are node a's; `restart`, `kill` and the log
//! take in every node. Tests that are about one process by nature run on one node
//! ([`Server::single_node`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_ivs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ivs::error::ProvideErrorMetadata;

use crate::load_balancer::{BalancerPorts, Nginx, NodeAddresses, Spread};

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
    /// In the API suite's cluster run: the other nodes and the load balancer.
    cluster: Option<ClusterRun>,
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
        Server::launched(data_dir, extra_args, false, false)
    }

    /// A server keeping its data in `data_dir` (removed when the server is dropped).
    pub fn in_data_dir(data_dir: PathBuf, extra_args: &[&str]) -> Server {
        Server::launched(data_dir, extra_args, true, true)
    }

    /// One process, never a cluster (on PostgreSQL when the run is): for tests of what one
    /// process does by nature (its own metrics, its drain, its own listeners' TLS).
    pub fn single_node(extra_args: &[&str]) -> Server {
        Server::launched(Server::fresh_data_dir(), extra_args, true, false)
    }

    fn launched(data_dir: PathBuf, extra_args: &[&str], shared_database: bool, may_cluster: bool) -> Server {
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let mut on_test_database = false;
        if let Ok(base) = std::env::var("OPENIVS_TEST_DATABASE_URL")
            && shared_database
            && !extra_args.iter().any(|a| a == "--database-url")
        {
            // One database per server (named after its data directory), kept across restarts.
            let name = data_dir.file_name().unwrap().to_string_lossy().replace('-', "_");
            extra_args.extend(["--database-url".to_owned(), format!("{}/{name}", base.trim_end_matches('/'))]);
            on_test_database = true;
        }
        // (Not for the cluster tests' own nodes, which name their database.)
        let cluster =
            (may_cluster && on_test_database && std::env::var_os("OPENIVS_TEST_CLUSTER").is_some()).then(|| {
                ClusterRun {
                    ports: BalancerPorts::free_on(&CLUSTER_NODE_IPS),
                    others: Vec::new(),
                    node_http: Vec::new(),
                    node_rtmp: Vec::new(),
                    balancer: None,
                }
            });
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
            cluster,
            log: Arc::new(Mutex::new(Vec::new())),
            banner: Arc::new(Mutex::new(Vec::new())),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        if self.cluster.is_none() {
            let listen = ["127.0.0.1:0"; 4].map(str::to_owned);
            let (child, listening) = self
                .spawn_node(&self.data_dir, &listen, &[])
                .unwrap_or_else(|log| panic!("openivs did not start; log: {log}"));
            self.child = Some(child);
            self.set_addresses(listening);
            return;
        }
        // The nodes listen on the balancer's port numbers, found free a moment before: another
        // test may take one in between. Before nginx has started, new ports cure that.
        let mut attempts = 0;
        let nodes = loop {
            match self.spawn_cluster_nodes() {
                Ok(nodes) => break nodes,
                Err(log) => {
                    let cluster = self.cluster.as_mut().unwrap();
                    attempts += 1;
                    if cluster.balancer.is_some() || attempts == 3 || !log.contains("Address already in use") {
                        panic!("an openivs node did not start; log: {log}");
                    }
                    cluster.ports = BalancerPorts::free_on(&CLUSTER_NODE_IPS);
                }
            }
        };
        let ports = self.cluster.as_ref().unwrap().ports;
        let addresses: Vec<NodeAddresses> = nodes
            .iter()
            .map(|(_, listening)| NodeAddresses {
                http: listening.http.split_once("://").unwrap().1.to_owned(),
                rtmp: listening.rtmp.clone(),
                rtmps: listening.rtmps.clone(),
                srt: listening.srt.clone(),
            })
            .collect();
        let mut children = nodes.into_iter().map(|(child, _)| child);
        self.child = children.next();
        let cluster = self.cluster.as_mut().unwrap();
        cluster.others = children.collect();
        cluster.node_http = addresses.iter().map(|node| node.http.clone()).collect();
        cluster.node_rtmp = addresses.iter().map(|node| node.rtmp.clone()).collect();
        if cluster.balancer.is_none() {
            cluster.balancer = Some(Nginx::in_front_of(&addresses, ports, Spread::RoundRobin));
        }
        self.set_addresses(Listening {
            http: format!("http://127.0.0.1:{}", ports.http),
            rtmp: format!("127.0.0.1:{}", ports.rtmp),
            rtmps: format!("127.0.0.1:{}", ports.rtmps),
            srt: format!("127.0.0.1:{}", ports.srt),
        });
    }

    /// Starts the cluster run's nodes a, b and c on the balancer's port numbers; on a failure,
    /// stops those started and gives the failed node's log.
    fn spawn_cluster_nodes(&self) -> Result<Vec<(Child, Listening)>, String> {
        let ports = self.cluster.as_ref().unwrap().ports;
        let mut nodes = Vec::new();
        for (index, (node_id, ip)) in ["a", "b", "c"].into_iter().zip(CLUSTER_NODE_IPS).enumerate() {
            let listen = [ports.http, ports.rtmp, ports.rtmps, ports.srt].map(|port| format!("{ip}:{port}"));
            let data_dir = if index == 0 { self.data_dir.clone() } else { node_data_dir(&self.data_dir, node_id) };
            let buckets = self.data_dir.join("buckets").to_string_lossy().into_owned();
            let mut node_args = vec!["--node-id", node_id, "--public-host", "127.0.0.1", "--buckets-dir", &buckets];
            // One certificate for the balancer's name, node a's (as nodes behind one name share one).
            let (certificate, key) = (self.data_dir.join("rtmps-certificate.pem"), self.data_dir.join("rtmps-key.pem"));
            let (certificate, key) = (certificate.to_string_lossy(), key.to_string_lossy());
            if index > 0 && !self.extra_args.iter().any(|a| a == "--tls-certificate") {
                // (A certificate given turns HTTPS on by default: node a's HTTP is plain.)
                node_args.extend(["--tls-certificate", &certificate, "--tls-key", &key, "--http-tls", "false"]);
            }
            match self.spawn_node(&data_dir, &listen, &node_args) {
                Ok(node) => nodes.push(node),
                Err(log) => {
                    for (mut child, _) in nodes {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(log);
                }
            }
        }
        Ok(nodes)
    }

    fn set_addresses(&mut self, listening: Listening) {
        self.port = listening.http.rsplit(':').next().unwrap().parse().unwrap();
        self.endpoint = listening.http;
        (self.rtmp_address, self.rtmps_address, self.srt_address) = (listening.rtmp, listening.rtmps, listening.srt);
    }

    /// Starts one `openivs serve` on `data_dir` listening on `listen` (HTTP, RTMP, RTMPS, SRT);
    /// the process and where it listens once it says so, or its log if it does not start.
    fn spawn_node(
        &self,
        data_dir: &std::path::Path,
        listen: &[String; 4],
        node_args: &[&str],
    ) -> Result<(Child, Listening), String> {
        // Transcoding (STANDARD channels' renditions, an ffmpeg per stream) only where a test
        // asks for it with `--ffmpeg`: elsewhere it would only load the machine.
        let transcoding =
            if self.extra_args.iter().any(|a| a == "--ffmpeg") { &[][..] } else { &["--ffmpeg", "none"][..] };
        let [http, rtmp, rtmps, srt] = listen;
        let mut child = Command::new(env!("CARGO_BIN_EXE_openivs"))
            .arg("serve")
            .args(["--http-addr", http, "--rtmp-addr", rtmp, "--rtmps-addr", rtmps, "--srt-addr", srt])
            .arg("--data-dir")
            .arg(data_dir)
            .args(transcoding)
            .args(node_args)
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
        let first_line = log.lock().unwrap().len();
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
        let mut listening =
            Listening { http: String::new(), rtmp: String::new(), rtmps: String::new(), srt: String::new() };
        while listening.http.is_empty() {
            let Ok((scheme, found)) = address_rx.recv_timeout(Duration::from_secs(30)) else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{:?}", &self.log.lock().unwrap()[first_line..]));
            };
            match scheme {
                "rtmp" => listening.rtmp = found,
                "rtmps" => listening.rtmps = found,
                "srt" => listening.srt = found,
                scheme => listening.http = format!("{scheme}://{found}"),
            }
        }
        Ok((child, listening))
    }

    /// Stops the server with SIGINT (a clean shutdown, without SIGTERM's drain) and starts it
    /// again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Kills the server with SIGKILL (no chance to flush anything), as a machine's loss does.
    pub fn kill(&mut self) {
        let others = self.cluster.as_mut().map(|cluster| std::mem::take(&mut cluster.others)).unwrap_or_default();
        for mut child in self.child.take().into_iter().chain(others) {
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

    /// Stops the server (every node of a cluster run) with SIGINT: a clean shutdown at once
    /// (SIGTERM would drain first).
    pub fn stop(&mut self) {
        let others = self.cluster.as_mut().map(|cluster| std::mem::take(&mut cluster.others)).unwrap_or_default();
        let mut children: Vec<Child> = self.child.take().into_iter().chain(others).collect();
        for child in &children {
            signal(child.id(), "INT");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            children.retain_mut(|child| child.try_wait().unwrap().is_none());
            if children.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("openivs did not stop within 10 s of SIGINT");
    }

    pub fn client(&self) -> aws_sdk_ivs::Client {
        self.client_for(REGION, "test", "test")
    }

    pub fn client_for(&self, region: &str, access_key: &str, secret: &str) -> aws_sdk_ivs::Client {
        client_at(&self.endpoint, region, access_key, secret)
    }

    /// `host:port` of the HTTP listener of each node (one, outside the cluster run): for what
    /// each process keeps to itself, such as its metrics.
    pub fn node_http_addresses(&self) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster.node_http.clone(),
            None => vec![format!("127.0.0.1:{}", self.port)],
        }
    }

    /// `host:port` of the plain RTMP listener of each node (one, outside the cluster run): to
    /// publish to a chosen node rather than where the load balancer sends a broadcaster.
    pub fn node_rtmp_addresses(&self) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster.node_rtmp.clone(),
            None => vec![self.rtmp_address.clone()],
        }
    }

    /// Each node's data directory (one, outside the cluster run): for what a node keeps to
    /// itself, such as its recording spool.
    pub fn node_data_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.data_dir.clone()];
        if self.cluster.is_some() {
            dirs.extend(["b", "c"].map(|node_id| node_data_dir(&self.data_dir, node_id)));
        }
        dirs
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
        self.kill();
        if self.cluster.is_some() {
            for node_id in ["b", "c"] {
                let _ = std::fs::remove_dir_all(node_data_dir(&self.data_dir, node_id));
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Where a server listens: `scheme://host:port` of HTTP, `host:port` of the others.
struct Listening {
    http: String,
    rtmp: String,
    rtmps: String,
    srt: String,
}

/// The API suite's cluster run of one server: nodes b and c (the server's own process is a)
/// and nginx in front, on ports kept across restarts.
struct ClusterRun {
    ports: BalancerPorts,
    others: Vec<Child>,
    /// `host:port` of each node's HTTP and plain RTMP listeners, a first.
    node_http: Vec<String>,
    node_rtmp: Vec<String>,
    balancer: Option<Nginx>,
}

/// The addresses of a cluster run's nodes a, b and c.
const CLUSTER_NODE_IPS: [&str; 3] = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];

/// The data directory of a cluster run's node `node_id` beside node a's.
fn node_data_dir(data_dir: &std::path::Path, node_id: &str) -> PathBuf {
    let mut name = data_dir.file_name().unwrap().to_owned();
    name.push(format!("-{node_id}"));
    data_dir.with_file_name(name)
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
    raw_request_at(&format!("127.0.0.1:{}", server.port), method, path, headers, body)
}

/// A raw HTTP/1.1 exchange with the listener at `address` (`host:port`).
pub fn raw_request_at(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> RawResponse {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n",
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
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body_bytes = if chunked { decode_chunked(&response[head_end..]) } else { response[head_end..].to_vec() };
    let body = String::from_utf8_lossy(&body_bytes).into_owned();
    RawResponse { status, headers, body, body_bytes }
}

/// The body of a response sent with `Transfer-Encoding: chunked`, without its framing.
pub fn decode_chunked(mut rest: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return decoded;
        }
        decoded.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
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
