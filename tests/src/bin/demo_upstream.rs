//! Serves witness upstreams for the demo config: `portico-demo-upstream NAME=ADDR ...`, where
//! ADDR is `IP:PORT`, or `fd:N` for a listening socket handed over as descriptor N.

use portico_e2e::Witness;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: portico-demo-upstream NAME=IP:PORT [NAME=IP:PORT ...]");
        std::process::exit(2);
    }
    let mut servers = Vec::new();
    for arg in args {
        let Some((name, addr)) = arg.split_once('=') else {
            eprintln!("expected NAME=IP:PORT, got `{arg}`");
            std::process::exit(2);
        };
        let started = match addr.strip_prefix("fd:").map(str::parse::<i32>) {
            Some(Ok(fd)) => {
                use std::os::fd::FromRawFd;
                // SAFETY: the parent handed this descriptor over for this process to own.
                let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
                Witness::start_with(listener, name)
            }
            Some(Err(_)) => {
                eprintln!("`{addr}` is not fd:N");
                std::process::exit(2);
            }
            None => match addr.parse() {
                Ok(addr) => Witness::start_on(addr, name).await,
                Err(_) => {
                    eprintln!("`{addr}` is not an IP:PORT address");
                    std::process::exit(2);
                }
            },
        };
        match started {
            Ok(w) => {
                eprintln!("demo upstream `{name}` on http://{}", w.addr);
                servers.push(w);
            }
            Err(e) => {
                eprintln!("cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
