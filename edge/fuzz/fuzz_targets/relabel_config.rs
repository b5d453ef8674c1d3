//! Relabel configs from arbitrary YAML, applied to a fixed label set: parsing either fails cleanly or
//! yields a config whose application never panics (regex translation, `$` expansion, hashmod).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_edge::Labels;
use meridian_edge::relabel::{RelabelConfig, process};

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = RelabelConfig::parse_yaml(yaml) {
        let l = Labels::from_pairs([("__name__", "up"), ("a", "x;y"), ("__meta_k", "v")]);
        let _ = process(&l, &[cfg]);
    }
});
