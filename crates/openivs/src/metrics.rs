//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format (the Prometheus
//! project's `prometheus-client` crate). Two kinds:
//!
//! - counters and histograms that the server's rooms update as things happen (API requests,
//!   playback requests and blocking reloads, store operations, event deliveries, recording
//!   uploads): process-wide families in [`global`], so deep code needs no handle passed down;
//! - gauges read from the live state at each scrape ([`LiveState`]): streams by health, each live
//!   channel's series of IVS's CloudWatch metrics (`ConcurrentViews`, `IngestVideoBitrate`,
//!   `IngestAudioBitrate`, `IngestFramerate`, `KeyframeInterval`), transcoding capacity and
//!   processes, the recording spool. A channel's series exist only while it is live, so label
//!   cardinality is bounded by the live channels; no other label takes a client's value
//!   (operations are the model's names, statuses are numbers).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::live::LiveRegistry;
use crate::playback::Playback;
use crate::transcode::Transcoding;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequest {
    pub operation: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaybackRequest {
    /// `multivariant`, `playlist`, `init`, `part`, `segment`.
    pub kind: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `delivered`, `retried` (events); `uploaded`, `retried`, `failed` (recordings).
    pub outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The families updated as things happen.
pub struct Metrics {
    pub api_requests: Family<ApiRequest, Counter>,
    pub api_duration: Histograms<Operation>,
    pub playback_requests: Family<PlaybackRequest, Counter>,
    pub playback_bytes: Counter,
    pub blocking_reload_wait: Histogram,
    pub store_duration: Histograms<Operation>,
    pub event_deliveries: Family<Outcome, Counter>,
    pub recording_uploads: Family<Outcome, Counter>,
    /// Playlists and media this node pulled from other nodes (one per upstream fetch).
    pub cluster_pulls: Counter,
    /// Playback requests other nodes made of this node (it ingests the stream), by kind.
    pub cluster_origin_requests: Family<Kind, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

/// Seconds from 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's families.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        api_requests: Family::default(),
        api_duration: Family::new_with_constructor(latency_histogram),
        playback_requests: Family::default(),
        playback_bytes: Counter::default(),
        blocking_reload_wait: latency_histogram(),
        store_duration: Family::new_with_constructor(latency_histogram),
        event_deliveries: Family::default(),
        recording_uploads: Family::default(),
        cluster_pulls: Counter::default(),
        cluster_origin_requests: Family::default(),
    })
}

impl Metrics {
    pub fn api_request(&self, operation: &'static str, status: u16, took: Duration) {
        self.api_requests.get_or_create(&ApiRequest { operation, status }).inc();
        self.api_duration.get_or_create(&Operation { operation }).observe(took.as_secs_f64());
    }

    pub fn playback_request(&self, kind: &'static str, status: u16, bytes: usize) {
        self.playback_requests.get_or_create(&PlaybackRequest { kind, status }).inc();
        self.playback_bytes.inc_by(bytes as u64);
    }

    pub fn cluster_pull(&self) {
        self.cluster_pulls.inc();
    }

    pub fn cluster_origin_request(&self, kind: &'static str) {
        self.cluster_origin_requests.get_or_create(&Kind { kind }).inc();
    }

    pub fn store_operation(&self, operation: &'static str, took: Duration) {
        self.store_duration.get_or_create(&Operation { operation }).observe(took.as_secs_f64());
    }

    /// `count` events delivered, or a delivery attempt to retry (`count` 1).
    pub fn event_deliveries_inc(&self, outcome: &'static str, count: usize) {
        self.event_deliveries.get_or_create(&Outcome { outcome }).inc_by(count as u64);
    }

    pub fn recording_upload(&self, outcome: &'static str) {
        self.recording_uploads.get_or_create(&Outcome { outcome }).inc();
    }
}

/// What the scrape reads from the running server.
pub struct LiveState {
    pub live: Arc<LiveRegistry>,
    pub playback: Arc<Playback>,
    pub transcoding: Arc<Transcoding>,
    pub buckets: Arc<crate::recording::buckets::Buckets>,
}

impl std::fmt::Debug for LiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveState")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabel {
    health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel_arn: String,
}

/// One gauge family of the scrape: `(labels, value)` for each series.
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(L, f64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit, ConstGauge::new(0.0).metric_type())?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for LiveState {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = std::time::Instant::now();
        let streams = self.live.all();
        let mut by_health = [("HEALTHY", 0.0), ("STARVING", 0.0), ("UNKNOWN", 0.0)];
        let mut views = Vec::with_capacity(streams.len());
        let mut video = Vec::with_capacity(streams.len());
        let mut audio = Vec::with_capacity(streams.len());
        let mut framerate = Vec::with_capacity(streams.len());
        let mut keyframes = Vec::with_capacity(streams.len());
        for stream in &streams {
            let label = || ChannelLabel { channel_arn: stream.channel_arn.clone() };
            let stats = stream.stats.lock().expect("stats lock");
            let health = stats.health(now).wire_name();
            if let Some(count) = by_health.iter_mut().find(|(name, _)| *name == health) {
                count.1 += 1.0;
            }
            views.push((label(), self.playback.viewers.viewer_count(&stream.channel_arn) as f64));
            video.push((label(), stats.video_bitrate() as f64));
            audio.push((label(), stats.audio_bitrate() as f64));
            framerate.push((label(), stats.video_framerate()));
            keyframes.push((label(), stats.keyframe_interval_seconds()));
        }
        let healths: Vec<(HealthLabel, f64)> =
            by_health.iter().map(|(health, count)| (HealthLabel { health }, *count)).collect();
        gauge_family(&mut encoder, "openivs_live_streams", "Live streams by health", None, &healths)?;
        gauge_family(
            &mut encoder,
            "openivs_channel_concurrent_views",
            "Viewers of a live channel (IVS: ConcurrentViews)",
            None,
            &views,
        )?;
        let bits = Unit::Other("bits_per_second".into());
        gauge_family(
            &mut encoder,
            "openivs_channel_ingest_video_bitrate",
            "Video bitrate a live channel receives (IVS: IngestVideoBitrate)",
            Some(&bits),
            &video,
        )?;
        gauge_family(
            &mut encoder,
            "openivs_channel_ingest_audio_bitrate",
            "Audio bitrate a live channel receives (IVS: IngestAudioBitrate)",
            Some(&bits),
            &audio,
        )?;
        gauge_family(
            &mut encoder,
            "openivs_channel_ingest_framerate",
            "Video frames per second a live channel receives (IVS: IngestFramerate)",
            None,
            &framerate,
        )?;
        gauge_family(
            &mut encoder,
            "openivs_channel_keyframe_interval",
            "Seconds between a live channel's last two keyframes (IVS: KeyframeInterval)",
            Some(&Unit::Seconds),
            &keyframes,
        )?;
        // (Series without labels.)
        let one = |value: f64| [(Vec::<(String, String)>::new(), value)];
        gauge_family(
            &mut encoder,
            "openivs_transcode_capacity_units",
            "Transcoding capacity, in ladder units (--transcode-capacity)",
            None,
            &one(self.transcoding.capacity()),
        )?;
        gauge_family(
            &mut encoder,
            "openivs_transcode_in_use_units",
            "Transcoding capacity in use, in ladder units",
            None,
            &one(self.transcoding.in_use()),
        )?;
        gauge_family(
            &mut encoder,
            "openivs_transcoder_processes",
            "Transcoder processes running",
            None,
            &one(self.transcoding.processes() as f64),
        )?;
        gauge_family(
            &mut encoder,
            "openivs_recording_spool",
            "Bytes of recordings waiting in the spool for the S3 store",
            Some(&Unit::Bytes),
            &one(self.buckets.spool_bytes() as f64),
        )?;
        Ok(())
    }
}

/// A registry of the process's families and the scrape of `state`.
pub fn registry(state: LiveState) -> Registry {
    let metrics = global();
    let mut registry = Registry::default();
    registry.register(
        "openivs_api_requests",
        "IVS API requests answered, by operation and HTTP status",
        metrics.api_requests.clone(),
    );
    registry.register_with_unit(
        "openivs_api_request_duration",
        "Time to answer an IVS API request, by operation",
        Unit::Seconds,
        metrics.api_duration.clone(),
    );
    registry.register(
        "openivs_playback_requests",
        "Playback requests answered, by kind (multivariant, playlist, init, part, segment) and HTTP status",
        metrics.playback_requests.clone(),
    );
    registry.register_with_unit(
        "openivs_playback_sent",
        "Bytes of playlists and media sent to viewers",
        Unit::Bytes,
        metrics.playback_bytes.clone(),
    );
    registry.register(
        "openivs_cluster_pulls",
        "Playlists and media this node fetched from the node that ingests their stream",
        metrics.cluster_pulls.clone(),
    );
    registry.register(
        "openivs_cluster_origin_requests",
        "Playback requests other nodes made of this node, by kind (multivariant, playlist, init, part, segment)",
        metrics.cluster_origin_requests.clone(),
    );
    registry.register_with_unit(
        "openivs_playback_blocking_reload_wait",
        "Time a blocking playlist reload (LL-HLS _HLS_msn) waited for its part",
        Unit::Seconds,
        metrics.blocking_reload_wait.clone(),
    );
    registry.register_with_unit(
        "openivs_store_operation_duration",
        "Time a store operation took, by operation",
        Unit::Seconds,
        metrics.store_duration.clone(),
    );
    registry.register(
        "openivs_event_deliveries",
        "Events delivered to targets, and delivery attempts to retry, by outcome (delivered, retried)",
        metrics.event_deliveries.clone(),
    );
    registry.register(
        "openivs_recording_uploads",
        "Recording objects written to their store, by outcome (uploaded, retried, failed)",
        metrics.recording_uploads.clone(),
    );
    registry.register_collector(Box::new(state));
    registry
}

/// The registry's text.
pub fn render(registry: &Registry) -> String {
    let mut text = String::with_capacity(16 * 1024);
    // (Writing to a String cannot fail.)
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}
