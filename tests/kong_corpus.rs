//! Real Kong declarative configs from public projects
//! (tests/fixtures/kong/, sources in its SOURCES.md) through `legate import
//! kong`: which convert, and what stops the others, as one golden census
//! (`tests/snapshots/kong_corpus__census.snap`); for each that converts,
//! what Envoy gets, as a golden render (`kong_corpus__render@FILE.snap`),
//! accepted by `envoy --mode validate`. What `import` prints, with
//! or without `--partial`, must load as legate policy: it never prints what
//! `validate` refuses.
//!
//! The files' `$VAR` / `${VAR}` placeholders are what their docker-compose
//! entrypoints substitute before Kong reads them; the census substitutes
//! them the same way first (a `_HOST` becomes a host name, a `_PORT` a port,
//! Supabase's `LUA_*_EXPR` the request-transformer templates its
//! kong-entrypoint.sh exports, anything else a word).

mod common;

use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kong");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/kong")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

/// `text` with each `$NAME` or `${NAME}` replaced as an entrypoint would.
fn substitute(text: &str) -> String {
    let value = |name: &str| {
        let lower = name.to_ascii_lowercase();
        // Supabase's docker/volumes/api/kong-entrypoint.sh (without its
        // opaque-key branch): Lua templates Kong evaluates per request.
        if name == "LUA_AUTH_EXPR" {
            return "$((headers.authorization ~= nil and headers.authorization:sub(1, 10) ~= 'Bearer sb_' and \
                    headers.authorization) or headers.apikey)"
                .to_owned();
        }
        if name == "LUA_RT_WS_EXPR" {
            return "$(query_params.apikey)".to_owned();
        }
        if let Some(host) = lower.strip_suffix("_host") {
            host.replace('_', "-")
        } else if lower.ends_with("_port") {
            "8000".to_owned()
        } else {
            format!("placeholder-{}", lower.replace('_', "-"))
        }
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (braced, body) = match after.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, after),
        };
        let len = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
        let name = &body[..len];
        let closed = !braced || body[len..].starts_with('}');
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') || !closed {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&value(name));
        rest = &body[len + usize::from(braced)..];
    }
    out.push_str(rest);
    out
}

#[test]
fn every_real_kong_file_converts_or_says_why_not() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut census = String::new();
    let mut converted = 0;
    let files = fixtures();
    assert!(files.len() >= 30, "tests/fixtures/kong holds {} files", files.len());
    for path in &files {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).expect("fixture");
        let file = tmp.path().join(&name);
        std::fs::write(&file, substitute(&text)).expect("write");
        // What `--partial` prints loads too: it leaves out whole what
        // depends on what it cannot convert.
        let partial = legate::policy::import_kong(&file, true).unwrap_or_else(|e| panic!("{name}: {e}"));
        legate::policy::load_texts(&[("partial.yaml".to_owned(), partial)])
            .unwrap_or_else(|e| panic!("{name} --partial prints a policy `validate` refuses:\n{e}"));
        match legate::policy::import_kong(&file, false) {
            Ok(yaml) => {
                converted += 1;
                let policy = legate::policy::load_texts(&[("converted.yaml".to_owned(), yaml)])
                    .unwrap_or_else(|e| panic!("{name} converts to a policy `validate` refuses:\n{e}"));
                census.push_str(&format!("{name}: converts ({} routes)\n", policy.routes.len()));
                let snapshot = legate::translate::translate(&policy);
                // Envoy 1.40's `--mode validate` crashes (a backtrace while
                // loading clusters) on a static secret used as a validation
                // context, as https services' CA secrets are in a static
                // bootstrap; those are served over SDS in real runs
                // (tests/tls.rs), and checked here by their render only.
                if snapshot.all().resources(legate::snapshot::Kind::Secret).is_empty() {
                    if let Err(said) =
                        common::static_config::envoy_validate(&common::static_config::static_bootstrap(&policy))
                    {
                        panic!("envoy rejects what {name} converts to: {said}");
                    }
                }
                // What Envoy gets from it, reviewed as a golden file per fixture.
                let stem = name.trim_end_matches(".yaml");
                insta::with_settings!({ description => format!("tests/fixtures/kong/{name} as Envoy gets it"), omit_expression => true }, {
                    insta::assert_snapshot!(format!("render@{stem}"), common::rendered::view_text(&snapshot.view("default")));
                });
            }
            Err(problems) => {
                census.push_str(&format!("{name}: {} problem(s)\n", problems.0.len()));
                for p in &problems.0 {
                    census.push_str(&format!("  {}:{}: {}\n", p.line, p.column, p.message));
                }
            }
        }
    }
    census.insert_str(0, &format!("{converted} of {} files convert\n", files.len()));
    insta::assert_snapshot!("census", census);
}

#[test]
fn placeholders_are_substituted_as_an_entrypoint_would() {
    assert_eq!(substitute("url: http://$AUTH_HOST:$AUTH_PORT/verify"), "url: http://auth:8000/verify");
    assert_eq!(substitute("key: ${SUPABASE_ANON_KEY}"), "key: placeholder-supabase-anon-key");
    assert_eq!(substitute("a $ b $1 ${x"), "a $ b $1 ${x");
}
