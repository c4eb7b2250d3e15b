//! Downstream TLS: certificates chosen by SNI (exact name, then `*.suffix`, then the first
//! certificate as the default).
//!
//! Certificates are part of the compiled snapshot, so they rotate the way everything else
//! reloads: a reload (SIGHUP, `POST /reload`, a config change) or a change of a certificate
//! or key file on disk (cert-manager and ACME clients rewrite them) compiles a new snapshot,
//! and every handshake from then on looks its listener's certificates up in the live one.
//! Established connections keep the certificate they were made with.

use crate::config::{ListenerConfig, TlsConfig};
use crate::snapshot::SnapshotStore;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
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
            let (key, not_after) = load_certified_key(&c.cert, &c.key).map_err(|e| (i, e))?;
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

    fn resolve(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
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

/// Whether `cert` and `key` load and form a usable pair.
pub fn check_pair(cert: &str, key: &str) -> Result<(), String> {
    load_certified_key(cert, key).map(drop)
}

fn load_certified_key(cert: &str, key: &str) -> Result<(Arc<CertifiedKey>, i64), String> {
    pingora::tls::install_default_crypto_provider();
    let (certs, private_key) = match pingora::tls::load_certs_and_key_files(cert, key) {
        Ok(Some(pair)) => pair,
        Ok(None) => return Err(format!("no certificate or key found in `{cert}` / `{key}`")),
        Err(e) => return Err(format!("cannot load `{cert}` / `{key}`: {e}")),
    };
    let not_after = certs
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, parsed)| parsed.validity().not_after.timestamp())
        .ok_or_else(|| format!("`{cert}`: the first certificate cannot be parsed"))?;
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider is installed".to_string())?;
    let key = CertifiedKey::from_der(certs, private_key, provider)
        .map(Arc::new)
        .map_err(|e| {
            format!("certificate `{cert}` and key `{key}` do not form a usable pair: {e}")
        })?;
    Ok((key, not_after))
}

/// The certificate resolver of one listener: the live snapshot's table for its address, or
/// the table it started with if a reload dropped the listener (that takes a restart).
struct LiveCertificates {
    address: String,
    store: SnapshotStore,
    started_with: Arc<SniTable>,
}

impl std::fmt::Debug for LiveCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCertificates")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for LiveCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.store.load();
        let table = snapshot
            .tls
            .get(&self.address)
            .unwrap_or(&self.started_with);
        Some(table.resolve(hello.server_name()))
    }
}

/// Pingora's TLS settings for a listener whose certificates follow the live snapshot.
pub fn settings(listener: &ListenerConfig, store: &SnapshotStore) -> Result<TlsSettings, String> {
    let address = listener.address.value.clone();
    let tls = listener
        .tls
        .as_ref()
        .ok_or_else(|| "the listener has no tls section".to_string())?;
    let started_with = match store.load().tls.get(&address) {
        Some(table) => table.clone(),
        None => Arc::new(SniTable::load(tls).map_err(|(_, e)| e)?),
    };
    let mut settings =
        TlsSettings::with_callbacks(Box::new(NoCallbacks)).map_err(|e| format!("tls: {e}"))?;
    settings.set_cert_resolver(Arc::new(LiveCertificates {
        address,
        store: store.clone(),
        started_with,
    }));
    if tls.http2 {
        settings.enable_h2();
    }
    Ok(settings)
}

struct NoCallbacks;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}
