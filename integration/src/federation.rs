//! A complete local federation on loopback, from the real binaries: a CA and certificates issued with
//! `meridian-pki`'s library; per cluster, a demo exporter and an HA pair of `meridian-edge` processes
//! (external labels `cluster` and `replica`, the replica taken from `$(POD_NAME)` as in Kubernetes),
//! each scraping itself, its twin, the gateway and the exporter, shipping blocks to a filesystem bucket
//! and serving the StoreAPI over mutual TLS; an embedded DNS server answering
//! `_grpc._tcp.<cluster>.meridian.local` SRV records; and a `meridian-gateway query` finding the edges
//! through those records, deduplicating by `replica`, reading the bucket, evaluating the bundled rules
//! and routing their alerts to a webhook this launcher serves (and prints).
//!
//! Used by the `meridian-federation` binary (README command 1) and by the end-to-end tests, which kill,
//! restart and reconfigure its processes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_pki::issue::{self, KeyType, Usage, Validity};
use tokio_util::sync::CancellationToken;

use crate::dns::{DnsServer, Srv, Zone};
use crate::exporter::Exporter;

/// The rules the gateway evaluates, shared with the Kubernetes base.
pub const RULES: &str = include_str!("../../deploy/kubernetes/base/meridian-rules.yml");
/// The DNS domain of the embedded server.
pub const DOMAIN: &str = "meridian.local";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory of the `meridian-edge` and `meridian-gateway` binaries.
    pub bin_dir: PathBuf,
    /// State: certificates, configs, TSDBs, the bucket, logs. Kept between runs.
    pub data_dir: PathBuf,
    /// The gateway's HTTP address (the Grafana datasource URL); port 0 picks a free one.
    pub gateway_http: SocketAddr,
    pub clusters: usize,
    pub replicas: usize,
    /// Edge scrape interval (Prometheus duration).
    pub scrape_interval: String,
    /// Whether the edges scrape anything (off: they only receive remote write, as in the benchmark).
    pub scrape: bool,
    /// Edge block range (`--tsdb.min-block-duration`): how soon blocks reach the bucket.
    pub block_duration: String,
    /// The gateway's rule evaluation interval.
    pub eval_interval: String,
    /// More gateway flags.
    pub gateway_args: Vec<String>,
    /// More edge flags (every edge).
    pub edge_args: Vec<String>,
    /// Answer the SRV queries with this dnsmasq binary instead of the embedded DNS server.
    pub dnsmasq: Option<PathBuf>,
    /// Thanos objstore YAML for the bucket (default: a filesystem bucket in the data directory).
    pub objstore: Option<String>,
    /// `RUST_LOG`-style filter for the components (`--log.level`).
    pub log_level: String,
}

impl Options {
    pub fn new(bin_dir: PathBuf, data_dir: PathBuf) -> Options {
        Options {
            bin_dir,
            data_dir,
            gateway_http: SocketAddr::new(LOCALHOST, 10902),
            clusters: 2,
            replicas: 2,
            scrape_interval: "5s".into(),
            scrape: true,
            block_duration: "2h".into(),
            eval_interval: "15s".into(),
            gateway_args: vec![],
            edge_args: vec![],
            dnsmasq: None,
            objstore: None,
            log_level: "info".into(),
        }
    }
}

/// A child process of the federation: its command line, log file and (while running) the process.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(&mut self) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // The logs go to files: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal reaches the launcher only, which then
            // stops the components in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends `signal` (`"TERM"`, `"KILL"`, `"HUP"`...).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.name)
        };
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("kill -{signal} {pid} ({}) failed", self.name);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or an error when it did not.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name)
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; the exit status of a graceful stop.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<std::process::ExitStatus> {
        if self.child.is_none() {
            bail!("{} is not running", self.name);
        }
        self.signal("TERM")?;
        match self.wait(grace).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.signal("KILL");
                let _ = self.wait(Duration::from_secs(5)).await;
                Err(e)
            }
        }
    }

    /// SIGKILL: a crash.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.signal("KILL")?;
        self.wait(Duration::from_secs(10)).await.map(drop)
    }

    /// Starts the process again with the same command line.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} is still running", self.name);
        }
        self.spawn()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One edge replica.
#[derive(Debug)]
pub struct Edge {
    pub cluster: String,
    pub replica: String,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub dir: PathBuf,
    pub proc: Proc,
}

/// Notifications the launcher's webhook received (Alertmanager webhook payloads, as JSON).
#[derive(Debug, Clone, Default)]
pub struct Notifications(Arc<Mutex<Vec<serde_json::Value>>>);

impl Notifications {
    pub fn all(&self) -> Vec<serde_json::Value> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The running federation.
#[derive(Debug)]
pub struct Federation {
    pub options: Options,
    pub edges: Vec<Edge>,
    pub gateway: Proc,
    pub gateway_http: SocketAddr,
    pub bucket_dir: PathBuf,
    pub pki_dir: PathBuf,
    pub notifications: Notifications,
    dns: Option<DnsServer>,
    dnsmasq: Option<meridian_testkit::ChildGuard>,
    /// How dnsmasq was started (binary, port, arguments), to start it again after [`Federation::kill_dns`].
    dnsmasq_cmd: Option<(PathBuf, u16, Vec<String>)>,
    exporters: Vec<Exporter>,
    webhook: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

/// The directory of the `meridian-edge` and `meridian-gateway` binaries: `given`, or else the running
/// binary's own (the launchers are built next to them).
pub fn bin_dir_or_own(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .to_path_buf()),
    }
}

/// A free loopback port (below the ephemeral range: see [`meridian_testkit::free_port`]).
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::new(LOCALHOST, meridian_testkit::free_port()))
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn cluster_name(c: usize) -> String {
    format!("c{}", c + 1)
}

/// The SRV name of cluster `cluster`'s edges.
pub fn srv_name(cluster: &str) -> String {
    format!("_grpc._tcp.{cluster}.{DOMAIN}")
}

/// The edges' Prometheus configuration: the replica label comes from `$(POD_NAME)`.
fn edge_config(
    cluster: &str,
    interval: &str,
    edges: &[SocketAddr],
    gateway: SocketAddr,
    exporter: SocketAddr,
) -> String {
    let list = |a: &[SocketAddr]| {
        a.iter()
            .map(|x| format!("'{x}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  external_labels:\n    cluster: {cluster}\n    replica: $(POD_NAME)\n\
         scrape_configs:\n  - job_name: edge\n    static_configs:\n      - targets: [{edges}]\n\
         \x20 - job_name: gateway\n    static_configs:\n      - targets: ['{gateway}']\n\
         \x20 - job_name: demo\n    honor_labels: true\n    static_configs:\n      - targets: ['{exporter}']\n",
        edges = list(edges),
    )
}

/// Waits until `GET http://addr/path` answers 200, or `proc` exits, or `timeout` passes.
pub async fn wait_ready(
    addr: SocketAddr,
    path: &str,
    proc: &mut Proc,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let a = addr.to_string();
        let p = path.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            meridian_testkit::http("GET", &a, &p, &[], b"").is_ok_and(|r| r.status == 200)
        })
        .await
        .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if let Some(child) = proc.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            proc.child = None;
            bail!(
                "{} exited with {status} while starting; see {}",
                proc.name,
                proc.log.display()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} not ready at http://{addr}{path} after {timeout:?}; see {}",
                proc.name,
                proc.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The webhook receiver: prints each notification's alerts and keeps the payloads.
async fn start_webhook(
    notifications: Notifications,
) -> anyhow::Result<(SocketAddr, CancellationToken, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |body: axum::body::Bytes| {
            let notifications = notifications.clone();
            async move {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                for a in v["alerts"].as_array().into_iter().flatten() {
                    println!(
                        "alert {}: {} {}",
                        a["status"].as_str().unwrap_or("?"),
                        a["labels"]["alertname"].as_str().unwrap_or("?"),
                        a["annotations"]["summary"].as_str().unwrap_or("")
                    );
                }
                if let Ok(mut all) = notifications.0.lock() {
                    all.push(v);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let (stop, task) = serve(listener, app);
    Ok((addr, stop, task))
}

/// Serves `app` on `listener` until the returned token is cancelled; the task ends after in-flight
/// requests finish.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
    });
    (stop, task)
}

impl Federation {
    /// Issues certificates, writes configurations and starts everything; returns once the gateway
    /// is ready and sees every edge through DNS.
    pub async fn start(options: Options) -> anyhow::Result<Federation> {
        let dir = options.data_dir.clone();
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let edge_bin = options.bin_dir.join("meridian-edge");
        let gateway_bin = options.bin_dir.join("meridian-gateway");
        for b in [&edge_bin, &gateway_bin] {
            if !b.is_file() {
                bail!(
                    "{} is missing: build it first (`cargo build --bins`)",
                    b.display()
                );
            }
        }

        // Certificates: a CA, a server certificate per edge (its DNS name and 127.0.0.1) and the
        // gateway's client certificate. Issued anew on every start.
        let pki_dir = dir.join("pki");
        let days = Validity::days(30)?;
        let ca = issue::new_ca("Meridian local federation CA", KeyType::P256, days)?;
        issue::write_pair(&pki_dir, "ca", &ca, true)?;
        issue::issue_into(&pki_dir, &ca, Usage::Client, "gateway", &[], &[], days)?;

        let bucket_dir = dir.join("bucket");
        std::fs::create_dir_all(&bucket_dir)?;
        let bucket_yml = dir.join("bucket.yml");
        let objstore = match &options.objstore {
            Some(y) => y.clone(),
            None => format!(
                "type: FILESYSTEM\nconfig:\n  directory: {}\n",
                bucket_dir.display()
            ),
        };
        write(&bucket_yml, &objstore)?;

        let gateway_http = if options.gateway_http.port() == 0 {
            free_addr()?
        } else {
            options.gateway_http
        };
        let notifications = Notifications::default();
        let (webhook_addr, webhook_stop, webhook_task) =
            start_webhook(notifications.clone()).await?;

        let mut exporters = Vec::new();
        let mut zone = Zone::default();
        let mut dnsmasq_args = Vec::new();
        let mut edges = Vec::new();
        for c in 0..options.clusters {
            let cluster = cluster_name(c);
            let exporter = Exporter::start(SocketAddr::new(LOCALHOST, 0), c).await?;
            let https: Vec<SocketAddr> = (0..options.replicas)
                .map(|_| free_addr())
                .collect::<anyhow::Result<_>>()?;
            for (r, http) in https.iter().enumerate() {
                let replica = format!("{cluster}-edge-{r}");
                let host = format!("edge-{r}.{cluster}.{DOMAIN}");
                let grpc = free_addr()?;
                let edir = dir.join(&replica);
                std::fs::create_dir_all(&edir)?;
                issue::issue_into(
                    &pki_dir,
                    &ca,
                    Usage::Server,
                    &replica,
                    std::slice::from_ref(&host),
                    &[LOCALHOST],
                    days,
                )?;
                let config = edir.join("prometheus.yml");
                let mut text = edge_config(
                    &cluster,
                    &options.scrape_interval,
                    &https,
                    gateway_http,
                    exporter.addr(),
                );
                if !options.scrape {
                    text.truncate(text.find("scrape_configs:").unwrap_or(text.len()));
                }
                write(&config, &text)?;
                zone.add_srv(
                    &srv_name(&cluster),
                    Srv {
                        priority: 0,
                        weight: 1,
                        port: grpc.port(),
                        target: host.clone(),
                    },
                );
                zone.add_host(&host, LOCALHOST);
                dnsmasq_args.push(format!(
                    "--srv-host={},{host},{},0,1",
                    srv_name(&cluster),
                    grpc.port()
                ));
                dnsmasq_args.push(format!("--host-record={host},{LOCALHOST}"));
                let p = |s: &str| pki_dir.join(s).display().to_string();
                let args = vec![
                    "run".to_string(),
                    format!("--config.file={}", config.display()),
                    format!("--tsdb.path={}", edir.join("tsdb").display()),
                    format!("--http-address={http}"),
                    format!("--grpc-address={grpc}"),
                    format!("--grpc-server-tls-cert={}", p(&format!("{replica}.crt"))),
                    format!("--grpc-server-tls-key={}", p(&format!("{replica}.key"))),
                    format!("--grpc-server-tls-client-ca={}", p("ca.crt")),
                    format!("--objstore.config-file={}", bucket_yml.display()),
                    format!("--tsdb.min-block-duration={}", options.block_duration),
                    format!("--log.level={}", options.log_level),
                ];
                let mut args = args;
                args.extend(options.edge_args.iter().cloned());
                edges.push(Edge {
                    cluster: cluster.clone(),
                    replica: replica.clone(),
                    http: *http,
                    grpc,
                    dir: edir,
                    proc: Proc {
                        name: replica.clone(),
                        program: edge_bin.clone(),
                        args,
                        env: vec![("POD_NAME".into(), replica.clone())],
                        log: dir.join("logs").join(format!("{replica}.log")),
                        child: None,
                    },
                });
            }
            exporters.push(exporter);
        }
        let mut dnsmasq_cmd = None;
        let (dns, dnsmasq, dns_addr) = match &options.dnsmasq {
            None => {
                let d = DnsServer::start(SocketAddr::new(LOCALHOST, 0), zone).await?;
                let a = d.addr();
                (Some(d), None, a)
            }
            Some(bin) => {
                let port = free_addr()?.port();
                dnsmasq_args.push(format!("--local=/{DOMAIN}/"));
                let guard = meridian_testkit::dnsmasq(bin, port, &dnsmasq_args);
                dnsmasq_cmd = Some((bin.clone(), port, dnsmasq_args));
                (None, Some(guard), SocketAddr::new(LOCALHOST, port))
            }
        };

        let rules = dir.join("rules.yml");
        write(&rules, RULES)?;
        let routing = dir.join("routing.yml");
        write(
            &routing,
            &format!(
                "route:\n  receiver: launcher\n  group_by: [alertname, cluster]\n  group_wait: 5s\n  group_interval: 30s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: launcher\n    webhook_configs:\n      - url: http://{webhook_addr}/alerts\n        send_resolved: true\n"
            ),
        )?;
        let p = |s: &str| pki_dir.join(s).display().to_string();
        let mut gateway_args = vec![
            "query".to_string(),
            format!("--http-address={gateway_http}"),
            format!("--grpc-address={}", free_addr()?),
            format!("--dns.nameserver={dns_addr}"),
            "--store.sd-dns-interval=5s".into(),
            "--grpc-client-tls-secure".into(),
            format!("--grpc-client-tls-cert={}", p("gateway.crt")),
            format!("--grpc-client-tls-key={}", p("gateway.key")),
            format!("--grpc-client-tls-ca={}", p("ca.crt")),
            "--query.replica-label=replica".into(),
            format!("--objstore.config-file={}", bucket_yml.display()),
            "--sync-block-duration=15s".into(),
            format!("--rule-file={}", rules.display()),
            format!("--eval-interval={}", options.eval_interval),
            format!("--data-dir={}", dir.join("gateway").display()),
            format!("--alert.routing-config-file={}", routing.display()),
            format!("--log.level={}", options.log_level),
        ];
        for c in 0..options.clusters {
            gateway_args.push(format!("--endpoint=dnssrv+{}", srv_name(&cluster_name(c))));
        }
        gateway_args.extend(options.gateway_args.iter().cloned());
        let gateway = Proc {
            name: "gateway".into(),
            program: gateway_bin,
            args: gateway_args,
            env: vec![],
            log: dir.join("logs").join("gateway.log"),
            child: None,
        };

        let mut fed = Federation {
            options,
            edges,
            gateway,
            gateway_http,
            bucket_dir,
            pki_dir,
            notifications,
            dns,
            dnsmasq,
            dnsmasq_cmd,
            exporters,
            webhook: Some((webhook_stop, webhook_task)),
        };
        for e in &mut fed.edges {
            e.proc.spawn()?;
        }
        fed.gateway.spawn()?;
        for e in &mut fed.edges {
            wait_ready(e.http, "/-/ready", &mut e.proc, Duration::from_secs(60)).await?;
        }
        wait_ready(
            gateway_http,
            "/-/ready",
            &mut fed.gateway,
            Duration::from_secs(60),
        )
        .await?;
        fed.wait_for_endpoints(fed.edges.len(), Duration::from_secs(60))
            .await?;
        Ok(fed)
    }

    /// The gateway's view of its edges: `(name, lastError)` for every sidecar-type StoreAPI it knows
    /// (not its own rule store or the bucket).
    pub async fn endpoints(&self) -> anyhow::Result<Vec<(String, Option<String>)>> {
        let addr = self.gateway_http.to_string();
        let v = tokio::task::spawn_blocking(move || {
            meridian_testkit::http("GET", &addr, "/api/v1/stores", &[], b"").map(|r| r.json())
        })
        .await??;
        let mut out = Vec::new();
        for (kind, list) in v["data"].as_object().into_iter().flatten() {
            if kind != "sidecar" && kind != "unknown" {
                continue;
            }
            for e in list.as_array().into_iter().flatten() {
                out.push((
                    e["name"].as_str().unwrap_or_default().to_string(),
                    e["lastError"].as_str().map(str::to_string),
                ));
            }
        }
        Ok(out)
    }

    /// Waits until the gateway has `n` healthy endpoints.
    pub async fn wait_for_endpoints(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let healthy = self
                .endpoints()
                .await
                .map(|v| v.iter().filter(|(_, e)| e.is_none()).count())
                .unwrap_or(0);
            if healthy == n {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the gateway sees {healthy} healthy endpoints, not {n}, after {timeout:?}: {:?}",
                    self.endpoints().await.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The edge of `cluster` (`"c1"`) with replica index `r`.
    /// Kills dnsmasq (SIGKILL); an error when the federation runs the embedded DNS server instead.
    pub fn kill_dns(&mut self) -> anyhow::Result<()> {
        let Some(mut guard) = self.dnsmasq.take() else {
            bail!("no dnsmasq to kill (the embedded DNS server is in use, or it is down)");
        };
        guard.0.kill().context("killing dnsmasq")?;
        let _ = guard.0.wait();
        Ok(())
    }

    /// Starts dnsmasq again, on the same port with the same records.
    pub fn restart_dns(&mut self) -> anyhow::Result<()> {
        if self.dnsmasq.is_some() {
            bail!("dnsmasq is still running");
        }
        let Some((bin, port, args)) = &self.dnsmasq_cmd else {
            bail!("the federation does not use dnsmasq");
        };
        self.dnsmasq = Some(meridian_testkit::dnsmasq(bin, *port, args));
        Ok(())
    }

    pub fn edge_mut(&mut self, cluster: &str, r: usize) -> Option<&mut Edge> {
        self.edges
            .iter_mut()
            .filter(|e| e.cluster == cluster)
            .nth(r)
    }

    /// What to tell a person who just started it.
    pub fn banner(&self) -> String {
        let url = format!("http://{}", self.gateway_http);
        let q = |e: &str| {
            format!(
                "{url}/api/v1/query?query={}",
                meridian_testkit::urlencode(e)
            )
        };
        let mut s = String::new();
        s.push_str(&format!(
            "Meridian local federation: {} clusters × {} edge replicas, gateway at {url}\n\n",
            self.options.clusters, self.options.replicas
        ));
        s.push_str(&format!(
            "Grafana datasource: type Prometheus, URL {url}\n\n"
        ));
        s.push_str("Ready queries (PromQL):\n");
        for (what, e) in QUERIES {
            s.push_str(&format!("  {what}:\n    {e}\n    curl -s '{}'\n", q(e)));
        }
        s.push_str(&format!(
            "\nState, logs and certificates: {}\nStop: Ctrl-C (the gateway first, then the edges, which finish their uploads).\n",
            self.options.data_dir.display()
        ));
        s
    }

    /// Stops everything in order: the gateway (no more queries or rule evaluations), then the edges
    /// (each drains its uploads), then the exporters, DNS and the webhook. Reports each step through
    /// `step`; an error names every component that did not exit cleanly.
    pub async fn stop(mut self, mut step: impl FnMut(&str)) -> anyhow::Result<()> {
        let grace = Duration::from_secs(40);
        let mut failed = Vec::new();
        if self.gateway.pid().is_some() {
            step("stopping the gateway");
            match self.gateway.stop(grace).await {
                Ok(s) if s.success() => {}
                Ok(s) => failed.push(format!("gateway exited with {s}")),
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        step("stopping the edges (uploads are drained)");
        let mut running: Vec<&mut Edge> = self
            .edges
            .iter_mut()
            .filter(|e| e.proc.pid().is_some())
            .collect();
        for e in &running {
            if let Err(err) = e.proc.signal("TERM") {
                failed.push(format!("{err:#}"));
            }
        }
        for e in &mut running {
            match e.proc.wait(grace).await {
                Ok(s) if s.success() => {}
                Ok(s) => failed.push(format!("{} exited with {s}", e.replica)),
                Err(err) => {
                    let _ = e.proc.kill().await;
                    failed.push(format!("{err:#}"));
                }
            }
        }
        step("stopping the exporters, DNS and the webhook");
        for x in self.exporters.drain(..) {
            x.stop().await;
        }
        if let Some(d) = self.dns.take() {
            d.stop().await;
        }
        drop(self.dnsmasq.take());
        if let Some((stop, task)) = self.webhook.take() {
            stop.cancel();
            let _ = task.await;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("{}", failed.join("; "))
        }
    }
}

/// The queries the banner prints: CPU, memory and disk usage per cluster.
pub const QUERIES: [(&str, &str); 4] = [
    (
        "CPU usage per cluster",
        "sum by (cluster) (rate(node_cpu_seconds_total{mode!=\"idle\"}[1m])) / sum by (cluster) (rate(node_cpu_seconds_total[1m]))",
    ),
    (
        "memory usage per cluster",
        "1 - sum by (cluster) (node_memory_MemAvailable_bytes) / sum by (cluster) (node_memory_MemTotal_bytes)",
    ),
    (
        "fullest root filesystem per cluster",
        "max by (cluster) (1 - node_filesystem_avail_bytes{mountpoint=\"/\"} / node_filesystem_size_bytes{mountpoint=\"/\"})",
    ),
    (
        "running pods per cluster and namespace",
        "sum by (cluster, namespace) (kube_pod_status_phase{phase=\"Running\"})",
    ),
];
