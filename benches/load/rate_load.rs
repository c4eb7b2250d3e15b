//! Open-loop load at a fixed request rate, for latency at a given load: what `wrk` cannot
//! measure. `wrk` sends a connection's next request only once the last one is answered, so a
//! slow response also delays the requests queued behind it and hides their wait (coordinated
//! omission); its latencies describe a proxy at saturation.
//!
//! `portico-rate-load HOST:PORT PATH RATE SECONDS [CONNECTIONS [HEADER...]]` prints one JSON
//! line; each HEADER (`Name: value`) is sent with every request.
//!
//! Request `k` is due at `k / RATE` seconds and goes to connection `k % CONNECTIONS` (HTTP/1.1
//! keep-alive, one request at a time), so every connection has its own schedule of
//! RATE/CONNECTIONS requests per second, the connections staggered evenly. A request's latency
//! counts from when it was due if its connection was still busy then, so waiting behind a slow
//! response is counted; otherwise from when it was sent, so the pacer's own lateness is not.
//!
//! The pacer releases each request when it is due to within tens of microseconds (a `timerfd`
//! ticking every 1/RATE seconds, at least 20 µs). tokio's timer would not do: it rounds every
//! sleep up to the next millisecond, so the requests of all connections due within one
//! millisecond would be sent together, a burst of RATE/1000 every millisecond that no
//! population of clients makes, and whose queue at the proxy is what the tail measured.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The pacer's shortest tick: the requests due within one tick are released together.
const SHORTEST_TICK: Duration = Duration::from_micros(20);

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

/// Sends each request released to this connection and measures it.
async fn drive(
    addr: SocketAddr,
    request: Arc<[u8]>,
    mut released: mpsc::UnboundedReceiver<Instant>,
) -> Measured {
    let mut measured = Measured::default();
    let mut stream = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut free_since = Instant::now();
    while let Some(due) = released.recv().await {
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
    }
    measured
}

/// A `timerfd` that tokio's reactor can wait on.
struct Ticker(TimerFd);

impl AsRawFd for Ticker {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Releases requests `0..total`, each at its due time, to the connection whose turn it is.
async fn pace(
    rate: f64,
    total: u64,
    connections: &[mpsc::UnboundedSender<Instant>],
) -> io::Result<()> {
    let tick = Duration::from_secs_f64(1.0 / rate).max(SHORTEST_TICK);
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    timer.set(
        Expiration::Interval(TimeSpec::from_duration(tick)),
        TimerSetTimeFlags::empty(),
    )?;
    // SAFETY: the Ticker owns the timerfd and returns that same descriptor for as long as it
    // lives, which is as long as the AsyncFd that owns it.
    let timer = unsafe { AsyncFd::register_with_interest(Ticker(timer), Interest::READABLE) }?;
    let start = Instant::now();
    let mut released = 0u64;
    while released < total {
        // Request k is due at start + k / rate: release all that are due now.
        let due_by_now = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while released < due_by_now {
            let due = start + Duration::from_secs_f64(released as f64 / rate);
            let turn = (released % connections.len() as u64) as usize;
            // Only a connection task that panicked has dropped its receiver; nothing to send.
            let _ = connections[turn].send(due);
            released += 1;
        }
        let mut ready = timer.readable().await?;
        // Reading the expiry count re-arms readiness; a spurious wake-up reads nothing.
        let _ = ready.try_io(|t| t.get_ref().0.wait().map_err(io::Error::from));
    }
    Ok(())
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
    let total = (args.seconds * args.rate) as u64;
    let paced: io::Result<Vec<Measured>> = runtime.block_on(async {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..args.connections)
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let tasks: Vec<_> = receivers
            .into_iter()
            .map(|released| tokio::spawn(drive(args.addr, request.clone(), released)))
            .collect();
        pace(args.rate, total, &senders).await?;
        // The connections end once they have sent what was released to them.
        drop(senders);
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.unwrap_or_default());
        }
        Ok(all)
    });
    let measured = match paced {
        Ok(m) => m,
        Err(e) => {
            eprintln!("portico-rate-load: pacing timer: {e}");
            return ExitCode::FAILURE;
        }
    };
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
