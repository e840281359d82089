//! TLS termination end to end: certificates made in the test (rcgen),
//! served by stock Envoy from SDS secrets legate pushes, checked with a
//! rustls client that looks at the certificate it got.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, Gateway};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

/// A CA that signs the test's server certificates; clients trust it.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Not rcgen's default name, which its leaves carry too: Envoy's
        // BoringSSL takes a leaf named like its issuer for self-signed.
        params.distinguished_name.push(DnType::CommonName, "legate test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    /// A certificate for `names` with serial `serial`: (cert PEM, key PEM).
    fn issue(&self, names: &[&str], serial: u64) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("trust the CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// What an https request saw: status, body, and the serial of the server's certificate.
struct Answer {
    status: u16,
    body: String,
    serial: String,
}

/// `GET path` over a fresh TLS connection to 127.0.0.1:`port` with SNI `sni`.
fn https_get(client: &Arc<rustls::ClientConfig>, port: u16, sni: &str, path: &str) -> Result<Answer, String> {
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::clone(client), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(tls, "GET {path} HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let peer: &CertificateDer<'_> = tls.conn.peer_certificates().and_then(|c| c.first()).ok_or("no certificate")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(peer).map_err(|e| e.to_string())?;
    let serial = parsed.tbs_certificate.serial.to_string();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    Ok(Answer { status, body: body.to_owned(), serial })
}

fn serial(n: u64) -> String {
    n.to_string()
}

#[test]
fn https_is_terminated_at_envoy_with_sni_rotation_and_redirect() {
    let ca = Ca::new();
    let client = ca.client();
    let mut gw = Gateway::new();
    let alpha = gw.echo("alpha");
    let (web, api, plain) = (free_port(), free_port(), free_port());
    let write_pair = |gw: &Gateway, name: &str, pair: &(String, String)| {
        gw.write(&format!("certs/{name}.crt"), &pair.0);
        gw.write(&format!("certs/{name}.key"), &pair.1);
    };
    let web_pair = ca.issue(&["web.test"], 101);
    write_pair(&gw, "web", &web_pair);
    write_pair(&gw, "a", &ca.issue(&["a.test"], 201));
    write_pair(&gw, "b", &ca.issue(&["b.test", "*.b.test"], 202));
    gw.write(
        "gateway.yaml",
        &format!(
            r#"
listeners:
  - name: web
    port: {web}
    address: 127.0.0.1
    tls: {{ cert: certs/web.crt, key: certs/web.key }}
    http_redirect_port: {plain}
  - name: api
    port: {api}
    address: 127.0.0.1
    tls:
      certificates:
        - {{ cert: certs/a.crt, key: certs/a.key, hosts: [a.test] }}
        - {{ cert: certs/b.crt, key: certs/b.key, hosts: [b.test, "*.b.test"] }}
services:
  - name: alpha
    url: http://127.0.0.1:{alpha}
routes:
  - {{ name: web, listener: web, match: {{ prefix: / }}, service: alpha }}
  - {{ name: api, listener: api, match: {{ prefix: / }}, service: alpha }}
"#
        ),
    );
    gw.serve();
    gw.envoy("tls", "edge");
    let first = gw.wait("Envoy to serve https", PUSH, || https_get(&client, web, "web.test", "/hello").ok());

    // TLS ends at Envoy: the upstream got plain HTTP, marked as https.
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.serial, serial(101));
    let seen: serde_json::Value = serde_json::from_str(&first.body).expect("echo JSON");
    assert_eq!(seen["path"], "/hello");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https", "{seen}");

    // Several certificates on one listener, chosen by SNI.
    let a = gw.wait("the api listener", PUSH, || https_get(&client, api, "a.test", "/").ok());
    assert_eq!(a.serial, serial(201));
    assert_eq!(https_get(&client, api, "b.test", "/").expect("b").serial, serial(202));
    assert_eq!(https_get(&client, api, "x.b.test", "/").expect("wildcard").serial, serial(202));

    // Plain HTTP on the redirect port: 301 to https on the TLS port.
    // (A client of its own: ureq would follow the redirect.)
    let r = common::request_from(
        "127.0.0.1",
        "GET",
        &format!("http://127.0.0.1:{plain}/some/path?q=1"),
        &[("host", "web.test")],
    )
    .expect("redirect answer");
    assert_eq!(r.status, 301, "{}", r.body);
    assert_eq!(r.header("location"), Some(&*format!("https://web.test:{web}/some/path?q=1")));

    // Rotation: new files, a new certificate on the next connection, no restart.
    write_pair(&gw, "web", &ca.issue(&["web.test"], 102));
    gw.wait("the rotated certificate", PUSH, || {
        https_get(&client, web, "web.test", "/").ok().filter(|a| a.serial == serial(102))
    });

    // Secrets stay secret: not in /api/config, not in legate's log.
    let config = gw.admin("/api/config?node_cluster=edge").body;
    assert!(config.contains("[redacted]"), "the key is shown as redacted");
    let key_body: String = web_pair.1.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!config.contains(&key_body[..40]), "a private key leaked into /api/config");
    assert!(!config.contains("PRIVATE KEY"), "a private key leaked into /api/config");
    let log = std::fs::read_to_string(gw.log("legate")).unwrap_or_default();
    assert!(!log.contains("PRIVATE KEY") && !log.contains(&key_body[..40]), "a private key leaked into the log");
}

/// https services: Envoy checks the service's certificate against the
/// service's CAs (`tls.ca`, else the Mozilla roots) and name (the url's
/// host, or `tls.server_name`), and refuses to send to one that fails;
/// `verify: false` accepts any. The aggregator's calls to them too. The "service" is a TLS listener of the same
/// Envoy, with a certificate from the test's CA for `upstream.test` and
/// `localhost`.
#[test]
fn https_services_are_sent_to_only_when_their_certificate_checks_out() {
    let ca = Ca::new();
    let mut gw = Gateway::new();
    let alpha = gw.echo("alpha");
    let (public, upstream) = (free_port(), free_port());
    let (cert, key) = ca.issue(&["upstream.test", "localhost"], 301);
    gw.write("certs/upstream.crt", &cert);
    gw.write("certs/upstream.key", &key);
    gw.write("certs/ca.pem", &ca.cert.pem());
    // Another CA's certificate: not the one the upstream's chains to.
    gw.write("certs/other-ca.pem", &Ca::new().cert.pem());
    let service = |name: &str, tls: &str| {
        format!("  - name: {name}\n    endpoints: [\"127.0.0.1:{upstream}\"]\n    tls: {tls}\n")
    };
    let route = |name: &str| {
        format!("  - {{ name: {name}, listener: public, match: {{ prefix: /{name} }}, service: {name} }}\n")
    };
    let cases = [
        ("trusted", "{ ca: certs/ca.pem, server_name: upstream.test }"),
        ("by-url", ""),
        ("wrong-name", "{ ca: certs/ca.pem, server_name: other.test }"),
        ("other-ca", "{ ca: certs/other-ca.pem, server_name: upstream.test }"),
        ("public-roots", "{ server_name: upstream.test }"),
        ("unchecked", "{ verify: false }"),
    ];
    let mut services = String::new();
    let mut routes = String::new();
    for (name, tls) in cases {
        if name == "by-url" {
            // The url's host is the name checked.
            services.push_str(&format!(
                "  - name: by-url\n    url: https://localhost:{upstream}\n    tls: {{ ca: certs/ca.pem }}\n"
            ));
        } else {
            services.push_str(&service(name, tls));
        }
        routes.push_str(&route(name));
    }
    gw.write(
        "gateway.yaml",
        &format!(
            r#"
listeners:
  - name: public
    port: {public}
    address: 127.0.0.1
  - name: upstream
    port: {upstream}
    address: 127.0.0.1
    tls: {{ cert: certs/upstream.crt, key: certs/upstream.key }}
services:
  - name: alpha
    url: http://127.0.0.1:{alpha}
{services}routes:
  - {{ name: upstream, listener: upstream, match: {{ prefix: / }}, service: alpha }}
{routes}aggregations:
  - name: calls
    listener: public
    path: /calls
    calls:
      trusted: {{ service: trusted, path: /t, pick: service }}
      by-url: {{ service: by-url, path: /u, pick: service }}
      unchecked: {{ service: unchecked, path: /v, pick: service }}
      wrong-name: {{ service: wrong-name, path: /w, pick: service, default: refused }}
      other-ca: {{ service: other-ca, path: /x, pick: service, default: refused }}
      public-roots: {{ service: public-roots, path: /y, pick: service, default: refused }}
"#
        ),
    );
    gw.serve();
    let envoy = gw.envoy("tls", "edge");
    let get = |path: &str| common::get(&format!("http://127.0.0.1:{public}{path}"));
    let first = gw.wait("the trusted service to answer", PUSH, || get("/trusted").ok().filter(|r| r.status == 200));
    assert_eq!(first.json()["service"], "alpha", "went through the TLS listener to the echo upstream");
    for path in ["/by-url", "/unchecked"] {
        let r = get(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((r.status, r.json()["service"].clone()), (200, "alpha".into()), "{path}: {}", r.body);
    }
    // Refused at the handshake, for the reason Envoy's counters give: the
    // name (SAN), or the chain (another CA; the public roots).
    for (name, stat) in
        [("wrong-name", "fail_verify_san"), ("other-ca", "fail_verify_error"), ("public-roots", "fail_verify_error")]
    {
        let r = get(&format!("/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status, 503, "{name}: {}", r.body);
        let [failed] = envoy.stats([&format!("cluster.{name}.ssl.{stat}")]);
        assert!(failed >= 1, "{name}: cluster.{name}.ssl.{stat} is {failed}");
    }
    let [handshakes] = envoy.stats(["cluster.unchecked.ssl.handshake"]);
    assert!(handshakes >= 1, "the unchecked service was reached over TLS");

    // The aggregator calls the same services itself, checking them the same way.
    let r = get("/calls").expect("the aggregation answers");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({
            "trusted": "alpha", "by-url": "alpha", "unchecked": "alpha",
            "wrong-name": "refused", "other-ca": "refused", "public-roots": "refused",
        }),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-legate-partial"), Some("wrong-name,other-ca,public-roots"));
}
