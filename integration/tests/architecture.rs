//! The shape of the workspace, checked: the crate graph `ARCHITECTURE.md` describes is the one Cargo
//! builds, the layering rules hold (the gateway never depends on the edge, the TSDB never on the
//! StoreAPI or a gRPC server), and no production file or function outgrows the limits (800 and 150
//! lines). Production code is everything under the `src/` of the product crates, without its
//! `#[cfg(test)]` items; test support (this crate, the testkit, the StoreAPI acceptance suite) is
//! reported but not limited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::Visit;

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 150;

/// The crates whose `src/` is production code, by directory.
const PRODUCT_CRATES: [&str; 6] = [
    "edge/core",
    "edge/storeapi",
    "edge/tsdb",
    "edge",
    "gateway",
    "pki",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Workspace packages and their Meridian dependencies by kind (`normal`, `dev`, `build`).
type Graph = BTreeMap<String, BTreeMap<&'static str, BTreeSet<String>>>;

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata answers JSON")
}

fn graph(meta: &serde_json::Value) -> Graph {
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let mut g = Graph::new();
    for p in &packages {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let entry = g.entry(name.clone()).or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or_default();
            if !names.contains(dep) || dep == name {
                continue;
            }
            let kind = match d["kind"].as_str() {
                Some("dev") => "dev",
                Some("build") => "build",
                _ => "normal",
            };
            entry.entry(kind).or_default().insert(dep.to_owned());
        }
    }
    g
}

/// Everything `from` reaches through normal dependencies.
fn reach(g: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(n) = todo.pop() {
        for d in g
            .get(&n)
            .and_then(|k| k.get("normal"))
            .into_iter()
            .flatten()
        {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn layering_rules_hold() {
    let meta = metadata();
    let g = graph(&meta);
    for kind in ["normal", "dev", "build"] {
        let direct = g["meridian-gateway"].get(kind).cloned().unwrap_or_default();
        assert!(
            !direct.contains("meridian-edge"),
            "the gateway depends on the edge ({kind})"
        );
    }
    let mut gateway_all = reach(&g, "meridian-gateway");
    for d in g["meridian-gateway"].get("dev").into_iter().flatten() {
        gateway_all.insert(d.clone());
        gateway_all.extend(reach(&g, d));
    }
    assert!(
        !gateway_all.contains("meridian-edge"),
        "the gateway reaches the edge: {gateway_all:?}"
    );
    assert!(!reach(&g, "meridian-edge").contains("meridian-gateway"));

    let tsdb = reach(&g, "meridian-tsdb");
    assert_eq!(
        tsdb,
        BTreeSet::from(["meridian-core".to_owned()]),
        "the TSDB depends on the core only"
    );
    // The core may name tonic's `Status` and `Code` (the one error table), but carries no transport:
    // so nothing under the TSDB has a gRPC server.
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    for crate_name in ["meridian-core", "meridian-tsdb"] {
        let p = packages
            .iter()
            .find(|p| p["name"] == crate_name)
            .expect("package listed");
        for d in p["dependencies"].as_array().into_iter().flatten() {
            if d["kind"].is_string() {
                continue;
            }
            let dep = d["name"].as_str().unwrap_or_default();
            assert!(
                dep != "meridian-storeapi" && dep != "meridian-pki",
                "{crate_name} depends on {dep}"
            );
            if dep == "tonic" {
                assert_eq!(
                    d["uses_default_features"], false,
                    "{crate_name}: tonic with its defaults"
                );
                assert_eq!(
                    d["features"],
                    serde_json::json!([]),
                    "{crate_name}: tonic features"
                );
            }
            assert!(
                !["tonic-prost", "axum", "hyper-util", "tokio-rustls"].contains(&dep),
                "{crate_name} depends on {dep}"
            );
        }
    }
}

/// The table between the `crate-graph` markers of `ARCHITECTURE.md`: `| crate | dir | depends on |`.
#[test]
fn architecture_md_matches_the_crate_graph() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text
        .find("<!-- crate-graph -->")
        .expect("<!-- crate-graph --> marker");
    let end = text
        .find("<!-- /crate-graph -->")
        .expect("<!-- /crate-graph --> marker");
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text[start..end].lines() {
        let cells: Vec<&str> = line
            .split('|')
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        if cells.len() < 5 || !cells[1].starts_with("meridian-") {
            continue;
        }
        let deps = cells[3]
            .split(',')
            .map(|d| d.trim().trim_matches('`').to_owned())
            .filter(|d| d.starts_with("meridian-"))
            .collect();
        documented.insert(cells[1].to_owned(), deps);
    }
    let g = graph(&metadata());
    let actual: BTreeMap<String, BTreeSet<String>> = g
        .iter()
        .map(|(n, k)| (n.clone(), k.get("normal").cloned().unwrap_or_default()))
        .collect();
    assert_eq!(
        documented, actual,
        "ARCHITECTURE.md's crate table and `cargo metadata` disagree"
    );
}

/// Lines of each function (signature to closing brace) and of the file without `#[cfg(test)]` items.
#[derive(Default)]
struct Sizes {
    test_lines: usize,
    fns: Vec<(String, usize, usize)>,
    in_test: usize,
}

/// `#[cfg(test)]` (also inside `all(...)`/`any(...)`) or a test attribute (`#[test]`, `#[tokio::test]`).
fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let cfg_test = a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .to_string()
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "test")
            });
        cfg_test || a.path().segments.last().is_some_and(|s| s.ident == "test")
    })
}

fn lines(span: proc_macro2::Span) -> usize {
    span.end().line.saturating_sub(span.start().line) + 1
}

impl Sizes {
    fn record(&mut self, name: String, start: proc_macro2::Span, end: proc_macro2::Span) {
        if self.in_test == 0 {
            let n = end.end().line.saturating_sub(start.start().line) + 1;
            self.fns.push((name, start.start().line, n));
        }
    }
}

impl<'a> Visit<'a> for Sizes {
    fn visit_item(&mut self, i: &'a syn::Item) {
        let attrs: &[syn::Attribute] = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(x) => &x.attrs,
            syn::Item::Use(x) => &x.attrs,
            syn::Item::Const(x) => &x.attrs,
            syn::Item::Static(x) => &x.attrs,
            syn::Item::Struct(x) => &x.attrs,
            syn::Item::Enum(x) => &x.attrs,
            _ => &[],
        };
        let test = is_cfg_test(attrs);
        if test {
            if self.in_test == 0 {
                self.test_lines += lines(i.span());
            }
            self.in_test += 1;
        }
        syn::visit::visit_item(self, i);
        if test {
            self.in_test -= 1;
        }
    }

    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        self.record(
            f.sig.ident.to_string(),
            f.sig.fn_token.span,
            f.block.brace_token.span.close(),
        );
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        let test = is_cfg_test(&f.attrs);
        self.in_test += usize::from(test);
        self.record(
            f.sig.ident.to_string(),
            f.sig.fn_token.span,
            f.block.brace_token.span.close(),
        );
        syn::visit::visit_impl_item_fn(self, f);
        self.in_test -= usize::from(test);
    }

    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        if let Some(b) = &f.default {
            self.record(
                f.sig.ident.to_string(),
                f.sig.fn_token.span,
                b.brace_token.span.close(),
            );
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_production_file_over_800_lines_or_function_over_150() {
    let root = root();
    let mut too_big = Vec::new();
    let mut checked = 0;
    for krate in PRODUCT_CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate).join("src"), &mut files);
        for path in files {
            let rel = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            // Nested crates live under `edge/`; the edge's own files are under `edge/src`.
            if krate == "edge" && !rel.starts_with("edge/src/") {
                continue;
            }
            // The StoreAPI acceptance suite is test support behind a feature.
            if rel.ends_with("storeapi/src/acceptance.rs") || rel.contains("/acceptance/") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable source");
            let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let mut sizes = Sizes::default();
            sizes.visit_file(&file);
            let production = text.lines().count().saturating_sub(sizes.test_lines);
            checked += 1;
            if production > MAX_FILE_LINES {
                too_big.push(format!(
                    "{rel}: {production} production lines (limit {MAX_FILE_LINES})"
                ));
            }
            for (name, line, n) in sizes.fns {
                if n > MAX_FN_LINES {
                    too_big.push(format!(
                        "{rel}:{line}: fn {name} is {n} lines (limit {MAX_FN_LINES})"
                    ));
                }
            }
        }
    }
    assert!(
        checked > 80,
        "only {checked} files found under {}",
        root.display()
    );
    assert!(
        too_big.is_empty(),
        "over the limits:\n{}",
        too_big.join("\n")
    );
}
