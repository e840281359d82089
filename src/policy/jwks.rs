//! Checking a JWKS document the way Envoy will read it (its jwt_verify_lib),
//! so a key set Envoy would silently fail to load is an error before
//! anything is pushed: Envoy does not reject a bad `local_jwks`, it logs a
//! warning and then refuses every token.
//!
//! The rules mirrored: a JSON object with a non-empty `keys` array; every key
//! has a `kty`; a key of a type Envoy knows (RSA, EC, oct, OKP) must be
//! complete and well-formed or the whole set is refused; keys of other types
//! are skipped; at least one key must be usable.

use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::Engine as _;
use serde_json::{Map, Value};

/// base64url, with or without padding, as jwt_verify_lib accepts it.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `text` as compact JSON (so re-indenting a file changes nothing Envoy
/// gets) with its number of usable keys, or why Envoy could not use it.
pub(crate) fn check(text: &str) -> Result<(String, usize), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("is not valid JSON ({e})"))?;
    let keys = match doc.get("keys") {
        Some(Value::Array(keys)) => keys,
        Some(_) => return Err("has a `keys` that is not a list".to_owned()),
        None if doc.is_object() => return Err("has no `keys` list (a JWKS is {\"keys\": [...]})".to_owned()),
        None => return Err("is not a JSON object with a `keys` list".to_owned()),
    };
    let mut usable = 0;
    for (i, key) in keys.iter().enumerate() {
        let Value::Object(key) = key else { return Err(format!("key {i} is not a JSON object")) };
        let kty = match key.get("kty") {
            Some(Value::String(k)) => k.as_str(),
            _ => return Err(format!("key {i} has no `kty`")),
        };
        let checked = match kty {
            "RSA" => rsa(key),
            "EC" => ec(key),
            "oct" => alg_prefix(key, "HS").and_then(|()| field(key, "k").map(drop)),
            "OKP" => okp(key),
            _ => continue, // Envoy skips key types it does not know
        };
        checked.map_err(|e| format!("key {i} ({kty}{}) {e}", kid(key)))?;
        usable += 1;
    }
    if usable == 0 {
        return Err("has no usable keys (RSA, EC, oct or OKP)".to_owned());
    }
    Ok((doc.to_string(), usable))
}

fn kid(key: &Map<String, Value>) -> String {
    key.get("kid").and_then(Value::as_str).map(|k| format!(", kid `{k}`")).unwrap_or_default()
}

/// A base64url field, decoded.
fn field(key: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = match key.get(name) {
        Some(Value::String(s)) => s,
        Some(_) => return Err(format!("has a `{name}` that is not a string")),
        None => return Err(format!("has no `{name}`")),
    };
    let bytes = B64URL.decode(text).map_err(|_| format!("has a `{name}` that is not base64url"))?;
    if bytes.is_empty() {
        return Err(format!("has an empty `{name}`"));
    }
    Ok(bytes)
}

fn alg_prefix(key: &Map<String, Value>, prefixes: &str) -> Result<(), String> {
    match key.get("alg") {
        None => Ok(()),
        Some(Value::String(alg)) if prefixes.split('|').any(|p| alg.starts_with(p)) => Ok(()),
        Some(alg) => Err(format!("has `alg` {alg}, which does not fit its key type")),
    }
}

fn rsa(key: &Map<String, Value>) -> Result<(), String> {
    alg_prefix(key, "RS|PS")?;
    field(key, "n")?;
    field(key, "e")?;
    Ok(())
}

fn ec(key: &Map<String, Value>) -> Result<(), String> {
    alg_prefix(key, "ES")?;
    let crv = match (key.get("crv").and_then(Value::as_str), key.get("alg").and_then(Value::as_str)) {
        (Some(c), _) => c,
        (None, Some("ES256")) => "P-256",
        (None, Some("ES384")) => "P-384",
        (None, Some("ES512")) => "P-521",
        (None, _) => return Err("has no `crv`".to_owned()),
    };
    let len = match crv {
        "P-256" => 32,
        "P-384" => 48,
        "P-521" => 66,
        other => return Err(format!("has `crv` `{other}`; Envoy supports P-256, P-384 and P-521")),
    };
    for coord in ["x", "y"] {
        let bytes = field(key, coord)?;
        if bytes.len() != len {
            return Err(format!("has a `{coord}` of {} bytes; {crv} needs {len}", bytes.len()));
        }
    }
    Ok(())
}

fn okp(key: &Map<String, Value>) -> Result<(), String> {
    alg_prefix(key, "EdDSA")?;
    match key.get("crv").and_then(Value::as_str) {
        Some("Ed25519") => {}
        Some(other) => return Err(format!("has `crv` `{other}`; Envoy supports Ed25519")),
        None => return Err("has no `crv`".to_owned()),
    }
    let x = field(key, "x")?;
    if x.len() != 32 {
        return Err(format!("has an `x` of {} bytes; Ed25519 needs 32", x.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn accepts_rsa_and_ec_keys() {
        let ec_x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let ec_y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        let doc = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"a","alg":"RS256","n":"{N}","e":"AQAB"}},
                {{"kty":"EC","crv":"P-256","x":"{ec_x}","y":"{ec_y}"}}]}}"#
        );
        assert_eq!(check(&doc).map(|(_, n)| n), Ok(2));
    }

    #[test]
    fn skips_unknown_key_types_but_needs_one_usable() {
        let doc = format!(r#"{{"keys":[{{"kty":"XYZ"}},{{"kty":"RSA","n":"{N}","e":"AQAB"}}]}}"#);
        assert_eq!(check(&doc).map(|(_, n)| n), Ok(1));
        assert!(check(r#"{"keys":[{"kty":"XYZ"}]}"#).unwrap_err().contains("no usable keys"));
        assert!(check(r#"{"keys":[]}"#).unwrap_err().contains("no usable keys"));
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(check("{not json").unwrap_err().contains("not valid JSON"));
        assert!(check(r#"{"kty":"RSA"}"#).unwrap_err().contains("no `keys`"));
        assert!(check(r#"{"keys":[{"n":"x"}]}"#).unwrap_err().contains("key 0 has no `kty`"));
        let e = check(r#"{"keys":[{"kty":"RSA","kid":"k1","e":"AQAB"}]}"#).unwrap_err();
        assert_eq!(e, "key 0 (RSA, kid `k1`) has no `n`");
        let e = check(r#"{"keys":[{"kty":"RSA","n":"***","e":"AQAB"}]}"#).unwrap_err();
        assert!(e.contains("not base64url"), "{e}");
        let e = check(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AQAB","y":"AQAB"}]}"#).unwrap_err();
        assert!(e.contains("P-256 needs 32"), "{e}");
        let e = check(&format!(r#"{{"keys":[{{"kty":"RSA","alg":"ES256","n":"{N}","e":"AQAB"}}]}}"#)).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
    }
}
