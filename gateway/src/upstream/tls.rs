//! A pool's TLS credentials: the CA that signs its members' certificates (a private CA) and
//! the client certificate it presents to members that ask for one (mTLS). Read from their
//! files when the pool is built; a change of the files changes the pool's fingerprint, so a
//! reload (which the file watch triggers) builds the pool again with the new files.

use super::PoolError;
use crate::config::UpstreamTls;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct TlsCredentials {
    ca: Option<Arc<[WrappedX509]>>,
    client: Option<Arc<CertKey>>,
}

impl TlsCredentials {
    /// Reads what `tls` names; `None` when it names no file.
    pub fn load(tls: &UpstreamTls) -> Result<Option<Arc<TlsCredentials>>, PoolError> {
        let ca = match &tls.ca_file {
            Some(path) => Some(read_ca(path).map_err(|m| PoolError::at("tls.ca_file", m))?),
            None => None,
        };
        let client = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                Some(read_client(cert, key).map_err(|m| PoolError::at("tls.client_cert", m))?)
            }
            (None, None) => None,
            (Some(_), None) => return Err(PoolError::at("tls.client_cert", "needs `client_key`")),
            (None, Some(_)) => return Err(PoolError::at("tls.client_key", "needs `client_cert`")),
        };
        Ok((ca.is_some() || client.is_some()).then(|| Arc::new(TlsCredentials { ca, client })))
    }

    pub fn apply(&self, peer: &mut HttpPeer) {
        peer.options.ca = self.ca.clone();
        peer.client_cert_key = self.client.clone();
    }
}

/// The CA certificates of a PEM file; every one must parse (Pingora's types would panic on
/// one that does not).
fn read_ca(path: &str) -> Result<Arc<[WrappedX509]>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let pem = pem.map_err(|e| format!("`{path}`: not PEM: {e}"))?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        x509_parser::parse_x509_certificate(&pem.contents)
            .map_err(|e| format!("`{path}`: a certificate does not parse: {e}"))?;
        out.push(WrappedX509::new(pem.contents, parse_x509));
    }
    if out.is_empty() {
        return Err(format!("`{path}` holds no certificate"));
    }
    Ok(out.into())
}

fn read_client(cert: &str, key: &str) -> Result<Arc<CertKey>, String> {
    let pair = crate::certificates::load_pair(cert, key)?;
    Ok(Arc::new(CertKey::new(pair.chain, pair.key)))
}

/// Modification time and size of each file, for the pool's fingerprint.
pub fn file_stamps(tls: &UpstreamTls) -> String {
    tls.files()
        .map(|p| {
            let m = std::fs::metadata(p).ok();
            let modified = m
                .as_ref()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{p}:{modified}:{}", m.map_or(0, |m| m.len()))
        })
        .collect::<Vec<_>>()
        .join(",")
}
