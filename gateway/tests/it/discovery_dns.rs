//! Endpoint discovery against a real DNS server: Debian's dnsmasq on a loopback port with SRV records for
//! two "clusters" × two edge replicas. All four are found (through `dnssrv+`, and as SRV targets through
//! `dnssrvnoa+`); a record removed from the hosts file (dnsmasq re-reads it on SIGHUP) drops its endpoint
//! at the next refresh; with the DNS server stopped the last good set stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meridian_core::net::dns::DnsResolver;
use meridian_gateway::discovery::{Discovered, EndpointDiscovery, EndpointSpec};
use meridian_testkit::{ChildGuard, dnsmasq, free_port, require};

fn dns_server(bin: &Path, port: u16, hosts: &Path) -> ChildGuard {
    let mut args = vec![
        // Authoritative for the test domain: an unknown name is NXDOMAIN, not REFUSED.
        "--local=/meridian.test/".to_string(),
        format!("--addn-hosts={}", hosts.display()),
    ];
    for cluster in ["a", "b"] {
        for replica in 0..2 {
            args.push(format!(
                "--srv-host=_grpc._tcp.edges-{cluster}.meridian.test,edge-{cluster}-{replica}.meridian.test,{}",
                10901 + replica
            ));
        }
    }
    dnsmasq(bin, port, &args)
}

const HOSTS: &str = "127.0.0.11 edge-a-0.meridian.test\n127.0.0.12 edge-a-1.meridian.test\n\
                     127.0.0.21 edge-b-0.meridian.test\n127.0.0.22 edge-b-1.meridian.test\n";

fn addresses(d: &[Discovered]) -> Vec<&str> {
    d.iter().map(|x| x.address.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_discovery_follows_records_and_survives_dns_outage() {
    let Some(bin) = require("dnsmasq", "apt-get install dnsmasq-base") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, HOSTS).unwrap();
    let port = free_port();
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut dns = Some(dns_server(&bin, port, &hosts));
    let resolver = DnsResolver::new(Some(server)).unwrap();
    let specs: Vec<EndpointSpec> = [
        "dnssrv+_grpc._tcp.edges-a.meridian.test",
        "dnssrv+_grpc._tcp.edges-b.meridian.test",
        "dnssrvnoa+_grpc._tcp.edges-b.meridian.test",
        "edge-static:10901",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut d = EndpointDiscovery::new(resolver, specs);
    // Wait for dnsmasq to answer.
    let mut found = Vec::new();
    let mut last_errors = Vec::new();
    for _ in 0..100 {
        let (f, errors) = d.refresh().await;
        if errors.is_empty() && f.len() == 7 {
            found = f;
            break;
        }
        last_errors = errors.iter().map(|e| e.to_string()).collect();
        found = f;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        addresses(&found),
        vec![
            "127.0.0.11:10901",
            "127.0.0.12:10902",
            "127.0.0.21:10901",
            "127.0.0.22:10902",
            "edge-b-0.meridian.test:10901",
            "edge-b-1.meridian.test:10902",
            "edge-static:10901",
        ],
        "lookup errors: {last_errors:?}"
    );
    assert_eq!(
        found.iter().map(|x| x.spec).collect::<Vec<_>>(),
        vec![0, 0, 1, 1, 2, 2, 3],
        "each endpoint knows the spec (and so the settings) it came from"
    );

    // edge-b-1 loses its address record: dnssrv+ drops it at the next refresh (the SRV record stays,
    // so dnssrvnoa+ keeps it).
    std::fs::write(
        &hosts,
        HOSTS.replace("127.0.0.22 edge-b-1.meridian.test\n", ""),
    )
    .unwrap();
    dns.as_ref().unwrap().signal("HUP");
    let mut changed = false;
    for _ in 0..100 {
        let (f, _) = d.refresh().await;
        if !addresses(&f).contains(&"127.0.0.22:10902") {
            assert_eq!(f.len(), 6, "{f:?}");
            assert!(addresses(&f).contains(&"edge-b-1.meridian.test:10902"));
            changed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(changed, "the removed record was not noticed within 10 s");

    // The DNS server stops: lookups fail, the last good set stays.
    let last = d.refresh().await.0;
    drop(dns.take());
    tokio::time::sleep(Duration::from_secs(2)).await; // past the 1 s TTL of the cached answers
    let (f, errors) = d.refresh().await;
    assert!(
        !errors.is_empty(),
        "lookups against a stopped server did not fail"
    );
    assert_eq!(f, last, "the last good endpoints are kept");
}
