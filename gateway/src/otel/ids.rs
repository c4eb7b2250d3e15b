//! Trace ids for the SDK: random, except for a root span whose sampling the gateway has just
//! decided on a trace id of its own; the SDK must give that span the same id, or a
//! trace-id-ratio decision would not hold for the trace it records.

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use std::cell::Cell;

thread_local! {
    static PRESET: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The trace id the next root span built on this thread gets (the build follows at once,
/// with no await in between).
pub fn preset_trace_id(id: TraceId) {
    PRESET.with(|p| p.set(Some(id)));
}

#[derive(Debug, Default)]
pub struct PresetOrRandom(RandomIdGenerator);

impl IdGenerator for PresetOrRandom {
    fn new_trace_id(&self) -> TraceId {
        PRESET
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}
