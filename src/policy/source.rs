//! Reading the policy folder and parsing each file into [`raw`] types, with
//! unknown keys and syntax errors reported at their position.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize as _;

use super::locate::{LocationIndex, Pos, Seg, YamlPath};
use super::raw::PolicyFile;
use super::{keys, kong};
use super::{Diagnostic, Diagnostics};

/// One policy file: its name relative to the folder, text and positions.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) rel: String,
    pub(crate) text: String,
    /// The folder it is in, against which file paths written in it resolve.
    pub(crate) dir: PathBuf,
    index: OnceLock<LocationIndex>,
}

impl SourceFile {
    fn new(rel: String, text: String, dir: PathBuf) -> SourceFile {
        SourceFile { rel, text, dir, index: OnceLock::new() }
    }

    /// Positions of every key and value, built on first use: only a folder
    /// with errors pays for the second parse.
    pub(crate) fn index(&self) -> &LocationIndex {
        self.index.get_or_init(|| LocationIndex::build(&self.text))
    }

    /// A problem at `pos` in this file.
    pub(crate) fn diagnostic(&self, pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic { file: self.rel.clone(), line: pos.line, column: pos.column, message: message.into() }
    }
}

/// Where a parsed item came from: file number, document number and path.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) file: usize,
    pub(crate) doc: usize,
    pub(crate) path: YamlPath,
}

impl Origin {
    pub(crate) fn key(&self, k: impl Into<std::borrow::Cow<'static, str>>) -> Origin {
        Origin { path: self.path.key(k), ..self.clone() }
    }
    pub(crate) fn index(&self, i: usize) -> Origin {
        Origin { path: self.path.index(i), ..self.clone() }
    }
}

/// A parsed document and the problems found while parsing it.
pub(crate) struct Parsed {
    pub(crate) docs: Vec<(usize, usize, Arc<PolicyFile>)>,
    pub(crate) errors: Vec<Diagnostic>,
    /// Where the items of documents converted from Kong came from.
    pub(crate) origins: KongOrigins,
}

/// For documents converted from Kong, by (file, document): where each list
/// item of the converted policy came from in the Kong file.
#[derive(Debug, Default)]
pub(crate) struct KongOrigins(std::collections::HashMap<(usize, usize), Vec<(YamlPath, YamlPath)>>);

impl KongOrigins {
    /// Where the item at `path` of document `doc` of file `file` is written.
    pub(crate) fn origin(&self, file: usize, doc: usize, path: YamlPath) -> Origin {
        let path = self
            .0
            .get(&(file, doc))
            .and_then(|m| m.iter().find(|(legate, _)| *legate == path))
            .map_or(path, |(_, kong)| kong.clone());
        Origin { file, doc, path }
    }
}

/// Every `*.yaml`/`*.yml` under `dir`, recursively, in path order. Hidden
/// entries are skipped: editors' swap files, and Kubernetes ConfigMap
/// volumes' `..data` and timestamped folders (their files are reached
/// through the top-level symlinks).
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, Diagnostics> {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    if let Err(e) = walk(dir, &mut paths) {
        return Err(Diagnostics(vec![Diagnostic {
            file: dir.display().to_string(),
            line: 1,
            column: 1,
            message: format!("cannot read the policy folder: {e}"),
        }]));
    }
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                files.push(SourceFile::new(rel, text, parent));
            }
            Err(e) => {
                errors.push(Diagnostic { file: rel, line: 1, column: 1, message: format!("cannot read file: {e}") });
            }
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(Diagnostics(errors))
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // metadata() follows symlinks, as a ConfigMap's top-level files are.
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            walk(&path, out)?;
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && !crate::gateway_test::is_test_file(&name) {
            out.push(path);
        }
    }
    Ok(())
}

/// In-memory files, for tests and benchmarks; file paths written in them
/// resolve against the current folder.
pub(crate) fn from_texts(texts: &[(String, String)]) -> Vec<SourceFile> {
    let mut files: Vec<SourceFile> = texts
        .iter()
        .map(|(rel, text)| {
            let dir = Path::new(rel).parent().map(Path::to_path_buf).unwrap_or_default();
            SourceFile::new(rel.clone(), text.clone(), dir)
        })
        .collect();
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    files
}

/// What parsing one policy file gave, kept to be reused while its text is
/// unchanged: a large policy is usually many files, and an edit touches one.
#[derive(Debug)]
struct ParsedFile {
    text: String,
    docs: Vec<(usize, Arc<PolicyFile>)>,
    errors: Vec<Diagnostic>,
}

/// Parsed policy files by path, from the last load: what `policy::load_dir_cached`
/// reuses for files whose text is unchanged.
#[derive(Debug, Default)]
pub(crate) struct ParseCache(std::collections::HashMap<String, ParsedFile>);

/// Parse every document of every file; collect all syntax errors and unknown keys.
pub(crate) fn parse_all(files: &[SourceFile]) -> Parsed {
    parse_all_cached(files, &mut ParseCache::default())
}

/// [`parse_all`], reusing what `cache` holds for files whose text did not
/// change, and leaving in it what this parse made.
pub(crate) fn parse_all_cached(files: &[SourceFile], cache: &mut ParseCache) -> Parsed {
    let mut out = Parsed { docs: Vec::new(), errors: Vec::new(), origins: KongOrigins::default() };
    let mut kong_files = Vec::new();
    let mut kept = std::collections::HashMap::with_capacity(files.len());
    for (fi, file) in files.iter().enumerate() {
        if kong::is_kong(&file.text) {
            kong_files.push((fi, file));
            continue;
        }
        let parsed = match cache.0.remove(&file.rel) {
            Some(p) if p.text == file.text => p,
            Some(p) => splice_routes(p, file).unwrap_or_else(|| parse_file(file)),
            None => parse_file(file),
        };
        out.docs.extend(parsed.docs.iter().map(|(doc, pf)| (fi, *doc, Arc::clone(pf))));
        out.errors.extend(parsed.errors.iter().cloned());
        kept.insert(file.rel.clone(), parsed);
    }
    cache.0 = kept;
    // Kong's routes go on the listener the other files define, if any.
    let own_listener = !out.docs.iter().any(|(_, _, pf)| !pf.listeners.is_empty());
    for (i, (fi, file)) in kong_files.into_iter().enumerate() {
        // Several Kong files share the first one's listener.
        parse_kong(fi, file, own_listener, own_listener && i > 0, &mut out);
    }
    out
}

/// One policy file's documents and problems.
fn parse_file(file: &SourceFile) -> ParsedFile {
    let mut out = ParsedFile { text: file.text.clone(), docs: Vec::new(), errors: Vec::new() };
    for (doc, de) in serde_yaml::Deserializer::from_str(&file.text).enumerate() {
        let mut unknown = Vec::new();
        let result: Result<Option<PolicyFile>, _> = serde_ignored::deserialize(de, |p| unknown.push(to_yaml_path(&p)));
        for path in unknown {
            out.errors.push(file.diagnostic(file.index().key(doc, &path), keys::unknown_key_message(&path)));
        }
        match result {
            Ok(Some(pf)) => out.docs.push((doc, Arc::new(pf))),
            Ok(None) => {}
            Err(e) => {
                let d = serde_error(file, &e);
                // After a syntax error serde_yaml yields the same failing
                // document forever: stop at the first repeat.
                if out.errors.last() == Some(&d) {
                    break;
                }
                out.errors.push(d);
            }
        }
    }
    out
}

/// `last`, the parse of this file's previous text, with the routes the edit
/// changed parsed again and put in place; `None` when the file must be
/// parsed whole (see `reparse`).
fn splice_routes(last: ParsedFile, file: &SourceFile) -> Option<ParsedFile> {
    let ParsedFile { text, mut docs, errors } = last;
    if !errors.is_empty() || docs.len() != 1 || docs[0].0 != 0 {
        return None;
    }
    let (range, fresh) = super::reparse::routes(&text, &file.text, &docs[0].1)?;
    let (_, pf) = docs.pop()?;
    // Usually the only holder by now: the routes move rather than copy.
    let mut pf = Arc::unwrap_or_clone(pf);
    pf.routes.splice(range, fresh);
    Some(ParsedFile { text: file.text.clone(), docs: vec![(0, Arc::new(pf))], errors })
}

/// A Kong declarative config: converted, then read like a policy file; its
/// problems are reported at the Kong setting they are about.
fn parse_kong(fi: usize, file: &SourceFile, own_listener: bool, shared: bool, out: &mut Parsed) {
    for (doc, de) in serde_yaml::Deserializer::from_str(&file.text).enumerate() {
        let value = match serde_yaml::Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push(serde_error(file, &e));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let mut converted = kong::convert(&value, own_listener);
        if shared || doc > 0 {
            converted.policy.remove("listeners");
        }
        if !converted.problems.is_empty() {
            for (path, message) in &converted.problems {
                out.errors.push(file.diagnostic(file.index().key(doc, path), message.clone()));
            }
            continue;
        }
        match serde_yaml::from_value::<PolicyFile>(serde_yaml::Value::Mapping(converted.policy)) {
            Ok(pf) => {
                out.docs.push((fi, doc, Arc::new(pf)));
                out.origins.0.insert((fi, doc), converted.origins);
            }
            Err(e) => out
                .errors
                .push(file.diagnostic(Pos { line: 1, column: 1 }, format!("converting this Kong config: {e}"))),
        }
    }
}

/// `legate import kong`: the policy a Kong declarative config converts to,
/// as YAML, or its problems as `FILE:LINE:COL: message`. With `partial`, the
/// problems become comments and what converts is still printed.
///
/// # Errors
/// The problems, when not `partial`; or when the file can't be read or parsed.
pub fn import_kong(path: &Path, partial: bool) -> Result<String, Diagnostics> {
    let rel = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: rel.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read file: {e}"),
        }])
    })?;
    let file = SourceFile::new(rel, text, path.parent().map(Path::to_path_buf).unwrap_or_default());
    let mut out = String::from("# Converted from a Kong declarative config by `legate import kong`.\n");
    let mut problems = Vec::new();
    let mut dropped = Vec::new();
    for (doc, de) in serde_yaml::Deserializer::from_str(&file.text).enumerate() {
        let value = serde_yaml::Value::deserialize(de).map_err(|e| Diagnostics(vec![serde_error(&file, &e)]))?;
        let converted = kong::convert(&value, true);
        for (p, message) in &converted.problems {
            problems.push(file.diagnostic(file.index().key(doc, p), message.clone()));
        }
        for (p, what) in &converted.dropped {
            dropped.push(file.diagnostic(file.index().key(doc, p), what.clone()));
        }
        if doc > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(&serde_yaml::Value::Mapping(converted.policy)).unwrap_or_default());
    }
    if problems.is_empty() {
        return Ok(out);
    }
    problems.sort_by_key(|d| (d.line, d.column));
    if !partial {
        return Err(Diagnostics(problems));
    }
    let mut notes = String::from("# Left out (no legate equivalent):\n");
    for p in &problems {
        notes.push_str(&format!("#   {p}\n"));
    }
    if !dropped.is_empty() {
        dropped.sort_by_key(|d| (d.line, d.column));
        notes.push_str("# Dropped whole, for what is left out:\n");
        for d in &dropped {
            notes.push_str(&format!("#   {d}\n"));
        }
    }
    Ok(notes + &out)
}

fn serde_error(file: &SourceFile, e: &serde_yaml::Error) -> Diagnostic {
    let (pos, message) = serde_problem(e);
    file.diagnostic(pos, message)
}

/// Where a serde_yaml error is, and its message without the position
/// serde_yaml appends (a diagnostic says it first), in our words.
pub(crate) fn serde_problem(e: &serde_yaml::Error) -> (Pos, String) {
    let pos = e.location().map_or(Pos { line: 1, column: 1 }, |l| Pos { line: l.line(), column: l.column() });
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    (pos, keys::explain_serde(&message))
}

fn to_yaml_path(p: &serde_ignored::Path<'_>) -> YamlPath {
    use serde_ignored::Path as P;
    match p {
        P::Root => YamlPath::default(),
        P::Seq { parent, index } => {
            let mut y = to_yaml_path(parent);
            y.0.push(Seg::Index(*index));
            y
        }
        P::Map { parent, key } => {
            let mut y = to_yaml_path(parent);
            y.0.push(Seg::Key(key.clone().into()));
            y
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => to_yaml_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(a: &str, b: &str) -> Vec<SourceFile> {
        from_texts(&[("a.yaml".to_owned(), a.to_owned()), ("b.yaml".to_owned(), b.to_owned())])
    }

    const A: &str = "services:\n  - name: a\n    url: http://127.0.0.1:1\n    colour: blue\n";
    const B: &str = "routes:\n  - name: r\n    match: { prefix: /r }\n    service: a\n";

    #[test]
    fn an_unchanged_file_is_not_parsed_again_and_keeps_its_errors() {
        let mut cache = ParseCache::default();
        let first = parse_all_cached(&files(A, B), &mut cache);
        assert_eq!(first.errors.len(), 1, "a.yaml's unknown key: {:?}", first.errors);
        let a_docs = cache.0["a.yaml"].docs.as_ptr();
        let b_docs = cache.0["b.yaml"].docs.as_ptr();

        let edited = B.replace("/r", "/r2");
        let second = parse_all_cached(&files(A, &edited), &mut cache);
        assert_eq!(cache.0["a.yaml"].docs.as_ptr(), a_docs, "a.yaml reused, not parsed");
        assert_ne!(cache.0["b.yaml"].docs.as_ptr(), b_docs, "b.yaml parsed again");
        assert_eq!(second.errors, first.errors, "the unchanged file's problems are still reported");
        let uncached = parse_all(&files(A, &edited));
        assert_eq!(format!("{:?}", second.docs), format!("{:?}", uncached.docs), "the same as parsing everything");

        // A file that went away leaves the cache.
        let only_a = from_texts(&[("a.yaml".to_owned(), A.to_owned())]);
        parse_all_cached(&only_a, &mut cache);
        assert!(!cache.0.contains_key("b.yaml"));
    }
}
