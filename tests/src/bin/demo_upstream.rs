//! Serves witness upstreams for the demo config: `portico-demo-upstream NAME=ADDR ...`.

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
        let Ok(addr) = addr.parse() else {
            eprintln!("`{addr}` is not an IP:PORT address");
            std::process::exit(2);
        };
        match Witness::start_on(addr, name).await {
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
