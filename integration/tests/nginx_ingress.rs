//! Through a real nginx (Debian's, started on loopback with its own prefix, stopped by pid): the gateway's
//! client reaches two mTLS StoreAPI servers through one nginx listener, selected by SNI host name, with
//! client certificates verified on both hops. Clients without a valid certificate are refused by nginx.
//! The nginx configuration is `deploy/nginx/grpc-mtls-ingress.conf.template`, rendered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::{Labels, Sample};
use meridian_pki::issue::{self, Issued, KeyType, Usage, Validity};
use meridian_pki::tls::{
    ClientTls, ClientTlsFiles, ServerTls, ServerTlsFiles, ServerTlsOptions, TlsIncoming,
};
use meridian_storeapi::client::StoreClient;
use meridian_storeapi::memstore::MemStore;
use meridian_storeapi::{Store, server};
use meridian_testkit::ChildGuard;

const HOSTS: [&str; 2] = ["edge-0.cluster-a.example", "edge-1.cluster-a.example"];

fn write(dir: &Path, name: &str, i: &Issued) {
    issue::write_pair(dir, name, i, true).unwrap();
}

fn leaf(ca: &Issued, usage: Usage, name: &str, dns: &[&str]) -> Issued {
    let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
    issue::issue(
        ca,
        usage,
        name,
        &dns,
        &[],
        KeyType::P256,
        Validity::days(7).unwrap(),
    )
    .unwrap()
}

/// An edge stand-in: the in-memory StoreAPI over mTLS, announcing `replica`.
async fn edge(pki: &Path, n: usize) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let store = MemStore::new(Labels::from_pairs([
        ("cluster", "a"),
        ("replica", &n.to_string()),
    ]));
    store
        .append(
            &Labels::from_pairs([("__name__", "up"), ("job", "edge")]),
            &[Sample::new(1000, 1.0)],
        )
        .unwrap();
    let tls = ServerTls::load(
        &format!("edge-{n}"),
        ServerTlsFiles {
            cert: pki.join(format!("edge-{n}.crt")),
            key: pki.join(format!("edge-{n}.key")),
            client_ca: Some(pki.join("ca.crt")),
        },
        ServerTlsOptions {
            allowed_clients: vec!["ingress-upstream".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = TlsIncoming::new(tls, listener).unwrap();
    let addr = incoming.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_incoming(
        Arc::new(store),
        incoming.into_stream(),
        async {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}

async fn replica_via(
    client: &Arc<ClientTls>,
    nginx: SocketAddr,
    host: &str,
) -> Result<String, String> {
    let channel = client
        .channel(&nginx.to_string(), Some(host), Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let c = StoreClient::new(channel, host);
    let info = c.info().await.map_err(|e| e.to_string())?;
    let labels = meridian_storeapi::labels_from_proto(&info.label_sets[0].labels);
    // A streamed Series call through both hops as well.
    let req = meridian_storeapi::series_request(
        0,
        10_000,
        &[meridian_core::Matcher::equal("__name__", "up")],
        false,
    );
    use futures::StreamExt as _;
    let mut frames = c.series(req).await.map_err(|e| e.to_string())?;
    let mut n = 0;
    while let Some(f) = frames.next().await {
        f.map_err(|e| e.to_string())?;
        n += 1;
    }
    assert_eq!(n, 1, "series through nginx");
    Ok(labels.get("replica").unwrap_or_default().to_owned())
}

/// nginx in front of two mTLS edge stand-ins, with the certificates of `deploy/nginx`'s template (plus a
/// client certificate `stranger` from another CA, whose CA is `other-ca`).
struct Ingress {
    dir: tempfile::TempDir,
    pki: std::path::PathBuf,
    listen: SocketAddr,
    edges: (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
    ),
    nginx: ChildGuard,
}

async fn ingress(nginx_bin: &Path) -> Ingress {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let prefix = dir.path().join("nginx");
    let ca = issue::new_ca("Meridian CA", KeyType::P256, Validity::days(30).unwrap()).unwrap();
    write(&pki, "ca", &ca);
    for (n, host) in HOSTS.iter().enumerate() {
        write(
            &pki,
            &format!("ingress-edge-{n}"),
            &leaf(&ca, Usage::Server, "ingress", &[host]),
        );
        write(
            &pki,
            &format!("edge-{n}"),
            &leaf(&ca, Usage::Server, "edge", &[host]),
        );
    }
    write(
        &pki,
        "ingress-upstream",
        &leaf(&ca, Usage::Client, "ingress-upstream", &[]),
    );
    write(&pki, "gateway", &leaf(&ca, Usage::Client, "gateway", &[]));
    let other_ca = issue::new_ca("Other CA", KeyType::P256, Validity::days(30).unwrap()).unwrap();
    write(&pki, "other-ca", &other_ca);
    write(
        &pki,
        "stranger",
        &leaf(&other_ca, Usage::Client, "gateway", &[]),
    );

    let (e0, s0) = edge(&pki, 0).await;
    let (e1, s1) = edge(&pki, 1).await;
    let (nginx, listen) =
        meridian_testkit::nginx_ingress(nginx_bin, &prefix, &pki, [e0, e1], "cluster-a.example");

    Ingress {
        dir,
        pki,
        listen,
        edges: (e0, s0, e1, s1),
        nginx,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_reaches_two_edges_through_one_nginx_listener() {
    meridian_pki::install_crypto_provider();
    let Some(nginx_bin) = meridian_testkit::require("nginx", "apt-get install nginx") else {
        return;
    };
    let Ingress {
        dir: _dir,
        pki,
        listen,
        edges: (e0, _s0, _e1, _s1),
        nginx,
    } = ingress(&nginx_bin).await;
    let gateway = ClientTls::load(
        "gateway",
        ClientTlsFiles {
            ca: pki.join("ca.crt"),
            cert: Some(pki.join("gateway.crt")),
            key: Some(pki.join("gateway.key")),
        },
    )
    .unwrap();
    // SNI picks the edge: replica 0 behind edge-0's host name, replica 1 behind edge-1's.
    assert_eq!(replica_via(&gateway, listen, HOSTS[0]).await.unwrap(), "0");
    assert_eq!(replica_via(&gateway, listen, HOSTS[1]).await.unwrap(), "1");

    // No client certificate, or one from another CA: nginx refuses.
    let anonymous = ClientTls::load(
        "anon",
        ClientTlsFiles {
            ca: pki.join("ca.crt"),
            cert: None,
            key: None,
        },
    )
    .unwrap();
    let r = replica_via(&anonymous, listen, HOSTS[0]).await;
    assert!(r.is_err(), "client without certificate got through: {r:?}");
    let stranger = meridian_pki::tls::TlsConnector::from_config(
        stranger_config(&pki),
        Some(rustls::pki_types::ServerName::try_from(HOSTS[0].to_owned()).unwrap()),
    );
    let target: tonic::transport::Uri = format!("http://{listen}").parse().unwrap();
    let options = meridian_pki::channel::ChannelOptions {
        connect_timeout: Some(Duration::from_secs(5)),
        ..meridian_pki::channel::ChannelOptions::new(target.clone())
    };
    let ch = meridian_pki::channel::GrpcChannel::lazy(target, options, stranger).unwrap();
    let r = match ch.connect().await {
        Ok(()) => StoreClient::new(ch, "stranger")
            .info()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(r.is_err(), "client certificate from another CA got through");
    // Our edges only accept nginx's upstream identity: the gateway cannot bypass the ingress.
    let direct = async {
        let ch = gateway
            .channel(&e0.to_string(), Some(HOSTS[0]), Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        StoreClient::new(ch, "direct")
            .info()
            .await
            .map_err(|e| e.to_string())
    };
    assert!(
        direct.await.is_err(),
        "edge accepted a client outside its allow-list"
    );
    drop(nginx);
}

fn stranger_config(pki: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.join("ca.crt")).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(meridian_pki::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_file(pki.join("stranger.crt")).unwrap()],
            PrivateKeyDer::from_pem_file(pki.join("stranger.key")).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// The gateway finds the edges behind the ingress through DNS (`dnssrvnoa+`: the SRV targets are the
/// edges' public names, all pointing at the ingress), reaches each under its own name (SNI) with the
/// settings of its endpoint config entry, and merges the replicas. A second entry with a client
/// certificate nginx does not trust fails, and queries name that endpoint in a partial-response warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_fans_out_through_nginx_found_by_srv_with_per_endpoint_sni() {
    use meridian_gateway::app::{Gateway, GatewayOptions};
    use meridian_gateway::endpoints::{EndpointGroup, EndpointSetOptions};
    use meridian_gateway::fanout::{FanoutOptions, QueryOptions};
    use meridian_gateway::queryable::{Queryable, SelectRequest};

    meridian_pki::install_crypto_provider();
    let Some(nginx_bin) = meridian_testkit::require("nginx", "apt-get install nginx") else {
        return;
    };
    let Some(dnsmasq_bin) = meridian_testkit::require("dnsmasq", "apt-get install dnsmasq-base")
    else {
        return;
    };
    let ing = ingress(&nginx_bin).await;
    let port = ing.listen.port();
    let hosts = ing.pki.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 {}\n127.0.0.1 {}\n", HOSTS[0], HOSTS[1]),
    )
    .unwrap();
    let dns_port = meridian_testkit::free_port();
    let mut args = vec![
        "--local=/cluster-a.example/".to_string(),
        format!("--addn-hosts={}", hosts.display()),
    ];
    for h in HOSTS {
        args.push(format!(
            "--srv-host=_grpc._tcp.edges.cluster-a.example,{h},{port}"
        ));
    }
    let _dns = meridian_testkit::dnsmasq(&dnsmasq_bin, dns_port, &args);

    // A CA bundle with both CAs, so the stranger's certificate is valid on our side.
    let bundle = [
        std::fs::read_to_string(ing.pki.join("ca.crt")).unwrap(),
        std::fs::read_to_string(ing.pki.join("other-ca.crt")).unwrap(),
    ]
    .concat();
    std::fs::write(ing.pki.join("both-cas.crt"), bundle).unwrap();
    let stranger = format!("127.0.0.1:{port}");
    let config = ing.pki.join("endpoints.yaml");
    std::fs::write(
        &config,
        format!(
            "- endpoints: [\"dnssrvnoa+_grpc._tcp.edges.cluster-a.example\"]\n  \
               tls_config: {{ca_file: ca.crt, cert_file: gateway.crt, key_file: gateway.key}}\n\
             - endpoints: [\"{stranger}\"]\n  \
               tls_config:\n    ca_file: both-cas.crt\n    cert_file: stranger.crt\n    \
             key_file: stranger.key\n    server_name: {}\n",
            HOSTS[1]
        ),
    )
    .unwrap();

    let gateway = Gateway::start(GatewayOptions {
        dns_server: Some(format!("127.0.0.1:{dns_port}").parse().unwrap()),
        dns_ttl_cap: Duration::from_secs(1),
        endpoints: EndpointSetOptions {
            dns_interval: Duration::from_secs(1),
            info_interval: Duration::from_millis(200),
            config_file: Some(config),
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
        fanout: FanoutOptions {
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
        ..GatewayOptions::new(
            EndpointGroup {
                specs: vec![],
                transport: Default::default(),
            },
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    })
    .await
    .unwrap();

    let via_names: Vec<String> = HOSTS.iter().map(|h| format!("{h}:{port}")).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stores = gateway.fanout().store_set().stores();
        let healthy: Vec<String> = stores
            .iter()
            .filter(|s| s.meta.is_some() && s.unhealthy.is_none())
            .map(|s| s.name.clone())
            .collect();
        let refused = stores
            .iter()
            .any(|s| s.name == stranger && s.unhealthy.is_some());
        if healthy == via_names && refused {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "endpoints not as expected: {:?}",
            stores
                .iter()
                .map(|s| (&s.name, s.meta.is_some(), &s.unhealthy))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let select = |dedup: bool| {
        let q = gateway.fanout().querier(QueryOptions {
            dedup,
            ..Default::default()
        });
        async move {
            q.select(SelectRequest {
                matchers: vec![meridian_core::Matcher::equal("__name__", "up")],
                start: 0,
                end: 10_000,
                hints: Default::default(),
            })
            .await
            .unwrap()
        }
    };
    // Both replicas, each reached under its own name through the one ingress address.
    let all = select(false).await;
    let replicas: Vec<&str> = all
        .series
        .iter()
        .map(|s| s.labels.get("replica").unwrap())
        .collect();
    assert_eq!(replicas, vec!["0", "1"]);
    assert_eq!(all.warnings.len(), 1, "{:?}", all.warnings);
    assert!(
        all.warnings[0].starts_with(&format!("{stranger}: ")),
        "warning does not name the endpoint: {:?}",
        all.warnings
    );
    // Deduplicated over the replica label: one series.
    let merged = select(true).await;
    assert_eq!(merged.series.len(), 1);
    assert_eq!(merged.series[0].labels.get("replica"), None);
    assert_eq!(merged.series[0].samples, vec![Sample::new(1000, 1.0)]);

    // The stores view shows the refused endpoint with its error.
    let view =
        meridian_testkit::http_get(&gateway.http_addr().to_string(), "/api/v1/stores").json();
    let all_stores: Vec<&serde_json::Value> = view["data"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .collect();
    assert_eq!(all_stores.len(), 3, "{view}");
    let refused = all_stores
        .iter()
        .find(|s| s["name"] == stranger.as_str())
        .unwrap();
    assert!(refused["lastError"].is_string(), "{refused}");
    gateway.shutdown().await;
    drop(ing.nginx);
}
