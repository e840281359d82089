//! `ip_restriction` → Envoy's RBAC filter (right after CORS, before
//! authentication: a refused address costs no token check), with one
//! ALLOW policy per restricted route: the client address (`remote_ip`,
//! the connection's peer as legate configures Envoy) in `allow` (any, when
//! empty) and not in `deny`. A refusal is a 403 with the JSON error body.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac::Action, Permission, Policy as RbacPolicy, Principal, Rbac as RbacRules,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};

use super::any;
use crate::policy::{Cidr, IpRestriction, Policy, Route};

const FILTER: &str = "envoy.filters.http.rbac";

/// The RBAC filter, enforcing nothing itself, when a route on `listener`
/// has an `ip_restriction`.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    if !super::listener_needs(policy, listener, |r| r.ip_restriction.is_some()) {
        return Vec::new();
    }
    vec![super::http_filter(FILTER, any(&Rbac::default()))]
}

/// The route's RBAC policy.
pub(super) fn per_route(route: &Route) -> Option<(String, Any)> {
    let IpRestriction { allow, deny } = route.ip_restriction.as_ref()?;
    let ids = |list: &[Cidr]| -> Principal {
        let one = |c: &Cidr| Principal {
            identifier: Some(principal::Identifier::RemoteIp(CidrRange {
                address_prefix: c.address.to_string(),
                prefix_len: Some(UInt32Value { value: c.prefix_len }),
            })),
        };
        Principal {
            identifier: Some(principal::Identifier::OrIds(principal::Set { ids: list.iter().map(one).collect() })),
        }
    };
    let mut all = Vec::new();
    all.push(if allow.is_empty() {
        Principal { identifier: Some(principal::Identifier::Any(true)) }
    } else {
        ids(allow)
    });
    if !deny.is_empty() {
        all.push(Principal { identifier: Some(principal::Identifier::NotId(Box::new(ids(deny)))) });
    }
    let policy = RbacPolicy {
        permissions: vec![Permission { rule: Some(permission::Rule::Any(true)) }],
        principals: vec![Principal { identifier: Some(principal::Identifier::AndIds(principal::Set { ids: all })) }],
        ..Default::default()
    };
    let rules = RbacRules {
        action: Action::Allow.into(),
        policies: [("ip_restriction".to_owned(), policy)].into_iter().collect(),
        ..Default::default()
    };
    let per_route = RbacPerRoute { rbac: Some(Rbac { rules: Some(rules), ..Default::default() }) };
    Some((FILTER.to_owned(), any(&per_route)))
}
