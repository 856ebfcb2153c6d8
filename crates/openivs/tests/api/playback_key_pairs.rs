//! ImportPlaybackKeyPair, GetPlaybackKeyPair, ListPlaybackKeyPairs, DeletePlaybackKeyPair.

use crate::assert_error;
use crate::harness::{ACCOUNT, P256_PUBLIC_KEY, P384_PUBLIC_KEYS, REGION, Server};

#[tokio::test]
async fn import_get_list_delete() {
    let server = Server::start();
    let client = server.client();
    let imported = client
        .import_playback_key_pair()
        .public_key_material(P384_PUBLIC_KEYS[0])
        .name("key-1")
        .tags("env", "test")
        .send()
        .await
        .unwrap();
    let key_pair = imported.key_pair().unwrap();
    let arn = key_pair.arn().unwrap();
    assert!(arn.starts_with(&format!("arn:aws:ivs:{REGION}:{ACCOUNT}:playback-key/")));
    assert_eq!(key_pair.name(), Some("key-1"));
    let fingerprint = key_pair.fingerprint().unwrap();
    let bytes: Vec<&str> = fingerprint.split(':').collect();
    assert_eq!(bytes.len(), 16, "{fingerprint}");
    assert!(bytes.iter().all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit())));

    let fetched = client.get_playback_key_pair().arn(arn).send().await.unwrap();
    assert_eq!(fetched.key_pair(), Some(key_pair));
    let listed = client.list_playback_key_pairs().send().await.unwrap();
    assert_eq!(listed.key_pairs().len(), 1);
    assert_eq!(listed.key_pairs()[0].name(), Some("key-1"));
    assert_eq!(listed.key_pairs()[0].tags().unwrap().get("env").map(String::as_str), Some("test"));

    client.delete_playback_key_pair().arn(arn).send().await.unwrap();
    assert_error!(client.get_playback_key_pair().arn(arn).send(), "ResourceNotFoundException", 404);
    assert_error!(client.delete_playback_key_pair().arn(arn).send(), "ResourceNotFoundException", 404);
}

#[tokio::test]
async fn same_key_twice_invalid_keys_and_quota() {
    let server = Server::start();
    let client = server.client();
    client.import_playback_key_pair().public_key_material(P384_PUBLIC_KEYS[0]).send().await.unwrap();
    assert_error!(
        client.import_playback_key_pair().public_key_material(P384_PUBLIC_KEYS[0]).send(),
        "ConflictException",
        409
    );
    assert_error!(
        client.import_playback_key_pair().public_key_material(P256_PUBLIC_KEY).send(),
        "ValidationException",
        400
    );
    assert_error!(client.import_playback_key_pair().public_key_material("garbage").send(), "ValidationException", 400);
    client.import_playback_key_pair().public_key_material(P384_PUBLIC_KEYS[1]).send().await.unwrap();
    client.import_playback_key_pair().public_key_material(P384_PUBLIC_KEYS[2]).send().await.unwrap();
    // The default quota is 3 key pairs, as in IVS.
    assert_error!(
        client.import_playback_key_pair().public_key_material(P384_PUBLIC_KEYS[3]).send(),
        "ServiceQuotaExceededException",
        402
    );
    let listed = client.list_playback_key_pairs().send().await.unwrap();
    assert_eq!(listed.key_pairs().len(), 3);
}
