//! `listeners`: names, addresses, hosts, fleets, TLS, the redirect port,
//! and port clashes.

use std::net::IpAddr;

use super::tls::check_tls;
use super::{check_name, Errors};
use crate::policy::model::{Listener, Policy};
use crate::policy::raw;
use crate::policy::source::Origin;

pub(super) fn check_listener(errs: &mut Errors<'_>, o: &Origin, l: &raw::Listener) -> Option<Listener> {
    let raw::Listener { name, port, address, hosts, fleets, tls, http_redirect_port } = l;
    let before = errs.list.len();
    check_name(errs, o, name, "listener");
    if *port == 0 {
        errs.at(&o.key("port"), "port must be between 1 and 65535");
    }
    let address = address.clone().unwrap_or_else(|| "0.0.0.0".to_owned());
    if address.parse::<IpAddr>().is_err() {
        errs.at(&o.key("address"), format!("address `{address}` is not an IP address (use 0.0.0.0 for all)"));
    }
    let hosts = hosts.clone().unwrap_or_else(|| vec!["*".to_owned()]);
    if hosts.is_empty() {
        errs.at(&o.key("hosts"), "hosts is empty, so nothing would match; omit it to accept every host");
    }
    for (i, h) in hosts.iter().enumerate() {
        check_host(errs, &o.key("hosts").index(i), h, &hosts[..i]);
    }
    if fleets.as_ref().is_some_and(Vec::is_empty) {
        errs.at(&o.key("fleets"), "fleets is empty, so no Envoy would get this listener; omit it for all");
    }
    let tls = tls.as_ref().and_then(|t| check_tls(errs, &o.key("tls"), name, t));
    match http_redirect_port {
        Some(_) if l.tls.is_none() => {
            errs.at(&o.key("http_redirect_port"), "http_redirect_port redirects to https, so the listener needs `tls`");
        }
        Some(p) if *p == 0 || p == port => {
            errs.at(
                &o.key("http_redirect_port"),
                format!("http_redirect_port {p} must be a port of its own (1-65535)"),
            );
        }
        _ => {}
    }
    if errs.list.len() > before {
        return None;
    }
    Some(Listener {
        name: name.clone(),
        address,
        port: *port,
        hosts,
        fleets: fleets.clone(),
        tls,
        http_redirect_port: *http_redirect_port,
    })
}

/// A virtual-host or SNI name: `*` may only lead or trail; no repeats of `earlier`.
pub(super) fn check_host(errs: &mut Errors<'_>, at: &Origin, h: &str, earlier: &[String]) {
    let stars = h.matches('*').count();
    let wild_ok = stars == 0
        || (stars == 1
            && (h == "*" || h.starts_with("*.") || h.starts_with("*-") || h.ends_with(".*") || h.ends_with(":*")));
    if h.is_empty() || !wild_ok || h.contains(char::is_whitespace) {
        errs.at(at, format!("host `{h}` is not a domain; `*` may only lead or trail (`*.example.com`)"));
    } else if earlier.iter().any(|x| x.eq_ignore_ascii_case(h)) {
        errs.at(at, format!("host `{h}` is listed twice"));
    }
}

/// Two listeners (or redirect ports) clash when they share a port, their
/// addresses overlap and their fleets overlap.
pub(super) fn check_port_clashes(errs: &mut Errors<'_>, all: &[(Origin, raw::Listener)], policy: &Policy) {
    let mut seen: Vec<(Origin, &Listener, u16)> = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for (o, l) in all {
        let Some(valid) = policy.listeners.get(&l.name) else { continue };
        if done.contains(&valid.name.as_str()) {
            continue; // a duplicate name, reported already
        }
        done.push(&valid.name);
        let ports = std::iter::once((o.key("port"), valid.port))
            .chain(valid.http_redirect_port.map(|p| (o.key("http_redirect_port"), p)));
        for (at, port) in ports {
            let wildcard = |a: &str| a == "0.0.0.0" || a == "::";
            let fleets_overlap = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| match (a, b) {
                (Some(a), Some(b)) => a.iter().any(|x| b.contains(x)),
                _ => true,
            };
            if let Some((fo, other, _)) = seen.iter().find(|(_, s, p)| {
                *p == port
                    && (s.address == valid.address || wildcard(&s.address) || wildcard(&valid.address))
                    && fleets_overlap(&s.fleets, &valid.fleets)
            }) {
                let msg = format!("port {port} is already used by listener `{}` at {}", other.name, errs.place(fo));
                errs.at(&at, msg);
            }
            seen.push((at, valid, port));
        }
    }
}
