//! Resources as Envoy's own JSON (proto3 JSON mapping, snake_case field
//! names as in Envoy's docs and config dumps, `@type` on every `Any`).

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Map, Value};

use crate::descriptors;
use crate::snapshot::{Kind, View};

/// Every resource of a view, grouped by type (`clusters`, `endpoints`,
/// `listeners`, `routes`), each list in name order.
#[must_use]
pub fn view_json(view: &View) -> Value {
    let mut out = Map::new();
    for kind in Kind::ALL {
        let list = view
            .resources(kind)
            .values()
            .map(|r| {
                let mut v = any_json(&r.any.type_url, &r.any.value);
                redact(&mut v);
                v
            })
            .collect();
        out.insert(kind.plural().to_owned(), Value::Array(list));
    }
    Value::Object(out)
}

/// One encoded message as JSON, with its `@type`.
#[must_use]
pub fn any_json(type_url: &str, bytes: &[u8]) -> Value {
    let Some(md) = descriptors::message(type_url) else {
        return serde_json::json!({ "@type": type_url, "error": "unknown type" });
    };
    let opts = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(true);
    let body = DynamicMessage::decode(md, bytes)
        .map_err(|e| e.to_string())
        .and_then(|m| m.serialize_with_options(serde_json::value::Serializer, &opts).map_err(|e| e.to_string()));
    let mut obj = Map::new();
    obj.insert("@type".into(), Value::String(type_url.to_owned()));
    match body {
        Ok(Value::Object(fields)) => obj.extend(fields),
        Ok(other) => {
            obj.insert("value".into(), other);
        }
        Err(e) => {
            obj.insert("error".into(), Value::String(e));
        }
    }
    Value::Object(obj)
}

/// What replaces a private key in anything legate shows (SPEC §4: secrets
/// never appear in an answer or a log).
pub const REDACTED: &str = "[redacted]";

/// Blank out the private key of a rendered SDS secret.
fn redact(v: &mut Value) {
    if let Some(key) = v.get_mut("tls_certificate").and_then(|t| t.get_mut("private_key")) {
        *key = serde_json::json!({ "inline_string": REDACTED });
    }
}

/// `render --format yaml`.
#[must_use]
pub fn view_yaml(view: &View) -> String {
    serde_yaml::to_string(&view_json(view)).unwrap_or_default()
}
