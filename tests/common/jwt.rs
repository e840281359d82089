//! Signing keys, JWKS documents and tokens for auth tests and benchmarks.
//!
//! RSA keys are fixtures (`tests/fixtures/jwt/*.pem`, test-only keys made
//! with `openssl genpkey`), because generating RSA keys is slow; EC keys are
//! made fresh for every run. Tokens are always signed here, in the test.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// A private key with its public JWK.
pub(crate) struct Key {
    /// The `kid` its tokens and its JWK carry.
    pub(crate) kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public key as a JWK.
    pub(crate) jwk: Value,
}

impl Key {
    /// The RSA fixture `tests/fixtures/jwt/<name>.pem`, signing RS256.
    ///
    /// # Panics
    /// When the fixture is missing or not a PKCS#8 RSA key.
    pub(crate) fn rsa(name: &str, kid: &str) -> Key {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(format!("{name}.pem"));
        let pem = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).expect("PEM body is base64");
        let pair = RsaKeyPair::from_pkcs8(&der).expect("a PKCS#8 RSA key");
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let jwk = json!({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": b64(&public.n),
            "e": b64(&public.e),
        });
        Key {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("an RSA PEM key"),
            jwk,
        }
    }

    /// A new P-256 key, signing ES256.
    ///
    /// # Panics
    /// Only if the system has no randomness.
    pub(crate) fn ec(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate EC key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("EC key");
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let jwk = json!({
            "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Key { kid: kid.to_owned(), alg: Algorithm::ES256, encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    /// A token with these claims, signed by this key, with its `kid`.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// A token signed by this key but claiming to be from key `kid`.
    pub(crate) fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let header = Header { kid: Some(kid.to_owned()), ..Header::new(self.alg) };
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign token")
    }
}

/// A JWKS document holding these keys' public halves.
pub(crate) fn jwks(keys: &[&Key]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs())
        .expect("seconds fit")
}

/// Claims valid for ten minutes from `iss` for audience `aud`, for user `sub`.
pub(crate) fn claims(iss: &str, aud: &str, sub: &str) -> Value {
    let t = now();
    json!({
        "iss": iss, "aud": aud, "sub": sub,
        "role": "admin", "email": format!("{sub}@example.com"),
        "iat": t, "nbf": t - 5, "exp": t + 600,
    })
}

/// An unsigned token (`alg: none`) with these claims.
pub(crate) fn unsigned(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", part(&json!({"alg": "none", "typ": "JWT"})), part(claims))
}
