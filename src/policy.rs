//! Policy files: reading a folder of YAML, reporting every problem with
//! `FILE:LINE:COL`, and producing the validated [`Policy`] model.
//!
//! Parse, then validate: [`raw`] mirrors the files, [`validate`] checks the
//! merged whole and resolves references into [`model`].

mod jwks;
mod keys;
mod kong;
mod locate;
mod model;
mod raw;
mod reparse;
mod schema;
mod source;
mod validate;
mod words;

use std::fmt;
use std::path::Path;

use serde::Serialize;

pub(crate) use keys::did_you_mean;
pub use locate::{LocationIndex, Pos, Seg, YamlPath};
pub use model::*;
pub use schema::schema;
pub(crate) use schema::schema_of;
pub use source::import_kong;
pub(crate) use source::serde_problem;

/// One problem in the policy files, where a user can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Path relative to the policy folder.
    pub file: String,
    /// From 1.
    pub line: usize,
    /// From 1.
    pub column: usize,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every problem found in one load, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Load and validate every `*.yaml`/`*.yml` file under `dir`.
///
/// # Errors
/// Every problem found, not just the first.
pub fn load_dir(dir: &Path) -> Result<Policy, Diagnostics> {
    let files = source::read_dir(dir)?;
    let parsed = source::parse_all(&files);
    validate::validate(&files, parsed, None)
}

/// What one load keeps for the next (the watcher holds one across
/// reloads): each file's parse, and each route's validation.
#[derive(Debug, Default)]
pub struct LoadCache {
    files: source::ParseCache,
    routes: validate::RouteCache,
}

/// [`load_dir`], parsing again only what changed since the load that filled
/// `cache`, and validating again only the routes that changed (or all, when
/// something they refer to did).
///
/// # Errors
/// Every problem found, not just the first.
pub fn load_dir_cached(dir: &Path, cache: &mut LoadCache) -> Result<Policy, Diagnostics> {
    let files = source::read_dir(dir)?;
    let parsed = source::parse_all_cached(&files, &mut cache.files);
    validate::validate(&files, parsed, Some(&mut cache.routes))
}

/// Load and validate policy given as in-memory files `(relative path, text)`.
///
/// # Errors
/// Every problem found, not just the first.
pub fn load_texts(texts: &[(String, String)]) -> Result<Policy, Diagnostics> {
    let files = source::from_texts(texts);
    let parsed = source::parse_all(&files);
    validate::validate(&files, parsed, None)
}
