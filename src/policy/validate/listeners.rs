//! `listeners`: names, addresses, hosts, fleets and port clashes.

use std::net::IpAddr;

use super::{check_name, Errors};
use crate::policy::model::{Listener, Policy};
use crate::policy::raw;
use crate::policy::source::Origin;

pub(super) fn check_listener(errs: &mut Errors<'_>, o: &Origin, l: &raw::Listener) -> Option<Listener> {
    let raw::Listener { name, port, address, hosts, fleets } = l;
    let mut ok = check_name(errs, o, name, "listener");
    if *port == 0 {
        errs.at(&o.key("port"), "port must be between 1 and 65535");
        ok = false;
    }
    let address = address.clone().unwrap_or_else(|| "0.0.0.0".to_owned());
    if address.parse::<IpAddr>().is_err() {
        errs.at(&o.key("address"), format!("address `{address}` is not an IP address (use 0.0.0.0 for all)"));
        ok = false;
    }
    let hosts = hosts.clone().unwrap_or_else(|| vec!["*".to_owned()]);
    if hosts.is_empty() {
        errs.at(&o.key("hosts"), "hosts is empty, so nothing would match; omit it to accept every host");
        ok = false;
    }
    for (i, h) in hosts.iter().enumerate() {
        let stars = h.matches('*').count();
        let wild_ok = stars == 0
            || (stars == 1
                && (h == "*" || h.starts_with("*.") || h.starts_with("*-") || h.ends_with(".*") || h.ends_with(":*")));
        if h.is_empty() || !wild_ok || h.contains(char::is_whitespace) {
            errs.at(
                &o.key("hosts").index(i),
                format!("host `{h}` is not a domain; `*` may only lead or trail (`*.example.com`)"),
            );
            ok = false;
        } else if hosts[..i].iter().any(|x| x.eq_ignore_ascii_case(h)) {
            errs.at(&o.key("hosts").index(i), format!("host `{h}` is listed twice"));
            ok = false;
        }
    }
    if let Some(f) = fleets {
        if f.is_empty() {
            errs.at(&o.key("fleets"), "fleets is empty, so no Envoy would get this listener; omit it for all");
            ok = false;
        }
    }
    ok.then(|| Listener { name: name.clone(), address, port: *port, hosts, fleets: fleets.clone() })
}

pub(super) fn check_port_clashes(errs: &mut Errors<'_>, all: &[(Origin, raw::Listener)], policy: &Policy) {
    let mut seen: Vec<(&Origin, &Listener)> = Vec::new();
    for (o, l) in all {
        let Some(valid) = policy.listeners.get(&l.name) else { continue };
        if seen.iter().any(|(_, s)| s.name == valid.name) {
            continue; // a duplicate name, reported already
        }
        let wildcard = |a: &str| a == "0.0.0.0" || a == "::";
        let fleets_overlap = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| match (a, b) {
            (Some(a), Some(b)) => a.iter().any(|x| b.contains(x)),
            _ => true,
        };
        if let Some((fo, other)) = seen.iter().find(|(_, s)| {
            s.port == valid.port
                && (s.address == valid.address || wildcard(&s.address) || wildcard(&valid.address))
                && fleets_overlap(&s.fleets, &valid.fleets)
        }) {
            let msg = format!(
                "port {} is already used by listener `{}` at {}",
                valid.port,
                other.name,
                errs.place(&fo.key("port"))
            );
            errs.at(&o.key("port"), msg);
        }
        seen.push((o, valid));
    }
}
