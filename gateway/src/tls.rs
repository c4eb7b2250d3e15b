//! Downstream TLS: certificates chosen by SNI (exact name, then `*.suffix`, then the first
//! certificate as the default).

use crate::config::TlsConfig;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use std::collections::HashMap;
use std::sync::Arc;

pub fn load_certified_key(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    pingora::tls::install_default_crypto_provider();
    let (certs, private_key) = match pingora::tls::load_certs_and_key_files(cert, key) {
        Ok(Some(pair)) => pair,
        Ok(None) => return Err(format!("no certificate or key found in `{cert}` / `{key}`")),
        Err(e) => return Err(format!("cannot load `{cert}` / `{key}`: {e}")),
    };
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider is installed".to_string())?;
    CertifiedKey::from_der(certs, private_key, provider)
        .map(Arc::new)
        .map_err(|e| format!("certificate `{cert}` and key `{key}` do not form a usable pair: {e}"))
}

#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    suffix: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        let mut rest = name.as_str();
        while let Some(dot) = rest.find('.') {
            if let Some(c) = self.suffix.get(&rest[dot..]) {
                return Some(c.clone());
            }
            rest = &rest[dot + 1..];
        }
        Some(self.default.clone())
    }
}

pub fn settings(config: &TlsConfig) -> Result<TlsSettings, String> {
    let mut exact = HashMap::new();
    let mut suffix = HashMap::new();
    let mut default = None;
    for c in &config.certificates {
        let key = load_certified_key(&c.value.cert, &c.value.key)?;
        default.get_or_insert_with(|| key.clone());
        for name in &c.value.server_names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix('*') {
                Some(s) => suffix.insert(s.to_string(), key.clone()),
                None => exact.insert(name, key.clone()),
            };
        }
    }
    let default = default.ok_or_else(|| "tls needs at least one certificate".to_string())?;
    let mut settings =
        TlsSettings::with_callbacks(Box::new(NoCallbacks)).map_err(|e| format!("tls: {e}"))?;
    settings.set_cert_resolver(Arc::new(SniResolver {
        exact,
        suffix,
        default,
    }));
    if config.http2 {
        settings.enable_h2();
    }
    Ok(settings)
}

struct NoCallbacks;

#[async_trait::async_trait]
impl pingora::listeners::TlsAccept for NoCallbacks {}
