//! The policy format as a JSON Schema, for editors: `legate schema` prints
//! it, and `schema/policy.schema.json` in the repository is a copy (a test
//! keeps the two equal).
//!
//! It is derived from the [`raw`](super::raw) types that parse the files, so
//! it names exactly the keys the parser knows and marks every other key an
//! error, as the loader does. What needs more than one value to check
//! (references, durations, regexes, port clashes) is left to `legate
//! validate`; the schema is for completion and typos as you type.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;

use super::raw::PolicyFile;

/// The JSON Schema (draft 7, which editors' YAML support reads best) of one
/// policy file, pretty-printed, with a final newline.
#[must_use]
pub fn schema() -> String {
    schema_of::<PolicyFile>("legate policy file")
}

/// The JSON Schema (draft 7) of the files `T` parses, titled `title`,
/// pretty-printed, with a final newline: the policy's, and gateway test
/// files'.
pub(crate) fn schema_of<T: JsonSchema>(title: &str) -> String {
    let mut root = SchemaSettings::draft07().into_generator().into_root_schema_for::<T>();
    root.insert("title".into(), title.into());
    let mut out = serde_json::to_string_pretty(&root).unwrap_or_default();
    out.push('\n');
    out
}
