//! Playback access: who may open a viewer session on a channel, and on what terms.
//!
//! The multivariant playlist (the channel's `playbackUrl`) is the door, and [`Access::admit`]
//! decides there, once per session:
//! - a private channel (`authorized: true`) needs `?token=`: a JWT signed ES384 with the private
//!   half of a key pair imported by ImportPlaybackKeyPair. The token names no key, so every key of
//!   the channel's account and region is tried, the one that verified last first (applications
//!   sign with one key at a time); the parsed keys are cached, so a check costs one ECDSA
//!   verification per key tried (AWS-LC's, several times faster than a pure-Rust P-384) and no
//!   store read. The claims are checked before the signature, so a token for another channel or
//!   an expired one costs no verification. They bind the session to this channel, to origins, to
//!   a viewer (whose sessions can be revoked) and to a maximum resolution.
//! - a public channel with a playback restriction policy admits only the policy's countries
//!   (looked up in a GeoIP database) and origins.
//!
//! What a session may do afterwards travels in its signed id as [`SessionRules`]: the media
//! handlers check the `Origin` of every request of a strict session, and revocation matches the
//! viewer. The viewer's address is the peer's, or, when the peer is a trusted proxy, the rightmost
//! untrusted address of `X-Forwarded-For`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openivs_model::resources::{Channel, PlaybackKeyPair, PlaybackRestrictionPolicy};
use openivs_model::{Arn, IvsError, ResourceType};
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use p384::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};

use crate::store::{ApplyError, Change, Check, ListQuery, Store, Write};

/// Parsed public keys are re-read from the store at least this often on a server that has the
/// store to itself (it drops its cache at once when a key pair is imported or deleted). Nodes
/// that share the store read the keys at every admission, so a key pair deleted through any node
/// opens nothing more on every node at once.
const KEY_CACHE_LIFETIME: Duration = Duration::from_secs(5);
/// A token with `aws:viewer-id` or `aws:single-use-uuid` may expire at most this far ahead.
pub const SHORT_TOKEN_LIFETIME: i64 = 600;
/// Clock difference tolerated between the token's signer and this server.
const CLOCK_SKEW: i64 = 5;
/// IVS's limits on token claims.
const MAX_VIEWER_ID_CHARS: usize = 40;
const MAX_STRICT_ORIGINS: usize = 5;

/// Why the door stays shut. Each answers 403 with its code and message (the IVS player maps 403
/// to its authorization error), except `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    MissingToken,
    MalformedToken(String),
    UnsupportedAlgorithm(String),
    BadSignature,
    WrongChannel,
    Expired,
    ExpiresTooLate,
    OriginNotAllowed,
    CountryNotAllowed,
    SingleUseReplayed,
    SessionRevoked,
    ResolutionNotAllowed {
        height: u32,
        maximum: String,
    },
    /// The store could not answer: not the viewer's fault (500).
    Failed(String),
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Denial::MissingToken => "missing_token",
            Denial::MalformedToken(_) => "malformed_token",
            Denial::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Denial::BadSignature => "invalid_signature",
            Denial::WrongChannel => "wrong_channel",
            Denial::Expired => "token_expired",
            Denial::ExpiresTooLate => "expiry_too_far",
            Denial::OriginNotAllowed => "origin_not_allowed",
            Denial::CountryNotAllowed => "country_not_allowed",
            Denial::SingleUseReplayed => "single_use_token_reused",
            Denial::SessionRevoked => "viewer_session_revoked",
            Denial::ResolutionNotAllowed { .. } => "resolution_not_allowed",
            Denial::Failed(_) => "internal_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Denial::MissingToken => {
                "This channel is private: the playback URL needs ?token= with a playback token".into()
            }
            Denial::MalformedToken(why) => format!("The playback token is malformed: {why}"),
            Denial::UnsupportedAlgorithm(alg) => format!("Playback tokens must be signed with ES384, not {alg:?}"),
            Denial::BadSignature => {
                "The playback token's signature matches no playback key pair of this account".into()
            }
            Denial::WrongChannel => "The playback token is for another channel".into(),
            Denial::Expired => "The playback token has expired".into(),
            Denial::ExpiresTooLate => format!(
                "A playback token with aws:viewer-id or aws:single-use-uuid must expire within {} minutes",
                SHORT_TOKEN_LIFETIME / 60
            ),
            Denial::OriginNotAllowed => "Playback is not allowed from this origin".into(),
            Denial::CountryNotAllowed => "Playback is not allowed in this country".into(),
            Denial::SingleUseReplayed => "The single-use playback token has been used already".into(),
            Denial::SessionRevoked => "This viewer's playback sessions have been revoked".into(),
            Denial::ResolutionNotAllowed { height, maximum } => {
                format!(
                    "The stream's smallest rendition ({height}p) is above the token's aws:maximum-resolution {maximum}"
                )
            }
            Denial::Failed(why) => format!("Playback access could not be checked: {why}"),
        }
    }
}

impl From<IvsError> for Denial {
    fn from(error: IvsError) -> Denial {
        Denial::Failed(error.message)
    }
}

/// What a session may do beyond playing its channel, fixed when it opens (from the token, or
/// the channel's restriction policy as it was then). Carried, signed, in the session id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRules {
    /// `aws:viewer-id` and `aws:viewer-session-version`: revocation matches them.
    #[serde(default, rename = "v", skip_serializing_if = "Option::is_none")]
    pub viewer: Option<(String, i64)>,
    /// Origins the session may be used from (`https://*.example.com` wildcards); `None`: any.
    #[serde(default, rename = "o", skip_serializing_if = "Option::is_none")]
    pub origins: Option<Vec<String>>,
    /// Every request must come from one of `origins`, not only the multivariant playlist.
    #[serde(default, rename = "s", skip_serializing_if = "std::ops::Not::not")]
    pub strict_origin: bool,
    /// `aws:maximum-resolution`: the tallest picture (short side) the session may play.
    #[serde(default, rename = "m", skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
}

impl SessionRules {
    /// Whether the session may play a rendition whose picture's short side is `height`
    /// (`None`: audio only).
    pub fn allows_height(&self, height: Option<u32>) -> bool {
        match (self.max_height, height) {
            (Some(cap), Some(height)) => height <= cap,
            _ => true,
        }
    }

    /// Whether a request with this `Origin` may use the session.
    pub fn allows_request_from(&self, origin: Option<&str>) -> bool {
        match &self.origins {
            Some(origins) if self.strict_origin => origin_allowed(origins, origin),
            _ => true,
        }
    }

    /// The `Access-Control-Allow-Origin` a response of the session carries: the request's own
    /// origin when the session names origins and it is one of them, `*` otherwise.
    pub fn allow_origin_header(&self, origin: Option<&str>) -> Option<String> {
        match (&self.origins, origin) {
            (Some(origins), Some(origin)) if origin_allowed(origins, Some(origin)) => Some(origin.to_owned()),
            _ => None,
        }
    }
}

/// A session the door admitted, before it is issued.
#[derive(Debug)]
pub struct Admission {
    pub rules: SessionRules,
    /// `aws:single-use-uuid` and the token's expiry: used up (with [`Access::use_single_use`])
    /// only once the session is sure to be issued.
    pub single_use: Option<(String, i64)>,
}

/// Everything the door looks at.
pub struct Visitor<'a> {
    pub channel: &'a Channel,
    pub token: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub address: IpAddr,
    /// The short side of the stream's picture (720 for 1280×720), when known.
    /// The short side of the smallest picture the stream offers.
    pub lowest_height: Option<u32>,
}

/// An address block of `--trusted-proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or a single address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| format!("{text:?} is not an address or CIDR block"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?} has a bad prefix length"))?,
            None => bits,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The public keys of an account and region, ready to verify with.
pub struct VerifyingKeys {
    keys: Vec<UnparsedPublicKey<Vec<u8>>>,
    /// The key that verified last: tried first.
    last_good: AtomicUsize,
}

impl VerifyingKeys {
    /// From SEC1-encoded P-384 points.
    pub fn new(points: Vec<Vec<u8>>) -> VerifyingKeys {
        let keys = points.into_iter().map(|p| UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, p)).collect();
        VerifyingKeys { keys, last_good: AtomicUsize::new(0) }
    }

    /// Whether one of the keys signed `message` (signature r‖s).
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let first = self.last_good.load(Ordering::Relaxed);
        let order = std::iter::once(first).chain((0..self.keys.len()).filter(|i| *i != first));
        for index in order {
            if self.keys.get(index).is_some_and(|key| key.verify(message, signature).is_ok()) {
                self.last_good.store(index, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

struct CachedKeys {
    loaded: Instant,
    keys: Arc<VerifyingKeys>,
}

pub struct Access {
    /// Parsed public keys by (account, region).
    keys: Mutex<HashMap<(String, String), CachedKeys>>,
    /// [`KEY_CACHE_LIFETIME`], or zero where other nodes share the store.
    key_cache_lifetime: Duration,
    geoip: Option<maxminddb::Reader<Vec<u8>>>,
    trusted_proxies: Vec<Cidr>,
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Access {
    pub fn new(geoip_database: Option<&Path>, trusted_proxies: Vec<Cidr>) -> Result<Access, String> {
        let geoip = match geoip_database {
            Some(path) => Some(
                maxminddb::Reader::open_readfile(path)
                    .map_err(|e| format!("cannot read the GeoIP database {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Access { keys: Mutex::default(), key_cache_lifetime: KEY_CACHE_LIFETIME, geoip, trusted_proxies })
    }

    /// For a node whose store other nodes share: keys are never cached (another node's
    /// DeletePlaybackKeyPair counts at once).
    pub fn sharing_the_store(self) -> Access {
        Access { key_cache_lifetime: Duration::ZERO, ..self }
    }

    /// Whether `allowedCountries` of restriction policies can be enforced.
    pub fn has_geoip(&self) -> bool {
        self.geoip.is_some()
    }

    /// Says, at start-up, that the countries of restriction policies are not enforced, when any
    /// policy names countries and no GeoIP database is configured.
    pub async fn warn_if_countries_unenforced(&self, store: &dyn Store) {
        let Ok(records) = store.list_type(ResourceType::PlaybackRestrictionPolicy).await else { return };
        for record in records {
            if let Ok(policy) = record.decode::<PlaybackRestrictionPolicy>() {
                self.warn_if_country_list_unenforced(&policy.arn, &policy.allowed_countries);
            }
        }
    }

    /// Warns that a policy's `allowedCountries` cannot be enforced (no GeoIP database).
    pub fn warn_if_country_list_unenforced(&self, policy_arn: &str, countries: &[String]) {
        if self.geoip.is_none() && !countries.is_empty() && !countries.iter().any(|c| c == "*") {
            tracing::warn!(
                "playback restriction policy {policy_arn} allows only some countries, but no GeoIP database is \
                 configured (--geoip-database): its country list is NOT enforced"
            );
        }
    }

    /// Forgets the cached keys of an account and region (a key pair was imported or deleted).
    pub fn keys_changed(&self, account: &str, region: &str) {
        self.keys.lock().expect("key cache lock").remove(&(account.to_owned(), region.to_owned()));
    }

    async fn verifying_keys(
        &self,
        store: &dyn Store,
        account: &str,
        region: &str,
    ) -> Result<Arc<VerifyingKeys>, IvsError> {
        let cache_key = (account.to_owned(), region.to_owned());
        if let Some(cached) = self.keys.lock().expect("key cache lock").get(&cache_key)
            && cached.loaded.elapsed() < self.key_cache_lifetime
        {
            return Ok(cached.keys.clone());
        }
        let records = store
            .list(&ListQuery {
                resource_type: Some(ResourceType::PlaybackKeyPair),
                account: account.to_owned(),
                region: region.to_owned(),
                limit: 1000,
                ..ListQuery::default()
            })
            .await?;
        let mut points = Vec::with_capacity(records.len());
        for record in records {
            let key_pair: PlaybackKeyPair = record.decode()?;
            let parsed =
                key_pair.public_key_pem.as_deref().and_then(|pem| p384::PublicKey::from_public_key_pem(pem).ok());
            if let Some(public_key) = parsed {
                points.push(public_key.to_sec1_bytes().to_vec());
            }
        }
        let keys = Arc::new(VerifyingKeys::new(points));
        self.keys
            .lock()
            .expect("key cache lock")
            .insert(cache_key, CachedKeys { loaded: Instant::now(), keys: keys.clone() });
        Ok(keys)
    }

    /// The viewer's address: the peer's, unless the peer is a trusted proxy; then the rightmost
    /// address of `X-Forwarded-For` that is not a trusted proxy itself.
    pub fn viewer_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.iter().any(|cidr| cidr.contains(peer)) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut address = peer;
        for hop in forwarded.iter().rev() {
            let Ok(hop) = hop.parse::<IpAddr>() else { break };
            address = hop;
            if !self.trusted_proxies.iter().any(|cidr| cidr.contains(hop)) {
                break;
            }
        }
        address
    }

    fn country_of(&self, address: IpAddr) -> Option<String> {
        let reader = self.geoip.as_ref()?;
        let record: maxminddb::geoip2::Country = reader.lookup(address).ok()??;
        record.country.and_then(|c| c.iso_code).map(str::to_owned)
    }

    /// Decides whether a viewer may open a session on the channel, and on what terms.
    pub async fn admit(&self, store: &dyn Store, visitor: &Visitor<'_>) -> Result<Admission, Denial> {
        if visitor.channel.authorized {
            self.admit_with_token(store, visitor).await
        } else {
            self.admit_by_policy(store, visitor).await
        }
    }

    async fn admit_with_token(&self, store: &dyn Store, visitor: &Visitor<'_>) -> Result<Admission, Denial> {
        let token = visitor.token.filter(|t| !t.is_empty()).ok_or(Denial::MissingToken)?;
        let arn = Arn::parse(&visitor.channel.arn).ok_or_else(|| Denial::Failed("bad channel ARN".into()))?;
        let token = PlaybackToken::parse(token)?;
        let claims = &token.claims;
        if claims.channel_arn.as_deref() != Some(visitor.channel.arn.as_str()) {
            return Err(Denial::WrongChannel);
        }
        let now = unix_now();
        let expires = claims.exp.ok_or_else(|| Denial::MalformedToken("exp is required".into()))?;
        if expires <= now as f64 {
            return Err(Denial::Expired);
        }
        let keys = self.verifying_keys(store, &arn.account, &arn.region).await?;
        let claims = token.verified(&keys)?;
        let short_lived = claims.viewer_id.is_some() || claims.single_use_uuid.is_some();
        let mut max_height = None;
        if short_lived && expires > (now + SHORT_TOKEN_LIFETIME + CLOCK_SKEW) as f64 {
            return Err(Denial::ExpiresTooLate);
        }
        if let Some(viewer_id) = &claims.viewer_id
            && (viewer_id.is_empty() || viewer_id.chars().count() > MAX_VIEWER_ID_CHARS)
        {
            return Err(Denial::MalformedToken(format!("aws:viewer-id must be 1 to {MAX_VIEWER_ID_CHARS} characters")));
        }
        let strict_origin = claims.strict_origin_enforcement.unwrap_or(false);
        let origins = claims.allow_origin.as_deref().map(split_origins).filter(|o| !o.is_empty());
        if let Some(origins) = &origins {
            if strict_origin && origins.len() > MAX_STRICT_ORIGINS {
                return Err(Denial::MalformedToken(format!(
                    "at most {MAX_STRICT_ORIGINS} origins with aws:strict-origin-enforcement"
                )));
            }
            if !origin_allowed(origins, visitor.origin) {
                return Err(Denial::OriginNotAllowed);
            }
        }
        if let Some(maximum) = &claims.maximum_resolution {
            let cap = match maximum.as_str() {
                "SD" => 480,
                "HD" => 720,
                "FULL_HD" => 1080,
                other => {
                    return Err(Denial::MalformedToken(format!(
                        "aws:maximum-resolution must be SD, HD or FULL_HD, not {other:?}"
                    )));
                }
            };
            // Renditions above the cap are left out of the session; when none is left, nothing
            // may be played.
            if let Some(height) = visitor.lowest_height.filter(|h| *h > cap) {
                return Err(Denial::ResolutionNotAllowed { height, maximum: maximum.clone() });
            }
            max_height = Some(cap);
        }
        let viewer = claims.viewer_id.map(|id| (id, claims.viewer_session_version.unwrap_or(0)));
        if let Some((viewer_id, version)) = &viewer
            && let Some(revoked) = store.viewer_revocation(&visitor.channel.arn, viewer_id, now).await?
            && *version <= revoked
        {
            return Err(Denial::SessionRevoked);
        }
        Ok(Admission {
            rules: SessionRules { viewer, origins, strict_origin, max_height },
            single_use: claims.single_use_uuid.map(|uuid| (uuid, expires.ceil() as i64)),
        })
    }

    async fn admit_by_policy(&self, store: &dyn Store, visitor: &Visitor<'_>) -> Result<Admission, Denial> {
        let policy_arn = &visitor.channel.playback_restriction_policy_arn;
        let mut rules = SessionRules::default();
        if policy_arn.is_empty() {
            return Ok(Admission { rules, single_use: None });
        }
        // A policy deleted under the channel (not possible through the API) restricts nothing.
        let Some(record) = store.get(policy_arn).await? else { return Ok(Admission { rules, single_use: None }) };
        let policy: PlaybackRestrictionPolicy = record.decode()?;
        let countries = &policy.allowed_countries;
        if !countries.is_empty()
            && !countries.iter().any(|c| c == "*")
            && let Some(country) = self.country_of(visitor.address)
            && !countries.iter().any(|c| c.eq_ignore_ascii_case(&country))
        {
            return Err(Denial::CountryNotAllowed);
        }
        if !policy.allowed_origins.is_empty() {
            if !origin_allowed(&policy.allowed_origins, visitor.origin) {
                return Err(Denial::OriginNotAllowed);
            }
            rules.origins = Some(policy.allowed_origins.clone());
            rules.strict_origin = policy.enable_strict_origin_enforcement;
        }
        Ok(Admission { rules, single_use: None })
    }

    /// Uses up a single-use token: refused if it was used before (on any node, before any
    /// restart); durable when it returns.
    pub async fn use_single_use(&self, store: &dyn Store, uuid: &str, expires_at: i64) -> Result<(), Denial> {
        let now = unix_now();
        let change = Change::new()
            .require(
                Check::SingleUseFree { uuid: uuid.to_owned(), now },
                IvsError::conflict("single-use token replayed"),
            )
            .write(Write::UseSingleUse { uuid: uuid.to_owned(), expires_at, now });
        match store.apply(change).await {
            Ok(()) => Ok(()),
            Err(ApplyError::Rejected(_)) => Err(Denial::SingleUseReplayed),
            Err(error) => Err(Denial::Failed(IvsError::from(error).message)),
        }
    }
}

/// For the fuzz target: any text as a token, checked against a fixed key, is refused (and
/// nothing panics).
pub fn token_is_refused(token: &str) -> bool {
    let secret = p384::SecretKey::from_slice(&[7u8; 48]).expect("a valid scalar");
    let keys = VerifyingKeys::new(vec![secret.public_key().to_sec1_bytes().to_vec()]);
    PlaybackToken::parse(token).and_then(|token| token.verified(&keys)).is_err()
}

/// `https://a.example.com, https://*.example.net` → its origins.
fn split_origins(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect()
}

/// Whether `origin` (a request's `Origin` header) is one of `allowed`: equal (ignoring case and a
/// trailing slash), `*`, or a `scheme://*.domain[:port]` wildcard matching any subdomain (not the
/// domain itself). A request without an `Origin` matches nothing but `*`.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.iter().any(|a| a.trim() == "*") {
        return true;
    }
    let Some(origin) = origin else { return false };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.trim().trim_end_matches('/').to_ascii_lowercase();
        if pattern == origin {
            return true;
        }
        let Some((scheme, rest)) = pattern.split_once("://*.") else { return false };
        let Some(host) = origin.strip_prefix(scheme).and_then(|o| o.strip_prefix("://")) else { return false };
        host.strip_suffix(rest).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.') && !sub.contains('/'))
    })
}

#[derive(Debug, Deserialize)]
struct TokenHeader {
    alg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(rename = "aws:channel-arn")]
    channel_arn: Option<String>,
    #[serde(rename = "aws:access-control-allow-origin")]
    allow_origin: Option<String>,
    #[serde(rename = "aws:strict-origin-enforcement")]
    strict_origin_enforcement: Option<bool>,
    #[serde(rename = "aws:single-use-uuid")]
    single_use_uuid: Option<String>,
    #[serde(rename = "aws:viewer-id")]
    viewer_id: Option<String>,
    #[serde(rename = "aws:viewer-session-version")]
    viewer_session_version: Option<i64>,
    #[serde(rename = "aws:maximum-resolution")]
    maximum_resolution: Option<String>,
    exp: Option<f64>,
}

/// A JWS compact token, split and decoded, its signature not yet checked.
struct PlaybackToken {
    /// `header.payload`, the bytes the signature covers.
    signed: String,
    claims: Claims,
    /// r‖s, 48 bytes each.
    signature: Vec<u8>,
}

impl PlaybackToken {
    fn parse(token: &str) -> Result<PlaybackToken, Denial> {
        let malformed = |why: &str| Denial::MalformedToken(why.to_owned());
        let mut pieces = token.trim().split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (pieces.next(), pieces.next(), pieces.next(), pieces.next())
        else {
            return Err(malformed("a JWT has three dot-separated parts"));
        };
        let decode = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| Denial::MalformedToken(format!("its {what} is not base64url")))
        };
        let header_json: TokenHeader = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|_| malformed("its header is not a JSON object"))?;
        match header_json.alg.as_deref() {
            Some("ES384") => {}
            Some(other) => return Err(Denial::UnsupportedAlgorithm(other.to_owned())),
            None => return Err(malformed("its header has no alg")),
        }
        let claims: Claims = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|e| Denial::MalformedToken(format!("its claims are not valid: {e}")))?;
        // JWS ES384 signatures are r‖s, 48 bytes each (not DER).
        let signature = decode(signature, "signature")?;
        if signature.len() != 96 {
            return Err(malformed("its signature is not a 96-byte ES384 signature"));
        }
        Ok(PlaybackToken { signed: format!("{header}.{payload}"), claims, signature })
    }

    /// Its claims, if one of `keys` signed it.
    fn verified(self, keys: &VerifyingKeys) -> Result<Claims, Denial> {
        if keys.verify(self.signed.as_bytes(), &self.signature) { Ok(self.claims) } else { Err(Denial::BadSignature) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let allowed = origins(&["https://example.com", "https://*.example.net", "http://localhost:3000"]);
        assert!(origin_allowed(&allowed, Some("https://example.com")));
        assert!(origin_allowed(&allowed, Some("HTTPS://Example.com/")));
        assert!(!origin_allowed(&allowed, Some("http://example.com")));
        assert!(!origin_allowed(&allowed, Some("https://example.com.evil.org")));
        assert!(origin_allowed(&allowed, Some("https://a.example.net")));
        assert!(origin_allowed(&allowed, Some("https://a.b.example.net")));
        assert!(!origin_allowed(&allowed, Some("https://example.net")));
        assert!(!origin_allowed(&allowed, Some("https://evilexample.net")));
        assert!(!origin_allowed(&allowed, Some("https://a.example.net:8443")));
        assert!(origin_allowed(&allowed, Some("http://localhost:3000")));
        assert!(!origin_allowed(&allowed, None));
        assert!(origin_allowed(&origins(&["*"]), None));
    }

    #[test]
    fn cidrs_and_forwarded_addresses() {
        let block = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(block.contains("10.1.2.3".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());

        let access = Access::new(None, vec![Cidr::parse("127.0.0.0/8").unwrap(), block]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8, 10.0.0.9".parse().unwrap());
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        // The rightmost address that is not a trusted proxy: the client as the proxies saw it.
        assert_eq!(access.viewer_address(proxy, &headers), "5.6.7.8".parse::<IpAddr>().unwrap());
        // An untrusted peer's header is ignored.
        assert_eq!(access.viewer_address("9.9.9.9".parse().unwrap(), &headers), "9.9.9.9".parse::<IpAddr>().unwrap());
        // Garbage in the header stops the walk at the last good hop.
        headers.insert("x-forwarded-for", "junk, 10.0.0.1".parse().unwrap());
        assert_eq!(access.viewer_address(proxy, &headers), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn tokens_parse_strictly() {
        let parse = |t: &str| PlaybackToken::parse(t).err().map(|d| d.code());
        assert_eq!(parse("a.b"), Some("malformed_token"));
        assert_eq!(parse("!!!.b.c"), Some("malformed_token"));
        let header = |alg: &str| URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}"));
        let payload = URL_SAFE_NO_PAD.encode(r#"{"exp":1}"#);
        assert_eq!(parse(&format!("{}.{payload}.", header("none"))), Some("unsupported_algorithm"));
        assert_eq!(parse(&format!("{}.{payload}.c2ln", header("HS256"))), Some("unsupported_algorithm"));
        assert_eq!(parse(&format!("{}.{payload}.c2ln", header("ES384"))), Some("malformed_token"));
        let signature = URL_SAFE_NO_PAD.encode([1u8; 96]);
        assert!(PlaybackToken::parse(&format!("{}.{payload}.{signature}", header("ES384"))).is_ok());
        let wrong_type = URL_SAFE_NO_PAD.encode(r#"{"exp":"tomorrow"}"#);
        assert_eq!(parse(&format!("{}.{wrong_type}.{signature}", header("ES384"))), Some("malformed_token"));
    }

    #[test]
    fn any_of_the_keys_verifies_and_the_last_good_one_is_tried_first() {
        use p384::ecdsa::signature::Signer;
        let secrets: Vec<p384::SecretKey> = (1..=3u8).map(|i| p384::SecretKey::from_slice(&[i; 48]).unwrap()).collect();
        let keys = VerifyingKeys::new(secrets.iter().map(|s| s.public_key().to_sec1_bytes().to_vec()).collect());
        let sign = |secret: &p384::SecretKey, message: &[u8]| {
            let signature: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(secret.clone()).sign(message);
            signature.to_bytes().to_vec()
        };
        let signature = sign(&secrets[2], b"message");
        assert!(keys.verify(b"message", &signature));
        assert_eq!(keys.last_good.load(Ordering::Relaxed), 2);
        assert!(!keys.verify(b"other message", &signature));
        assert!(keys.verify(b"message", &sign(&secrets[0], b"message")));
        assert_eq!(keys.last_good.load(Ordering::Relaxed), 0);
        let stranger = p384::SecretKey::from_slice(&[9; 48]).unwrap();
        assert!(!keys.verify(b"message", &sign(&stranger, b"message")));
        assert!(!VerifyingKeys::new(Vec::new()).verify(b"message", &signature));
    }
}
