//! Playback from any node: a node asked for the playlists or media of a stream another node
//! ingests pulls them from that node (its origin, over the internal playback endpoints, signed
//! with the cluster secret). Identical requests in flight at once share one upstream fetch
//! (coalescing), and init sections, parts and segments, which never change once they exist,
//! are kept in memory for a while, so a thousand viewers on one node cost their stream's
//! origin about one fetch per file. Playlists are only coalesced: a blocking LL-HLS reload is
//! passed on as it came (`_HLS_msn`, `_HLS_part`) and answered when the origin answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::peers::Peers;
use crate::settings::Limits;
use crate::store::{Store, StreamLease};

/// The internal playback endpoints of an origin: `{MEDIA_PATH}/{channel}/{file}` and
/// `{MULTIVARIANT_PATH}/{name}`.
pub const MEDIA_PATH: &str = "/_openivs/cluster/media";
pub const MULTIVARIANT_PATH: &str = "/_openivs/cluster/multivariant";
/// The viewer's address as the node that serves the viewer determined it.
pub const VIEWER_ADDRESS_HEADER: &str = "x-openivs-viewer-address";
/// How long a pulled part or segment is kept (longer than any playlist lists it).
const KEEP_FOR: Duration = Duration::from_secs(60);
/// How long a lookup that found who holds a stream is reused (a stream moves between nodes only
/// when its node dies, and its viewers then reload anyway). A lookup that found no holder is
/// not reused: a stream that has just gone live on another node plays here at once, as it does
/// there (players poll a channel before it goes live).
const HOLDER_FRESH_FOR: Duration = Duration::from_secs(1);

/// An origin's answer, as it is passed on to viewers.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub status: u16,
    pub content_type: String,
    pub cache_control: String,
    /// The origin's `Access-Control-Allow-Origin`, if any (the multivariant's, by the viewer's
    /// rules).
    pub allow_origin: Option<String>,
    pub body: Bytes,
}

/// A fetch in flight, which every identical request awaits.
type Flight = Arc<OnceCell<Result<Arc<Pulled>, String>>>;

struct Kept {
    pulled: Arc<Pulled>,
    at: Instant,
}

#[derive(Default)]
struct Memory {
    kept: HashMap<String, Kept>,
    kept_bytes: usize,
    /// At most this much is kept (`--cluster-pull-memory-bytes`); past it the oldest goes first.
    keep_at_most_bytes: usize,
}

pub struct OriginPull {
    peers: Arc<Peers>,
    client: reqwest::Client,
    memory: Mutex<Memory>,
    in_flight: Mutex<HashMap<String, Flight>>,
    /// Who holds each channel's stream, as last read, and when.
    holders: Mutex<HashMap<String, (StreamLease, Instant)>>,
}

impl OriginPull {
    pub fn new(peers: Arc<Peers>, limits: &Limits) -> OriginPull {
        let client = reqwest::Client::builder()
            .timeout(Limits::seconds(limits.cluster_pull_timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build()
            .expect("a reqwest client with no settings that can fail");
        let memory = Mutex::new(Memory { keep_at_most_bytes: limits.cluster_pull_memory_bytes, ..Memory::default() });
        OriginPull { peers, client, memory, in_flight: Mutex::default(), holders: Mutex::default() }
    }

    /// The node that serves the playlists and media of the channel's latest stream, when another
    /// node does: the one holding it live, or, once it has ended, the one that held it (which
    /// keeps an ended stream's playlists, ENDLIST included, as a single server does).
    pub async fn serving_node(&self, store: &dyn Store, channel_arn: &str) -> Option<StreamLease> {
        if let Some(holder) = self.remote_holder(store, channel_arn).await {
            return Some(holder);
        }
        let last = store.last_stream_holder(channel_arn).await.unwrap_or_else(|error| {
            tracing::warn!("playback: cannot look up who held {channel_arn}: {error}");
            None
        });
        last.filter(|h| h.node_id != self.peers.node.node_id)
    }

    /// The node holding the channel's live stream, when another node does (a holder found is
    /// read again at most once a second).
    pub async fn remote_holder(&self, store: &dyn Store, channel_arn: &str) -> Option<StreamLease> {
        let now = Instant::now();
        let cached = self.holders.lock().expect("holders lock").get(channel_arn).cloned();
        let holder = match cached {
            Some((holder, at)) if now.duration_since(at) < HOLDER_FRESH_FOR => Some(holder),
            _ => {
                let holder = store.stream_holder(channel_arn).await.unwrap_or_else(|error| {
                    tracing::warn!("playback: cannot look up who holds {channel_arn}: {error}");
                    None
                });
                let mut holders = self.holders.lock().expect("holders lock");
                holders.retain(|_, (_, at)| now.duration_since(*at) < HOLDER_FRESH_FOR);
                match &holder {
                    Some(found) => holders.insert(channel_arn.to_owned(), (found.clone(), now)),
                    None => holders.remove(channel_arn),
                };
                holder
            }
        };
        holder.filter(|h| h.node_id != self.peers.node.node_id)
    }

    /// `path_and_query` of the origin at `origin_url`: from memory when it is an immutable file
    /// pulled before, else one fetch shared by every identical request in flight. A segment the
    /// origin is still writing (an LHLS prefetch segment, which it streams as it grows) is
    /// relayed as it streams, not kept: the request whose fetch found it growing streams that
    /// fetch, and those that awaited it open one each.
    pub async fn pull(&self, origin_url: &str, path_and_query: &str, immutable: bool) -> Result<Pull, String> {
        let key = format!("{origin_url}{path_and_query}");
        if immutable && let Some(kept) = self.memory.lock().expect("pull memory lock").kept.get(&key) {
            return Ok(Pull::Whole(kept.pulled.clone()));
        }
        let cell = self.in_flight.lock().expect("in-flight lock").entry(key.clone()).or_default().clone();
        let growing_here: Mutex<Option<Growing>> = Mutex::default();
        let result = cell
            .get_or_init(|| async {
                match self.fetch(origin_url, path_and_query, &[], immutable).await? {
                    Pull::Whole(pulled) => Ok(pulled),
                    Pull::Growing(growing) => {
                        *growing_here.lock().expect("growing lock") = Some(growing);
                        Err(GROWING.to_owned())
                    }
                }
            })
            .await
            .clone();
        {
            let mut in_flight = self.in_flight.lock().expect("in-flight lock");
            if in_flight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                in_flight.remove(&key);
            }
        }
        match result {
            Ok(pulled) => {
                if immutable && pulled.status == 200 {
                    self.memory.lock().expect("pull memory lock").keep(key, pulled.clone(), Instant::now());
                }
                Ok(Pull::Whole(pulled))
            }
            Err(error) if error == GROWING => match growing_here.into_inner().expect("growing lock") {
                Some(growing) => Ok(Pull::Growing(growing)),
                None => self.fetch(origin_url, path_and_query, &[], immutable).await,
            },
            Err(error) => Err(error),
        }
    }

    /// One fetch of its own, with `headers` (a multivariant playlist: each opens a viewer
    /// session of its own, for the viewer the headers describe).
    pub async fn pull_alone(
        &self,
        origin_url: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
    ) -> Result<Arc<Pulled>, String> {
        match self.fetch(origin_url, path_and_query, headers, false).await? {
            Pull::Whole(pulled) => Ok(pulled),
            Pull::Growing(_) => unreachable!("only files are taken as growing"),
        }
    }

    /// One request to the origin. A `file` answered without a length is one still being
    /// written: its response is handed back unread.
    async fn fetch(
        &self,
        origin_url: &str,
        path_and_query: &str,
        headers: &[(&str, String)],
        file: bool,
    ) -> Result<Pull, String> {
        crate::metrics::global().cluster_pull();
        let mut request = self
            .client
            .get(format!("{origin_url}{path_and_query}"))
            .header(super::peers::AUTH_HEADER, self.peers.authorization(path_and_query, b""));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        // (Errors without their URL: a multivariant request's query holds the viewer's token.)
        let response = request.send().await.map_err(|e| e.without_url().to_string())?;
        let header = |name: reqwest::header::HeaderName| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_else(|| "application/octet-stream".into());
        let cache_control = header(reqwest::header::CACHE_CONTROL).unwrap_or_else(|| "no-cache".into());
        let allow_origin = header(reqwest::header::ACCESS_CONTROL_ALLOW_ORIGIN);
        let status = response.status().as_u16();
        if file && status == 200 && response.headers().get(reqwest::header::CONTENT_LENGTH).is_none() {
            return Ok(Pull::Growing(Growing { content_type, allow_origin, response }));
        }
        let body = response.bytes().await.map_err(|e| e.without_url().to_string())?;
        Ok(Pull::Whole(Arc::new(Pulled { status, content_type, cache_control, allow_origin, body })))
    }
}

/// What a pull gives: the whole answer, or a file still being written, streaming.
pub enum Pull {
    Whole(Arc<Pulled>),
    Growing(Growing),
}

/// A file the origin is still writing: its response, whose body streams as the file grows.
pub struct Growing {
    pub content_type: String,
    pub allow_origin: Option<String>,
    pub response: reqwest::Response,
}

/// The outcome a shared fetch leaves to the requests that awaited it when the file was growing.
const GROWING: &str = "(the file is still being written)";

impl Memory {
    /// Keeps a pulled file, dropping what is too old and, past the size bound, the oldest. A
    /// file larger than the whole bound is not kept.
    fn keep(&mut self, key: String, pulled: Arc<Pulled>, now: Instant) {
        let Memory { kept, kept_bytes, keep_at_most_bytes } = self;
        if let Some(previous) = kept.remove(&key) {
            *kept_bytes -= previous.pulled.body.len();
        }
        kept.retain(|_, k| {
            let fresh = now.duration_since(k.at) < KEEP_FOR;
            if !fresh {
                *kept_bytes -= k.pulled.body.len();
            }
            fresh
        });
        if pulled.body.len() > *keep_at_most_bytes {
            return;
        }
        while *kept_bytes + pulled.body.len() > *keep_at_most_bytes {
            let Some(oldest) = kept.iter().min_by_key(|(_, k)| k.at).map(|(key, _)| key.clone()) else { break };
            if let Some(k) = kept.remove(&oldest) {
                *kept_bytes -= k.pulled.body.len();
            }
        }
        *kept_bytes += pulled.body.len();
        kept.insert(key, Kept { pulled, at: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: usize) -> Arc<Pulled> {
        Arc::new(Pulled {
            status: 200,
            content_type: "video/mp4".into(),
            cache_control: "max-age=60".into(),
            allow_origin: None,
            body: Bytes::from(vec![0; bytes]),
        })
    }

    #[test]
    fn pulled_media_kept_stays_within_its_bound_and_its_time() {
        let mut memory = Memory { keep_at_most_bytes: 1000, ..Memory::default() };
        let start = Instant::now();
        for index in 0..5 {
            memory.keep(format!("part{index}"), file(300), start + Duration::from_millis(index));
        }
        // Three fit; the two oldest went first.
        assert_eq!(memory.kept_bytes, 900);
        let mut names: Vec<&str> = memory.kept.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["part2", "part3", "part4"]);
        // The same file again is counted once.
        memory.keep("part4".into(), file(300), start + Duration::from_millis(6));
        assert_eq!((memory.kept.len(), memory.kept_bytes), (3, 900));
        // Larger than the whole bound: not kept, and nothing else is dropped for it.
        memory.keep("segment".into(), file(1001), start + Duration::from_millis(7));
        assert_eq!((memory.kept.len(), memory.kept_bytes), (3, 900));
        // Past KEEP_FOR, what was kept is gone when the next file comes.
        memory.keep("late".into(), file(100), start + KEEP_FOR + Duration::from_secs(1));
        assert_eq!((memory.kept.len(), memory.kept_bytes), (1, 100));
    }
}
