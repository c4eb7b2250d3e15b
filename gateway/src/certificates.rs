//! Certificates read from files: a TLS listener's, by the names they serve (exact name,
//! then `*.suffix`, then the first as the default), and the pair loader that listeners and
//! upstream client certificates share. Part of the compiled snapshot; `crate::tls` serves
//! them.

use crate::config::TlsConfig;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::CryptoProvider;
use std::collections::HashMap;
use std::sync::Arc;

/// One certificate file as served.
#[derive(Debug)]
pub struct LoadedCert {
    pub cert_path: String,
    pub key_path: String,
    /// The end-entity certificate's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// A listener's certificates, by the names they serve.
#[derive(Debug)]
pub struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    suffix: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    pub certs: Vec<LoadedCert>,
}

impl SniTable {
    /// Reads every certificate and key of a listener; the first error is the answer.
    pub fn load(config: &TlsConfig) -> Result<SniTable, (usize, String)> {
        let mut exact = HashMap::new();
        let mut suffix = HashMap::new();
        let mut default = None;
        let mut certs = Vec::with_capacity(config.certificates.len());
        for (i, c) in config.certificates.iter().enumerate() {
            let c = &c.value;
            let pair = load_pair(&c.cert, &c.key).map_err(|e| (i, e))?;
            let (key, not_after) = (pair.certified, pair.not_after);
            default.get_or_insert_with(|| key.clone());
            for name in &c.server_names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(s) => suffix.insert(s.to_string(), key.clone()),
                    None => exact.insert(name, key.clone()),
                };
            }
            certs.push(LoadedCert {
                cert_path: c.cert.clone(),
                key_path: c.key.clone(),
                not_after,
            });
        }
        let default =
            default.ok_or_else(|| (0, "tls needs at least one certificate".to_string()))?;
        Ok(SniTable {
            exact,
            suffix,
            default,
            certs,
        })
    }

    pub fn resolve(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return c.clone();
        }
        let mut rest = name.as_str();
        while let Some(dot) = rest.find('.') {
            if let Some(c) = self.suffix.get(&rest[dot..]) {
                return c.clone();
            }
            rest = &rest[dot + 1..];
        }
        self.default.clone()
    }
}

/// A certificate chain and its key, read from PEM files and checked to form a usable pair.
pub struct CertificatePair {
    /// The chain as DER, leaf first; every certificate parses.
    pub chain: Vec<Vec<u8>>,
    /// The private key as DER.
    pub key: Vec<u8>,
    pub certified: Arc<CertifiedKey>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads `cert` and `key` once, and checks that each certificate parses (Pingora's own
/// certificate types panic on one that does not) and that the key matches the leaf.
pub fn load_pair(cert: &str, key: &str) -> Result<CertificatePair, String> {
    pingora::tls::install_default_crypto_provider();
    let (certs, private_key) = match pingora::tls::load_certs_and_key_files(cert, key) {
        Ok(Some(pair)) => pair,
        Ok(None) => return Err(format!("no certificate or key found in `{cert}` / `{key}`")),
        Err(e) => return Err(format!("cannot load `{cert}` / `{key}`: {e}")),
    };
    let mut not_after = None;
    for der in &certs {
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("`{cert}`: a certificate does not parse: {e}"))?;
        not_after.get_or_insert(parsed.validity().not_after.timestamp());
    }
    let not_after = not_after.ok_or_else(|| format!("`{cert}` holds no certificate"))?;
    let chain = certs.iter().map(|c| c.to_vec()).collect();
    let key_der = private_key.secret_der().to_vec();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider is installed".to_string())?;
    let certified = CertifiedKey::from_der(certs, private_key, provider)
        .map(Arc::new)
        .map_err(|e| {
            format!("certificate `{cert}` and key `{key}` do not form a usable pair: {e}")
        })?;
    Ok(CertificatePair {
        chain,
        key: key_der,
        certified,
        not_after,
    })
}
