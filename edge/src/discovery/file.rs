//! `file_sd_configs`: target groups from JSON or YAML files, re-read when a watched directory changes
//! (this catches the ConfigMap `..data` symlink swap) and every `refresh_interval` in any case.
//!
//! As in Prometheus, each group gets `__meta_filepath`, a file that cannot be read or parsed keeps the
//! groups it last produced (with a warning), and a pattern may use `*`/`?`/`[...]` in its last path element.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{TargetGroup, Update, send_if_changed, sleep_or_stop};
use crate::labels::Labels;
use crate::relabel::is_valid_label_name;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses the content of one file into groups.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<TargetGroup>, String> {
    let name = path.display().to_string();
    let raw: Vec<RawGroup> = if name.ends_with(".json") {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())?
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, g)| {
            for k in g.labels.keys() {
                if !is_valid_label_name(k) {
                    return Err(format!("group {i}: {k:?} is not a valid label name"));
                }
            }
            for t in &g.targets {
                if t.is_empty() || t.contains('/') {
                    return Err(format!("group {i}: {t:?} is not a valid host:port"));
                }
            }
            let mut labels: Vec<(&str, &str)> = g
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            labels.push(("__meta_filepath", &name));
            Ok(TargetGroup {
                source: format!("{name}:{i}"),
                targets: g
                    .targets
                    .iter()
                    .map(|t| Labels::from_pairs([("__address__", t.as_str())]))
                    .collect(),
                labels: Labels::from_pairs(labels),
            })
        })
        .collect()
}

/// Go's `filepath.Match` for one path element: `*`, `?`, `[...]` (with `^`/`!` negation and ranges).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class in p including brackets).
        let mut i = 1;
        let negate = matches!(p.get(1), Some('^' | '!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() && (first || p[i] != ']') {
            first = false;
            let lo = p[i];
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|c| *c != ']') {
                let hi = p[i + 2];
                matched |= lo <= c && c <= hi;
                i += 3;
            } else {
                matched |= lo == c;
                i += 1;
            }
        }
        (i < p.len()).then_some((matched != negate, i + 1))
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match (n.first(), class(p, n.first().copied().unwrap_or('\0'))) {
                (Some(_), Some((true, len))) => go(&p[len..], &n[1..]),
                _ => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The files a pattern names now, sorted.
async fn expand_pattern(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
        return Vec::new();
    };
    if !file.contains(['*', '?', '[']) {
        return vec![path.to_path_buf()];
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut out = Vec::new();
    if let Ok(mut rd) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            if let Some(name) = e.file_name().to_str()
                && glob_match(file, name)
            {
                out.push(dir.join(name));
            }
        }
    }
    out.sort();
    out
}

/// One `file_sd_configs` entry.
pub struct FileSd {
    patterns: Vec<String>,
    refresh: Duration,
    /// Last good groups per file.
    last: BTreeMap<PathBuf, Vec<TargetGroup>>,
}

impl FileSd {
    pub fn new(patterns: Vec<String>, refresh: Duration) -> FileSd {
        FileSd {
            patterns,
            refresh,
            last: BTreeMap::new(),
        }
    }

    /// Reads every file once; returns all groups.
    pub async fn refresh(&mut self) -> Vec<TargetGroup> {
        let mut now: BTreeMap<PathBuf, Vec<TargetGroup>> = BTreeMap::new();
        for p in &self.patterns {
            for file in expand_pattern(p).await {
                let groups = match tokio::fs::read_to_string(&file).await {
                    Ok(text) => parse_file(&file, &text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    Err(e) => Err(e.to_string()),
                };
                match groups {
                    Ok(g) => {
                        now.insert(file, g);
                    }
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "file_sd: cannot use file; keeping its previous targets");
                        if let Some(prev) = self.last.get(&file) {
                            now.insert(file, prev.clone());
                        }
                    }
                }
            }
        }
        self.last = now;
        self.last.values().flatten().cloned().collect()
    }

    pub async fn run(mut self, provider: usize, tx: mpsc::Sender<Update>, stop: CancellationToken) {
        let (ev_tx, mut ev_rx) = mpsc::channel::<()>(1);
        // The watcher calls back on its own thread; a full channel means a refresh is already due.
        let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            let _ = ev_tx.try_send(());
        });
        let _watcher = match watcher {
            Ok(mut w) => {
                let mut dirs: Vec<PathBuf> = self
                    .patterns
                    .iter()
                    .map(|p| {
                        Path::new(p)
                            .parent()
                            .filter(|d| !d.as_os_str().is_empty())
                            .unwrap_or(Path::new("."))
                            .to_path_buf()
                    })
                    .collect();
                dirs.sort();
                dirs.dedup();
                for d in dirs {
                    if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %d.display(), error = %e, "file_sd: cannot watch; relying on refresh_interval");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "file_sd: no file watcher; relying on refresh_interval");
                None
            }
        };
        let mut sent: Option<Vec<TargetGroup>> = None;
        loop {
            let groups = self.refresh().await;
            if !send_if_changed(&tx, provider, &mut sent, groups).await {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ev_rx.recv() => {
                    // Let a burst of events (write, rename, symlink swap) settle.
                    if !sleep_or_stop(Duration::from_millis(50), &stop).await {
                        return;
                    }
                    while ev_rx.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(self.refresh) => {}
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.json", "a.json"));
        assert!(!glob_match("*.json", "a.yml"));
        assert!(glob_match("t?.y*ml", "t1.yaml"));
        assert!(glob_match("[ab]*.json", "b.json"));
        assert!(!glob_match("[^ab]*.json", "b.json"));
        assert!(glob_match("[a-c].json", "c.json"));
    }

    #[test]
    fn parses_both_formats() {
        let j = parse_file(
            Path::new("/x/t.json"),
            r#"[{"targets": ["a:1", "b:2"], "labels": {"env": "p"}}, {"targets": ["c:3"]}]"#,
        )
        .unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].targets.len(), 2);
        assert_eq!(j[0].labels.get("env"), Some("p"));
        assert_eq!(j[0].labels.get("__meta_filepath"), Some("/x/t.json"));
        assert_eq!(j[1].source, "/x/t.json:1");
        let y = parse_file(
            Path::new("t.yml"),
            "- targets: ['a:1']\n  labels:\n    env: p\n",
        )
        .unwrap();
        assert_eq!(y[0].targets[0].get("__address__"), Some("a:1"));
        assert!(parse_file(Path::new("t.yml"), "- targetz: []\n").is_err());
        assert!(parse_file(Path::new("t.json"), "[{\"labels\": {\"a-b\": \"x\"}}]").is_err());
    }

    #[tokio::test]
    async fn keeps_last_good_groups() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.json");
        std::fs::write(&f, r#"[{"targets": ["a:1"]}]"#).unwrap();
        let mut sd = FileSd::new(
            vec![dir.path().join("*.json").display().to_string()],
            Duration::from_secs(60),
        );
        assert_eq!(sd.refresh().await.len(), 1);
        std::fs::write(&f, "[{").unwrap();
        assert_eq!(sd.refresh().await.len(), 1);
        std::fs::remove_file(&f).unwrap();
        assert!(sd.refresh().await.is_empty());
    }
}
