//! Private channels, viewer-session revocation and playback restriction policies, enforced on
//! live playback. Tokens, keys and the GeoIP database are made by libraries independent of
//! openivs (PyJWT + cryptography, mmdb-writer: `playback_tokens.py`); every refusal is checked
//! for its status, its reason and for carrying nothing of the stream.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::rtmps_url;
use crate::harness::{RawResponse, Server, raw_request};
use crate::ingest::{Publisher, pattern_720p, wait_live};
use crate::playback::path_of;
use crate::tokens::{key_pair, now, python, token};

/// Creates a channel (private or with a restriction policy), publishes to it and waits until it
/// is live: (ARN, playbackUrl path, publisher).
pub(crate) async fn live_channel(
    server: &Server,
    authorized: bool,
    policy_arn: Option<&str>,
) -> (String, String, Publisher) {
    let (arn, playback, _, publisher) = live_channel_with_ingest(server, authorized, policy_arn).await;
    (arn, playback, publisher)
}

/// As [`live_channel`], with the channel's RTMPS ingest URL (stream key included).
async fn live_channel_with_ingest(
    server: &Server,
    authorized: bool,
    policy_arn: Option<&str>,
) -> (String, String, String, Publisher) {
    let mut request = server.client().create_channel().authorized(authorized);
    if let Some(policy_arn) = policy_arn {
        request = request.playback_restriction_policy_arn(policy_arn);
    }
    let out = request.send().await.unwrap();
    let channel = out.channel().unwrap();
    let arn = channel.arn().unwrap().to_owned();
    let url = rtmps_url(&out);
    let publisher = Publisher::start(&url, pattern_720p());
    wait_live(server, &arn, Duration::from_secs(15)).await;
    (arn, path_of(channel.playback_url().unwrap()), url, publisher)
}

fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    raw_request(server, "GET", path, &headers, "")
}

fn with_token(playback_path: &str, token: &str) -> String {
    format!("{playback_path}?token={token}")
}

/// Asserts a refusal: 403, the reason code, and nothing of the stream in the body.
#[track_caller]
pub(crate) fn assert_refused(response: &RawResponse, code: &str) {
    assert_eq!(response.status, 403, "expected a refusal ({code}): {}", response.body);
    assert_eq!(response.json()["error_code"], code, "{}", response.body);
    assert!(!response.body.contains("#EXT"), "a refusal carries nothing of the stream: {}", response.body);
}

/// The media playlist path a multivariant playlist hands out.
#[track_caller]
pub(crate) fn variant_of(response: &RawResponse) -> String {
    assert_eq!(response.status, 200, "{}", response.body);
    response.body.lines().find(|l| l.starts_with('/')).expect("a variant URI").to_owned()
}

#[tokio::test]
async fn playback_tokens_open_private_channels_only_as_ivs_does() {
    let mut server = Server::start();
    let client = server.client();
    let keys =
        server.data_dir.with_file_name(format!("{}-keys", server.data_dir.file_name().unwrap().to_string_lossy()));
    // Three imported keys; the signing key is imported last, so it is tried last.
    let (_, public_1) = key_pair(&keys, "one");
    let (_, public_2) = key_pair(&keys, "two");
    let (signing_key, public_3) = key_pair(&keys, "three");
    let (stranger_key, _) = key_pair(&keys, "stranger");
    let mut imported = Vec::new();
    for public in [&public_1, &public_2, &public_3] {
        let out = client.import_playback_key_pair().public_key_material(public).send().await.unwrap();
        imported.push(out.key_pair().unwrap().arn().unwrap().to_owned());
    }
    let signing_arn = imported.pop().unwrap();

    let (arn, playback, ingest_url, publisher) = live_channel_with_ingest(&server, true, None).await;
    let other_arn =
        client.create_channel().authorized(true).send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    let claims = |extra: Value| {
        let mut claims = json!({ "aws:channel-arn": arn, "exp": now() + 300 });
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        claims
    };
    let good = token(&signing_key, &claims(json!({})));

    // Refusals, each with its reason.
    assert_refused(&get(&server, &playback, &[]), "missing_token");
    assert_refused(&get(&server, &with_token(&playback, "not.a-token"), &[]), "malformed_token");
    assert_refused(&get(&server, &with_token(&playback, "abc"), &[]), "malformed_token");
    let none = python(&["token-none", &claims(json!({})).to_string()]);
    assert_refused(&get(&server, &with_token(&playback, &none), &[]), "unsupported_algorithm");
    let public_3_path = keys.join("three-public.pem");
    let confused = python(&["token-hs256", public_3_path.to_str().unwrap(), &claims(json!({})).to_string()]);
    assert_refused(&get(&server, &with_token(&playback, &confused), &[]), "unsupported_algorithm");
    let stranger = token(&stranger_key, &claims(json!({})));
    assert_refused(&get(&server, &with_token(&playback, &stranger), &[]), "invalid_signature");
    // Another token's claims under this token's signature.
    let good_parts: Vec<&str> = good.split('.').collect();
    let other_claims = token(&signing_key, &claims(json!({ "exp": now() + 999 })));
    let tampered = format!("{}.{}.{}", good_parts[0], other_claims.split('.').nth(1).unwrap(), good_parts[2]);
    assert_refused(&get(&server, &with_token(&playback, &tampered), &[]), "invalid_signature");
    let expired = token(&signing_key, &claims(json!({ "exp": now() - 5 })));
    assert_refused(&get(&server, &with_token(&playback, &expired), &[]), "token_expired");
    let no_exp = token(&signing_key, &json!({ "aws:channel-arn": arn }));
    assert_refused(&get(&server, &with_token(&playback, &no_exp), &[]), "malformed_token");
    let elsewhere = token(&signing_key, &json!({ "aws:channel-arn": other_arn, "exp": now() + 300 }));
    assert_refused(&get(&server, &with_token(&playback, &elsewhere), &[]), "wrong_channel");
    let long_viewer = token(&signing_key, &claims(json!({ "aws:viewer-id": "v", "exp": now() + 3600 })));
    assert_refused(&get(&server, &with_token(&playback, &long_viewer), &[]), "expiry_too_far");
    let long_single = token(&signing_key, &claims(json!({ "aws:single-use-uuid": "u-1", "exp": now() + 3600 })));
    assert_refused(&get(&server, &with_token(&playback, &long_single), &[]), "expiry_too_far");
    let sd = token(&signing_key, &claims(json!({ "aws:maximum-resolution": "SD" })));
    let refusal = get(&server, &with_token(&playback, &sd), &[]);
    assert_refused(&refusal, "resolution_not_allowed");
    assert!(refusal.body.contains("720p"), "the refusal says why: {}", refusal.body);
    // A refused page can read why (CORS allows it), and learns nothing else.
    assert_eq!(refusal.header("access-control-allow-origin"), Some("*"));

    // A good token opens a session; its URLs work without the token, for this channel only.
    let admitted = get(&server, &with_token(&playback, &good), &[]);
    let media = variant_of(&admitted);
    assert!(!media.contains(&good), "the token does not travel into the session's URLs");
    let playlist = get(&server, &media, &[]);
    assert_eq!(playlist.status, 200);
    let segment =
        playlist.body.lines().find(|l| l.ends_with(".ts") && !l.starts_with('#')).expect("a segment").to_owned();
    let segment_path = format!("{}/{segment}", media.rsplit_once('/').unwrap().0);
    assert_eq!(get(&server, &segment_path, &[]).status, 200);
    let other_stem = other_arn.rsplit('/').next().unwrap();
    let own_stem = arn.rsplit('/').next().unwrap();
    assert_eq!(
        get(&server, &media.replace(own_stem, other_stem), &[]).status,
        404,
        "a session is bound to its channel"
    );
    let hd = token(&signing_key, &claims(json!({ "aws:maximum-resolution": "HD" })));
    variant_of(&get(&server, &with_token(&playback, &hd), &[]));
    // The same token opens more sessions (it is not single-use), and outlives nothing: a
    // session opened before expiry keeps playing after it.
    let short = token(&signing_key, &claims(json!({ "exp": now() + 2 })));
    let short_media = variant_of(&get(&server, &with_token(&playback, &short), &[]));
    std::thread::sleep(Duration::from_millis(3100));
    assert_refused(&get(&server, &with_token(&playback, &short), &[]), "token_expired");
    assert_eq!(get(&server, &short_media, &[]).status, 200, "a running session outlives its token");

    // Origins: the claim is checked against Origin, echoed as the CORS origin; strict
    // enforcement extends the check to every request of the session.
    let origins = token(
        &signing_key,
        &claims(json!({ "aws:access-control-allow-origin": "https://shop.example,https://*.example.net" })),
    );
    let with_origins = with_token(&playback, &origins);
    assert_refused(&get(&server, &with_origins, &[]), "origin_not_allowed");
    assert_refused(&get(&server, &with_origins, &[("origin", "https://evil.example")]), "origin_not_allowed");
    let allowed = get(&server, &with_origins, &[("origin", "https://tv.example.net")]);
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://tv.example.net"));
    let lax_media = variant_of(&allowed);
    // Not strict: later requests are not checked.
    assert_eq!(get(&server, &lax_media, &[("origin", "https://evil.example")]).status, 200);
    assert_eq!(get(&server, &lax_media, &[]).status, 200);
    let strict = token(
        &signing_key,
        &claims(
            json!({ "aws:access-control-allow-origin": "https://shop.example", "aws:strict-origin-enforcement": true }),
        ),
    );
    let strict_media =
        variant_of(&get(&server, &with_token(&playback, &strict), &[("origin", "https://shop.example")]));
    assert_refused(&get(&server, &strict_media, &[]), "origin_not_allowed");
    assert_refused(&get(&server, &strict_media, &[("origin", "https://evil.example")]), "origin_not_allowed");
    let strict_playlist = get(&server, &strict_media, &[("origin", "https://shop.example")]);
    assert_eq!(strict_playlist.status, 200);
    assert_eq!(strict_playlist.header("access-control-allow-origin"), Some("https://shop.example"));

    // Revocation: open sessions of the viewer at or below the version end within 2 s, new
    // sessions with such tokens are refused, a higher version plays.
    let viewer = |version: i64| {
        token(&signing_key, &claims(json!({ "aws:viewer-id": "alice", "aws:viewer-session-version": version })))
    };
    let alice_1 = variant_of(&get(&server, &with_token(&playback, &viewer(1)), &[]));
    let bob = token(&signing_key, &claims(json!({ "aws:viewer-id": "bob" })));
    let bob_media = variant_of(&get(&server, &with_token(&playback, &bob), &[]));
    assert_eq!(get(&server, &alice_1, &[]).status, 200);
    client
        .start_viewer_session_revocation()
        .channel_arn(&arn)
        .viewer_id("alice")
        .viewer_session_versions_less_than_or_equal_to(1)
        .send()
        .await
        .unwrap();
    let revoked_at = Instant::now();
    loop {
        let response = get(&server, &alice_1, &[]);
        if response.status == 403 {
            assert_refused(&response, "viewer_session_revoked");
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "a revoked session still plays: {}", response.status);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&server, &bob_media, &[]).status, 200, "other viewers keep playing");
    assert_refused(&get(&server, &with_token(&playback, &viewer(0)), &[]), "viewer_session_revoked");
    assert_refused(&get(&server, &with_token(&playback, &viewer(1)), &[]), "viewer_session_revoked");
    let alice_2 = variant_of(&get(&server, &with_token(&playback, &viewer(2)), &[]));
    assert_eq!(get(&server, &alice_2, &[]).status, 200);

    // Single use: once, also across a restart.
    let single = token(&signing_key, &claims(json!({ "aws:single-use-uuid": "5b0e7a52-9f0c-4f0e-8d7b-single-use-1" })));
    variant_of(&get(&server, &with_token(&playback, &single), &[]));
    assert_refused(&get(&server, &with_token(&playback, &single), &[]), "single_use_token_reused");

    // Deleting the signing key pair: its tokens open nothing more.
    client.delete_playback_key_pair().arn(&signing_arn).send().await.unwrap();
    assert_refused(&get(&server, &with_token(&playback, &good), &[]), "invalid_signature");

    // Across a restart: the used single-use token and the revocation are remembered.
    drop(publisher);
    server.restart();
    server.client().import_playback_key_pair().public_key_material(&public_3).send().await.unwrap();
    // An unused single-use token on an offline channel is not used up by the 404.
    let fresh = token(&signing_key, &claims(json!({ "aws:single-use-uuid": "5b0e7a52-single-use-2" })));
    assert_eq!(get(&server, &with_token(&playback, &fresh), &[]).status, 404);
    let ingest_url = ingest_url.replace(&ingest_port(&ingest_url), &server.rtmps_address);
    let _publisher = Publisher::start(&ingest_url, pattern_720p());
    wait_live(&server, &arn, Duration::from_secs(15)).await;
    assert_refused(&get(&server, &with_token(&playback, &single), &[]), "single_use_token_reused");
    assert_refused(&get(&server, &with_token(&playback, &viewer(1)), &[]), "viewer_session_revoked");
    variant_of(&get(&server, &with_token(&playback, &fresh), &[]));
    assert_refused(&get(&server, &with_token(&playback, &fresh), &[]), "single_use_token_reused");
}

/// `127.0.0.1:PORT` of an `rtmps://127.0.0.1:PORT/app/KEY` URL.
fn ingest_port(url: &str) -> String {
    url.trim_start_matches("rtmps://").split('/').next().unwrap().to_owned()
}

/// A new playback restriction policy allowing viewers in the US only: its ARN.
async fn us_only_policy(server: &Server) -> String {
    let out = server.client().create_playback_restriction_policy().allowed_countries("US").send().await.unwrap();
    out.playback_restriction_policy().unwrap().arn().to_owned()
}

#[tokio::test]
async fn restriction_policies_by_country_and_origin() {
    let geoip_dir = std::env::temp_dir().join(format!("openivs-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&geoip_dir).unwrap();
    let database = geoip_dir.join("countries.mmdb");
    // Documentation address blocks (RFC 5737), sent as X-Forwarded-For by a trusted proxy
    // (the test itself, on 127.0.0.1).
    python(&["mmdb", database.to_str().unwrap(), r#"{"198.51.100.0/24": "FR", "203.0.113.0/24": "US"}"#]);
    let server =
        Server::with_args(&["--geoip-database", database.to_str().unwrap(), "--trusted-proxies", "127.0.0.1/32"]);
    let client = server.client();
    let policy_arn = us_only_policy(&server).await;
    let (_arn, playback, _publisher) = live_channel(&server, false, Some(&policy_arn)).await;

    let from = |address: &str| get(&server, &playback, &[("x-forwarded-for", address)]);
    variant_of(&from("203.0.113.5"));
    assert_refused(&from("198.51.100.5"), "country_not_allowed");
    // The rightmost untrusted hop counts; a client cannot hide behind a forged first entry.
    assert_refused(&from("203.0.113.5, 198.51.100.5"), "country_not_allowed");
    variant_of(&from("198.51.100.5, 203.0.113.5"));
    variant_of(&from("198.51.100.5, 203.0.113.5, 127.0.0.1"));
    // Unknown to the database: allowed, as IVS does.
    variant_of(&from("192.0.2.1"));
    variant_of(&get(&server, &playback, &[]));

    // Origins, applied to new sessions at once when the policy changes.
    client
        .update_playback_restriction_policy()
        .arn(&policy_arn)
        .set_allowed_countries(Some(Vec::new()))
        .allowed_origins("https://allowed.example")
        .send()
        .await
        .unwrap();
    assert_refused(&get(&server, &playback, &[]), "origin_not_allowed");
    assert_refused(&get(&server, &playback, &[("origin", "https://refused.example")]), "origin_not_allowed");
    let admitted = get(&server, &playback, &[("origin", "https://allowed.example")]);
    assert_eq!(admitted.header("access-control-allow-origin"), Some("https://allowed.example"));
    let lax_media = variant_of(&admitted);
    assert_eq!(get(&server, &lax_media, &[("origin", "https://refused.example")]).status, 200);
    client
        .update_playback_restriction_policy()
        .arn(&policy_arn)
        .enable_strict_origin_enforcement(true)
        .send()
        .await
        .unwrap();
    let strict_media = variant_of(&get(&server, &playback, &[("origin", "https://allowed.example")]));
    assert_refused(&get(&server, &strict_media, &[("origin", "https://refused.example")]), "origin_not_allowed");
    assert_eq!(get(&server, &strict_media, &[("origin", "https://allowed.example")]).status, 200);
    // The session opened before the change keeps its terms.
    assert_eq!(get(&server, &lax_media, &[("origin", "https://refused.example")]).status, 200);

    // A private channel ignores its policy: the token decides.
    let keys = geoip_dir.join("keys");
    let (private_key, public_key) = key_pair(&keys, "k");
    client.import_playback_key_pair().public_key_material(&public_key).send().await.unwrap();
    client.update_playback_restriction_policy().arn(&policy_arn).allowed_countries("US").send().await.unwrap();
    let (private_arn, private_playback, _private_publisher) = live_channel(&server, true, Some(&policy_arn)).await;
    let token = token(&private_key, &json!({ "aws:channel-arn": private_arn, "exp": now() + 300 }));
    variant_of(&get(&server, &with_token(&private_playback, &token), &[("x-forwarded-for", "198.51.100.5")]));

    // An untrusted peer's X-Forwarded-For is not believed, and without a database countries are
    // not enforced: the server says so in its log.
    let plain = Server::start();
    let unenforced = us_only_policy(&plain).await;
    let (_, plain_playback, _plain_publisher) = live_channel(&plain, false, Some(&unenforced)).await;
    variant_of(&get(&plain, &plain_playback, &[("x-forwarded-for", "198.51.100.5")]));
    let log = plain.log_text();
    assert!(log.contains("NOT enforced"), "the log warns that countries are not enforced: {log}");
    let _ = std::fs::remove_dir_all(&geoip_dir);
}
