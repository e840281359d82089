//! `legate test`: gateway tests. Test files (`*.gateway.yaml`) list
//! requests and what their answers must be; the run serves the policy to a
//! real local Envoy, with echo upstreams standing in for every service, and
//! checks each answer.
//!
//! [`cases`] reads the files, [`stand_in`] runs the gateway they talk to,
//! and [`report`] says how it went.

pub mod cases;
pub mod report;
pub mod stand_in;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::policy::{Diagnostic, TokenSource};
use cases::{Case, Expect, Rule, TestFile};
use report::{CaseResult, FileResult};
use stand_in::StandIn;

/// What `legate test` runs.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The policy folder.
    pub config_dir: PathBuf,
    /// Test files, or folders to find `*.gateway.yaml` in; none: the policy folder.
    pub files: Vec<PathBuf>,
    /// Write JUnit XML here.
    pub junit: Option<PathBuf>,
}

/// Whether `name` is a gateway test file's: `*.gateway.yaml` or `*.gateway.yml`.
/// The policy loader skips these.
#[must_use]
pub fn is_test_file(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.ends_with(".gateway.yaml") || name.ends_with(".gateway.yml")
}

/// The test files `opts` names: each file given, every test file under
/// each folder given (or under the policy folder when none is), sorted.
///
/// # Errors
/// When a path given doesn't exist, or no test file is found.
pub fn find_files(opts: &TestOptions) -> anyhow::Result<Vec<PathBuf>> {
    let roots = if opts.files.is_empty() { vec![opts.config_dir.clone()] } else { opts.files.clone() };
    let mut out = Vec::new();
    for root in &roots {
        let meta = std::fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
        if meta.is_dir() {
            let before = out.len();
            walk(root, &mut out)?;
            out[before..].sort();
        } else {
            out.push(root.clone());
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no gateway test files (*.gateway.yaml) under {}",
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_test_file(&name) {
            out.push(path);
        }
    }
    Ok(())
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The policy or a test file has problems; nothing ran.
    Invalid(Vec<Diagnostic>),
    /// Every case ran.
    Ran(Vec<FileResult>),
}

/// Run the test files `opts` names against a gateway serving
/// `opts.config_dir`, printing each case's result as it ends.
///
/// # Errors
/// When Envoy is missing, or the gateway cannot start.
pub async fn run(opts: &TestOptions, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<Outcome> {
    let files = find_files(opts)?;
    let policy = match crate::policy::load_dir(&opts.config_dir) {
        Ok(p) => p,
        Err(diags) => return Ok(Outcome::Invalid(diags.0)),
    };
    let mut tests = Vec::new();
    let mut problems = Vec::new();
    for f in &files {
        match cases::read(f, &policy) {
            Ok(t) => tests.push(t),
            Err(mut e) => problems.append(&mut e),
        }
    }
    if !problems.is_empty() {
        return Ok(Outcome::Invalid(problems));
    }
    let envoy = crate::up::find_envoy()?;
    let stand = StandIn::start(&policy, &envoy).await?;
    let results = run_all(&stand, &tests, out).await;
    stand.stop().await;
    let results = results?;
    if let Some(path) = &opts.junit {
        std::fs::write(path, report::junit(&results)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Outcome::Ran(results))
}

async fn run_all(
    stand: &StandIn,
    tests: &[TestFile],
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<Vec<FileResult>> {
    let sources = Sources::probe();
    let mut results = Vec::new();
    let mut n = 0usize;
    for file in tests {
        writeln!(out, "{}", file.path)?;
        let mut done = Vec::new();
        for case in &file.cases {
            let t0 = Instant::now();
            let from = sources.nth(n);
            n += 1;
            let (request, failures) = match run_case(stand, case, from).await {
                Ok(r) => r,
                Err(e) => (describe_request(stand, case, from, None), vec![format!("could not send: {e:#}")]),
            };
            let result = CaseResult { name: case.name.clone(), line: case.line, time: t0.elapsed(), request, failures };
            write!(out, "{}", report::case_text(&file.path, &result))?;
            // As each case ends, also when the output is a pipe (a CI log).
            out.flush()?;
            done.push(result);
        }
        results.push(FileResult { path: file.path.clone(), cases: done });
    }
    write!(out, "{}", report::summary(&results))?;
    Ok(results)
}

/// Where cases send from: each from its own loopback address (127.0.0.2,
/// .3, ...), so that limits keyed on the client's address start afresh for
/// every case; or all from 127.0.0.1 where the system won't bind others.
struct Sources {
    many: bool,
}

impl Sources {
    fn probe() -> Sources {
        Sources { many: std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).is_ok() }
    }

    fn nth(&self, n: usize) -> IpAddr {
        if !self.many {
            return Ipv4Addr::LOCALHOST.into();
        }
        let n = u32::try_from(n % 250_000).unwrap_or(0);
        let [_, _, b, c] = (n / 250).to_be_bytes();
        let d = u8::try_from(n % 250 + 2).unwrap_or(2);
        Ipv4Addr::new(127, b, c, d).into()
    }
}

/// One answer, as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// What the echo upstream that answered saw, if one did.
struct Upstream {
    service: String,
    path: String,
    headers: BTreeMap<String, String>,
}

impl Answer {
    fn upstream(&self) -> Option<Upstream> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        let headers = v.get("headers")?.as_object()?;
        Some(Upstream {
            service: v.get("service")?.as_str()?.to_owned(),
            path: v.get("path")?.as_str()?.to_owned(),
            headers: headers.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect(),
        })
    }

    /// One line: the status, and the service that answered or else the
    /// start of the body.
    fn brief(&self) -> String {
        if let Some(up) = self.upstream() {
            return format!("{} from {}", self.status, up.service);
        }
        let text = self.body.trim();
        let body: String = text.chars().take(200).collect();
        let more = if text.chars().count() > 200 { "…" } else { "" };
        format!("{} {}{more}", self.status, body.replace('\n', " "))
    }
}

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Send `case` and check its answers: the request as shown in reports, and
/// every expectation that failed.
async fn run_case(stand: &StandIn, case: &Case, from: IpAddr) -> anyhow::Result<(String, Vec<String>)> {
    let r = &case.request;
    let mut path = r.path.clone();
    let mut headers = r.headers.clone();
    let mut token = None;
    if let Some(jwt) = &r.jwt {
        let provider = &stand.policy.jwt_providers[&jwt.provider];
        let claims = stand_in::claims(provider, &jwt.claims);
        let signed = stand.key.sign(&claims)?;
        // The first place the provider reads a token from.
        match provider.from.first() {
            Some(TokenSource::Header { name, prefix }) => {
                headers.push((name.to_ascii_lowercase(), format!("{prefix}{signed}")));
            }
            Some(TokenSource::Query(name)) => {
                path.push(if path.contains('?') { '&' } else { '?' });
                path.push_str(&format!("{name}={signed}"));
            }
            None => {}
        }
        token = Some(claims);
    }
    let described = describe_request(stand, case, from, token.as_ref());
    let port = stand.ports[&r.listener];
    let mut http = HttpConnector::new();
    http.set_local_address(Some(from));
    http.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(http);
    let mut answers = Vec::new();
    for _ in 0..case.repeat {
        let mut req = hyper::Request::builder()
            .method(r.method.as_str())
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header(hyper::header::HOST, r.host.as_str());
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(r.body.clone()))).context("cannot build the request")?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, client.request(req))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))??;
        let status = resp.status().as_u16();
        let mut hs: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in resp.headers() {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            hs.entry(k.as_str().to_owned()).and_modify(|e| *e = format!("{e}, {v}")).or_insert(v);
        }
        let body = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
        answers.push(Answer { status, headers: hs, body: String::from_utf8_lossy(&body).into_owned() });
    }
    Ok((described, check(&case.expect, &answers)))
}

/// The request as reports show it.
fn describe_request(stand: &StandIn, case: &Case, from: IpAddr, token: Option<&serde_json::Value>) -> String {
    let r = &case.request;
    let mut s = format!("{} {} (host {}, listener {}, from {from})", r.method, r.path, r.host, r.listener);
    if case.repeat > 1 {
        s.push_str(&format!(", {} times", case.repeat));
    }
    for (k, v) in &r.headers {
        s.push_str(&format!("\n  {k}: {v}"));
    }
    if let (Some(jwt), Some(claims)) = (&r.jwt, token) {
        let place = match stand.policy.jwt_providers.get(&jwt.provider).and_then(|p| p.from.first()) {
            Some(TokenSource::Query(q)) => format!("query `{q}`"),
            Some(TokenSource::Header { name, .. }) => name.clone(),
            None => String::new(),
        };
        s.push_str(&format!("\n  {place}: a JWT for {} with {claims}", jwt.provider));
    }
    if !r.body.is_empty() {
        s.push_str(&format!("\n  body: {:?}", r.body));
    }
    s
}

/// Every expectation `answers` fail, one line each.
fn check(expect: &Expect, answers: &[Answer]) -> Vec<String> {
    let mut failures = Vec::new();
    let limited = answers.iter().filter(|a| a.status == 429).count();
    let rest: Vec<(usize, &Answer)> = match expect.rate_limited {
        Some(n) => {
            if !n.holds(limited) {
                failures.push(format!(
                    "rate limited: expected {n} of {} answers to be 429, got {limited} ({})",
                    answers.len(),
                    statuses(answers)
                ));
            }
            answers.iter().enumerate().filter(|(_, a)| a.status != 429).collect()
        }
        None => answers.iter().enumerate().collect(),
    };
    // The first answer that fails says how; with `repeat`, it says which.
    for (i, a) in rest {
        let mut f = check_one(expect, a);
        if !f.is_empty() {
            if answers.len() > 1 {
                f.insert(0, format!("answer {} of {}:", i + 1, answers.len()));
            }
            failures.append(&mut f);
            break;
        }
    }
    failures
}

/// The statuses of `answers`, in order, as `200 ×5, 429 ×2`.
fn statuses(answers: &[Answer]) -> String {
    let mut runs: Vec<(u16, usize)> = Vec::new();
    for a in answers {
        match runs.last_mut() {
            Some((s, n)) if *s == a.status => *n += 1,
            _ => runs.push((a.status, 1)),
        }
    }
    runs.iter().map(|(s, n)| if *n > 1 { format!("{s} ×{n}") } else { s.to_string() }).collect::<Vec<_>>().join(", ")
}

fn check_one(expect: &Expect, a: &Answer) -> Vec<String> {
    let mut f = Vec::new();
    let up = a.upstream();
    let nobody = || format!("no service answered ({})", a.brief());
    if let Some(s) = expect.status.filter(|s| *s != a.status) {
        f.push(format!("status: expected {s}, got {} ({})", a.status, a.brief()));
    }
    if let Some(s) = &expect.service {
        match &up {
            Some(u) if &u.service == s => {}
            Some(u) => f.push(format!("service: expected {s}, got {}", u.service)),
            None => f.push(format!("service: expected {s}, got {}", nobody())),
        }
    }
    if let Some(p) = &expect.upstream_path {
        match &up {
            Some(u) if &u.path == p => {}
            Some(u) => f.push(format!("upstream path: expected {p}, got {}", u.path)),
            None => f.push(format!("upstream path: expected {p}, got {}", nobody())),
        }
    }
    for (name, rule) in &expect.upstream_headers {
        match &up {
            Some(u) => header_check(&mut f, "upstream header", name, rule, u.headers.get(name)),
            None => f.push(format!("upstream header {name}: expected {rule}, got {}", nobody())),
        }
    }
    for (name, rule) in &expect.headers {
        header_check(&mut f, "header", name, rule, a.headers.get(name));
    }
    if let Some(c) = expect.body_contains.as_ref().filter(|c| !a.body.contains(c.as_str())) {
        f.push(format!("body: expected to contain {c:?}, got {}", a.brief()));
    }
    f
}

fn header_check(f: &mut Vec<String>, what: &str, name: &str, rule: &Rule, actual: Option<&String>) {
    if !rule.holds(actual.map(String::as_str)) {
        let got = actual.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"));
        f.push(format!("{what} {name}: expected {rule}, got {got}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_gets_a_loopback_address_of_its_own() {
        let s = Sources { many: true };
        let ip = |n| s.nth(n).to_string();
        assert_eq!(ip(0), "127.0.0.2");
        assert_eq!(ip(249), "127.0.0.251");
        assert_eq!(ip(250), "127.0.1.2");
        assert_eq!(ip(250 * 256), "127.1.0.2");
        let all: std::collections::HashSet<IpAddr> = (0..100_000).map(|n| s.nth(n)).collect();
        assert_eq!(all.len(), 100_000);
        assert_eq!(Sources { many: false }.nth(7).to_string(), "127.0.0.1");
    }

    fn answer(status: u16, service: Option<&str>) -> Answer {
        let body = service.map_or_else(
            || "too many requests\n".to_owned(),
            |s| serde_json::json!({"service": s, "path": "/p", "headers": {"x-a": "1"}}).to_string(),
        );
        Answer { status, headers: BTreeMap::new(), body }
    }

    #[test]
    fn limited_answers_are_counted_and_the_rest_checked() {
        let answers = [
            answer(200, Some("a")),
            answer(200, Some("a")),
            answer(429, None),
            answer(200, Some("b")),
            answer(429, None),
        ];
        let count = |yaml: &str| Some(serde_yaml::from_str(yaml).expect("a count"));
        let expect = Expect { rate_limited: count("2"), status: Some(200), ..Expect::default() };
        assert_eq!(check(&expect, &answers), Vec::<String>::new());

        let expect = Expect { rate_limited: count("{ at_least: 3 }"), ..Expect::default() };
        assert_eq!(
            check(&expect, &answers),
            ["rate limited: expected at least 3 of 5 answers to be 429, got 2 (200 ×2, 429, 200, 429)"]
        );

        // The first answer (of the ones not limited) that fails says how.
        let expect = Expect { rate_limited: count("2"), service: Some("a".into()), ..Expect::default() };
        assert_eq!(check(&expect, &answers), ["answer 4 of 5:", "service: expected a, got b"]);

        // Without rate_limited, a 429 is an answer like any other.
        let expect = Expect { status: Some(200), ..Expect::default() };
        assert_eq!(
            check(&expect, &answers),
            ["answer 3 of 5:", "status: expected 200, got 429 (429 too many requests)"]
        );
    }

    #[test]
    fn an_answer_no_service_gave_says_so() {
        let expect = Expect {
            service: Some("a".into()),
            upstream_path: Some("/p".into()),
            upstream_headers: vec![("x-a".into(), Rule::Exact("1".into()))],
            ..Expect::default()
        };
        assert_eq!(check(&expect, &[answer(200, Some("a"))]), Vec::<String>::new());
        assert_eq!(
            check(&expect, &[answer(401, None)]),
            [
                "service: expected a, got no service answered (401 too many requests)",
                "upstream path: expected /p, got no service answered (401 too many requests)",
                "upstream header x-a: expected \"1\", got no service answered (401 too many requests)",
            ]
        );
    }
}
