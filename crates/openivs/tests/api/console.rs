//! The web console's server side, over raw HTTP: its files and their headers, `config.json`, and
//! the signed endpoints it reads (live figures, recordings) refusing unsigned callers and other
//! accounts. The console's SigV4 signer (assets/console/sigv4.js, run in Node.js) signs exactly
//! as the `aws-sigv4` crate does, double-encoded tag paths included. The page itself is driven in
//! Chromium by tests/players/console.rs.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::harness::{REGION, Server, destination, raw_request, sigv4_headers};

#[test]
fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let server = Server::start();
    let redirect = raw_request(&server, "GET", "/console", &[], "");
    assert_eq!((redirect.status, redirect.header("location")), (308, Some("/console/")));
    let page = raw_request(&server, "GET", "/console/", &[], "");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.body.contains("<script src=\"console.js\" type=\"module\">"), "{}", page.body);
    let policy = page.header("content-security-policy").expect("a Content-Security-Policy");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(page.header("set-cookie").is_none());
    for (file, content_type) in [
        ("console.js", "text/javascript; charset=utf-8"),
        ("sigv4.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("hls-1.7.4.min.js", "text/javascript; charset=utf-8"),
    ] {
        let response = raw_request(&server, "GET", &format!("/console/{file}"), &[], "");
        assert_eq!((response.status, response.header("content-type")), (200, Some(content_type)), "{file}");
    }
    // The vendored hls.js is the pinned release the player tests use.
    let vendored = raw_request(&server, "GET", "/console/hls-1.7.4.min.js", &[], "");
    let pinned = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/node_modules/hls.js/dist/hls.min.js"),
    )
    .expect("tests/browser/node_modules is installed (scripts/test)");
    assert!(vendored.body_bytes == pinned, "the console's hls.js differs from hls.js 1.7.4");
    assert_eq!(raw_request(&server, "GET", "/console/../Cargo.toml", &[], "").status, 404);
    assert_eq!(raw_request(&server, "GET", "/console/nothing.js", &[], "").status, 404);

    let config = raw_request(&server, "GET", "/console/config.json", &[], "").json();
    assert_eq!(config["devCredentials"], true);
    assert_eq!(config["defaultRegion"], "us-west-2");
    // With credentials configured, the form offers none.
    let configured = Server::with_args(&["--credential", "AKIDONE:secret-one:111111111111"]);
    let config = raw_request(&configured, "GET", "/console/config.json", &[], "").json();
    assert_eq!(config["devCredentials"], false);
    assert!(!config.to_string().contains("secret-one"));
}

fn signed_get(server: &Server, path: &str, access_key: &str, secret: &str) -> crate::harness::RawResponse {
    let headers = sigv4_headers(server, "GET", path, "", access_key, secret, SystemTime::now());
    raw_request(server, "GET", path, &headers, "")
}

#[tokio::test]
async fn the_consoles_own_endpoints_are_signed_and_scoped_to_the_callers_account() {
    let server = Server::with_args(&[
        "--credential",
        "AKIDONE:secret-one:111111111111",
        "--credential",
        "AKIDTWO:secret-two:222222222222",
    ]);
    for path in ["/_openivs/live-channels", "/_openivs/recordings?channelArn=x"] {
        let unsigned = raw_request(&server, "GET", path, &[], "");
        assert_eq!(unsigned.status, 403, "{path}");
        assert!(unsigned.header("x-amzn-ErrorType").is_some(), "{path}");
    }
    let live = signed_get(&server, "/_openivs/live-channels", "AKIDONE", "secret-one");
    assert_eq!((live.status, live.json()), (200, serde_json::json!({ "channels": [] })));

    // A recording of account one's channel, as the recorder lays it out.
    let one = server.client_for(REGION, "AKIDONE", "secret-one");
    one.create_recording_configuration().destination_configuration(destination("bucket")).send().await.unwrap();
    let channel_arn = one.create_channel().send().await.unwrap().channel().unwrap().arn().unwrap().to_owned();
    let channel_id = channel_arn.rsplit('/').next().unwrap();
    let prefix = format!("ivs/v1/111111111111/{channel_id}/2026/12/5/9/7/rec0001");
    let events = server.data_dir.join("buckets/bucket").join(&prefix).join("events");
    std::fs::create_dir_all(&events).unwrap();
    let started = serde_json::json!({ "channel_arn": channel_arn, "recording_started_at": "2026-12-05T09:07:00Z",
        "recording_status": "RECORDING_STARTED", "media": { "hls": { "path": "media/hls", "playlist": "master.m3u8" } } });
    std::fs::write(events.join("recording-started.json"), started.to_string()).unwrap();

    let query = format!("/_openivs/recordings?channelArn={}", channel_arn.replace(':', "%3A").replace('/', "%2F"));
    let listed = signed_get(&server, &query, "AKIDONE", "secret-one");
    assert_eq!(listed.status, 200, "{}", listed.body);
    let recordings = listed.json()["recordings"].clone();
    assert_eq!(recordings.as_array().unwrap().len(), 1, "{recordings}");
    assert_eq!(recordings[0]["bucket"], "bucket");
    assert_eq!(recordings[0]["prefix"], prefix.as_str());
    assert_eq!(recordings[0]["started"], started);
    assert_eq!(recordings[0]["ended"], serde_json::Value::Null);
    // Another account may not list it, nor read its objects.
    let listed = signed_get(&server, &query, "AKIDTWO", "secret-two");
    assert_eq!(listed.status, 400, "{}", listed.body);
    let object = format!("/_openivs/recordings/bucket/{prefix}/events/recording-started.json");
    let read = signed_get(&server, &object, "AKIDONE", "secret-one");
    assert_eq!(read.status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&read.body).unwrap(), started);
    let refused = signed_get(&server, &object, "AKIDTWO", "secret-two");
    assert_eq!((refused.status, refused.header("x-amzn-ErrorType")), (403, Some("AccessDeniedException")));
    // Nothing outside the bucket is reachable through a key.
    let escape = "/_openivs/recordings/bucket/ivs/v1/111111111111/../../../../../etc/hostname";
    let escaped = signed_get(&server, escape, "AKIDONE", "secret-one");
    assert_eq!(escaped.status, 400, "{}", escaped.body);
    let missing =
        signed_get(&server, &format!("/_openivs/recordings/bucket/{prefix}/none.json"), "AKIDONE", "secret-one");
    assert_eq!(missing.status, 404);
}

#[test]
fn the_consoles_signer_signs_as_aws_sigv4_does() {
    let server = Server::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/console/sigv4.js");
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_460_000);
    // A tag route (its ARN label is encoded once in the path, twice in the canonical request), a
    // query, and a body.
    for (method, path_and_query, body) in [
        ("GET", "/tags/arn%3Aaws%3Aivs%3Aus-west-2%3A123456789012%3Achannel%2FabcdABCDefgh", ""),
        ("GET", "/_openivs/recordings?channelArn=arn%3Aaws%3Aivs%3Aus-west-2%3A1%3Achannel%2Fx&b=%20c", ""),
        ("POST", "/ListChannels", "{\"maxResults\":1}"),
    ] {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let node = format!(
            "import {{ signedHeaders }} from 'file://{}';
             const query = [...new URLSearchParams({query:?})];
             const headers = signedHeaders({{ method: {method:?}, host: '127.0.0.1:{}', path: {path:?}, query,
               body: {body:?}, contentType: {content_type}, now: new Date({millis}),
               credentials: {{ accessKeyId: 'test', secretAccessKey: 'test', region: 'us-west-2' }} }});
             console.log(headers.authorization);",
            script.display(),
            server.port,
            content_type = if body.is_empty() { "undefined" } else { "'application/json'" },
            millis = time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis(),
        );
        let output = Command::new("node")
            .args(["--input-type=module", "-e", &node])
            .output()
            .expect("Node.js must be installed");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let from_console = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let expected = sigv4_headers(&server, method, path_and_query, body, "test", "test", time);
        let authorization = &expected.iter().find(|(name, _)| name == "authorization").unwrap().1;
        assert_eq!(&from_console, authorization, "{method} {path_and_query}");
    }
}
