//! Viewer sessions: the `{session}` in every playback URL below the multivariant playlist.
//!
//! Opening a session costs nothing: the multivariant playlist hands out a session id that is a
//! signed token (a random nonce, when it was issued, the latency mode, the session's access rules
//! from [`super::access`], and an HMAC over them and the channel), and the server keeps no state
//! for it. A session is held only from its first
//! media request on, and only within caps: in all, per channel and per client address (past
//! any of them the request answers 429, as IVS does at its concurrent-viewer quota). A held
//! session is forgotten `playback_viewer_session_idle` after its last request (it comes back on
//! its next request, while its token is valid). So a flood of anonymous playlist requests holds
//! nothing, and one client can hold at most its own address's share. A revoked viewer's sessions
//! are dropped at once and refused from then on (the revocation is also kept here, in memory, as
//! long as a session id it matches can be valid).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::access::SessionRules;
use crate::settings::Limits;

/// A session token is accepted this long after it was issued.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Expired sessions are swept out at most this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
const NONCE_BYTES: usize = 8;
const MAC_BYTES: usize = 10;
/// Nonce, issue time (8 bytes) and flags come before the rules.
const FIXED_BYTES: usize = NONCE_BYTES + 9;
const FLAG_LOW_LATENCY: u8 = 1;

#[derive(Debug, Clone)]
pub struct ViewerSession {
    pub channel_arn: String,
    /// The channel's latency mode was LOW when the session opened (low-latency HLS).
    pub low_latency: bool,
    pub address: IpAddr,
    pub last_seen: Instant,
    pub rules: Arc<SessionRules>,
}

/// Why a media request has no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a session of this channel (forged, of another channel, or expired).
    Unknown,
    /// A cap is full: the server, the channel or the client's address holds all it may.
    TooMany,
    /// The viewer's sessions were revoked (StartViewerSessionRevocation).
    Revoked,
}

#[derive(Default)]
struct Held {
    sessions: HashMap<String, ViewerSession>,
    per_channel: HashMap<String, usize>,
    per_address: HashMap<IpAddr, usize>,
    /// Revocations by (channel, viewer id): the highest revoked version, and when it was made.
    revoked: HashMap<(String, String), (i64, Instant)>,
    last_sweep: Option<Instant>,
}

impl Held {
    fn remove_counts(&mut self, session: &ViewerSession) {
        decrement(&mut self.per_channel, &session.channel_arn);
        decrement(&mut self.per_address, &session.address);
    }

    /// Forgets sessions idle longer than `idle` (at most once per [`SWEEP_INTERVAL`]).
    fn sweep(&mut self, now: Instant, idle: Duration) {
        if self.last_sweep.is_some_and(|last| now.duration_since(last) < SWEEP_INTERVAL) {
            return;
        }
        self.last_sweep = Some(now);
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen) >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(session) = self.sessions.remove(&id) {
                self.remove_counts(&session);
            }
        }
        // Past a session id's lifetime no id that a revocation matches is valid.
        self.revoked.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_LIFETIME);
    }

    fn is_revoked(&self, channel_arn: &str, rules: &SessionRules) -> bool {
        rules.viewer.as_ref().is_some_and(|(viewer_id, version)| {
            self.revoked
                .get(&(channel_arn.to_owned(), viewer_id.clone()))
                .is_some_and(|(revoked, _)| version <= revoked)
        })
    }
}

fn decrement<K: std::hash::Hash + Eq + Clone>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

pub struct ViewerSessions {
    key: [u8; 32],
    limits: Limits,
    held: Mutex<Held>,
    /// Viewers other nodes hold of channels this node ingests: (channel, node) → (count, when
    /// reported).
    elsewhere: Mutex<HashMap<(String, String), (usize, Instant)>>,
}

/// How long another node's report of its viewers counts (it reports with every playlist pull,
/// several times a second to every few seconds while it has viewers).
const REPORTS_FRESH_FOR: Duration = Duration::from_secs(8);

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ViewerSessions {
    pub fn new(limits: Limits) -> ViewerSessions {
        ViewerSessions::with_key(limits, rand::random())
    }

    /// Sessions whose ids are signed with `key`.
    pub fn with_key(limits: Limits, key: [u8; 32]) -> ViewerSessions {
        ViewerSessions { key, limits, held: Mutex::default(), elsewhere: Mutex::default() }
    }

    fn mac(&self, channel_arn: &str, body: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(channel_arn.as_bytes());
        mac.update(b"\n");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        full[..MAC_BYTES].try_into().expect("long enough")
    }

    /// A new session id for a viewer of the channel. Nothing is stored.
    pub fn issue(&self, channel_arn: &str, low_latency: bool, rules: &SessionRules) -> String {
        let mut body = Vec::with_capacity(FIXED_BYTES + MAC_BYTES);
        body.extend_from_slice(&rand::random::<[u8; NONCE_BYTES]>());
        body.extend_from_slice(&unix_seconds().to_be_bytes());
        body.push(if low_latency { FLAG_LOW_LATENCY } else { 0 });
        if *rules != SessionRules::default() {
            body.extend_from_slice(&serde_json::to_vec(rules).expect("rules serialize"));
        }
        let mac = self.mac(channel_arn, &body);
        body.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(body)
    }

    /// Checks a session id against the channel it is used for: its latency mode and rules when
    /// this server issued it for that channel less than [`TOKEN_LIFETIME`] ago.
    fn verify(&self, id: &str, channel_arn: &str) -> Option<(bool, SessionRules)> {
        let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
        let (body, mac) = bytes.split_at_checked(bytes.len().checked_sub(MAC_BYTES)?)?;
        if body.len() < FIXED_BYTES {
            return None;
        }
        let expected = self.mac(channel_arn, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(mac, &expected[..])) {
            return None;
        }
        let issued = u64::from_be_bytes(body[NONCE_BYTES..NONCE_BYTES + 8].try_into().ok()?);
        let age = unix_seconds().saturating_sub(issued);
        if age >= TOKEN_LIFETIME.as_secs() {
            return None;
        }
        let rules = match &body[FIXED_BYTES..] {
            [] => SessionRules::default(),
            json => serde_json::from_slice(json).ok()?,
        };
        Some((body[FIXED_BYTES - 1] & FLAG_LOW_LATENCY != 0, rules))
    }

    /// Revokes a viewer's sessions of a channel with a version at or below `max_version`: those
    /// held are dropped now, and none of them is held again.
    pub fn revoke(&self, channel_arn: &str, viewer_id: &str, max_version: i64) {
        let mut held = self.held.lock().expect("viewer sessions lock");
        let entry =
            held.revoked.entry((channel_arn.to_owned(), viewer_id.to_owned())).or_insert((max_version, Instant::now()));
        *entry = (entry.0.max(max_version), Instant::now());
        let dropped: Vec<String> = held
            .sessions
            .iter()
            .filter(|(_, s)| s.channel_arn == channel_arn && held.is_revoked(channel_arn, &s.rules))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            if let Some(session) = held.sessions.remove(&id) {
                held.remove_counts(&session);
            }
        }
    }

    /// The session behind a media request, marked active: held already, or held from now on if
    /// its token is good and the caps allow.
    pub fn touch(&self, id: &str, channel_arn: &str, address: IpAddr) -> Result<ViewerSession, Refused> {
        let now = Instant::now();
        let mut held = self.held.lock().expect("viewer sessions lock");
        if let Some(session) = held.sessions.get_mut(id) {
            if session.channel_arn != channel_arn {
                return Err(Refused::Unknown);
            }
            session.last_seen = now;
            return Ok(session.clone());
        }
        let (low_latency, rules) = self.verify(id, channel_arn).ok_or(Refused::Unknown)?;
        held.sweep(now, Duration::from_secs(self.limits.playback_viewer_session_idle));
        if held.is_revoked(channel_arn, &rules) {
            return Err(Refused::Revoked);
        }
        if self.full(&held, channel_arn, address) {
            return Err(Refused::TooMany);
        }
        let session = ViewerSession {
            channel_arn: channel_arn.to_owned(),
            low_latency,
            address,
            last_seen: now,
            rules: Arc::new(rules),
        };
        *held.per_channel.entry(channel_arn.to_owned()).or_insert(0) += 1;
        *held.per_address.entry(address).or_insert(0) += 1;
        held.sessions.insert(id.to_owned(), session.clone());
        Ok(session)
    }

    /// Whether a new session of this channel from this address would be held now (the
    /// multivariant playlist answers 429 at once when it would not, as IVS does).
    pub fn would_admit(&self, channel_arn: &str, address: IpAddr) -> bool {
        let mut held = self.held.lock().expect("viewer sessions lock");
        held.sweep(Instant::now(), Duration::from_secs(self.limits.playback_viewer_session_idle));
        !self.full(&held, channel_arn, address)
    }

    fn full(&self, held: &Held, channel_arn: &str, address: IpAddr) -> bool {
        held.sessions.len() >= self.limits.playback_max_viewer_sessions
            || held.per_channel.get(channel_arn).copied().unwrap_or(0)
                >= self.limits.playback_max_viewer_sessions_per_channel
            || held.per_address.get(&address).copied().unwrap_or(0)
                >= self.limits.playback_max_viewer_sessions_per_address
    }

    /// Sessions of a channel that made a request within the idle time (IVS: the last minute).
    /// The channel's viewers: the sessions held here, and those other nodes of a cluster
    /// reported lately ([`ViewerSessions::report_elsewhere`]).
    pub fn viewer_count(&self, channel_arn: &str) -> i64 {
        let now = Instant::now();
        let here = self.held_here(channel_arn);
        let mut elsewhere = self.elsewhere.lock().expect("viewers elsewhere lock");
        elsewhere.retain(|_, (_, at)| now.duration_since(*at) < REPORTS_FRESH_FOR);
        let reported: usize =
            elsewhere.iter().filter(|((arn, _), _)| arn == channel_arn).map(|(_, (count, _))| *count).sum();
        (here + reported) as i64
    }

    /// The viewers another node holds of a channel this node ingests, as that node reports
    /// them with its playlist pulls; counted for [`REPORTS_FRESH_FOR`].
    pub fn report_elsewhere(&self, channel_arn: &str, node_id: &str, count: usize) {
        let mut elsewhere = self.elsewhere.lock().expect("viewers elsewhere lock");
        elsewhere.insert((channel_arn.to_owned(), node_id.to_owned()), (count, Instant::now()));
    }

    /// The sessions of the channel held on this node only.
    pub fn held_here(&self, channel_arn: &str) -> usize {
        let mut held = self.held.lock().expect("viewer sessions lock");
        held.sweep(Instant::now(), Duration::from_secs(self.limits.playback_viewer_session_idle));
        held.per_channel.get(channel_arn).copied().unwrap_or(0)
    }

    /// Sessions held now, in all.
    pub fn held(&self) -> usize {
        self.held.lock().expect("viewer sessions lock").sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "arn:aws:ivs:us-west-2:123456789012:channel/abc";
    const OTHER: &str = "arn:aws:ivs:us-west-2:123456789012:channel/xyz";

    fn limits() -> Limits {
        Limits {
            playback_max_viewer_sessions: 5,
            playback_max_viewer_sessions_per_channel: 4,
            playback_max_viewer_sessions_per_address: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn issuing_holds_nothing_and_tokens_are_bound_to_their_channel() {
        let viewers = ViewerSessions::new(limits());
        let ids: Vec<String> = (0..10_000).map(|_| viewers.issue(CHANNEL, true, &SessionRules::default())).collect();
        assert_eq!(viewers.held(), 0);
        let address: IpAddr = [10, 0, 0, 1].into();
        assert!(viewers.touch(&ids[0], CHANNEL, address).unwrap().low_latency);
        assert_eq!(viewers.touch(&ids[1], OTHER, address).unwrap_err(), Refused::Unknown);
        let mut forged = ids[2].clone();
        forged.replace_range(0..2, if &forged[0..2] == "AA" { "AB" } else { "AA" });
        assert_eq!(viewers.touch(&forged, CHANNEL, address).unwrap_err(), Refused::Unknown);
        assert_eq!(viewers.touch("zz", CHANNEL, address).unwrap_err(), Refused::Unknown);
        assert_eq!(viewers.held(), 1);
    }

    #[test]
    fn caps_per_address_channel_and_in_all() {
        let viewers = ViewerSessions::new(limits());
        let a: IpAddr = [10, 0, 0, 1].into();
        let issue = || viewers.issue(CHANNEL, false, &SessionRules::default());
        let first = issue();
        viewers.touch(&first, CHANNEL, a).unwrap();
        viewers.touch(&issue(), CHANNEL, a).unwrap();
        assert!(!viewers.would_admit(CHANNEL, a));
        assert_eq!(viewers.touch(&issue(), CHANNEL, a).unwrap_err(), Refused::TooMany, "per address");
        // A session already held keeps working.
        viewers.touch(&first, CHANNEL, a).unwrap();
        let b: IpAddr = [10, 0, 0, 2].into();
        viewers.touch(&issue(), CHANNEL, b).unwrap();
        viewers.touch(&issue(), CHANNEL, b).unwrap();
        let c: IpAddr = [10, 0, 0, 3].into();
        assert_eq!(viewers.touch(&issue(), CHANNEL, c).unwrap_err(), Refused::TooMany, "per channel");
        viewers.touch(&viewers.issue(OTHER, false, &SessionRules::default()), OTHER, c).unwrap();
        let d: IpAddr = [10, 0, 0, 4].into();
        assert_eq!(
            viewers.touch(&viewers.issue(OTHER, false, &SessionRules::default()), OTHER, d).unwrap_err(),
            Refused::TooMany,
            "in all"
        );
        assert_eq!(viewers.viewer_count(CHANNEL), 4);
    }

    #[test]
    fn idle_sessions_are_forgotten() {
        let viewers = ViewerSessions::new(Limits { playback_viewer_session_idle: 0, ..limits() });
        let a: IpAddr = [10, 0, 0, 1].into();
        let id = viewers.issue(CHANNEL, false, &SessionRules::default());
        viewers.touch(&id, CHANNEL, a).unwrap();
        // Sweeps run at most once a second.
        std::thread::sleep(SWEEP_INTERVAL + Duration::from_millis(50));
        assert_eq!(viewers.viewer_count(CHANNEL), 0);
        assert_eq!(viewers.held(), 0);
        // Its token still brings it back.
        viewers.touch(&id, CHANNEL, a).unwrap();
    }

    #[test]
    fn rules_travel_in_the_id_and_revocation_ends_matching_sessions() {
        let viewers = ViewerSessions::new(limits());
        let a: IpAddr = [10, 0, 0, 1].into();
        let rules = |version| SessionRules {
            viewer: Some(("alice".into(), version)),
            origins: Some(vec!["https://example.com".into()]),
            strict_origin: true,
            max_height: Some(480),
        };
        let old = viewers.issue(CHANNEL, true, &rules(1));
        let newer = viewers.issue(CHANNEL, true, &rules(2));
        assert_eq!(*viewers.touch(&old, CHANNEL, a).unwrap().rules, rules(1));
        viewers.touch(&newer, CHANNEL, a).unwrap();
        viewers.revoke(CHANNEL, "alice", 1);
        assert_eq!(viewers.touch(&old, CHANNEL, a).unwrap_err(), Refused::Revoked);
        viewers.touch(&newer, CHANNEL, a).unwrap();
        assert_eq!(viewers.viewer_count(CHANNEL), 1);
        // Another channel's revocation does not touch this one; a tampered rule breaks the MAC.
        viewers.revoke(OTHER, "alice", 5);
        viewers.touch(&newer, CHANNEL, a).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&newer).unwrap();
        let position = bytes.iter().position(|b| *b == b'2').unwrap();
        bytes[position] = b'9';
        assert_eq!(viewers.touch(&URL_SAFE_NO_PAD.encode(bytes), CHANNEL, a).unwrap_err(), Refused::Unknown);
    }
}
