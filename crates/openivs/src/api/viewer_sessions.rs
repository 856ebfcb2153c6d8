//! Viewer-session revocation: StartViewerSessionRevocation and its batch form. A revocation
//! is stored (channel, viewer id, highest revoked version) until no playback token it matches can
//! be valid; the playback path ends the open sessions of that viewer whose token carried a version
//! at or below it, and refuses such tokens from then on.

use openivs_model::requests::{BatchStartViewerSessionRevocationInput, ViewerSessionRevocation};
use openivs_model::resources::Channel;
use openivs_model::{ErrorKind, IvsError};
use serde_json::{Value, json};

use super::Api;
use crate::auth::Caller;
use crate::playback::access::{SHORT_TOKEN_LIFETIME, unix_now};
use crate::store::{Change, ViewerRevocation, Write};

async fn revoke(api: &Api, caller: &Caller, request: &ViewerSessionRevocation) -> Result<(), IvsError> {
    api.load::<Channel>(caller, &request.channel_arn).await?;
    let now = unix_now();
    let revocation = ViewerRevocation {
        channel_arn: request.channel_arn.clone(),
        viewer_id: request.viewer_id.clone(),
        max_version: request.viewer_session_versions_less_than_or_equal_to.unwrap_or(0),
        // Tokens with a viewer id expire within SHORT_TOKEN_LIFETIME: after that none it
        // matches can open a session (sessions already open are refused by the playback path,
        // which keeps the revocation in memory as long as their ids are valid).
        expires_at: now + SHORT_TOKEN_LIFETIME + 60,
    };
    api.store.apply(Change::new().write(Write::RevokeViewer { revocation: revocation.clone(), now })).await?;
    api.playback.viewers.revoke(&revocation.channel_arn, &revocation.viewer_id, revocation.max_version);
    Ok(())
}

pub(super) async fn start(api: &Api, caller: &Caller, request: ViewerSessionRevocation) -> Result<Value, IvsError> {
    revoke(api, caller, &request).await?;
    Ok(json!({}))
}

/// Each item succeeds or fails on its own; failures are listed in `errors`.
pub(super) async fn batch_start(
    api: &Api,
    caller: &Caller,
    request: BatchStartViewerSessionRevocationInput,
) -> Result<Value, IvsError> {
    let mut errors = Vec::new();
    for item in &request.viewer_sessions {
        match revoke(api, caller, item).await {
            Ok(()) => {}
            Err(error) if error.kind != ErrorKind::InternalServer => errors.push(json!({
                "channelArn": item.channel_arn,
                "viewerId": item.viewer_id,
                "code": error.kind.wire_name(),
                "message": error.message,
            })),
            Err(error) => return Err(error),
        }
    }
    Ok(json!({ "errors": errors }))
}
