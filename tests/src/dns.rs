//! A test DNS server: answers A queries for the names it is told, with a short TTL, over
//! UDP on a free loopback port; the test changes the answers while the gateway runs, or
//! makes the server fail (SERVFAIL) to see the last good addresses kept.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

#[derive(Default)]
struct Zone {
    names: Mutex<HashMap<String, Vec<Ipv4Addr>>>,
    failing: AtomicBool,
    queries: AtomicUsize,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    task: tokio::task::JoinHandle<()>,
}

/// The TTL of every answer: names are looked up again about every second.
pub const TTL: u32 = 1;

impl DnsServer {
    pub async fn start() -> std::io::Result<DnsServer> {
        let socket = UdpSocket::bind(("127.0.0.1", 0)).await?;
        let addr = socket.local_addr()?;
        let zone = Arc::new(Zone::default());
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(answer) = answer(&z, &buf[..n]) {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Ok(DnsServer { addr, zone, task })
    }

    /// What `name` resolves to from now on (A records).
    pub fn set(&self, name: &str, addresses: &[Ipv4Addr]) {
        if let Ok(mut names) = self.zone.names.lock() {
            names.insert(name.trim_end_matches('.').to_string(), addresses.to_vec());
        }
    }

    /// Answer every query with SERVFAIL (or stop doing so).
    pub fn fail(&self, failing: bool) {
        self.zone.failing.store(failing, Ordering::SeqCst);
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.zone.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(zone: &Zone, packet: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
    zone.queries.fetch_add(1, Ordering::SeqCst);
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_queries(query.queries.clone());
    if zone.failing.load(Ordering::SeqCst) {
        reply.metadata.response_code = ResponseCode::ServFail;
        return reply.to_vec().ok();
    }
    let names = zone.names.lock().ok()?;
    for q in &query.queries {
        let name = q.name().to_ascii();
        let known = names.get(name.trim_end_matches('.'));
        match (known, q.query_type()) {
            (Some(addresses), RecordType::A) => {
                for a in addresses {
                    reply.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(*a))));
                }
            }
            // A known name without that record type: an empty answer.
            (Some(_), _) => {}
            (None, _) => reply.metadata.response_code = ResponseCode::NXDomain,
        }
    }
    reply.to_vec().ok()
}
