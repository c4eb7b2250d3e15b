//! Open-loop load at a fixed request rate, for latency at a given load: what `wrk` cannot
//! measure. `wrk` sends a connection's next request only once the last one is answered, so a
//! slow response also delays the requests queued behind it and hides their wait (coordinated
//! omission); its latencies describe a proxy at saturation.
//!
//! `portico-rate-load HOST:PORT PATH RATE SECONDS [CONNECTIONS [HEADER...]]` prints one JSON
//! line; each HEADER (`Name: value`) is sent with every request.
//!
//! Every connection (HTTP/1.1 keep-alive, one request at a time) has its own schedule of
//! RATE/CONNECTIONS requests per second, the connections staggered evenly. A request's latency
//! counts from when it was due if the connection was still busy then, so waiting behind a
//! slow response is counted; otherwise from when it was sent, so the lateness of tokio's
//! millisecond timer is not.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    path: String,
    rate: f64,
    seconds: f64,
    connections: u32,
    headers: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.len() < 4 {
        return Err(
            "usage: portico-rate-load HOST:PORT PATH RATE SECONDS [CONNECTIONS [HEADER...]]".into(),
        );
    }
    let headers: Vec<String> = argv.iter().skip(5).cloned().collect();
    if let Some(bad) = headers
        .iter()
        .find(|h| !h.contains(':') || h.contains(['\r', '\n']))
    {
        return Err(format!(
            "HEADER must be one `Name: value` line, not {bad:?}"
        ));
    }
    let number = |s: &str, what: &str| -> Result<f64, String> {
        s.parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0)
            .ok_or_else(|| format!("{what} must be a positive number, not {s:?}"))
    };
    Ok(Args {
        addr: argv[0]
            .parse()
            .map_err(|e| format!("address {:?}: {e}", argv[0]))?,
        path: argv[1].clone(),
        rate: number(&argv[2], "RATE")?,
        seconds: number(&argv[3], "SECONDS")?,
        connections: match argv.get(4) {
            Some(c) => c
                .parse()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| format!("CONNECTIONS must be a positive integer, not {c:?}"))?,
            None => 50,
        },
        headers,
    })
}

/// What one connection measured: latencies in microseconds, and failed requests.
#[derive(Default)]
struct Measured {
    latencies_us: Vec<u32>,
    errors: u64,
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one response with a Content-Length body and returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<u16> {
    buf.clear();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head over 64 KiB"));
        }
        read_more(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(io::Error::other)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status line"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| io::Error::other("response without Content-Length"))?;
    while buf.len() < head_end + length {
        read_more(stream, buf).await?;
    }
    Ok(status)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(16 * 1024);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

async fn drive(
    addr: SocketAddr,
    request: Arc<[u8]>,
    mut due: Instant,
    interval: Duration,
    end: Instant,
) -> Measured {
    let mut measured = Measured::default();
    let mut stream = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut free_since = Instant::now();
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        let start = if free_since > due { due } else { sent };
        let outcome = async {
            let s = match stream.take() {
                Some(s) => s,
                None => connect(addr).await?,
            };
            let s = stream.insert(s);
            s.write_all(&request).await?;
            read_response(s, &mut buf).await
        }
        .await;
        let done = Instant::now();
        match outcome {
            Ok(status) if (200..400).contains(&status) => {
                let us = (done - start).as_micros();
                measured
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(_) => measured.errors += 1,
            Err(_) => {
                measured.errors += 1;
                stream = None;
            }
        }
        free_since = done;
        due += interval;
    }
    measured
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("portico-rate-load: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portico-rate-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let extra: String = args.headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: portico-rate-load\r\n{extra}\r\n",
        args.path, args.addr
    )
    .into_bytes()
    .into();
    let interval = Duration::from_secs_f64(f64::from(args.connections) / args.rate);
    let measured: Vec<Measured> = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let end = start + Duration::from_secs_f64(args.seconds);
        let tasks: Vec<_> = (0..args.connections)
            .map(|i| {
                let first = start + interval * i / args.connections;
                tokio::spawn(drive(args.addr, request.clone(), first, interval, end))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap_or_default());
        }
        all
    });
    let errors: u64 = measured.iter().map(|m| m.errors).sum();
    let mut latencies: Vec<u32> = measured.into_iter().flat_map(|m| m.latencies_us).collect();
    latencies.sort_unstable();
    println!(
        "{{\"rate\":{},\"seconds\":{},\"connections\":{},\"completed\":{},\"errors\":{},\
         \"achieved_rps\":{:.0},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\
         \"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
        args.rate,
        args.seconds,
        args.connections,
        latencies.len(),
        errors,
        latencies.len() as f64 / args.seconds,
        percentile_ms(&latencies, 50.0),
        percentile_ms(&latencies, 90.0),
        percentile_ms(&latencies, 99.0),
        percentile_ms(&latencies, 99.9),
        latencies.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
    );
    ExitCode::SUCCESS
}
