//! Recordings a crash interrupted. Each recording in progress keeps a journal file in the data
//! directory (`recordings-in-progress/{recordingId}.json`: where it is, its rendition, size and
//! codecs) from its start until `recording-ended.json` is written, and stores an EVENT
//! playlist and byte-range playlist with every segment. At start-up, every journal left behind
//! is a recording whose stream ended with the process: it is finished from what reached the
//! bucket (VOD playlists with `#EXT-X-ENDLIST`, master playlists, `recording-ended.json`). The
//! segment that was still being written is lost with the process.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;

use super::buckets::Buckets;
use super::recorder::{Journal, Segment, Writer};
use crate::events::Outbox;

/// The journals in `journal_dir`: the recordings the last stop interrupted. (Listed before
/// ingest starts, so the journals of new recordings are never among them.)
pub fn interrupted(journal_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(journal_dir) else { return Vec::new() };
    entries.filter_map(|entry| Some(entry.ok()?.path())).collect()
}

/// Finishes the recordings whose journals are `journals`; how many.
pub async fn recover(journals: Vec<PathBuf>, buckets: Arc<Buckets>, outbox: Option<Outbox>) -> usize {
    let mut finished = 0;
    for path in journals {
        let journal = match tokio::fs::read(&path).await.map(|bytes| serde_json::from_slice::<Journal>(&bytes)) {
            Ok(Ok(journal)) => journal,
            _ => {
                tracing::warn!("recording: unreadable journal {} removed", path.display());
                let _ = tokio::fs::remove_file(&path).await;
                continue;
            }
        };
        let hls = format!("{}/media/hls/{}", journal.prefix, journal.rendition);
        let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let playlist = text(buckets.get(&journal.bucket, &format!("{hls}/playlist.m3u8")).await.ok().flatten());
        let byte_ranges =
            text(buckets.get(&journal.bucket, &format!("{hls}/byte-range-variant.m3u8")).await.ok().flatten());
        let mut segments = segments_of(&playlist);
        attach_ranges(&mut segments, &byte_ranges);
        let mut bytes_written = 0;
        for (index, segment) in segments.iter_mut().enumerate() {
            let size = buckets.size(&journal.bucket, &format!("{hls}/{index}.ts")).await;
            bytes_written += size;
            if segment.ranges.is_empty() {
                segment.ranges.push((0, size as usize, segment.duration_ms));
            }
        }
        let count = segments.len();
        let writer = Writer::recovered(buckets.clone(), journal, path, segments, bytes_written, outbox.clone());
        let prefix = writer.finish_recovered().await;
        tracing::info!("recording: finished {prefix} ({count} segments), interrupted by the last stop");
        finished += 1;
    }
    finished
}

/// The segments an EVENT playlist lists, in order.
fn segments_of(playlist: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let (mut discontinuity, mut date, mut duration_ms) = (false, None, None);
    for line in playlist.lines() {
        if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if let Some(text) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            date = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok();
        } else if let Some(text) = line.strip_prefix("#EXTINF:") {
            duration_ms = text.trim_end_matches(',').parse::<f64>().ok().map(|s| (s * 1000.0).round() as i64);
        } else if !line.starts_with('#') && !line.is_empty() {
            segments.push(Segment {
                duration_ms: duration_ms.take().unwrap_or(1),
                date: date.take().unwrap_or_else(OffsetDateTime::now_utc),
                discontinuity: std::mem::take(&mut discontinuity),
                ranges: Vec::new(),
            });
        }
    }
    segments
}

/// The keyframe ranges of the byte-range playlist, onto the segments they belong to.
fn attach_ranges(segments: &mut [Segment], byte_ranges: &str) {
    let mut duration_ms = None;
    let mut range = None;
    for line in byte_ranges.lines() {
        if let Some(text) = line.strip_prefix("#EXTINF:") {
            duration_ms = text.trim_end_matches(',').parse::<f64>().ok().map(|s| (s * 1000.0).round() as i64);
        } else if let Some(text) = line.strip_prefix("#EXT-X-BYTERANGE:") {
            range =
                text.split_once('@').and_then(|(length, offset)| Some((offset.parse().ok()?, length.parse().ok()?)));
        } else if let Some(index) = line.strip_suffix(".ts").and_then(|n| n.parse::<usize>().ok())
            && let (Some(segment), Some((offset, length))) = (segments.get_mut(index), range.take())
        {
            segment.ranges.push((offset, length, duration_ms.take().unwrap_or(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_give_back_their_segments_and_ranges() {
        let playlist = "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-PROGRAM-DATE-TIME:2026-12-03T22:00:00.000Z\n\
                        #EXTINF:10.006,\n0.ts\n#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-12-03T22:00:12.000Z\n\
                        #EXTINF:4.068,\n1.ts\n";
        let byte_ranges = "#EXTM3U\n#EXTINF:2.000,\n#EXT-X-BYTERANGE:100@0\n0.ts\n#EXTINF:8.006,\n\
                           #EXT-X-BYTERANGE:300@100\n0.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:4.068,\n#EXT-X-BYTERANGE:50@0\n1.ts\n";
        let mut segments = segments_of(playlist);
        attach_ranges(&mut segments, byte_ranges);
        assert_eq!(segments.len(), 2);
        assert_eq!((segments[0].duration_ms, segments[1].duration_ms), (10006, 4068));
        assert!(!segments[0].discontinuity && segments[1].discontinuity);
        assert_eq!(segments[0].ranges, vec![(0, 100, 2000), (100, 300, 8006)]);
        assert_eq!(segments[1].ranges, vec![(0, 50, 4068)]);
    }
}
