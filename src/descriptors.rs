//! The protobuf descriptors of Envoy's API, from the same `.proto` files the
//! `envoy-types` structs were generated from (assets/envoy-descriptors.bin.gz,
//! refreshed by scripts/update-descriptors.sh).
//!
//! They let legate render resources as Envoy's own JSON and encode map fields
//! in a canonical order (prost encodes `HashMap`s in random order, which would
//! make versions differ between processes).

use std::io::Read;
use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

static GZ: &[u8] = include_bytes!("../assets/envoy-descriptors.bin.gz");

/// The shared pool, decoded on first use.
///
/// # Panics
/// If the bundled descriptor set is corrupt (a build problem, caught by tests).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(GZ).read_to_end(&mut bytes).expect("bundled descriptors are gzip");
        DescriptorPool::decode(bytes.as_slice()).expect("bundled descriptors decode")
    })
}

/// The message descriptor for a type URL such as
/// `type.googleapis.com/envoy.config.listener.v3.Listener`.
#[must_use]
pub fn message(type_url: &str) -> Option<prost_reflect::MessageDescriptor> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    pool().get_message_by_name(name)
}
