//! Hot reload: a new snapshot is compiled beside the live one and swapped in atomically.
//! Triggers: a change of the file (polled and debounced, which also catches the symlink swap
//! of a Kubernetes ConfigMap that inotify misses), SIGHUP, and the admin `POST /reload`.

use super::discovery::DiscoveryService;
use crate::config::{load_file, ConfigErrors};
use crate::metrics::Metrics;
use crate::snapshot::{CompileEnv, Snapshot, SnapshotStore};
use portico_plugins::SharedBuckets;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub struct Reloader {
    path: PathBuf,
    store: SnapshotStore,
    metrics: Arc<Metrics>,
    discovery: Option<Arc<DiscoveryService>>,
    shared: Option<Arc<dyn SharedBuckets>>,
    /// Reloads are serialized: two at once would race on the version and the pools.
    lock: tokio::sync::Mutex<()>,
}

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
    ) -> Self {
        Reloader {
            path,
            store,
            metrics,
            discovery,
            shared,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn store(&self) -> &SnapshotStore {
        &self.store
    }

    /// Reloads the file. `force`: compile even if the text did not change.
    pub async fn reload(&self, force: bool) -> Result<ReloadOutcome, ConfigErrors> {
        let _guard = self.lock.lock().await;
        let started = Instant::now();
        let current = self.store.load_full();
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load_file(&path))
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
        let compiled = tokio::task::spawn_blocking(move || {
            let env = CompileEnv {
                previous: Some(&prev),
                discovered: cache.as_deref(),
                shared,
                env: portico_plugins::env::Env::Process,
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

    /// Polls the file and reloads when it changed and then stayed unchanged for a moment.
    pub async fn watch(self: Arc<Self>) {
        const POLL: Duration = Duration::from_millis(250);
        const SETTLE: Duration = Duration::from_millis(300);
        let stamp = |p: &PathBuf| -> Option<(SystemTime, u64)> {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let mut last = stamp(&self.path);
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamp(&self.path);
            if now == last || now.is_none() {
                continue;
            }
            // Debounce: wait until editors and config-map updates finish writing.
            let mut settled = now;
            loop {
                tokio::time::sleep(SETTLE).await;
                let again = stamp(&self.path);
                if again == settled {
                    break;
                }
                settled = again;
            }
            last = settled;
            let _ = self.reload(false).await;
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

fn warn_restart_only_changes(current: &Snapshot, next: &Snapshot) {
    let listeners = |s: &Snapshot| serde_json::to_string(&s.config.listeners).unwrap_or_default();
    let server = |s: &Snapshot| serde_json::to_string(&s.config.server).unwrap_or_default();
    let admin = |s: &Snapshot| s.config.admin.address.clone();
    let redis = |s: &Snapshot| serde_json::to_string(&s.config.redis).unwrap_or_default();
    if listeners(current) != listeners(next)
        || server(current) != server(next)
        || admin(current) != admin(next)
        || redis(current) != redis(next)
    {
        tracing::warn!("listener, admin address, redis and server settings apply only after a restart or `run --upgrade`");
    }
}
