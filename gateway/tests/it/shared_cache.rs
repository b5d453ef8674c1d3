//! The shared-cache seam's acceptance suite, run against every backend: the in-memory reference, a
//! real memcached and a real Redis (Debian's). Values come back byte for byte (binary, empty, large),
//! absent keys are absent, batches split and join without loss, writes overwrite; and through
//! [`SharedCache`], a backend that goes away mid-use turns reads into misses within the timeout.
//! Redis is also run over mutual TLS (certificates from `meridian-pki`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_gateway::cache::config::{CacheConfig, Role};
use meridian_gateway::cache::connect::connect;
use meridian_gateway::cache::inmemory::InMemory;
use meridian_gateway::cache::shared::{
    Backend, CacheLabels, OperationLabels, SharedCache, SharedMetrics,
};
use meridian_testkit::CacheServer;

async fn acceptance(b: &dyn Backend) {
    let kind = b.kind();
    let ttl = Duration::from_secs(600);
    // Binary values (memcached's line protocol must not see them as commands), an empty one, one
    // of half a megabyte.
    let mut items: Vec<(String, Bytes)> = vec![
        (
            "acc:bin".into(),
            Bytes::from_static(b"a\r\nEND\r\n\x00\xff"),
        ),
        ("acc:empty".into(), Bytes::new()),
        ("acc:large".into(), Bytes::from(vec![7u8; 500_000])),
    ];
    for i in 0..250 {
        items.push((format!("acc:k{i}"), Bytes::from(format!("v{i}"))));
    }
    b.set_multi(&items, ttl)
        .await
        .unwrap_or_else(|e| panic!("{kind}: set: {e}"));
    let mut keys: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    keys.push("acc:absent".into());
    let got = b
        .get_multi(&keys)
        .await
        .unwrap_or_else(|e| panic!("{kind}: get: {e}"));
    assert!(!got.contains_key("acc:absent"), "{kind}");
    for (k, v) in &items {
        assert_eq!(got.get(k), Some(v), "{kind}: {k}");
    }
    assert_eq!(got.len(), items.len(), "{kind}");
    // Overwrite.
    b.set_multi(&[("acc:k1".into(), Bytes::from_static(b"new"))], ttl)
        .await
        .unwrap();
    let got = b.get_multi(&["acc:k1".into()]).await.unwrap();
    assert_eq!(got["acc:k1"], Bytes::from_static(b"new"), "{kind}");
    // Nothing asked, nothing answered.
    assert!(b.get_multi(&[]).await.unwrap().is_empty(), "{kind}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_backend() {
    acceptance(&InMemory::new(64 << 20)).await;
}

async fn shared(yaml: &str, metrics: &Arc<SharedMetrics>) -> Arc<SharedCache> {
    let cfg = CacheConfig::parse(yaml, "test", Role::ResponseCache).unwrap();
    connect("test", &cfg, None, metrics).await.unwrap().unwrap()
}

/// Reads through a [`SharedCache`] whose server is killed: misses (no error) within the timeout.
async fn killed_mid_use(mut server: CacheServer, cache: Arc<SharedCache>, metrics: &SharedMetrics) {
    let kind = cache.backend_kind();
    cache.set(vec![("kill:a".into(), Bytes::from_static(b"1"))]);
    let keys = vec!["kill:a".to_owned()];
    // The write is asynchronous: wait for it to land (readiness, not a fixed sleep).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.get(&keys, |_, v| Some(v.clone())).await.is_empty() {
        assert!(Instant::now() < deadline, "{kind}: the write never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let timeout = cache.options().timeout;
    for _ in 0..3 {
        let started = Instant::now();
        let found = cache.get(&keys, |_, v| Some(v.clone())).await;
        assert!(found.is_empty(), "{kind}");
        assert!(
            started.elapsed() < timeout + Duration::from_millis(200),
            "{kind}: a read of a dead server took {:?}",
            started.elapsed()
        );
    }
    let errors = metrics
        .errors
        .get_or_create(&OperationLabels {
            name: "test",
            backend: kind,
            operation: "get",
        })
        .get();
    assert!(errors >= 1, "{kind}: the failures are counted");
    let l = CacheLabels {
        name: "test",
        backend: kind,
    };
    assert!(metrics.misses.get_or_create(&l).get() >= 3, "{kind}");
    cache.set(vec![("kill:b".into(), Bytes::from_static(b"2"))]);
    cache.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_backend() {
    let Some(server) = CacheServer::memcached() else {
        return;
    };
    let metrics = Arc::new(SharedMetrics::default());
    // Small batches, so a multi-get is many commands.
    let cache = shared(
        &format!(
            "type: MEMCACHED\nconfig:\n  addresses: [\"{}\"]\n  max_get_multi_batch_size: 7\n  timeout: 300ms\n",
            server.addr
        ),
        &metrics,
    )
    .await;
    let cfg = CacheConfig::parse(
        &format!(
            "type: MEMCACHED\nconfig:\n  addresses: [\"{}\"]\n  max_get_multi_batch_size: 7\n",
            server.addr
        ),
        "test",
        Role::ResponseCache,
    )
    .unwrap();
    let meridian_gateway::cache::config::Backend::Memcached(m) = cfg.backend else {
        panic!()
    };
    let resolver = meridian_core::net::dns::DnsResolver::new(None).unwrap();
    let specs = vec![server.addr.parse().unwrap()];
    let backend = meridian_gateway::cache::memcached::Memcached::new(
        *m,
        meridian_gateway::discovery::EndpointDiscovery::new(resolver, specs),
    )
    .await;
    acceptance(&backend).await;
    killed_mid_use(server, cache, &metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend() {
    let Some(server) = CacheServer::redis() else {
        return;
    };
    let metrics = Arc::new(SharedMetrics::default());
    let yaml = format!(
        "type: REDIS\nconfig:\n  addr: \"{}\"\n  get_multi_batch_size: 10\n  set_multi_batch_size: 9\n  read_timeout: 300ms\n  write_timeout: 300ms\n",
        server.addr
    );
    let cfg = CacheConfig::parse(&yaml, "test", Role::ResponseCache).unwrap();
    let meridian_gateway::cache::config::Backend::Redis(r) = cfg.backend else {
        panic!()
    };
    let backend = meridian_gateway::cache::redis::Redis::connect(*r)
        .await
        .unwrap();
    acceptance(&backend).await;
    let cache = shared(&yaml, &metrics).await;
    killed_mid_use(server, cache, &metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_memcached_is_a_miss_not_an_error() {
    // Nothing listens on this port.
    let port = meridian_testkit::free_port();
    let metrics = Arc::new(SharedMetrics::default());
    let cache = shared(
        &format!("type: MEMCACHED\nconfig:\n  addresses: [\"127.0.0.1:{port}\"]\n"),
        &metrics,
    )
    .await;
    let started = Instant::now();
    assert!(
        cache
            .get(&["x".into()], |_, v| Some(v.clone()))
            .await
            .is_empty()
    );
    assert!(started.elapsed() < Duration::from_millis(700));
    cache.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_over_mutual_tls() {
    use meridian_pki::issue::{self, KeyType, Usage, Validity};
    meridian_pki::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = issue::new_ca("Meridian CA", KeyType::P256, Validity::days(30).unwrap()).unwrap();
    issue::write_pair(dir.path(), "ca", &ca, true).unwrap();
    let leaf = |usage, name: &str| {
        let ips = ["127.0.0.1".parse().unwrap()];
        let c = issue::issue(
            &ca,
            usage,
            name,
            &[],
            &ips,
            KeyType::P256,
            Validity::days(7).unwrap(),
        )
        .unwrap();
        issue::write_pair(dir.path(), name, &c, true).unwrap();
    };
    leaf(Usage::Server, "redis");
    leaf(Usage::Client, "gateway");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let Some(server) = CacheServer::redis_tls(
        &dir.path().join("redis.crt"),
        &dir.path().join("redis.key"),
        &dir.path().join("ca.crt"),
    ) else {
        return;
    };
    let yaml = |client: bool| {
        let certs = if client {
            format!(
                ", cert_file: {}, key_file: {}",
                p("gateway.crt"),
                p("gateway.key")
            )
        } else {
            String::new()
        };
        format!(
            "type: REDIS\nconfig:\n  addr: \"{}\"\n  dial_timeout: 2s\n  tls_enabled: true\n  tls_config: {{ca_file: {}{certs}}}\n",
            server.addr,
            p("ca.crt")
        )
    };
    let redis = |client: bool| {
        let cfg = CacheConfig::parse(&yaml(client), "test", Role::ResponseCache).unwrap();
        let meridian_gateway::cache::config::Backend::Redis(r) = cfg.backend else {
            panic!()
        };
        meridian_gateway::cache::redis::Redis::connect(*r)
    };
    acceptance(&redis(true).await.unwrap()).await;
    // The server requires a client certificate: without one the connection is refused, by name.
    let e = redis(false).await.unwrap_err();
    assert!(e.0.contains("redis"), "{e}");
}
