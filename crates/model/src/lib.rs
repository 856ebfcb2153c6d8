//! The wire model of the Amazon IVS control-plane API (restJson1, version 2020-07-14).
//!
//! Everything a client and a server of the IVS API must agree on lives here, free of I/O:
//! - [`service`]: the IVS service model itself (botocore's `service-2.json`, documentation stripped),
//!   compiled once into a validator that enforces every constraint of every operation's input;
//! - [`error`]: the IVS error kinds with their wire names and HTTP statuses (mapped to bytes once,
//!   by the server's HTTP layer);
//! - [`arn`]: resource ARNs and identifiers in IVS's formats;
//! - [`resources`] and [`requests`]: typed resources and operation inputs, serialized with the
//!   model's member names verbatim;
//! - [`timestamp`]: the RFC 3339 rendering the model's `iso8601` timestamps use.

pub mod arn;
pub mod error;
pub mod requests;
pub mod resources;
pub mod service;
pub mod timestamp;

pub use arn::{Arn, ResourceType};
pub use error::{ErrorKind, IvsError};
