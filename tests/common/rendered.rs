//! A translation as reviewed golden text: Envoy's own YAML (the proto3 JSON
//! mapping), with the Mozilla roots secret (~200 KB of PEM) summed up as its
//! count and a digest so it does not drown the rest.

use legate::snapshot::View;

/// `view`'s resources, grouped by type, as YAML.
pub(crate) fn view_text(view: &View) -> String {
    let mut json = legate::render::view_json(view);
    for secret in json.get_mut("secrets").and_then(serde_json::Value::as_array_mut).into_iter().flatten() {
        if secret["name"] == "legate:mozilla-roots" {
            let ca = &mut secret["validation_context"]["trusted_ca"]["inline_string"];
            let pem = ca.as_str().unwrap_or_default();
            let digest = sha256_hex(pem.as_bytes());
            *ca =
                format!("<{} certificates, sha256 {}>", pem.matches("BEGIN CERTIFICATE").count(), &digest[..16]).into();
        }
    }
    serde_yaml::to_string(&json).expect("YAML")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
