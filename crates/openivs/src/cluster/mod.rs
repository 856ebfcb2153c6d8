//! The cluster: several openivs nodes sharing one PostgreSQL database (one node on SQLite is a
//! cluster of one). Each node has a name and an origin URL ([`Node`]); which node ingests which
//! channel's live stream is the stream registry ([`registry`]): a lease in the store that the
//! ingest node renews, whose epoch fences a node that lost it.

pub mod peers;
pub mod pull;
pub mod registry;
pub mod revocations;

use std::net::SocketAddr;
use std::path::Path;

/// This node, as the other nodes of a cluster know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique among the nodes sharing one database; stable across restarts by default, so a
    /// node that restarts ends what it left open at once rather than after its leases expire.
    pub node_id: String,
    /// Where the other nodes reach this node's HTTP listener.
    pub origin_url: String,
}

impl Node {
    /// The node of the settings: `node_id` defaults to a name made at the first start and kept
    /// in the data directory (file `node-id`), so it stays the same across restarts and differs
    /// between installations; `origin_url` defaults to the HTTP listener's address.
    pub fn new(
        node_id: Option<String>,
        origin_url: Option<String>,
        http_addr: SocketAddr,
        https: bool,
        data_dir: &Path,
    ) -> Result<Node, String> {
        let node_id = match node_id.filter(|id| !id.trim().is_empty()) {
            Some(id) => id,
            None => kept_node_id(&data_dir.join("node-id"))?,
        };
        let scheme = if https { "https" } else { "http" };
        let origin_url = origin_url
            .filter(|url| !url.trim().is_empty())
            .map(|url| url.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("{scheme}://{http_addr}"));
        Ok(Node { node_id, origin_url })
    }
}

/// The node id kept in `file`, made (and kept) if there is none yet.
fn kept_node_id(file: &Path) -> Result<String, String> {
    if let Ok(kept) = std::fs::read_to_string(file)
        && !kept.trim().is_empty()
    {
        return Ok(kept.trim().to_owned());
    }
    let made = format!("node-{}", crate::api::random_alphanumeric(12).to_lowercase());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(file, &made).map_err(|e| format!("cannot keep the node id in {}: {e}", file.display()))?;
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_the_name_it_made_unless_told_one() {
        let scratch = |name: &str| {
            let dir = std::env::temp_dir().join(format!("openivs-node-{name}-{}", crate::api::random_alphanumeric(8)));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        };
        let dir = scratch("a");
        let addr: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let node = Node::new(None, None, addr, false, &dir).unwrap();
        assert!(node.node_id.starts_with("node-"), "{}", node.node_id);
        assert_eq!(node.origin_url, "http://127.0.0.1:8081");
        let again = Node::new(None, None, "127.0.0.1:9999".parse().unwrap(), true, &dir).unwrap();
        assert_eq!(again.node_id, node.node_id, "the same across restarts");
        assert_eq!(again.origin_url, "https://127.0.0.1:9999");
        let told = Node::new(Some("a".into()), Some("https://a.internal:8443/".into()), addr, false, &dir).unwrap();
        assert_eq!((told.node_id.as_str(), told.origin_url.as_str()), ("a", "https://a.internal:8443"));
        let other = scratch("b").join("not-yet");
        assert_ne!(Node::new(None, None, addr, false, &other).unwrap().node_id, node.node_id);
    }
}
