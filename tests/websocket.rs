//! WebSocket handshakes pass through Envoy on any route, as Kong's and
//! Traefik's routes pass them: a real Envoy, a raw TCP upstream that answers
//! the handshake with 101 and then echoes bytes, for a legate route and for
//! a Kong service with `protocol: ws`.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{free_port, request, Gateway};

/// An upstream that upgrades a WebSocket handshake (101) and then echoes
/// every byte; any other request gets 200 `plain`. The path it saw goes
/// back in an `x-path` header of the 101.
fn websocket_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(mut stream: TcpStream) {
    let Ok(clone) = stream.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    if !head.to_ascii_lowercase().contains("upgrade: websocket") {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain");
        return;
    }
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nx-path: {path}\r\n\r\n"
    );
    if stream.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A WebSocket handshake for `path` through Envoy on `port`, then `bytes`
/// sent and read back: the response head and what came back.
fn handshake_and_echo(port: u16, path: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to Envoy");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: gateway\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        return (head, Vec::new());
    }
    s.write_all(bytes).expect("send frame bytes");
    let mut back = vec![0u8; bytes.len()];
    let got = s.read_exact(&mut back).map(|()| back).unwrap_or_default();
    (head, got)
}

#[test]
fn websocket_handshakes_pass_through_legate_and_kong_routes() {
    let mut gw = Gateway::new();
    let up = websocket_upstream();
    let listen = free_port();
    gw.write(
        "gateway.yaml",
        &format!(
            "listeners: [{{ name: public, port: {listen}, address: 127.0.0.1 }}]\n\
             services: [{{ name: socket, url: \"http://127.0.0.1:{up}\" }}]\n\
             routes: [{{ name: socket, match: {{ prefix: /socket }}, service: socket }}]\n"
        ),
    );
    // Supabase's realtime service, as its kong.yml writes it.
    gw.write(
        "kong.yaml",
        &format!(
            "_format_version: \"2.1\"\nservices:\n  - name: realtime-v1-ws\n    url: http://127.0.0.1:{up}/socket\n    \
             protocol: ws\n    routes:\n      - name: realtime-v1-ws\n        strip_path: true\n        \
             paths: [/realtime/v1/]\n"
        ),
    );
    gw.serve();
    gw.envoy("edge-1", "default");
    gw.wait("Envoy to serve", Duration::from_secs(15), || {
        request("GET", &format!("http://127.0.0.1:{listen}/socket"), &[]).ok().filter(|r| r.status == 200)
    });

    let (head, back) = handshake_and_echo(listen, "/socket/live", b"\x81\x04ping");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(back, b"\x81\x04ping", "bytes after the upgrade go both ways");
    let (head, back) = handshake_and_echo(listen, "/realtime/v1/websocket?vsn=1.0.0", b"\x81\x02hi");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("x-path: /socket/websocket?vsn=1.0.0"), "Kong's upstream path: {head}");
    assert_eq!(back, b"\x81\x02hi");
    // A plain request on the same routes is plain HTTP.
    let r = request("GET", &format!("http://127.0.0.1:{listen}/socket"), &[]).expect("plain");
    assert_eq!((r.status, r.body.as_str()), (200, "plain"));
}
