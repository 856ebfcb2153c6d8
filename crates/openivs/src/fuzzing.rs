//! Entry points for the fuzz targets (`fuzz/`) and for the test that replays their corpus: each
//! takes arbitrary bytes and drives one parser of network input the way a request would. None may
//! panic; `page_token` also checks that no forged token is ever accepted.

use openivs_model::service::model;
use time::OffsetDateTime;

use crate::api::pagination::{Listing, PageTokens};
use crate::auth::sigv4::{RequestParts, verify};

fn operation_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = model().operations().map(|op| op.name.as_str()).collect();
    names.sort_unstable();
    names
}

/// First byte: which operation; then the body (and, for tag routes, URI label and query).
pub fn validate_input(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let names = operation_names();
    let operation = names[selector as usize % names.len()];
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let body = parts.next().unwrap_or("");
    let label = parts.next();
    let query = parts.next();
    if let Ok(input) = crate::http::gather_input(operation, label, query, &axum::body::Bytes::from(body.to_owned())) {
        let _ = model().validate_input(operation, &input);
    }
}

/// Lines: method, path, query, then `name: value` headers up to an empty line, then the body.
pub fn sigv4_verify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let method = lines.next().unwrap_or("POST");
    let raw_path = lines.next().unwrap_or("/");
    let query = lines.next().filter(|q| !q.is_empty());
    let headers: Vec<(&str, &[u8])> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim().as_bytes()))
        .collect();
    let request = RequestParts { method, raw_path, raw_query: query, headers, body: body.as_bytes() };
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time");
    let _ = verify(&request, now, |key| (key == "test").then_some("test"));
}

/// Any text as a nextToken: only the empty token may yield a cursor.
pub fn page_token(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let tokens = PageTokens::new(b"fuzzing key".to_vec());
    let listing = Listing::new("ListChannels", "123456789012", "us-west-2", &[]);
    let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("a valid time");
    match tokens.cursor(Some(&token), &listing, now) {
        Ok(cursor) => assert!(token.is_empty() && cursor == 0, "a forged token was accepted"),
        Err(error) => assert_eq!(error.kind, openivs_model::ErrorKind::Validation),
    }
}
