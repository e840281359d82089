//! legate: declarative gateway policy to stock Envoy over ADS.
//!
//! The pipeline, one module each: [`policy`] (files → validated model) →
//! [`translate`] (pure, model → Envoy resources) → [`snapshot`] (encoded,
//! versioned) → `xds` (ADS streams). `watch` and `admin` sit at the edges.

pub mod descriptors;
pub mod policy;
pub mod snapshot;
pub mod translate;
pub mod bootstrap;
pub mod render;
pub mod metrics;
pub mod state;
pub mod xds;
pub mod admin;
pub mod serve;
pub mod watch;
pub mod echo;
pub mod up;
