//! Live state: which channels are broadcasting right now ([`LiveRegistry`]), each with its stream
//! hub ([`hub`]), its measurements ([`stats`]) and its session record ([`session`]). Ingest adds
//! and removes streams here; the API reads it (GetStream, ListStreams, …) and asks it to stop a
//! stream (StopStream).

pub mod hub;
pub mod session;
pub mod slate;
pub mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use time::OffsetDateTime;
use tokio::sync::Notify;

use hub::Hub;
use stats::{Health, IngestStats};

/// IVS's PutMetadata rates: per channel, and per account (all its channels).
pub const METADATA_PER_CHANNEL: usize = 5;
pub const METADATA_PER_ACCOUNT: usize = 155;

/// A live stream, as the registry holds it. Cloning is cheap.
#[derive(Clone)]
pub struct LiveStream {
    pub channel_arn: String,
    pub account: String,
    pub region: String,
    pub stream_id: String,
    pub start_time: OffsetDateTime,
    pub hub: Arc<Hub>,
    pub stats: Arc<Mutex<IngestStats>>,
    /// Notified by StopStream; the ingest session ends the stream when it fires.
    pub stop: Arc<Notify>,
    /// Turns true once the session's end is recorded (or its recording has been handed to the
    /// background retry): StopStream waits for it, so a DeleteChannel right after succeeds.
    finished: Arc<tokio::sync::watch::Sender<bool>>,
    /// When the last PutMetadata calls arrived (IVS allows 5 per second per channel).
    metadata_calls: Arc<Mutex<RateWindow>>,
    /// Who holds the stream's session (see [`LiveStream::await_comeback`]).
    handover: Arc<Mutex<Handover>>,
    /// Notified when a publisher comes back to take the stream over.
    comeback: Arc<Notify>,
    /// The stream's transcoding has begun (it begins once, at the first picture configuration).
    pub transcoding: Arc<std::sync::atomic::AtomicBool>,
    /// The stream's recording, when it has one: which renditions it holds, where.
    pub recording: Arc<std::sync::OnceLock<Arc<crate::recording::renditions::RecordingRenditions>>>,
    /// What its transcoding has to say in the session's events, until the session takes it.
    transcode_notices: Arc<Mutex<Vec<crate::transcode::Notice>>>,
}

/// Who holds a live stream's session record: the connection publishing, or, after it dropped
/// on a channel with a failover slate, the task that waits for the publisher to come back and
/// ends the stream if it does not.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Holder {
    #[default]
    Publisher,
    AwaitingComeback,
    Ended,
}

#[derive(Default)]
struct Handover {
    holder: Holder,
    /// Where the waiting task sends the session once a publisher came back.
    session_to: Option<tokio::sync::oneshot::Sender<session::SessionRecorder>>,
}

/// Calls in the last second, for "N per second" limits.
#[derive(Debug, Default)]
pub struct RateWindow {
    calls: std::collections::VecDeque<Instant>,
}

impl RateWindow {
    /// Counts a call at `now`; false (and not counted) when `limit` calls are in the last second.
    pub fn admit(&mut self, now: Instant, limit: usize) -> bool {
        while self.calls.front().is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1)) {
            self.calls.pop_front();
        }
        if self.calls.len() >= limit {
            return false;
        }
        self.calls.push_back(now);
        true
    }
}

impl LiveStream {
    pub fn new(channel_arn: &str, account: &str, region: &str, stream_id: &str, now: OffsetDateTime) -> LiveStream {
        LiveStream {
            channel_arn: channel_arn.to_owned(),
            account: account.to_owned(),
            region: region.to_owned(),
            stream_id: stream_id.to_owned(),
            start_time: now,
            hub: Arc::new(Hub::new()),
            stats: Arc::new(Mutex::new(IngestStats::new(Instant::now()))),
            stop: Arc::new(Notify::new()),
            finished: Arc::new(tokio::sync::watch::Sender::new(false)),
            metadata_calls: Arc::default(),
            handover: Arc::default(),
            comeback: Arc::new(Notify::new()),
            transcoding: Arc::default(),
            recording: Arc::default(),
            transcode_notices: Arc::default(),
        }
    }

    /// Notes something about the stream's transcoding for its session's events.
    pub fn note_transcoding(&self, notice: crate::transcode::Notice) {
        let mut notices = self.transcode_notices.lock().expect("notices lock");
        // (Bounded: the session takes them every second.)
        if notices.len() < 64 {
            notices.push(notice);
        }
    }

    /// The notes of the stream's transcoding not yet in its session's events.
    pub fn take_transcode_notices(&self) -> Vec<crate::transcode::Notice> {
        std::mem::take(&mut *self.transcode_notices.lock().expect("notices lock"))
    }

    /// The publisher dropped and the failover slate holds the stream: a publisher of the same
    /// channel may take it over ([`LiveStream::take_over`]) until [`LiveStream::give_up_comeback`].
    pub fn await_comeback(&self) {
        self.handover.lock().expect("handover lock").holder = Holder::AwaitingComeback;
    }

    /// Whether the stream waits for its publisher to come back (a new publish takes it over).
    pub fn awaits_comeback(&self) -> bool {
        self.handover.lock().expect("handover lock").holder == Holder::AwaitingComeback
    }

    /// A publisher came back: it takes the stream over (once), and receives its session from
    /// the waiting task.
    pub fn take_over(&self) -> Option<tokio::sync::oneshot::Receiver<session::SessionRecorder>> {
        let mut handover = self.handover.lock().expect("handover lock");
        if handover.holder != Holder::AwaitingComeback {
            return None;
        }
        let (to, from) = tokio::sync::oneshot::channel();
        handover.holder = Holder::Publisher;
        handover.session_to = Some(to);
        self.comeback.notify_one();
        Some(from)
    }

    /// Waits until a publisher takes the stream over; then where to send the session.
    pub async fn comeback(&self) -> tokio::sync::oneshot::Sender<session::SessionRecorder> {
        loop {
            if let Some(to) = self.handover.lock().expect("handover lock").session_to.take() {
                return to;
            }
            self.comeback.notified().await;
        }
    }

    /// Nobody came back in time: the stream is to end. False if a publisher took it over first
    /// (then [`LiveStream::comeback`] is ready).
    pub fn give_up_comeback(&self) -> bool {
        let mut handover = self.handover.lock().expect("handover lock");
        if handover.holder == Holder::AwaitingComeback {
            handover.holder = Holder::Ended;
            return true;
        }
        false
    }

    /// Counts a timed-metadata message; false when it would exceed IVS's 5 per second per channel.
    pub fn admit_metadata(&self, now: Instant) -> bool {
        self.metadata_calls.lock().expect("metadata lock").admit(now, METADATA_PER_CHANNEL)
    }

    pub fn health(&self) -> Health {
        self.stats.lock().expect("stats lock").health(Instant::now())
    }

    /// Turns true once the stream's end is recorded (or handed to the background retry).
    pub fn finished(&self) -> tokio::sync::watch::Receiver<bool> {
        self.finished.subscribe()
    }

    /// Waits (at most `limit`) until the stream's end is recorded.
    pub async fn wait_finished(&self, limit: std::time::Duration) {
        let mut finished = self.finished.subscribe();
        let _ = tokio::time::timeout(limit, finished.wait_for(|done| *done)).await;
    }
}

#[derive(Default)]
pub struct LiveRegistry {
    streams: RwLock<HashMap<String, LiveStream>>,
    /// PutMetadata calls per account in the last second.
    metadata_by_account: Mutex<HashMap<String, RateWindow>>,
    /// Sessions started and not yet finished (they may outlive their entry after `stop`).
    active_sessions: std::sync::atomic::AtomicUsize,
}

impl LiveRegistry {
    pub fn new() -> LiveRegistry {
        LiveRegistry::default()
    }

    /// Counts a PutMetadata call of an account (`account_key`: the account and region); false
    /// when it would exceed 155 per second.
    pub fn admit_account_metadata(&self, account_key: &str, now: Instant) -> bool {
        let mut windows = self.metadata_by_account.lock().expect("metadata lock");
        // Windows of accounts quiet for a second hold nothing: drop them as they are met.
        windows.retain(|_, window| window.calls.back().is_some_and(|t| now.duration_since(*t).as_secs() < 1));
        windows.entry(account_key.to_owned()).or_default().admit(now, METADATA_PER_ACCOUNT)
    }

    /// Registers a stream; refused (returns false) while the channel already has one: one
    /// publisher per channel.
    pub fn try_start(&self, stream: LiveStream) -> bool {
        let mut streams = self.streams.write().expect("live registry lock");
        if streams.contains_key(&stream.channel_arn) {
            return false;
        }
        streams.insert(stream.channel_arn.clone(), stream);
        self.active_sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }

    /// Called once by each session that `try_start` accepted, when it has recorded its end:
    /// removes its stream (only that stream, not a successor).
    pub fn finish(&self, stream: &LiveStream) {
        self.active_sessions.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        let mut streams = self.streams.write().expect("live registry lock");
        if streams.get(&stream.channel_arn).is_some_and(|s| s.stream_id == stream.stream_id) {
            streams.remove(&stream.channel_arn);
        }
        stream.finished.send_replace(true);
    }

    pub fn is_live(&self, channel_arn: &str) -> bool {
        self.streams.read().expect("live registry lock").contains_key(channel_arn)
    }

    /// A publisher came back to a channel whose stream awaits it (its failover slate plays):
    /// the stream, and its session as the waiting task hands it over.
    pub fn take_over(
        &self,
        channel_arn: &str,
    ) -> Option<(LiveStream, tokio::sync::oneshot::Receiver<session::SessionRecorder>)> {
        let stream = self.stream(channel_arn)?;
        let session = stream.take_over()?;
        Some((stream, session))
    }

    pub fn stream(&self, channel_arn: &str) -> Option<LiveStream> {
        self.streams.read().expect("live registry lock").get(channel_arn).cloned()
    }

    /// The live streams of an account and region, oldest first.
    pub fn streams_of(&self, account: &str, region: &str) -> Vec<LiveStream> {
        let mut streams: Vec<LiveStream> = self
            .streams
            .read()
            .expect("live registry lock")
            .values()
            .filter(|s| s.account == account && s.region == region)
            .cloned()
            .collect();
        streams.sort_by(|a, b| (a.start_time, &a.stream_id).cmp(&(b.start_time, &b.stream_id)));
        streams
    }

    /// Every live stream (the metrics' scrape).
    pub fn all(&self) -> Vec<LiveStream> {
        self.streams.read().expect("live registry lock").values().cloned().collect()
    }

    /// Ends a channel's stream (StopStream): the channel is offline from now on, and its ingest
    /// session disconnects the publisher. The stopped stream, or `None` if it was not live.
    pub fn stop(&self, channel_arn: &str) -> Option<LiveStream> {
        let removed = self.streams.write().expect("live registry lock").remove(channel_arn);
        if let Some(stream) = &removed {
            stream.stop.notify_one();
        }
        removed
    }

    /// This node lost the stream's lease to another node (see [`crate::cluster::registry`]): the
    /// stream leaves the registry (if it is still this one) and its ingest stops.
    pub fn fence(&self, stream: &LiveStream) {
        let mut streams = self.streams.write().expect("live registry lock");
        if streams.get(&stream.channel_arn).is_some_and(|s| s.stream_id == stream.stream_id) {
            streams.remove(&stream.channel_arn);
        }
        stream.stop.notify_one();
    }

    /// Waits (up to `limit`) until every session has finished.
    pub async fn wait_finished(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.active_sessions.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stops every stream (server shutdown).
    pub fn stop_all(&self) {
        let streams: Vec<LiveStream> =
            self.streams.write().expect("live registry lock").drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.stop.notify_one();
        }
    }
}
