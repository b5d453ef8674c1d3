//! Two minutes of chaos over a local federation of real processes (`meridian_integration::chaos`):
//! a random edge, dnsmasq, the object store or the gateway killed and restarted every 20–40 s under
//! remote writes and queries. Nothing acknowledged may be lost, no answer may be wrong without a
//! warning, and every bucket block must be whole and there once. The ten-minute run is
//! `./integration/chaos.sh chaos`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use meridian_integration::chaos::{ChaosOptions, Setup, run_chaos};

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_minutes_of_chaos_lose_nothing_acknowledged() {
    meridian_pki::install_crypto_provider();
    if meridian_testkit::require("dnsmasq", "apt-get install dnsmasq-base").is_none()
        || meridian_testkit::require("moto_server", "pip install 'moto[server]'").is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::start(bin_dir(), dir.path().join("federation"), None)
        .await
        .unwrap();
    // A fixed seed: the same schedule every run; every kind of component is hit once in every four
    // faults, and two minutes at 15–25 s hold at least four.
    let opts = ChaosOptions {
        duration: Duration::from_secs(120),
        seed: 7,
        every: (Duration::from_secs(15), Duration::from_secs(25)),
        ..ChaosOptions::default()
    };
    let report = run_chaos(&mut setup.fed, &setup.proxy, &setup.bucket, &opts)
        .await
        .unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(report.faults.len() >= 4, "{report}");
    assert!(report.writes_acked > 1000, "{report}");
    assert!(report.blocks > 0, "no block reached the bucket: {report}");
    setup.stop().await;
}
