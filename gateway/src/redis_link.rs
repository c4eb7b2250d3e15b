//! Redis connectivity in one place, shared by everything that needs Redis (the registry and
//! discovery, global rate limits): a single node, a cluster, or a master found through
//! Sentinel; `rediss://` for TLS; the password from an environment variable. Connections
//! are made lazily and re-made after failures; every command has a timeout, and nothing on
//! the request path waits for Redis.

use crate::config::RedisConfig;
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, Cmd, FromRedisValue, IntoConnectionInfo, RedisError, Script};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
    #[error("redis config: {0}")]
    Config(String),
    #[error("redis unreachable (retrying in the background): {0}")]
    Down(String),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

enum Target {
    Single(Client),
    Cluster(ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

pub struct RedisLink {
    target: Target,
    /// A node to subscribe on (classic pub/sub reaches every node of a cluster).
    pubsub_urls: Vec<String>,
    password: Option<String>,
    username: Option<String>,
    pub key_prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    pub required_for_ready: bool,
    conn: ArcSwapOption<Conn>,
    connecting: tokio::sync::Mutex<()>,
    up: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// After a failure, commands fail at once until then (ms on a monotonic clock), so callers
    /// on the request path never wait for a dead Redis; one caller probes when it passes.
    down_until: AtomicU64,
    backoff_ms: AtomicU64,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

const MIN_BACKOFF_MS: u64 = 250;
const MAX_BACKOFF_MS: u64 = 2000;

impl RedisLink {
    /// Validates the config (URLs, the password variable) without connecting.
    pub fn new(config: &RedisConfig) -> Result<RedisLink, LinkError> {
        Self::with_env(config, Env::Process)
    }

    /// As [`RedisLink::new`], reading the password variable from `env`.
    pub fn with_env(config: &RedisConfig, env: Env) -> Result<RedisLink, LinkError> {
        let password = match &config.password_env {
            Some(name) => Some(env.var(name).ok_or_else(|| {
                LinkError::Config(format!(
                    "redis.password_env names `{name}`, which is not set"
                ))
            })?),
            None => None,
        };
        let username = config.username.clone();
        let with_auth = |url: &str| -> Result<redis::ConnectionInfo, LinkError> {
            let info = url
                .into_connection_info()
                .map_err(|e| LinkError::Config(format!("`{url}`: {e}")))?;
            Ok(with_credentials(
                info,
                username.as_deref(),
                password.as_deref(),
            ))
        };
        let url = match (&config.url, &config.url_env) {
            (Some(url), None) => Some(url.clone()),
            (None, Some(name)) => Some(match env {
                // `check --skip-env`: any well-formed URL checks the rest.
                Env::Placeholders => "redis://portico-check.invalid:6379".to_string(),
                Env::Process => env.var(name).ok_or_else(|| {
                    LinkError::Config(format!("redis.url_env names `{name}`, which is not set"))
                })?,
            }),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(LinkError::Config(
                    "set redis.url or redis.url_env, not both".into(),
                ))
            }
        };
        let given = [
            url.is_some(),
            !config.cluster.is_empty(),
            config.sentinel.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            return Err(LinkError::Config(
                "set exactly one of redis.url (or url_env), redis.cluster or redis.sentinel".into(),
            ));
        }
        let (target, pubsub_urls) = if let Some(url) = &url {
            let client =
                Client::open(with_auth(url)?).map_err(|e| LinkError::Config(e.to_string()))?;
            (Target::Single(client), vec![url.clone()])
        } else if !config.cluster.is_empty() {
            let infos = config
                .cluster
                .iter()
                .map(|u| with_auth(u))
                .collect::<Result<Vec<_>, _>>()?;
            let client = ClusterClient::builder(infos)
                .connection_timeout(config.connect_timeout.get())
                .response_timeout(config.command_timeout.get())
                .build()
                .map_err(|e| LinkError::Config(e.to_string()))?;
            (Target::Cluster(client), config.cluster.clone())
        } else {
            let s = config
                .sentinel
                .as_ref()
                .ok_or_else(|| LinkError::Config("sentinel".into()))?;
            let mut node_info = SentinelNodeConnectionInfo::default();
            if password.is_some() || username.is_some() {
                node_info = node_info.set_redis_connection_info(credentials(
                    redis::RedisConnectionInfo::default(),
                    username.as_deref(),
                    password.as_deref(),
                ));
            }
            let client = SentinelClient::build(
                s.nodes.clone(),
                s.master_name.clone(),
                Some(node_info),
                SentinelServerType::Master,
            )
            .map_err(|e| LinkError::Config(format!("sentinel: {e}")))?;
            (
                Target::Sentinel(tokio::sync::Mutex::new(client)),
                Vec::new(),
            )
        };
        Ok(RedisLink {
            target,
            pubsub_urls,
            password,
            username,
            key_prefix: config.key_prefix.clone(),
            connect_timeout: config.connect_timeout.get(),
            command_timeout: config.command_timeout.get(),
            required_for_ready: config.required_for_ready,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            up: AtomicBool::new(false),
            last_error: Mutex::new(Some("not connected yet".into())),
            down_until: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(MIN_BACKOFF_MS),
        })
    }

    /// Whether the last command succeeded, and the last error if not.
    pub fn status(&self) -> Result<(), String> {
        if self.up.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(self
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_else(|| "unreachable".into()))
        }
    }

    /// Fails at once while a recent failure's backoff lasts; the first caller after it
    /// passes gets to try (and pushes the next window out while it does).
    fn gate(&self) -> Result<(), LinkError> {
        let now = monotonic_ms();
        let until = self.down_until.load(Ordering::Relaxed);
        if now < until {
            return Err(LinkError::Down(self.status().err().unwrap_or_default()));
        }
        if until != 0 {
            let next = now + self.backoff_ms.load(Ordering::Relaxed);
            if self
                .down_until
                .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                return Err(LinkError::Down(self.status().err().unwrap_or_default()));
            }
        }
        Ok(())
    }

    fn record<T>(&self, result: &Result<T, LinkError>) {
        match result {
            Err(LinkError::Down(_)) => {}
            Ok(_) => {
                self.down_until.store(0, Ordering::Relaxed);
                self.backoff_ms.store(MIN_BACKOFF_MS, Ordering::Relaxed);
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("redis is reachable");
                }
            }
            Err(e) => {
                let backoff = self.backoff_ms.load(Ordering::Relaxed);
                self.down_until
                    .store(monotonic_ms() + backoff, Ordering::Relaxed);
                self.backoff_ms
                    .store((backoff * 2).min(MAX_BACKOFF_MS), Ordering::Relaxed);
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "redis is unreachable");
                }
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
                // Make a fresh connection next time (a Sentinel failover moves the master).
                if matches!(self.target, Target::Sentinel(_)) {
                    self.conn.store(None);
                }
            }
        }
    }

    async fn connect(&self) -> Result<Conn, LinkError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let attempt = async {
            Ok::<Conn, LinkError>(match &self.target {
                Target::Single(client) => Conn::Single(
                    client
                        .get_connection_manager_with_config(manager_config)
                        .await?,
                ),
                Target::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
                Target::Sentinel(sentinel) => {
                    let client = sentinel.lock().await.async_get_client().await?;
                    Conn::Single(
                        client
                            .get_connection_manager_with_config(manager_config)
                            .await?,
                    )
                }
            })
        };
        let conn = tokio::time::timeout(self.connect_timeout * 2, attempt)
            .await
            .map_err(|_| LinkError::Timeout(self.connect_timeout * 2))??;
        self.conn.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Runs `op` on a connection, with the fail-fast gate, the command timeout, and status
    /// bookkeeping.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = async {
            self.gate()?;
            let conn = self.connect().await?;
            tokio::time::timeout(self.command_timeout, op(conn))
                .await
                .map_err(|_| LinkError::Timeout(self.command_timeout))?
                .map_err(LinkError::from)
        }
        .await;
        self.record(&result);
        result
    }

    /// Runs one command.
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: &Cmd) -> Result<T, LinkError> {
        self.run(|conn| async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
            }
        })
        .await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use).
    pub async fn script<T: FromRedisValue + Send>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<T, LinkError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a);
        }
        let invocation = &invocation;
        self.run(|conn| async move {
            match conn {
                Conn::Single(mut c) => invocation.invoke_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async::<T>(&mut c).await,
            }
        })
        .await
    }

    /// A pub/sub connection subscribed to `channel` (on the master, or on any reachable node
    /// of a cluster: classic pub/sub messages reach every node).
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, LinkError> {
        let clients: Vec<Client> = match &self.target {
            Target::Sentinel(sentinel) => vec![sentinel.lock().await.async_get_client().await?],
            _ => self
                .pubsub_urls
                .iter()
                .filter_map(|u| {
                    let info = u.as_str().into_connection_info().ok()?;
                    Client::open(with_credentials(
                        info,
                        self.username.as_deref(),
                        self.password.as_deref(),
                    ))
                    .ok()
                })
                .collect(),
        };
        let mut last = LinkError::Config("no node to subscribe on".into());
        for client in clients {
            let attempt = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, LinkError>(pubsub)
            };
            match tokio::time::timeout(self.connect_timeout * 2, attempt).await {
                Ok(Ok(p)) => return Ok(p),
                Ok(Err(e)) => last = e,
                Err(_) => last = LinkError::Timeout(self.connect_timeout * 2),
            }
        }
        Err(last)
    }
}

fn credentials(
    mut info: redis::RedisConnectionInfo,
    username: Option<&str>,
    password: Option<&str>,
) -> redis::RedisConnectionInfo {
    if let Some(p) = password {
        info = info.set_password(p);
    }
    if let Some(u) = username {
        info = info.set_username(u);
    }
    info
}

fn with_credentials(
    info: redis::ConnectionInfo,
    username: Option<&str>,
    password: Option<&str>,
) -> redis::ConnectionInfo {
    if username.is_none() && password.is_none() {
        return info;
    }
    let settings = credentials(info.redis_settings().clone(), username, password);
    info.set_redis_settings(settings)
}

use portico_plugins::clock::monotonic_ms;
use portico_plugins::env::Env;
