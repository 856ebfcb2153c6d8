//! Ad-break markers: turns a stream's ad schedule (InsertAdBreak and the post-roll of its ad
//! configuration, held by the hub) into the signals the packager writes before segments: an
//! `EXT-X-DATERANGE` with `SCTE35-OUT` and `#EXT-X-CUE-OUT` where a break starts,
//! `#EXT-X-CUE-OUT-CONT` on the segments inside it, and `SCTE35-IN` with `#EXT-X-CUE-IN` where
//! the program returns. Breaks start and end on segment boundaries (keyframes), the only places
//! an ad-insertion service can splice without re-encoding.

use std::collections::HashSet;
use std::time::Duration;

use openivs_media::hls::{AdSignals, Cue, DateRange};
use openivs_media::scte35::SpliceInsert;
use openivs_model::timestamp;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::live::hub::AdSchedule;

/// A segment starting this little before a break's time still starts (or ends) it: timestamps
/// are whole milliseconds and frames do not fall exactly on the second.
const BOUNDARY_TOLERANCE_MS: i64 = 50;
/// `unique_program_id` of the cues: one program per stream.
const PROGRAM_ID: u16 = 1;

/// A break in progress.
struct ActiveBreak {
    id: String,
    event_id: u32,
    start_dts: i64,
    start_date: String,
    duration: Duration,
}

pub struct AdMarker {
    schedule: watch::Receiver<AdSchedule>,
    active: Option<ActiveBreak>,
    /// Breaks of the schedule already started (and maybe ended).
    started: HashSet<String>,
    event_id: u32,
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl AdMarker {
    pub fn new(schedule: watch::Receiver<AdSchedule>) -> AdMarker {
        AdMarker { schedule, active: None, started: HashSet::new(), event_id: 0 }
    }

    /// The signals of a segment whose first frame has decode time `dts_ms`, presentation time
    /// `pts` (90 kHz) and date `date`: the end of the break in progress once its duration has
    /// passed, else its continuation; or the start of the earliest break that is due.
    pub fn at_segment_start(&mut self, dts_ms: i64, pts: u64, date: OffsetDateTime) -> AdSignals {
        if let Some(active) = &self.active {
            let elapsed_ms = dts_ms - active.start_dts;
            if elapsed_ms + BOUNDARY_TOLERANCE_MS < active.duration.as_millis() as i64 {
                return AdSignals {
                    date_ranges: Vec::new(),
                    cue: Some(Cue::OutCont { elapsed: elapsed_ms as f64 / 1000.0, duration: seconds(active.duration) }),
                };
            }
            let cue = SpliceInsert {
                event_id: active.event_id,
                out_of_network: false,
                pts,
                duration: None,
                unique_program_id: PROGRAM_ID,
            };
            let end = DateRange {
                id: active.id.clone(),
                start_date: active.start_date.clone(),
                end_date: Some(timestamp::format(date)),
                duration: Some(elapsed_ms.max(0) as f64 / 1000.0),
                planned_duration: None,
                scte35_out: None,
                scte35_in: Some(cue.hex()),
            };
            self.active = None;
            // A break due right now starts with the next segment: one segment carries one cue.
            return AdSignals { date_ranges: vec![end], cue: Some(Cue::In) };
        }
        let due = {
            let schedule = self.schedule.borrow();
            schedule
                .breaks
                .iter()
                .filter(|b| !self.started.contains(&b.id))
                .filter(|b| {
                    b.start_at.is_none_or(|at| date + time::Duration::milliseconds(BOUNDARY_TOLERANCE_MS) >= at)
                })
                .min_by_key(|b| b.start_at.unwrap_or(b.requested_at))
                .cloned()
        };
        let Some(due) = due else { return AdSignals::default() };
        self.started.insert(due.id.clone());
        let start_date = timestamp::format(date);
        let (range, cue) = self.break_start(&due.id, &start_date, pts, due.duration);
        self.active = Some(ActiveBreak {
            id: due.id,
            event_id: self.event_id,
            start_dts: dts_ms,
            start_date,
            duration: due.duration,
        });
        AdSignals { date_ranges: vec![range], cue: Some(cue) }
    }

    /// The post-roll break of the ad configuration, marked after the last segment when the
    /// stream ends (`pts` and `date`: the end of the last segment). None while a break is still
    /// in progress: a break cannot start inside another.
    pub fn at_stream_end(&mut self, pts: u64, date: OffsetDateTime) -> AdSignals {
        let post_roll = self.schedule.borrow().post_roll;
        match post_roll {
            Some(duration) if self.active.is_none() => {
                let id = crate::api::random_alphanumeric(12);
                let (range, cue) = self.break_start(&id, &timestamp::format(date), pts, duration);
                AdSignals { date_ranges: vec![range], cue: Some(cue) }
            }
            _ => AdSignals::default(),
        }
    }

    fn break_start(&mut self, id: &str, start_date: &str, pts: u64, duration: Duration) -> (DateRange, Cue) {
        self.event_id = self.event_id.wrapping_add(1);
        let cue = SpliceInsert {
            event_id: self.event_id,
            out_of_network: true,
            pts,
            duration: Some((duration.as_millis() as u64) * 90),
            unique_program_id: PROGRAM_ID,
        };
        let range = DateRange {
            id: id.to_owned(),
            start_date: start_date.to_owned(),
            end_date: None,
            duration: None,
            planned_duration: Some(seconds(duration)),
            scte35_out: Some(cue.hex()),
            scte35_in: None,
        };
        (range, Cue::Out { duration: seconds(duration) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::hub::{AdBreak, Hub};

    #[test]
    fn a_break_runs_from_the_segment_after_its_time_for_its_duration() {
        let hub = Hub::new();
        let mut marker = AdMarker::new(hub.subscribe().ads);
        let t0 = OffsetDateTime::now_utc();
        let at = |ms: i64| t0 + time::Duration::milliseconds(ms);
        assert!(marker.at_segment_start(0, 0, at(0)).is_empty());
        hub.schedule_ad_break(AdBreak {
            id: "abcdefabcdef".into(),
            start_at: Some(at(3000)),
            duration: Duration::from_secs(4),
            requested_at: t0,
        })
        .unwrap();
        assert!(marker.at_segment_start(2000, 180_000, at(2000)).is_empty());
        let start = marker.at_segment_start(3990, 359_100, at(3990));
        assert_eq!(start.cue, Some(Cue::Out { duration: 4.0 }));
        assert_eq!(start.date_ranges[0].planned_duration, Some(4.0));
        assert!(start.date_ranges[0].scte35_out.as_deref().unwrap().starts_with("0xFC"));
        let inside = marker.at_segment_start(5990, 539_100, at(5990));
        assert_eq!(inside.cue, Some(Cue::OutCont { elapsed: 2.0, duration: 4.0 }));
        let end = marker.at_segment_start(7970, 717_300, at(7970));
        assert_eq!(end.cue, Some(Cue::In));
        assert_eq!(end.date_ranges[0].id, "abcdefabcdef");
        assert_eq!(end.date_ranges[0].duration, Some(3.98));
        assert!(marker.at_segment_start(9970, 897_300, at(9970)).is_empty());
        // No post-roll without an ad configuration that enables one.
        assert!(marker.at_stream_end(900_000, at(10_000)).is_empty());
        hub.set_post_roll(Some(Duration::from_secs(15)));
        assert_eq!(marker.at_stream_end(900_000, at(10_000)).cue, Some(Cue::Out { duration: 15.0 }));
    }
}
