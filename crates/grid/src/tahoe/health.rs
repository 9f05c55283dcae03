//! Is the node able to store data right now?
//!
//! An immutable upload succeeds only when the node can place shares on at
//! least `shares.happy` distinct servers; otherwise it fails after doing all
//! the work (`UploadUnhappinessError`). Reads need only `shares.needed`. So a
//! caller that gates writes on "connected servers ≥ happy" saves itself
//! doomed uploads. The numbers come from the node's welcome page
//! (`GET /?t=json`) and its `tahoe.cfg` (the page does not show the encoding).

use std::path::Path;

use serde_json::Value;

use crate::{GridError, GridResult};

/// A client node's erasure-coding parameters (`[client] shares.*` in `tahoe.cfg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// `shares.needed` (k): shares needed to read a file back.
    pub needed: u32,
    /// `shares.happy`: distinct servers an upload must reach to succeed.
    pub happy: u32,
    /// `shares.total` (N): shares written per file.
    pub total: u32,
}

impl Encoding {
    /// Tahoe's defaults (3-of-10, happy 7), used by a node whose `tahoe.cfg`
    /// does not set them.
    pub const TAHOE_DEFAULT: Encoding = Encoding {
        needed: 3,
        happy: 7,
        total: 10,
    };

    /// Reads `[client] shares.*` from a node directory's `tahoe.cfg`; missing
    /// keys take Tahoe's defaults.
    pub fn from_node_dir(node_dir: &Path) -> GridResult<Encoding> {
        let path = node_dir.join("tahoe.cfg");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| GridError::io(format!("reading {}", path.display()), e))?;
        Encoding::from_config(&text)
            .map_err(|why| GridError::Protocol(format!("{}: {why}", path.display())))
    }

    /// Parses the `[client]` section of a `tahoe.cfg` text.
    pub(crate) fn from_config(text: &str) -> Result<Encoding, String> {
        let mut enc = Encoding::TAHOE_DEFAULT;
        let mut section = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if section != "client" {
                continue;
            }
            let slot = match key.trim() {
                "shares.needed" => &mut enc.needed,
                "shares.happy" => &mut enc.happy,
                "shares.total" => &mut enc.total,
                _ => continue,
            };
            let value = value.trim();
            if !value.is_empty() {
                *slot = value
                    .parse()
                    .map_err(|_| format!("{} = {value:?} is not a number", key.trim()))?;
            }
        }
        Ok(enc)
    }
}

/// One storage server as the node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// The server's node id (`v0-…`).
    pub node_id: String,
    /// Its nickname, as announced.
    pub nickname: String,
    /// Whether the node currently has a working connection to it.
    pub connected: bool,
}

/// A snapshot of the node's connectivity, from [`TahoeGrid::health`](super::TahoeGrid::health).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Every storage server the node has heard of (via its introducers or
    /// static configuration), connected or not.
    pub servers: Vec<ServerStatus>,
    /// How many introducers the node is connected to.
    pub introducers_connected: usize,
    /// How many introducers it is configured with.
    pub introducers_total: usize,
    /// The node's encoding, when known (from its `tahoe.cfg`, or from
    /// [`TahoeOptions::encoding`](super::TahoeOptions::encoding)).
    pub encoding: Option<Encoding>,
}

impl Health {
    /// Storage servers with a working connection.
    pub fn connected_servers(&self) -> usize {
        self.servers.iter().filter(|s| s.connected).count()
    }

    /// Storage servers the node knows of.
    pub fn known_servers(&self) -> usize {
        self.servers.len()
    }

    /// The `shares.happy` this check compares against: the node's own, or
    /// Tahoe's default (7) when the encoding is unknown.
    pub fn happy(&self) -> u32 {
        self.encoding.unwrap_or(Encoding::TAHOE_DEFAULT).happy
    }

    /// True when immutable uploads can succeed: connected servers ≥ happy.
    pub fn can_write(&self) -> bool {
        self.connected_servers() >= self.happy() as usize
    }

    /// True when at least `shares.needed` servers are connected, the least any
    /// download needs (it also needs them to be the right servers).
    pub fn can_read(&self) -> bool {
        self.connected_servers() >= self.encoding.unwrap_or(Encoding::TAHOE_DEFAULT).needed as usize
    }

    /// True when a "not enough shares" answer may be the node's state rather
    /// than the object's: it knows of no storage server, is not connected to
    /// every server it knows, or (encoding known) to fewer than
    /// `shares.happy` — e.g. a node just restarted, still hearing of
    /// servers. Only when this is false is missing data taken as missing.
    pub fn degraded(&self) -> bool {
        let connected = self.connected_servers();
        self.known_servers() == 0
            || connected < self.known_servers()
            || self.encoding.is_some_and(|e| connected < e.happy as usize)
    }

    /// Parses the welcome page's JSON (`GET /?t=json`).
    pub(crate) fn parse(body: &[u8], encoding: Option<Encoding>) -> GridResult<Health> {
        let bad = |why: &str| {
            GridError::Protocol(format!("unexpected welcome page from the node: {why}"))
        };
        let v: Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
        let servers = v
            .get("servers")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no servers list"))?
            .iter()
            .map(|s| ServerStatus {
                node_id: s
                    .get("nodeid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                nickname: s
                    .get("nickname")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                // 1.20 says exactly "connected"; older nodes said "Connected to …".
                connected: s
                    .get("connection_status")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.to_ascii_lowercase().starts_with("connected")),
            })
            .collect();
        let statuses: Vec<&str> = v
            .get("introducers")
            .and_then(|i| i.get("statuses"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        Ok(Health {
            servers,
            introducers_connected: statuses
                .iter()
                .filter(|s| s.starts_with("Connected"))
                .count(),
            introducers_total: statuses.len(),
            encoding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parsing() {
        let cfg = "[node]\nnickname = x\nshares.happy = 99\n\n[client]\nhelper.furl =\n# shares.needed = 9\nshares.needed = 2\nshares.happy = 3\nshares.total = 3\n[storage]\nenabled = true\n";
        assert_eq!(
            Encoding::from_config(cfg).unwrap(),
            Encoding {
                needed: 2,
                happy: 3,
                total: 3
            }
        );
        assert_eq!(
            Encoding::from_config("[client]\nshares.total =\n").unwrap(),
            Encoding::TAHOE_DEFAULT
        );
        assert!(Encoding::from_config("[client]\nshares.happy = lots\n").is_err());
    }

    #[test]
    fn welcome_page_parsing() {
        let body = br#"{"introducers": {"statuses": ["Connected to tcp:127.0.0.1:47000 via tcp"]},
          "servers": [
            {"nodeid": "v0-a", "connection_status": "connected", "nickname": "s1"},
            {"nodeid": "v0-b", "connection_status": "failure: [Failure instance: ...]", "nickname": "s2"},
            {"nodeid": "v0-c", "connection_status": "connected", "nickname": "s3"}]}"#;
        let h = Health::parse(
            body,
            Some(Encoding {
                needed: 2,
                happy: 3,
                total: 3,
            }),
        )
        .unwrap();
        assert_eq!((h.connected_servers(), h.known_servers()), (2, 3));
        assert_eq!((h.introducers_connected, h.introducers_total), (1, 1));
        assert!(!h.can_write());
        assert!(h.can_read());
        assert!(h.degraded(), "a known server is away");
        let mut all = h.clone();
        all.servers.retain(|s| s.connected);
        assert!(all.degraded(), "2 connected < happy 3");
        all.encoding = Some(Encoding {
            needed: 1,
            happy: 2,
            total: 2,
        });
        assert!(!all.degraded(), "every known server, and happy");
        all.encoding = None;
        assert!(!all.degraded(), "unknown encoding: every known server");
        all.servers.clear();
        assert!(all.degraded(), "no server known yet");
        let h = Health {
            encoding: None,
            ..h
        };
        assert_eq!(h.happy(), 7);
    }
}
