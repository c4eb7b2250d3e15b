//! JSON access log: one line per request, written by a dedicated thread so the request path
//! never waits on a disk or a pipe. Lines are written in batches every 100 ms (like nginx's
//! `buffer=`/`flush=`): waking the writer per line cost a third of the throughput of a pinned
//! core in the load benchmark. When the queue is full, lines are dropped and counted rather
//! than slowing requests down. SIGUSR1 reopens the file (after logrotate moved it).

use crate::json::{
    push_ip, push_millis, push_plain_string as plain, push_string as js, push_three_digits,
    push_u64, JsonString,
};
use opentelemetry::trace::{SpanId, TraceId};
use portico_plugins::ErrorCode;
use prometheus::IntCounter;
use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Lines queued between two flushes at most (100 ms at 600k requests/s).
const QUEUE: usize = 64 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What the writer thread is handed: a line, or a request to write everything queued now
/// and say when it is done (at exit).
enum Entry {
    Line(String),
    Flush(SyncSender<()>),
}

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: IntCounter,
    /// Set by SIGUSR1: the writer opens the file again (logrotate's convention).
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Logs to `path` (appending), or to standard output.
    pub fn open(path: Option<&str>, dropped: IntCounter) -> std::io::Result<AccessLog> {
        let out = Output::open(path)?;
        let (tx, rx) = sync_channel::<Entry>(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn({
                let (dropped, reopen) = (dropped.clone(), reopen.clone());
                move || write_batches(rx, out, dropped, reopen)
            })?;
        Ok(AccessLog {
            tx,
            dropped,
            reopen,
        })
    }

    /// Opens the file again before the next write (after logrotate moved it away).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Entry::Line(line)) {
            self.dropped.inc();
        }
    }

    /// Writes out every queued line, waiting at most `limit` (the process is about to exit).
    pub fn flush(&self, limit: Duration) {
        let (done, flushed) = sync_channel(1);
        if self.tx.send(Entry::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(limit);
        }
    }
}

/// Where lines go: a file (reopened on request), or standard output.
struct Output {
    path: Option<String>,
    writer: Box<dyn Write + Send>,
}

impl Output {
    fn open(path: Option<&str>) -> std::io::Result<Output> {
        let writer: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        Ok(Output {
            path: path.map(str::to_string),
            writer,
        })
    }

    fn reopen(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match Output::open(Some(&path)) {
            Ok(fresh) => {
                let _ = self.writer.flush();
                *self = fresh;
                tracing::info!(path, "access log reopened");
            }
            Err(e) => {
                tracing::error!(path, error = %e, "cannot reopen the access log; writing to the old file")
            }
        }
    }
}

/// The writer thread. It wakes on a timer and drains the queue: blocking on the channel
/// instead would make every request's send wake this thread (a context switch per request).
/// Lines that cannot be written (a full disk) are counted as dropped.
fn write_batches(
    rx: Receiver<Entry>,
    mut out: Output,
    dropped: IntCounter,
    reopen: Arc<AtomicBool>,
) {
    let mut buf = Vec::with_capacity(256 * 1024);
    let write = |out: &mut Output, buf: &mut Vec<u8>| {
        let w = &mut out.writer;
        if w.write_all(buf).and_then(|()| w.flush()).is_err() {
            let lines = buf.iter().filter(|b| **b == b'\n').count();
            dropped.inc_by(lines as u64);
        }
        buf.clear();
    };
    loop {
        std::thread::sleep(FLUSH_EVERY);
        if reopen.swap(false, Ordering::Relaxed) {
            if !buf.is_empty() {
                write(&mut out, &mut buf);
            }
            out.reopen();
        }
        let mut open = true;
        let mut waiting = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Entry::Line(l)) => {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                    if buf.len() >= 256 * 1024 {
                        write(&mut out, &mut buf);
                    }
                }
                Ok(Entry::Flush(done)) => waiting.push(done),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if !buf.is_empty() {
            write(&mut out, &mut buf);
        }
        for done in waiting {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

/// What the access log says of one request; the proxy fills it in its logging phase.
#[derive(Debug, Default)]
pub struct AccessRecord<'a> {
    /// Valid by `request_id::is_valid` (it is written without escaping).
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    /// An HTTP method: a token, written without escaping.
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// 0 when no response was sent.
    pub status: u16,
    pub duration: Duration,
    pub route: Option<&'a JsonString>,
    /// The pool and member of the try that answered, when one was chosen.
    pub upstream: Option<(&'a JsonString, &'a JsonString)>,
    pub upstream_duration: Option<Duration>,
    pub error: Option<ErrorCode>,
    pub user_id: Option<&'a str>,
    pub bytes_in: u64,
    /// Body bytes sent to the client.
    pub bytes_out: u64,
    /// `HTTP/1.1`, `HTTP/2`, … (written without escaping)
    pub protocol: &'a str,
    pub referer: Option<&'a str>,
    /// How the identity was verified (`jwt`, `session`).
    pub auth_method: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// The server span's trace and span ids, when traces are exported.
    pub trace: Option<(TraceId, SpanId)>,
    /// What the route's rate limits decided (`allowed`, `limited`, and `_fallback` when
    /// Redis was away for a global limit).
    pub rate_limit: Option<&'a str>,
}

impl AccessRecord<'_> {
    /// The record as one JSON object (no newline).
    pub fn to_json_line(&self) -> String {
        let mut out = String::with_capacity(448);
        out.push_str("{\"time\":\"");
        push_rfc3339_millis(&mut out, portico_plugins::clock::since_unix_epoch());
        out.push_str("\",\"request_id\":");
        plain(&mut out, self.request_id);
        out.push_str(",\"client_ip\":");
        match self.client_ip {
            Some(ip) => push_ip(&mut out, ip),
            None => out.push_str("null"),
        }
        out.push_str(",\"method\":");
        plain(&mut out, self.method);
        out.push_str(",\"host\":");
        js(&mut out, self.host);
        out.push_str(",\"path\":");
        js(&mut out, self.path);
        out.push_str(",\"protocol\":");
        plain(&mut out, self.protocol);
        out.push_str(",\"status\":");
        push_u64(&mut out, self.status.into());
        out.push_str(",\"duration_ms\":");
        push_millis(&mut out, self.duration);
        out.push_str(",\"route\":");
        optional_json(&mut out, self.route);
        out.push_str(",\"upstream\":");
        optional_json(&mut out, self.upstream.map(|u| u.0));
        out.push_str(",\"member\":");
        optional_json(&mut out, self.upstream.map(|u| u.1));
        if let Some(up) = self.upstream_duration {
            out.push_str(",\"upstream_ms\":");
            push_millis(&mut out, up);
        }
        if let Some(code) = self.error {
            out.push_str(",\"error\":");
            js(&mut out, code.as_str());
        }
        if let Some(user) = self.user_id {
            out.push_str(",\"user_id\":");
            js(&mut out, user);
        }
        if let Some(method) = self.auth_method {
            out.push_str(",\"auth_method\":");
            js(&mut out, method);
        }
        out.push_str(",\"bytes_in\":");
        push_u64(&mut out, self.bytes_in);
        out.push_str(",\"bytes_out\":");
        push_u64(&mut out, self.bytes_out);
        if let Some((trace, span)) = self.trace {
            let _ = write!(out, ",\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"");
        }
        if let Some(outcome) = self.rate_limit {
            out.push_str(",\"rate_limit\":");
            js(&mut out, outcome);
        }
        out.push_str(",\"referer\":");
        optional(&mut out, self.referer);
        out.push_str(",\"user_agent\":");
        optional(&mut out, self.user_agent);
        out.push('}');
        out
    }
}

/// Appends `since_epoch` as RFC 3339 in UTC with milliseconds (`2026-01-01T00:00:00.000Z`).
/// The calendar part changes once a second, so each thread keeps the last one it wrote.
fn push_rfc3339_millis(out: &mut String, since_epoch: Duration) {
    /// `2026-01-01T00:00:00`
    const SECOND_LEN: usize = 19;
    thread_local! {
        static LAST_SECOND: Cell<(u64, [u8; SECOND_LEN])> = const { Cell::new((u64::MAX, [0; SECOND_LEN])) };
    }
    let secs = since_epoch.as_secs();
    let (cached, mut text) = LAST_SECOND.get();
    if cached != secs {
        let whole =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        match whole.as_bytes().get(..SECOND_LEN) {
            Some(calendar) => text.copy_from_slice(calendar),
            // Only a year past 9999 could be longer or shorter: written as it comes.
            None => return out.push_str(&whole),
        }
        LAST_SECOND.set((secs, text));
    }
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    out.push('.');
    push_three_digits(out, since_epoch.subsec_millis() as u16);
    out.push('Z');
}

fn optional(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => js(out, v),
        None => out.push_str("null"),
    }
}

fn optional_json(out: &mut String, value: Option<&JsonString>) {
    out.push_str(value.map_or("null", JsonString::as_json));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_object_with_every_field() {
        let line = AccessRecord {
            request_id: "r1",
            client_ip: Some("203.0.113.9".parse().unwrap()),
            method: "GET",
            host: "example.com",
            path: "/a\"b",
            status: 502,
            duration: Duration::from_micros(1500),
            route: Some(&JsonString::new("api \"v1\"")),
            upstream: Some((&JsonString::new("users"), &JsonString::new("10.0.0.1:80"))),
            upstream_duration: Some(Duration::from_millis(1)),
            error: Some(ErrorCode::BadGateway),
            user_id: None,
            bytes_in: 12,
            bytes_out: 34,
            protocol: "HTTP/1.1",
            referer: Some("https://app.example.com/"),
            auth_method: Some("jwt"),
            user_agent: None,
            trace: Some((
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            )),
            rate_limit: Some("allowed"),
        }
        .to_json_line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["client_ip"], "203.0.113.9");
        assert_eq!(v["status"], 502);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["route"], "api \"v1\"");
        assert_eq!(v["upstream"], "users");
        assert_eq!(v["member"], "10.0.0.1:80");
        assert_eq!(v["error"], "bad_gateway");
        assert!(v["user_agent"].is_null() && v.get("user_id").is_none());
        assert_eq!(v["bytes_out"], 34);
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["referer"], "https://app.example.com/");
        assert_eq!(v["auth_method"], "jwt");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["span_id"], "00f067aa0ba902b7");
        assert_eq!(v["rate_limit"], "allowed");
        // RFC 3339, UTC, milliseconds.
        let time = v["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert_eq!(time.len(), "2026-01-01T00:00:00.000Z".len(), "{time}");
    }

    #[test]
    fn times_read_as_humantime_writes_them_across_seconds_and_days() {
        // The second cached by the thread must not leak into the next second or day.
        for nanos in [
            1_764_547_199_999_000_000u64,
            1_764_547_200_000_000_000,
            1_764_547_200_045_000_000,
            1_764_547_201_500_000_000,
            951_782_400_007_000_000,
            0,
        ] {
            let at = Duration::from_nanos(nanos);
            let mut out = String::new();
            push_rfc3339_millis(&mut out, at);
            let expected = humantime::format_rfc3339_millis(UNIX_EPOCH + at).to_string();
            assert_eq!(out, expected);
        }
    }
}
