//! The connected proxies and what each has ACKed or NACKed, for
//! `/api/status` and `legate status`. Streams write; admin reads.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use super::tracker::{NodeInfo, TypeStatus};
use crate::snapshot::Kind;

/// One stream's proxy, as `/api/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// `node.id`
    pub id: String,
    /// `node.cluster`
    pub cluster: String,
    /// RFC 3339.
    pub connected_at: String,
    /// `sotw` or `delta` (incremental) xDS.
    pub protocol: &'static str,
    /// By type URL.
    pub resources: BTreeMap<String, ResourceStatus>,
}

/// What a proxy holds of one type.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceStatus {
    /// Last version ACKed.
    pub acked_version: Option<String>,
    /// Last NACK, until a later ACK.
    pub nack: Option<NackStatus>,
}

/// A NACK as `/api/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NackStatus {
    /// The version rejected.
    pub version: String,
    /// Envoy's message.
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// Every open stream by id.
#[derive(Debug, Default)]
pub struct Fleet {
    nodes: Mutex<BTreeMap<u64, NodeStatus>>,
}

/// RFC 3339 with milliseconds, UTC.
#[must_use]
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Fleet {
    /// Record a stream's current state.
    ///
    /// # Panics
    /// If the lock was poisoned by a panicking stream.
    pub fn update(
        &self,
        stream: u64,
        node: &NodeInfo,
        connected_at: SystemTime,
        protocol: &'static str,
        status: Vec<(Kind, TypeStatus)>,
    ) {
        let resources = status
            .into_iter()
            .map(|(kind, s)| {
                let nack = s.nack.map(|n| NackStatus { version: n.version, message: n.message, at: timestamp(n.at) });
                (kind.type_url().to_owned(), ResourceStatus { acked_version: s.acked_version, nack })
            })
            .collect();
        let status = NodeStatus {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            connected_at: timestamp(connected_at),
            protocol,
            resources,
        };
        self.nodes.lock().expect("fleet lock").insert(stream, status);
    }

    /// Forget a closed stream.
    ///
    /// # Panics
    /// If the lock was poisoned.
    pub fn remove(&self, stream: u64) {
        self.nodes.lock().expect("fleet lock").remove(&stream);
    }

    /// Every connected proxy, by node id then stream.
    ///
    /// # Panics
    /// If the lock was poisoned.
    #[must_use]
    pub fn list(&self) -> Vec<NodeStatus> {
        let mut v: Vec<NodeStatus> = self.nodes.lock().expect("fleet lock").values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id).then(a.connected_at.cmp(&b.connected_at)));
        v
    }
}
