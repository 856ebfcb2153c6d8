//! Live ingest with a real broadcaster ([`crate::media`]): ffmpeg publishes a generated test pattern (lavfi
//! `testsrc2` + `sine`, encoded once with libx264 + AAC, then sent in real time with `-c copy`)
//! over RTMPS and RTMP, and the stream APIs must describe that stream.
//!
//! ffmpeg must be installed (`.ci/run` installs it); these tests fail, not skip, without it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{ChannelType, StreamHealth, StreamState};

use crate::assert_error;
use crate::harness::Server;
pub(crate) use crate::harness::{wait_live, wait_offline};

use crate::media::{PATTERN_720P_6M, PATTERN_1440P, encode};
pub(crate) use crate::media::{Publisher, pattern_720p, pattern_720p_short_gop, pattern_1080p, pattern_large_segments};

pub(crate) struct Channel {
    pub(crate) arn: String,
    pub(crate) key: String,
    pub(crate) ingest_endpoint: String,
}

pub(crate) async fn create_channel(server: &Server, channel_type: ChannelType, insecure: bool) -> Channel {
    let out = server.client().create_channel().r#type(channel_type).insecure_ingest(insecure).send().await.unwrap();
    let channel = out.channel().unwrap();
    Channel {
        arn: channel.arn().unwrap().to_owned(),
        key: out.stream_key().unwrap().value().unwrap().to_owned(),
        ingest_endpoint: channel.ingest_endpoint().unwrap().to_owned(),
    }
}

impl Channel {
    /// The URL a broadcaster types in: `rtmps://{ingestEndpoint}/app/{streamKey}`.
    pub(crate) fn rtmps_url(&self) -> String {
        format!("rtmps://{}/app/{}", self.ingest_endpoint, self.key)
    }
    pub(crate) fn rtmp_url(&self, server: &Server) -> String {
        format!("rtmp://{}/app/{}", server.rtmp_address, self.key)
    }
}

/// The id of a live channel's stream (GetStream).
pub(crate) async fn live_stream_id(server: &Server, arn: &str) -> String {
    let out = server.client().get_stream().channel_arn(arn).send().await.unwrap();
    out.stream().unwrap().stream_id().unwrap().to_owned()
}

fn event_names(session: &aws_sdk_ivs::types::StreamSession) -> Vec<String> {
    session.truncated_events().iter().map(|e| e.name().unwrap_or("").to_owned()).collect()
}

fn within(value: i64, expected: f64, tolerance: f64) -> bool {
    (value as f64 - expected).abs() <= expected * tolerance
}

#[tokio::test]
async fn rtmps_publish_is_described_by_every_stream_api() {
    let server = Server::start();
    let client = server.client();
    let channel = create_channel(&server, ChannelType::StandardChannelType, false).await;
    let mut publisher = Publisher::start(&channel.rtmps_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;

    let stream = client.get_stream().channel_arn(&channel.arn).send().await.unwrap();
    let stream = stream.stream().unwrap();
    let stream_id = stream.stream_id().unwrap().to_owned();
    assert_eq!(stream_id.len(), 26);
    assert!(stream_id.starts_with("st-") && stream_id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(stream.state(), Some(&StreamState::StreamLive));
    assert_eq!(stream.channel_arn(), Some(channel.arn.as_str()));
    assert!(stream.playback_url().unwrap().ends_with(".m3u8"));
    assert_eq!(stream.viewer_count(), 0);
    assert!(stream.start_time().is_some());

    // Let measurements settle (the ingest configuration is first recorded after 4 s of media).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let stream = client.get_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(stream.stream().unwrap().health(), Some(&StreamHealth::StreamHealthy));
    let listed = client.list_streams().send().await.unwrap();
    assert_eq!(listed.streams().len(), 1);
    assert_eq!(listed.streams()[0].stream_id(), Some(stream_id.as_str()));
    let healthy = client
        .list_streams()
        .filter_by(aws_sdk_ivs::types::StreamFilters::builder().health(StreamHealth::Starving).build())
        .send()
        .await
        .unwrap();
    assert!(healthy.streams().is_empty());

    let session = client.get_stream_session().channel_arn(&channel.arn).send().await.unwrap();
    let session = session.stream_session().unwrap();
    assert_eq!(session.stream_id(), Some(stream_id.as_str()));
    assert!(session.end_time().is_none());
    assert_eq!(session.channel().unwrap().arn(), Some(channel.arn.as_str()));
    let video = session.ingest_configuration().unwrap().video().unwrap();
    assert_eq!(video.codec(), Some("avc1.64001F"), "{video:?}");
    assert_eq!((video.video_width(), video.video_height()), (1280, 720));
    assert_eq!(video.profile(), Some("High"));
    assert_eq!(video.level(), Some("3.1"));
    assert_eq!(video.avc_profile(), Some("High"));
    assert_eq!(video.track(), Some("Track0"));
    assert!((video.target_framerate() - 30).abs() <= 1, "{video:?}");
    assert!(within(video.target_bitrate(), 2_500_000.0, 0.3), "{video:?}");
    assert!(video.encoder().unwrap().starts_with("Lav"), "{video:?}");
    let audio = session.ingest_configuration().unwrap().audio().unwrap();
    assert_eq!(audio.codec(), Some("mp4a.40.2"));
    assert_eq!((audio.sample_rate(), audio.channels()), (48000, 2));
    assert!(within(audio.target_bitrate(), 128_000.0, 0.35), "{audio:?}");
    let listed_video = &session.ingest_configurations().unwrap().video_configurations()[0];
    assert_eq!(listed_video.codec(), Some("avc1.64001F"));
    assert_eq!(listed_video.avc_profile(), Some(""));
    let names = event_names(session);
    assert_eq!(names, ["Stream Start", "Session Created"], "newest first");

    // StopStream ends the broadcaster's connection at once.
    client.stop_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert!(publisher.exited_within(Duration::from_secs(10)).is_some(), "ffmpeg kept running after StopStream");
    assert_error!(client.get_stream().channel_arn(&channel.arn).send(), "ChannelNotBroadcasting", 404);
    // The session is closed and recorded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let session = loop {
        let out = client.get_stream_session().channel_arn(&channel.arn).stream_id(&stream_id).send().await.unwrap();
        if out.stream_session().unwrap().end_time().is_some() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let session = session.stream_session().unwrap();
    assert!(session.end_time().is_some());
    assert_eq!(event_names(session)[..2], ["Session Ended".to_string(), "Stream End".to_string()]);
    let sessions = client.list_stream_sessions().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(sessions.stream_sessions().len(), 1);
    assert_eq!(sessions.stream_sessions()[0].stream_id(), Some(stream_id.as_str()));
    assert!(sessions.stream_sessions()[0].end_time().is_some());
    assert!(!sessions.stream_sessions()[0].has_error_event());
    // The stream key never reaches the log.
    assert!(!server.log_text().contains(&channel.key));
}

#[tokio::test]
async fn plain_rtmp_needs_insecure_ingest() {
    let server = Server::start();
    let client = server.client();
    let secure_only = create_channel(&server, ChannelType::StandardChannelType, false).await;
    let mut refused = Publisher::start(&secure_only.rtmp_url(&server), pattern_720p());
    let (status, _) = refused.exited_within(Duration::from_secs(15)).expect("ffmpeg was not refused");
    assert!(!status.success());
    assert!(
        client.list_stream_sessions().channel_arn(&secure_only.arn).send().await.unwrap().stream_sessions().is_empty()
    );

    let insecure = create_channel(&server, ChannelType::StandardChannelType, true).await;
    let mut publisher = Publisher::start(&insecure.rtmp_url(&server), pattern_720p());
    wait_live(&server, &insecure.arn, Duration::from_secs(15)).await;
    assert!(publisher.exited_within(Duration::from_millis(500)).is_none());
}

#[tokio::test]
async fn wrong_keys_and_second_publishers_are_refused() {
    let server = Server::start();
    let client = server.client();
    let channel = create_channel(&server, ChannelType::StandardChannelType, false).await;
    let wrong = Channel {
        key: format!("{}x", channel.key),
        ..create_channel(&server, ChannelType::BasicChannelType, false).await
    };
    let mut refused = Publisher::start(&wrong.rtmps_url(), pattern_720p());
    let (status, _) = refused.exited_within(Duration::from_secs(15)).expect("a wrong key was not refused");
    assert!(!status.success());

    let mut first = Publisher::start(&channel.rtmps_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    let stream_id = live_stream_id(&server, &channel.arn).await;
    let mut second = Publisher::start(&channel.rtmps_url(), pattern_720p());
    let (status, _) = second.exited_within(Duration::from_secs(15)).expect("a second publisher was not refused");
    assert!(!status.success());
    // The first one is unaffected.
    assert!(first.exited_within(Duration::from_millis(200)).is_none());
    let still = client.get_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(still.stream().unwrap().stream_id(), Some(stream_id.as_str()));
    assert_eq!(
        client.list_stream_sessions().channel_arn(&channel.arn).send().await.unwrap().stream_sessions().len(),
        1
    );
    assert!(client.list_stream_sessions().channel_arn(&wrong.arn).send().await.unwrap().stream_sessions().is_empty());

    // A live channel can be neither deleted nor updated; deleting its key does not end the stream.
    assert_error!(client.delete_channel().arn(&channel.arn).send(), "ConflictException", 409);
    assert_error!(client.update_channel().arn(&channel.arn).name("x").send(), "ConflictException", 409);
    let keys = client.list_stream_keys().channel_arn(&channel.arn).send().await.unwrap();
    client.delete_stream_key().arn(keys.stream_keys()[0].arn().unwrap()).send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(client.get_stream().channel_arn(&channel.arn).send().await.is_ok());
    assert!(first.exited_within(Duration::from_millis(100)).is_none());
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let mut server = Server::start();
    let channel = create_channel(&server, ChannelType::StandardChannelType, false).await;
    let first_id;
    {
        let _publisher = Publisher::start(&channel.rtmps_url(), pattern_720p());
        wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
        first_id = live_stream_id(&server, &channel.arn).await;
        // The publisher leaves (ffmpeg killed): the stream ends.
    }
    wait_offline(&server, &channel.arn, Duration::from_secs(10)).await;
    // A second session that is live when the server restarts.
    let _publisher = Publisher::start(&channel.rtmps_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    server.restart();
    let client = server.client();
    let sessions = client.list_stream_sessions().channel_arn(&channel.arn).send().await.unwrap();
    let sessions = sessions.stream_sessions();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[1].stream_id(), Some(first_id.as_str()), "newest first");
    assert!(sessions.iter().all(|s| s.end_time().is_some()));
    let first = client.get_stream_session().channel_arn(&channel.arn).stream_id(&first_id).send().await.unwrap();
    assert_eq!(first.stream_session().unwrap().ingest_configuration().unwrap().video().unwrap().video_width(), 1280);
}

#[tokio::test]
async fn channel_type_limits_are_enforced() {
    let server = Server::start();
    let client = server.client();
    // Above 1080p: refused as soon as the stream's configuration arrives.
    let channel = create_channel(&server, ChannelType::StandardChannelType, false).await;
    let large = encode(&PATTERN_1440P);
    let mut publisher = Publisher::start(&channel.rtmps_url(), &large);
    assert!(publisher.exited_within(Duration::from_secs(15)).is_some(), "a 1440p stream was not disconnected");
    let session = client.get_stream_session().channel_arn(&channel.arn).send().await.unwrap();
    let session = session.stream_session().unwrap();
    let ended = session.truncated_events().iter().find(|e| e.name() == Some("Session Ended")).unwrap();
    assert_eq!(ended.code(), Some("IngestResolutionExceeded"));
    assert!(
        session
            .truncated_events()
            .iter()
            .any(|e| e.name() == Some("Ingest Resolution") && e.r#type() == Some("IVS Limit Breach"))
    );
    let summary = client.list_stream_sessions().channel_arn(&channel.arn).send().await.unwrap();
    assert!(summary.stream_sessions()[0].has_error_event());

    // BASIC allows 3.5 Mbit/s above 480p: 6 Mbit/s is disconnected.
    let basic = create_channel(&server, ChannelType::BasicChannelType, false).await;
    let mut publisher = Publisher::start(&basic.rtmps_url(), &encode(&PATTERN_720P_6M));
    assert!(
        publisher.exited_within(Duration::from_secs(20)).is_some(),
        "a 6 Mbit/s stream on BASIC was not disconnected"
    );
    let session = client.get_stream_session().channel_arn(&basic.arn).send().await.unwrap();
    let ended = session
        .stream_session()
        .unwrap()
        .truncated_events()
        .iter()
        .find(|e| e.name() == Some("Session Ended"))
        .cloned()
        .unwrap();
    assert_eq!(ended.code(), Some("IngestBitrateExceeded"));
}

/// The client side of the RTMP handshake (C0+C1, read S0+S1+S2, C2), on a raw connection.
pub(crate) fn handshake(stream: &mut TcpStream) {
    let mut c0_c1 = vec![3u8];
    c0_c1.extend([0u8; 1536]);
    stream.write_all(&c0_c1).unwrap();
    let mut s0_s1_s2 = [0u8; 3073];
    stream.read_exact(&mut s0_s1_s2).unwrap();
    stream.write_all(&[0u8; 1536]).unwrap();
}

/// A raw TCP connection to the plain RTMP listener.
pub(crate) fn connect(server: &Server) -> TcpStream {
    connect_to(&server.rtmp_address)
}

/// A raw TCP connection to a plain RTMP listener at `address` (`host:port`).
pub(crate) fn connect_to(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream
}

/// True when the server closed the connection (EOF or reset) within the read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn hostile_connections_are_closed_and_harm_no_one() {
    let server = Server::start();
    let channel = create_channel(&server, ChannelType::StandardChannelType, true).await;
    // Hundreds of idle half-open connections …
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(&server)).collect();
    // … garbage instead of a handshake …
    let mut garbage = connect(&server);
    garbage.write_all(&[0x47; 4000]).unwrap();
    assert!(closed_by_server(&mut garbage));
    // … a valid handshake, then an absurd message length …
    let mut absurd = connect(&server);
    handshake(&mut absurd);
    absurd.write_all(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 0x14, 0, 0, 0, 0]).unwrap();
    assert!(closed_by_server(&mut absurd));
    // … and a real publisher still goes live.
    let _publisher = Publisher::start(&channel.rtmp_url(&server), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    // A connection that never finishes its setup is closed after the setup timeout (10 s).
    let mut slow = connect(&server);
    slow.write_all(&[3u8; 100]).unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut slow));
    assert!(started.elapsed() < Duration::from_secs(14));
    drop(idle);
    assert!(server.client().get_stream().channel_arn(&channel.arn).send().await.is_ok());
}
