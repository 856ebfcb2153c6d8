//! Which renditions a recording holds, and what its writers share.
//!
//! A recording configuration's `renditionConfiguration` selects among the renditions the stream
//! is offered in (the source, when the channel type offers it, and the transcoded renditions):
//! `ALL` of them, `NONE` (the recording then holds its event files and thumbnails only), or
//! `CUSTOM` classes by the picture's short side: `LOWEST_RESOLUTION` (the smallest rendition),
//! `SD` (361–480 lines), `HD` (481–720), `FULL_HD` (721–1080). The `audio_only` rendition is not
//! recorded.
//!
//! The recorder of the stream's hub (the source) is the recording's primary writer: it writes
//! the event files, thumbnails and multivariant playlists, and the source's media when the
//! source is selected. Each selected transcoded rendition gets a writer of its own under the
//! same prefix (`media/hls/{rendition}/`), started by the transcoder once its renditions exist.
//! They meet here: the ladder, what each has recorded (for `master.m3u8` and the event files),
//! and how many are still writing (the primary ends the recording after them).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use openivs_model::resources::RenditionConfiguration;

/// How long the primary waits, at the end, for the renditions' writers to finish.
const RENDITIONS_FINISH_WITHIN: Duration = Duration::from_secs(15);

/// A rendition as the recording's playlists and event files describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub codecs: String,
    pub bandwidth: u64,
    pub duration_ms: i64,
}

/// Where the renditions' writers write: the recording's buckets, bucket and prefix.
#[derive(Clone)]
pub struct Destination {
    pub buckets: Arc<super::buckets::Buckets>,
    pub recording: super::recorder::Recording,
    pub prefix: String,
}

pub struct RecordingRenditions {
    configuration: RenditionConfiguration,
    /// Whether the channel type offers the source itself (not ADVANCED channels).
    source_offered: bool,
    /// The transcoded video renditions the stream is offered in: (name, width, height), best
    /// first. Unset while unknown; set empty when the stream is not transcoded.
    ladder: OnceLock<Vec<(String, u32, u32)>>,
    /// Set when the primary starts.
    destination: OnceLock<Destination>,
    recorded: Mutex<Vec<Recorded>>,
    /// Rendition writers still writing.
    running: tokio::sync::watch::Sender<usize>,
    /// Where the primary's recorded segments started (presentation times, newest last): the
    /// renditions cut theirs at the same pictures.
    cuts: Mutex<std::collections::VecDeque<i64>>,
}

/// Segment starts remembered (minutes of 10 s segments; the renditions run seconds behind).
const CUTS_KEPT: usize = 32;
/// How far (ms) a rendition's picture may be from the source's at a cut.
const CUT_TOLERANCE_MS: i64 = 20;

impl RecordingRenditions {
    pub fn new(configuration: RenditionConfiguration, source_offered: bool) -> Arc<RecordingRenditions> {
        Arc::new(RecordingRenditions {
            configuration,
            source_offered,
            ladder: OnceLock::new(),
            destination: OnceLock::new(),
            recorded: Mutex::default(),
            running: tokio::sync::watch::Sender::new(0),
            cuts: Mutex::default(),
        })
    }

    /// The primary started a segment at the picture of presentation time `pts_ms`.
    pub fn note_cut(&self, pts_ms: i64) {
        let mut cuts = self.cuts.lock().expect("cuts lock");
        if cuts.len() >= CUTS_KEPT {
            cuts.pop_front();
        }
        cuts.push_back(pts_ms);
    }

    /// Whether a rendition's keyframe at `pts_ms` starts a segment: where the primary started
    /// one (`None` while the primary has cut nothing: the rendition then cuts by its own rule).
    pub fn is_cut(&self, pts_ms: i64) -> Option<bool> {
        let cuts = self.cuts.lock().expect("cuts lock");
        if cuts.is_empty() {
            return None;
        }
        Some(cuts.iter().rev().any(|cut| (cut - pts_ms).abs() <= CUT_TOLERANCE_MS))
    }

    /// The stream's transcoded renditions (video ones, best first), once known.
    pub fn set_ladder(&self, ladder: Vec<(String, u32, u32)>) {
        let _ = self.ladder.set(ladder);
    }

    /// The transcoded renditions recorded: (name, width, height), best first.
    pub fn selected_ladder(&self) -> Vec<(String, u32, u32)> {
        let ladder = self.ladder.get().cloned().unwrap_or_default();
        ladder.into_iter().filter(|(_, width, height)| self.selects(false, *width.min(height))).collect()
    }

    pub fn set_destination(&self, destination: Destination) {
        let _ = self.destination.set(destination);
    }

    pub fn destination(&self) -> Option<&Destination> {
        self.destination.get()
    }

    /// Whether a rendition whose picture's short side is `short_side` is recorded (`source`:
    /// it is the source rendition).
    pub fn selects(&self, source: bool, short_side: u32) -> bool {
        let ladder = self.ladder.get().map(Vec::as_slice).unwrap_or_default();
        if source && !self.source_offered && !ladder.is_empty() {
            return false;
        }
        match self.configuration.rendition_selection.as_str() {
            "NONE" => false,
            "CUSTOM" => {
                let offered = ladder
                    .iter()
                    .map(|(_, width, height)| *width.min(height))
                    .chain(self.source_offered.then_some(short_side));
                let lowest = offered.min().unwrap_or(short_side);
                self.configuration.renditions.iter().any(|class| match class.as_str() {
                    "LOWEST_RESOLUTION" => short_side <= lowest,
                    "SD" => (361..=480).contains(&short_side),
                    "HD" => (481..=720).contains(&short_side),
                    "FULL_HD" => (721..=1080).contains(&short_side),
                    _ => false,
                })
            }
            _ => true,
        }
    }

    /// Notes (or updates) what a writer has recorded.
    pub fn note(&self, rendition: Recorded) {
        let mut recorded = self.recorded.lock().expect("renditions lock");
        recorded.retain(|r| r.name != rendition.name);
        recorded.push(rendition);
        // Best first, as players expect the multivariant playlist.
        recorded.sort_by_key(|r| std::cmp::Reverse((r.height.min(r.width), r.bandwidth)));
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("renditions lock").clone()
    }

    /// The stream is transcoded: renditions besides the source may be recorded (their writers
    /// start only once the ladder is set).
    pub fn has_writers(&self) -> bool {
        self.ladder.get().is_some_and(|l| !l.is_empty())
    }

    /// A rendition writer starts; the guard counts it until dropped.
    pub fn writer_started(self: &Arc<Self>) -> WriterRunning {
        self.running.send_modify(|n| *n += 1);
        WriterRunning(self.clone())
    }

    /// Waits (bounded) until every rendition writer has finished.
    pub async fn writers_finished(&self) {
        let mut running = self.running.subscribe();
        let _ = tokio::time::timeout(RENDITIONS_FINISH_WITHIN, running.wait_for(|n| *n == 0)).await;
    }
}

/// Counts a rendition writer as running.
pub struct WriterRunning(Arc<RecordingRenditions>);

impl Drop for WriterRunning {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configuration(selection: &str, renditions: &[&str]) -> RenditionConfiguration {
        RenditionConfiguration {
            rendition_selection: selection.into(),
            renditions: renditions.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn selections_by_class() {
        let ladder =
            || vec![("480p30".to_owned(), 852, 480), ("360p30".to_owned(), 640, 360), ("160p30".to_owned(), 284, 160)];
        let all = RecordingRenditions::new(configuration("ALL", &[]), true);
        all.set_ladder(ladder());
        assert!(all.selects(true, 720) && all.selects(false, 160));
        let none = RecordingRenditions::new(configuration("NONE", &[]), true);
        assert!(!none.selects(true, 720));
        let custom = RecordingRenditions::new(configuration("CUSTOM", &["HD", "LOWEST_RESOLUTION"]), true);
        custom.set_ladder(ladder());
        assert!(custom.selects(true, 720) && custom.selects(false, 160));
        assert!(!custom.selects(false, 480) && !custom.selects(false, 360));
        // Without renditions, the source is the lowest.
        let alone = RecordingRenditions::new(configuration("CUSTOM", &["LOWEST_RESOLUTION"]), true);
        alone.set_ladder(Vec::new());
        assert!(alone.selects(true, 1080));
        // ADVANCED channels do not offer the source once they have renditions.
        let advanced = RecordingRenditions::new(configuration("ALL", &[]), false);
        advanced.set_ladder(ladder());
        assert!(!advanced.selects(true, 720) && advanced.selects(false, 480));
        let advanced_alone = RecordingRenditions::new(configuration("ALL", &[]), false);
        advanced_alone.set_ladder(Vec::new());
        assert!(advanced_alone.selects(true, 720), "without a transcoder the source is all there is");
    }
}
