//! Entry points for the fuzz targets (`fuzz/`) and for the test that replays their corpus: each
//! takes arbitrary bytes and drives one parser of network input the way a request would. None may
//! panic; `page_token` and `playback_access` also check that no forged token is ever accepted.

use openivs_model::service::model;
use time::OffsetDateTime;

use crate::api::pagination::{Listing, PageTokens};
use crate::auth::sigv4::{RequestParts, verify};

fn operation_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = model().operations().map(|op| op.name.as_str()).collect();
    names.sort_unstable();
    names
}

/// First byte: which operation; then the body (and, for tag routes, URI label and query).
pub fn validate_input(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let names = operation_names();
    let operation = names[selector as usize % names.len()];
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let body = parts.next().unwrap_or("");
    let label = parts.next();
    let query = parts.next();
    if let Ok(input) = crate::http::gather_input(operation, label, query, &axum::body::Bytes::from(body.to_owned())) {
        let _ = model().validate_input(operation, &input);
    }
}

/// Lines: method, path, query, then `name: value` headers up to an empty line, then the body.
pub fn sigv4_verify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let method = lines.next().unwrap_or("POST");
    let raw_path = lines.next().unwrap_or("/");
    let query = lines.next().filter(|q| !q.is_empty());
    let headers: Vec<(&str, &[u8])> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim().as_bytes()))
        .collect();
    let request = RequestParts { method, raw_path, raw_query: query, headers, body: body.as_bytes() };
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time");
    let _ = verify(&request, now, |key| (key == "test").then_some("test"));
}

/// Any text as a nextToken: only the empty token may yield a cursor.
pub fn page_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let tokens = PageTokens::new(b"fuzzing key".to_vec());
    let listing = Listing::new("ListChannels", "123456789012", "us-west-2", &[]);
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time");
    match tokens.cursor(Some(&token), &listing, now) {
        Ok(cursor) => assert!(token.is_empty() && cursor == 0, "a forged token was accepted"),
        Err(error) => assert_eq!(error.kind, openivs_model::ErrorKind::Validation),
    }
}

/// RTMP as a publisher sends it after the handshake: the chunk stream, and in each message the
/// AMF0 commands, FLV tags, AVC configuration and SPS, AAC configuration it carries. The first
/// byte sets how the rest is split into reads (partial chunks must wait, never fail or panic).
pub fn rtmp_chunks(data: &[u8]) {
    use openivs_media::rtmp::chunk::{ChunkDecoder, Limits};
    let Some((&split, rest)) = data.split_first() else { return };
    let step = usize::from(split).max(1);
    // As the server does: small limits until the first messages (the setup), larger after.
    let setup = Limits { max_message_len: 1 << 12, max_partial_bytes: 1 << 13, max_chunk_streams: 8 };
    let publishing = Limits { max_message_len: 1 << 16, max_partial_bytes: 1 << 18, max_chunk_streams: 16 };
    let mut decoder = ChunkDecoder::new(setup);
    let mut buffer = bytes::BytesMut::new();
    let mut messages = 0;
    for piece in rest.chunks(step) {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(message)) => {
                    messages += 1;
                    if messages == 3 {
                        decoder.set_limits(publishing);
                    }
                    media_message(message.type_id, &message.payload)
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// What the ingest session does with one message's payload.
fn media_message(type_id: u8, payload: &[u8]) {
    use openivs_media::rtmp::message_type;
    use openivs_media::{aac, amf0, flv, h264};
    match type_id {
        message_type::COMMAND_AMF0 | message_type::DATA_AMF0 => {
            let _ = amf0::decode_all(payload);
        }
        message_type::VIDEO => {
            if let Ok(flv::VideoPacket::SequenceHeader { config, .. }) = flv::parse_video(payload)
                && let Ok(avcc) = h264::DecoderConfiguration::parse(config)
            {
                let _ = avcc.codec_string();
                for sps in &avcc.sps {
                    if let Ok(sps) = h264::SequenceParameterSet::parse(sps) {
                        let _ = (sps.profile_name(), sps.level_name());
                    }
                }
            }
        }
        message_type::AUDIO => {
            if let Ok(flv::AudioPacket::AacSequenceHeader(config)) = flv::parse_audio(payload) {
                let _ = aac::AudioSpecificConfig::parse(config);
            }
        }
        _ => {}
    }
}

/// One payload straight into the media parsers: the first byte picks the message type.
pub fn media_payload(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else { return };
    let type_id = [8u8, 9, 18, 20][usize::from(selector) % 4];
    media_message(type_id, payload);
    let _ = openivs_media::flv::parse_video_tracks(payload);
    let _ = openivs_media::h264::SequenceParameterSet::parse(payload);
    let _ = openivs_media::h264::DecoderConfiguration::parse(payload);
    for coding in [openivs_media::video::VideoCoding::Avc, openivs_media::video::VideoCoding::Hevc] {
        if let Ok(record) = openivs_media::video::VideoRecord::parse(coding, payload) {
            let _ = openivs_media::ts::to_annex_b(payload, &record, true);
        }
    }
    let _ = openivs_media::h265::SequenceParameterSet::parse(payload);
    let _ = openivs_media::flv::read_file(payload);
    let _ = openivs_media::rtmp::handshake::server_response(payload, 0, &[1, 2, 3]);
}

/// Any bytes as a transcoder's MPEG-TS output or an SRT publisher's: demuxed in uneven pieces
/// into rendition hubs, and into access units as SRT ingest reads them; never a panic and never
/// more memory than the demuxer's bounds.
pub fn transport_stream(data: &[u8]) {
    use crate::transcode::ffmpeg::{Outputs, Track};
    use crate::transcode::output::RenditionFeeds;
    let outputs = Outputs(vec![("480p30".into(), Track::Video), ("480p30".into(), Track::Audio)]);
    let hub = std::sync::Arc::new(crate::live::hub::Hub::new());
    let mut frames = hub.subscribe();
    let hubs = [("480p30".to_owned(), hub)].into_iter().collect();
    let mut feeds = RenditionFeeds::new(outputs, hubs, std::sync::Arc::default());
    let split = data.first().map_or(188, |b| usize::from(*b).max(1));
    for piece in data.chunks(split) {
        feeds.push(piece);
        while frames.frames.try_recv().is_ok() {}
    }
    let mut demuxer = openivs_media::ts_demux::TsDemuxer::new();
    demuxer.push(data);
    demuxer.flush();
    let mut access_units = openivs_media::ts_demux::AccessUnits::new();
    while let Some(pes) = demuxer.next_pes() {
        let _ = access_units.of(&pes);
    }
}

/// What a viewer sends to the playback door: the first byte picks a playback token (`?token=`),
/// a viewer-session id (the `{session}` of media URLs), or `X-Forwarded-For` and `Origin`
/// headers. No token or session id made up by the fuzzer may be accepted.
pub fn playback_access(data: &[u8]) {
    use crate::playback::access::{Access, Cidr, origin_allowed, token_is_refused};
    use crate::playback::viewers::{Refused, ViewerSessions};
    let Some((&selector, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    match selector % 3 {
        0 => assert!(token_is_refused(&text), "a forged playback token was accepted"),
        1 => {
            let viewers = ViewerSessions::new(crate::settings::Limits::default());
            let channel = "arn:aws:ivs:us-west-2:123456789012:channel/abcdABCDefgh";
            let refused = viewers.touch(&text, channel, std::net::IpAddr::from([127, 0, 0, 1]));
            assert_eq!(refused.err(), Some(Refused::Unknown), "a forged session id was accepted");
        }
        _ => {
            let (forwarded, origin) = text.split_once('\n').unwrap_or((&text, ""));
            let proxies = vec![Cidr::parse("127.0.0.0/8").expect("a CIDR block")];
            let access = Access::new(None, proxies).expect("no database to read");
            let mut headers = axum::http::HeaderMap::new();
            if let Ok(value) = axum::http::HeaderValue::from_str(forwarded) {
                headers.insert("x-forwarded-for", value);
            }
            let _ = access.viewer_address(std::net::IpAddr::from([127, 0, 0, 1]), &headers);
            let allowed = ["https://*.example.com".to_owned(), "https://example.org".to_owned()];
            let _ = origin_allowed(&allowed, Some(origin));
            let _ = Cidr::parse(forwarded);
        }
    }
}
