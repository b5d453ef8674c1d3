//! A small authoritative DNS server for the local federation, so the gateway finds edges through DNS
//! SRV (`dnssrv+_grpc._tcp.<cluster>.meridian.local`) without a system DNS service.
//!
//! It answers over UDP in the RFC 1035 message format:
//! - SRV questions (RFC 2782) for the names it holds;
//! - A and AAAA questions for the SRV targets;
//! - an empty NOERROR answer for other record types of a known name;
//! - NXDOMAIN for unknown names.
//!
//! Answers point back to the question's name (compression pointer `0xC00C`) and are never
//! truncated; the federation's zones are a handful of records.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
const TTL: u32 = 5;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The records served; names are matched case-insensitively, with or without the trailing dot.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    srv: HashMap<String, Vec<Srv>>,
    hosts: HashMap<String, Vec<IpAddr>>,
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    pub fn add_srv(&mut self, name: &str, srv: Srv) -> &mut Self {
        self.srv.entry(norm(name)).or_default().push(srv);
        self
    }

    pub fn add_host(&mut self, name: &str, ip: IpAddr) -> &mut Self {
        self.hosts.entry(norm(name)).or_default().push(ip);
        self
    }
}

/// The server: a UDP socket and the task answering on it.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<RwLock<Zone>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Binds `bind` (port 0 for a free one) and answers from `zone` until [`DnsServer::stop`].
    pub async fn start(bind: SocketAddr, zone: Zone) -> io::Result<DnsServer> {
        let socket = UdpSocket::bind(bind).await?;
        let addr = socket.local_addr()?;
        let zone = Arc::new(RwLock::new(zone));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(socket, zone.clone(), stop.clone()));
        Ok(DnsServer {
            addr,
            zone,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the records served (an edge came or went).
    pub fn set_zone(&self, zone: Zone) {
        *self.zone.write().unwrap_or_else(PoisonError::into_inner) = zone;
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve(socket: UdpSocket, zone: Arc<RwLock<Zone>>, stop: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: receive failed");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let reply = {
            let zone = zone.read().unwrap_or_else(PoisonError::into_inner);
            answer(&buf[..n], &zone)
        };
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// The question of a query: its name (dotted, lower case), type and the bytes it spans.
fn question(query: &[u8]) -> Option<(String, u16, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        // Compression never occurs in a question we are asked; refuse it rather than follow it.
        if len & 0xC0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let _class = u16::from_be_bytes([*query.get(i + 2)?, *query.get(i + 3)?]);
    Some((labels.join("."), qtype, i + 4))
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

/// The reply to one query, or `None` for what is not a standard query.
pub fn answer(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let opcode = (query[2] >> 3) & 0x0F;
    let (name, qtype, end) = if qdcount == 1 && opcode == 0 {
        question(query)?
    } else {
        // Not implemented (RCODE 4), echoing the header only.
        let mut out = query[..12].to_vec();
        out[2] = 0x80 | (query[2] & 0x79);
        out[3] = 4;
        out[4..12].fill(0);
        return Some(out);
    };
    let known = zone.srv.contains_key(&name) || zone.hosts.contains_key(&name);
    let mut answers: Vec<Vec<u8>> = Vec::new();
    let record = |rtype: u16, rdata: &[u8]| {
        let mut r = vec![0xC0, 0x0C];
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&TTL.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    };
    match qtype {
        TYPE_SRV => {
            for s in zone.srv.get(&name).into_iter().flatten() {
                let mut rdata = Vec::new();
                rdata.extend_from_slice(&s.priority.to_be_bytes());
                rdata.extend_from_slice(&s.weight.to_be_bytes());
                rdata.extend_from_slice(&s.port.to_be_bytes());
                push_name(&mut rdata, &s.target);
                answers.push(record(TYPE_SRV, &rdata));
            }
        }
        TYPE_A | TYPE_AAAA => {
            for ip in zone.hosts.get(&name).into_iter().flatten() {
                match (qtype, ip) {
                    (TYPE_A, IpAddr::V4(v4)) => answers.push(record(TYPE_A, &v4.octets())),
                    (TYPE_AAAA, IpAddr::V6(v6)) => answers.push(record(TYPE_AAAA, &v6.octets())),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(end + answers.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&query[..2]);
    // QR, the query's opcode and RD; AA set.
    out.push(0x80 | 0x04 | (query[2] & 0x79));
    out.push(if known { 0 } else { 3 });
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..end]);
    for a in answers {
        out.extend_from_slice(&a);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use meridian_core::net::dns::DnsResolver;

    /// Hickory's resolver (the one the gateway's discovery uses) reads our answers, and `dnssrv+`
    /// endpoints resolve to the edges' addresses.
    #[tokio::test]
    async fn the_gateways_resolver_reads_srv_and_address_answers() {
        let mut zone = Zone::default();
        zone.add_srv(
            "_grpc._tcp.c1.meridian.local",
            Srv {
                priority: 0,
                weight: 10,
                port: 10901,
                target: "edge-0.c1.meridian.local".into(),
            },
        )
        .add_srv(
            "_grpc._tcp.c1.meridian.local.",
            Srv {
                priority: 0,
                weight: 10,
                port: 10902,
                target: "edge-1.c1.meridian.local".into(),
            },
        )
        .add_host("edge-0.c1.meridian.local", "127.0.0.1".parse().unwrap())
        .add_host("edge-1.c1.meridian.local", "127.0.0.2".parse().unwrap())
        .add_host("edge-1.c1.meridian.local", "::1".parse().unwrap());
        let server = DnsServer::start("127.0.0.1:0".parse().unwrap(), zone)
            .await
            .unwrap();
        let r = DnsResolver::new(Some(server.addr())).unwrap();
        let srv = r.srv("_grpc._tcp.C1.meridian.local").await.unwrap();
        let got: Vec<(String, u16)> = srv.iter().map(|s| (s.target.clone(), s.port)).collect();
        assert_eq!(
            got,
            [
                ("edge-0.c1.meridian.local.".to_owned(), 10901),
                ("edge-1.c1.meridian.local.".to_owned(), 10902)
            ]
        );
        assert_eq!(
            r.ips("edge-1.c1.meridian.local", false).await.unwrap(),
            ["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.ips("edge-1.c1.meridian.local", true).await.unwrap(),
            ["::1".parse::<IpAddr>().unwrap()]
        );
        assert!(
            r.srv("_grpc._tcp.c2.meridian.local")
                .await
                .unwrap()
                .is_empty()
        );
        // The gateway's `--endpoint=dnssrv+…` discovery over it.
        let mut d = meridian_gateway::discovery::EndpointDiscovery::new(
            r.clone(),
            vec!["dnssrv+_grpc._tcp.c1.meridian.local".parse().unwrap()],
        );
        let (found, errors) = d.refresh().await;
        assert!(errors.is_empty(), "{errors:?}");
        let mut addresses: Vec<String> = found.into_iter().map(|f| f.address).collect();
        addresses.sort();
        assert_eq!(
            addresses,
            ["127.0.0.1:10901", "127.0.0.2:10902", "[::1]:10902"]
        );
        // A changed zone is served at once to a fresh resolver (the gateway's caps its cache at 5 s).
        server.set_zone(Zone::default());
        let fresh = DnsResolver::new(Some(server.addr())).unwrap();
        assert!(
            fresh
                .srv("_grpc._tcp.c1.meridian.local")
                .await
                .unwrap()
                .is_empty()
        );
        server.stop().await;
    }

    #[test]
    fn refuses_what_is_not_a_query() {
        let zone = Zone::default();
        assert!(answer(&[0; 5], &zone).is_none());
        let mut response = vec![0u8; 12];
        response[2] = 0x80;
        assert!(answer(&response, &zone).is_none());
        // Two questions: not implemented.
        let mut two = vec![0u8; 12];
        two[5] = 2;
        assert_eq!(answer(&two, &zone).unwrap()[3], 4);
    }
}
