//! Adaptive bitrate (issue 12, in progress): the rendition ladders of STANDARD and ADVANCED
//! channels ([`ladder`]) and the ffmpeg command that encodes them ([`ffmpeg`]). Running it per
//! live channel, demuxing its output into the hub, supervision and admission control come next;
//! until then every channel serves its source rendition only (README, Status).

pub mod ffmpeg;
pub mod ladder;
