//! Thanos' cache configuration format, as `--query-range.response-cache-config(-file)`,
//! `--index-cache.config(-file)` and `--store.caching-bucket.config(-file)` take it:
//!
//! ```yaml
//! type: MEMCACHED        # IN-MEMORY | MEMCACHED | REDIS
//! config:
//!   addresses: ["dnssrv+_memcache._tcp.memcached.monitoring.svc"]
//!   timeout: 500ms
//! ```
//!
//! The `config` keys are those of Thanos' `MemcachedClientConfig` and `RedisClientConfig`
//! (pkg/cacheutil) and of its in-memory caches, with their defaults; unknown keys are errors with
//! line and column. What a key configures that Meridian has no counterpart for is accepted and
//! reported as ignored (`auto_discovery`, the circuit breaker, Redis' client-side `cache_size` and
//! `master_name`). Durations are Prometheus durations (`500ms`, `10s`, `24h`).

use std::time::Duration;

use meridian_core::promfmt::{PromDuration, parse_base2_bytes};
use serde::Deserialize;

/// A cache configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

/// A size as Thanos writes it in YAML (`model.Bytes`: `1MiB`, `250MB`, base 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_base2_bytes(&s)
            .map(Size)
            .map_err(serde::de::Error::custom)
    }
}

/// The memcached client (`MemcachedClientConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemcachedConfig {
    pub addresses: Vec<String>,
    pub timeout: Duration,
    pub max_idle_connections: usize,
    pub max_async_concurrency: usize,
    pub max_async_buffer_size: usize,
    pub max_get_multi_concurrency: usize,
    pub max_item_size: u64,
    pub max_get_multi_batch_size: usize,
    pub dns_provider_update_interval: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMemcached {
    #[serde(default)]
    addresses: Vec<String>,
    timeout: Option<PromDuration>,
    max_idle_connections: Option<usize>,
    max_async_concurrency: Option<usize>,
    max_async_buffer_size: Option<usize>,
    max_get_multi_concurrency: Option<usize>,
    max_item_size: Option<Size>,
    max_get_multi_batch_size: Option<usize>,
    dns_provider_update_interval: Option<PromDuration>,
    auto_discovery: Option<bool>,
    set_async_circuit_breaker_config: Option<serde_ignored_map::Any>,
    /// The response cache's item lifetime (`MemcachedResponseCacheConfig.Expiration`).
    expiration: Option<PromDuration>,
}

/// TLS of the Redis client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `1.0` … `1.3` (rustls speaks 1.2 and 1.3: a lower minimum changes nothing).
    #[serde(default)]
    pub min_version: String,
}

/// The Redis client (`RedisClientConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub addr: String,
    pub username: String,
    pub password: String,
    pub db: i64,
    pub prefix: String,
    pub dial_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_get_multi_concurrency: usize,
    pub get_multi_batch_size: usize,
    pub max_set_multi_concurrency: usize,
    pub set_multi_batch_size: usize,
    pub max_async_concurrency: usize,
    pub max_async_buffer_size: usize,
    pub tls_enabled: bool,
    pub tls_config: TlsConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(default)]
    addr: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    db: i64,
    #[serde(default)]
    prefix: String,
    dial_timeout: Option<PromDuration>,
    read_timeout: Option<PromDuration>,
    write_timeout: Option<PromDuration>,
    max_get_multi_concurrency: Option<usize>,
    get_multi_batch_size: Option<usize>,
    max_set_multi_concurrency: Option<usize>,
    set_multi_batch_size: Option<usize>,
    max_async_concurrency: Option<usize>,
    max_async_buffer_size: Option<usize>,
    #[serde(default)]
    tls_enabled: bool,
    #[serde(default)]
    tls_config: TlsConfig,
    cache_size: Option<Size>,
    #[serde(default)]
    master_name: String,
    set_async_circuit_breaker_config: Option<serde_ignored_map::Any>,
    expiration: Option<PromDuration>,
}

/// The in-memory caches' keys (the query frontend's `max_size`/`max_size_items`/`validity`, the
/// store gateway's `max_size`/`max_item_size`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawInMemory {
    /// Parsed by role (see [`CacheConfig::parse`]).
    max_size: Option<String>,
    max_size_items: Option<u64>,
    max_item_size: Option<Size>,
    validity: Option<PromDuration>,
}

/// Which backend, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// In this process: at most `max_size` bytes (`None`: the flag's or role's default).
    InMemory {
        max_size: Option<u64>,
        max_item_size: Option<u64>,
    },
    Memcached(Box<MemcachedConfig>),
    Redis(Box<RedisConfig>),
}

/// A cache configuration: the backend, how long items live, and what was accepted but ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub backend: Backend,
    /// `expiration` (memcached, Redis) or `validity` (in-memory); 24 h when unset or 0, as Thanos.
    pub expiration: Duration,
    /// Keys accepted without effect, for a warning at start-up.
    pub ignored: Vec<&'static str>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Which flag the configuration is for: each allows its own top-level keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `--query-range.response-cache-config`: `type`, `config`.
    ResponseCache,
    /// `--index-cache.config`: `type`, `config`, `enabled_items`, `ttl`.
    IndexCache,
    /// `--store.caching-bucket.config`: `type`, `config` and the caching bucket's keys.
    CachingBucket,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
}

/// The top level of every role (the caching bucket's own keys parsed and checked, most ignored:
/// Meridian caches chunks by reference, not by subrange).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed<C> {
    #[serde(rename = "type")]
    _kind: String,
    #[serde(default = "Option::default")]
    config: Option<C>,
    // Index cache.
    enabled_items: Option<Vec<String>>,
    ttl: Option<PromDuration>,
    // Caching bucket.
    chunk_subrange_size: Option<i64>,
    max_chunks_get_range_requests: Option<i64>,
    chunk_object_attrs_ttl: Option<PromDuration>,
    chunk_subrange_ttl: Option<PromDuration>,
    blocks_iter_ttl: Option<PromDuration>,
    metafile_exists_ttl: Option<PromDuration>,
    metafile_doesnt_exist_ttl: Option<PromDuration>,
    metafile_content_ttl: Option<PromDuration>,
    metafile_max_size: Option<Size>,
    blocks_list_ttl: Option<PromDuration>,
}

mod serde_ignored_map {
    /// Any YAML value (a section accepted without effect).
    #[derive(Debug)]
    pub(super) struct Any;

    impl<'de> serde::Deserialize<'de> for Any {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| Any)
        }
    }
}

/// go-humanize's `ParseBytes` (the query frontend's in-memory `max_size`): a number (commas and a
/// fraction allowed), optional spaces, then a unit, case-insensitive: `B`, SI `k`/`KB`…`EB` (powers
/// of 1000) or IEC `Ki`/`KiB`…`EiB` (powers of 1024); no unit means bytes.
pub fn parse_si_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .replace(',', "")
        .parse()
        .map_err(|_| format!("invalid size {s:?}"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "p" | "pb" => 1e15,
        "e" | "eb" => 1e18,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1_048_576.0,
        "gi" | "gib" => 1_073_741_824.0,
        "ti" | "tib" => 1_099_511_627_776.0,
        "pi" | "pib" => 1_125_899_906_842_624.0,
        "ei" | "eib" => 1_152_921_504_606_846_976.0,
        _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?}")),
    };
    let v = num * mult;
    if !v.is_finite() || v >= 1.8e19 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(v as u64)
}

fn positive(v: Option<usize>, default: usize, key: &str) -> Result<usize, String> {
    match v {
        None => Ok(default),
        Some(0) => Err(format!("config.{key} must be positive")),
        Some(n) => Ok(n),
    }
}

fn expiration(d: Option<PromDuration>) -> Duration {
    match d {
        Some(PromDuration(d)) if !d.is_zero() => d,
        _ => DAY,
    }
}

impl CacheConfig {
    /// Parses a configuration for `role`; `source_name` names it in errors (the flag or the file).
    pub fn parse(text: &str, source_name: &str, role: Role) -> Result<CacheConfig, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: source_name.to_owned(),
            message,
        };
        let head: Head = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
        fn typed<C: serde::de::DeserializeOwned>(text: &str) -> Result<Typed<C>, String> {
            serde_saphyr::from_str(text).map_err(|e| e.to_string())
        }
        let mut ignored = Vec::new();
        // Thanos upper-cases the type (`strings.ToUpper`): `memcached` is MEMCACHED.
        let (cfg, top) = match head.kind.to_ascii_uppercase().as_str() {
            "IN-MEMORY" => {
                let t: Typed<RawInMemory> = typed(text).map_err(err)?;
                let c = t.config.as_ref();
                let max_size = match c.and_then(|c| c.max_size.as_ref()) {
                    None => None,
                    // The query frontend's FIFO cache reads `max_size` with go-humanize (SI units,
                    // bare numbers); the store gateway's with `model.Bytes` (base 2).
                    Some(v) if role == Role::ResponseCache => {
                        Some(parse_si_bytes(v).map_err(|e| err(format!("config.max_size: {e}")))?)
                    }
                    Some(v) => Some(
                        parse_base2_bytes(v).map_err(|e| err(format!("config.max_size: {e}")))?,
                    ),
                };
                let max_item_size = c.and_then(|c| c.max_item_size).map(|s| s.0);
                if let (Some(item), Some(total)) = (max_item_size, max_size)
                    && item > total
                {
                    return Err(err(format!(
                        "config: max item size ({item}) cannot be bigger than overall cache size ({total})"
                    )));
                }
                if c.and_then(|c| c.max_size_items).is_some_and(|n| n > 0) {
                    ignored.push("config.max_size_items");
                }
                let validity = c.and_then(|c| c.validity);
                let cfg = CacheConfig {
                    backend: Backend::InMemory {
                        max_size,
                        max_item_size,
                    },
                    expiration: expiration(validity),
                    ignored: Vec::new(),
                };
                (cfg, top_keys(&t))
            }
            "MEMCACHED" => {
                let t: Typed<RawMemcached> = typed(text).map_err(err)?;
                let c = t
                    .config
                    .as_ref()
                    .ok_or_else(|| err("config: missing (memcached needs addresses)".into()))?;
                let mut cfg = memcached(c, &mut ignored).map_err(err)?;
                // The query frontend's memcached client (Cortex's) writes with 10 workers.
                if let (Role::ResponseCache, Backend::Memcached(m)) = (role, &mut cfg.backend)
                    && c.max_async_concurrency.is_none()
                {
                    m.max_async_concurrency = 10;
                }
                (cfg, top_keys(&t))
            }
            "REDIS" => {
                let t: Typed<RawRedis> = typed(text).map_err(err)?;
                let c = t
                    .config
                    .as_ref()
                    .ok_or_else(|| err("config: missing (redis needs addr)".into()))?;
                let cfg = redis(c, &mut ignored).map_err(err)?;
                (cfg, top_keys(&t))
            }
            other => {
                return Err(err(format!(
                    "type {other:?} is not supported: use IN-MEMORY, MEMCACHED or REDIS"
                )));
            }
        };
        for key in top {
            let allowed = match role {
                Role::ResponseCache => false,
                Role::IndexCache => matches!(key, "enabled_items" | "ttl"),
                Role::CachingBucket => !matches!(key, "enabled_items" | "ttl"),
            };
            if !allowed {
                return Err(err(format!("unknown field `{key}` for this flag")));
            }
            ignored.push(key);
        }
        Ok(CacheConfig { ignored, ..cfg })
    }

    /// Reads `file`, else `text` (the `-file` flag wins, as Thanos' `extflag.PathOrContent`); `None`
    /// when neither is given.
    pub fn from_flags(
        file: Option<&std::path::Path>,
        text: Option<&str>,
        flag: &str,
        role: Role,
    ) -> Result<Option<CacheConfig>, ConfigError> {
        match (file, text) {
            (Some(p), _) => {
                let name = format!("{flag}-file {}", p.display());
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    source_name: name.clone(),
                    message: format!("cannot read: {e}"),
                })?;
                CacheConfig::parse(&text, &name, role).map(Some)
            }
            (None, Some(t)) if !t.trim().is_empty() => CacheConfig::parse(t, flag, role).map(Some),
            _ => Ok(None),
        }
    }
}

/// The top-level keys set besides `type` and `config`.
fn top_keys<C>(t: &Typed<C>) -> Vec<&'static str> {
    let mut out = Vec::new();
    let set: [(&'static str, bool); 12] = [
        ("enabled_items", t.enabled_items.is_some()),
        ("ttl", t.ttl.is_some()),
        ("chunk_subrange_size", t.chunk_subrange_size.is_some()),
        (
            "max_chunks_get_range_requests",
            t.max_chunks_get_range_requests.is_some(),
        ),
        ("chunk_object_attrs_ttl", t.chunk_object_attrs_ttl.is_some()),
        ("chunk_subrange_ttl", t.chunk_subrange_ttl.is_some()),
        ("blocks_iter_ttl", t.blocks_iter_ttl.is_some()),
        ("metafile_exists_ttl", t.metafile_exists_ttl.is_some()),
        (
            "metafile_doesnt_exist_ttl",
            t.metafile_doesnt_exist_ttl.is_some(),
        ),
        ("metafile_content_ttl", t.metafile_content_ttl.is_some()),
        ("metafile_max_size", t.metafile_max_size.is_some()),
        ("blocks_list_ttl", t.blocks_list_ttl.is_some()),
    ];
    for (k, present) in set {
        if present {
            out.push(k);
        }
    }
    out
}

fn memcached(c: &RawMemcached, ignored: &mut Vec<&'static str>) -> Result<CacheConfig, String> {
    if c.addresses.is_empty() {
        return Err("config.addresses: no memcached addresses provided".into());
    }
    for (i, a) in c.addresses.iter().enumerate() {
        a.parse::<crate::discovery::EndpointSpec>()
            .map_err(|e| format!("config.addresses[{i}] {a:?}: {}", e.reason))?;
    }
    if c.auto_discovery == Some(true) {
        ignored.push("config.auto_discovery");
    }
    if c.set_async_circuit_breaker_config.is_some() {
        ignored.push("config.set_async_circuit_breaker_config");
    }
    let cfg = MemcachedConfig {
        addresses: c.addresses.clone(),
        timeout: c.timeout.map_or(Duration::from_millis(500), |d| d.0),
        max_idle_connections: c.max_idle_connections.unwrap_or(100),
        max_async_concurrency: positive(c.max_async_concurrency, 20, "max_async_concurrency")?,
        max_async_buffer_size: positive(c.max_async_buffer_size, 10_000, "max_async_buffer_size")?,
        max_get_multi_concurrency: positive(
            c.max_get_multi_concurrency,
            100,
            "max_get_multi_concurrency",
        )?,
        max_item_size: c.max_item_size.map_or(1 << 20, |s| s.0),
        max_get_multi_batch_size: c.max_get_multi_batch_size.unwrap_or(0),
        dns_provider_update_interval: c
            .dns_provider_update_interval
            .map_or(Duration::from_secs(10), |d| d.0),
    };
    if cfg.timeout.is_zero() {
        return Err("config.timeout must be positive".into());
    }
    if cfg.dns_provider_update_interval.is_zero() {
        return Err(
            "config.dns_provider_update_interval: DNS provider update interval must be positive"
                .into(),
        );
    }
    Ok(CacheConfig {
        backend: Backend::Memcached(Box::new(cfg)),
        expiration: expiration(c.expiration),
        ignored: Vec::new(),
    })
}

fn redis(c: &RawRedis, ignored: &mut Vec<&'static str>) -> Result<CacheConfig, String> {
    if c.addr.is_empty() {
        return Err("config.addr: no redis addr provided".into());
    }
    if !c.master_name.is_empty() {
        return Err(
            "config.master_name: Redis Sentinel is not supported; give the master's addr".into(),
        );
    }
    if c.addr.contains(',') {
        return Err(format!(
            "config.addr {:?}: one address only (Redis Cluster is not supported)",
            c.addr
        ));
    }
    if c.addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .is_none()
    {
        return Err(format!("config.addr {:?}: not host:port", c.addr));
    }
    if c.cache_size.is_some_and(|s| s.0 > 0) {
        ignored.push("config.cache_size");
    }
    if c.set_async_circuit_breaker_config.is_some() {
        ignored.push("config.set_async_circuit_breaker_config");
    }
    let tls = &c.tls_config;
    if c.tls_enabled && (tls.cert_file.is_empty() != tls.key_file.is_empty()) {
        return Err("config.tls_config: cert_file and key_file go together".into());
    }
    if !tls.server_name.is_empty() {
        ignored.push("config.tls_config.server_name");
    }
    if !matches!(tls.min_version.as_str(), "" | "1.0" | "1.1" | "1.2" | "1.3") {
        return Err(format!(
            "config.tls_config.min_version invalid: invalid TLS version: {}, valid values are 1.0, 1.1, 1.2, 1.3",
            tls.min_version
        ));
    }
    let cfg = RedisConfig {
        addr: c.addr.clone(),
        username: c.username.clone(),
        password: c.password.clone(),
        db: c.db,
        prefix: c.prefix.clone(),
        dial_timeout: c.dial_timeout.map_or(Duration::from_secs(5), |d| d.0),
        read_timeout: c.read_timeout.map_or(Duration::from_secs(3), |d| d.0),
        write_timeout: c.write_timeout.map_or(Duration::from_secs(3), |d| d.0),
        max_get_multi_concurrency: positive(
            c.max_get_multi_concurrency,
            100,
            "max_get_multi_concurrency",
        )?,
        get_multi_batch_size: positive(c.get_multi_batch_size, 100, "get_multi_batch_size")?,
        max_set_multi_concurrency: positive(
            c.max_set_multi_concurrency,
            100,
            "max_set_multi_concurrency",
        )?,
        set_multi_batch_size: positive(c.set_multi_batch_size, 100, "set_multi_batch_size")?,
        max_async_concurrency: positive(c.max_async_concurrency, 20, "max_async_concurrency")?,
        max_async_buffer_size: positive(c.max_async_buffer_size, 10_000, "max_async_buffer_size")?,
        tls_enabled: c.tls_enabled,
        tls_config: tls.clone(),
    };
    Ok(CacheConfig {
        backend: Backend::Redis(Box::new(cfg)),
        expiration: expiration(c.expiration),
        ignored: Vec::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str, role: Role) -> Result<CacheConfig, String> {
        CacheConfig::parse(text, "test", role).map_err(|e| e.to_string())
    }

    #[test]
    fn memcached_with_thanos_defaults() {
        let c = parse(
            "type: MEMCACHED\nconfig:\n  addresses: [\"127.0.0.1:11211\", \"dnssrv+_mc._tcp.x\"]\n",
            Role::IndexCache,
        )
        .unwrap();
        let Backend::Memcached(m) = c.backend else {
            panic!("{c:?}")
        };
        assert_eq!(m.timeout, Duration::from_millis(500));
        assert_eq!(m.max_item_size, 1 << 20);
        assert_eq!(m.max_idle_connections, 100);
        assert_eq!(m.max_async_concurrency, 20);
        assert_eq!(m.max_async_buffer_size, 10_000);
        assert_eq!(m.max_get_multi_batch_size, 0);
        assert_eq!(m.dns_provider_update_interval, Duration::from_secs(10));
        assert_eq!(c.expiration, DAY);
    }

    #[test]
    fn redis_with_thanos_defaults_and_tls() {
        let c = parse(
            "type: REDIS\nconfig:\n  addr: localhost:6379\n  db: 2\n  expiration: 1h\n  tls_enabled: true\n  tls_config: {ca_file: ca.pem}\n",
            Role::ResponseCache,
        )
        .unwrap();
        let Backend::Redis(r) = c.backend else {
            panic!("{c:?}")
        };
        assert_eq!(r.db, 2);
        assert_eq!(r.dial_timeout, Duration::from_secs(5));
        assert_eq!(r.read_timeout, Duration::from_secs(3));
        assert_eq!(r.get_multi_batch_size, 100);
        assert!(r.tls_enabled);
        assert_eq!(r.tls_config.ca_file, "ca.pem");
        assert_eq!(c.expiration, Duration::from_secs(3600));
    }

    #[test]
    fn bad_input_is_named() {
        let e = parse(
            "type: MEMCACHED\nconfig:\n  addresses: []\n",
            Role::ResponseCache,
        )
        .unwrap_err();
        assert!(e.contains("no memcached addresses"), "{e}");
        let e = parse(
            "type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  timout: 1s\n",
            Role::ResponseCache,
        )
        .unwrap_err();
        assert!(e.contains("timout") && e.contains("line 4"), "{e}");
        let e = parse("type: MEMCACHE\nconfig: {}\n", Role::ResponseCache).unwrap_err();
        assert!(
            e.contains("MEMCACHE") && e.contains("IN-MEMORY, MEMCACHED or REDIS"),
            "{e}"
        );
        let e = parse(
            "type: MEMCACHED\nconfig:\n  addresses: [\"dns+nohost\"]\n",
            Role::ResponseCache,
        )
        .unwrap_err();
        assert!(e.contains("addresses[0]") && e.contains("port"), "{e}");
        let e = parse(
            "type: MEMCACHED\nconfig:\n  addresses: [a:1]\n  max_item_size: 1\n",
            Role::ResponseCache,
        )
        .unwrap_err();
        assert!(e.contains("max_item_size") || e.contains("size"), "{e}");
        let e = parse("type: REDIS\nconfig:\n  addr: x\n", Role::ResponseCache).unwrap_err();
        assert!(e.contains("host:port"), "{e}");
        let e = parse(
            "type: IN-MEMORY\nchunk_subrange_size: 16000\n",
            Role::ResponseCache,
        )
        .unwrap_err();
        assert!(e.contains("chunk_subrange_size"), "{e}");
    }

    #[test]
    fn sizes_by_role_and_case_insensitive_types() {
        let c = parse(
            "type: in-memory\nconfig:\n  max_size: 1.5 MB\n",
            Role::ResponseCache,
        )
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::InMemory {
                max_size: Some(1_500_000),
                max_item_size: None
            }
        );
        let c = parse(
            "type: IN-MEMORY\nconfig:\n  max_size: 2048\n",
            Role::ResponseCache,
        )
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::InMemory {
                max_size: Some(2048),
                max_item_size: None
            }
        );
        let c = parse(
            "type: In-Memory\nconfig:\n  max_size: 1MB\n",
            Role::IndexCache,
        )
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::InMemory {
                max_size: Some(1 << 20),
                max_item_size: None
            }
        );
        let e = parse(
            "type: IN-MEMORY\nconfig:\n  max_size: 100MB\n  max_item_size: 125MB\n",
            Role::IndexCache,
        )
        .unwrap_err();
        assert!(e.contains("cannot be bigger"), "{e}");
        let c = parse(
            "type: memcached\nconfig:\n  addresses: [a:1]\n",
            Role::ResponseCache,
        )
        .unwrap();
        let Backend::Memcached(m) = c.backend else {
            panic!()
        };
        assert_eq!(m.max_async_concurrency, 10);
    }

    #[test]
    fn role_keys() {
        let c = parse(
            "type: IN-MEMORY\nconfig:\n  max_size: 1GB\n  max_item_size: 2MB\nenabled_items: [Postings]\n",
            Role::IndexCache,
        )
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::InMemory {
                max_size: Some(1 << 30),
                max_item_size: Some(2 << 20)
            }
        );
        assert_eq!(c.ignored, vec!["enabled_items"]);
        let c = parse(
            "type: MEMCACHED\nconfig:\n  addresses: [a:1]\nchunk_subrange_size: 16000\nmax_chunks_get_range_requests: 3\n",
            Role::CachingBucket,
        )
        .unwrap();
        assert!(matches!(c.backend, Backend::Memcached(_)));
    }
}
