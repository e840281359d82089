//! Kong declarative configs: the conversion (golden files of `legate import
//! kong` for the cases in tests/kong/), its errors, and the gateway-pattern
//! document's kong.yaml read straight from a policy folder and served by
//! stock Envoy: JWT required, 100 a minute, X-Service-Version added.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::jwt::{claims, Key};
use common::{free_port, request, Gateway};

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kong").join(name)
}

fn import(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_legate")).args(["import", "kong"]).args(args).output().expect("legate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The converted policy, checked to load as legate policy, as a golden file.
#[track_caller]
fn golden(name: &str) {
    let (ok, yaml, err) = import(&[&case(name).display().to_string()]);
    assert!(ok, "{err}{yaml}");
    let texts = vec![("converted.yaml".to_owned(), yaml.clone())];
    legate::policy::load_texts(&texts).unwrap_or_else(|e| panic!("the conversion of {name} is not valid policy:\n{e}"));
    insta::assert_snapshot!(name.trim_end_matches(".yaml"), yaml);
}

/// `kong(up)` as kong.yaml, with an echo upstream on port `up`, served by
/// legate through one Envoy on a listener of its own, once `probe` answers
/// 200: the gateway and the listener's port.
fn serve_kong(kong: impl FnOnce(u16) -> String, probe: &str) -> (Gateway, u16) {
    let mut gw = Gateway::new();
    let up = gw.echo("up");
    let listen = free_port();
    gw.write("kong.yaml", &kong(up));
    gw.write("listeners.yaml", &format!("listeners:\n  - name: public\n    port: {listen}\n    address: 127.0.0.1\n"));
    gw.serve();
    gw.envoy("edge-1", "default");
    let url = format!("http://127.0.0.1:{listen}{probe}");
    gw.wait("Envoy to serve", std::time::Duration::from_secs(15), || {
        request("GET", &url, &[]).ok().filter(|r| r.status == 200)
    });
    (gw, listen)
}

/// One Kong service `api` (an echo upstream) with the route `/api`, and
/// the top-level `plugins` given (YAML list items), served as by
/// [`serve_kong`].
fn serve_api_with(plugins: &str) -> (Gateway, u16) {
    serve_kong(
        |up| {
            format!(
                "_format_version: '3.0'\nservices:\n  - name: api\n    url: http://127.0.0.1:{up}\n    routes:\n      \
                 - {{ name: api, paths: [/api] }}\nplugins:\n{plugins}"
            )
        },
        "/api",
    )
}

#[test]
fn the_gateway_pattern_document_s_config_converts() {
    golden("gateway-pattern.yaml");
}

#[test]
fn every_conversion_rule_converts() {
    golden("everything.yaml");
}

#[test]
fn top_level_credentials_and_comments_convert() {
    golden("top-level.yaml");
}

#[test]
fn upstreams_and_targets_convert() {
    golden("upstreams.yaml");
}

#[test]
fn names_and_keys_used_twice_are_import_errors_naming_both() {
    let (ok, out, err) = import(&[&case("duplicates.yaml").display().to_string()]);
    assert!(!ok && out.is_empty(), "{out}{err}");
    for (line, words) in [
        (8, &["service `orders` is defined twice", "`services[0]`"][..]),
        (11, &["route `list` is defined twice", "`services[0].routes[0]`"]),
        (16, &["consumer `app` is defined twice", "`consumers[0]`"]),
        (19, &["consumer `other`", "already a key of `app`"]),
    ] {
        let place = format!("duplicates.yaml:{line}:");
        assert!(
            err.lines().any(|l| l.contains(&place) && words.iter().all(|w| l.contains(w))),
            "no error at line {line} with {words:?}:\n{err}"
        );
    }
}

#[test]
fn cors_for_any_origin_with_credentials_echoes_the_origin_as_kong_does() {
    let (_gw, listen) = serve_kong(
        |up| {
            format!(
                "_format_version: \"3.0\"\nservices:\n  - name: api\n    url: http://127.0.0.1:{up}\n    routes:\n      \
                 - {{ name: api, paths: [/api] }}\n    plugins:\n      - name: cors\n        \
                 config: {{ origins: [\"*\"], credentials: true, methods: [GET, PUT] }}\n"
            )
        },
        "/api/x",
    );
    let url = format!("http://127.0.0.1:{listen}/api/x");
    let preflight = [("origin", "https://app.example.com"), ("access-control-request-method", "PUT")];
    let r = request("OPTIONS", &url, &preflight).expect("preflight");
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"), "{:?}", r.headers);
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"), "{:?}", r.headers);
    let r = request("GET", &url, &[("origin", "https://other.example.net")]).expect("get");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://other.example.net"), "{:?}", r.headers);
}

#[test]
fn paths_with_regex_characters_are_regexes_in_kong_2_files() {
    // As Kong 2 reads them: `/users/\d+` and `/api/*` are regexes (anchored
    // at the start), `/plain-path_1.0~` a prefix.
    let (_gw, listen) = serve_kong(
        |up| {
            format!(
                "_format_version: \"2.1\"\nservices:\n  - name: api\n    url: http://127.0.0.1:{up}\n    routes:\n      \
                 - {{ name: users, paths: ['/users/\\d+'], strip_path: false }}\n      \
                 - {{ name: star, paths: ['/api/*'], strip_path: false }}\n      \
                 - {{ name: plain, paths: [/plain-path_1.0~], strip_path: false }}\n"
            )
        },
        "/users/42",
    );
    let get = |p: &str| request("GET", &format!("http://127.0.0.1:{listen}{p}"), &[]).expect("answer");
    assert_eq!(get("/users/42/orders").json()["path"], "/users/42/orders", "a Kong regex matches from the start");
    assert_eq!(get("/users/abc").status, 404);
    assert_eq!(get("/apix").status, 200, "`/api/*` is `/api` and any slashes, then anything");
    assert_eq!(get("/plain-path_1.0~/x").status, 200);
    // The same paths in a 3.0 file are literal prefixes.
    let texts = vec![(
        "kong.yaml".to_owned(),
        "_format_version: \"3.0\"\nservices:\n  - name: api\n    url: http://a:80\n    routes:\n      \
         - { name: star, paths: ['/api/*'], strip_path: false }\n"
            .to_owned(),
    )];
    let policy = legate::policy::load_texts(&texts).expect("loads");
    assert_eq!(policy.routes[0].path, legate::policy::PathMatch::Prefix("/api/*".into()));
}

#[test]
fn plugins_no_route_uses_are_checked_too() {
    // Global plugins in a file without routes, and a route-less service's.
    let text = "_format_version: \"3.0\"\nplugins:\n  - name: hmac-auth\nservices:\n  - name: idle\n    \
                url: http://a:80\n    plugins:\n      - name: customAuth\n";
    let errors = legate::policy::load_texts(&[("kong.yaml".to_owned(), text.to_owned())])
        .expect_err("must not load")
        .to_string();
    assert!(errors.contains("kong.yaml:3:5: plugin `hmac-auth` (global)"), "{errors}");
    assert!(errors.contains("kong.yaml:8:9: plugin `customAuth` (service `idle`)"), "{errors}");
}

#[test]
fn an_unquoted_format_version_is_named_for_what_it_is() {
    let texts = vec![("kong.yaml".to_owned(), "_format_version: 3.0\nservices: []\n".to_owned())];
    let errors = legate::policy::load_texts(&texts).expect_err("must not load").to_string();
    assert!(errors.contains("kong.yaml:1:") && errors.contains("quote it: \"3.0\""), "{errors}");
}

#[test]
fn settings_without_an_equivalent_are_errors_naming_the_entity_and_field() {
    let file = case("unsupported.yaml").display().to_string();
    let (ok, out, err) = import(&[&file]);
    assert!(!ok);
    assert!(err.contains("nothing was written"), "{err}");
    // Errors go to stderr: `import kong kong.yaml > gateway.yaml` must not
    // fill the file with them.
    assert!(out.is_empty(), "stdout: {out}");
    let out = err.lines().filter(|l| l.contains("unsupported.yaml:")).collect::<Vec<_>>().join("\n");
    let at = |line: u32, words: &[&str]| {
        let place = format!("unsupported.yaml:{line}:");
        assert!(
            out.lines().any(|l| l.contains(&place) && words.iter().all(|w| l.contains(w))),
            "no error at line {line} with {words:?}:\n{out}"
        );
    };
    at(4, &["service `orders`", "protocol `grpc`"]);
    at(8, &["service `users`", "`client_certificate`"]);
    at(11, &["plugin `jwt` (service `users`)", "`iss` only"]);
    at(11, &["plugin `jwt` (service `users`)", "no consumer has jwt_secrets"]);
    at(11, &["plugin `jwt` (service `users`)", "`secret_is_base64` has no legate equivalent"]);
    at(15, &["route `users-route`", "`snis`"]);
    at(18, &["plugin `rate-limiting` (route `users-route`)", "limit_by `service`"]);
    at(19, &["plugins `jwt` and `key-auth` on one route"]);
    at(19, &["plugin `key-auth` (route `users-route`)", "no consumer has keyauth_credentials"]);
    at(26, &["plugin `acl` (route `lonely-route`)", "needs the jwt, key-auth or basic-auth plugin"]);
    at(29, &["Kong plugin `hmac-auth` has no legate equivalent"]);
    at(31, &["`add.body`"]);
    at(31, &["`rename.headers`"]);
    at(34, &["consumer `x`", "`hmacauth_credentials`"]);
    at(36, &["consumer `x`", "algorithm `PS256`"]);
    // One line each, in file order, none twice.
    let lines: Vec<&str> = out.lines().collect();
    let mut sorted = lines.clone();
    sorted.dedup();
    assert_eq!(lines, sorted);

    // --partial writes what converts, with the rest as comments.
    let (ok, out, _) = import(&[&file, "--partial"]);
    assert!(ok);
    assert!(out.contains("#   ") && out.contains("`snis` has no legate equivalent"), "{out}");
    assert!(out.contains("name: lonely") && !out.contains("name: users-route"), "{out}");
    // Each route, service or plugin left out whole has its own comment.
    assert!(out.contains("# Dropped whole") && out.contains("route `users-route`: for its plugins' problems"), "{out}");
    legate::policy::load_texts(&[("partial.yaml".to_owned(), out.clone())])
        .unwrap_or_else(|e| panic!("--partial printed a policy `validate` refuses:\n{e}\n{out}"));

    // In a policy folder the same problems stop the load, at the same places.
    let texts = vec![("kong.yaml".to_owned(), std::fs::read_to_string(case("unsupported.yaml")).expect("case"))];
    let errors = legate::policy::load_texts(&texts).expect_err("must not load").to_string();
    assert!(errors.contains("kong.yaml:15:9: route `users-route`: `snis` has no legate equivalent"), "{errors}");
}

#[test]
fn the_gateway_pattern_kong_config_serves_through_envoy() {
    let mut gw = Gateway::new();
    let orders = gw.echo("order-service");
    let users = gw.echo("user-service");
    let listen = free_port();
    let public_key =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt/rsa-a.pub.pem"))
            .expect("fixture");
    let pem: String = public_key.lines().map(|l| format!("          {l}\n")).collect();
    let kong = std::fs::read_to_string(case("gateway-pattern.yaml")).expect("case");
    let start = kong.find("          -----BEGIN PUBLIC KEY-----").expect("a PEM in the case");
    let end = kong.find("-----END PUBLIC KEY-----").expect("its end") + "-----END PUBLIC KEY-----\n".len();
    let kong = format!("{}{pem}{}", &kong[..start], &kong[end..])
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{orders}"))
        .replace("127.0.0.1:3001", &format!("127.0.0.1:{users}"));
    gw.write("kong.yaml", &kong);
    // A legate file next to it chooses the listener Kong's routes go on.
    gw.write("listeners.yaml", &format!("listeners:\n  - name: public\n    port: {listen}\n    address: 127.0.0.1\n"));
    gw.serve();
    gw.envoy("edge-1", "default");

    let url = |p: &str| format!("http://127.0.0.1:{listen}{p}");
    // JWT required, as the jwt plugin says.
    let r = request("GET", &url("/api/orders/42"), &[]).expect("answer");
    assert_eq!(r.status, 401, "{}", r.body);
    let token = Key::rsa("rsa-a", "a").sign(&claims("https://auth.example.com", "anyone", "user-1"));
    let auth = format!("Bearer {token}");
    let r = request("GET", &url("/api/orders/42"), &[("authorization", &auth)]).expect("answer");
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["service"], "order-service");
    assert_eq!(j["path"], "/42", "strip_path (Kong's default) cuts the route's path: {j}");
    assert_eq!(j["headers"]["x-service-version"], "1.0", "request-transformer: {j}");
    assert_eq!(j["headers"]["x-credential-identifier"], "https://auth.example.com", "{j}");
    // Methods as the route says.
    let r = request("DELETE", &url("/api/users/7"), &[("authorization", &auth)]).expect("answer");
    assert_eq!(r.status, 404, "{}", r.body);
    // 100 a minute per consumer (Kong's default limit_by), counted per route,
    // in fixed windows as Kong counts: all in one clock minute.
    while common::since_epoch().as_secs() % 60 > 40 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let minute = common::since_epoch().as_secs() / 60;
    for i in 0..100 {
        let r = request("GET", &url("/api/users/7"), &[("authorization", &auth)]).expect("answer");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let r = request("GET", &url("/api/users/7"), &[("authorization", &auth)]).expect("answer");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
    assert!(r.header("x-ratelimit-limit").is_some(), "{:?}", r.headers);
    // The window stays shut for the rest of the minute: no token trickles
    // back in (a bucket refilling evenly would admit about 5 more here).
    for i in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let r = request("GET", &url("/api/users/7"), &[("authorization", &auth)]).expect("answer");
        assert_eq!(r.status, 429, "request {} of the minute: {}", 102 + i, r.body);
    }
    assert_eq!(common::since_epoch().as_secs() / 60, minute, "the whole count fell in one minute");
    // Another route of the same consumer still has its own count.
    let r = request("GET", &url("/api/orders/1"), &[("authorization", &auth)]).expect("answer");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn kong_key_auth_narrowed_by_acl_serves_through_envoy() {
    let mut gw = Gateway::new();
    let up = gw.echo("reports");
    let listen = free_port();
    gw.write(
        "kong.yaml",
        &format!(
            r#"_format_version: "3.0"
services:
  - name: reports
    url: http://127.0.0.1:{up}
    routes:
      - name: reports
        paths: [/reports]
        plugins:
          - name: key-auth
          - name: acl
            config: {{ allow: [partners] }}
consumers:
  - username: partner-a
    keyauth_credentials: [{{ key: key-partner-a }}]
    acls: [{{ group: partners }}]
  - username: intern
    keyauth_credentials: [{{ key: key-intern }}]
"#
        ),
    );
    gw.write("listeners.yaml", &format!("listeners:\n  - name: public\n    port: {listen}\n    address: 127.0.0.1\n"));
    gw.serve();
    gw.envoy("edge-1", "default");
    let url = format!("http://127.0.0.1:{listen}/reports/7");
    let r = request("GET", &url, &[("apikey", "key-partner-a")]).expect("answer");
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["path"], "/7", "{j}");
    assert_eq!(j["headers"]["x-consumer-username"], "partner-a", "{j}");
    assert_eq!(j["headers"]["apikey"], "key-partner-a", "Kong passes the key on unless hide_credentials: {j}");
    let r = request("GET", &format!("{url}?apikey=key-partner-a"), &[]).expect("answer");
    assert_eq!(r.status, 200, "the key in the query, as Kong reads it: {}", r.body);
    // A consumer outside the allowed group, a wrong key, no key: refused.
    for headers in [&[("apikey", "key-intern")][..], &[("apikey", "nope")], &[]] {
        let r = request("GET", &url, headers).expect("answer");
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert_eq!(r.json()["error"], "unauthorized");
    }
}

/// Kong's upstream path (path_handling v0, its default), as
/// kong/router/utils.lua `get_upstream_uri_v0` computes it: `base` the
/// service's path (`/` when it has none), `route` the matched prefix.
fn kong_upstream_path(strip: bool, base: &str, route: &str, req: &str) -> String {
    if strip {
        let postfix = &req[route.len()..];
        let base_slash = base.ends_with('/');
        let trimmed = base.strip_suffix('/').unwrap_or(base);
        match (postfix.is_empty(), postfix.starts_with('/')) {
            (true, _) if base == "/" => "/".to_owned(),
            (true, _) if base_slash => {
                if req.ends_with('/') {
                    base.to_owned()
                } else {
                    trimmed.to_owned()
                }
            }
            (true, _) => {
                if req.len() > 1 && req.ends_with('/') {
                    format!("{base}/")
                } else {
                    base.to_owned()
                }
            }
            (false, true) => format!("{trimmed}{postfix}"),
            (false, false) if base_slash => format!("{base}{postfix}"),
            (false, false) => format!("{base}/{postfix}"),
        }
    } else if base.ends_with('/') {
        format!("{base}{}", &req[1..])
    } else if req == "/" {
        base.to_owned()
    } else {
        format!("{base}{req}")
    }
}

#[test]
fn kong_s_upstream_path_rules_hold_for_the_whole_grid_through_envoy() {
    // Kong's documented examples (Admin API, route `path_handling`).
    assert_eq!(kong_upstream_path(false, "/s", "/fv0", "/fv0req"), "/s/fv0req");
    assert_eq!(kong_upstream_path(true, "/s", "/tv0", "/tv0req"), "/s/req");
    assert_eq!(kong_upstream_path(true, "/s", "/tv0/", "/tv0/req"), "/s/req");
    assert_eq!(kong_upstream_path(false, "/s", "/fv0/", "/fv0/req"), "/s/fv0/req");

    // strip_path × service path (none, without and with a trailing slash) ×
    // route path (without and with a trailing slash).
    let mut grid = Vec::new();
    for strip in [true, false] {
        for base in ["/", "/kitchen/getOrder", "/kitchen/"] {
            for slash in ["", "/"] {
                grid.push((strip, base, format!("/c{:02}{slash}", grid.len())));
            }
        }
    }
    let kong = |up: u16| {
        let mut kong = String::from("_format_version: \"3.0\"\nservices:\n");
        for (n, (strip, base, route)) in grid.iter().enumerate() {
            kong.push_str(&format!(
                "  - name: s{n:02}\n    url: http://127.0.0.1:{up}{}\n    routes:\n      - name: r{n:02}\n        \
                 strip_path: {strip}\n        paths: [\"{route}\"]\n",
                if *base == "/" { "" } else { base }
            ));
        }
        kong
    };
    let (_gw, listen) = serve_kong(kong, "/c00");
    let url = |p: &str| format!("http://127.0.0.1:{listen}{p}");

    let mut wrong = Vec::new();
    let mut checked = 0;
    for (strip, base, route) in &grid {
        let trimmed = route.trim_end_matches('/');
        // At the route's path, and under it (with and without a slash).
        let mut requests = vec![route.clone(), format!("{route}x"), format!("{trimmed}/x/y")];
        if !route.ends_with('/') {
            requests.push(format!("{route}/"));
        }
        for req in requests {
            let want = kong_upstream_path(*strip, base, route, &req);
            let r = request("GET", &url(&req), &[]).expect("answer");
            let got = r.json()["path"].as_str().unwrap_or_default().to_owned();
            checked += 1;
            if r.status != 200 || got != want {
                wrong.push(format!(
                    "strip_path {strip}, service path {base}, route {route}: {req} -> {got} ({}), Kong: {want}",
                    r.status
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {checked} differ from Kong:\n{}", wrong.len(), wrong.join("\n"));
}

/// An upstream for timeouts: `/drip` answers in six chunks 400 ms apart
/// (2 s in all), `/stall` sends nothing for 2.5 s and then answers, anything
/// else answers at once.
fn slow_upstream() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let mut out = stream;
                let path = first.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                let (chunks, gap) = match path.as_str() {
                    "/drip" => (6, 400),
                    "/stall" => {
                        std::thread::sleep(std::time::Duration::from_millis(2500));
                        (1, 0)
                    }
                    _ => (1, 0),
                };
                let _ = out.write_all(head.as_bytes());
                for i in 0..chunks {
                    if i > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(gap));
                    }
                    let chunk = format!("chunk{i}");
                    if out.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes()).is_err() {
                        return;
                    }
                    let _ = out.flush();
                }
                let _ = out.write_all(b"0\r\n\r\n");
            });
        }
    });
    port
}

#[test]
fn kong_read_timeout_bounds_the_gap_between_reads_not_the_whole_answer() {
    // Kong's read_timeout is nginx's proxy_read_timeout: the longest wait
    // for the next bytes from the service. A slow stream of chunks is served
    // whole however long it lasts; a service that sends nothing for longer
    // is cut off with 504.
    let up = slow_upstream();
    let (_gw, listen) = serve_kong(
        |_| {
            format!(
                "_format_version: \"3.0\"\nservices:\n  - name: slow\n    url: http://127.0.0.1:{up}\n    \
                 read_timeout: 1000\n    write_timeout: 1000\n    routes:\n      \
                 - {{ name: slow, paths: [/], strip_path: false }}\n"
            )
        },
        "/fast",
    );
    let r = request("GET", &format!("http://127.0.0.1:{listen}/drip"), &[]).expect("the whole stream");
    assert_eq!((r.status, r.body.as_str()), (200, "chunk0chunk1chunk2chunk3chunk4chunk5"), "{:?}", r.headers);
    let r = request("GET", &format!("http://127.0.0.1:{listen}/stall"), &[]).expect("an answer");
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "gateway_timeout", "{}", r.body);
}

#[test]
fn a_bare_cors_plugin_allows_what_kong_s_defaults_allow() {
    // Kong's cors plugin without methods allows every method, and without
    // headers echoes the ones a preflight asks for; an origin with regex
    // characters is a regex, over the host alone when it has no `:`.
    let (_gw, listen) = serve_kong(
        |up| {
            format!(
                r"_format_version: '3.0'
services:
  - name: api
    url: http://127.0.0.1:{up}
    routes:
      - name: api
        paths: [/api]
        plugins:
          - name: cors
      - name: hosts
        paths: [/hosts]
        plugins:
          - name: cors
            config:
              origins: ['(app|admin)\.example\.org', 'https://.*\.example\.com', http://localhost:3000]
"
            )
        },
        "/api/x",
    );
    let preflight = |path: &str, origin: &str| {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "authorization,x-custom"),
        ];
        request("OPTIONS", &format!("http://127.0.0.1:{listen}{path}"), &headers).expect("preflight")
    };
    let r = preflight("/api/x", "https://app.example.com");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"), "{:?}", r.headers);
    let methods = r.header("access-control-allow-methods").unwrap_or_default().to_owned();
    for m in ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"] {
        assert!(methods.split(',').any(|x| x.trim() == m), "{m} in {methods}");
    }
    assert_eq!(r.header("access-control-allow-headers"), Some("authorization,x-custom"), "{:?}", r.headers);
    for (origin, allowed) in [
        ("https://app.example.org", true),
        ("http://admin.example.org:8080", true),
        ("https://evil.example.org", false),
        ("https://x.example.com", true),
        ("http://x.example.com", false),
        ("http://localhost:3000", true),
        ("http://localhost:3001", false),
    ] {
        let r = preflight("/hosts/y", origin);
        let got = r.header("access-control-allow-origin");
        assert_eq!(got == Some(origin), allowed, "{origin}: {:?}", r.headers);
    }
}

#[test]
fn kong_jwt_checks_exp_as_claims_to_verify_and_maximum_expiration_say() {
    // Kong's jwt plugin: `claims_to_verify: [exp]` refuses a token without
    // `exp`, `maximum_expiration` one with longer than that left to live;
    // no clock skew. Without claims_to_verify, a token without `exp` passes.
    let (_gw, listen) = serve_kong(
        |up| {
            format!(
                r"_format_version: '3.0'
consumers:
  - username: app
    jwt_secrets:
      - {{ key: app-issuer, algorithm: HS256, secret: kong-test-secret }}
services:
  - name: api
    url: http://127.0.0.1:{up}
    routes:
      - name: open
        paths: [/open]
      - name: strict
        paths: [/strict]
        plugins:
          - name: jwt
            config: {{ claims_to_verify: [exp], maximum_expiration: 3600 }}
      - name: exp
        paths: [/exp]
        plugins:
          - name: jwt
            config: {{ claims_to_verify: [exp, nbf] }}
      - name: lenient
        paths: [/lenient]
        plugins:
          - name: jwt
"
            )
        },
        "/open",
    );
    let key = jsonwebtoken::EncodingKey::from_secret(b"kong-test-secret");
    let token = |claims: serde_json::Value| {
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
    };
    let now = common::jwt::now();
    let status = |path: &str, claims: serde_json::Value| {
        let auth = format!("Bearer {}", token(claims));
        let r = request("GET", &format!("http://127.0.0.1:{listen}{path}"), &[("authorization", &auth)]);
        r.expect("answer").status
    };
    let iss = "app-issuer";
    let no_exp = serde_json::json!({ "iss": iss });
    let soon = serde_json::json!({ "iss": iss, "exp": now + 1800 });
    let later = serde_json::json!({ "iss": iss, "exp": now + 7200 });
    let expired = serde_json::json!({ "iss": iss, "exp": now - 5 });
    for (path, claims, want) in [
        ("/strict", &no_exp, 401),
        ("/strict", &later, 401),
        ("/strict", &soon, 200),
        ("/strict", &expired, 401),
        ("/exp", &no_exp, 401),
        ("/exp", &later, 200),
        ("/exp", &expired, 401),
        ("/lenient", &no_exp, 200),
        ("/lenient", &soon, 200),
    ] {
        assert_eq!(status(path, claims.clone()), want, "{path} with {claims}");
    }
    // Kong also reads a token from the `jwt` query parameter by default.
    let url = format!("http://127.0.0.1:{listen}/lenient?jwt={}", token(soon));
    assert_eq!(request("GET", &url, &[]).expect("answer").status, 200);
    let url = format!("http://127.0.0.1:{listen}/lenient?jwt=not-a-token");
    assert_eq!(request("GET", &url, &[]).expect("answer").status, 401);
}

#[test]
fn kong_upstreams_balance_over_their_targets_with_each_target_s_host() {
    // A service whose host names an upstream goes to the upstream's targets
    // (weight 0: none), with Host the chosen target's host:port, as Kong
    // sends it; a plain service on a port that is not 80 gets host:port too.
    let mut gw = Gateway::new();
    let blue = gw.echo("blue");
    let green = gw.echo("green");
    let red = gw.echo("red");
    let plain = gw.echo("plain");
    let listen = free_port();
    gw.write(
        "kong.yaml",
        &format!(
            r"_format_version: '3.0'
upstreams:
  - name: app-upstream
    algorithm: round-robin
    targets:
      - {{ target: '127.0.0.1:{blue}', weight: 100 }}
      - {{ target: 'localhost:{green}', weight: 100 }}
      - {{ target: '127.0.0.1:{red}', weight: 0 }}
services:
  - name: app
    host: app-upstream
    port: 80
    routes:
      - {{ name: app, paths: [/app], strip_path: false }}
  - name: plain
    url: http://127.0.0.1:{plain}
    routes:
      - {{ name: plain, paths: [/plain], strip_path: false }}
"
        ),
    );
    gw.write("listeners.yaml", &format!("listeners:\n  - name: public\n    port: {listen}\n    address: 127.0.0.1\n"));
    gw.serve();
    gw.envoy("edge-1", "default");
    let url = |p: &str| format!("http://127.0.0.1:{listen}{p}");
    gw.wait("Envoy to serve", std::time::Duration::from_secs(15), || {
        request("GET", &url("/plain"), &[]).ok().filter(|r| r.status == 200)
    });
    let r = request("GET", &url("/plain"), &[("host", "gateway.example")]).expect("plain");
    assert_eq!(r.json()["headers"]["host"], format!("127.0.0.1:{plain}"), "{}", r.body);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let r = request("GET", &url("/app/x"), &[("host", "gateway.example")]).expect("app");
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        let service = j["service"].as_str().unwrap_or_default().to_owned();
        let want = match service.as_str() {
            "blue" => format!("127.0.0.1:{blue}"),
            "green" => format!("localhost:{green}"),
            other => panic!("answered by {other}: a weight-0 target gets nothing"),
        };
        assert_eq!(j["headers"]["host"], want, "{j}");
        *seen.entry(service).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both targets answer: {seen:?}");
}

#[test]
fn kong_request_size_limiting_answers_413_past_the_size() {
    let (_gw, listen) = serve_api_with(
        "  - name: request-size-limiting\n    config: { allowed_payload_size: 1, size_unit: kilobytes }\n",
    );
    let post = |bytes: usize| {
        let url = format!("http://127.0.0.1:{listen}/api/upload");
        match ureq::post(&url).send_bytes(&vec![b'x'; bytes]) {
            Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    };
    let (status, body) = post(1024);
    assert_eq!(status, 200, "exactly the size passes: {body}");
    assert!(body.contains(&"x".repeat(1024)), "the body reaches the service whole");
    let (status, body) = post(1025);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
}

#[test]
fn kong_basic_auth_checks_the_consumers_passwords_through_envoy() {
    use base64::Engine as _;
    let (_gw, listen) = serve_kong(
        |up| {
            format!(
                r"_format_version: '2.1'
consumers:
  - username: DASHBOARD
  - username: viewer
basicauth_credentials:
  - {{ consumer: DASHBOARD, username: admin, password: 's3cret:with colon' }}
  - {{ consumer: viewer, username: guest, password: guest-pass }}
acls:
  - {{ consumer: DASHBOARD, group: admin }}
services:
  - name: dashboard
    url: http://127.0.0.1:{up}/
    routes:
      - {{ name: dashboard, paths: [/dashboard] }}
    plugins:
      - name: basic-auth
        config: {{ hide_credentials: true }}
      - name: acl
        config: {{ allow: [admin] }}
  - name: files
    url: http://127.0.0.1:{up}/
    routes:
      - {{ name: files, paths: [/files] }}
    plugins:
      - name: basic-auth
  - name: open
    url: http://127.0.0.1:{up}/
    routes:
      - {{ name: open, paths: [/open] }}
"
            )
        },
        "/open",
    );
    let basic = |user: &str, password: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    };
    let call = |path: &str, auth: Option<String>| {
        let mut headers = vec![("x-credential-identifier", "forged".to_owned())];
        headers.extend(auth.map(|a| ("authorization", a)));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        request("GET", &format!("http://127.0.0.1:{listen}{path}"), &headers).expect("answer")
    };
    assert_eq!(call("/dashboard", None).status, 401);
    assert_eq!(call("/dashboard", Some(basic("admin", "wrong"))).status, 401);
    assert_eq!(call("/dashboard", Some(basic("guest", "guest-pass"))).status, 401, "the acl admits admins only");
    let r = call("/dashboard", Some(basic("admin", "s3cret:with colon")));
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-credential-identifier"], "admin", "{seen}");
    assert!(seen.get("authorization").is_none(), "hide_credentials: {seen}");
    let r = call("/files", Some(basic("guest", "guest-pass")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["headers"]["authorization"].as_str().is_some_and(|a| a.starts_with("Basic ")), "{}", r.body);
    let r = call("/open", None);
    assert!(r.json()["headers"].get("x-credential-identifier").is_none(), "a forged identity is stripped: {}", r.body);
}

#[test]
fn kong_request_transformer_changes_headers_query_and_path_as_kong_does() {
    // Kong: remove, then replace (only what the request has), add (only
    // what it lacks), append; querystring the same; replace.uri the path.
    let (_gw, listen) = serve_kong(
        |up| {
            format!(
                r"_format_version: '3.0'
services:
  - name: api
    url: http://127.0.0.1:{up}
    routes:
      - {{ name: api, paths: [/api] }}
      - {{ name: moved, paths: [/moved], strip_path: false }}
    plugins:
      - name: request-transformer
        route: moved
plugins:
  - name: request-transformer
    route: api
    config:
      remove: {{ headers: [x-debug], querystring: [debug] }}
      replace: {{ headers: ['x-tier:gold', 'authorization:Bearer internal'], querystring: ['token:hidden'] }}
  - name: request-transformer
    route: moved
    config:
      replace: {{ uri: /v2/items }}
      add: {{ headers: ['x-tier:silver', 'authorization:Bearer internal'], querystring: ['page:1'] }}
      append: {{ headers: ['x-trail:kong'] }}
"
            )
        },
        "/api",
    );
    let get = |path: &str, headers: &[(&str, &str)]| {
        request("GET", &format!("http://127.0.0.1:{listen}{path}"), headers).expect("answer").json()
    };
    let j = get("/api/x?debug=1&token=abc&keep=1", &[("x-debug", "1"), ("x-tier", "bronze")]);
    assert_eq!(j["headers"]["x-tier"], "gold", "{j}");
    assert!(j["headers"].get("authorization").is_none(), "replace adds nothing: {j}");
    assert!(j["headers"].get("x-debug").is_none(), "{j}");
    let sorted = |j: &serde_json::Value| {
        let mut q: Vec<String> = j["query"].as_str().unwrap_or_default().split('&').map(str::to_owned).collect();
        q.sort_unstable();
        q
    };
    // Kong re-encodes the query too (ngx.encode_args): the order is not kept.
    assert_eq!(sorted(&j), ["keep=1", "token=hidden"], "{j}");
    let j = get("/moved/old?x=1", &[("x-tier", "bronze"), ("x-trail", "client")]);
    assert_eq!(j["path"].as_str().unwrap_or_default().split('?').next(), Some("/v2/items"), "{j}");
    assert_eq!(j["headers"]["x-tier"], "bronze", "add keeps the client's: {j}");
    assert_eq!(j["headers"]["authorization"], "Bearer internal", "{j}");
    assert_eq!(j["headers"]["x-trail"], "client, kong", "{j}");
    assert_eq!(sorted(&j), ["page=1", "x=1"], "{j}");
}

#[test]
fn kong_bot_detection_refuses_bots_by_kong_s_rules_and_lists() {
    // Kong's default patterns, `deny` added to them, and `allow` checked first.
    let (_gw, listen) =
        serve_api_with("  - name: bot-detection\n    config: { allow: ['Googlebot-Image'], deny: ['^MyScraper'] }\n");
    let status = |agent: &str| {
        request("GET", &format!("http://127.0.0.1:{listen}/api/x"), &[("user-agent", agent)]).expect("answer").status
    };
    for (agent, want) in [
        ("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0", 200),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", 403),
        ("curl/8.5.0", 200),
        ("python-requests/2.31.0", 200),
        ("Python-urllib/3.11", 403),
        ("facebookexternalhit/1.1", 403),
        ("MyScraper 1.0", 403),
        ("Googlebot-Image/1.0", 200),
    ] {
        assert_eq!(status(agent), want, "{agent}");
    }
}

#[test]
fn a_route_for_https_alone_needs_a_tls_listener() {
    // Kong serves it on its TLS port only; on the conversion's own plain
    // listener Kong would answer 426 and never reach the service.
    let kong = "_format_version: '3.0'\nservices:\n  - name: api\n    url: http://api:80\n    routes:\n      \
                - { name: secure, paths: [/s], protocols: [https] }\n";
    let alone = vec![("kong.yaml".to_owned(), kong.to_owned())];
    let errors = legate::policy::load_texts(&alone).expect_err("must not load").to_string();
    assert!(
        errors.contains("kong.yaml:6:38: route `secure`: a route for https alone needs a TLS listener"),
        "{errors}"
    );
    // With a listener of the folder's own (the user's choice of TLS), it converts.
    let listener = "listeners:\n  - name: public\n    port: 8443\n".to_owned();
    let with = vec![("kong.yaml".to_owned(), kong.to_owned()), ("listeners.yaml".to_owned(), listener)];
    legate::policy::load_texts(&with).expect("loads on the folder's listener");
}

#[test]
fn kong_correlation_id_sends_the_request_id_and_echoes_it() {
    let (_gw, listen) = serve_api_with(
        "  - name: correlation-id\n    config: { header_name: X-Correlation-ID, echo_downstream: true }\n",
    );
    let get = |headers: &[(&str, &str)]| {
        let r = request("GET", &format!("http://127.0.0.1:{listen}/api/x"), headers).expect("answer");
        let sent = r.json()["headers"]["x-correlation-id"].as_str().unwrap_or_default().to_owned();
        (sent, r.header("x-correlation-id").unwrap_or_default().to_owned())
    };
    // Made at the gateway when the client sends none (a UUID), the same
    // in the answer.
    let (sent, echoed) = get(&[]);
    assert_eq!(sent.len(), 36, "a UUID: {sent}");
    assert_eq!(echoed, sent);
    let (other, _) = get(&[]);
    assert_ne!(other, sent, "one per request");
    // A client's own id is kept, as Kong keeps it.
    assert_eq!(get(&[("x-correlation-id", "abc-123")]), ("abc-123".to_owned(), "abc-123".to_owned()));
}

#[test]
fn a_global_kong_file_log_is_legate_s_access_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("kong-requests.log");
    let (_gw, listen) =
        serve_api_with(&format!("  - name: file-log\n    config: {{ path: {}, reopen: true }}\n", file.display()));
    let r = request("GET", &format!("http://127.0.0.1:{listen}/api/logged?x=1"), &[]).expect("answer");
    assert_eq!(r.status, 200, "{}", r.body);
    let line = common::wait_for("the request in the file", std::time::Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines().find(|l| l.contains("/api/logged")).map(str::to_owned)
    });
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["status"], 200, "{entry}");
    // On a service it would log that service's requests alone, which
    // legate's one access log cannot say.
    let text = "_format_version: '3.0'\nservices:\n  - name: api\n    url: http://a:80\n    plugins:\n      \
                - { name: file-log, config: { path: /tmp/api.log } }\n";
    let errors = legate::policy::load_texts(&[("kong.yaml".to_owned(), text.to_owned())])
        .expect_err("must not load")
        .to_string();
    assert!(errors.contains("legate's access log covers every route or none"), "{errors}");
}
