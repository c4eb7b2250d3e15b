//! Downstream TLS: each handshake gets the certificate its SNI name picks from the live
//! snapshot's table (`crate::certificates`).
//!
//! Certificates are part of the compiled snapshot, so they rotate the way everything else
//! reloads: a reload (SIGHUP, `POST /reload`, a config change) or a change of a certificate
//! or key file on disk (cert-manager and ACME clients rewrite them) compiles a new snapshot,
//! and every handshake from then on looks its listener's certificates up in the live one.
//! Established connections keep the certificate they were made with.

use crate::certificates::SniTable;
use crate::config::ListenerConfig;
use crate::snapshot::SnapshotStore;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use std::sync::Arc;

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
