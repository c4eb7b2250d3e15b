//! Hot reload: a new snapshot is compiled beside the live one and swapped in atomically.
//! Triggers: a change of the file or of a TLS certificate or key it names (polled and
//! debounced, which also catches the symlink swap of a Kubernetes ConfigMap or Secret that
//! inotify misses), SIGHUP, and the admin `POST /reload`.

use super::discovery::DiscoveryService;
use crate::config::{reload_file, ConfigErrors, Previous};
use crate::metrics::Metrics;
use crate::snapshot::{CompileEnv, Snapshot, SnapshotStore};
use portico_plugins::revocation::Revocations;
use portico_plugins::SharedBuckets;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub struct Reloader {
    path: PathBuf,
    store: SnapshotStore,
    metrics: Arc<Metrics>,
    discovery: Option<Arc<DiscoveryService>>,
    shared: Option<Arc<dyn SharedBuckets>>,
    revocations: Arc<Revocations>,
    /// Reloads are serialized: two at once would race on the version and the pools.
    lock: tokio::sync::Mutex<()>,
    /// The last reloads, newest last (for the status page).
    history: std::sync::Mutex<std::collections::VecDeque<ReloadEvent>>,
}

/// One reload, as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadEvent {
    pub at: String,
    /// `applied`, `unchanged` or `rejected`.
    pub result: &'static str,
    pub version: u64,
    pub elapsed_ms: Option<f64>,
    pub errors: Vec<String>,
}

const HISTORY: usize = 20;

#[derive(Debug)]
pub enum ReloadOutcome {
    Applied { version: u64, elapsed: Duration },
    Unchanged { version: u64 },
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        store: SnapshotStore,
        metrics: Arc<Metrics>,
        discovery: Option<Arc<DiscoveryService>>,
        shared: Option<Arc<dyn SharedBuckets>>,
        revocations: Arc<Revocations>,
    ) -> Self {
        Reloader {
            path,
            store,
            metrics,
            discovery,
            shared,
            revocations,
            lock: tokio::sync::Mutex::new(()),
            history: std::sync::Mutex::default(),
        }
    }

    /// The last reloads, newest last.
    pub fn history(&self) -> Vec<ReloadEvent> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remember(&self, event: ReloadEvent) {
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(event);
        }
    }

    pub fn store(&self) -> &SnapshotStore {
        &self.store
    }

    /// Reloads the file. `force`: compile even if the text did not change.
    pub async fn reload(&self, force: bool) -> Result<ReloadOutcome, ConfigErrors> {
        let outcome = self.reload_once(force).await;
        let at = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + portico_plugins::clock::since_unix_epoch(),
        )
        .to_string();
        let event = match &outcome {
            Ok(ReloadOutcome::Applied { version, elapsed }) => ReloadEvent {
                at,
                result: "applied",
                version: *version,
                elapsed_ms: Some(elapsed.as_secs_f64() * 1000.0),
                errors: Vec::new(),
            },
            Ok(ReloadOutcome::Unchanged { version }) => ReloadEvent {
                at,
                result: "unchanged",
                version: *version,
                elapsed_ms: None,
                errors: Vec::new(),
            },
            Err(e) => ReloadEvent {
                at,
                result: "rejected",
                version: self.store.load().version,
                elapsed_ms: None,
                errors: e.0.iter().map(|e| e.to_string()).collect(),
            },
        };
        self.remember(event);
        outcome
    }

    async fn reload_once(&self, force: bool) -> Result<ReloadOutcome, ConfigErrors> {
        let _guard = self.lock.lock().await;
        let started = Instant::now();
        let current = self.store.load_full();
        let path = self.path.clone();
        let running = current.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let previous = Previous {
                source: &running.source,
                config: &running.config,
            };
            reload_file(&path, &previous)
        })
        .await
        .map_err(|e| {
            ConfigErrors(vec![crate::config::ConfigError {
                file: current.file.clone(),
                line: 1,
                column: 1,
                message: format!("reload task failed: {e}"),
            }])
        })?;
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => return Err(self.failed(e)),
        };
        if !force && loaded.source == current.source {
            return Ok(ReloadOutcome::Unchanged {
                version: current.version,
            });
        }
        let version = current.version + 1;
        // Compiling resolves member host names, so keep it off the async workers.
        let prev = current.clone();
        let cache = self.discovery.as_ref().map(|d| d.cache.clone());
        let shared = self.shared.clone();
        let revocations = self.revocations.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let env = CompileEnv {
                previous: Some(&prev),
                discovered: cache.as_deref(),
                shared,
                env: portico_plugins::env::Env::Process,
                revocations,
            };
            Snapshot::compile(&loaded, version, &env)
        })
        .await;
        let next = match compiled {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(self.failed(e)),
            Err(e) => {
                return Err(self.failed(ConfigErrors(vec![crate::config::ConfigError {
                    file: current.file.clone(),
                    line: 1,
                    column: 1,
                    message: format!("reload task failed: {e}"),
                }])))
            }
        };
        warn_restart_only_changes(&current, &next);
        super::publish(&self.store, &self.metrics, Arc::new(next));
        self.metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        let elapsed = started.elapsed();
        tracing::info!(
            version,
            elapsed_ms = elapsed.as_millis() as u64,
            "config reloaded"
        );
        Ok(ReloadOutcome::Applied { version, elapsed })
    }

    fn failed(&self, e: ConfigErrors) -> ConfigErrors {
        self.metrics
            .config_reloads
            .with_label_values(&["failure"])
            .inc();
        for err in &e.0 {
            tracing::error!(error = %err, "config reload rejected; the running config keeps serving");
        }
        e
    }

    /// Polls the files the live config is made of and reloads when one changed and then
    /// stayed unchanged for a moment: the config file itself (`with_config`), and every TLS
    /// certificate and key, so renewed certificates are served without a signal.
    pub async fn watch(self: Arc<Self>, with_config: bool) {
        const POLL: Duration = Duration::from_millis(250);
        const SETTLE: Duration = Duration::from_millis(300);
        let mut last = self.stamps(with_config);
        loop {
            tokio::time::sleep(POLL).await;
            let now = self.stamps(with_config);
            if now == last {
                continue;
            }
            // Debounce: wait until editors, config-map and certificate updates finish writing.
            let mut settled = now;
            loop {
                tokio::time::sleep(SETTLE).await;
                let again = self.stamps(with_config);
                if again == settled {
                    break;
                }
                settled = again;
            }
            // The text of the config may be unchanged (only a certificate changed): compile
            // anyway when anything but the config file moved.
            let force = settled.certificates != last.certificates;
            last = settled;
            if force {
                tracing::info!("a certificate or key file changed: reloading");
            }
            let _ = self.reload(force).await;
            // What the new snapshot names is what is watched from now on.
            last = Stamps {
                config: last.config,
                certificates: self.stamps(false).certificates,
            };
        }
    }

    fn stamps(&self, with_config: bool) -> Stamps {
        let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let snapshot = self.store.load();
        // Listeners' certificates, and pools' CA and client certificates.
        let upstream_files = snapshot
            .config
            .upstreams
            .values()
            .filter_map(|u| u.value.tls.as_ref())
            .flat_map(|t| t.files());
        let mut certificates: Vec<_> = snapshot
            .tls
            .values()
            .flat_map(|t| t.certs.iter())
            .flat_map(|c| [&c.cert_path, &c.key_path])
            .chain(upstream_files)
            .map(|p| (p.clone(), stamp(Path::new(p))))
            .collect();
        certificates.sort();
        Stamps {
            config: if with_config { stamp(&self.path) } else { None },
            certificates,
        }
    }

    pub async fn on_sighup(self: Arc<Self>) {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot install the SIGHUP handler");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            let _ = self.reload(true).await;
        }
    }
}

/// Modification time and size of each watched file (`None`: missing).
#[derive(PartialEq)]
struct Stamps {
    config: Option<(SystemTime, u64)>,
    certificates: Vec<(String, Option<(SystemTime, u64)>)>,
}

fn warn_restart_only_changes(current: &Snapshot, next: &Snapshot) {
    let listeners = |s: &Snapshot| serde_json::to_string(&s.config.listeners).unwrap_or_default();
    let server = |s: &Snapshot| serde_json::to_string(&s.config.server).unwrap_or_default();
    let admin = |s: &Snapshot| s.config.admin.address.clone();
    let redis = |s: &Snapshot| serde_json::to_string(&s.config.redis).unwrap_or_default();
    let tracing = |s: &Snapshot| serde_json::to_string(&s.config.tracing).unwrap_or_default();
    if listeners(current) != listeners(next)
        || server(current) != server(next)
        || admin(current) != admin(next)
        || redis(current) != redis(next)
        || tracing(current) != tracing(next)
    {
        tracing::warn!("listener, admin address, redis, tracing and server settings apply only after a restart or `run --upgrade`");
    }
}
