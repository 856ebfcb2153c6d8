//! End-to-end tests of the IVS control plane: a real `openivs` process on loopback, driven by
//! real clients (the AWS SDK for Rust, `aws-sigv4`-signed raw HTTP, the AWS CLI).

mod harness;
#[allow(dead_code)]
mod load_balancer;

mod ad_breaks;
mod auth;
mod aws_cli;
mod channels;
mod configurations;
mod console;
mod demo;
mod events;
mod failover;
mod faults;
mod ingest;
mod media;
mod metadata;
mod moto;
mod multitrack;
mod multitrack_broadcaster;
mod operator;
mod playback;
mod playback_key_pairs;
mod private_channels;
mod raw_rtmp;
mod recording;
mod recording_s3;
mod restart;
mod srt;
mod store;
mod stream_keys;
mod streams;
mod tags;
mod tokens;
mod transcoding;
mod viewer_sessions;
mod webhook_receiver;
