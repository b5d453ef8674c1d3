//! Turning discovered groups into scrape targets, as Prometheus' `PopulateLabels`: the job's defaults
//! (`job`, `__scheme__`, `__metrics_path__`, `__scrape_interval__`, `__scrape_timeout__`, `__param_*`) are
//! added where discovery did not set them, `relabel_configs` run, `__meta_*` labels go, and `instance`
//! defaults to `__address__`. Labels starting with `__` stay on the target (they shape its URL) but not on
//! its series.

use std::time::Duration;

use crate::config::ScrapeConfig;
use crate::discovery::TargetGroup;
use meridian_core::labels::{Labels, LabelsBuilder};
use meridian_core::promfmt::PromDuration;
use meridian_core::relabel::process_builder;

use super::http::encode_query;

/// A target to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// After relabeling, including `__` labels.
    pub labels: Labels,
    /// Before relabeling (Prometheus' `discoveredLabels`).
    pub discovered: Labels,
    pub interval: Duration,
    pub timeout: Duration,
}

/// A target relabeling dropped (kept for the targets API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTarget {
    pub discovered: Labels,
}

impl Target {
    /// The labels its series carry: every label not starting with `__`.
    pub fn public_labels(&self) -> Labels {
        let keep: Vec<&str> = self
            .labels
            .iter()
            .filter(|l| !l.name.starts_with("__"))
            .map(|l| l.name)
            .collect();
        self.labels.keep_only(&keep)
    }

    pub fn address(&self) -> &str {
        self.labels.get_or_empty("__address__")
    }

    pub fn scheme(&self) -> &str {
        self.labels.get_or_empty("__scheme__")
    }

    /// Path and query: `__metrics_path__` plus the job's `params`, where `__param_<name>` replaces the
    /// first value of a parameter or adds it.
    pub fn path_and_query(&self, cfg: &ScrapeConfig) -> String {
        let mut params: Vec<(String, String)> = Vec::new();
        let mut names: Vec<&String> = cfg.params.keys().collect();
        names.sort();
        for k in names {
            let override_ = self.labels.get(&format!("__param_{k}"));
            for (i, v) in cfg.params[k].iter().enumerate() {
                let v = match override_ {
                    Some(o) if i == 0 => o.to_owned(),
                    _ => v.clone(),
                };
                params.push((k.clone(), v));
            }
        }
        for l in self.labels.iter() {
            if let Some(k) = l.name.strip_prefix("__param_")
                && !cfg.params.contains_key(k)
            {
                params.push((k.to_owned(), l.value.to_owned()));
            }
        }
        let path = self.labels.get_or_empty("__metrics_path__");
        if params.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", encode_query(&params))
        }
    }

    /// The scrape URL, for messages and the targets API.
    pub fn url(&self, cfg: &ScrapeConfig) -> String {
        format!(
            "{}://{}{}",
            self.scheme(),
            self.address(),
            self.path_and_query(cfg)
        )
    }
}

/// What became of one discovered target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Populated {
    Target(Target),
    Dropped(DroppedTarget),
}

/// Prometheus' `PopulateLabels` for one target of a group.
pub fn populate(
    group_labels: &Labels,
    target_labels: &Labels,
    cfg: &ScrapeConfig,
) -> Result<Populated, String> {
    let mut lb = LabelsBuilder::new();
    for l in group_labels.iter() {
        lb.set(l.name, l.value);
    }
    for l in target_labels.iter() {
        lb.set(l.name, l.value);
    }
    let interval = PromDuration::format(cfg.scrape_interval);
    let timeout = PromDuration::format(cfg.scrape_timeout);
    for (name, value) in [
        ("job", cfg.job_name.as_str()),
        ("__scrape_interval__", interval.as_str()),
        ("__scrape_timeout__", timeout.as_str()),
        ("__metrics_path__", cfg.metrics_path.as_str()),
        ("__scheme__", cfg.scheme.as_str()),
    ] {
        if lb.get(name).is_none() {
            lb.set(name, value);
        }
    }
    for (k, v) in &cfg.params {
        let name = format!("__param_{k}");
        if let Some(first) = v.first()
            && lb.get(&name).is_none()
        {
            lb.set(&name, first);
        }
    }
    let discovered = lb.build();
    if !process_builder(&mut lb, &cfg.relabel_configs) {
        return Ok(Populated::Dropped(DroppedTarget { discovered }));
    }
    let Some(addr) = lb.get("__address__").map(str::to_owned) else {
        return Err("no address".into());
    };
    if addr.contains('/') {
        return Err(format!("{addr:?} is not a valid hostname"));
    }
    let parse = |name: &str, what: &str| -> Result<Duration, String> {
        let v = lb.get(name).unwrap_or("");
        let d = PromDuration::parse(v).map_err(|e| format!("error parsing scrape {what}: {e}"))?;
        if d.0.is_zero() {
            return Err(format!("scrape {what} cannot be 0"));
        }
        Ok(d.0)
    };
    let interval = parse("__scrape_interval__", "interval")?;
    let timeout = parse("__scrape_timeout__", "timeout")?;
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            lb.get("__scrape_timeout__").unwrap_or(""),
            lb.get("__scrape_interval__").unwrap_or("")
        ));
    }
    for (name, _) in lb.pairs() {
        if name.starts_with("__meta_") {
            lb.del(&name);
        }
    }
    if lb.get("instance").is_none() {
        lb.set("instance", &addr);
    }
    let labels = lb.build();
    Ok(Populated::Target(Target {
        labels,
        discovered,
        interval,
        timeout,
    }))
}

/// All targets of a job's groups; errors name the group and are returned beside the good targets.
pub fn targets_from_groups(
    groups: &[TargetGroup],
    cfg: &ScrapeConfig,
) -> (Vec<Target>, Vec<DroppedTarget>, Vec<String>) {
    let (mut targets, mut dropped, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for g in groups {
        for t in &g.targets {
            match populate(&g.labels, t, cfg) {
                Ok(Populated::Target(t)) => targets.push(t),
                Ok(Populated::Dropped(d)) => dropped.push(d),
                Err(e) => errors.push(format!(
                    "job {:?}, group {:?}, target {}: {e}",
                    cfg.job_name, g.source, t
                )),
            }
        }
    }
    // Several discovered targets may end as the same target (two groups, or one pod's ports collapsed
    // by a port annotation): it is scraped once and shows the discovered labels of the *last* one, as
    // Prometheus' scrape pool keeps them (`SetDiscoveredLabels` on every duplicate).
    let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
    let mut unique: Vec<Target> = Vec::with_capacity(targets.len());
    for t in targets {
        match index.get(&t.labels) {
            Some(&i) => unique[i].discovered = t.discovered,
            None => {
                index.insert(t.labels.clone(), unique.len());
                unique.push(t);
            }
        }
    }
    let mut targets = unique;
    targets.sort_by(|a, b| a.labels.cmp(&b.labels));
    (targets, dropped, errors)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn job(extra: &str) -> ScrapeConfig {
        Config::parse(&format!(
            "scrape_configs:\n  - job_name: j\n    scrape_interval: 15s\n{extra}"
        ))
        .unwrap()
        .scrape_configs
        .remove(0)
    }

    #[test]
    fn defaults() {
        let cfg = job("    params: {module: [a, b]}\n");
        let t = match populate(
            &Labels::from_pairs([("__meta_x", "1"), ("env", "p")]),
            &Labels::from_pairs([("__address__", "h:9")]),
            &cfg,
        )
        .unwrap()
        {
            Populated::Target(t) => t,
            Populated::Dropped(_) => panic!("dropped"),
        };
        assert_eq!(
            t.public_labels().to_string(),
            r#"{env="p", instance="h:9", job="j"}"#
        );
        assert_eq!(t.discovered.get("__scrape_interval__"), Some("15s"));
        assert_eq!(t.discovered.get("__meta_x"), Some("1"));
        assert!(!t.labels.has("__meta_x"));
        assert_eq!(t.url(&cfg), "http://h:9/metrics?module=a&module=b");
    }

    #[test]
    fn relabel_shapes_url_and_can_drop() {
        let cfg = job(
            "    relabel_configs:\n      - {source_labels: [__address__], target_label: __param_target}\n      - {target_label: __address__, replacement: 'exporter:9115'}\n      - {source_labels: [__param_target], regex: 'drop.*', action: drop}\n",
        );
        let t = match populate(
            &Labels::empty(),
            &Labels::from_pairs([("__address__", "site:80")]),
            &cfg,
        )
        .unwrap()
        {
            Populated::Target(t) => t,
            Populated::Dropped(_) => panic!("dropped"),
        };
        assert_eq!(t.url(&cfg), "http://exporter:9115/metrics?target=site%3A80");
        assert_eq!(t.public_labels().get("instance"), Some("exporter:9115"));
        let d = populate(
            &Labels::empty(),
            &Labels::from_pairs([("__address__", "drop:1")]),
            &cfg,
        )
        .unwrap();
        assert!(matches!(d, Populated::Dropped(_)));
    }

    #[test]
    fn errors() {
        let cfg = job("    relabel_configs: [{target_label: __address__, replacement: ''}]\n");
        let e = populate(
            &Labels::empty(),
            &Labels::from_pairs([("__address__", "h:1")]),
            &cfg,
        )
        .unwrap_err();
        assert_eq!(e, "no address");
        let cfg =
            job("    relabel_configs: [{target_label: __scrape_timeout__, replacement: 1m}]\n");
        let e = populate(
            &Labels::empty(),
            &Labels::from_pairs([("__address__", "h:1")]),
            &cfg,
        )
        .unwrap_err();
        assert!(e.contains("greater than scrape interval"), "{e}");
    }
}
