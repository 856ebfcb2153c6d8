//! A recording as a viewer replays it: hls.js in Chromium plays a recorded stream's HLS from its
//! bucket, both the segment playlists (`master.m3u8`) and the byte-range ones
//! (`byte-range-multivariant.m3u8`), from start to end, with the live stream's timed metadata
//! raised as cues. The bucket's folder is served by a small static file server here (with CORS
//! and byte ranges), as a CDN or S3 website in front of the bucket would serve it.
//!
//! Known, and not openivs's to fix: hls.js (1.7) in Chromium loses the cues of the first
//! fragment it parses with ID3 in it (it creates its metadata track then, and Chromium empties a
//! new track's cues once, just after). Every keyframe interval of a recording starts with a
//! timestamp-only ID3 tag, so that fragment is the first one played, not the first one holding
//! a payload; payloads sent in a stream's first 10 s are in the recording (the API tests read
//! them with ffmpeg) but hls.js raises them only as `FRAG_PARSING_METADATA` events, not cues.
//! The payloads here are sent from the second segment on.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_ivs::types::{RecordingMode, ThumbnailConfiguration};

use crate::clock::ClockPublisher;
use crate::harness::rtmps_url;
use crate::harness::{Server, destination, wait_live, wait_offline, walkdir};
use crate::web_players::play;

/// Serves the files under `root` on a free loopback port, for GET and HEAD (with single byte
/// ranges) and CORS preflights; the server's base URL.
fn serve_folder(root: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || while answer(&root, &connection).is_some() {});
        }
    });
    base
}

/// Reads one request from `connection` and answers it; `None` when the connection is done.
fn answer(root: &Path, connection: &TcpStream) -> Option<()> {
    let mut reader = BufReader::new(connection);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = value.trim().strip_prefix("bytes=").map(str::to_owned);
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?.split('?').next()?);
    let cors = "access-control-allow-origin: *\r\naccess-control-allow-headers: range\r\n\
                access-control-expose-headers: content-range, content-length\r\n";
    let mut writer = connection;
    if method == "OPTIONS" {
        write!(writer, "HTTP/1.1 204 No Content\r\n{cors}content-length: 0\r\n\r\n").ok()?;
        return Some(());
    }
    let file = (!path.contains("..")).then(|| root.join(path.trim_start_matches('/')));
    let Some(mut file) = file.and_then(|path| std::fs::File::open(path).ok()) else {
        write!(writer, "HTTP/1.1 404 Not Found\r\n{cors}content-length: 0\r\n\r\n").ok()?;
        return Some(());
    };
    let length = file.metadata().ok()?.len();
    let content_type = if path.ends_with(".m3u8") { "application/vnd.apple.mpegurl" } else { "video/mp2t" };
    let (status, start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((first, last)) => {
            let start: u64 = first.parse().ok()?;
            let end = last.parse::<u64>().map_or(length - 1, |last| last.min(length - 1));
            ("206 Partial Content", start, end)
        }
        None => ("200 OK", 0, length.saturating_sub(1)),
    };
    let size = if length == 0 { 0 } else { end + 1 - start };
    let mut head = format!("HTTP/1.1 {status}\r\n{cors}content-type: {content_type}\r\ncontent-length: {size}\r\n");
    if status.starts_with("206") {
        head.push_str(&format!("content-range: bytes {start}-{end}/{length}\r\n"));
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes()).ok()?;
    if method == "GET" {
        file.seek(SeekFrom::Start(start)).ok()?;
        std::io::copy(&mut file.take(size), &mut writer).ok()?;
    }
    Some(())
}

#[tokio::test]
async fn hls_js_plays_a_recording_from_start_to_end() {
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let client = server.client();
    let configuration = client
        .create_recording_configuration()
        .destination_configuration(destination("my-bucket"))
        .thumbnail_configuration(ThumbnailConfiguration::builder().recording_mode(RecordingMode::Disabled).build())
        .send()
        .await
        .unwrap();
    let configuration_arn = configuration.recording_configuration().unwrap().arn();
    let out = client.create_channel().recording_configuration_arn(configuration_arn).send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let url = rtmps_url(&out);

    // About 24 s of stream (three segments), with a payload every 3 s from the second segment
    // on (see the module comment for the first).
    let publisher = ClockPublisher::start(&url, 30);
    wait_live(&server, &arn, Duration::from_secs(20)).await;
    let payloads: Vec<String> = (0..4).map(|i| format!("{{\"recorded\":{i}}}")).collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for payload in &payloads {
        tokio::time::sleep(Duration::from_secs(3)).await;
        client.put_metadata().channel_arn(&arn).metadata(payload).send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(publisher);
    wait_offline(&server, &arn, Duration::from_secs(15)).await;

    let bucket = server.data_dir.join("buckets/my-bucket");
    let deadline = Instant::now() + Duration::from_secs(15);
    let ended = loop {
        let found = walkdir(&bucket).into_iter().find(|p| p.ends_with("events/recording-ended.json"));
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "the recording ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&ended).unwrap()).unwrap();
    let duration = file["media"]["hls"]["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!(duration > 20.0, "{file}");
    let base = serve_folder(ended.parent().unwrap().parent().unwrap().join("media/hls"));

    let urls = [format!("{base}/master.m3u8"), format!("{base}/byte-range-multivariant.m3u8")];
    let watch = duration.ceil() as u32 + 2;
    let results = play("hls.js", watch, &urls.iter().map(String::as_str).collect::<Vec<_>>());
    for result in &results {
        let playlist = result["url"].as_str().unwrap();
        let summary = format!(
            "{playlist}: fatal {}, start {}, end {}, picture {} s, stall {} ms",
            result["fatal"],
            result["start_time"],
            result["end_time"],
            result["picture_seconds"],
            result["longest_stall_ms"]
        );
        assert!(result["fatal"].as_array().unwrap().is_empty(), "{summary}");
        // Played from the start (the page watches after its picture moves and 3 s of settling)…
        let start = result["start_time"].as_f64().unwrap();
        assert!(start < 6.0, "{summary}");
        // …to the end, the picture moving all along.
        let end = result["end_time"].as_f64().unwrap();
        assert!((end - duration).abs() < 0.5, "ended at {end} of {duration} s: {summary}");
        assert!(result["picture_seconds"].as_f64().unwrap() > end - start - 1.0, "{summary}");
        let cues: Vec<&str> =
            result["metadata"].as_array().unwrap().iter().map(|cue| cue["text"].as_str().unwrap_or("")).collect();
        assert_eq!(cues, payloads, "{summary}");
        println!("{summary}");
    }
}
