//! legate: declarative gateway policy to stock Envoy over ADS.
//!
//! The pipeline, one module each: [`policy`] (files → validated model) →
//! [`translate`] (pure, model → Envoy resources) → [`snapshot`] (encoded,
//! versioned) → `xds` (ADS streams). `watch` and `admin` sit at the edges, beside the services legate
//! answers for Envoy itself (`ratelimit`, `accesslog`, `aggregator`).

pub mod accesslog;
pub mod admin;
pub mod aggregator;
pub mod bootstrap;
pub mod descriptors;
pub mod echo;
pub mod gateway_test;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod ratelimit;
pub mod render;
pub mod serve;
pub mod snapshot;
pub mod state;
pub mod status;
pub mod translate;
pub mod up;
pub mod watch;
pub mod xds;
