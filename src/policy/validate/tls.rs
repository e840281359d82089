//! `listeners[].tls`: certificate and key files, read, parsed and matched
//! before anything is pushed; protocol settings.
//!
//! Key material never appears in a message: errors name the file and what
//! is wrong with it, never its contents.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::listeners::check_host;
use super::Errors;
use crate::policy::model::{Certificate, ListenerTls, TlsVersion, Verify};
use crate::policy::raw;
use crate::policy::source::Origin;

use crate::policy::words::{ALPN, TLS_VERSIONS};

/// One certificate as written, wherever it was written.
struct CertEntry<'a> {
    at: Origin,
    cert: Option<&'a String>,
    key: Option<&'a String>,
    hosts: Vec<String>,
}

pub(super) fn check_tls(
    errs: &mut Errors<'_>,
    o: &Origin,
    listener: &str,
    t: &raw::ListenerTls,
) -> Option<ListenerTls> {
    let raw::ListenerTls { cert, key, certificates, min_version, alpn } = t;
    let before = errs.list.len();
    // One certificate, or several: the same shape either way.
    let entries: Vec<CertEntry<'_>> = match (cert, key, certificates) {
        (_, _, None) => vec![CertEntry { at: o.clone(), cert: cert.as_ref(), key: key.as_ref(), hosts: Vec::new() }],
        (None, None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(i, c)| CertEntry {
                at: o.key("certificates").index(i),
                cert: c.cert.as_ref(),
                key: c.key.as_ref(),
                hosts: c.hosts.clone().unwrap_or_default(),
            })
            .collect(),
        _ => {
            errs.at(o, "tls has either `cert` and `key`, or `certificates`, not both");
            return None;
        }
    };
    if entries.is_empty() {
        errs.at(&o.key("certificates"), "certificates is empty; list at least one { cert, key }");
    }
    let mut out = Vec::new();
    let mut default_at: Option<Origin> = None;
    for (i, CertEntry { at, cert, key, hosts }) in entries.into_iter().enumerate() {
        let (Some(cert), Some(key)) = (cert, key) else {
            errs.at(&at, "a certificate needs both `cert` (PEM chain) and `key` (PEM private key) files");
            continue;
        };
        for (j, h) in hosts.iter().enumerate() {
            check_host(errs, &at.key("hosts").index(j), h, &hosts[..j]);
        }
        if hosts.is_empty() {
            if let Some(first) = &default_at {
                let msg = format!("two certificates without `hosts`; the other is at {}", errs.place(first));
                errs.at(&at, msg);
            }
            default_at = Some(at.clone());
        }
        if let Some((cert_pem, key_pem)) = load_pair(errs, &at, cert, key) {
            out.push(Certificate { secret: format!("{listener}/{i}"), hosts, cert_pem, key_pem });
        }
    }
    let min_version = match min_version.as_deref() {
        None | Some("1.2") => Some(TlsVersion::V1_2),
        Some("1.3") => Some(TlsVersion::V1_3),
        Some(other) => {
            errs.at(
                &o.key("min_version"),
                format!(
                    "min_version `{other}` is not supported; use {}",
                    TLS_VERSIONS.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(" or ")
                ),
            );
            None
        }
    };
    let alpn = alpn.clone().unwrap_or_else(|| ALPN.iter().map(|p| (*p).to_owned()).collect());
    for (i, p) in alpn.iter().enumerate() {
        if !ALPN.contains(&p.as_str()) {
            errs.at(&o.key("alpn").index(i), format!("ALPN protocol `{p}` is not supported; use h2 and/or http/1.1"));
        }
    }
    if errs.list.len() > before {
        return None;
    }
    Some(ListenerTls { certificates: out, min_version: min_version?, alpn })
}

/// Read and check a certificate and key pair (paths relative to the policy
/// file at `at`). Warns about an expired certificate.
fn load_pair(errs: &mut Errors<'_>, at: &Origin, cert: &str, key: &str) -> Option<(String, String)> {
    let dir = errs.files[at.file].dir.clone();
    let (cert_path, key_path) = (dir.join(cert), dir.join(key));
    errs.read_files.extend([cert_path.clone(), key_path.clone()]);
    let (cert_at, key_at) = (at.key("cert"), at.key("key"));
    let cert_pem = read(errs, &cert_path, &cert_at, "certificate");
    let key_pem = read(errs, &key_path, &key_at, "key");
    let (cert_pem, key_pem) = (cert_pem?, key_pem?);

    let chain = certificates(errs, &cert_at, &cert_path, &cert_pem)?;
    let leaf = chain.first()?;
    let parsed = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, c)) => c,
        Err(e) => {
            errs.at(&cert_at, format!("the first certificate in `{}` cannot be parsed: {e}", cert_path.display()));
            return None;
        }
    };
    // Never echo key material: only say what kind of problem it is.
    let Ok(private) = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) else {
        errs.at(&key_at, format!("`{}` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", key_path.display()));
        return None;
    };
    let Ok(signer) = rustls::crypto::ring::sign::any_supported_type(&private) else {
        errs.at(
            &key_at,
            format!("the private key in `{}` is not an RSA, ECDSA or Ed25519 key Envoy can use", key_path.display()),
        );
        return None;
    };
    let matches = signer.public_key().is_some_and(|spki| spki.as_ref() == parsed.tbs_certificate.subject_pki.raw);
    if !matches {
        errs.at(
            &key_at,
            format!(
                "the key in `{}` does not belong to the certificate in `{}`",
                key_path.display(),
                cert_path.display()
            ),
        );
        return None;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let not_after = parsed.validity().not_after;
    if i64::try_from(now).is_ok_and(|n| not_after.timestamp() < n) {
        errs.warn(
            &cert_at,
            format!("the certificate in `{}` expired on {not_after}; clients will refuse it", cert_path.display()),
        );
    }
    Some((cert_pem, key_pem))
}

/// The text of the `what` file `path` (named at `at`), or an error there.
fn read(errs: &mut Errors<'_>, path: &Path, at: &Origin, what: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            errs.at(at, format!("cannot read the {what} file `{}`: {e}", path.display()));
            None
        }
    }
}

/// The PEM certificates in `pem` (the text of `path`, named at `at`), or an
/// error there when it holds none.
fn certificates<'a>(errs: &mut Errors<'_>, at: &Origin, path: &Path, pem: &'a str) -> Option<Vec<CertificateDer<'a>>> {
    let certs: Vec<CertificateDer<'a>> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).collect();
    if certs.is_empty() {
        errs.at(at, format!("`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()));
        return None;
    }
    Some(certs)
}

/// Read and check the CA file `file` (relative to the policy file at `o`).
pub(super) fn read_ca(errs: &mut Errors<'_>, o: &Origin, file: &str) -> Option<Verify> {
    let source = &errs.files[o.file];
    let path = source.dir.join(file);
    // Named after the file, so that replacing its contents changes only
    // the secret, not the clusters that refer to it.
    let rel = Path::new(&source.rel).parent().unwrap_or_else(|| Path::new("")).join(file);
    let secret = format!("ca:{}", rel.display());
    errs.read_files.push(path.clone());
    let pem = read(errs, &path, o, "CA")?;
    let certs = certificates(errs, o, &path, &pem)?;
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c) {
            errs.at(o, format!("certificate {} in `{}` cannot be parsed: {e}", i + 1, path.display()));
            return None;
        }
    }
    Some(Verify::Ca { secret, pem })
}
