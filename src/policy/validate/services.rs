//! `services`: endpoints or a URL, discovery, timeouts, load balancing and
//! default `auth`.

use std::net::IpAddr;
use std::time::Duration;

use super::{auth, ratelimits, resilience};
use super::{check_name, did_you_mean, duration, header_ops, Errors, Refs};
use crate::policy::model::{Discovery, Endpoint, LoadBalancing, Service, UpstreamTls, Verify};
use crate::policy::raw;
use crate::policy::source::Origin;
use crate::policy::words::LB_POLICIES;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn check_service(
    errs: &mut Errors<'_>,
    o: &Origin,
    s: &raw::Service,
    refs: &Refs<'_, '_>,
) -> Option<Service> {
    let raw::Service {
        name,
        url,
        endpoints,
        connect_timeout,
        timeout,
        idle_timeout,
        max_request_body,
        load_balancing,
        hash_key,
        retries,
        circuit_breaker,
        outlier_detection,
        health_check,
        request_headers,
        response_headers,
        auth,
        rate_limit,
        ip_restriction,
        tls: tls_spec,
    } = s;
    let before = errs.list.len();
    let request_headers = header_ops(errs, &o.key("request_headers"), request_headers.as_ref(), true);
    let response_headers = header_ops(errs, &o.key("response_headers"), response_headers.as_ref(), false);
    let headers_ok = errs.list.len() == before;
    let mut ok = check_name(errs, o, name, "service") && headers_ok;
    let retries = resilience::retries(errs, &o.key("retries"), retries.as_ref());
    let circuit_breaker = resilience::circuit_breaker(errs, &o.key("circuit_breaker"), circuit_breaker.as_ref());
    let outlier_detection =
        resilience::outlier_detection(errs, &o.key("outlier_detection"), outlier_detection.as_ref());
    let health_check = resilience::health_check(errs, &o.key("health_check"), health_check.as_ref());
    let hash = resilience::hash_key(errs, &o.key("hash_key"), hash_key.as_ref());
    if hash_key.is_some() && load_balancing.as_deref() != Some("ring_hash") {
        errs.at(&o.key("hash_key"), "hash_key goes with `load_balancing: ring_hash`");
        ok = false;
    }
    let auth = match auth {
        None => None,
        Some(a) => {
            let resolved = auth::resolve(errs, &o.key("auth"), a, refs.providers);
            ok &= resolved.is_some();
            resolved
        }
    };
    let rate_limit = match rate_limit {
        None => None,
        Some(r) => {
            let resolved = ratelimits::resolve(errs, &o.key("rate_limit"), r, refs.limits);
            ok &= resolved.is_some();
            resolved
        }
    };
    let ip_restriction = match ip_restriction {
        None => None,
        Some(r) => {
            let checked = super::check_ip_restriction(errs, &o.key("ip_restriction"), r);
            ok &= checked.is_some();
            checked
        }
    };
    let (eps, tls) = match (url, endpoints) {
        (Some(u), None) => parse_url(errs, &o.key("url"), u, false).map_or((Vec::new(), false), |(e, t)| (vec![e], t)),
        (None, Some(list)) => {
            if list.is_empty() {
                errs.at(&o.key("endpoints"), "endpoints is empty; list at least one host:port");
            }
            let eps: Vec<_> =
                list.iter().enumerate().filter_map(|(i, e)| endpoint(errs, &o.key("endpoints").index(i), e)).collect();
            (eps, false)
        }
        (Some(_), Some(_)) => {
            errs.at(&o.key("endpoints"), "a service has either `url` or `endpoints`, not both");
            (Vec::new(), false)
        }
        (None, None) => {
            errs.at(&o.key("name"), format!("service `{name}` needs `url` or `endpoints`"));
            (Vec::new(), false)
        }
    };
    ok &= !eps.is_empty();
    let url_host = url.as_ref().and_then(|_| eps.first()).map(|e| e.host.as_str());
    let tls = match upstream_tls(errs, &o.key("tls"), tls_spec.as_ref(), url.is_some(), url_host, tls) {
        Ok(t) => t,
        Err(()) => {
            ok = false;
            None
        }
    };
    let connect = duration(errs, &o.key("connect_timeout"), connect_timeout.as_ref());
    let timeout = duration(errs, &o.key("timeout"), timeout.as_ref());
    let idle_timeout = duration(errs, &o.key("idle_timeout"), idle_timeout.as_ref());
    let max_request_body = super::byte_size(errs, &o.key("max_request_body"), max_request_body.as_ref());
    let lb = match load_balancing.as_deref() {
        None | Some("round_robin") => Some(LoadBalancing::RoundRobin),
        Some("least_request") => Some(LoadBalancing::LeastRequest),
        Some("random") => Some(LoadBalancing::Random),
        Some("ring_hash") => Some(LoadBalancing::RingHash),
        Some(other) => {
            let hint = did_you_mean(other, LB_POLICIES).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            errs.at(
                &o.key("load_balancing"),
                format!("unknown load_balancing `{other}` (one of {}){hint}", LB_POLICIES.join(", ")),
            );
            None
        }
    };
    let (Some(connect), Some(timeout), Some(idle_timeout), Some(max_request_body), Some(lb)) =
        (connect, timeout, idle_timeout, max_request_body, lb)
    else {
        return None;
    };
    let (Some(retries), Some(circuit_breaker), Some(outlier_detection), Some(health_check), Some(hash_key)) =
        (retries, circuit_breaker, outlier_detection, health_check, hash)
    else {
        return None;
    };
    if connect == Some(Duration::ZERO) {
        errs.at(&o.key("connect_timeout"), "connect_timeout must be more than 0");
        return None;
    }
    let is_ip = |h: &str| h.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
    let discovery = if eps.iter().all(|e| is_ip(&e.host)) {
        Discovery::Eds
    } else if url.is_some() {
        Discovery::LogicalDns
    } else {
        Discovery::StrictDns
    };
    ok.then(|| Service {
        name: name.clone(),
        endpoints: eps,
        discovery,
        tls,
        connect_timeout: connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        timeout,
        idle_timeout,
        max_request_body,
        load_balancing: lb,
        hash_key,
        retries,
        circuit_breaker,
        outlier_detection,
        health_check,
        request_headers,
        response_headers,
        auth,
        rate_limit,
        ip_restriction,
    })
}

/// How Envoy talks TLS to a service: `spec` is its `tls:`, `https`
/// whether its url (if `has_url`) is https, `url_host` the url's host.
/// `Ok(None)` for plain HTTP.
fn upstream_tls(
    errs: &mut Errors<'_>,
    o: &Origin,
    spec: Option<&raw::ServiceTls>,
    has_url: bool,
    url_host: Option<&str>,
    https: bool,
) -> Result<Option<UpstreamTls>, ()> {
    let Some(spec) = spec else {
        return Ok(https.then(|| UpstreamTls { name: url_host.map(str::to_owned), verify: Verify::Roots }));
    };
    if has_url && !https {
        errs.at(o, "`tls` is for https services; write the url as https://");
        return Err(());
    }
    let before = errs.list.len();
    let verify = spec.verify.unwrap_or(true);
    let name = match &spec.server_name {
        Some(n) => {
            let ip = n.parse::<IpAddr>().is_ok();
            let dns = !n.is_empty()
                && n.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
            if !ip && !dns {
                errs.at(&o.key("server_name"), format!("server_name `{n}` is not a host name or an IP address"));
            }
            Some(n.clone())
        }
        None => url_host.map(str::to_owned),
    };
    let checked = match (&spec.ca, verify) {
        (Some(_), false) => {
            errs.at(&o.key("ca"), "`ca` is not used with `verify: false`; remove one of them");
            None
        }
        (_, false) => {
            errs.warn(
                &o.key("verify"),
                "this service's certificate is not checked: anyone between Envoy and it can pose as it",
            );
            Some(Verify::Off)
        }
        (_, true) if name.is_none() => {
            errs.at(
                o,
                "give `server_name`, the name the service's certificate holds (its endpoints are addresses, \
                 not names), or `verify: false` to accept any certificate",
            );
            None
        }
        (Some(ca), true) => super::tls::read_ca(errs, &o.key("ca"), ca),
        (None, true) => Some(Verify::Roots),
    };
    match checked {
        Some(verify) if errs.list.len() == before => Ok(Some(UpstreamTls { name, verify })),
        _ => Err(()),
    }
}

/// A service URL (`allow_path` false: scheme, host and port only) or a
/// URL to fetch from.
pub(super) fn parse_url(errs: &mut Errors<'_>, o: &Origin, text: &str, allow_path: bool) -> Option<(Endpoint, bool)> {
    let u = match url::Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            errs.at(o, format!("`{text}` is not a URL ({e}); write it like http://orders:3000"));
            return None;
        }
    };
    let tls = match u.scheme() {
        "http" => false,
        "https" => true,
        other => {
            errs.at(o, format!("url scheme `{other}` is not supported; use http or https"));
            return None;
        }
    };
    if !allow_path && (!(u.path().is_empty() || u.path() == "/") || u.query().is_some()) {
        errs.at(
            o,
            format!(
                "url `{text}` has a path; a service is only scheme://host:port (use a route `rewrite` to change paths)"
            ),
        );
        return None;
    }
    let Some(host) = u.host_str() else {
        errs.at(o, format!("url `{text}` has no host"));
        return None;
    };
    let port = u.port_or_known_default().unwrap_or(80);
    if port == 0 {
        errs.at(o, format!("url `{text}` has port 0; a port is from 1 to 65535"));
        return None;
    }
    Some((Endpoint { host: host.trim_matches(['[', ']']).to_owned(), port, weight: 1 }, tls))
}

/// One of `endpoints`: `host:port`, or `{ address, weight }`.
fn endpoint(errs: &mut Errors<'_>, o: &Origin, e: &raw::EndpointSpec) -> Option<Endpoint> {
    match e {
        raw::EndpointSpec::Address(text) => parse_endpoint(errs, o, text),
        raw::EndpointSpec::Weighted(raw::WeightedEndpoint { address, weight }) => {
            let weight = super::whole_number(
                errs,
                &o.key("weight"),
                *weight,
                "weight",
                (1, u32::MAX),
                "0 would send it nothing; leave the endpoint out",
            );
            let endpoint = parse_endpoint(errs, &o.key("address"), address)?;
            Some(Endpoint { weight: weight?.unwrap_or(1), ..endpoint })
        }
    }
}

/// An endpoint's host: an IP address, or a name of letters, digits, `-`,
/// `.` and `_` (Docker names containers and services with it, and resolves
/// them).
pub(crate) fn endpoint_host_ok(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || (!host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)))
}

pub(super) fn parse_endpoint(errs: &mut Errors<'_>, o: &Origin, text: &str) -> Option<Endpoint> {
    let parsed = text.rsplit_once(':').and_then(|(h, p)| {
        let host = h.trim_matches(['[', ']']);
        let port: u16 = p.parse().ok().filter(|p| *p > 0)?;
        endpoint_host_ok(host).then(|| Endpoint { host: host.to_owned(), port, weight: 1 })
    });
    if parsed.is_none() {
        errs.at(o, format!("endpoint `{text}` is not host:port (like 10.0.0.5:3000 or orders:3000)"));
    }
    parsed
}
