//! The in-memory backend: a byte-bounded moka cache in this process, behind the same seam as memcached
//! and Redis (the reference the backend acceptance suite holds the others to, and a shared cache for
//! one process).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use super::shared::{Backend, BackendError};

/// Items and when they expire.
#[derive(Debug)]
pub struct InMemory {
    items: moka::future::Cache<String, (Bytes, tokio::time::Instant)>,
}

impl InMemory {
    /// At most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> InMemory {
        InMemory {
            items: moka::future::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &(Bytes, tokio::time::Instant)| {
                    u32::try_from(k.len() + v.0.len() + 48).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }
}

#[async_trait::async_trait]
impl Backend for InMemory {
    fn kind(&self) -> &'static str {
        "in-memory"
    }

    async fn get_multi(&self, keys: &[String]) -> Result<HashMap<String, Bytes>, BackendError> {
        let now = tokio::time::Instant::now();
        let mut out = HashMap::new();
        for k in keys {
            if let Some((v, expires)) = self.items.get(k).await
                && expires > now
            {
                out.insert(k.clone(), v);
            }
        }
        Ok(out)
    }

    async fn set_multi(
        &self,
        items: &[(String, Bytes)],
        ttl: Duration,
    ) -> Result<(), BackendError> {
        let expires = tokio::time::Instant::now() + ttl;
        for (k, v) in items {
            self.items.insert(k.clone(), (v.clone(), expires)).await;
        }
        Ok(())
    }
}
