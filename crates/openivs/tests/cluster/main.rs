//! Several openivs nodes sharing one PostgreSQL database, as a cluster runs: each test starts
//! its own PostgreSQL ([`postgres`]) and its nodes (the real binary, as the API suite runs it),
//! and drives them with ffmpeg and the AWS SDK for Rust.
//!
//! Needs PostgreSQL's server programs (`initdb`, `pg_ctl`), ffmpeg, and the test environment's
//! python (PyJWT, cryptography) for playback tokens, moto's S3 server and the AWS CLI, nginx with
//! its stream module and curl; fails, not skips, without them (scripts/test
//! installs them).

#[path = "../api/harness.rs"]
#[allow(dead_code)]
mod harness;

#[path = "../api/media.rs"]
#[allow(dead_code)]
mod media;

mod api;
mod drain;
mod events;
mod nginx;
mod playback;
mod postgres;
mod recording;
mod registry;
mod revocation;

#[path = "../api/load_balancer.rs"]
mod load_balancer;

#[path = "../api/moto.rs"]
mod moto;

#[path = "../api/tokens.rs"]
#[allow(dead_code)]
mod tokens;

#[path = "../api/webhook_receiver.rs"]
#[allow(dead_code)]
mod webhook_receiver;
