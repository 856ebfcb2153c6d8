//! Settings: command-line flags, `OPENIVS_*` environment variables of the same names, and an
//! optional TOML file (`--config`), merged into one [`Settings`] value in that order of precedence
//! (flag over environment over file over built-in default). Zero configuration is a working
//! configuration: loopback listeners, an embedded store under `./openivs-data`, and the
//! local-development credential pair `test`/`test`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// The access key id, secret and account of the local-development credential used when none is
/// configured (the same pair moto and LocalStack accept, so existing test setups just work).
pub const DEV_ACCESS_KEY_ID: &str = "test";
pub const DEV_SECRET_ACCESS_KEY: &str = "test";
pub const DEV_ACCOUNT_ID: &str = "123456789012";

#[derive(Debug, Parser)]
#[command(
    name = "openivs",
    version,
    about = "Amazon Interactive Video Service (IVS), open source: the IVS API and live video on your own machines."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the IVS API, RTMP/RTMPS ingest and HLS playback.
    Serve(Box<ServeArgs>),
    /// Write an ECDSA P-384 key pair for private channels (import the public half with
    /// ImportPlaybackKeyPair).
    Keygen(crate::playback_keys::KeygenArgs),
    /// Print a playback token for a private channel, signed with a private key from `keygen`.
    Token(crate::playback_keys::TokenArgs),
}

/// Flags of `openivs serve`. Every flag can also be set by the environment variable named
/// after it (`--http-addr` ↔ `OPENIVS_HTTP_ADDR`) or by the same key in the `--config` file
/// (`http_addr = "…"`).
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with settings (keys named like the flags, with underscores).
    #[arg(long, env = "OPENIVS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address of the HTTP listener: the IVS API, and HLS playback. [default: 127.0.0.1:8080]
    #[arg(long, env = "OPENIVS_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// Address of the plain RTMP ingest listener (accepted only for channels with
    /// insecureIngest). [default: 127.0.0.1:1935]
    #[arg(long, env = "OPENIVS_RTMP_ADDR")]
    pub rtmp_addr: Option<SocketAddr>,

    /// Address of the RTMPS ingest listener. [default: 127.0.0.1:4443]
    #[arg(long, env = "OPENIVS_RTMPS_ADDR")]
    pub rtmps_addr: Option<SocketAddr>,

    /// Address (UDP) of the SRT ingest listener. [default: 127.0.0.1:9000]
    #[arg(long, env = "OPENIVS_SRT_ADDR")]
    pub srt_addr: Option<SocketAddr>,

    /// The libsrt library SRT ingest runs on (a path); by default the system's (Debian:
    /// libsrt1.5-gnutls, which ffmpeg installs); `none` turns SRT ingest off.
    #[arg(long, env = "OPENIVS_LIBSRT")]
    pub libsrt: Option<String>,

    /// PEM certificate (chain) of the RTMPS listener. With none, a self-signed certificate for
    /// --public-host is generated once into the data directory.
    #[arg(long, env = "OPENIVS_TLS_CERTIFICATE")]
    pub tls_certificate: Option<PathBuf>,

    /// PEM private key of the RTMPS certificate.
    #[arg(long, env = "OPENIVS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Serve the HTTP listener (API, playback, operator endpoints) over TLS, with HTTP/2 and
    /// HTTP/1.1 by ALPN, on the RTMPS certificate; `playbackUrl` then starts with https://.
    /// [default: true when --tls-certificate is given, else false]
    #[arg(long, env = "OPENIVS_HTTP_TLS")]
    pub http_tls: Option<bool>,

    /// Directory of the embedded store (SQLite file) and of local media. [default: ./openivs-data]
    #[arg(long, env = "OPENIVS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Host name (or IP address) put into the URLs the API returns (playbackUrl,
    /// ingestEndpoint, srt.endpoint). [default: 127.0.0.1]
    #[arg(long, env = "OPENIVS_PUBLIC_HOST")]
    pub public_host: Option<String>,

    /// A GeoIP database in MaxMind's mmdb format (GeoLite2-Country, GeoIP2-Country, DB-IP …),
    /// with which the `allowedCountries` of playback restriction policies are enforced. Without
    /// one, country lists are not enforced (a warning says so).
    #[arg(long, env = "OPENIVS_GEOIP_DATABASE")]
    pub geoip_database: Option<PathBuf>,

    /// Keep resources in PostgreSQL (`postgres://user:password@host:port/database`; the database
    /// is created if it does not exist) rather than the SQLite file in the data directory: what
    /// several nodes share. [default: the SQLite file]
    #[arg(long, env = "OPENIVS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// This node's name in the stream registry (which node holds which live stream), unique
    /// among the nodes sharing one database. [default: a name made at the first start, kept in
    /// the data directory's `node-id` file]
    #[arg(long, env = "OPENIVS_NODE_ID")]
    pub node_id: Option<String>,

    /// Where the other nodes of a cluster reach this node's HTTP listener (its playback, for
    /// viewers they serve of streams it ingests). [default: http:// and the HTTP address]
    #[arg(long, env = "OPENIVS_ORIGIN_URL")]
    pub origin_url: Option<String>,

    /// The secret that authenticates requests between the nodes of a cluster. [default: one made
    /// by the first node and kept in the shared database]
    #[arg(long, env = "OPENIVS_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// The ffmpeg that transcodes STANDARD and ADVANCED channels into their renditions (a path,
    /// or a program on PATH); `none` turns transcoding off. Without it, those channels serve
    /// their source only. [default: ffmpeg]
    #[arg(long, env = "OPENIVS_FFMPEG")]
    pub ffmpeg: Option<String>,

    /// Answer HEVC tracks (`jim_hevc_nvenc`) in GetClientConfiguration to multitrack
    /// broadcasters that can encode them (an NVIDIA GPU and `h265` among their codecs), for the
    /// tracks after the first. Off by default: a viewer whose browser cannot decode HEVC then
    /// plays only track 0. [default: false]
    #[arg(long, env = "OPENIVS_MULTITRACK_HEVC")]
    pub multitrack_hevc: Option<bool>,

    /// Make a channel named `demo` and publish a looping test clip into it from inside the
    /// process: live video with nothing else installed. [default: false]
    #[arg(long, env = "OPENIVS_DEMO", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,

    /// Serve Prometheus metrics at /metrics on the HTTP listener. [default: true]
    #[arg(long, env = "OPENIVS_METRICS")]
    pub metrics: Option<bool>,

    /// A bearer token /metrics requires (`Authorization: Bearer TOKEN`); without one, anyone who
    /// reaches the HTTP listener may read the metrics. [default: none]
    #[arg(long, env = "OPENIVS_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// The folder whose subfolders are the buckets recording configurations name (a bucket
    /// exists when its folder does). Default: `buckets` in the data directory.
    #[arg(long, env = "OPENIVS_BUCKETS_DIR")]
    pub buckets_dir: Option<PathBuf>,

    /// Where recordings go: `local` (folders of --buckets-dir) or `s3` (buckets of an
    /// S3-compatible service: --s3-endpoint, --s3-region, credentials). [default: local]
    #[arg(long, env = "OPENIVS_RECORDING_STORE")]
    pub recording_store: Option<String>,

    /// URL of the S3-compatible service (MinIO, Ceph, moto …), e.g. http://127.0.0.1:9000.
    /// Without one, AWS S3 in --s3-region.
    #[arg(long, env = "OPENIVS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Region of the S3 buckets (signed into every request). [default: us-east-1]
    #[arg(long, env = "OPENIVS_S3_REGION")]
    pub s3_region: Option<String>,

    /// Access key id for S3. Without one, AWS_ACCESS_KEY_ID and the other AWS variables.
    #[arg(long, env = "OPENIVS_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,

    /// Secret access key for S3 (prefer the environment or the config file to the flag).
    #[arg(long, env = "OPENIVS_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,

    /// Path-style requests (http://endpoint/bucket/key), as most S3-compatible services want;
    /// false for virtual-hosted style (http://bucket.endpoint/key). [default: true]
    #[arg(long, env = "OPENIVS_S3_PATH_STYLE")]
    pub s3_path_style: Option<bool>,

    /// URL an HTTP webhook event target: every IVS event is POSTed there, signed with
    /// --event-webhook-secret. Repeat the flag (or separate with commas) for several.
    #[arg(long = "event-webhook", env = "OPENIVS_EVENT_WEBHOOKS", value_delimiter = ',')]
    pub event_webhooks: Vec<String>,

    /// The secret webhook requests are signed with (HMAC-SHA256); required with --event-webhook.
    #[arg(long, env = "OPENIVS_EVENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub event_webhook_secret: Option<String>,

    /// URL of an EventBridge-compatible endpoint that receives every IVS event with PutEvents
    /// (e.g. https://events.us-west-2.amazonaws.com, or LocalStack's or moto's). [default: none]
    #[arg(long, env = "OPENIVS_EVENTBRIDGE_ENDPOINT")]
    pub eventbridge_endpoint: Option<String>,

    /// Region signed into PutEvents calls. [default: the endpoint's, else us-east-1]
    #[arg(long, env = "OPENIVS_EVENTBRIDGE_REGION")]
    pub eventbridge_region: Option<String>,

    /// Event bus the events are put on. [default: default]
    #[arg(long, env = "OPENIVS_EVENTBRIDGE_BUS")]
    pub eventbridge_bus: Option<String>,

    /// `Source` of the entries put. AWS refuses `aws.` sources from callers: set your own (e.g.
    /// openivs) against AWS itself. [default: aws.ivs]
    #[arg(long, env = "OPENIVS_EVENTBRIDGE_SOURCE")]
    pub eventbridge_source: Option<String>,

    /// Access key id for PutEvents. Without one, AWS_ACCESS_KEY_ID.
    #[arg(long, env = "OPENIVS_EVENTBRIDGE_ACCESS_KEY_ID")]
    pub eventbridge_access_key_id: Option<String>,

    /// Secret access key for PutEvents. Without one, AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "OPENIVS_EVENTBRIDGE_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub eventbridge_secret_access_key: Option<String>,

    /// Proxies (load balancers, CDNs) whose `X-Forwarded-For` is believed, as addresses or CIDR
    /// blocks separated by commas: a viewer's address is then the rightmost address of the
    /// header that is not one of them. [default: none; the peer's address is the viewer's]
    #[arg(long, env = "OPENIVS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// An API credential as ACCESS_KEY_ID:SECRET_ACCESS_KEY:ACCOUNT_ID; repeat the flag (or
    /// separate with commas in the variable) for several. With none, the local-development pair
    /// test/test for account 123456789012 is accepted. Prefer the config file or the environment
    /// for secrets: flags are visible to other users of the machine.
    #[arg(long = "credential", env = "OPENIVS_CREDENTIALS", value_delimiter = ',', hide_env_values = true)]
    pub credentials: Vec<String>,

    /// Allow the local-development credential test/test while listening on a non-loopback
    /// address (refused by default: anyone could use the API).
    #[arg(long, env = "OPENIVS_ALLOW_DEV_CREDENTIALS_ON_NETWORK")]
    pub allow_dev_credentials_on_network: Option<bool>,

    /// Maximum channels per account and region. [default: 5000]
    #[arg(long, env = "OPENIVS_QUOTA_CHANNELS")]
    pub quota_channels: Option<u32>,

    /// Maximum recording configurations per account and region. [default: 20]
    #[arg(long, env = "OPENIVS_QUOTA_RECORDING_CONFIGURATIONS")]
    pub quota_recording_configurations: Option<u32>,

    /// Maximum playback key pairs per account and region. [default: 3]
    #[arg(long, env = "OPENIVS_QUOTA_PLAYBACK_KEY_PAIRS")]
    pub quota_playback_key_pairs: Option<u32>,

    /// Maximum playback restriction policies per account and region. [default: 100]
    #[arg(long, env = "OPENIVS_QUOTA_PLAYBACK_RESTRICTION_POLICIES")]
    pub quota_playback_restriction_policies: Option<u32>,

    /// Maximum ad configurations per account and region. [default: 100]
    #[arg(long, env = "OPENIVS_QUOTA_AD_CONFIGURATIONS")]
    pub quota_ad_configurations: Option<u32>,

    /// Maximum failover slate configurations per account and region. [default: 100]
    #[arg(long, env = "OPENIVS_QUOTA_FAILOVER_SLATE_CONFIGURATIONS")]
    pub quota_failover_slate_configurations: Option<u32>,

    /// Log filter, in tracing's EnvFilter syntax (RUST_LOG is read too). [default: info]
    #[arg(long, env = "OPENIVS_LOG")]
    pub log: Option<String>,

    /// Log lines as `text` (for people) or `json` (one JSON object per line, for log
    /// collectors). [default: text]
    #[arg(long, env = "OPENIVS_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Declares the resource limits and timeouts: each is a flag (with its environment variable), a
/// key of the settings file and a field of [`Limits`], with its default in one place.
macro_rules! limits {
    ($($(#[doc = $doc:literal])* $field:ident: $ty:ty = $default:expr, $env:literal;)*) => {
        /// The limit flags of `openivs serve` (also environment variables and file keys).
        #[derive(Debug, Args, Default, Deserialize)]
        pub struct LimitArgs {
            $($(#[doc = $doc])* #[arg(long, env = $env)] pub $field: Option<$ty>,)*
        }

        /// Every bound the server keeps on what clients can make it hold, and for how long.
        /// Times are in seconds (milliseconds where the name says so), sizes in bytes.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct Limits {
            $(pub $field: $ty,)*
        }

        impl LimitArgs {
            /// Flags (and environment) over the file over the defaults.
            fn resolve(self, file: LimitArgs) -> Limits {
                Limits { $($field: self.$field.or(file.$field).unwrap_or($default),)* }
            }
        }

        impl Default for Limits {
            fn default() -> Limits {
                LimitArgs::default().resolve(LimitArgs::default())
            }
        }
    };
}

limits! {
    /// HTTP connections held at once; more are answered 503 and closed. [default: 16384]
    http_max_connections: usize = 16384, "OPENIVS_HTTP_MAX_CONNECTIONS";
    /// HTTP connections held at once from one client address. [default: 1024]
    http_max_connections_per_address: usize = 1024, "OPENIVS_HTTP_MAX_CONNECTIONS_PER_ADDRESS";
    /// Seconds a connection may take to send a request's headers, counted from when it connected
    /// or its previous response was sent (so also the keep-alive idle time). [default: 30]
    http_header_timeout: u64 = 30, "OPENIVS_HTTP_HEADER_TIMEOUT";
    /// Largest request head (request line and headers) buffered, in bytes; at least 8192.
    /// [default: 16384]
    http_max_header_bytes: usize = 16384, "OPENIVS_HTTP_MAX_HEADER_BYTES";
    /// Seconds a request's body may take to arrive once its headers have. [default: 10]
    http_body_timeout: u64 = 10, "OPENIVS_HTTP_BODY_TIMEOUT";
    /// Seconds a response may stall (the client reads nothing) before the connection is closed.
    /// [default: 30]
    http_send_timeout: u64 = 30, "OPENIVS_HTTP_SEND_TIMEOUT";
    /// Largest API request body, in bytes, checked against Content-Length before reading.
    /// [default: 65536]
    http_max_request_body: usize = 65536, "OPENIVS_HTTP_MAX_REQUEST_BODY";
    /// Bytes of request bodies being received at once, over all connections; past it requests
    /// answer ThrottlingException. [default: 33554432]
    http_request_body_memory: usize = 32 << 20, "OPENIVS_HTTP_REQUEST_BODY_MEMORY";
    /// Milliseconds of SRT receive latency: how long a lost packet may take to be retransmitted
    /// (the larger of this and the caller's latency applies). [default: 120]
    srt_latency_ms: u64 = 120, "OPENIVS_SRT_LATENCY_MS";
    /// RTMP (and, separately, RTMPS and SRT) connections held at once; more are closed. [default: 4096]
    ingest_max_connections: usize = 4096, "OPENIVS_INGEST_MAX_CONNECTIONS";
    /// Seconds an RTMPS connection may take to complete its TLS handshake. [default: 10]
    ingest_tls_handshake_timeout: u64 = 10, "OPENIVS_INGEST_TLS_HANDSHAKE_TIMEOUT";
    /// Seconds from connecting to an accepted publish (handshake, connect, publish). [default: 10]
    ingest_setup_timeout: u64 = 10, "OPENIVS_INGEST_SETUP_TIMEOUT";
    /// Seconds without media progress after which a stream ends (IngestTimeout). [default: 30]
    ingest_media_timeout: u64 = 30, "OPENIVS_INGEST_MEDIA_TIMEOUT";
    /// Largest RTMP message accepted before a publish is authorised, in bytes. [default: 16384]
    ingest_max_setup_message: usize = 16384, "OPENIVS_INGEST_MAX_SETUP_MESSAGE";
    /// Largest RTMP message (a video frame) accepted from a publisher, in bytes. [default: 8388608]
    ingest_max_message: usize = 8 << 20, "OPENIVS_INGEST_MAX_MESSAGE";
    /// Most AMF0 values (commands, metadata) one RTMP message may decode to. [default: 4096]
    ingest_max_amf0_values: usize = 4096, "OPENIVS_INGEST_MAX_AMF0_VALUES";
    /// Largest AVC decoder configuration (SPS and PPS) accepted, in bytes. [default: 16384]
    ingest_max_decoder_configuration: usize = 16384, "OPENIVS_INGEST_MAX_DECODER_CONFIGURATION";
    /// Longest segment, in seconds of media or of arrival time: a segment without a keyframe
    /// this long is cut anyway. [default: 12]
    playback_max_segment_duration: u64 = 12, "OPENIVS_PLAYBACK_MAX_SEGMENT_DURATION";
    /// Largest segment, in bytes: a segment this large is cut anyway. [default: 16777216]
    playback_max_segment_bytes: usize = 16 << 20, "OPENIVS_PLAYBACK_MAX_SEGMENT_BYTES";
    /// Largest low-latency part, in bytes: a part this large is cut anyway. [default: 2097152]
    playback_max_part_bytes: usize = 2 << 20, "OPENIVS_PLAYBACK_MAX_PART_BYTES";
    /// Milliseconds of media a low-latency HLS part (LOW channels) holds, 100 to 200: a part
    /// is the fewest whole frames lasting about this long. Shorter parts bring players closer to
    /// live (hls.js plays about 0.7 s behind with 100, 1.0-1.2 s with 200, on loopback) and leave
    /// them less buffer, so a stall of the network or the machine shows sooner. [default: 200]
    playback_part_duration_ms: u64 = 200, "OPENIVS_PLAYBACK_PART_DURATION_MS";
    /// Bytes of completed segments a live channel keeps in memory (the playlist window).
    /// [default: 41943040]
    playback_max_window_bytes: usize = 40 << 20, "OPENIVS_PLAYBACK_MAX_WINDOW_BYTES";
    /// Viewer sessions held at once; past it new viewers get 429. [default: 100000]
    playback_max_viewer_sessions: usize = 100_000, "OPENIVS_PLAYBACK_MAX_VIEWER_SESSIONS";
    /// Viewer sessions of one channel held at once. [default: 50000]
    playback_max_viewer_sessions_per_channel: usize = 50_000, "OPENIVS_PLAYBACK_MAX_VIEWER_SESSIONS_PER_CHANNEL";
    /// Viewer sessions of one client address held at once. [default: 500]
    playback_max_viewer_sessions_per_address: usize = 500, "OPENIVS_PLAYBACK_MAX_VIEWER_SESSIONS_PER_ADDRESS";
    /// Seconds after its last request that a viewer session is forgotten. [default: 60]
    playback_viewer_session_idle: u64 = 60, "OPENIVS_PLAYBACK_VIEWER_SESSION_IDLE";
    /// Bytes of recorded media the spool holds for an S3 store that is slow or down; past it,
    /// recordings fail. [default: 4294967296]
    recording_spool_max_bytes: usize = 4 << 30, "OPENIVS_RECORDING_SPOOL_MAX_BYTES";
    /// Seconds an S3 store may refuse every write before the recordings that write to it fail
    /// (`recording-failed.json` when it returns). [default: 600]
    recording_store_outage_limit: u64 = 600, "OPENIVS_RECORDING_STORE_OUTAGE_LIMIT";
    /// Transcoding capacity, in ladder units (a STANDARD 720p30 ladder is 1, 1080p30 about 2.3):
    /// a publish that would pass it is refused ("Transcode capacity exceeded"). The default
    /// holds on 2 cores. [default: 4]
    transcode_capacity: f64 = 4.0, "OPENIVS_TRANSCODE_CAPACITY";
    /// Seconds a SIGTERM waits for live streams to end (their publishers stop) before the server
    /// ends them and exits; meanwhile it is not ready (/readyz), takes no new publishes and no
    /// API writes. A second signal, or SIGINT, stops at once. [default: 30]
    drain_timeout: u64 = 30, "OPENIVS_DRAIN_TIMEOUT";
    /// In a cluster: bytes of parts and segments pulled from other nodes that a node keeps in
    /// memory for its viewers (each for 60 s at most; past the bound the oldest goes first).
    /// [default: 268435456]
    cluster_pull_memory_bytes: usize = 256 << 20, "OPENIVS_CLUSTER_PULL_MEMORY_BYTES";
    /// In a cluster: seconds one pull from another node may take (a blocking playlist reload
    /// waits there up to a few target durations). [default: 20]
    cluster_pull_timeout: u64 = 20, "OPENIVS_CLUSTER_PULL_TIMEOUT";
}

impl Limits {
    pub fn seconds(value: u64) -> std::time::Duration {
        std::time::Duration::from_secs(value)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The settings file: the same keys as the flags, plus `[[credentials]]` tables.
#[derive(Debug, Default, Deserialize)]
struct FileSettings {
    http_addr: Option<SocketAddr>,
    rtmp_addr: Option<SocketAddr>,
    rtmps_addr: Option<SocketAddr>,
    srt_addr: Option<SocketAddr>,
    libsrt: Option<String>,
    data_dir: Option<PathBuf>,
    tls_certificate: Option<PathBuf>,
    http_tls: Option<bool>,
    tls_key: Option<PathBuf>,
    public_host: Option<String>,
    geoip_database: Option<PathBuf>,
    database_url: Option<String>,
    node_id: Option<String>,
    origin_url: Option<String>,
    cluster_secret: Option<String>,
    ffmpeg: Option<String>,
    multitrack_hevc: Option<bool>,
    demo: Option<bool>,
    metrics: Option<bool>,
    metrics_token: Option<String>,
    buckets_dir: Option<PathBuf>,
    recording_store: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_path_style: Option<bool>,
    event_webhooks: Option<Vec<String>>,
    event_webhook_secret: Option<String>,
    /// Webhooks with a secret each: `[[event_webhook_targets]]` tables of `url` and `secret`.
    #[serde(default)]
    event_webhook_targets: Vec<FileWebhook>,
    eventbridge_endpoint: Option<String>,
    eventbridge_region: Option<String>,
    eventbridge_bus: Option<String>,
    eventbridge_source: Option<String>,
    eventbridge_access_key_id: Option<String>,
    eventbridge_secret_access_key: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    credentials: Vec<FileCredential>,
    allow_dev_credentials_on_network: Option<bool>,
    quota_channels: Option<u32>,
    quota_recording_configurations: Option<u32>,
    quota_playback_key_pairs: Option<u32>,
    quota_playback_restriction_policies: Option<u32>,
    quota_ad_configurations: Option<u32>,
    quota_failover_slate_configurations: Option<u32>,
    log: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(flatten)]
    limits: LimitArgs,
    /// Keys that are none of the above: refused (a typo must not pass for a setting).
    #[serde(flatten)]
    unknown: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhook {
    url: String,
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCredential {
    access_key_id: String,
    secret_access_key: String,
    account_id: String,
}

/// One API credential. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// Per account and region resource quotas; exceeding one answers ServiceQuotaExceededException.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub channels: u32,
    pub recording_configurations: u32,
    pub playback_key_pairs: u32,
    pub playback_restriction_policies: u32,
    pub ad_configurations: u32,
    pub failover_slate_configurations: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub rtmp_addr: SocketAddr,
    pub rtmps_addr: SocketAddr,
    pub srt_addr: SocketAddr,
    /// The libsrt to load (`None`: the system's); `Some("none")`: SRT off.
    pub libsrt: Option<String>,
    pub data_dir: PathBuf,
    pub tls_certificate: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http_tls: bool,
    pub public_host: String,
    pub geoip_database: Option<PathBuf>,
    /// `None`: the embedded SQLite file.
    pub database_url: Option<String>,
    /// This node's name and origin URL in a cluster (see [`crate::cluster::Node`]).
    pub node_id: Option<String>,
    pub origin_url: Option<String>,
    pub cluster_secret: Option<String>,
    pub ffmpeg: String,
    pub multitrack_hevc: bool,
    pub demo: bool,
    pub metrics: bool,
    pub metrics_token: Option<String>,
    pub buckets_dir: PathBuf,
    /// Recordings go to this S3-compatible service (none: to folders of `buckets_dir`).
    pub s3: Option<crate::recording::buckets::S3Settings>,
    /// Where IVS events are delivered (besides the event stream of the HTTP listener).
    pub event_targets: Vec<crate::events::delivery::Target>,
    pub trusted_proxies: Vec<crate::playback::access::Cidr>,
    pub credentials: Vec<Credential>,
    /// True when no credential was configured and test/test is in force.
    pub dev_credentials: bool,
    pub allow_dev_credentials_on_network: bool,
    pub quotas: Quotas,
    pub log: String,
    pub log_format: LogFormat,
    pub limits: Limits,
}

impl Settings {
    /// Merges flags (already merged with the environment by clap) over the settings file over
    /// the defaults, and checks the result.
    pub fn resolve(args: ServeArgs) -> Result<Settings, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let event_targets = event_targets(&args, &file)?;
        let mut credentials = Vec::new();
        for text in args.credentials.iter().filter(|t| !t.trim().is_empty()) {
            credentials.push(parse_credential(text)?);
        }
        if credentials.is_empty() {
            for c in file.credentials {
                credentials.push(checked_credential(c.access_key_id, c.secret_access_key, c.account_id)?);
            }
        }
        let proxy_texts = if args.trusted_proxies.is_empty() {
            file.trusted_proxies.clone().unwrap_or_default()
        } else {
            args.trusted_proxies.clone()
        };
        let trusted_proxies = proxy_texts
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| crate::playback::access::Cidr::parse(t).map_err(|e| format!("--trusted-proxies: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let dev_credentials = credentials.is_empty();
        if dev_credentials {
            credentials.push(Credential {
                access_key_id: DEV_ACCESS_KEY_ID.into(),
                secret_access_key: DEV_SECRET_ACCESS_KEY.into(),
                account_id: DEV_ACCOUNT_ID.into(),
            });
        }
        let data_dir = args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("openivs-data"));
        let buckets_dir = args.buckets_dir.or(file.buckets_dir).unwrap_or_else(|| data_dir.join("buckets"));
        let s3 = match args.recording_store.or(file.recording_store).as_deref() {
            None | Some("local") => None,
            Some("s3") => Some(crate::recording::buckets::S3Settings {
                endpoint: args.s3_endpoint.or(file.s3_endpoint),
                region: args.s3_region.or(file.s3_region).unwrap_or_else(|| "us-east-1".into()),
                access_key_id: args.s3_access_key_id.or(file.s3_access_key_id),
                secret_access_key: args.s3_secret_access_key.or(file.s3_secret_access_key),
                path_style: args.s3_path_style.or(file.s3_path_style).unwrap_or(true),
            }),
            Some(other) => return Err(format!("--recording-store must be local or s3, not {other:?}")),
        };
        let http_addr = args.http_addr.or(file.http_addr).unwrap_or(([127, 0, 0, 1], 8080).into());
        let http_tls =
            args.http_tls.or(file.http_tls).unwrap_or(args.tls_certificate.is_some() || file.tls_certificate.is_some());
        let settings = Settings {
            event_targets,
            http_addr,
            rtmp_addr: args.rtmp_addr.or(file.rtmp_addr).unwrap_or(([127, 0, 0, 1], 1935).into()),
            rtmps_addr: args.rtmps_addr.or(file.rtmps_addr).unwrap_or(([127, 0, 0, 1], 4443).into()),
            srt_addr: args.srt_addr.or(file.srt_addr).unwrap_or(([127, 0, 0, 1], 9000).into()),
            libsrt: args.libsrt.or(file.libsrt),
            data_dir,
            http_tls,
            tls_certificate: args.tls_certificate.or(file.tls_certificate),
            tls_key: args.tls_key.or(file.tls_key),
            public_host: args.public_host.or(file.public_host).unwrap_or_else(|| "127.0.0.1".into()),
            geoip_database: args.geoip_database.or(file.geoip_database),
            database_url: args.database_url.or(file.database_url),
            node_id: args.node_id.or(file.node_id),
            origin_url: args.origin_url.or(file.origin_url),
            cluster_secret: args.cluster_secret.or(file.cluster_secret),
            ffmpeg: args.ffmpeg.or(file.ffmpeg).unwrap_or_else(|| "ffmpeg".into()),
            multitrack_hevc: args.multitrack_hevc.or(file.multitrack_hevc).unwrap_or(false),
            demo: args.demo.or(file.demo).unwrap_or(false),
            metrics: args.metrics.or(file.metrics).unwrap_or(true),
            metrics_token: args.metrics_token.or(file.metrics_token).filter(|t| !t.is_empty()),
            buckets_dir,
            s3,
            trusted_proxies,
            credentials,
            dev_credentials,
            allow_dev_credentials_on_network: args
                .allow_dev_credentials_on_network
                .or(file.allow_dev_credentials_on_network)
                .unwrap_or(false),
            quotas: Quotas {
                channels: args.quota_channels.or(file.quota_channels).unwrap_or(5000),
                recording_configurations: args
                    .quota_recording_configurations
                    .or(file.quota_recording_configurations)
                    .unwrap_or(20),
                playback_key_pairs: args.quota_playback_key_pairs.or(file.quota_playback_key_pairs).unwrap_or(3),
                playback_restriction_policies: args
                    .quota_playback_restriction_policies
                    .or(file.quota_playback_restriction_policies)
                    .unwrap_or(100),
                ad_configurations: args.quota_ad_configurations.or(file.quota_ad_configurations).unwrap_or(100),
                failover_slate_configurations: args
                    .quota_failover_slate_configurations
                    .or(file.quota_failover_slate_configurations)
                    .unwrap_or(100),
            },
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            limits: args.limits.resolve(file.limits),
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        let listeners = [self.http_addr, self.rtmp_addr, self.rtmps_addr, self.srt_addr];
        if self.dev_credentials
            && !self.allow_dev_credentials_on_network
            && listeners.iter().any(|addr| !addr.ip().is_loopback())
        {
            return Err("refusing to listen on a non-loopback address with the local-development credential \
                 test/test: configure credentials (--credential, OPENIVS_CREDENTIALS or [[credentials]] in \
                 the config file), or pass --allow-dev-credentials-on-network true"
                .into());
        }
        if !(100..=200).contains(&self.limits.playback_part_duration_ms) {
            return Err(format!(
                "--playback-part-duration-ms must be from 100 to 200, not {}",
                self.limits.playback_part_duration_ms
            ));
        }
        if self.public_host.is_empty() || self.public_host.contains(['/', ' ', '?', '#']) {
            return Err(format!("--public-host must be a host name or IP address, not {:?}", self.public_host));
        }
        Ok(())
    }

    /// The database file of the embedded store.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("openivs.sqlite3")
    }
}

/// The event targets: webhooks of the flags (sharing their secret) and of the file's tables,
/// and the EventBridge endpoint.
fn event_targets(args: &ServeArgs, file: &FileSettings) -> Result<Vec<crate::events::delivery::Target>, String> {
    use crate::events::delivery::{EventBridgeTarget, Target};
    let mut targets = Vec::new();
    let urls = if args.event_webhooks.is_empty() {
        file.event_webhooks.clone().unwrap_or_default()
    } else {
        args.event_webhooks.clone()
    };
    let urls: Vec<String> = urls.into_iter().filter(|u| !u.trim().is_empty()).collect();
    let secret = args.event_webhook_secret.clone().or(file.event_webhook_secret.clone());
    let checked_url = |url: &str| match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(url.trim().to_owned()),
        _ => Err(format!("--event-webhook must be an http or https URL, not {url:?}")),
    };
    for url in &urls {
        let Some(secret) = secret.clone().filter(|s| !s.is_empty()) else {
            return Err("--event-webhook needs --event-webhook-secret (its requests are signed with it)".into());
        };
        targets.push(Target::Webhook { url: checked_url(url)?, secret });
    }
    for webhook in &file.event_webhook_targets {
        if webhook.secret.is_empty() {
            return Err(format!("the event webhook {} needs a secret", webhook.url));
        }
        targets.push(Target::Webhook { url: checked_url(&webhook.url)?, secret: webhook.secret.clone() });
    }
    if let Some(endpoint) = args.eventbridge_endpoint.clone().or(file.eventbridge_endpoint.clone()) {
        let parsed = reqwest::Url::parse(&endpoint)
            .map_err(|_| format!("--eventbridge-endpoint must be a URL, not {endpoint:?}"))?;
        // events.{region}.amazonaws.com names its region.
        let region_of_host = parsed
            .host_str()
            .and_then(|host| host.strip_prefix("events."))
            .and_then(|rest| rest.split('.').next())
            .filter(|region| region.contains('-'))
            .map(str::to_owned);
        let access_key_id = args
            .eventbridge_access_key_id
            .clone()
            .or(file.eventbridge_access_key_id.clone())
            .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok())
            .ok_or("--eventbridge-endpoint needs --eventbridge-access-key-id (or AWS_ACCESS_KEY_ID)")?;
        let secret_access_key = args
            .eventbridge_secret_access_key
            .clone()
            .or(file.eventbridge_secret_access_key.clone())
            .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok())
            .ok_or("--eventbridge-endpoint needs --eventbridge-secret-access-key (or AWS_SECRET_ACCESS_KEY)")?;
        targets.push(Target::EventBridge(EventBridgeTarget {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region: args
                .eventbridge_region
                .clone()
                .or(file.eventbridge_region.clone())
                .or(region_of_host)
                .unwrap_or_else(|| "us-east-1".into()),
            bus: args.eventbridge_bus.clone().or(file.eventbridge_bus.clone()).unwrap_or_else(|| "default".into()),
            source: args
                .eventbridge_source
                .clone()
                .or(file.eventbridge_source.clone())
                .unwrap_or_else(|| "aws.ivs".into()),
            access_key_id,
            secret_access_key,
        }));
    }
    Ok(targets)
}

fn read_file(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: FileSettings = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(key) = file.unknown.keys().next() {
        return Err(format!("{}: unknown setting `{key}`", path.display()));
    }
    Ok(file)
}

fn parse_credential(text: &str) -> Result<Credential, String> {
    let mut parts = text.trim().splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(secret), Some(account)) => checked_credential(id.into(), secret.into(), account.into()),
        // Never echo the text: it holds a secret.
        _ => Err("a credential must be ACCESS_KEY_ID:SECRET_ACCESS_KEY:ACCOUNT_ID".into()),
    }
}

fn checked_credential(
    access_key_id: String,
    secret_access_key: String,
    account_id: String,
) -> Result<Credential, String> {
    if access_key_id.is_empty() || secret_access_key.is_empty() {
        return Err("a credential needs a non-empty access key id and secret access key".into());
    }
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the account id of access key {access_key_id} must be 12 digits"));
    }
    Ok(Credential { access_key_id, secret_access_key, account_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_with_dev_credentials() {
        let s = Settings::resolve(ServeArgs::default()).unwrap();
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.rtmp_addr.to_string(), "127.0.0.1:1935");
        assert_eq!(s.rtmps_addr.to_string(), "127.0.0.1:4443");
        assert!(s.dev_credentials);
        assert_eq!(s.credentials[0].account_id, DEV_ACCOUNT_ID);
        assert_eq!(s.quotas.playback_key_pairs, 3);
    }

    #[test]
    fn dev_credentials_refused_on_network_unless_allowed() {
        let args = || ServeArgs { http_addr: Some("0.0.0.0:8080".parse().unwrap()), ..Default::default() };
        assert!(Settings::resolve(args()).is_err());
        let allowed = ServeArgs { allow_dev_credentials_on_network: Some(true), ..args() };
        assert!(Settings::resolve(allowed).is_ok());
        let configured = ServeArgs { credentials: vec!["AKID:secret:111122223333".into()], ..args() };
        let s = Settings::resolve(configured).unwrap();
        assert!(!s.dev_credentials);
    }

    #[test]
    fn part_duration_is_from_100_to_200_ms() {
        let with = |ms| ServeArgs {
            limits: LimitArgs { playback_part_duration_ms: Some(ms), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(Settings::resolve(ServeArgs::default()).unwrap().limits.playback_part_duration_ms, 200);
        for ms in [100, 150, 200] {
            assert_eq!(Settings::resolve(with(ms)).unwrap().limits.playback_part_duration_ms, ms);
        }
        for ms in [0, 99, 201, 1000] {
            assert!(Settings::resolve(with(ms)).unwrap_err().contains("--playback-part-duration-ms"), "{ms}");
        }
    }

    #[test]
    fn file_settings_apply_below_flags() {
        let dir = std::env::temp_dir().join(format!("openivs-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("openivs.toml");
        std::fs::write(
            &path,
            "public_host = \"video.example\"\nquota_channels = 7\n[[credentials]]\naccess_key_id = \"AK\"\nsecret_access_key = \"SK\"\naccount_id = \"111122223333\"\n",
        )
        .unwrap();
        let s =
            Settings::resolve(ServeArgs { config: Some(path.clone()), quota_channels: Some(9), ..Default::default() })
                .unwrap();
        assert_eq!(s.public_host, "video.example");
        assert_eq!(s.limits, Limits::default());
        assert_eq!(s.quotas.channels, 9);
        assert_eq!(s.credentials[0].account_id, "111122223333");
        std::fs::write(&path, "http_body_timeout = 3\ningest_max_message = 1000\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            limits: LimitArgs { ingest_max_message: Some(2000), ..Default::default() },
            ..Default::default()
        };
        let s = Settings::resolve(args).unwrap();
        assert_eq!((s.limits.http_body_timeout, s.limits.ingest_max_message), (3, 2000));
        std::fs::write(&path, "http_body_timout = 3\n").unwrap();
        let refused = Settings::resolve(ServeArgs { config: Some(path.clone()), ..Default::default() });
        assert!(refused.unwrap_err().contains("http_body_timout"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn credential_errors_never_echo_secrets() {
        let err = parse_credential("AKID-only-secret-part").unwrap_err();
        assert!(!err.contains("secret-part"));
        assert!(format!("{:?}", parse_credential("a:b:123456789012").unwrap()).contains("<redacted>"));
    }
}
