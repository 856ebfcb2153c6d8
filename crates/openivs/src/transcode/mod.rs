//! Adaptive bitrate (issue 12, in progress): the rendition ladders of STANDARD and ADVANCED
//! channels ([`ladder`]). The transcoder that makes them, its supervision and admission control
//! come next; until then every channel serves its source rendition only (README, Status).

pub mod ladder;
