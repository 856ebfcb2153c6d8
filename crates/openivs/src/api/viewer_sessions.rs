//! Viewer-session revocation: StartViewerSessionRevocation and its batch form. A revocation
//! is stored (channel, viewer id, highest revoked version); the playback path refuses sessions of
//! that viewer whose token carries a version at or below it.

use openivs_model::requests::{BatchStartViewerSessionRevocationInput, ViewerSessionRevocation};
use openivs_model::resources::Channel;
use openivs_model::{ErrorKind, IvsError};
use serde_json::{Value, json};

use super::Api;
use crate::auth::Caller;
use crate::store::ViewerRevocation;

async fn revoke(api: &Api, caller: &Caller, request: &ViewerSessionRevocation) -> Result<(), IvsError> {
    api.load::<Channel>(caller, &request.channel_arn).await?;
    let revocation = ViewerRevocation {
        channel_arn: request.channel_arn.clone(),
        viewer_id: request.viewer_id.clone(),
        max_version: request.viewer_session_versions_less_than_or_equal_to.unwrap_or(0),
    };
    api.store.revoke_viewer_sessions(&revocation).await
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
