//! Members that come from the Redis registry, before they join a pool, and the last known
//! set of each service, which a pool built by a reload starts with instead of empty.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// A registry instance resolved to an address, ready to become a member.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub id: String,
    pub address: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub tls: bool,
}

/// The last known instances of each service (written by discovery, read by compilation).
#[derive(Default)]
pub struct DiscoveryCache {
    services: Mutex<HashMap<String, Vec<Discovered>>>,
}

impl DiscoveryCache {
    pub fn get(&self, service: &str) -> Option<Vec<Discovered>> {
        self.services.lock().ok()?.get(service).cloned()
    }

    pub fn put(&self, service: &str, found: Vec<Discovered>) {
        if let Ok(mut s) = self.services.lock() {
            s.insert(service.to_string(), found);
        }
    }
}
