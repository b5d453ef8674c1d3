//! Exposition parser throughput on a ~1 MB node_exporter-like body (text format 0.0.4): families with
//! HELP/TYPE, 2–4 labels per series, float values in Go's `%g`-like forms; and on a ~10 MB
//! kube-state-metrics-like body (long label sets: namespace, pod, uid, node, …; integer values).

#![allow(clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meridian_edge::scrape::parse::{Entry, Format, Parser};

fn body() -> (String, u64) {
    let mut b = String::new();
    let mut n = 0u64;
    let mut fam = 0;
    while b.len() < 1 << 20 {
        fam += 1;
        b.push_str(&format!(
            "# HELP node_family_{fam}_seconds_total Seconds the CPUs spent in each mode.\n"
        ));
        b.push_str(&format!("# TYPE node_family_{fam}_seconds_total counter\n"));
        for cpu in 0..16 {
            for mode in [
                "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
            ] {
                b.push_str(&format!(
                    "node_family_{fam}_seconds_total{{cpu=\"{cpu}\",mode=\"{mode}\"}} {}\n",
                    1.234_567e6 + (cpu * 31 + fam) as f64 * 0.37
                ));
                n += 1;
            }
        }
    }
    (b, n)
}

fn ksm_body() -> (String, u64) {
    let mut b = String::new();
    let mut n = 0u64;
    let phases = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];
    b.push_str("# HELP kube_pod_status_phase The pods current phase.\n# TYPE kube_pod_status_phase gauge\n");
    let mut pod = 0u64;
    while b.len() < 10 << 20 {
        pod += 1;
        for (i, phase) in phases.iter().enumerate() {
            b.push_str(&format!(
                "kube_pod_status_phase{{namespace=\"team-{}\",pod=\"web-{pod:06}-7f9c8d6b5-x2x{}\",uid=\"6f1c{pod:08x}-3b2a-4c1d-9e8f-{pod:012x}\",phase=\"{phase}\"}} {}\n",
                pod % 97,
                pod % 10,
                u8::from(i == 1)
            ));
            n += 1;
        }
        b.push_str(&format!(
            "kube_pod_info{{namespace=\"team-{}\",pod=\"web-{pod:06}-7f9c8d6b5-x2x{}\",uid=\"6f1c{pod:08x}-3b2a-4c1d-9e8f-{pod:012x}\",host_ip=\"10.0.{}.{}\",pod_ip=\"10.244.{}.{}\",node=\"node-{}\",created_by_kind=\"ReplicaSet\",created_by_name=\"web-{pod:06}-7f9c8d6b5\",priority_class=\"\",host_network=\"false\"}} 1\n",
            pod % 97,
            pod % 10,
            pod / 250 % 256,
            pod % 250,
            pod / 250 % 256,
            pod % 250,
            pod % 300
        ));
        n += 1;
    }
    (b, n)
}

fn bench(c: &mut Criterion) {
    let (body, n) = body();
    eprintln!("body: {} bytes, {n} samples", body.len());
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(n));
    g.bench_function("text_1mb_parse_only", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for e in Parser::new(&body, Format::Text) {
                if let Ok(Entry::Sample { value, labels, .. }) = e {
                    sum += value + labels.len() as f64;
                }
            }
            sum
        })
    });
    g.bench_function("text_1mb_parse_and_read_labels", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for e in Parser::new(&body, Format::Text) {
                if let Ok(Entry::Sample { value, labels, .. }) = e {
                    sum +=
                        value + labels.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() as f64;
                }
            }
            sum
        })
    });
    let (ksm, kn) = ksm_body();
    eprintln!(
        "kube-state-metrics-like body: {} bytes, {kn} samples",
        ksm.len()
    );
    g.throughput(Throughput::Elements(kn));
    g.sample_size(20);
    g.bench_function("text_10mb_ksm_parse_and_read_labels", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for e in Parser::new(&ksm, Format::Text) {
                if let Ok(Entry::Sample { value, labels, .. }) = e {
                    sum +=
                        value + labels.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() as f64;
                }
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
