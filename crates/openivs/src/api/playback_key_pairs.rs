//! Playback key pairs: ImportPlaybackKeyPair (public half of an ECDSA P-384 key, PEM),
//! GetPlaybackKeyPair, DeletePlaybackKeyPair, ListPlaybackKeyPairs. The public key is kept to
//! verify playback tokens of private channels; it is never returned. The fingerprint is the MD5
//! of the key's DER SubjectPublicKeyInfo, as 16 colon-separated hex bytes (IVS's format).

use md5::{Digest, Md5};
use openivs_model::requests::{ArnInput, ImportPlaybackKeyPairInput, Paging};
use openivs_model::resources::{PlaybackKeyPair, Tags};
use openivs_model::{Arn, IvsError, ResourceType};
use p384::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde_json::{Value, json};

use super::{Api, Resource, new_id, output, quota_page};
use crate::auth::Caller;
use crate::store::{Change, Check, ListQuery, Write};

impl Resource for PlaybackKeyPair {
    const TYPE: ResourceType = ResourceType::PlaybackKeyPair;
    fn arn(&self) -> &str {
        &self.arn
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn unique_key(&self) -> Option<String> {
        let arn = Arn::parse(&self.arn)?;
        Some(format!("playback-key:{}:{}:{}", arn.account, arn.region, self.fingerprint))
    }
}

/// Parses the PEM public key; returns it re-encoded in canonical PEM and its fingerprint.
fn parse_public_key(pem: &str) -> Result<(String, String), IvsError> {
    let invalid = || {
        IvsError::validation(
            "publicKeyMaterial must be the public key of an ECDSA P-384 (secp384r1) key pair, in PEM format",
        )
    };
    let key = p384::PublicKey::from_public_key_pem(pem.trim()).map_err(|_| invalid())?;
    let der = key.to_public_key_der().map_err(|_| invalid())?;
    let canonical = key.to_public_key_pem(p384::pkcs8::LineEnding::LF).map_err(|_| invalid())?;
    let digest = Md5::digest(der.as_bytes());
    let fingerprint = digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    Ok((canonical, fingerprint))
}

pub(super) async fn import(api: &Api, caller: &Caller, request: ImportPlaybackKeyPairInput) -> Result<Value, IvsError> {
    let (public_key_pem, fingerprint) = parse_public_key(&request.public_key_material)?;
    let key_pair = PlaybackKeyPair {
        arn: Arn::new(&caller.region, &caller.account, ResourceType::PlaybackKeyPair, &new_id()).to_string(),
        name: request.name.unwrap_or_default(),
        fingerprint,
        tags: request.tags.unwrap_or_default(),
        public_key_pem: Some(public_key_pem),
    };
    super::check_tag_keys(key_pair.tags.keys())?;
    let (quota_check, quota_error) =
        api.quota_check(caller, ResourceType::PlaybackKeyPair, api.quotas.playback_key_pairs);
    let unique_key = key_pair.unique_key().unwrap_or_default();
    let change = Change::new()
        .require(
            Check::UniqueKeyFree { unique_key },
            IvsError::conflict("This public key has already been imported as a playback key pair"),
        )
        .require(quota_check, quota_error)
        .write(Write::Put(super::record_of(&key_pair)?));
    api.store.apply(change).await?;
    api.playback.access.keys_changed(&caller.account, &caller.region);
    Ok(json!({ "keyPair": output(key_pair.public_view())? }))
}

pub(super) async fn get(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    let (_, key_pair) = api.load::<PlaybackKeyPair>(caller, &request.arn).await?;
    Ok(json!({ "keyPair": output(key_pair.public_view())? }))
}

pub(super) async fn delete(api: &Api, caller: &Caller, request: ArnInput) -> Result<Value, IvsError> {
    api.delete_unreferenced(caller, &request.arn, ResourceType::PlaybackKeyPair).await?;
    api.playback.access.keys_changed(&caller.account, &caller.region);
    Ok(json!({}))
}

pub(super) async fn list(api: &Api, caller: &Caller, request: Paging) -> Result<Value, IvsError> {
    let default_page = quota_page(api.quotas.playback_key_pairs);
    api.list_output(
        "ListPlaybackKeyPairs",
        caller,
        ListQuery::default(),
        &[],
        &request,
        default_page,
        "keyPairs",
        PlaybackKeyPair::summary,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEdqtlC1V8QUAh0bk7sqp0JYFt91HfLZpw
TSkaQiNhzEbWq0jqm8/NOhNow5RyqltHEp7hUqOPWTt0Q2BmxxYfMyaJN0vmO0ZO
NBMX6udjDfcsvGWp/urAa7SoaGBvLY3+
-----END PUBLIC KEY-----";

    #[test]
    fn accepts_p384_and_fingerprints() {
        let (pem, fingerprint) = parse_public_key(PUBLIC_KEY).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(fingerprint.len(), 47);
        assert_eq!(fingerprint.matches(':').count(), 15);
        assert_eq!(parse_public_key(&format!("\n{PUBLIC_KEY}\n")).unwrap().1, fingerprint);
    }

    #[test]
    fn rejects_other_keys() {
        // A P-256 key, and garbage.
        let p256 = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAER8P2rf0t3CebEUvTOedbuHZwoLGj
ewVL0yitprn0Kjm4zHuerBRkXEXsh68rmdXdHo7f9FML2WFXtU1mAx7vfw==
-----END PUBLIC KEY-----";
        assert!(parse_public_key(p256).is_err());
        assert!(parse_public_key("not a key").is_err());
    }
}
