//! Immutable, encoded Envoy resources with deterministic versions.
//!
//! A [`Snapshot`] is built once per valid policy: every resource is encoded
//! to `Any` once and shared by every stream. A node sees a [`View`] of it:
//! the listeners (and their route configurations) of its fleet, and every
//! cluster and endpoint. Versions are content hashes, so the same files give
//! the same versions on any machine and after any restart.

mod canonical;

pub(crate) use canonical::insert_fields;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use prost::Name;
use sha2::{Digest, Sha256};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;

/// The four resource types legate serves, in make-before-break push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// CDS
    Cluster,
    /// EDS
    Endpoint,
    /// LDS
    Listener,
    /// RDS
    Route,
    /// SDS (TLS certificates and keys)
    Secret,
}

impl Kind {
    /// Every kind, in push order.
    pub const ALL: [Kind; 5] = [Kind::Cluster, Kind::Endpoint, Kind::Secret, Kind::Listener, Kind::Route];

    /// The xDS type URL.
    #[must_use]
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Kind::Secret => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        }
    }

    /// The kind a type URL names.
    #[must_use]
    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name for metrics and logs: `cds`, `eds`, `lds`, `rds`, `sds`.
    #[must_use]
    pub fn short(self) -> &'static str {
        match self {
            Kind::Cluster => "cds",
            Kind::Endpoint => "eds",
            Kind::Listener => "lds",
            Kind::Route => "rds",
            Kind::Secret => "sds",
        }
    }

    /// Plural noun for rendered output.
    #[must_use]
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Cluster => "clusters",
            Kind::Endpoint => "endpoints",
            Kind::Listener => "listeners",
            Kind::Route => "routes",
            Kind::Secret => "secrets",
        }
    }

    /// LDS and CDS are wildcard types; RDS, EDS and SDS are requested by name.
    #[must_use]
    pub fn is_wildcard(self) -> bool {
        matches!(self, Kind::Cluster | Kind::Listener)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// One encoded resource.
#[derive(Debug, PartialEq)]
pub struct Resource {
    /// Resource name.
    pub name: String,
    /// The encoded message.
    pub any: Any,
    /// Hex SHA-256 of the encoded bytes.
    pub hash: String,
    /// The resource as a SotW response entry, made on first use.
    sotw_entry: OnceLock<Vec<u8>>,
    /// The resource as a delta response entry, made on first use.
    delta_entry: OnceLock<Vec<u8>>,
}

impl Resource {
    /// The resource's own version (delta xDS): the first 16 hex digits
    /// (64 bits) of its hash, the same on every replica and after every
    /// restart.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.hash[..16]
    }

    fn new<M: prost::Message + Name>(name: String, msg: &M) -> Arc<Resource> {
        Resource::encoded(name, M::type_url(), canonical_bytes(msg))
    }

    /// A resource from its [`canonical_bytes`].
    pub(crate) fn encoded(name: String, type_url: String, value: Vec<u8>) -> Arc<Resource> {
        let hash = hex(&Sha256::digest(&value));
        Arc::new(Resource {
            name,
            any: Any { type_url, value },
            hash,
            sotw_entry: OnceLock::new(),
            delta_entry: OnceLock::new(),
        })
    }

    /// This resource as it appears in every SotW response that carries it:
    /// `resources` (field 2) holding its `Any`. Encoded once, shared by
    /// every stream.
    pub fn sotw_entry(&self) -> &[u8] {
        self.sotw_entry.get_or_init(|| crate::xds::wire::entry(&self.any))
    }

    /// This resource as it appears in every delta response that carries it:
    /// `resources` (field 2) holding a `Resource` with its name, version and
    /// `Any`. Encoded once, shared by every stream.
    pub fn delta_entry(&self) -> &[u8] {
        self.delta_entry.get_or_init(|| {
            crate::xds::wire::entry(&envoy_types::pb::envoy::service::discovery::v3::Resource {
                name: self.name.clone(),
                version: self.version().to_owned(),
                resource: Some(self.any.clone()),
                ..Default::default()
            })
        })
    }
}

/// `msg` encoded with every map's entries in key order, so that the same
/// message has the same bytes, and hash, in every process.
pub(crate) fn canonical_bytes<M: prost::Message + Name>(msg: &M) -> Vec<u8> {
    let raw = msg.encode_to_vec();
    match crate::descriptors::message(&M::type_url()) {
        Some(md) => canonical::canonicalize(&md, &raw),
        None => raw,
    }
}

/// Resources of one kind by name.
pub type Resources = BTreeMap<String, Arc<Resource>>;

/// What one node is served: resources of each kind with their versions.
#[derive(Debug, Default, PartialEq)]
pub struct View {
    resources: [Resources; KINDS],
    versions: [String; KINDS],
}

/// How many kinds there are.
const KINDS: usize = Kind::ALL.len();

impl View {
    fn new(resources: [Resources; KINDS]) -> View {
        let versions = resources.each_ref().map(version_of);
        View { resources, versions }
    }

    /// Resources of a kind.
    #[must_use]
    pub fn resources(&self, kind: Kind) -> &Resources {
        &self.resources[kind.index()]
    }

    /// Version of a kind: a hash of every resource of that kind in this view.
    #[must_use]
    pub fn version(&self, kind: Kind) -> &str {
        &self.versions[kind.index()]
    }
}

/// Every resource legate serves for one policy, and who gets which listener.
#[derive(Debug, Default)]
pub struct Snapshot {
    all: View,
    fleets: BTreeMap<String, Vec<String>>,
    version: String,
    views: Mutex<HashMap<String, Arc<View>>>,
}

impl Snapshot {
    /// Encode typed resources; route configurations come encoded (see
    /// `translate::routes`). `fleets` maps a listener name to the node
    /// clusters allowed to see it (and its route configuration of the same
    /// name); listeners not in it go to every node.
    #[must_use]
    pub(crate) fn build(
        clusters: &[Cluster],
        endpoints: &[ClusterLoadAssignment],
        listeners: &[Listener],
        routes: Vec<Arc<Resource>>,
        secrets: &[Secret],
        fleets: BTreeMap<String, Vec<String>>,
    ) -> Snapshot {
        let mut r: [Resources; KINDS] = Default::default();
        for c in clusters {
            r[Kind::Cluster.index()].insert(c.name.clone(), Resource::new(c.name.clone(), c));
        }
        for e in endpoints {
            r[Kind::Endpoint.index()].insert(e.cluster_name.clone(), Resource::new(e.cluster_name.clone(), e));
        }
        for l in listeners {
            r[Kind::Listener.index()].insert(l.name.clone(), Resource::new(l.name.clone(), l));
        }
        for rc in routes {
            r[Kind::Route.index()].insert(rc.name.clone(), rc);
        }
        for s in secrets {
            r[Kind::Secret.index()].insert(s.name.clone(), Resource::new(s.name.clone(), s));
        }
        let all = View::new(r);
        let mut h = Sha256::new();
        for v in &all.versions {
            h.update(v.as_bytes());
        }
        for (l, f) in &fleets {
            h.update(format!("{l}={};", f.join(",")).as_bytes());
        }
        let version = hex(&h.finalize())[..16].to_owned();
        Snapshot { all, fleets, version, views: Mutex::default() }
    }

    /// Share `previous`'s copy of every resource that did not change, with
    /// the wire encodings it has already made: after an edit, only what
    /// changed is encoded for the wire, and unchanged resources are held
    /// once in memory however many snapshots streams still hold.
    pub fn reuse(&mut self, previous: &Snapshot) {
        for kind in Kind::ALL {
            let old = &previous.all.resources[kind.index()];
            for (name, r) in &mut self.all.resources[kind.index()] {
                if let Some(o) = old.get(name).filter(|o| o.hash == r.hash) {
                    *r = Arc::clone(o);
                }
            }
        }
        self.views.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// A hash of everything in the snapshot.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Listener (and route configuration) name → the node clusters it is
    /// for; a listener not here is for every fleet.
    #[must_use]
    pub fn fleets(&self) -> &BTreeMap<String, Vec<String>> {
        &self.fleets
    }

    /// Every resource, regardless of fleets.
    #[must_use]
    pub fn all(&self) -> &View {
        &self.all
    }

    /// What a node whose `node.cluster` is `cluster` gets. Views are built
    /// once per node cluster and shared.
    ///
    /// # Panics
    /// If the view cache's lock was poisoned.
    #[must_use]
    pub fn view(&self, cluster: &str) -> Arc<View> {
        let mut views = self.views.lock().expect("view cache lock");
        if let Some(v) = views.get(cluster) {
            return Arc::clone(v);
        }
        let allowed = |name: &str| self.fleets.get(name).is_none_or(|f| f.iter().any(|c| c == cluster));
        let mut r = self.all.resources.clone();
        r[Kind::Listener.index()].retain(|name, _| allowed(name));
        r[Kind::Route.index()].retain(|name, _| allowed(name));
        let v = Arc::new(View::new(r));
        views.insert(cluster.to_owned(), Arc::clone(&v));
        v
    }
}

/// The version of a set of resources: a hash of their names and contents.
#[must_use]
pub fn version_of(resources: &Resources) -> String {
    version_of_pairs(resources.iter().map(|(name, r)| (name.as_str(), r.version())))
}

/// [`version_of`] from names and resource versions alone, in name order, as
/// a delta stream knows what a proxy holds.
pub fn version_of_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (name, version) in pairs {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(version.as_bytes());
    }
    hex(&h.finalize())[..16].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
