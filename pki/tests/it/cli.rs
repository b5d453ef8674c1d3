//! The `meridian-pki` command: what it writes is verified by openssl, keys are private, nothing is
//! overwritten by accident, `inspect` fails on expired certificates, and the Secrets carry the files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;

fn pki(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian-pki"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = pki(args);
    assert!(
        out.status.success(),
        "meridian-pki {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(args: &[&str]) -> Output {
    let bin = meridian_testkit::require("openssl", "apt-get install openssl").unwrap();
    Command::new(bin).args(args).output().unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn issued_set_verifies_with_openssl() {
    if meridian_testkit::require("openssl", "apt-get install openssl").is_none() {
        return;
    }
    for key_type in ["P-256", "P-384", "Ed25519", "RSA"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        ok(&["init", "--dir", d, "--key-type", key_type, "--days", "3650"]);
        ok(&[
            "issue",
            "server",
            "--name",
            "edge-0",
            "--dns",
            "edge-0.cluster-a.example",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--dir",
            d,
            "--key-type",
            key_type,
            "--days",
            "90",
        ]);
        ok(&[
            "issue",
            "client",
            "--name",
            "gateway",
            "--dir",
            d,
            "--key-type",
            key_type,
        ]);
        assert_eq!(
            mode(&dir.path().join("ca.key")),
            0o600,
            "{key_type}: CA key mode"
        );
        assert_eq!(
            mode(&dir.path().join("edge-0.key")),
            0o600,
            "{key_type}: key mode"
        );
        let ca = format!("{d}/ca.crt");
        for (cert, purpose, good) in [
            ("edge-0", "sslserver", true),
            ("gateway", "sslclient", true),
            ("gateway", "sslserver", false),
            ("edge-0", "sslclient", false),
        ] {
            let out = openssl(&[
                "verify",
                "-CAfile",
                &ca,
                "-purpose",
                purpose,
                &format!("{d}/{cert}.crt"),
            ]);
            assert_eq!(
                out.status.success(),
                good,
                "{key_type}: openssl verify {cert} as {purpose}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = openssl(&["x509", "-in", &format!("{d}/edge-0.crt"), "-noout", "-text"]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("DNS:edge-0.cluster-a.example") && text.contains("IP Address:127.0.0.1"),
            "{text}"
        );
        assert!(text.contains("TLS Web Server Authentication"), "{text}");
        assert!(
            !text.contains("4096") && !text.contains("1975"),
            "rcgen default validity leaked: {text}"
        );
        let ca_text =
            String::from_utf8_lossy(&openssl(&["x509", "-in", &ca, "-noout", "-text"]).stdout)
                .into_owned();
        assert!(
            ca_text.contains("CA:TRUE") && ca_text.contains("Certificate Sign"),
            "{ca_text}"
        );
    }
}

#[test]
fn refuses_to_overwrite_and_names_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&["init", "--dir", d]);
    let before = std::fs::read(dir.path().join("ca.key")).unwrap();
    let out = pki(&["init", "--dir", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(dir.path().join("ca.key")).unwrap(),
        before,
        "CA key overwritten"
    );
    ok(&["init", "--dir", d, "--force"]);
    assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);

    let empty = tempfile::tempdir().unwrap();
    let out = pki(&[
        "issue",
        "server",
        "--name",
        "x",
        "--dns",
        "x",
        "--dir",
        empty.path().to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca.crt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pki(&["issue", "server", "--name", "x", "--dir", d]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--dns"),
        "server without SANs accepted"
    );
    let out = pki(&["inspect", &format!("{d}/ca.key")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PEM certificate"));
}

#[test]
fn inspect_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&["init", "--dir", d]);
    ok(&[
        "issue",
        "server",
        "--name",
        "edge-0",
        "--dns",
        "edge-0.cluster-a.example",
        "--dir",
        d,
    ]);
    let text = ok(&["inspect", &format!("{d}/edge-0.crt")]);
    for want in [
        "CN=edge-0",
        "DNS:edge-0.cluster-a.example",
        "serverAuth",
        "not after:",
        "SHA-256:",
        "CN=Meridian CA",
    ] {
        assert!(text.contains(want), "inspect output lacks {want}:\n{text}");
    }
    // An expired certificate, issued with the library.
    let ca = meridian_pki::issue::read_ca(dir.path()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let old = meridian_pki::issue::issue(
        &ca,
        meridian_pki::issue::Usage::Client,
        "old",
        &[],
        &[],
        meridian_pki::issue::KeyType::P256,
        meridian_pki::issue::Validity {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        },
    )
    .unwrap();
    meridian_pki::issue::write_pair(dir.path(), "old", &old, false).unwrap();
    let out = pki(&["inspect", &format!("{d}/old.crt")]);
    assert!(
        !out.status.success(),
        "expired certificate inspected with exit 0"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("EXPIRED"));
}

#[test]
fn kubernetes_secrets_carry_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(&["init", "--dir", d]);
    ok(&[
        "issue",
        "server",
        "--name",
        "edge-0",
        "--dns",
        "edge-0.cluster-a.example",
        "--dir",
        d,
    ]);
    ok(&["issue", "client", "--name", "gateway", "--dir", d]);
    let yaml = ok(&[
        "k8s-secrets",
        "--dir",
        d,
        "--namespace",
        "monitoring",
        "--server",
        "edge-0",
        "--client",
        "gateway",
    ]);
    assert_eq!(yaml.matches("kind: Secret").count(), 3, "{yaml}");
    for name in [
        "name: meridian-ca",
        "name: edge-0-tls",
        "name: gateway-client-tls",
        "type: kubernetes.io/tls",
    ] {
        assert!(yaml.contains(name), "missing {name}:\n{yaml}");
    }
    // Every value decodes, and the CA is the CA file.
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca_values: Vec<String> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ca.crt: "))
        .map(|v| String::from_utf8(b64.decode(v).unwrap()).unwrap())
        .collect();
    assert_eq!(ca_values.len(), 3);
    assert!(ca_values.iter().all(|v| *v == ca));
}

/// `--days` out of range is refused with its value named (3,000,000 days panicked on a date overflow,
/// 0 issued an already-expired certificate).
#[test]
fn out_of_range_validity_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for days in ["0", "3000000", "4294967295"] {
        let out = pki(&["init", "--dir", d, "--days", days, "--force"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "init --days {days}: {err}");
        assert!(
            err.contains(&format!("--days {days}")),
            "init --days {days}: {err}"
        );
    }
    ok(&["init", "--dir", d]);
    for days in ["0", "3000000"] {
        let out = pki(&[
            "issue", "server", "--name", "s", "--dns", "s", "--dir", d, "--days", days,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "issue --days {days}: {err}");
        assert!(
            err.contains(&format!("--days {days}")),
            "issue --days {days}: {err}"
        );
        assert!(
            !dir.path().join("s.crt").exists(),
            "a certificate was written for --days {days}"
        );
    }
    // The longest validity X.509 can carry is still issued.
    ok(&[
        "issue", "server", "--name", "s", "--dns", "s", "--dir", d, "--days", "2900000",
    ]);
}
