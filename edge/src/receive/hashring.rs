//! Thanos Receive's hashrings: which receivers store a series, from the tenant and the series'
//! labels, so a fleet mixing Meridian and Thanos receivers routes alike.
//!
//! Followed: `pkg/receive/hashring.go` and `config.go` of Thanos at `e103a81` (after v0.42.4), where it
//! differs from v0.25.1 as noted.
//!
//! - **File**: a JSON array of `{hashring, tenants, tenant_matcher_type, endpoints, algorithm,
//!   external_labels}`; an endpoint is an address string or `{address, az, capnproto_address}`.
//!   Unlike Thanos, unknown fields, an unknown `algorithm` and an unknown `tenant_matcher_type` are
//!   errors (Thanos ignores the first and falls back silently on the others).
//! - **Tenant → hashring**: the first hashring, in file order, whose `tenants` holds the tenant
//!   (exactly, or as a Go `filepath.Match` pattern with `"tenant_matcher_type": "glob"`), or that
//!   lists no tenants.
//! - **Hash**: XXH64 (seed 0) of `tenant ‖ 0xFF ‖ (name ‖ 0xFF ‖ value ‖ 0xFF)*` over the series' own
//!   labels in order: no external, tenant or replica label.
//! - **hashmod**: endpoints sorted by address (Thanos ≥ 0.34; v0.25.1 kept file order, so a file
//!   already sorted routes alike everywhere); replica `n` is `endpoints[(hash + n) mod len]`, the sum
//!   wrapping at 2^64.
//! - **ketama**: 1000 sections per endpoint at `XXH64(address ‖ ":" ‖ i)`, `i` in 1..=1000, sorted;
//!   a series belongs to the first section at or after its hash (wrapping), and its replicas are the
//!   distinct endpoints met walking on, spread over availability zones (an endpoint is taken only
//!   while its zone has no more replicas than the emptiest zone). Configurations where that walk
//!   cannot finish (Thanos hangs) are refused, as are fewer endpoints than the replication factor.

use std::collections::BTreeMap;

use meridian_core::labels::Labels;
use xxhash_rust::xxh64::xxh64;

/// Sections per endpoint on a ketama ring (Thanos' `SectionsPerNode`).
const SECTIONS_PER_NODE: u32 = 1000;
const SEP: u8 = 0xff;

/// A hashring configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashringError {
    #[error("hashring configuration: {0}")]
    Parse(String),
    #[error("hashring configuration is empty: at least one hashring is needed")]
    Empty,
    #[error("hashring {ring:?}: {reason}")]
    Invalid { ring: String, reason: String },
    /// At request time.
    #[error("no matching hashring to handle tenant {0:?}")]
    NoHashring(String),
    #[error("insufficient nodes; have {have}, want {want}")]
    InsufficientNodes { have: usize, want: usize },
}

/// Routing algorithm (`--receive.hashrings-algorithm`, or a hashring's `algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    Hashmod,
    Ketama,
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Algorithm, String> {
        match s {
            "hashmod" => Ok(Algorithm::Hashmod),
            "ketama" => Ok(Algorithm::Ketama),
            other => Err(format!(
                "unknown hashring algorithm {other:?}: expected \"hashmod\" or \"ketama\""
            )),
        }
    }
}

/// One receiver in a hashring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    pub az: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHashring {
    #[serde(default)]
    hashring: String,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    tenant_matcher_type: String,
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    shuffle_sharding_config: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum RawEndpoint {
    Address(String),
    Object(RawEndpointObject),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpointObject {
    address: String,
    #[serde(default)]
    az: String,
    /// Thanos' Cap'n Proto replication address: accepted, not used (Meridian forwards over gRPC).
    #[serde(default)]
    #[allow(dead_code)]
    capnproto_address: String,
}

/// How a hashring's `tenants` are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TenantMatch {
    Exact,
    Glob,
}

/// One hashring of the file, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashringConfig {
    pub name: String,
    tenants: Vec<String>,
    matching: TenantMatch,
    pub endpoints: Vec<Endpoint>,
    /// `None`: the `--receive.hashrings-algorithm` default.
    pub algorithm: Option<Algorithm>,
    pub external_labels: Labels,
}

/// Parses a hashring file (JSON). Errors name the hashring and the field, or the line and column.
pub fn parse(json: &str) -> Result<Vec<HashringConfig>, HashringError> {
    let raw: Option<Vec<RawHashring>> =
        serde_json::from_str(json).map_err(|e| HashringError::Parse(e.to_string()))?;
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(HashringError::Empty);
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let ring = if r.hashring.is_empty() {
                format!("#{i}")
            } else {
                r.hashring.clone()
            };
            let invalid = |reason: String| HashringError::Invalid {
                ring: ring.clone(),
                reason,
            };
            let matching = match r.tenant_matcher_type.as_str() {
                "" | "exact" => TenantMatch::Exact,
                "glob" => TenantMatch::Glob,
                other => {
                    return Err(invalid(format!(
                        "tenant_matcher_type {other:?}: expected \"exact\" or \"glob\""
                    )));
                }
            };
            if matching == TenantMatch::Glob {
                for t in &r.tenants {
                    glob_match(t, "").map_err(|e| invalid(format!("tenant pattern {t:?}: {e}")))?;
                }
            }
            let algorithm = match r.algorithm.as_str() {
                "" => None,
                a => Some(a.parse().map_err(|e: String| invalid(e))?),
            };
            if r.shuffle_sharding_config.as_ref().is_some_and(|v| {
                !v.is_null() && v.get("shard_size").and_then(|s| s.as_u64()) != Some(0)
            }) {
                return Err(invalid(
                    "shuffle_sharding_config is not supported by Meridian".into(),
                ));
            }
            let endpoints = r
                .endpoints
                .into_iter()
                .map(|e| match e {
                    RawEndpoint::Address(address) => Endpoint {
                        address,
                        az: String::new(),
                    },
                    RawEndpoint::Object(o) => Endpoint {
                        address: o.address,
                        az: o.az,
                    },
                })
                .collect::<Vec<_>>();
            if endpoints.iter().any(|e| e.address.is_empty()) {
                return Err(invalid("endpoint address must be set".into()));
            }
            for name in r.external_labels.keys() {
                if !meridian_core::relabel::is_valid_label_name(name) {
                    return Err(invalid(format!(
                        "external_labels: invalid label name {name:?}"
                    )));
                }
            }
            Ok(HashringConfig {
                name: r.hashring,
                tenants: r.tenants,
                matching,
                endpoints,
                algorithm,
                external_labels: Labels::from_pairs(r.external_labels),
            })
        })
        .collect()
}

/// The series' hash: XXH64 of `tenant ‖ FF ‖ (name ‖ FF ‖ value ‖ FF)*`.
pub fn series_hash(tenant: &str, labels: &Labels) -> u64 {
    series_hash_of(
        tenant,
        labels.iter().map(|l| (l.name, l.value)),
        &mut Vec::new(),
    )
}

/// [`series_hash`] of labels as they come (Thanos ≥ 0.26 hashes a request's labels in wire
/// order), the bytes gathered in `buf` and hashed at once.
pub fn series_hash_of<'a>(
    tenant: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    buf: &mut Vec<u8>,
) -> u64 {
    buf.clear();
    buf.extend_from_slice(tenant.as_bytes());
    buf.push(SEP);
    for (name, value) in labels {
        buf.extend_from_slice(name.as_bytes());
        buf.push(SEP);
        buf.extend_from_slice(value.as_bytes());
        buf.push(SEP);
    }
    xxh64(buf, 0)
}

/// A built hashring.
#[derive(Debug, Clone)]
pub enum Ring {
    Hashmod(Vec<Endpoint>),
    Ketama {
        endpoints: Vec<Endpoint>,
        /// Sorted by hash; each with its replicas (indexes into `endpoints`).
        sections: Vec<(u64, Vec<u16>)>,
    },
}

impl Ring {
    /// The ring over `endpoints` for `replication` copies of each series.
    pub fn build(
        endpoints: &[Endpoint],
        algorithm: Algorithm,
        replication: usize,
    ) -> Result<Ring, String> {
        if endpoints.is_empty() {
            return Err("a hashring needs at least one endpoint".into());
        }
        if endpoints.len() > usize::from(u16::MAX) {
            return Err(format!("{} endpoints: at most 65535", endpoints.len()));
        }
        match algorithm {
            Algorithm::Hashmod => {
                if endpoints.iter().any(|e| !e.az.is_empty()) {
                    return Err("the hashmod algorithm does not support availability zones (az); use ketama or remove them".into());
                }
                let mut sorted = endpoints.to_vec();
                sorted.sort_by(|a, b| a.address.cmp(&b.address));
                Ok(Ring::Hashmod(sorted))
            }
            Algorithm::Ketama => ketama(endpoints, replication),
        }
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        match self {
            Ring::Hashmod(e) | Ring::Ketama { endpoints: e, .. } => e,
        }
    }

    /// Replica `n` (0-based) of a series with hash `hash`.
    pub fn get_n(&self, hash: u64, n: usize) -> Result<&Endpoint, HashringError> {
        let eps = self.endpoints();
        if n >= eps.len() {
            return Err(HashringError::InsufficientNodes {
                have: eps.len(),
                want: n + 1,
            });
        }
        match self {
            Ring::Hashmod(eps) => {
                let i = hash.wrapping_add(n as u64) % eps.len() as u64;
                Ok(&eps[i as usize])
            }
            Ring::Ketama {
                endpoints,
                sections,
            } => {
                let i = sections.partition_point(|(h, _)| *h < hash);
                let (_, replicas) = &sections[if i == sections.len() { 0 } else { i }];
                let r = replicas.get(n).ok_or(HashringError::InsufficientNodes {
                    have: replicas.len(),
                    want: n + 1,
                })?;
                Ok(&endpoints[usize::from(*r)])
            }
        }
    }
}

fn ketama(endpoints: &[Endpoint], replication: usize) -> Result<Ring, String> {
    if endpoints.len() < replication {
        return Err(format!(
            "ketama: {} endpoints, fewer than the replication factor {replication}",
            endpoints.len()
        ));
    }
    let mut sections: Vec<(u64, u16)> = Vec::with_capacity(endpoints.len() * 1000);
    for (idx, e) in endpoints.iter().enumerate() {
        for i in 1..=SECTIONS_PER_NODE {
            let h = xxh64(format!("{}:{i}", e.address).as_bytes(), 0);
            sections.push((h, idx as u16));
        }
    }
    sections.sort_by_key(|s| s.0);
    let zones: Vec<&str> = {
        let mut z: Vec<&str> = endpoints.iter().map(|e| e.az.as_str()).collect();
        z.sort_unstable();
        z.dedup();
        z
    };
    let zone_of: Vec<usize> = endpoints
        .iter()
        .map(|e| zones.binary_search(&e.az.as_str()).unwrap_or(0))
        .collect();
    let mut out = Vec::with_capacity(sections.len());
    for i in 0..sections.len() {
        let mut chosen: Vec<u16> = Vec::with_capacity(replication);
        let mut count = vec![0usize; zones.len()];
        // One full turn at most: the walk of Thanos' `calculateSectionReplicas`, bounded.
        for step in 0..sections.len() {
            if chosen.len() == replication {
                break;
            }
            let c = sections[(i + step) % sections.len()].1;
            if chosen.contains(&c) {
                continue;
            }
            let z = zone_of[usize::from(c)];
            let min = count.iter().copied().min().unwrap_or(0);
            if zones.len() > 1 && count[z] > 0 && count[z] > min {
                continue;
            }
            chosen.push(c);
            count[z] += 1;
        }
        if chosen.len() < replication {
            return Err(format!(
                "ketama: {replication} replicas cannot be spread over the availability zones {zones:?} (each zone must keep up with the emptiest)"
            ));
        }
        out.push((sections[i].0, chosen));
    }
    Ok(Ring::Ketama {
        endpoints: endpoints.to_vec(),
        sections: out,
    })
}

/// Go's `path/filepath.Match` (Go 1.21) for tenant names: `*` (any run of non-`/`), `?` (one
/// non-`/` character), `[...]` classes with ranges and `^` negation, `\` escapes. A malformed
/// pattern is an error whatever the name.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, String> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    check_pattern(&p)?;
    Ok(glob_from(&p, &n))
}

fn check_pattern(p: &[char]) -> Result<(), String> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err("syntax error in pattern: trailing backslash".into());
                }
                i += 2;
            }
            '[' => {
                let Some(end) = class_end(p, i) else {
                    return Err("syntax error in pattern: unterminated [".into());
                };
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The index of the `]` closing the class opened at `start`.
fn class_end(p: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    while i < p.len() {
        match p[i] {
            ']' if !first => return Some(i),
            '\\' => i += 2,
            _ => i += 1,
        }
        first = false;
    }
    None
}

fn glob_from(p: &[char], n: &[char]) -> bool {
    let Some((&c, rest)) = p.split_first() else {
        return n.is_empty();
    };
    match c {
        '*' => (0..=n.len())
            .take_while(|k| !n[..*k].contains(&'/'))
            .any(|k| glob_from(rest, &n[k..])),
        '?' => n.first().is_some_and(|x| *x != '/') && glob_from(rest, &n[1..]),
        '[' => {
            let Some(end) = class_end(p, 0) else {
                return false;
            };
            let Some(&x) = n.first() else { return false };
            class_matches(&p[1..end], x) && glob_from(&p[end + 1..], &n[1..])
        }
        '\\' => p.get(1).is_some_and(|e| n.first() == Some(e)) && glob_from(&p[2..], &n[1..]),
        c => n.first() == Some(&c) && glob_from(rest, &n[1..]),
    }
}

fn class_matches(class: &[char], x: char) -> bool {
    let (negated, mut class) = match class.split_first() {
        Some(('^', rest)) => (true, rest),
        _ => (false, class),
    };
    let mut hit = false;
    while let Some(&c) = class.first() {
        let (lo, used) = if c == '\\' && class.len() > 1 {
            (class[1], 2)
        } else {
            (c, 1)
        };
        class = &class[used..];
        let hi = if class.first() == Some(&'-') && class.len() > 1 {
            let (h, u) = if class[1] == '\\' && class.len() > 2 {
                (class[2], 3)
            } else {
                (class[1], 2)
            };
            class = &class[u..];
            h
        } else {
            lo
        };
        hit |= lo <= x && x <= hi;
    }
    hit != negated && x != '/'
}

impl HashringConfig {
    fn matches(&self, tenant: &str) -> bool {
        if self.tenants.is_empty() {
            return true;
        }
        self.tenants.iter().any(|t| match self.matching {
            TenantMatch::Exact => t == tenant,
            TenantMatch::Glob => t == tenant || glob_match(t, tenant).unwrap_or(false),
        })
    }

    /// Whether this hashring names `tenant` exactly (only those give a tenant external labels).
    fn names_exactly(&self, tenant: &str) -> bool {
        self.tenants.iter().any(|t| t == tenant)
    }
}

/// Every hashring of a configuration, built.
#[derive(Debug, Clone)]
pub struct Hashrings {
    rings: Vec<(HashringConfig, Ring)>,
    pub replication: usize,
}

impl Hashrings {
    /// Builds each hashring with its algorithm (`default` when it names none).
    pub fn build(
        configs: Vec<HashringConfig>,
        default: Algorithm,
        replication: usize,
    ) -> Result<Hashrings, HashringError> {
        let rings = configs
            .into_iter()
            .map(|c| {
                let ring = Ring::build(&c.endpoints, c.algorithm.unwrap_or(default), replication)
                    .map_err(|reason| HashringError::Invalid {
                    ring: c.name.clone(),
                    reason,
                })?;
                Ok((c, ring))
            })
            .collect::<Result<_, HashringError>>()?;
        Ok(Hashrings { rings, replication })
    }

    /// A ring of one endpoint (no hashring configured: this node alone).
    pub fn single(address: &str) -> Hashrings {
        let endpoint = Endpoint {
            address: address.to_owned(),
            az: String::new(),
        };
        Hashrings {
            rings: vec![(
                HashringConfig {
                    name: String::new(),
                    tenants: Vec::new(),
                    matching: TenantMatch::Exact,
                    endpoints: vec![endpoint.clone()],
                    algorithm: None,
                    external_labels: Labels::empty(),
                },
                Ring::Hashmod(vec![endpoint]),
            )],
            replication: 1,
        }
    }

    /// The ring that routes `tenant`'s series.
    pub fn ring(&self, tenant: &str) -> Result<&Ring, HashringError> {
        self.rings
            .iter()
            .find(|(c, _)| c.matches(tenant))
            .map(|(_, r)| r)
            .ok_or_else(|| HashringError::NoHashring(tenant.to_owned()))
    }

    /// The external labels the first hashring naming `tenant` exactly gives it.
    pub fn tenant_labels(&self, tenant: &str) -> Labels {
        self.rings
            .iter()
            .find(|(c, _)| c.names_exactly(tenant))
            .map(|(c, _)| c.external_labels.clone())
            .unwrap_or_else(Labels::empty)
    }

    /// Every endpoint of every ring.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.rings.iter().flat_map(|(_, r)| r.endpoints())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn eps(a: &[&str]) -> Vec<Endpoint> {
        a.iter()
            .map(|x| Endpoint {
                address: (*x).into(),
                az: String::new(),
            })
            .collect()
    }

    /// Vectors computed with an independent XXH64 and checked against Thanos' own
    /// `TestKetamaHashringGet` cases (see the module documentation's sources).
    #[test]
    fn hashes_and_routes_as_thanos() {
        let l = Labels::from_pairs([("__name__", "up"), ("instance", "a:9090"), ("job", "node")]);
        assert_eq!(series_hash("default-tenant", &l), 0xc7e3_1018_3b89_2610);
        assert_eq!(series_hash("team-a", &l), 0xfb27_09b2_75b6_8190);
        assert_eq!(
            series_hash("default-tenant", &Labels::empty()),
            0x865e_fb37_a9c5_1d23
        );
        let three = eps(&["recv-0:10901", "recv-1:10901", "recv-2:10901"]);
        let h = series_hash("default-tenant", &l);
        let hm = Ring::build(&three, Algorithm::Hashmod, 3).unwrap();
        let got: Vec<&str> = (0..3)
            .map(|n| hm.get_n(h, n).unwrap().address.as_str())
            .collect();
        assert_eq!(got, ["recv-2:10901", "recv-0:10901", "recv-1:10901"]);
        let k = Ring::build(&three, Algorithm::Ketama, 3).unwrap();
        let got: Vec<&str> = (0..3)
            .map(|n| k.get_n(h, n).unwrap().address.as_str())
            .collect();
        assert_eq!(got, ["recv-0:10901", "recv-2:10901", "recv-1:10901"]);
        // Availability zones: r0,r1 in a; r2,r3 in b; r4,r5 in c.
        let az: Vec<Endpoint> = (0..6)
            .map(|i| Endpoint {
                address: format!("r{i}"),
                az: ["a", "b", "c"][i / 2].into(),
            })
            .collect();
        let k = Ring::build(&az, Algorithm::Ketama, 3).unwrap();
        let got: Vec<&str> = (0..3)
            .map(|n| k.get_n(h, n).unwrap().address.as_str())
            .collect();
        assert_eq!(got, ["r5", "r0", "r3"]);
        assert!(matches!(
            hm.get_n(h, 3),
            Err(HashringError::InsufficientNodes { have: 3, want: 4 })
        ));
    }

    #[test]
    fn refuses_what_thanos_would_hang_on_or_misroute() {
        let mut az = eps(&["a0", "a1", "a2", "b0"]);
        for e in &mut az[..3] {
            e.az = "a".into();
        }
        az[3].az = "b".into();
        assert!(Ring::build(&az, Algorithm::Ketama, 4).is_err());
        assert!(Ring::build(&az, Algorithm::Hashmod, 1).is_err());
        assert!(Ring::build(&eps(&["x"]), Algorithm::Ketama, 2).is_err());
        for (json, needle) in [
            ("[]", "empty"),
            ("null", "empty"),
            (
                r#"[{"endpoints": ["a"], "algorithm": "rendezvous"}]"#,
                "rendezvous",
            ),
            (
                r#"[{"endpoints": ["a"], "tenant_matcher_type": "regex"}]"#,
                "regex",
            ),
            (r#"[{"endpoints": ["a"], "replicas": 3}]"#, "replicas"),
            (r#"[{"endpoints": [""]}]"#, "address must be set"),
            (
                r#"[{"hashring": "x", "endpoints": ["a"], "tenants": ["[ab"], "tenant_matcher_type": "glob"}]"#,
                "unterminated",
            ),
            ("[{\"endpoints\": [\n  \"a\",\n  3]}]", "line 3"),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn seed_003_file_loads_and_tenants_pick_rings() {
        let seed = r#"[
      {
        "hashring": "soft-tenants",
        "endpoints":
        [
          "thanos-receive-0.thanos-receive.kube-system.svc.cluster.local:10901",
          "thanos-receive-1.thanos-receive.kube-system.svc.cluster.local:10901",
          "thanos-receive-2.thanos-receive.kube-system.svc.cluster.local:10901"
        ]
      }
    ]"#;
        let rings = Hashrings::build(parse(seed).unwrap(), Algorithm::Hashmod, 1).unwrap();
        assert_eq!(rings.ring("anyone").unwrap().endpoints().len(), 3);
        let file = r#"[
            {"hashring": "a", "tenants": ["team-a"], "endpoints": [{"address": "x:1", "az": ""}],
             "external_labels": {"team": "a"}},
            {"hashring": "g", "tenants": ["team-*"], "tenant_matcher_type": "glob", "endpoints": ["y:1"]},
            {"hashring": "rest", "endpoints": ["z:1"]}
        ]"#;
        let rings = Hashrings::build(parse(file).unwrap(), Algorithm::Hashmod, 1).unwrap();
        let first = |t: &str| rings.ring(t).unwrap().endpoints()[0].address.clone();
        assert_eq!(first("team-a"), "x:1");
        assert_eq!(first("team-b"), "y:1");
        assert_eq!(first("other"), "z:1");
        assert_eq!(
            rings.tenant_labels("team-a"),
            Labels::from_pairs([("team", "a")])
        );
        assert_eq!(rings.tenant_labels("team-b"), Labels::empty());
    }

    #[test]
    fn go_glob_semantics() {
        for (p, n, want) in [
            ("team-*", "team-a", true),
            ("team-*", "team-a/b", false),
            ("t?am", "team", true),
            ("[a-c]x", "bx", true),
            ("[^a-c]x", "bx", false),
            ("\\*", "*", true),
            ("*", "", true),
        ] {
            assert_eq!(glob_match(p, n).unwrap(), want, "{p} {n}");
        }
        assert!(glob_match("[", "x").is_err());
        assert!(glob_match("x\\", "x").is_err());
    }
}
