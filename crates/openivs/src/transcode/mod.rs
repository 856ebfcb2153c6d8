//! Adaptive bitrate: STANDARD and ADVANCED channels' streams are transcoded into IVS's rendition
//! ladders ([`ladder`]) by one transcoder process per live stream ([`Transcoder`]; Debian's
//! ffmpeg in [`ffmpeg`]), fed the source as FLV ([`input`]) and read back as one MPEG-TS whose
//! renditions go into hubs of their own ([`output`]), which the playback packagers follow
//! (segments cut on the source's cuts: see `playback::packager::Cut`).
//!
//! [`run`] supervises a stream's transcoder: it learns the input's picture and frame rate,
//! starts the renditions' packagers, restarts a process that exits (noted in the session's
//! events), and keeps ingest and the source rendition from ever waiting on it: frames the
//! process cannot take in time are dropped (it resumes at the next keyframe) and, while it is
//! behind real time, new multivariant playlists leave its renditions out.
//!
//! Capacity is counted in ladder units ([`cost`]: a STANDARD 720p30 ladder is 1), reserved when
//! a stream's picture is known ([`Transcoding::reserve`]), and a publish that would pass
//! `--transcode-capacity` is refused as IVS refuses it.

pub mod ffmpeg;
pub mod input;
pub mod ladder;
pub mod output;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

use crate::live::LiveStream;
use crate::live::hub::{Hub, MediaFrame, TrackKind};
use crate::playback::Playback;
use crate::playback::packager::ChannelPlayback;
use ladder::{ChannelType, Input, Preset, Rendition, Video};

/// IVS's reason when a publish would pass the transcoding capacity.
pub const CAPACITY_EXCEEDED: &str = "Transcode capacity exceeded. Please try again.";

/// Makes a ladder's encoded renditions of a stream.
pub trait Transcoder: Send + Sync {
    /// Starts one process for `ladder` (an input of `input_frame_rate`): FLV goes into its
    /// input, one MPEG-TS with every encoded rendition comes out of its output.
    fn start(&self, ladder: &[Rendition], input_frame_rate: f64) -> std::io::Result<Process>;
}

/// A running transcoder process.
pub struct Process {
    pub input: Box<dyn AsyncWrite + Send + Unpin>,
    pub output: Box<dyn AsyncRead + Send + Unpin>,
    /// What it says on stderr (logged).
    pub diagnostics: Box<dyn AsyncRead + Send + Unpin>,
    pub outputs: ffmpeg::Outputs,
    pub child: tokio::process::Child,
}

/// What a ladder costs, in units of a STANDARD 720p30 ladder: decoding the input (weighted by
/// half, as measured) and encoding every rung, by pixels per second.
pub fn cost(ladder: &[Rendition], input: Input) -> f64 {
    const UNIT: f64 = 1280.0 * 720.0 * 30.0 * 0.5 + (852.0 * 480.0 + 640.0 * 360.0 + 284.0 * 160.0) * 30.0;
    let encoded: f64 = ladder
        .iter()
        .map(|r| match r.video {
            Some(Video::Encoded { width, height, frame_rate, .. }) => {
                f64::from(width) * f64::from(height) * f64::from(frame_rate)
            }
            _ => 0.0,
        })
        .sum();
    if encoded == 0.0 && ladder.iter().all(|r| r.video == Some(Video::Source)) {
        return 0.0;
    }
    let decode = f64::from(input.width) * f64::from(input.height) * input.frame_rate.clamp(1.0, 120.0) * 0.5;
    (decode + encoded) / UNIT
}

/// The server's transcoding: its transcoder (none without ffmpeg) and capacity.
pub struct Transcoding {
    transcoder: Option<Arc<dyn Transcoder>>,
    /// Why there is no transcoder, when one was wanted (`--ffmpeg none` turns it off: then
    /// nothing is missing, and sessions say nothing of it).
    pub unavailable: Option<String>,
    capacity: f64,
    in_use: Mutex<f64>,
    /// Transcoder processes running (the metrics').
    processes: std::sync::atomic::AtomicUsize,
}

/// Counts a running transcoder process while it lives.
struct Running<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Running<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Running<'a> {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running(count)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Transcoding {
    pub fn new(transcoder: Result<Arc<dyn Transcoder>, String>, capacity: f64) -> Arc<Transcoding> {
        let (transcoder, unavailable) = match transcoder {
            Ok(transcoder) => (Some(transcoder), None),
            Err(why) => (None, Some(why)),
        };
        Arc::new(Transcoding {
            transcoder,
            unavailable,
            capacity,
            in_use: Mutex::new(0.0),
            processes: Default::default(),
        })
    }

    /// Finds ffmpeg (`program`; `none` turns transcoding off) and says what it found.
    pub async fn with_ffmpeg(program: &str, capacity: f64) -> Arc<Transcoding> {
        if program == "none" {
            tracing::warn!(
                "transcoding is off (--ffmpeg none): STANDARD and ADVANCED channels serve their source only"
            );
            return Arc::new(Transcoding {
                transcoder: None,
                unavailable: None,
                capacity,
                in_use: Mutex::new(0.0),
                processes: Default::default(),
            });
        }
        let ffmpeg = ffmpeg::Ffmpeg { program: program.into() };
        match ffmpeg.version().await {
            Ok(version) => {
                tracing::info!("transcoding with {version}; capacity {capacity} ladder units");
                Transcoding::new(Ok(Arc::new(ffmpeg)), capacity)
            }
            Err(why) => {
                tracing::warn!(
                    "no ffmpeg ({why}): STANDARD and ADVANCED channels serve their source only (install ffmpeg for their renditions)"
                );
                Transcoding::new(Err(format!("no ffmpeg: {why}")), capacity)
            }
        }
    }

    pub fn available(&self) -> bool {
        self.transcoder.is_some()
    }

    /// Ladder units the server has.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// Transcoder processes running.
    pub fn processes(&self) -> usize {
        self.processes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ladder units in use.
    pub fn in_use(&self) -> f64 {
        *self.in_use.lock().expect("capacity lock")
    }

    /// Reserves `units` of capacity until the reservation is dropped; `None` when they are not
    /// free.
    pub fn reserve(self: &Arc<Self>, units: f64) -> Option<Reservation> {
        let mut in_use = self.in_use.lock().expect("capacity lock");
        // (A little slack for rounding: four 1-unit ladders fit a capacity of 4.)
        if *in_use + units > self.capacity + 1e-6 {
            return None;
        }
        *in_use += units;
        Some(Reservation { transcoding: self.clone(), units })
    }
}

/// Capacity held by one stream's transcoding.
pub struct Reservation {
    transcoding: Arc<Transcoding>,
    units: f64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut in_use = self.transcoding.in_use.lock().expect("capacity lock");
        *in_use = (*in_use - self.units).max(0.0);
    }
}

/// A ladder would pass the transcoding capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverCapacity;

/// What a stream is transcoded for: its ladder, and the capacity reserved for it.
pub struct Plan {
    pub ladder: Vec<Rendition>,
    pub input: Input,
    pub reservation: Reservation,
}

impl Transcoding {
    /// Admission: the ladder of a stream of `channel_type` and `preset` whose picture is
    /// `input`, with its capacity reserved. `Ok(None)`: nothing to transcode (BASIC, a ladder of
    /// the source alone, or no transcoder); `Err`: over capacity.
    pub fn plan(
        self: &Arc<Self>,
        channel_type: &str,
        preset: &str,
        input: Input,
    ) -> Result<Option<Plan>, OverCapacity> {
        if !self.available() {
            return Ok(None);
        }
        let ladder = ladder::ladder(ChannelType::parse(channel_type), Preset::parse(preset), input);
        if ladder.iter().all(|r| r.video == Some(Video::Source)) {
            return Ok(None);
        }
        let units = cost(&ladder, input);
        let reservation = self.reserve(units).ok_or(OverCapacity)?;
        Ok(Some(Plan { ladder, input, reservation }))
    }
}

/// Something the transcoding of a stream records in its session's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub name: &'static str,
    pub code: Option<&'static str>,
}

/// Frames (FLV bytes) queued for the process at most: about two seconds of a stream.
const INPUT_QUEUE: usize = 128;
/// Behind real time by more than this, the renditions leave new multivariant playlists.
const BEHIND: Duration = Duration::from_secs(3);
/// Back within this, they return.
const CAUGHT_UP: Duration = Duration::from_secs(1);
/// Restarts allowed within [`RESTART_WINDOW`] before the transcoder is given up for the stream.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long the process may take to finish once the stream ended.
const DRAIN: Duration = Duration::from_secs(3);

/// Transcodes one live stream until it ends: starts its renditions' packagers, and runs and
/// restarts the transcoder process; what happens is noted for the stream's session.
pub async fn run(
    transcoding: Arc<Transcoding>,
    plan: Plan,
    live: LiveStream,
    playback: Arc<Playback>,
    source: Arc<ChannelPlayback>,
) {
    let Some(transcoder) = transcoding.transcoder.clone() else { return };
    // Released as soon as the stream ends (a new publish may need it while this one drains).
    let mut reservation = Some(plan.reservation);
    let encoded: Vec<&Rendition> = plan.ladder.iter().filter(|r| r.video != Some(Video::Source)).collect();
    let hubs: HashMap<String, Arc<Hub>> = encoded.iter().map(|r| (r.name.clone(), Arc::new(Hub::new()))).collect();
    source.renditions_expected.store(encoded.len(), std::sync::atomic::Ordering::SeqCst);
    playback.start_renditions(
        &live,
        &source,
        encoded.iter().map(|r| (r.name.clone(), r.video.is_none(), hubs[&r.name].clone())).collect(),
    );
    let videos = encoded.iter().filter_map(|r| match r.video {
        Some(Video::Encoded { width, height, .. }) => Some((r.name.as_str(), width, height, &hubs[&r.name])),
        _ => None,
    });
    crate::recording::record_renditions(&live, videos);
    let mut subscription = live.hub.subscribe();
    let mut ended = live.hub.ended();
    let arrivals = Arc::new(input::Arrivals::default());
    let mut flv = input::FlvInput::new(arrivals.clone());
    let mut restarts: Vec<Instant> = Vec::new();
    let set_listed = |listed: bool| source.renditions_listed.store(listed, std::sync::atomic::Ordering::SeqCst);
    // (Kept across restarts: renditions left out while behind come back only once a process
    // keeps up again.)
    let mut behind = false;
    'processes: loop {
        let process = match transcoder.start(&plan.ladder, plan.input.frame_rate) {
            Ok(process) => process,
            Err(error) => {
                tracing::error!("transcode: cannot start for {}: {error}", live.channel_arn);
                live.note_transcoding(Notice { name: "Transcode Failure", code: Some("TranscoderUnavailable") });
                set_listed(false);
                break;
            }
        };
        let Process { input, mut output, diagnostics, outputs, mut child } = process;
        // (Until the process has been waited for, at the end of this iteration.)
        let _running = Running::new(&transcoding.processes);
        tokio::spawn(log_diagnostics(diagnostics, live.stream_id.clone()));
        let (queue, queued) = mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
        let writer = tokio::spawn(write_input(input, queued));
        let mut queue = Some(queue);
        let mut feeds = output::RenditionFeeds::new(outputs, hubs.clone(), arrivals.clone());
        flv.restart(true);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_output = Instant::now();
        let mut fed = false;
        let exited = loop {
            tokio::select! {
                received = subscription.frames.recv(), if queue.is_some() => match received {
                    Ok(frame) => {
                        let Some(sender) = &queue else { continue };
                        if !feed(&mut flv, &subscription, &frame, sender) {
                            // The process is not keeping up: drop frames, resume at a keyframe.
                            flv.restart(false);
                            if !behind {
                                behind = true;
                                fell_behind(&live, &set_listed);
                            }
                        }
                        fed = true;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => flv.restart(false),
                    Err(broadcast::error::RecvError::Closed) => queue = None,
                },
                read = output.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break true,
                    Ok(n) => {
                        feeds.push(&buffer[..n]);
                        last_output = Instant::now();
                    }
                },
                _ = async { ended.wait_for(|ended| *ended).await.is_ok() }, if queue.is_some() => {
                    // No more input (the queue closes with it): the process finishes what it
                    // has, then exits.
                    drop(queue.take());
                    drop(reservation.take());
                    let drained = tokio::time::timeout(DRAIN, async {
                        loop {
                            match output.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => feeds.push(&buffer[..n]),
                            }
                        }
                    })
                    .await;
                    if drained.is_err() {
                        let _ = child.start_kill();
                    }
                    break false;
                }
                _ = tick.tick() => {
                    let silent = fed && last_output.elapsed() > BEHIND;
                    if !behind && (feeds.lag > BEHIND || silent) {
                        behind = true;
                        fell_behind(&live, &set_listed);
                    } else if behind && feeds.video_frames > 0 && feeds.lag < CAUGHT_UP && !silent {
                        behind = false;
                        set_listed(true);
                        live.note_transcoding(Notice { name: "Transcode Caught Up", code: None });
                    }
                }
            }
        };
        writer.abort();
        let status = child.wait().await;
        if !exited || *ended.borrow() {
            break 'processes;
        }
        tracing::warn!("transcode: the transcoder of {} exited ({status:?}); restarting", live.channel_arn);
        live.note_transcoding(Notice { name: "Transcode Restart", code: Some("TranscoderExited") });
        let now = Instant::now();
        restarts.retain(|at| now.duration_since(*at) < RESTART_WINDOW);
        restarts.push(now);
        if restarts.len() > MAX_RESTARTS {
            tracing::error!("transcode: giving up on {} after {MAX_RESTARTS} restarts in a minute", live.channel_arn);
            live.note_transcoding(Notice { name: "Transcode Failure", code: Some("TranscoderExited") });
            set_listed(false);
            break;
        }
        // (A little back-off, in case the input itself makes it fail.)
        tokio::time::sleep(Duration::from_millis(200 * restarts.len() as u64)).await;
    }
    for hub in hubs.values() {
        hub.end();
    }
    drop(reservation);
}

/// The transcoder fell behind real time: its renditions leave new playlists, and the session
/// says so.
fn fell_behind(live: &LiveStream, set_listed: &impl Fn(bool)) {
    set_listed(false);
    tracing::warn!("transcode: {} is behind real time; its renditions leave new playlists", live.channel_arn);
    live.note_transcoding(Notice { name: "Transcode Behind", code: None });
}

/// Queues `frame` for the process; false when its queue is full.
fn feed(
    flv: &mut input::FlvInput,
    subscription: &crate::live::hub::Subscription,
    frame: &MediaFrame,
    queue: &mpsc::Sender<Vec<u8>>,
) -> bool {
    let video = subscription.video.borrow().clone();
    let audio = subscription.audio.borrow().clone();
    let mut bytes = Vec::with_capacity(frame.data.len() + 64);
    flv.frame(frame, video.as_ref(), audio.as_ref(), &mut bytes);
    if bytes.is_empty() {
        return true;
    }
    // (A dropped video frame breaks decoding until the next keyframe; a dropped audio frame does not.)
    match queue.try_send(bytes) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => frame.kind == TrackKind::Audio,
        Err(mpsc::error::TrySendError::Closed(_)) => true,
    }
}

async fn write_input(mut input: Box<dyn AsyncWrite + Send + Unpin>, mut queued: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = queued.recv().await {
        if input.write_all(&bytes).await.is_err() {
            return;
        }
    }
    // The queue closed: the stream is over, and closing the input tells the process.
    let _ = input.shutdown().await;
}

async fn log_diagnostics(mut diagnostics: Box<dyn AsyncRead + Send + Unpin>, stream_id: String) {
    let mut buffer = vec![0u8; 4096];
    while let Ok(n) = diagnostics.read(&mut buffer).await {
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&buffer[..n]);
        for line in text.lines().filter(|l| !l.trim().is_empty()).take(8) {
            tracing::warn!("transcode {stream_id}: {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ladder::ladder;
    use super::*;

    #[test]
    fn a_standard_720p30_ladder_is_one_unit_and_capacity_is_kept() {
        let p720 = Input { width: 1280, height: 720, frame_rate: 30.0 };
        let standard = ladder(ChannelType::Standard, Preset::HigherBandwidth, p720);
        assert!((cost(&standard, p720) - 1.0).abs() < 0.01);
        let p1080 = Input { width: 1920, height: 1080, frame_rate: 30.0 };
        let big = cost(&ladder(ChannelType::Standard, Preset::HigherBandwidth, p1080), p1080);
        assert!((2.0..2.6).contains(&big), "{big}");
        let basic = ladder(ChannelType::Basic, Preset::HigherBandwidth, p720);
        assert_eq!(cost(&basic, p720), 0.0);

        struct Nothing;
        impl Transcoder for Nothing {
            fn start(&self, _: &[Rendition], _: f64) -> std::io::Result<Process> {
                Err(std::io::Error::other("not here"))
            }
        }
        let transcoding = Transcoding::new(Ok(Arc::new(Nothing)), 4.0);
        let held: Vec<Plan> =
            (0..4).map(|_| transcoding.plan("STANDARD", "", p720).unwrap().expect("a ladder")).collect();
        assert!(transcoding.plan("STANDARD", "", p720).is_err(), "a fifth is over capacity");
        assert!(transcoding.plan("BASIC", "", p720).unwrap().is_none(), "BASIC needs nothing");
        drop(held);
        assert_eq!(transcoding.in_use(), 0.0);
        assert!(transcoding.plan("ADVANCED_SD", "CONSTRAINED_BANDWIDTH_DELIVERY", p720).unwrap().is_some());
        let none = Transcoding::new(Err("no ffmpeg".into()), 4.0);
        assert!(none.plan("STANDARD", "", p720).unwrap().is_none(), "without a transcoder, the source alone");
    }
}
