//! SRT ingest with a real broadcaster: ffmpeg (libsrt) publishes the test pattern in MPEG-TS to
//! `srt://{srt.endpoint}?streamid={streamKey}&passphrase={srt.passphrase}`, as IVS documents it.
//! The stream must go live and be described and played as an RTMPS stream is; wrong keys and
//! passphrases, unencrypted callers (unless the channel takes insecure ingest) and second
//! publishers on any protocol are refused in the handshake; a link that loses and reorders
//! packets still gives complete segments.
//!
//! ffmpeg and libsrt must be installed (`.ci/run` installs them); these tests fail, not skip,
//! without them.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{ChannelLatencyMode, ChannelType, StreamState};

use crate::assert_error;
use crate::harness::{Server, raw_request, rtmps_url};
use crate::ingest::{Publisher, pattern_720p, wait_live, wait_offline};
use crate::playback::path_of;

/// A channel's SRT publish details.
struct SrtChannel {
    arn: String,
    key: String,
    endpoint: String,
    passphrase: String,
    playback_url: String,
    rtmps_url: String,
}

impl SrtChannel {
    fn url(&self, stream_id: &str, passphrase: Option<&str>) -> String {
        srt_url(&self.endpoint, stream_id, passphrase)
    }

    /// The URL IVS gives a broadcaster.
    fn publish_url(&self) -> String {
        self.url(&self.key, Some(&self.passphrase))
    }
}

fn srt_url(endpoint: &str, stream_id: &str, passphrase: Option<&str>) -> String {
    let mut url = format!("srt://{endpoint}?streamid={stream_id}");
    if let Some(passphrase) = passphrase {
        url.push_str(&format!("&passphrase={passphrase}"));
    }
    url
}

async fn srt_channel(server: &Server, insecure_ingest: bool, latency: ChannelLatencyMode) -> SrtChannel {
    assert!(
        !server.srt_address.is_empty(),
        "the server does not listen for SRT (libsrt missing? Debian: apt-get install libsrt1.5-gnutls); log:\n{}",
        server.log_text()
    );
    let out = server
        .client()
        .create_channel()
        .r#type(ChannelType::BasicChannelType)
        .latency_mode(latency)
        .insecure_ingest(insecure_ingest)
        .send()
        .await
        .unwrap();
    let channel = out.channel().unwrap();
    let srt = channel.srt().expect("a channel has SRT details");
    SrtChannel {
        arn: channel.arn().unwrap().to_owned(),
        key: out.stream_key().unwrap().value().unwrap().to_owned(),
        endpoint: srt.endpoint().unwrap().to_owned(),
        passphrase: srt.passphrase().unwrap().to_owned(),
        playback_url: channel.playback_url().unwrap().to_owned(),
        rtmps_url: rtmps_url(&out),
    }
}

/// Asserts ffmpeg is refused (exits with an error) and the channel got no stream session.
async fn assert_refused(server: &Server, channel: &SrtChannel, url: &str, what: &str) {
    let mut publisher = Publisher::start_srt(url, pattern_720p());
    let (status, _) = publisher.exited_within(Duration::from_secs(15)).unwrap_or_else(|| panic!("{what}: not refused"));
    assert!(!status.success(), "{what}");
    let sessions = server.client().list_stream_sessions().channel_arn(&channel.arn).send().await.unwrap();
    assert!(sessions.stream_sessions().is_empty(), "{what}: a session was opened");
}

/// ffprobe's reading of a URL's video stream: (codec, width, height).
fn probe_video(url: &str) -> (String, u64, u64) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height"])
        .args(["-of", "json", url])
        .output()
        .expect("ffprobe must be installed");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let stream = &json["streams"][0];
    (
        stream["codec_name"].as_str().unwrap_or_default().to_owned(),
        stream["width"].as_u64().unwrap_or(0),
        stream["height"].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn srt_with_the_passphrase_goes_live_and_plays_like_rtmps() {
    let server = Server::start();
    let client = server.client();
    let channel = srt_channel(&server, false, ChannelLatencyMode::LowLatency).await;
    // IVS's form: the SRT endpoint, the stream key as stream id, the channel's passphrase.
    assert!(channel.endpoint.starts_with("127.0.0.1"), "{}", channel.endpoint);
    assert!(channel.passphrase.len() >= 10 && channel.passphrase.len() <= 79);
    let mut publisher = Publisher::start_srt(&channel.publish_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    let stream = client.get_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(stream.stream().unwrap().state(), Some(&StreamState::StreamLive));
    let stream_id = stream.stream().unwrap().stream_id().unwrap().to_owned();

    // Playback, as any stream's.
    let playback_url = format!("{}{}", server.endpoint, path_of(&channel.playback_url));
    let deadline = Instant::now() + Duration::from_secs(15);
    let video = loop {
        let video = probe_video(&playback_url);
        if video.1 > 0 || Instant::now() > deadline {
            break video;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(video, ("h264".to_owned(), 1280, 720), "ffprobe of {playback_url}");

    // The session describes what came in (first recorded after 4 s of media).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let session = client.get_stream_session().channel_arn(&channel.arn).send().await.unwrap();
    let session = session.stream_session().unwrap();
    assert_eq!(session.stream_id(), Some(stream_id.as_str()));
    let configuration = session.ingest_configuration().expect("an ingest configuration");
    let video = configuration.video().unwrap();
    assert_eq!(video.codec(), Some("avc1.64001F"), "{video:?}");
    assert_eq!((video.video_width(), video.video_height()), (1280, 720));
    assert!((video.target_framerate() - 30).abs() <= 1, "{video:?}");
    assert!((video.target_bitrate() as f64 - 2_500_000.0).abs() < 2_500_000.0 * 0.35, "{video:?}");
    let audio = configuration.audio().unwrap();
    assert_eq!(audio.codec(), Some("mp4a.40.2"));
    assert_eq!((audio.sample_rate(), audio.channels()), (48000, 2));
    let names: Vec<&str> = session.truncated_events().iter().filter_map(|e| e.name()).collect();
    assert_eq!(names, ["Stream Start", "Session Created"], "newest first");

    // StopStream disconnects the SRT broadcaster too.
    client.stop_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert!(publisher.exited_within(Duration::from_secs(15)).is_some(), "ffmpeg kept sending after StopStream");
    wait_offline(&server, &channel.arn, Duration::from_secs(5)).await;
    // Neither secret reaches the log.
    let log = server.log_text();
    assert!(!log.contains(&channel.key) && !log.contains(&channel.passphrase));
}

#[tokio::test]
async fn srt_refuses_wrong_keys_passphrases_and_second_publishers() {
    let server = Server::start();
    let client = server.client();
    let channel = srt_channel(&server, false, ChannelLatencyMode::LowLatency).await;
    let other = srt_channel(&server, false, ChannelLatencyMode::LowLatency).await;
    assert_refused(&server, &channel, &channel.url(&channel.key, Some("a-wrong-passphrase")), "wrong passphrase").await;
    assert_refused(&server, &channel, &channel.url(&channel.key, Some(&other.passphrase)), "another channel's").await;
    assert_refused(&server, &channel, &channel.url(&channel.key, None), "no passphrase (encryption required)").await;
    let wrong_key = format!("{}x", channel.key);
    assert_refused(&server, &channel, &channel.url(&wrong_key, Some(&channel.passphrase)), "unknown key").await;

    // One publisher per channel, whichever the protocols: RTMPS first, then SRT...
    let mut rtmps = Publisher::start(&channel.rtmps_url, pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    let mut second = Publisher::start_srt(&channel.publish_url(), pattern_720p());
    let (status, _) = second.exited_within(Duration::from_secs(15)).expect("a second publisher over SRT");
    assert!(!status.success());
    assert!(rtmps.exited_within(Duration::from_millis(200)).is_none(), "the first publisher is unaffected");
    rtmps.kill();
    wait_offline(&server, &channel.arn, Duration::from_secs(10)).await;
    // ...and SRT first, then RTMPS.
    let mut srt = Publisher::start_srt(&channel.publish_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    let mut second = Publisher::start(&channel.rtmps_url, pattern_720p());
    let (status, _) = second.exited_within(Duration::from_secs(15)).expect("a second publisher over RTMPS");
    assert!(!status.success());
    assert!(srt.exited_within(Duration::from_millis(200)).is_none(), "the first publisher is unaffected");
    let sessions = client.list_stream_sessions().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(sessions.stream_sessions().len(), 2, "one session per accepted publish");
    // A live channel is still not deletable, whichever protocol it came by.
    assert_error!(client.delete_channel().arn(&channel.arn).send(), "ConflictException", 409);
}

#[tokio::test]
async fn insecure_ingest_takes_unencrypted_srt() {
    let server = Server::start();
    let channel = srt_channel(&server, true, ChannelLatencyMode::LowLatency).await;
    assert_refused(&server, &channel, &channel.url(&channel.key, Some("a-wrong-passphrase")), "wrong passphrase").await;
    // (A caller without a passphrase must allow an unencrypted connection: libsrt callers
    // enforce encryption by default when the listener has a passphrase.)
    let unencrypted = format!("{}&enforced_encryption=0", channel.url(&channel.key, None));
    let mut publisher = Publisher::start_srt(&unencrypted, pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    assert!(publisher.exited_within(Duration::from_millis(500)).is_none());
    publisher.kill();
    wait_offline(&server, &channel.arn, Duration::from_secs(40)).await;
    // The right passphrase works there too.
    let _publisher = Publisher::start_srt(&channel.publish_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
}

/// A UDP relay between the broadcaster and the server that drops one packet in `drop_one_in`
/// from the broadcaster, swaps the order of every `swap_every`-th pair, and delays every packet
/// by [`LossyLink::DELAY`] each way: a poor, distant network (what `tc netem` would make,
/// without needing root and a network namespace).
struct LossyLink {
    address: String,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Sends each packet given to it `delay` after it was given, in order.
fn delayed_sender(delay: Duration, send: impl Fn(&[u8]) + Send + 'static) -> std::sync::mpsc::Sender<Vec<u8>> {
    let (queue, packets) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        for (due, packet) in packets {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            send(&packet);
        }
    });
    let (input, given) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for packet in given {
            if queue.send((Instant::now() + delay, packet)).is_err() {
                break;
            }
        }
    });
    input
}

impl LossyLink {
    const DELAY: Duration = Duration::from_millis(50);

    fn start(server_address: &str, drop_one_in: u64, swap_every: u64) -> LossyLink {
        let outside = UdpSocket::bind("127.0.0.1:0").unwrap();
        let inside = UdpSocket::bind("127.0.0.1:0").unwrap();
        inside.connect(server_address).unwrap();
        outside.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        inside.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let address = outside.local_addr().unwrap().to_string();
        let (dropped, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let caller = Arc::new(std::sync::Mutex::new(None));
        let (outside, inside) = (Arc::new(outside), Arc::new(inside));
        {
            // Broadcaster to server: lossy.
            let (outside, inside, caller, dropped, stop) =
                (outside.clone(), inside.clone(), caller.clone(), dropped.clone(), stop.clone());
            let to_server = delayed_sender(Self::DELAY, move |packet| {
                let _ = inside.send(packet);
            });
            std::thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                let mut held: Option<Vec<u8>> = None;
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, from)) = outside.recv_from(&mut buffer) else { continue };
                    *caller.lock().unwrap() = Some(from);
                    count += 1;
                    // (The handshake goes through untouched: its packets are the first few.)
                    if count > 20 && count.is_multiple_of(drop_one_in) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if count > 20 && count.is_multiple_of(swap_every) && held.is_none() {
                        held = Some(buffer[..length].to_vec());
                        continue;
                    }
                    let _ = to_server.send(buffer[..length].to_vec());
                    if let Some(packet) = held.take() {
                        let _ = to_server.send(packet);
                    }
                }
            });
        }
        {
            // Server to broadcaster (acknowledgements, loss reports): delayed, not lost.
            let (outside, inside, stop) = (outside.clone(), inside.clone(), stop.clone());
            let to_caller = delayed_sender(Self::DELAY, move |packet| {
                if let Some(to) = *caller.lock().unwrap() {
                    let _ = outside.send_to(packet, to);
                }
            });
            std::thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(length) = inside.recv(&mut buffer) else { continue };
                    let _ = to_caller.send(buffer[..length].to_vec());
                }
            });
        }
        LossyLink { address, dropped, stop }
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How many video frames ffmpeg decodes from a URL, and what it complained of.
fn decode(url: &str) -> (u64, String) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", url])
        .output()
        .expect("ffprobe must be installed");
    // (MPEG-TS lists the stream under its program too: the first count is the stream's.)
    let frames = String::from_utf8_lossy(&output.stdout).lines().find_map(|line| line.trim().parse().ok()).unwrap_or(0);
    (frames, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn a_lossy_link_still_gives_complete_segments() {
    let server = Server::start();
    let channel = srt_channel(&server, false, ChannelLatencyMode::NormalLatency).await;
    // 5 % of packets lost, 1 in 25 reordered, 50 ms each way. The broadcaster sets SRT's latency
    // window to 4 round trips, as SRT's guidance asks for a lossy link (ffmpeg: microseconds).
    let link = LossyLink::start(&server.srt_address, 20, 25);
    let endpoint = link.address.clone();
    let url = format!("{}&latency=400000", srt_url(&endpoint, &channel.key, Some(&channel.passphrase)));
    let _publisher = Publisher::start_srt(&url, pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(20)).await;
    // Segments that began after the start: each complete, every frame decodable.
    let multivariant = raw_request(&server, "GET", &path_of(&channel.playback_url), &[], "");
    let media = multivariant.body.lines().find(|l| l.starts_with('/')).expect("a variant").to_owned();
    let deadline = Instant::now() + Duration::from_secs(40);
    let segments = loop {
        let playlist = raw_request(&server, "GET", &media, &[], "").body;
        let mut segments = Vec::new();
        let mut lines = playlist.lines();
        while let Some(line) = lines.next() {
            if let Some(duration) = line.strip_prefix("#EXTINF:") {
                let duration: f64 = duration.trim_end_matches(',').split(',').next().unwrap().parse().unwrap();
                segments.push((duration, lines.next().unwrap().to_owned()));
            }
        }
        // (The first segment may begin mid-way; the next three are whole.)
        if segments.len() >= 4 || Instant::now() > deadline {
            break segments;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(segments.len() >= 4, "too few segments: {segments:?}");
    let base = media.rsplit_once('/').unwrap().0;
    for (duration, uri) in &segments[1..4] {
        let url = if uri.starts_with('/') {
            format!("{}{uri}", server.endpoint)
        } else {
            format!("{}{base}/{uri}", server.endpoint)
        };
        let (frames, complaints) = decode(&url);
        let expected = (duration * 30.0).round() as u64;
        assert!(frames.abs_diff(expected) <= 1, "{url}: {frames} frames in {duration} s ({complaints})");
        assert!(complaints.trim().is_empty(), "{url}: {complaints}");
    }
    assert!(link.dropped.load(Ordering::Relaxed) > 20, "the link lost packets");
}
