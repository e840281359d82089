//! The fleet at a glance, from the `/api/status` document: the admin
//! page at `/` (server-rendered HTML that refreshes itself, no build step)
//! and `legate status` (the same as a terminal table).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::policy::{Auth, Backend, PathMatch, Policy};

/// One route as the status shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteRow {
    /// Route name.
    pub name: String,
    /// Its listener.
    pub listener: String,
    /// The match, like `prefix /api` (with methods when limited).
    pub matches: String,
    /// Where it goes: a service, or a split.
    pub service: String,
    /// `none`, or the providers.
    pub auth: String,
    /// The rate-limit policies, or `none`.
    pub rate_limits: String,
}

/// The route table of a policy, in match order.
#[must_use]
pub fn route_rows(p: &Policy) -> Vec<RouteRow> {
    p.routes
        .iter()
        .map(|r| RouteRow {
            name: r.name.clone(),
            listener: r.listener.clone(),
            matches: {
                let path = match (&r.path, &r.backend) {
                    (_, Backend::Aggregation(a)) => {
                        format!("path {}", p.aggregations.get(a).map_or("", |a| a.path.as_str()))
                    }
                    (PathMatch::Prefix(x), _) => format!("prefix {x}"),
                    (PathMatch::Exact(x), _) => format!("path {x}"),
                    (PathMatch::Regex(x), _) => format!("regex {x}"),
                };
                let path = if r.hosts.is_empty() { path } else { format!("{path} on {}", r.hosts.join(",")) };
                if r.methods.is_empty() {
                    path
                } else {
                    format!("{} {path}", r.methods.join(","))
                }
            },
            service: match &r.backend {
                Backend::Service(s) => s.clone(),
                Backend::Split(t) => t.iter().map(|(s, w)| format!("{s} {w}")).collect::<Vec<_>>().join(", "),
                Backend::Respond { status, .. } => format!("respond {status}"),
                Backend::Aggregation(a) => {
                    let calls = p.aggregations.get(a).map(|a| &a.calls[..]).unwrap_or_default();
                    let services: Vec<&str> = calls.iter().map(|c| c.service.as_str()).collect();
                    format!("aggregator: {}", services.join(", "))
                }
            },
            auth: match &r.auth {
                Auth::Public => "none".into(),
                Auth::AnyOf(p) | Auth::ApiKeys(p) | Auth::Basic(p) => p.join(" | "),
            },
            rate_limits: if r.rate_limits.is_empty() { "none".into() } else { r.rate_limits.join(", ") },
        })
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One type's state on a node: (type, ACKed version, last NACK).
type TypeRow = (String, String, String);
/// One node: (id, cluster, connected at, xDS protocol, its types).
type NodeRow = (String, String, String, String, Vec<TypeRow>);

fn nodes(status: &Value) -> Vec<NodeRow> {
    let Some(list) = status["nodes"].as_array() else { return Vec::new() };
    list.iter()
        .map(|n| {
            let mut kinds: Vec<TypeRow> = n["resources"]
                .as_object()
                .map(|r| {
                    r.iter()
                        .map(|(url, s)| {
                            let short = url.rsplit('.').next().unwrap_or(url).to_owned();
                            let nack = match &s["nack"] {
                                Value::Null => String::new(),
                                x => format!("{} ({})", text(&x["message"]), text(&x["version"])),
                            };
                            (short, text(&s["acked_version"]), nack)
                        })
                        .collect()
                })
                .unwrap_or_default();
            kinds.sort();
            (text(&n["id"]), text(&n["cluster"]), text(&n["connected_at"]), text(&n["protocol"]), kinds)
        })
        .collect()
}

/// `errors` or `warnings` of the last reload as a list, each item of `class`.
fn diagnostics_html(list: &Value, class: &str) -> String {
    let mut o = String::new();
    for e in list.as_array().into_iter().flatten() {
        let _ = write!(o, "<li class=\"{class}\"><code>{}</code> {}</li>", esc(&place(e)), esc(&text(&e["message"])));
    }
    if o.is_empty() {
        o
    } else {
        format!("<ul>{o}</ul>")
    }
}

/// `FILE:LINE:COL` of one of the last reload's errors or warnings.
fn place(e: &Value) -> String {
    format!("{}:{}:{}", text(&e["file"]), text(&e["line"]), text(&e["column"]))
}

/// The admin page.
#[must_use]
pub fn html(status: &Value) -> String {
    let mut o = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>legate</title><style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}.bad{color:#b00}\
         .ok{color:#070}.warning{color:#a60}code{font-size:13px}</style></head><body><h1>legate</h1>",
    );
    let _ = write!(o, "<p>config version <code id=\"version\">{}</code></p>", esc(&text(&status["version"])));
    let reload = &status["last_reload"];
    o.push_str("<h2>Last reload</h2>");
    if reload["ok"] == Value::Bool(true) {
        let _ = write!(o, "<p class=\"ok\" id=\"reload\">valid, at {}</p>", esc(&text(&reload["at"])));
        o.push_str(&diagnostics_html(&reload["warnings"], "warning"));
    } else if reload.is_null() {
        o.push_str("<p id=\"reload\">none yet</p>");
    } else {
        let _ = write!(
            o,
            "<p class=\"bad\" id=\"reload\">rejected at {}; proxies keep the last good config</p>",
            esc(&text(&reload["at"]))
        );
        o.push_str(&diagnostics_html(&reload["errors"], "bad error"));
    }
    o.push_str("<h2>Proxies</h2><table id=\"nodes\"><tr><th>node</th><th>cluster</th><th>connected</th><th>xDS</th><th>type</th><th>ACKed version</th><th>last NACK</th></tr>");
    for (id, cluster, at, protocol, kinds) in nodes(status) {
        let rows = kinds.len().max(1);
        let _ = write!(o, "<tr class=\"node\"><td rowspan=\"{rows}\">{}</td><td rowspan=\"{rows}\">{}</td><td rowspan=\"{rows}\">{}</td><td rowspan=\"{rows}\">{}</td>", esc(&id), esc(&cluster), esc(&at), esc(&protocol));
        if kinds.is_empty() {
            o.push_str("<td></td><td></td><td></td></tr>");
        }
        for (i, (kind, acked, nack)) in kinds.iter().enumerate() {
            if i > 0 {
                o.push_str("<tr>");
            }
            let _ = write!(
                o,
                "<td>{}</td><td><code>{}</code></td><td class=\"bad\">{}</td></tr>",
                esc(kind),
                esc(acked),
                esc(nack)
            );
        }
    }
    o.push_str("</table><h2>Routes</h2><table id=\"routes\"><tr><th>route</th><th>listener</th><th>match</th><th>service</th><th>auth</th><th>rate limits</th></tr>");
    for r in status["routes"].as_array().into_iter().flatten() {
        let _ = write!(o, "<tr>");
        for k in ["name", "listener", "matches", "service", "auth", "rate_limits"] {
            let _ = write!(o, "<td>{}</td>", esc(&text(&r[k])));
        }
        o.push_str("</tr>");
    }
    o.push_str("</table></body></html>\n");
    o
}

/// `legate status`: the same as a terminal table.
#[must_use]
pub fn table(status: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "config version  {}", text(&status["version"]));
    let reload = &status["last_reload"];
    if reload["ok"] == Value::Bool(true) {
        let _ = writeln!(o, "last reload     valid, at {}", text(&reload["at"]));
        for w in reload["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  {}: warning: {}", place(w), text(&w["message"]));
        }
    } else if reload.is_null() {
        let _ = writeln!(o, "last reload     none yet");
    } else {
        let _ = writeln!(o, "last reload     REJECTED at {} (proxies keep the last good config)", text(&reload["at"]));
        for e in reload["errors"].as_array().into_iter().flatten() {
            let _ = writeln!(o, "  {}: {}", place(e), text(&e["message"]));
        }
    }
    let _ =
        writeln!(o, "\n{:<20} {:<12} {:<6} {:<22} {:<18} LAST NACK", "NODE", "CLUSTER", "XDS", "TYPE", "ACKED VERSION");
    for (id, cluster, _, protocol, kinds) in nodes(status) {
        if kinds.is_empty() {
            let _ = writeln!(o, "{id:<20} {cluster:<12} {protocol:<6}");
        }
        for (kind, acked, nack) in kinds {
            let _ = writeln!(o, "{id:<20} {cluster:<12} {protocol:<6} {kind:<22} {acked:<18} {nack}");
        }
    }
    let _ = writeln!(
        o,
        "\n{:<24} {:<12} {:<28} {:<20} {:<16} RATE LIMITS",
        "ROUTE", "LISTENER", "MATCH", "SERVICE", "AUTH"
    );
    for r in status["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "{:<24} {:<12} {:<28} {:<20} {:<16} {}",
            text(&r["name"]),
            text(&r["listener"]),
            text(&r["matches"]),
            text(&r["service"]),
            text(&r["auth"]),
            text(&r["rate_limits"])
        );
    }
    o
}
