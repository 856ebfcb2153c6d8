//! Fault tests: a full disk, slow and idle HTTP clients, stalled bodies, hostile publishers, a
//! flood of anonymous playback requests and concurrent writers. Each asserts what the server
//! promises under the fault: the status it answers, that it still answers a normal request
//! within a second, that its memory stays within a stated bound, and that every acknowledged
//! write is there after a restart.
//!
//! The full-disk test mounts a small tmpfs, so it needs root (as CI runs); it fails, not skips,
//! without it. The hostile publishers speak RTMP themselves (built with the project's own chunk
//! encoder and AMF0 writer), because no real encoder sends what they send.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::ChannelType;

use crate::harness::{Server, sigv4_headers};
use crate::ingest::{Publisher, create_channel, pattern_720p, wait_live};
use crate::playback::path_of;
use crate::raw_rtmp::{RawPublisher, flv_tags};
use openivs_media::rtmp::{Message, message_type};

/// A normal request gets its answer within a second.
async fn assert_responsive(server: &Server) {
    let started = Instant::now();
    let listed = tokio::time::timeout(Duration::from_secs(1), server.client().list_channels().send()).await;
    assert!(
        matches!(listed, Ok(Ok(_))),
        "a normal request was not answered within a second ({:?}): {listed:?}",
        started.elapsed()
    );
}

/// A TCP connection from a chosen loopback address (127.0.0.0/8 is all this machine's), so a
/// test can be several clients.
async fn connect_from(source: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    Ok(stream)
}

/// Reads until the server closes the connection; what it sent, and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return (received, started.elapsed()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// The next HTTP/1.1 answer on a connection: its head and its Content-Length body, read past
/// what `buffer` already holds (what is read beyond the answer stays there). None if the
/// connection ends first.
fn next_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, String)> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .map_or(0, |v| v.parse().unwrap());
            if buffer.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
                buffer.drain(..end + 4 + length);
                return Some((head, body));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One answer on a connection left open, as text (head and body).
fn read_answer(stream: &mut TcpStream) -> String {
    next_answer(stream, &mut Vec::new()).map_or_else(String::new, |(head, body)| format!("{head}\r\n\r\n{body}"))
}

// ---------------------------------------------------------------------------------------------
// A full disk

/// A tmpfs of `size` mounted for the test's lifetime.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let path = std::env::temp_dir().join(format!("openivs-tmpfs-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount(8) runs");
        assert!(
            status.success(),
            "the full-disk test mounts a tmpfs and needs root (CI runs as root); mount failed: {status}"
        );
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Fills the file system holding `dir` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0xa5u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let small = vec![0xa5u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.flush();
    filler
}

#[tokio::test]
async fn a_full_disk_loses_no_acknowledged_write() {
    let tmpfs = Tmpfs::mount("12m");
    let data_dir = tmpfs.path.join("data");
    // (The embedded store's file on the full disk is what this test is about.)
    let mut server = Server::on_sqlite(data_dir.clone(), &[]);
    let client = server.client();
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let out = client.create_channel().name(format!("before-{i}")).send().await.unwrap();
        acknowledged.push(out.channel().unwrap().arn().unwrap().to_owned());
    }
    let tagged = acknowledged[0].clone();

    let filler = fill(&tmpfs.path);
    // Every write now either fails with InternalServerException (500), or succeeded for real.
    let mut refused = 0;
    for i in 0..40 {
        match client.create_channel().name(format!("full-{i}")).send().await {
            Ok(out) => acknowledged.push(out.channel().unwrap().arn().unwrap().to_owned()),
            Err(error) => {
                let (code, status) = crate::harness::error_of::<(), _>(Err(error));
                assert_eq!((code.as_str(), status), ("InternalServerException", 500));
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a full disk refused no write");
    eprintln!("full disk: {refused} of 40 CreateChannel refused with 500, {} acknowledged", acknowledged.len() - 5);
    let tag = client.tag_resource().resource_arn(&tagged).tags("during", "full").send().await;
    let tag_landed = tag.is_ok();
    if let Err(error) = tag {
        assert_eq!(crate::harness::error_of::<(), _>(Err(error)), ("InternalServerException".into(), 500));
    }
    // Reads still work, and so does the rest of the server.
    client.get_channel().arn(&acknowledged[1]).send().await.unwrap();
    assert_responsive(&server).await;

    // Space comes back: the very next writes succeed, and stay.
    std::fs::remove_file(filler).unwrap();
    for i in 0..5 {
        let out = client.create_channel().name(format!("after-{i}")).send().await.unwrap();
        acknowledged.push(out.channel().unwrap().arn().unwrap().to_owned());
    }
    client.tag_resource().resource_arn(&tagged).tags("after", "space").send().await.unwrap();

    server.crash_and_restart();
    let client = server.client();
    for arn in &acknowledged {
        client
            .get_channel()
            .arn(arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("acknowledged channel {arn} was lost: {e:?}"));
    }
    let tags = client.list_tags_for_resource().resource_arn(&tagged).send().await.unwrap();
    assert_eq!(tags.tags().get("after").map(String::as_str), Some("space"));
    assert_eq!(tags.tags().contains_key("during"), tag_landed, "TagResource's answer matches what is stored");
    drop(server);
    drop(tmpfs);
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::on_sqlite(Server::fresh_data_dir(), &[]);
    server.client().create_channel().send().await.unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.data_dir), 0o700);
    for name in ["openivs.sqlite3", "openivs.sqlite3-wal", "openivs.sqlite3-shm", "rtmps-key.pem"] {
        let path = server.data_dir.join(name);
        if path.exists() || name != "rtmps-key.pem" {
            assert_eq!(mode(&path), 0o600, "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Slow, idle and stalled HTTP clients

#[tokio::test]
async fn slow_idle_and_stalled_http_clients_are_cut_off() {
    // (One node: what its own HTTP listener does, with no load balancer in between.)
    let server = Server::single_node(&[
        "--http-header-timeout",
        "2",
        "--http-body-timeout",
        "2",
        "--http-max-connections",
        "400",
        "--http-max-connections-per-address",
        "40",
        "--http-request-body-memory",
        "1048576",
    ]);
    let port = server.port;
    let attacker = [127, 0, 0, 2];

    // A connection that sends nothing is closed after the header timeout.
    let mut idle = connect_from(attacker, port).await.unwrap();
    // Headers that trickle in, one byte at a time, are cut off too.
    let mut slow = connect_from(attacker, port).await.unwrap();
    let trickle = std::thread::spawn(move || {
        let started = Instant::now();
        for byte in b"POST /ListChannels HTTP/1.1\r\nhost: x\r\nx-slow: ".iter().cycle() {
            if slow.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        started.elapsed()
    });
    // A keep-alive connection left idle after its response is closed as well.
    let mut kept = connect_from(attacker, port).await.unwrap();
    kept.write_all(b"GET /nothing HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let (_, idle_for) = read_until_closed(&mut idle);
    assert!(idle_for < Duration::from_secs(4), "an idle connection was held {idle_for:?}");
    let (answer, kept_for) = read_until_closed(&mut kept);
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 404"));
    assert!(kept_for < Duration::from_secs(4), "an idle keep-alive connection was held {kept_for:?}");
    let trickled_for = trickle.join().unwrap();
    assert!(trickled_for < Duration::from_secs(5), "slow headers were accepted for {trickled_for:?}");
    assert_responsive(&server).await;

    // Headers larger than the header buffer (16 KiB) are refused, not buffered.
    let mut huge_head = connect_from(attacker, port).await.unwrap();
    let padding = "a".repeat(20_000);
    let _ = huge_head.write_all(format!("GET /x HTTP/1.1\r\nhost: x\r\nx-pad: {padding}\r\n\r\n").as_bytes());
    let (answer, took) = read_until_closed(&mut huge_head);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(took < Duration::from_secs(1));

    // A body without credentials is refused from the headers, before any of it is read; the
    // rest of the body is read and dropped after the answer, within the body timeout.
    let mut unsigned = connect_from(attacker, port).await.unwrap();
    unsigned
        .write_all(b"POST /ListChannels HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{")
        .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut unsigned);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("MissingAuthenticationTokenException"));
    assert!(started.elapsed() < Duration::from_secs(1));
    let (_, lingered) = read_until_closed(&mut unsigned);
    assert!(lingered < Duration::from_secs(4), "a refused body that never came was waited for {lingered:?}");

    // A declared body over the limit is refused before it is read.
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(70_000));
    let headers = sigv4_headers(&server, "POST", "/ListChannels", &big, "test", "test", std::time::SystemTime::now());
    let mut oversized = connect_from(attacker, port).await.unwrap();
    oversized.write_all(&request_head("/ListChannels", &headers, big.len())).unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut oversized);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("at most 65536 bytes"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // ... and a client that sends that body anyway, as a proxy passing it on does, reads the
    // answer rather than a reset: the server reads the refused body to its end.
    let mut sent_anyway = connect_from(attacker, port).await.unwrap();
    sent_anyway.write_all(&request_head("/ListChannels", &headers, big.len())).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for piece in big.as_bytes().chunks(8192) {
        sent_anyway.write_all(piece).expect("the server reset the connection while the refused body was sent");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let answer = read_answer(&mut sent_anyway);
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("at most 65536 bytes"), "{answer}");

    // Signed requests whose bodies stall: each is answered when the body timeout passes, their
    // memory together stays within the body-memory bound, and the server keeps answering.
    let rss_before = server.rss_kib();
    let body = format!("{{\"x\":\"{}\"}}", "a".repeat(60_000));
    let headers = sigv4_headers(&server, "POST", "/ListChannels", &body, "test", "test", std::time::SystemTime::now());
    let mut stalled = Vec::new();
    for i in 0..120u8 {
        let mut stream = connect_from([127, 0, 1, i / 40], port).await.unwrap();
        stream.write_all(&request_head("/ListChannels", &headers, body.len())).unwrap();
        stream.write_all(&body.as_bytes()[..50_000]).unwrap();
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_during = server.rss_kib();
    eprintln!("stalled bodies: server RSS {rss_before} KiB before, {rss_during} KiB with 120 stalled");
    // Each address holds at most an eighth of the body memory: other clients still write.
    let started = Instant::now();
    server.client().create_channel().name("while-stalled").send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "a write waited {:?} behind stalled bodies", started.elapsed());
    assert!(
        rss_during < rss_before + 16 * 1024,
        "120 stalled 60 kB bodies grew the server from {rss_before} to {rss_during} KiB"
    );
    for mut stream in stalled {
        let (answer, took) = read_until_closed(&mut stream);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 429"),
            "a stalled body was answered: {answer}"
        );
        assert!(took < Duration::from_secs(5), "a stalled body was held {took:?}");
    }
    assert_responsive(&server).await;
    // (Closed connections give their slots back as their tasks end.)
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The per-address cap: one address cannot take every connection; others still get in.
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(connect_from(attacker, port).await.unwrap());
    }
    let mut refused = connect_from(attacker, port).await.unwrap();
    let (answer, _) = read_until_closed(&mut refused);
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
    assert_responsive(&server).await;
    drop(held);
}

fn request_head(path: &str, headers: &[(String, String)], length: usize) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {length}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn the_connection_cap_refuses_clearly_and_recovers() {
    // (One node: what its own HTTP listener does, with no load balancer in between.)
    let server = Server::single_node(&["--http-max-connections", "30", "--http-max-connections-per-address", "1000"]);
    let mut held = Vec::new();
    for _ in 0..30 {
        held.push(connect_from([127, 0, 0, 3], server.port).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = connect_from([127, 0, 0, 4], server.port).await.unwrap();
    let (answer, took) = read_until_closed(&mut refused);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("Too many connections"), "{answer}");
    assert!(took < Duration::from_secs(1));
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_responsive(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile publishers

/// The AVC decoder configuration (avcC) of the test pattern, read from its FLV file.
fn pattern_avcc() -> Vec<u8> {
    flv_tags(pattern_720p())
        .into_iter()
        .find(|tag| tag.tag_type == 9 && tag.body[0] & 0x0f == 7 && tag.body[1] == 0)
        .map(|tag| tag.body[5..].to_vec())
        .expect("no AVC sequence header in the test pattern")
}

/// The code of the "Session Ended" event of the channel's latest session, once it has ended.
async fn ended_code(server: &Server, arn: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = server.client().get_stream_session().channel_arn(arn).send().await.unwrap();
        let session = out.stream_session().unwrap();
        if let Some(ended) = session.truncated_events().iter().find(|e| e.name() == Some("Session Ended")) {
            return ended.code().map(str::to_owned);
        }
        assert!(Instant::now() < deadline, "the session did not end: {session:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn hostile_publishers_cannot_grow_the_server() {
    let server = Server::with_args(&[
        "--ingest-media-timeout",
        "4",
        "--playback-max-segment-duration",
        "3",
        "--playback-max-segment-bytes",
        "2097152",
        "--playback-max-window-bytes",
        "4194304",
    ]);
    let avcc = pattern_avcc();
    let baseline = server.rss_kib();
    // The bound every case must stay within: the playback window and one segment (6 MiB), the
    // chunk decoder's largest messages (2 × 8 MiB) and the runtime's slack.
    let bound = baseline + 40 * 1024;

    // Before any key is checked: one large AMF0 command, and a command that decodes to a
    // million values, from two hundred connections at once. Each is closed at once.
    let mut strict_array = vec![0x02, 0x00, 0x07];
    strict_array.extend_from_slice(b"connect");
    strict_array.push(0x0a);
    strict_array.extend_from_slice(&15_000u32.to_be_bytes());
    strict_array.extend(std::iter::repeat_n(0x05u8, 15_000));
    let mut probes = Vec::new();
    for i in 0..200 {
        let mut probe = RawPublisher::connect(&server);
        let payload = if i % 2 == 0 { strict_array.clone() } else { vec![0x05; 4 << 20] };
        let _ = probe.send(Message::new(3, message_type::COMMAND_AMF0, 0, 0, payload));
        probes.push(probe);
    }
    for probe in &mut probes {
        assert!(probe.closed_within(Duration::from_secs(5)), "a hostile setup message was not refused");
    }
    assert!(server.rss_kib() < bound, "setup messages grew the server to {} KiB (from {baseline})", server.rss_kib());
    eprintln!("hostile setup messages: RSS {baseline} KiB before, {} KiB after 200 connections", server.rss_kib());
    assert_responsive(&server).await;

    // An oversized decoder configuration (a 60 kB PPS): the stream ends.
    let channel = create_channel(&server, ChannelType::StandardChannelType, true).await;
    let mut publisher = RawPublisher::publish(&server, &channel.key);
    // The pattern's configuration header and SPS, then one PPS of 60 kB.
    let sps_length = usize::from(u16::from_be_bytes([avcc[6], avcc[7]]));
    let mut huge = avcc[..8 + sps_length].to_vec();
    huge.push(1);
    huge.extend_from_slice(&60_000u16.to_be_bytes());
    huge.push(0x68);
    huge.resize(huge.len() + 59_999, 0x11);
    let _ = publisher.sequence_header(&huge);
    for i in 0..30 {
        let _ = publisher.frame(i * 33, i % 30 == 0, 2_000);
    }
    assert!(publisher.closed_within(Duration::from_secs(5)), "an oversized decoder configuration was accepted");
    assert_eq!(ended_code(&server, &channel.arn).await.as_deref(), Some("InvalidVideoConfiguration"));

    // Timestamps that crawl (1 ms a frame) while frames arrive fast (about 40 Mbit/s): the
    // bytes are counted against the bitrate limit all the same and the stream ends; memory
    // stays bounded meanwhile.
    let channel = create_channel(&server, ChannelType::StandardChannelType, true).await;
    let mut publisher = RawPublisher::publish(&server, &channel.key);
    publisher.sequence_header(&avcc).unwrap();
    let started = Instant::now();
    let mut peak = 0;
    let mut frame = 0u32;
    while started.elapsed() < Duration::from_secs(15) {
        if publisher.frame(frame, frame.is_multiple_of(10), 50_000).is_err() {
            break;
        }
        frame += 1;
        if frame.is_multiple_of(10) {
            peak = peak.max(server.rss_kib());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(started.elapsed() < Duration::from_secs(15), "a 40 Mbit/s stream with crawling timestamps was never ended");
    assert!(peak < bound, "crawling timestamps grew the server to {peak} KiB (from {baseline})");
    eprintln!("40 Mbit/s with crawling timestamps: ended after {:?}, RSS peak {peak} KiB", started.elapsed());
    assert_eq!(ended_code(&server, &channel.arn).await.as_deref(), Some("IngestBitrateExceeded"));

    // Frozen timestamps at a modest rate: no media progress, so the stream times out.
    let channel = create_channel(&server, ChannelType::StandardChannelType, true).await;
    let mut publisher = RawPublisher::publish(&server, &channel.key);
    publisher.sequence_header(&avcc).unwrap();
    let started = Instant::now();
    let mut frame = 0u32;
    while started.elapsed() < Duration::from_secs(15) && publisher.frame(5_000, frame.is_multiple_of(30), 3_000).is_ok()
    {
        frame += 1;
        std::thread::sleep(Duration::from_millis(33));
    }
    assert!(started.elapsed() < Duration::from_secs(12), "a stream without media progress was never ended");
    assert_eq!(ended_code(&server, &channel.arn).await.as_deref(), Some("IngestTimeout"));

    // One keyframe and never another: segments are cut at the maximum duration anyway, so the
    // window stays bounded and the playlist keeps moving.
    let out = server.client().create_channel().insecure_ingest(true).send().await.unwrap();
    let key = out.stream_key().unwrap().value().unwrap().to_owned();
    let playback_url = out.channel().unwrap().playback_url().unwrap().to_owned();
    let mut publisher = RawPublisher::publish(&server, &key);
    publisher.sequence_header(&avcc).unwrap();
    let started = Instant::now();
    for frame in 0..(30 * 12) {
        publisher.frame(frame * 33, frame == 0, 12_000).unwrap();
        let due = started + Duration::from_millis(u64::from(frame) * 33);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let multivariant = crate::harness::raw_request(&server, "GET", &path_of(&playback_url), &[], "");
    assert_eq!(multivariant.status, 200, "{}", multivariant.body);
    let media_path = multivariant.body.lines().find(|l| l.starts_with('/')).unwrap().to_owned();
    let media = crate::harness::raw_request(&server, "GET", &media_path, &[], "");
    let durations: Vec<f64> = media
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse().unwrap())
        .collect();
    assert!(durations.len() >= 3, "segments were not cut without keyframes: {}", media.body);
    assert!(durations.iter().all(|d| *d <= 3.1), "a segment outgrew the maximum duration: {durations:?}");
    eprintln!("no second keyframe: segment durations {durations:?}, RSS {} KiB", server.rss_kib());
    assert!(server.rss_kib() < bound);
    drop(publisher);
    assert_responsive(&server).await;
}

// ---------------------------------------------------------------------------------------------
// A flood of anonymous playback requests

/// A keep-alive HTTP/1.1 client from a chosen loopback address.
struct KeepAlive {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl KeepAlive {
    async fn open(source: [u8; 4], port: u16) -> KeepAlive {
        KeepAlive { stream: connect_from(source, port).await.unwrap(), buffer: Vec::new() }
    }

    /// GETs a path; its status and body.
    fn get(&mut self, path: &str) -> (u16, String) {
        self.stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").as_bytes()).unwrap();
        let (head, body) =
            next_answer(&mut self.stream, &mut self.buffer).expect("the server closed a keep-alive connection");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body)
    }
}

#[tokio::test]
async fn a_flood_of_anonymous_viewers_locks_nobody_out() {
    // (One node: its own per-address caps and listener, with no load balancer in between.)
    let server = Server::single_node(&[
        "--playback-max-viewer-sessions",
        "1000",
        "--playback-max-viewer-sessions-per-address",
        "50",
    ]);
    let channel = create_channel(&server, ChannelType::StandardChannelType, false).await;
    let _broadcaster = Publisher::start(&channel.rtmps_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(15)).await;
    let playback_url = server.client().get_channel().arn(&channel.arn).send().await.unwrap();
    let playback_path = path_of(playback_url.channel().unwrap().playback_url().unwrap());
    let rss_before = server.rss_kib();

    // 20,000 multivariant requests from one address, in a few seconds: each hands out a
    // session, and none of them holds anything.
    let attacker = [127, 0, 0, 5];
    let mut media_paths = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(KeepAlive::open(attacker, server.port).await);
    }
    let flood = 20_000;
    for i in 0..flood {
        let (status, body) = connections[i % 4].get(&playback_path);
        assert_eq!(status, 200, "{body}");
        if i < 80 {
            media_paths.push(body.lines().find(|l| l.starts_with('/')).unwrap().to_owned());
        }
    }
    let stream = server.client().get_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(stream.stream().unwrap().viewer_count(), 0, "sessions that fetched no media count as viewers");
    let rss_after = server.rss_kib();
    eprintln!("playlist flood: RSS {rss_before} KiB before, {rss_after} KiB after {flood} requests");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "{flood} playlist requests grew the server from {rss_before} to {rss_after} KiB"
    );

    // Fetching media: the address holds its cap of sessions, and no more.
    let mut held = 0;
    let mut refused = 0;
    for path in &media_paths {
        match connections[0].get(path).0 {
            200 => held += 1,
            429 => refused += 1,
            other => panic!("media playlist answered {other}"),
        }
    }
    assert_eq!((held, refused), (50, 30));
    // Its next playlist request is refused at once, as IVS refuses at the playbackUrl.
    assert_eq!(connections[1].get(&playback_path).0, 429);

    // Another viewer still gets in, and plays.
    let mut viewer = KeepAlive::open([127, 0, 0, 6], server.port).await;
    let (status, body) = viewer.get(&playback_path);
    assert_eq!(status, 200);
    let media_path = body.lines().find(|l| l.starts_with('/')).unwrap().to_owned();
    let (status, playlist) = viewer.get(&media_path);
    assert_eq!(status, 200, "{playlist}");
    assert!(playlist.contains("#EXTINF:"));
    let stream = server.client().get_stream().channel_arn(&channel.arn).send().await.unwrap();
    assert_eq!(stream.stream().unwrap().viewer_count(), 51);
    assert_responsive(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Concurrent writers

#[tokio::test]
async fn a_publish_and_channel_updates_are_ordered_by_the_store() {
    let server = Server::start();
    let client = server.client();
    let channel = create_channel(&server, ChannelType::StandardChannelType, false).await;
    // Updates hammer the channel (as fast as they are answered) while a broadcaster connects:
    // each either lands before the stream goes live (and the session describes the channel as
    // updated) or is refused; none starves the publish.
    let updater = {
        let client = client.clone();
        let arn = channel.arn.clone();
        tokio::spawn(async move {
            let mut last_applied = None;
            let started = Instant::now();
            for i in 0.. {
                if started.elapsed() > Duration::from_secs(30) {
                    break;
                }
                match client.update_channel().arn(&arn).name(format!("u{i}")).send().await {
                    Ok(_) => last_applied = Some(format!("u{i}")),
                    Err(error) => {
                        assert_eq!(crate::harness::error_of::<(), _>(Err(error)).0, "ConflictException");
                        return last_applied;
                    }
                }
            }
            panic!("the channel never went live while it was being updated");
        })
    };
    let _broadcaster = Publisher::start(&channel.rtmps_url(), pattern_720p());
    wait_live(&server, &channel.arn, Duration::from_secs(20)).await;
    let last_applied = updater.await.unwrap();
    let session = client.get_stream_session().channel_arn(&channel.arn).send().await.unwrap();
    let snapshot = session.stream_session().unwrap().channel().unwrap().name().unwrap_or("").to_owned();
    let current = client.get_channel().arn(&channel.arn).send().await.unwrap();
    assert_eq!(current.channel().unwrap().name().unwrap_or(""), snapshot, "an update slipped past the publish");
    assert_eq!(snapshot, last_applied.unwrap_or_default(), "the session describes the last update that landed");
    // Live: no update or delete. Stopped: both at once, with no wait.
    assert_eq!(crate::harness::error_of(client.delete_channel().arn(&channel.arn).send().await).0, "ConflictException");
    client.stop_stream().channel_arn(&channel.arn).send().await.unwrap();
    client.update_channel().arn(&channel.arn).name("after").send().await.unwrap();
    client.delete_channel().arn(&channel.arn).send().await.unwrap();
}

#[tokio::test]
async fn concurrent_tagging_and_updates_all_succeed() {
    let server = Server::start();
    let client = server.client();
    let arn = client.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    let mut calls = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        let arn = arn.clone();
        calls.push(tokio::spawn(async move {
            let tagged = client.tag_resource().resource_arn(&arn).tags(format!("k{i}"), format!("v{i}")).send().await;
            tagged.map(|_| ()).map_err(|e| format!("{e:?}"))
        }));
    }
    for i in 0..10 {
        let client = client.clone();
        let arn = arn.clone();
        calls.push(tokio::spawn(async move {
            let updated = client.update_channel().arn(&arn).name(format!("n{i}")).send().await;
            updated.map(|_| ()).map_err(|e| format!("{e:?}"))
        }));
    }
    for call in calls {
        call.await.unwrap().unwrap_or_else(|e| panic!("a concurrent write failed: {e}"));
    }
    let tags = client.list_tags_for_resource().resource_arn(&arn).send().await.unwrap();
    assert_eq!(tags.tags().len(), 40, "{:?}", tags.tags());
    let channel = client.get_channel().arn(&arn).send().await.unwrap();
    assert!(channel.channel().unwrap().name().unwrap().starts_with('n'));
    assert_eq!(channel.channel().unwrap().tags().unwrap().len(), 40, "updates kept the tags");
}
