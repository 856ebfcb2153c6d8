//! `nextToken`s: opaque to clients, tamper-proof, and bound to the listing they continue.
//!
//! A token carries the operation, a digest of the caller's account, region and filters, the
//! creation sequence number of the last item returned (listings are in creation order, so pages
//! never repeat or skip an item that existed throughout), and when it was issued, followed by an
//! HMAC under a key kept in the store (so tokens survive restarts and are valid on every node).
//! A token that was altered, made for another listing, or issued more than 24 hours ago is
//! answered with `ValidationException`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use openivs_model::IvsError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

const MAC_LEN: usize = 16;
const LIFETIME_SECONDS: i64 = 24 * 3600;

pub struct PageTokens {
    key: Vec<u8>,
}

/// What a token is valid for: one operation, for one caller and one set of filters.
pub struct Listing<'a> {
    pub operation: &'a str,
    pub scope: String,
}

impl<'a> Listing<'a> {
    pub fn new(operation: &'a str, account: &str, region: &str, filters: &[&str]) -> Listing<'a> {
        let mut hasher = Sha256::new();
        for part in [account, region].iter().chain(filters) {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        Listing { operation, scope: hex::encode(&hasher.finalize()[..8]) }
    }
}

fn invalid() -> IvsError {
    IvsError::validation(
        "The nextToken is not valid for this request: it is malformed, expired, or from another listing",
    )
}

impl PageTokens {
    pub fn new(key: Vec<u8>) -> PageTokens {
        PageTokens { key }
    }

    fn mac(&self, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        full[..MAC_LEN].try_into().expect("sha256 is longer than the mac")
    }

    pub fn issue(&self, listing: &Listing<'_>, after: i64, now: OffsetDateTime) -> String {
        let payload = format!("{}|{}|{}|{}", listing.operation, listing.scope, after, now.unix_timestamp());
        let mut bytes = payload.into_bytes();
        let mac = self.mac(&bytes);
        bytes.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor a token continues from; 0 (the start) for no token or an empty one.
    pub fn cursor(&self, token: Option<&str>, listing: &Listing<'_>, now: OffsetDateTime) -> Result<i64, IvsError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(0);
        };
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| invalid())?;
        if bytes.len() <= MAC_LEN {
            return Err(invalid());
        }
        let (payload, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        if !bool::from(self.mac(payload).ct_eq(mac)) {
            return Err(invalid());
        }
        let payload = std::str::from_utf8(payload).map_err(|_| invalid())?;
        let parts: Vec<&str> = payload.split('|').collect();
        let [operation, scope, after, issued] = parts[..] else {
            return Err(invalid());
        };
        let after: i64 = after.parse().map_err(|_| invalid())?;
        let issued: i64 = issued.parse().map_err(|_| invalid())?;
        let age = now.unix_timestamp() - issued;
        if operation != listing.operation || scope != listing.scope || !(-300..=LIFETIME_SECONDS).contains(&age) {
            return Err(invalid());
        }
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let tokens = PageTokens::new(b"key".to_vec());
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let listing = Listing::new("ListChannels", "123456789012", "us-west-2", &["name"]);
        let token = tokens.issue(&listing, 42, now);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(tokens.cursor(Some(&token), &listing, now).unwrap(), 42);
        assert_eq!(tokens.cursor(None, &listing, now).unwrap(), 0);
        assert_eq!(tokens.cursor(Some(""), &listing, now).unwrap(), 0);

        let other = Listing::new("ListChannels", "123456789012", "us-west-2", &["other"]);
        assert!(tokens.cursor(Some(&token), &other, now).is_err());
        let later = now + time::Duration::hours(25);
        assert!(tokens.cursor(Some(&token), &listing, later).is_err());
        let mut forged = token.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        assert!(tokens.cursor(Some(std::str::from_utf8(&forged).unwrap()), &listing, now).is_err());
        assert!(tokens.cursor(Some("abc"), &listing, now).is_err());
        assert!(PageTokens::new(b"other".to_vec()).cursor(Some(&token), &listing, now).is_err());
    }
}
