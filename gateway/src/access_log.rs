//! JSON access log: one line per request, written by a dedicated thread so the request path
//! never waits on a disk or a pipe. When the writer falls behind, lines are dropped and
//! counted rather than slowing requests down.

use prometheus::IntCounter;
use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

const QUEUE: usize = 16 * 1024;

#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Logs to `path` (appending), or to standard output.
    pub fn open(path: Option<&str>, dropped: IntCounter) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Ok(line) = rx.recv() {
                    buf.extend_from_slice(line.as_bytes());
                    buf.push(b'\n');
                    // Batch what is already queued into one write.
                    while buf.len() < 60 * 1024 {
                        match rx.try_recv() {
                            Ok(l) => {
                                buf.extend_from_slice(l.as_bytes());
                                buf.push(b'\n');
                            }
                            Err(_) => break,
                        }
                    }
                    let _ = out.write_all(&buf);
                    let _ = out.flush();
                    buf.clear();
                }
            })?;
        Ok(AccessLog { tx, dropped })
    }

    pub fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.inc();
        }
    }
}
