//! Recording: every live stream of a channel with a recording configuration is written to the
//! configuration's bucket in IVS's layout ([`recorder`]); buckets are folders of the buckets
//! directory or buckets of an S3-compatible store ([`buckets`]), the latter written through an
//! on-disk spool that rides out the store's outages ([`spool`]); recordings a crash interrupted are finished at start-up
//! ([`recovery`]); thumbnails are decoded and encoded in-process ([`thumbnails`]); a transcoded
//! stream's selected renditions are recorded beside its source ([`renditions`]).

pub mod buckets;
pub mod recorder;
pub mod recovery;
pub mod renditions;
pub mod spool;
pub mod thumbnails;
