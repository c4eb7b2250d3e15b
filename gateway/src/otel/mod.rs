//! OpenTelemetry traces: settings from the `tracing` section and the standard `OTEL_*`
//! variables, the tracer provider with its OTLP/HTTP exporter, and the spans of a request
//! (`request.rs`).

mod export;
mod ids;
mod request;

pub use export::{Batching, SpanCounters};
pub use request::{Incoming, Outcome, RequestTrace};

use crate::config::{Sampler, TracingConfig};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{RandomIdGenerator, SdkTracer, SdkTracerProvider, ShouldSample};
use opentelemetry_sdk::Resource;
use std::time::Duration;

const DEFAULT_SERVICE_NAME: &str = "portico";

#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("tracing.sample_ratio must be between 0 and 1, not {0}")]
    Ratio(f64),
    #[error("tracing.endpoint `{0}` is not an http:// or https:// URL")]
    Endpoint(String),
    #[error("tracing.{0} must be at least 1")]
    Zero(&'static str),
    #[error("tracing.batch_size ({batch}) must not exceed tracing.queue_size ({queue})")]
    BatchOverQueue { batch: usize, queue: usize },
    #[error("the OTLP exporter could not be built: {0}")]
    Exporter(String),
    #[error("the span export thread could not start: {0}")]
    Thread(#[from] std::io::Error),
}

impl TracingError {
    /// The `tracing` key the error is about, when it is one key's.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            TracingError::Ratio(_) => Some("sample_ratio"),
            TracingError::Endpoint(_) => Some("endpoint"),
            TracingError::Zero(key) => Some(key),
            TracingError::BatchOverQueue { .. } => Some("batch_size"),
            _ => None,
        }
    }
}

/// What the config and the environment decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None`: the exporter's own resolution (the OTLP endpoint variables, then localhost).
    pub endpoint: Option<String>,
    /// `None`: `OTEL_SERVICE_NAME` is set and the SDK reads it.
    pub service_name: Option<String>,
    /// `None`: the SDK reads `OTEL_TRACES_SAMPLER` (default parent-based always-on).
    pub sampler: Option<(Sampler, f64)>,
    pub record_user_id: bool,
    pub batching: Batching,
}

/// Decides whether traces are exported and how. `env` reads an environment variable.
pub fn settings(
    config: Option<&TracingConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Settings>, TracingError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let enabled = match config.and_then(|c| c.enabled) {
        Some(on) => on,
        None if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) => false,
        None => match set("OTEL_TRACES_EXPORTER").as_deref() {
            // A list; `otlp` is the one exporter built in.
            Some(list) if list.split(',').any(|e| e.trim() == "otlp") => true,
            Some(other) => {
                if other.trim() != "none" {
                    tracing::warn!(exporters = other, "OTEL_TRACES_EXPORTER names no exporter Portico has (only `otlp`); traces are off");
                }
                false
            }
            // A `tracing` section asks for traces; so does an endpoint in the environment.
            None => {
                config.is_some()
                    || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                    || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            }
        },
    };
    let default = TracingConfig::default();
    let c = config.unwrap_or(&default);
    if let Some(e) = &c.endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(TracingError::Endpoint(e.clone()));
        }
    }
    if let Some(r) = c.sample_ratio {
        if !(0.0..=1.0).contains(&r) {
            return Err(TracingError::Ratio(r));
        }
    }
    let queue_size = c.queue_size.unwrap_or(2048);
    let batch_size = c.batch_size.unwrap_or(512);
    if queue_size == 0 {
        return Err(TracingError::Zero("queue_size"));
    }
    if batch_size == 0 {
        return Err(TracingError::Zero("batch_size"));
    }
    if batch_size > queue_size {
        return Err(TracingError::BatchOverQueue {
            batch: batch_size,
            queue: queue_size,
        });
    }
    if !enabled {
        return Ok(None);
    }
    let env_ratio = || set("OTEL_TRACES_SAMPLER_ARG").and_then(|a| a.parse::<f64>().ok());
    let sampler = c
        .sampler
        .map(|s| (s, c.sample_ratio.or_else(env_ratio).unwrap_or(1.0)));
    Ok(Some(Settings {
        endpoint: c.endpoint.clone(),
        service_name: c.service_name.clone().or_else(|| {
            set("OTEL_SERVICE_NAME")
                .is_none()
                .then(|| DEFAULT_SERVICE_NAME.to_string())
        }),
        sampler,
        record_user_id: c.record_user_id,
        batching: Batching {
            queue_size,
            batch_size,
            interval: c
                .export_interval
                .map_or(Duration::from_secs(1), |d| d.get()),
            timeout: c
                .export_timeout
                .map_or(Duration::from_secs(10), |d| d.get()),
        },
    }))
}

fn sdk_sampler(sampler: Sampler, ratio: f64) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler as S;
    let parent_based = |root: S| S::ParentBased(Box::new(root));
    match sampler {
        Sampler::AlwaysOn => S::AlwaysOn,
        Sampler::AlwaysOff => S::AlwaysOff,
        Sampler::Traceidratio => S::TraceIdRatioBased(ratio),
        Sampler::ParentbasedAlwaysOn => parent_based(S::AlwaysOn),
        Sampler::ParentbasedAlwaysOff => parent_based(S::AlwaysOff),
        Sampler::ParentbasedTraceidratio => parent_based(S::TraceIdRatioBased(ratio)),
    }
}

/// The running tracer: what the request path starts spans with.
pub struct Tracing {
    pub tracer: SdkTracer,
    provider: SdkTracerProvider,
    pub propagator: TraceContextPropagator,
    /// The sampler the SDK has too: the gateway decides first, and builds spans only for
    /// the requests it samples.
    pub sampler: Box<dyn ShouldSample>,
    /// Ids of unsampled requests.
    pub ids: RandomIdGenerator,
    pub record_user_id: bool,
}

impl Tracing {
    /// Builds the exporter and starts its thread. Also installs the provider and the W3C
    /// propagator globally, for plugins whose lookups leave the process.
    pub fn start(settings: &Settings, counters: SpanCounters) -> Result<Tracing, TracingError> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_timeout(settings.batching.timeout);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let mut exporter = builder
            .build()
            .map_err(|e| TracingError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if let Some(name) = &settings.service_name {
            resource = resource.with_service_name(name.clone());
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
        let processor = export::QueueProcessor::start(exporter, settings.batching, counters)?;
        // From the config, else what the SDK reads from `OTEL_TRACES_SAMPLER*`.
        let sampler: Box<dyn ShouldSample> = match settings.sampler {
            Some((sampler, ratio)) => Box::new(sdk_sampler(sampler, ratio)),
            None => opentelemetry_sdk::trace::Config::default().sampler,
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(processor)
            .with_sampler(sampler.box_clone())
            .with_id_generator(ids::PresetOrRandom::default())
            .build();
        let tracer = provider.tracer("portico");
        opentelemetry::global::set_tracer_provider(provider.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::info!(
            endpoint = settings
                .endpoint
                .as_deref()
                .unwrap_or("(from OTEL_* or localhost:4318)"),
            "exporting traces over OTLP/HTTP"
        );
        Ok(Tracing {
            tracer,
            provider,
            propagator: TraceContextPropagator::new(),
            sampler,
            ids: RandomIdGenerator::default(),
            record_user_id: settings.record_user_id,
        })
    }

    /// Sends what is queued, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::debug!(error = %e, "span export at exit did not finish");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        move |k| map.get(k).map(|v| v.to_string())
    }

    #[test]
    fn off_unless_the_config_or_the_environment_asks() {
        assert_eq!(settings(None, &with_env(&[])).unwrap(), None);
        let env = with_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        let s = settings(None, &env).unwrap().unwrap();
        assert_eq!(s.endpoint, None, "the exporter reads the variable itself");
        assert_eq!(s.service_name.as_deref(), Some("portico"));
        assert!(
            settings(None, &with_env(&[("OTEL_TRACES_EXPORTER", "otlp")]))
                .unwrap()
                .is_some()
        );
        let off = TracingConfig {
            enabled: Some(false),
            ..TracingConfig::default()
        };
        assert_eq!(settings(Some(&off), &env).unwrap(), None);
        let disabled = with_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(settings(None, &disabled).unwrap(), None);
        let section = TracingConfig::default();
        assert!(settings(Some(&section), &with_env(&[])).unwrap().is_some());
        let none = with_env(&[("OTEL_TRACES_EXPORTER", "none")]);
        assert_eq!(settings(Some(&section), &none).unwrap(), None);
        let other = with_env(&[("OTEL_TRACES_EXPORTER", "zipkin")]);
        assert_eq!(settings(None, &other).unwrap(), None);
        let listed = with_env(&[("OTEL_TRACES_EXPORTER", "console, otlp")]);
        assert!(settings(None, &listed).unwrap().is_some());
    }

    #[test]
    fn yaml_wins_over_the_environment_and_the_environment_over_defaults() {
        let env = with_env(&[
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        let c = TracingConfig {
            sampler: Some(Sampler::ParentbasedTraceidratio),
            ..TracingConfig::default()
        };
        let s = settings(Some(&c), &env).unwrap().unwrap();
        assert_eq!(s.service_name, None, "OTEL_SERVICE_NAME is read by the SDK");
        assert_eq!(s.sampler, Some((Sampler::ParentbasedTraceidratio, 0.25)));
        let c = TracingConfig {
            sampler: Some(Sampler::Traceidratio),
            sample_ratio: Some(0.01),
            service_name: Some("gw".into()),
            ..TracingConfig::default()
        };
        let s = settings(Some(&c), &env).unwrap().unwrap();
        assert_eq!(s.sampler, Some((Sampler::Traceidratio, 0.01)));
        assert_eq!(s.service_name.as_deref(), Some("gw"));
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let bad = |c: TracingConfig| settings(Some(&c), &with_env(&[])).unwrap_err().to_string();
        let e = bad(TracingConfig {
            sample_ratio: Some(1.5),
            ..TracingConfig::default()
        });
        assert!(e.contains("sample_ratio"), "{e}");
        let e = bad(TracingConfig {
            endpoint: Some("collector:4318".into()),
            ..TracingConfig::default()
        });
        assert!(e.contains("endpoint"), "{e}");
        let e = bad(TracingConfig {
            queue_size: Some(10),
            batch_size: Some(20),
            ..TracingConfig::default()
        });
        assert!(e.contains("queue_size"), "{e}");
    }
}
