//! Recordings a crash interrupted. Each recording in progress keeps a journal in the store
//! ([`super::journals`]: where it is, its rendition, size, codecs and streams) from its start
//! until `recording-ended.json` is written, and stores an EVENT playlist and byte-range playlist
//! with every segment. A journal left behind is a recording whose stream ended with its node:
//! it is finished from what reached the bucket (VOD playlists with `#EXT-X-ENDLIST`, master
//! playlists, `recording-ended.json`) by the node itself when it starts again, or, when the
//! buckets are a shared S3 store, by the node of a cluster that ends the dead node's stream
//! ([`crate::cluster::registry`]), or, for a recording that was waiting out its reconnect window
//! when its node died, by the first node to see the window long over
//! ([`Recovery::follow_parked_elsewhere`]). Whoever finishes a recording first claims its
//! journal (a conditional write), so each is finished once. The segment that was still being
//! written is lost with the node.

use std::sync::Arc;

use time::OffsetDateTime;

use super::buckets::Buckets;
use super::journals::Journals;
use super::recorder::{Journal, Segment, Writer};
use crate::events::Outbox;
use crate::store::RecordingJournal;

/// How long after a recording's reconnect window a journal still waiting means its node died.
const PARKED_GRACE: time::Duration = time::Duration::seconds(10);
/// How often each node looks for such journals.
const PARKED_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The recordings a node's last stop interrupted, as their journals were at its start.
pub struct Interrupted(Vec<(RecordingJournal, Journal)>);

/// Finishes the recordings of streams whose node stopped.
pub struct Recovery {
    journals: Arc<Journals>,
    buckets: Arc<Buckets>,
    outbox: Outbox,
}

impl Recovery {
    pub fn new(journals: Arc<Journals>, buckets: Arc<Buckets>, outbox: Outbox) -> Recovery {
        Recovery { journals, buckets, outbox }
    }

    /// At start-up, before ingest starts (so that no recording of this run is among them): the
    /// recordings this node's last stop interrupted.
    pub async fn interrupted_here(&self) -> Interrupted {
        Interrupted(self.journals.own().await)
    }

    /// Finishes the recordings [`Recovery::interrupted_here`] found; how many.
    pub async fn finish_interrupted(&self, interrupted: Interrupted) -> usize {
        self.finish(interrupted.0).await
    }

    /// Finishes the recording of the stream `stream_id` of `channel_arn`, whose node is gone (its
    /// session was just ended by this node), when its bucket is where this node can reach it
    /// (an S3 store; a folder of another machine is finished by that node when it starts again).
    pub async fn finish_lost_stream(&self, channel_arn: &str, stream_id: &str) -> usize {
        if !self.buckets.is_shared() {
            return 0;
        }
        let interrupted = self.journals.of_stream(channel_arn, stream_id).await;
        self.finish(interrupted).await
    }

    /// Follows the recordings waiting out their reconnect window on other nodes: one still
    /// waiting [`PARKED_GRACE`] after its window ended is one whose node died (a live node
    /// finishes it when the window ends). This node claims its journal, so that only one node
    /// finishes it, and finishes it. Only where the buckets are shared (S3): a folder of another
    /// machine is finished by its node when it starts again.
    pub async fn follow_parked_elsewhere(self: Arc<Self>) {
        if !self.buckets.is_shared() {
            return;
        }
        loop {
            tokio::time::sleep(PARKED_CHECK).await;
            let before_ms = ((OffsetDateTime::now_utc() - PARKED_GRACE).unix_timestamp_nanos() / 1_000_000) as i64;
            for (row, journal) in self.journals.parked_elsewhere_until(before_ms).await {
                let (prefix, node_id) = (journal.prefix.clone(), row.node_id.clone());
                // (Said only by the node whose claim won: another may have seen it too.)
                if self.finish(vec![(row, journal)]).await > 0 {
                    tracing::info!(
                        "recording: {prefix} waited for a comeback on node {node_id}, which is gone: finished it here"
                    );
                }
            }
        }
    }

    /// Finishes each recording whose journal this node claims (one node finishes each, even
    /// when several see it interrupted).
    async fn finish(&self, interrupted: Vec<(RecordingJournal, Journal)>) -> usize {
        let mut finished = 0;
        for (row, mut journal) in interrupted {
            journal.parked_until_ms = None;
            match self.journals.claim(&row.recording_id, &row.node_id, &row.body, &journal).await {
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!("recording: cannot claim the journal of {}: {error}", row.recording_id);
                    continue;
                }
            }
            let recording_id = row.recording_id;
            let (writer, count) =
                recovered_writer(&self.buckets, &self.journals, recording_id, journal, &self.outbox).await;
            let prefix = writer.finish_recovered().await;
            tracing::info!("recording: finished {prefix} ({count} segments), interrupted by its node's stop");
            finished += 1;
        }
        finished
    }
}

/// The writer of an interrupted recording, as its journal and stored playlists describe it, and
/// how many segments it holds.
async fn recovered_writer(
    buckets: &Arc<Buckets>,
    journals: &Arc<Journals>,
    recording_id: String,
    journal: Journal,
    outbox: &Outbox,
) -> (Writer, usize) {
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
    let kept = (journals.clone(), recording_id);
    (Writer::recovered(buckets.clone(), journal, kept, segments, bytes_written, Some(outbox.clone())), count)
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
