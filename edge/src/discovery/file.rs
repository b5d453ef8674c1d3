//! `file_sd_configs`: target groups from JSON or YAML files, re-read when a watched directory changes
//! (this catches the ConfigMap `..data` symlink swap) and every `refresh_interval` in any case.
//!
//! As in Prometheus, each group gets `__meta_filepath`, a file that cannot be read or parsed keeps the
//! groups it last produced (with a warning), and a pattern may use `*`/`?`/`[...]` in its last path element.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{TargetGroup, Update, send_if_changed, sleep_or_stop};
use meridian_core::targetgroup::{glob_match, parse_file};

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
#[derive(Debug)]
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
        let watcher = meridian_core::fswatch::watcher(move |_| {
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
