//! mTLS against a real StoreAPI server (the in-memory store over tonic, with our acceptor):
//! the negative matrix, identity allow-lists, and rotation of certificate, key and CA bundle without a
//! restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_pki::channel::GrpcChannel;
use meridian_pki::issue::{self, Issued, KeyType, Usage, Validity};
use meridian_pki::tls::{
    ClientTls, ClientTlsFiles, Reloadable, ServerTls, ServerTlsFiles, ServerTlsOptions,
    TlsConnector, TlsIncoming,
};
use meridian_storeapi::client::StoreClient;

use meridian_storeapi::{Store, server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;
use time::{Duration as TDuration, OffsetDateTime};
use tokio::net::TcpListener;

const EDGE: &str = "edge-0.cluster-a.example";

fn write(dir: &Path, name: &str, i: &Issued) -> (PathBuf, PathBuf) {
    issue::write_pair(dir, name, i, true).unwrap()
}

fn server_cert(ca: &Issued) -> Issued {
    issue::issue(
        ca,
        Usage::Server,
        "edge-0",
        &[EDGE.into(), "localhost".into()],
        &["127.0.0.1".parse().unwrap()],
        KeyType::P256,
        Validity::days(30).unwrap(),
    )
    .unwrap()
}

fn client_cert(ca: &Issued, name: &str) -> Issued {
    issue::issue(
        ca,
        Usage::Client,
        name,
        &[],
        &[],
        KeyType::P256,
        Validity::days(30).unwrap(),
    )
    .unwrap()
}

/// A CA (written to `d/ca.crt`) and an `edge-0` server TLS configuration requiring client certificates
/// from it.
fn ca_and_server(d: &Path, opts: ServerTlsOptions) -> (Issued, PathBuf, Arc<ServerTls>) {
    let ca = issue::new_ca("CA", KeyType::P256, Validity::days(365).unwrap()).unwrap();
    let (ca_crt, _) = write(d, "ca", &ca);
    let (srv_crt, srv_key) = write(d, "edge-0", &server_cert(&ca));
    let tls = ServerTls::load(
        "test",
        ServerTlsFiles {
            cert: srv_crt,
            key: srv_key,
            client_ca: Some(ca_crt.clone()),
        },
        opts,
    )
    .unwrap();
    (ca, ca_crt, tls)
}

struct Running {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(tls: Arc<ServerTls>) -> Running {
    let store = crate::up_store();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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
    Running { addr, _stop: tx }
}

/// Info over a fresh TLS channel.
async fn info_with(connector: TlsConnector, addr: SocketAddr) -> Result<(), String> {
    let target: http::Uri = format!("http://{addr}").parse().unwrap();
    let options = meridian_pki::channel::ChannelOptions {
        connect_timeout: Some(Duration::from_secs(5)),
        ..meridian_pki::channel::ChannelOptions::new(target.clone())
    };
    let channel = GrpcChannel::lazy(target, options, connector).unwrap();
    channel
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    StoreClient::new(channel, addr.to_string())
        .info()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn info_tls(tls: &Arc<ClientTls>, addr: SocketAddr, sni: &str) -> Result<(), String> {
    info_with(tls.connector(Some(sni)).unwrap(), addr).await
}

fn load_roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A client configuration built with rustls directly, bypassing our validation, to present bad
/// material.
fn raw_client(
    ca: &Path,
    cert: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(meridian_pki::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(load_roots(ca));
    let mut cfg = match cert {
        Some(i) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(i.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn sni() -> Option<ServerName<'static>> {
    Some(ServerName::try_from(EDGE.to_owned()).unwrap())
}

fn dated(ca: &Issued, usage: Usage, name: &str, from_days: i64, to_days: i64) -> Issued {
    let now = OffsetDateTime::now_utc();
    let v = Validity {
        not_before: now + TDuration::days(from_days),
        not_after: now + TDuration::days(to_days),
    };
    let dns: Vec<String> = if usage == Usage::Server {
        vec![EDGE.into()]
    } else {
        vec![]
    };
    issue::issue(ca, usage, name, &dns, &[], KeyType::P256, v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_matrix() {
    meridian_pki::install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (ca, ca_crt, tls) = ca_and_server(d, ServerTlsOptions::default());
    let other_ca = issue::new_ca("Other CA", KeyType::P256, Validity::days(365).unwrap()).unwrap();
    let gateway = client_cert(&ca, "gateway");
    let (gw_crt, gw_key) = write(d, "gateway", &gateway);
    let srv = serve(tls.clone()).await;

    // The valid client succeeds, over TLS 1.3 (default) and TLS 1.2.
    let good = ClientTls::load(
        "gw",
        ClientTlsFiles {
            ca: ca_crt.clone(),
            cert: Some(gw_crt),
            key: Some(gw_key),
        },
    )
    .unwrap();
    info_tls(&good, srv.addr, EDGE).await.unwrap();
    let tls12 = raw_client(&ca_crt, Some(&gateway), &[&rustls::version::TLS12]);
    info_with(TlsConnector::from_config(tls12, sni()), srv.addr)
        .await
        .unwrap();

    let failures_before = tls.metrics().handshake_failures.get();
    let rejected: Vec<(&str, Arc<rustls::ClientConfig>)> = vec![
        ("no client certificate", raw_client(&ca_crt, None, BOTH)),
        (
            "client certificate from another CA",
            raw_client(&ca_crt, Some(&client_cert(&other_ca, "gateway")), BOTH),
        ),
        (
            "expired client certificate",
            raw_client(
                &ca_crt,
                Some(&dated(&ca, Usage::Client, "gateway", -30, -1)),
                BOTH,
            ),
        ),
        (
            "not-yet-valid client certificate",
            raw_client(
                &ca_crt,
                Some(&dated(&ca, Usage::Client, "gateway", 1, 30)),
                BOTH,
            ),
        ),
        (
            "serverAuth-only certificate used as a client",
            raw_client(&ca_crt, Some(&server_cert(&ca)), BOTH),
        ),
    ];
    for (case, cfg) in rejected {
        let r = info_with(TlsConnector::from_config(cfg, sni()), srv.addr).await;
        assert!(r.is_err(), "{case}: accepted");
    }
    // The client sees the server's alert before the server's connection task has counted the
    // failure: wait (bounded) for the count rather than read it at once.
    let counted = async {
        while tls.metrics().handshake_failures.get() < failures_before + 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), counted)
            .await
            .is_ok(),
        "handshake failures not counted: {}",
        tls.metrics().handshake_failures.get()
    );

    // Our client refuses a server whose certificate does not match the name it asked for.
    let r = info_tls(&good, srv.addr, "edge-9.cluster-z.example").await;
    assert!(r.is_err(), "SAN mismatch accepted");
    // Our loader refuses material that does not verify, naming the file.
    let (bad_crt, bad_key) = write(d, "expired", &dated(&ca, Usage::Client, "gateway", -30, -1));
    let e = ClientTls::load(
        "x",
        ClientTlsFiles {
            ca: ca_crt.clone(),
            cert: Some(bad_crt.clone()),
            key: Some(bad_key),
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("expired") && e.to_string().contains(&*bad_crt.to_string_lossy()),
        "{e}"
    );
    let (sc, sk) = write(d, "server-as-client", &server_cert(&ca));
    let e = ClientTls::load(
        "x",
        ClientTlsFiles {
            ca: ca_crt.clone(),
            cert: Some(sc),
            key: Some(sk),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("client certificate"), "{e}");

    // Plaintext HTTP/2 to the TLS port.
    let plain = async {
        let c = StoreClient::connect_plaintext(&srv.addr.to_string()).await?;
        c.info().await
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), plain)
            .await
            .unwrap()
            .is_err(),
        "plaintext accepted"
    );

    // TLS 1.0 and 1.1 clients (openssl, with its own minimums lowered).
    if let Some(openssl) = meridian_testkit::require("openssl", "apt-get install openssl") {
        for flag in ["-tls1", "-tls1_1"] {
            let out = std::process::Command::new(&openssl)
                .args([
                    "s_client",
                    flag,
                    "-cipher",
                    "DEFAULT:@SECLEVEL=0",
                    "-connect",
                    &srv.addr.to_string(),
                    "-servername",
                    EDGE,
                ])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            // openssl reports the attempted protocol even on failure; a refused handshake has no
            // cipher and no server certificate.
            assert!(
                text.contains("Cipher is (NONE)") && text.contains("no peer certificate available"),
                "{flag}: handshake succeeded:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_allow_list() {
    meridian_pki::install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (ca, ca_crt, tls) = ca_and_server(
        d,
        ServerTlsOptions {
            allowed_clients: vec!["gateway".into()],
            ..Default::default()
        },
    );
    let srv = serve(tls).await;
    for (name, ok) in [("gateway", true), ("intruder", false)] {
        let (c, k) = write(d, name, &client_cert(&ca, name));
        let client = ClientTls::load(
            name,
            ClientTlsFiles {
                ca: ca_crt.clone(),
                cert: Some(c),
                key: Some(k),
            },
        )
        .unwrap();
        assert_eq!(
            info_tls(&client, srv.addr, EDGE).await.is_ok(),
            ok,
            "{name}"
        );
    }
}

/// The certificate a server presents to a new connection.
async fn presented(addr: SocketAddr, ca: &Path, client: &Issued) -> Vec<u8> {
    let cfg = raw_client(ca, Some(client), BOTH);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(sni().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(i: &Issued) -> Vec<u8> {
    CertificateDer::from_pem_slice(i.cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_without_restart() {
    meridian_pki::install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let ca1 = issue::new_ca("CA one", KeyType::P256, Validity::days(365).unwrap()).unwrap();
    let ca2 = issue::new_ca("CA two", KeyType::P384, Validity::days(365).unwrap()).unwrap();
    let client_ca = d.join("client-ca.crt");
    std::fs::write(&client_ca, &ca1.cert_pem).unwrap();
    let server_ca = d.join("server-ca.crt");
    std::fs::write(&server_ca, &ca1.cert_pem).unwrap();
    let first = server_cert(&ca1);
    let (srv_crt, srv_key) = write(d, "server", &first);
    let tls = ServerTls::load(
        "rotating",
        ServerTlsFiles {
            cert: srv_crt.clone(),
            key: srv_key.clone(),
            client_ca: Some(client_ca.clone()),
        },
        ServerTlsOptions::default(),
    )
    .unwrap();
    let srv = serve(tls.clone()).await;
    let c1 = client_cert(&ca1, "gateway");
    let c2 = client_cert(&ca2, "gateway");
    let (c1_crt, c1_key) = write(d, "client1", &c1);
    let (c2_crt, c2_key) = write(d, "client2", &c2);
    let client1 = ClientTls::load(
        "c1",
        ClientTlsFiles {
            ca: server_ca.clone(),
            cert: Some(c1_crt),
            key: Some(c1_key),
        },
    )
    .unwrap();
    let client2 = ClientTls::load(
        "c2",
        ClientTlsFiles {
            ca: server_ca.clone(),
            cert: Some(c2_crt),
            key: Some(c2_key),
        },
    )
    .unwrap();

    // An established connection, used before and after every rotation.
    let established = client1
        .channel(&srv.addr.to_string(), Some(EDGE), Duration::from_secs(5))
        .await
        .unwrap();
    let established = StoreClient::new(established, "established");
    established.info().await.unwrap();
    assert_eq!(presented(srv.addr, &server_ca, &c1).await, der(&first));

    // 1. New server certificate and key.
    let second = server_cert(&ca1);
    write(d, "server", &second);
    assert!(tls.reload().unwrap());
    assert_eq!(
        presented(srv.addr, &server_ca, &c1).await,
        der(&second),
        "new connections use the new certificate"
    );
    established.info().await.unwrap();
    // Unchanged files: no rebuild.
    assert!(!tls.reload().unwrap());

    // 2. CA bundle old + new: clients of both CAs are accepted.
    std::fs::write(&client_ca, format!("{}{}", ca1.cert_pem, ca2.cert_pem)).unwrap();
    assert!(tls.reload().unwrap());
    info_tls(&client1, srv.addr, EDGE).await.unwrap();
    info_tls(&client2, srv.addr, EDGE).await.unwrap();

    // 3. New CA only: the old CA's clients are refused, the new one's accepted; the established
    // connection keeps working.
    std::fs::write(&client_ca, &ca2.cert_pem).unwrap();
    assert!(tls.reload().unwrap());
    assert!(
        info_tls(&client1, srv.addr, EDGE).await.is_err(),
        "old-CA client accepted after rotation"
    );
    info_tls(&client2, srv.addr, EDGE).await.unwrap();
    established.info().await.unwrap();

    // 4. A corrupt file is refused and the old material stays.
    let failures = tls.metrics().reload_failures.get();
    std::fs::write(
        &srv_crt,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains(&*srv_crt.to_string_lossy()), "{e}");
    assert_eq!(tls.metrics().reload_failures.get(), failures + 1);
    assert_eq!(
        presented(srv.addr, &server_ca, &c2).await,
        der(&second),
        "old material still in use"
    );
    // A key that does not match the certificate is refused too; so is a CA file without a certificate.
    std::fs::write(&srv_crt, &second.cert_pem).unwrap();
    std::fs::write(&srv_key, server_cert(&ca1).key_pem).unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    std::fs::write(&srv_key, &second.key_pem).unwrap();
    std::fs::write(&client_ca, &second.key_pem).unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    info_tls(&client2, srv.addr, EDGE).await.unwrap();
}

/// Kubernetes mounts Secrets as `<dir>/<key> -> ..data/<key>` with `..data -> ..<timestamp>`, and
/// rotates by swapping `..data`. The watcher must notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_picks_up_kubernetes_symlink_swap() {
    meridian_pki::install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let ca = issue::new_ca("CA", KeyType::P256, Validity::days(365).unwrap()).unwrap();
    let mount = d.join("mount");
    std::fs::create_dir_all(&mount).unwrap();
    let publish = |generation: u32, cert: &Issued| {
        let data = mount.join(format!("..2026_{generation}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("tls.crt"), &cert.cert_pem).unwrap();
        std::fs::write(data.join("tls.key"), &cert.key_pem).unwrap();
        std::fs::write(data.join("ca.crt"), &ca.cert_pem).unwrap();
        let tmp = mount.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..2026_{generation}"), &tmp).unwrap();
        std::fs::rename(&tmp, mount.join("..data")).unwrap();
    };
    let first = server_cert(&ca);
    publish(1, &first);
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), mount.join(f)).unwrap();
    }
    let tls = ServerTls::load(
        "watched",
        ServerTlsFiles {
            cert: mount.join("tls.crt"),
            key: mount.join("tls.key"),
            client_ca: Some(mount.join("ca.crt")),
        },
        ServerTlsOptions::default(),
    )
    .unwrap();
    // A long period: only the file watch can make this test pass in time.
    let watcher = meridian_pki::tls::watch(
        tls.clone() as Arc<dyn Reloadable>,
        Duration::from_secs(3600),
    )
    .unwrap();
    let srv = serve(tls.clone()).await;
    let client = client_cert(&ca, "gateway");
    let ca_path = mount.join("ca.crt");
    assert_eq!(presented(srv.addr, &ca_path, &client).await, der(&first));

    let second = server_cert(&ca);
    publish(2, &second);
    // Wait for readiness (the reload counter), not for a fixed time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tls.metrics().reloads.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher did not reload after the ..data swap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(presented(srv.addr, &ca_path, &client).await, der(&second));
    watcher.stop().await;
}

/// The HTTP side: axum over `TlsIncoming`, configured with a Prometheus-format web config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serves_https_with_client_certificates() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    meridian_pki::install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let ca = issue::new_ca("CA", KeyType::P256, Validity::days(365).unwrap()).unwrap();
    let (ca_crt, _) = write(d, "ca", &ca);
    write(d, "http", &server_cert(&ca));
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: http.crt\n  key_file: http.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\n",
    )
    .unwrap();
    let tls = meridian_pki::tls::load_web_config(&web).unwrap().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = TlsIncoming::new(tls, listener).unwrap();
    let addr = incoming.local_addr();
    let app = axum::Router::new().route("/-/healthy", axum::routing::get(|| async { "Healthy" }));
    tokio::spawn(async move { axum::serve(incoming, app).await });

    let get = |client: Option<Issued>| {
        let ca_crt = ca_crt.clone();
        async move {
            let mut cfg = (*raw_client(&ca_crt, client.as_ref(), BOTH)).clone();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(sni().unwrap(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let mut out = String::new();
            s.read_to_string(&mut out)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<String, String>(out)
        }
    };
    let ok = get(Some(client_cert(&ca, "gateway"))).await.unwrap();
    assert!(
        ok.starts_with("HTTP/1.1 200") && ok.ends_with("Healthy"),
        "{ok}"
    );
    let refused = get(None).await;
    assert!(
        refused.is_err() || !refused.as_ref().unwrap().contains("200"),
        "{refused:?}"
    );
}

/// A client that connects and never speaks is dropped after the handshake timeout, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout() {
    use tokio::io::AsyncReadExt;
    meridian_pki::install_crypto_provider();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (_, _, tls) = ca_and_server(
        d,
        ServerTlsOptions {
            handshake_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let srv = serve(tls.clone()).await;
    let mut silent = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 16];
    // The server closes the connection (EOF or reset) well before this outer limit.
    let r = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("server kept a silent connection open");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert_eq!(tls.metrics().handshake_failures.get(), 1);
}
