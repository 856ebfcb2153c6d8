//! Recording: every live stream of a channel with a recording configuration is written to the
//! configuration's bucket in IVS's layout ([`recorder`]); buckets are folders of the buckets
//! directory ([`buckets`]); thumbnails are decoded and encoded in-process ([`thumbnails`]).

pub mod buckets;
pub mod recorder;
pub mod thumbnails;
