//! openivs: Amazon Interactive Video Service (IVS), open source.
//!
//! The server binary's library half. See ARCHITECTURE.md for the bird's-eye view; in short:
//! [`settings`] → [`server::serve`] opens the [`store`], builds the [`api`] over it and the
//! [`live`] registry, and serves it through [`http`], which authenticates with [`auth`].

pub mod api;
pub mod auth;
pub mod cluster;
pub mod console;
pub mod demo;
pub mod events;
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod playback;
pub mod playback_keys;
pub mod recording;
pub mod server;
pub mod settings;
pub mod store;
pub mod transcode;
