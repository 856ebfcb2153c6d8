//! Recording: every live stream of a channel with a recording configuration is written to the
//! configuration's bucket in IVS's layout ([`recorder`]); buckets are folders of the buckets
//! directory or buckets of an S3-compatible store ([`buckets`]), the latter written through an
//! on-disk spool that rides out the store's outages ([`spool`]); each recording in progress
//! keeps a journal in the store ([`journals`]) from which a recording its node's crash
//! interrupted is finished ([`recovery`]); thumbnails are decoded and encoded in-process ([`thumbnails`]); a transcoded
//! stream's selected renditions (or a multitrack stream's tracks) are recorded beside its source
//! ([`renditions`]).

pub mod buckets;
pub mod journals;
pub mod recorder;
pub mod recovery;
pub mod renditions;
pub mod spool;
pub mod thumbnails;

use std::sync::Arc;

use crate::live::LiveStream;
use crate::live::hub::Hub;

/// Starts recording the video renditions (name, width, height, hub) of `live` that its recording
/// configuration selects, each from its hub with the stream's timed metadata.
pub fn record_renditions<'a>(live: &LiveStream, renditions: impl Iterator<Item = (&'a str, u32, u32, &'a Arc<Hub>)>) {
    let Some(recording) = live.recording.get() else { return };
    for (name, width, height, hub) in renditions {
        if !recording.selects(false, width.min(height)) {
            continue;
        }
        tokio::spawn(recorder::run_rendition(
            recording.clone(),
            name.to_owned(),
            hub.subscribe_with(&live.hub),
            hub.ended(),
        ));
    }
}
