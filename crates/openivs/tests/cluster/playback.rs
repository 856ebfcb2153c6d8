//! Playback from any node: a viewer of a stream node a ingests plays it through node b. b gets
//! the multivariant playlist from a (which admits the viewer and opens the session, valid on
//! every node), and pulls playlists, parts and segments from a: the same bytes on both nodes,
//! and 200 viewers asking b for one part at once cost a one fetch (a's own counter says so);
//! viewerCount counts the viewers b holds. The IVS Player's prefetch segments stream through b
//! as they are cut.

use std::time::Duration;

use crate::harness::{Server, raw_request, wait_live};
use crate::media::{Publisher, pattern_720p_short_gop};
use crate::postgres::Postgres;

/// A counter of `server`'s /metrics (0 when absent).
fn counter(server: &Server, sample: &str) -> f64 {
    let metrics = raw_request(server, "GET", "/metrics", &[], "").body;
    metrics.lines().find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

fn get(server: &Server, path: &str) -> (u16, Vec<u8>) {
    let response = raw_request(server, "GET", path, &[], "");
    (response.status, response.body_bytes)
}

/// The quoted URI of a playlist tag line (`URI="…"`).
fn uri_of(line: &str) -> Option<&str> {
    line.split("URI=\"").nth(1)?.split('"').next()
}

/// A LOW MPEG-TS channel made on `node` and live there: its ARN, playback URL and broadcaster.
async fn live_low_channel_on(node: &Server) -> (String, String, Publisher) {
    let out = node
        .client()
        .create_channel()
        .latency_mode(aws_sdk_ivs::types::ChannelLatencyMode::LowLatency)
        .container_format(aws_sdk_ivs::types::ContainerFormat::Ts)
        .send()
        .await
        .unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let key = out.stream_key().unwrap().value().unwrap();
    let publisher = Publisher::start(&format!("rtmps://{}/app/{key}", node.rtmps_address), pattern_720p_short_gop());
    wait_live(node, &arn, Duration::from_secs(15)).await;
    (arn, channel.playback_url().unwrap().to_owned(), publisher)
}

#[tokio::test]
async fn a_viewer_plays_through_a_node_that_does_not_ingest_the_stream() {
    let postgres = Postgres::start();
    let (a, b) = (postgres.node("a"), postgres.node("b"));
    let (arn, _, _publisher) = live_low_channel_on(&a).await;
    let playback_url =
        b.client().get_channel().arn(&arn).send().await.unwrap().channel().unwrap().playback_url().unwrap().to_owned();
    let multivariant_path = format!("/{}", playback_url.split_once("://").unwrap().1.split_once('/').unwrap().1);
    assert!(playback_url.contains(&format!(":{}/", b.port)), "b's own playback URL: {playback_url}");

    // The multivariant playlist through b: a session for the stream on a.
    let (status, multivariant) = get(&b, &multivariant_path);
    let multivariant = String::from_utf8(multivariant).unwrap();
    assert_eq!(status, 200, "{multivariant}");
    let media_path = multivariant.lines().find(|l| l.starts_with("/playback/")).expect("a variant").to_owned();
    let directory = media_path.rsplit_once('/').unwrap().0.to_owned();

    // The media playlist and a complete segment: the same bytes through b and from a.
    let wait_for_segments = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, playlist) = get(&b, &media_path);
            let playlist = String::from_utf8(playlist).unwrap();
            assert_eq!(status, 200, "{playlist}");
            if playlist.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count() >= 2 {
                return playlist;
            }
            assert!(std::time::Instant::now() < deadline, "no segments through b: {playlist}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let playlist = wait_for_segments();
    let segment = playlist.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap();
    let through_b = get(&b, &format!("{directory}/{segment}"));
    let from_a = get(&a, &format!("{directory}/{segment}"));
    assert_eq!(through_b.0, 200);
    assert!(through_b.1.len() > 1000 && through_b.1 == from_a.1, "{segment}: the same bytes on both nodes");
    let part = playlist.lines().filter(|l| l.starts_with("#EXT-X-PART:")).find_map(uri_of).expect("parts");
    assert_eq!(get(&b, &format!("{directory}/{part}")).1, get(&a, &format!("{directory}/{part}")).1, "{part}");

    // A blocking playlist reload through b answers once the part it asks for exists.
    let next_msn: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap()
        + playlist.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count() as u64;
    let (status, blocked) = get(&b, &format!("{media_path}?_HLS_msn={next_msn}&_HLS_part=1"));
    let blocked = String::from_utf8(blocked).unwrap();
    assert_eq!(status, 200, "{blocked}");
    assert!(blocked.contains(&format!("-{next_msn}.1.")), "the playlist holds part 1 of {next_msn}: {blocked}");

    // 200 viewers ask b for the part that comes next, at once: a serves it once.
    let playlist = wait_for_segments();
    let hinted =
        playlist.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:")).and_then(uri_of).expect("a hint").to_owned();
    let before = counter(&a, "openivs_cluster_origin_requests_total{kind=\"part\"}");
    let path = format!("{directory}/{hinted}");
    let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..200).map(|_| scope.spawn(|| get(&b, &path))).collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let after = counter(&a, "openivs_cluster_origin_requests_total{kind=\"part\"}");
    assert!(answers.iter().all(|(status, body)| *status == 200 && *body == answers[0].1 && !body.is_empty()));
    assert_eq!(after - before, 1.0, "200 requests of {hinted} through b cost a one request");

    // viewerCount (answered by a) counts the viewers b holds: one more viewer through b.
    let viewer_count =
        || async { a.client().get_stream().channel_arn(&arn).send().await.unwrap().stream().unwrap().viewer_count() };
    let before = viewer_count().await;
    let (status, another) = get(&b, &multivariant_path);
    assert_eq!(status, 200);
    let another = String::from_utf8(another).unwrap().lines().find(|l| l.starts_with("/playback/")).unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        assert_eq!(get(&b, &another).0, 200);
        if viewer_count().await == before + 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "viewerCount stayed {} with one more viewer on b",
            viewer_count().await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The internal endpoints answer nothing unsigned.
    let internal = format!("/_openivs/cluster/media/{}/{hinted}?ll=1", directory.rsplit('/').next().unwrap());
    assert_eq!(get(&a, &internal).0, 403);
    assert_eq!(
        get(&a, &format!("/_openivs/cluster/multivariant/{}", multivariant_path.rsplit('/').next().unwrap())).0,
        403
    );
}

/// The Amazon IVS Player's prefetch segments (a LOW MPEG-TS channel) through a node that does not
/// ingest the stream: streamed as they are cut, as from the ingest node, and the same bytes.
#[tokio::test]
async fn prefetch_segments_stream_through_a_node_that_does_not_ingest_the_stream() {
    let postgres = Postgres::start();
    let (a, b) = (postgres.node("a"), postgres.node("b"));
    let (_, playback_url, _publisher) = live_low_channel_on(&a).await;
    let multivariant_path = format!("/{}", playback_url.split_once("://").unwrap().1.split_once('/').unwrap().1);
    let (status, multivariant) = get(&b, &multivariant_path);
    assert_eq!(status, 200);
    let media_path =
        String::from_utf8(multivariant).unwrap().lines().find(|l| l.starts_with("/playback/")).unwrap().to_owned();
    let directory = media_path.rsplit_once('/').unwrap().0.to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let prefetch = loop {
        let playlist = String::from_utf8(get(&b, &media_path).1).unwrap();
        let listed: Vec<&str> = playlist.lines().filter_map(|l| l.strip_prefix("#EXT-X-PREFETCH:")).collect();
        if listed.len() == 2 {
            break listed[1].to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no prefetch segments through b: {playlist}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The segment after the one being cut: its answer streams while it is written (1 s or more).
    let path = format!("{directory}/{prefetch}");
    let asked = std::time::Instant::now();
    let streamed = raw_request(&b, "GET", &path, &[], "");
    let took = asked.elapsed();
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"), "{:?}", streamed.headers);
    assert!(took > Duration::from_millis(900), "{prefetch} came whole after {took:?}");
    let complete = get(&a, &path);
    assert_eq!(complete.0, 200);
    assert!(complete.1.len() > 1000 && complete.1 == streamed.body_bytes, "the streamed bytes are the segment's");
}
