//! The web players IVS applications embed, playing openivs channels in a real browser (Debian's
//! headless Chromium, driven by playwright-core through `tests/browser/play.mjs`): hls.js, Shaka
//! Player, video.js (VHS) and the Amazon IVS Player. The broadcaster burns the wall clock into
//! its picture ([`clock`]), so the page measures glass-to-glass latency and stalls from what is
//! on screen. Private channels' revocation and origin rules are checked here too ([`access`]),
//! as a browser meets them, and playback through the nodes of a cluster ([`cluster`]).
//!
//! A test binary of its own: cargo runs test binaries one after another, so the players get the
//! machine's cores to themselves rather than sharing them with the API suite (a stall measured
//! on a starved machine would say nothing about the server).
//!
//! Needs Node.js, ffmpeg, `/usr/bin/chromium`, `tests/browser/node_modules` and PostgreSQL's
//! server programs (scripts/test installs them); fails, not skips, without them.

#[path = "../api/harness.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../api/load_balancer.rs"]
#[allow(dead_code)]
mod load_balancer;

#[path = "../api/tokens.rs"]
mod tokens;

#[path = "../cluster/postgres.rs"]
mod postgres;

#[path = "../api/multitrack_broadcaster.rs"]
#[allow(dead_code)]
mod multitrack_broadcaster;

mod abr;
mod access;
mod clock;
mod cluster;
mod console;
mod failover;
mod https;
mod metadata;
mod recording;
mod web_players;

/// Held by each test for its whole run: cargo runs a binary's tests in parallel, and two browser
/// tests side by side would measure each other's load (stalls), not the server.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
