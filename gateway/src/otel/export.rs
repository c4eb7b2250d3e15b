//! The span queue between the request path and the OTLP exporter.
//!
//! The SDK's batch processor drops spans when its queue is full but keeps the count to
//! itself, and a failed export is only logged. Here a full queue and a failed or slow export
//! both show in `portico_spans_dropped_total`, and ending a span costs the request one
//! non-blocking channel send.

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus::{IntCounter, IntCounterVec};
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;

/// How the queue is drained into export requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batching {
    pub queue_size: usize,
    pub batch_size: usize,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Counters of what became of finished spans.
#[derive(Debug, Clone)]
pub struct SpanCounters {
    pub exported: IntCounter,
    pub queue_full: IntCounter,
    pub export_failed: IntCounter,
}

impl SpanCounters {
    pub fn new(exported: IntCounter, dropped: &IntCounterVec) -> Self {
        SpanCounters {
            exported,
            queue_full: dropped.with_label_values(&["queue_full"]),
            export_failed: dropped.with_label_values(&["export_failed"]),
        }
    }
}

enum Message {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(mpsc::SyncSender<()>),
}

/// A span processor that queues finished spans for an export thread of its own.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: tokio::sync::mpsc::Sender<Message>,
    /// Flushes and shutdowns wait on this side; spans never do.
    control: tokio::sync::mpsc::UnboundedSender<Message>,
    counters: SpanCounters,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Span(_) => "Span",
            Message::Flush(_) => "Flush",
        })
    }
}

impl QueueProcessor {
    /// Starts the export thread (its own single-threaded runtime: exports never compete with
    /// requests for the proxy's runtimes).
    pub fn start<E: SpanExporter + 'static>(
        exporter: E,
        batching: Batching,
        counters: SpanCounters,
    ) -> std::io::Result<Self> {
        let (queue, spans) = tokio::sync::mpsc::channel(batching.queue_size.max(1));
        let (control, controls) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let c = counters.clone();
        std::thread::Builder::new()
            .name("portico-otlp".into())
            .spawn(move || runtime.block_on(export_loop(exporter, spans, controls, batching, c)))?;
        Ok(QueueProcessor {
            queue,
            control,
            counters,
        })
    }

    fn flush_within(&self, timeout: Duration) -> OTelSdkResult {
        let (done, wait) = mpsc::sync_channel(1);
        self.control
            .send(Message::Flush(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        wait.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => self.counters.queue_full.inc(),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_within(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush_within(timeout)
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut spans: tokio::sync::mpsc::Receiver<Message>,
    mut controls: tokio::sync::mpsc::UnboundedReceiver<Message>,
    batching: Batching,
    counters: SpanCounters,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(batching.batch_size);
    let mut waiting: Vec<mpsc::SyncSender<()>> = Vec::new();
    loop {
        // Collect until the batch is full, the interval since its first span has passed, or a
        // flush is asked for.
        let deadline = tokio::time::Instant::now() + batching.interval;
        while batch.len() < batching.batch_size && waiting.is_empty() {
            let message = if batch.is_empty() {
                tokio::select! {
                    m = spans.recv() => m,
                    m = controls.recv() => m,
                }
            } else {
                tokio::select! {
                    m = spans.recv() => m,
                    m = controls.recv() => m,
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            };
            match message {
                Some(Message::Span(span)) => batch.push(*span),
                Some(Message::Flush(done)) => waiting.push(done),
                None => return,
            }
        }
        if !waiting.is_empty() {
            // Everything queued before the flush request.
            while let Ok(Message::Span(span)) = spans.try_recv() {
                batch.push(*span);
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(batching.batch_size.max(1)));
            let full = std::mem::replace(&mut batch, rest);
            export(&exporter, full, batching.timeout, &counters).await;
        }
        for done in waiting.drain(..) {
            let _ = done.try_send(());
        }
    }
}

async fn export<E: SpanExporter>(
    exporter: &E,
    batch: Vec<SpanData>,
    timeout: Duration,
    counters: &SpanCounters,
) {
    let n = batch.len() as u64;
    match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(())) => counters.exported.inc_by(n),
        Ok(Err(e)) => {
            counters.export_failed.inc_by(n);
            tracing::debug!(error = %e, spans = n, "span export failed; spans dropped");
        }
        Err(_) => {
            counters.export_failed.inc_by(n);
            tracing::debug!(spans = n, "span export timed out; spans dropped");
        }
    }
}
