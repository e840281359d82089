//! The policy folder, watched: file events are coalesced with a short
//! debounce, then the whole folder is loaded, validated and translated, and
//! either published or rejected (the last good snapshot stays).
//!
//! The folder itself is watched, recursively, so editors' atomic renames and
//! Kubernetes ConfigMap `..data` symlink swaps are seen like plain writes.
//! Files the policy reads from outside the folder (a JWKS file at
//! `../keys/jwks.json`, say) have their folders watched too, from the first
//! valid load that names them.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, Debouncer, RecommendedCache};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::policy::{self, Diagnostics, LoadCache};
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::translate::{translate, translate_cached};

/// Quiet time after the last file event before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// Load, validate and translate a policy folder.
///
/// # Errors
/// Every problem in the folder.
pub fn load(dir: &Path) -> Result<Snapshot, Diagnostics> {
    policy::load_dir(dir).map(|p| translate(&p))
}

/// What one reload keeps for the next: the parsed files, and each route's
/// validation and translation.
#[derive(Debug, Default)]
pub struct Cache {
    loaded: LoadCache,
    translated: crate::translate::Cache,
}

/// What `serve`'s flags change in every policy it loads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// `--access-log`: a policy that doesn't write `defaults.access_log`
    /// has every Envoy stream its access log to legate (and nowhere else).
    pub central_access_log: bool,
}

impl Overrides {
    /// `p` as `serve` runs it.
    fn apply(self, p: &mut policy::Policy) {
        if self.central_access_log {
            match p.access_log {
                policy::AccessLogging::Unset => {
                    p.access_log = policy::AccessLogging::On(policy::AccessLog {
                        format: policy::LogFormat::Json,
                        path: "legate".to_owned(),
                    });
                }
                policy::AccessLogging::Off => warn!(
                    "--access-log is set, but the policy turns access logs off (`defaults.access_log: off`): \
                     no proxy will send any entries to collect"
                ),
                policy::AccessLogging::On(_) => {}
            }
        }
    }
}

/// Load `dir` and publish it, or record why not. When it was valid, returns
/// the files besides the policy files that it read. Files whose text is what
/// `cache` last saw are not parsed again, nor unchanged routes validated or
/// translated again.
pub fn reload(dir: &Path, state: &State, cache: &mut Cache, overrides: Overrides) -> Option<Vec<PathBuf>> {
    let t0 = Instant::now();
    match policy::load_dir_cached(dir, &mut cache.loaded) {
        Ok(mut p) => {
            for w in &p.warnings {
                warn!("{}:{}:{}: warning: {}", w.file, w.line, w.column, w.message);
            }
            overrides.apply(&mut p);
            let snapshot = translate_cached(&p, &mut cache.translated);
            state.metrics.reload_duration.observe(t0.elapsed().as_secs_f64());
            // The aggregator must know an aggregation before Envoy can send
            // it one; the status page's route table can follow the push.
            state.record_aggregations(crate::aggregator::Table::new(&p));
            let version = snapshot.version().to_owned();
            let (clusters, listeners) = (
                snapshot.all().resources(crate::snapshot::Kind::Cluster).len(),
                snapshot.all().resources(crate::snapshot::Kind::Listener).len(),
            );
            let changed = state.publish(snapshot);
            state.record_routes(crate::status::route_rows(&p));
            state.record_reload(Vec::new(), p.warnings.clone());
            let read_files = p.read_files;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if changed {
                info!(version, clusters, listeners, load_ms = format!("{ms:.1}"), "snapshot published");
            } else {
                info!(version, "policy reloaded; nothing changed");
            }
            Some(read_files)
        }
        Err(diags) => {
            state.metrics.reload_duration.observe(t0.elapsed().as_secs_f64());
            for d in &diags.0 {
                error!("{d}");
            }
            warn!(errors = diags.0.len(), "policy rejected; proxies keep the last good config");
            state.record_reload(diags.0, Vec::new());
            None
        }
    }
}

/// Whether a file event can change what the folder holds: opening or
/// reading a file can't; closing it after writing can.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// `path` with symlinks resolved, or as it is when it doesn't exist.
fn real(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether a change to `path` can change what the policy in `dir` loads.
/// The loader skips hidden files and folders (a name starting with one
/// dot: editors' swap files, the temporary file of an atomic save) and
/// gateway test files (`*.gateway.yaml`), so changes to them don't reload,
/// unless the policy reads that file itself (`known`). Kubernetes' `..data`
/// and its timestamped folders (two dots) do count, and so does anything
/// in the folders outside `dir` that the policy reads files from.
fn matters(dir: &Path, path: &Path, known: &HashSet<PathBuf>) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else { return true };
    let hidden = rel.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        name.starts_with('.') && !name.starts_with("..")
    });
    let test = rel.file_name().is_some_and(|n| crate::gateway_test::is_test_file(&n.to_string_lossy()));
    !(hidden || test) || known.contains(&real(path))
}

/// The folders outside `dir` that hold some of `files`.
fn outside_folders(dir: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let dir = real(dir);
    files.iter().filter_map(|f| f.parent()).map(real).filter(|p| !p.starts_with(&dir)).collect()
}

/// A policy folder being watched. Every change made after [`Watch::start`]
/// returns is seen, so a folder is loaded the first time only once its
/// watch exists: an edit can't fall between the two.
pub struct Watch {
    dir: PathBuf,
    debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    /// The paths of each batch of changes; `None` when the watcher failed
    /// and anything may have changed.
    changes: mpsc::UnboundedReceiver<Option<Vec<PathBuf>>>,
}

impl Watch {
    /// Start watching `dir`, recursively.
    ///
    /// # Errors
    /// When the folder cannot be watched.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let (tx, changes) = mpsc::unbounded_channel();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: notify_debouncer_full::DebounceEventResult| {
            // Every reload opens the files, which inotify reports too: reacting
            // to that would reload forever. Only changes (and watcher errors)
            // count.
            let changed = match res {
                Ok(events) => {
                    let paths: Vec<PathBuf> =
                        events.into_iter().filter(|e| is_change(&e.kind)).flat_map(|e| e.event.paths).collect();
                    (!paths.is_empty()).then_some(Some(paths))
                }
                Err(_) => Some(None),
            };
            if let Some(change) = changed {
                let _ = tx.send(change);
            }
        })
        .context("cannot start the file watcher")?;
        debouncer.watch(dir, RecursiveMode::Recursive).with_context(|| format!("cannot watch {}", dir.display()))?;
        info!(dir = %dir.display(), "watching policy folder");
        Ok(Self { dir: dir.to_path_buf(), debouncer, changes })
    }

    /// Reload on every change until the process ends. `read_files` are the
    /// files besides the policy files the last load read (their folders are
    /// watched too), and `cache` what it kept.
    pub async fn run(mut self, state: Arc<State>, read_files: Vec<PathBuf>, mut cache: Cache, overrides: Overrides) {
        let mut extra = BTreeSet::new();
        let mut known = HashSet::new();
        let mut read_files = Some(read_files);
        loop {
            if let Some(files) = read_files.take() {
                known = files.iter().map(|f| real(f)).collect();
                let wanted = outside_folders(&self.dir, &files);
                for gone in extra.difference(&wanted) {
                    let _ = self.debouncer.unwatch(gone);
                }
                for new in wanted.difference(&extra) {
                    match self.debouncer.watch(new, RecursiveMode::NonRecursive) {
                        Ok(()) => info!(dir = %new.display(), "watching a folder the policy reads files from"),
                        Err(e) => {
                            warn!(dir = %new.display(), "cannot watch: {e}; its changes are seen with the next policy change");
                        }
                    }
                }
                extra = wanted;
            }
            let Some(first) = self.changes.recv().await else { break };
            let mut relevant = first.is_none_or(|paths| paths.iter().any(|p| matters(&self.dir, p, &known)));
            while let Ok(more) = self.changes.try_recv() {
                relevant |= more.is_none_or(|paths| paths.iter().any(|p| matters(&self.dir, p, &known)));
            }
            if !relevant {
                continue;
            }
            let (dir, state, mut kept) = (self.dir.clone(), Arc::clone(&state), std::mem::take(&mut cache));
            let done = tokio::task::spawn_blocking(move || (reload(&dir, &state, &mut kept, overrides), kept)).await;
            // A reload that panicked leaves the cache empty: the next starts afresh.
            (read_files, cache) = done.unwrap_or_default();
        }
    }
}
