//! The Redis backend (redis-rs): one multiplexed connection that reconnects by itself
//! (`ConnectionManager`), `MGET` in batches of `get_multi_batch_size` keys and `SET … PX` in
//! pipelines of `set_multi_batch_size`, keys under `prefix`, optional TLS (rustls; the CA, client
//! certificate and key of `tls_config`) and `username`/`password`/`db`.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::config::RedisConfig;
use super::shared::{Backend, BackendError};

/// The Redis backend.
pub struct Redis {
    conn: ConnectionManager,
    cfg: RedisConfig,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("addr", &self.cfg.addr)
            .finish_non_exhaustive()
    }
}

fn redis_err(e: impl std::fmt::Display) -> BackendError {
    BackendError(format!("redis: {e}"))
}

impl Redis {
    /// Connects to `cfg.addr`. The first connection is made here (within `dial_timeout`); later
    /// failures reconnect in the background while reads and writes fail fast.
    pub async fn connect(cfg: RedisConfig) -> Result<Redis, BackendError> {
        let (host, port) = cfg
            .addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)))
            .ok_or_else(|| BackendError(format!("redis: addr {:?} is not host:port", cfg.addr)))?;
        let addr = if cfg.tls_enabled {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: cfg.tls_config.insecure_skip_verify,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        };
        let mut settings = redis::RedisConnectionInfo::default().set_db(cfg.db);
        if !cfg.username.is_empty() {
            settings = settings.set_username(&cfg.username);
        }
        if !cfg.password.is_empty() {
            settings = settings.set_password(&cfg.password);
        }
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(redis_err)?
            .set_redis_settings(settings);
        let client = if cfg.tls_enabled {
            let read = |p: &str| -> Result<Option<Vec<u8>>, BackendError> {
                if p.is_empty() {
                    return Ok(None);
                }
                std::fs::read(p)
                    .map(Some)
                    .map_err(|e| BackendError(format!("redis: tls_config: {p}: {e}")))
            };
            let client_tls = match (
                read(&cfg.tls_config.cert_file)?,
                read(&cfg.tls_config.key_file)?,
            ) {
                (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
                _ => None,
            };
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls,
                    root_cert: read(&cfg.tls_config.ca_file)?,
                },
            )
        } else {
            redis::Client::open(info)
        }
        .map_err(redis_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.dial_timeout))
            .set_response_timeout(Some(cfg.read_timeout.max(cfg.write_timeout)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = tokio::time::timeout(
            cfg.dial_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| BackendError(format!("redis {}: connect timed out", cfg.addr)))?
        .map_err(redis_err)?;
        Ok(Redis { conn, cfg })
    }

    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.cfg.prefix)
    }
}

#[async_trait::async_trait]
impl Backend for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get_multi(&self, keys: &[String]) -> Result<HashMap<String, Bytes>, BackendError> {
        let size = self.cfg.get_multi_batch_size.max(1);
        let batches: Vec<Result<Vec<(String, Option<Vec<u8>>)>, BackendError>> =
            futures::stream::iter(keys.chunks(size).map(<[String]>::to_vec).map(
                |chunk| async move {
                    let mut conn = self.conn.clone();
                    let mut cmd = redis::cmd("MGET");
                    for k in &chunk {
                        cmd.arg(self.key(k));
                    }
                    let values: Vec<Option<Vec<u8>>> =
                        cmd.query_async(&mut conn).await.map_err(redis_err)?;
                    Ok(chunk.into_iter().zip(values).collect())
                },
            ))
            .buffer_unordered(self.cfg.max_get_multi_concurrency.max(1))
            .collect()
            .await;
        let mut out = HashMap::new();
        for b in batches {
            for (k, v) in b? {
                if let Some(v) = v {
                    out.insert(k, Bytes::from(v));
                }
            }
        }
        Ok(out)
    }

    async fn set_multi(
        &self,
        items: &[(String, Bytes)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let size = self.cfg.set_multi_batch_size.max(1);
        let results: Vec<Result<(), BackendError>> =
            futures::stream::iter(items.chunks(size).map(<[(String, Bytes)]>::to_vec).map(
                |chunk| async move {
                    let mut conn = self.conn.clone();
                    let mut pipe = redis::pipe();
                    for (k, v) in &chunk {
                        pipe.cmd("SET")
                            .arg(self.key(k))
                            .arg(&v[..])
                            .arg("PX")
                            .arg(ms)
                            .ignore();
                    }
                    pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
                },
            ))
            .buffer_unordered(self.cfg.max_set_multi_concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }
}
