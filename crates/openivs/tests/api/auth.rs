//! Signature Version 4 on every request, and the error wire format, seen from raw HTTP.

use std::time::{Duration, SystemTime};

use crate::harness::{ACCOUNT, REGION, Server, raw_request, sigv4_headers};

fn assert_refused(response: &crate::harness::RawResponse, code: &str, status: u16) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.header("x-amzn-ErrorType"), Some(code));
    let body = response.json();
    assert_eq!(body["__type"], code);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(body["message"], body["exceptionMessage"]);
    assert!(response.header("x-amzn-RequestId").is_some());
}

#[test]
fn unsigned_wrong_unknown_stale_and_malformed_requests_are_refused() {
    let server = Server::start();
    let body = "{}";
    let now = SystemTime::now();

    let unsigned =
        raw_request(&server, "POST", "/ListChannels", &[("content-type".into(), "application/json".into())], body);
    assert_refused(&unsigned, "MissingAuthenticationTokenException", 403);

    let wrong_secret = sigv4_headers(&server, "POST", "/ListChannels", body, "test", "wrong", now);
    assert_refused(
        &raw_request(&server, "POST", "/ListChannels", &wrong_secret, body),
        "InvalidSignatureException",
        403,
    );

    let unknown_key = sigv4_headers(&server, "POST", "/ListChannels", body, "AKIDUNKNOWN", "test", now);
    assert_refused(
        &raw_request(&server, "POST", "/ListChannels", &unknown_key, body),
        "UnrecognizedClientException",
        403,
    );

    let stale =
        sigv4_headers(&server, "POST", "/ListChannels", body, "test", "test", now - Duration::from_secs(20 * 60));
    let response = raw_request(&server, "POST", "/ListChannels", &stale, body);
    assert_refused(&response, "InvalidSignatureException", 403);
    assert!(response.json()["message"].as_str().unwrap().contains("Signature expired"));

    let future =
        sigv4_headers(&server, "POST", "/ListChannels", body, "test", "test", now + Duration::from_secs(20 * 60));
    assert_refused(&raw_request(&server, "POST", "/ListChannels", &future, body), "InvalidSignatureException", 403);

    // A body altered after signing.
    let signed = sigv4_headers(&server, "POST", "/ListChannels", body, "test", "test", now);
    assert_refused(
        &raw_request(&server, "POST", "/ListChannels", &signed, r#"{"maxResults":1}"#),
        "InvalidSignatureException",
        403,
    );

    let garbled = vec![("authorization".to_owned(), "AWS4-HMAC-SHA256 Credential=test".to_owned())];
    assert_refused(&raw_request(&server, "POST", "/ListChannels", &garbled, body), "IncompleteSignatureException", 403);

    // Within the allowed skew, a correct signature passes.
    let skewed =
        sigv4_headers(&server, "POST", "/ListChannels", body, "test", "test", now - Duration::from_secs(10 * 60));
    let ok = raw_request(&server, "POST", "/ListChannels", &skewed, body);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["channels"], serde_json::json!([]));
    assert!(ok.header("x-amzn-RequestId").is_some());
    // The secret never reaches the log.
    assert!(!server.log_text().contains("wrong"));
}

#[test]
fn tag_paths_are_signed_with_the_uri_encoded_twice() {
    let server = Server::start();
    let missing = format!("arn:aws:ivs:{REGION}:{ACCOUNT}:channel/IIIIIIIIIIII");
    let path = format!("/tags/{}", missing.replace(':', "%3A").replace('/', "%2F"));
    let headers = sigv4_headers(&server, "GET", &path, "", "test", "test", SystemTime::now());
    // Authenticated (so the signature over the double-encoded path matched), then not found.
    let response = raw_request(&server, "GET", &path, &headers, "");
    assert_refused(&response, "ResourceNotFoundException", 404);

    let query_path = format!("{path}?tagKeys=a&tagKeys=b%20c");
    let headers = sigv4_headers(&server, "DELETE", &query_path, "", "test", "test", SystemTime::now());
    assert_refused(&raw_request(&server, "DELETE", &query_path, &headers, ""), "ResourceNotFoundException", 404);
}

#[test]
fn unknown_routes_and_bad_bodies() {
    let server = Server::start();
    let headers = sigv4_headers(&server, "POST", "/NoSuchOperation", "{}", "test", "test", SystemTime::now());
    let response = raw_request(&server, "POST", "/NoSuchOperation", &headers, "{}");
    assert_refused(&response, "UnknownOperationException", 404);

    let not_json = "{nope";
    let headers = sigv4_headers(&server, "POST", "/ListChannels", not_json, "test", "test", SystemTime::now());
    assert_refused(&raw_request(&server, "POST", "/ListChannels", &headers, not_json), "ValidationException", 400);

    let wrong_type = r#"{"maxResults":"ten"}"#;
    let headers = sigv4_headers(&server, "POST", "/ListChannels", wrong_type, "test", "test", SystemTime::now());
    let response = raw_request(&server, "POST", "/ListChannels", &headers, wrong_type);
    assert_refused(&response, "ValidationException", 400);
    assert!(response.json()["message"].as_str().unwrap().contains("'maxResults'"));
}

#[test]
fn dev_credentials_are_refused_on_a_network_address() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_openivs"))
        .args(["serve", "--http-addr", "0.0.0.0:0", "--data-dir"])
        .arg(std::env::temp_dir().join(format!("openivs-refuse-{}", std::process::id())))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("non-loopback"));
}
