//! How a test run went: a line per case (with the request, expected and
//! actual values when it failed), a summary, and JUnit XML for CI.

use std::fmt::Write as _;
use std::time::Duration;

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Where it starts in its file.
    pub line: usize,
    /// How long it took.
    pub time: Duration,
    /// The request sent, as shown on failure.
    pub request: String,
    /// Every expectation that failed; none when it passed.
    pub failures: Vec<String>,
}

impl CaseResult {
    /// Whether every expectation held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One file's results.
#[derive(Debug, Clone)]
pub struct FileResult {
    /// The file.
    pub path: String,
    /// Its cases, in order.
    pub cases: Vec<CaseResult>,
}

/// Passed and failed cases in `results`.
#[must_use]
pub fn counts(results: &[FileResult]) -> (usize, usize) {
    let all = results.iter().flat_map(|f| &f.cases);
    let passed = all.clone().filter(|c| c.passed()).count();
    (passed, all.count() - passed)
}

/// A case's lines in the terminal report.
#[must_use]
pub fn case_text(file: &str, c: &CaseResult) -> String {
    let ms = c.time.as_secs_f64() * 1000.0;
    if c.passed() {
        return format!("  ok    {} ({ms:.0} ms)\n", c.name);
    }
    let mut s = format!("  FAIL  {} ({file}:{})\n", c.name, c.line);
    s.push_str(&indent("request: ", &c.request));
    for f in &c.failures {
        s.push_str(&indent("", f));
    }
    s
}

fn indent(label: &str, text: &str) -> String {
    let mut s = String::new();
    for (i, line) in text.lines().enumerate() {
        let label = if i == 0 { label } else { "" };
        let _ = writeln!(s, "        {label}{line}");
    }
    s
}

/// The last line: how many passed and failed.
#[must_use]
pub fn summary(results: &[FileResult]) -> String {
    let (passed, failed) = counts(results);
    let files = results.len();
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    format!("\n{verdict}: {passed} passed, {failed} failed, in {files} file(s)\n")
}

/// JUnit XML: a test suite per file, a test case per case, the failures
/// as each failing case's message.
#[must_use]
pub fn junit(results: &[FileResult]) -> String {
    let (passed, failed) = counts(results);
    let total_time: f64 = results.iter().flat_map(|f| &f.cases).map(|c| c.time.as_secs_f64()).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"legate test\" tests=\"{}\" failures=\"{failed}\" time=\"{total_time:.3}\">",
        passed + failed
    );
    for f in results {
        let failed = f.cases.iter().filter(|c| !c.passed()).count();
        let time: f64 = f.cases.iter().map(|c| c.time.as_secs_f64()).sum();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{time:.3}\">",
            escape(&f.path),
            f.cases.len()
        );
        for c in &f.cases {
            let head = format!(
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\" time=\"{:.3}\"",
                escape(&c.name),
                escape(&f.path),
                escape(&f.path),
                c.line,
                c.time.as_secs_f64()
            );
            if c.passed() {
                let _ = writeln!(x, "{head}/>");
            } else {
                let body = format!("request: {}\n{}", c.request, c.failures.join("\n"));
                let _ = writeln!(
                    x,
                    "{head}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    escape(&c.failures.join("; ")),
                    escape(&body)
                );
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Text for an XML attribute or element.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            // XML 1.0 has no way to write other control characters.
            c if c.is_control() && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, failures: &[&str]) -> CaseResult {
        CaseResult {
            name: name.into(),
            line: 3,
            time: Duration::from_millis(4),
            request: "GET /a (host localhost)".into(),
            failures: failures.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn junit_names_every_case_and_escapes_what_it_quotes() {
        let results = vec![FileResult {
            path: "t/a.gateway.yaml".into(),
            cases: vec![case("ok <one>", &[]), case("bad & \"two\"", &["status: expected 200, got 401"])],
        }];
        let x = junit(&results);
        assert!(x.contains("<testsuites name=\"legate test\" tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("<testcase name=\"ok &lt;one&gt;\""), "{x}");
        assert!(x.contains("name=\"bad &amp; &quot;two&quot;\""), "{x}");
        assert!(x.contains("<failure message=\"status: expected 200, got 401\">request: GET /a (host localhost)&#10;status: expected 200, got 401</failure>"), "{x}");
        assert_eq!(counts(&results), (1, 1));
        assert!(summary(&results).contains("FAILED: 1 passed, 1 failed, in 1 file(s)"));
    }
}
