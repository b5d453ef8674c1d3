//! What a bucket holds, block by block, as the readers of a bucket (the store gateway, the compactor)
//! see it: one recursive listing gives every block directory, whether it has its `meta.json` (a
//! directory without one is an unfinished upload, or a block being deleted), its marks and its
//! newest object; `meta.json` and marks are then read per block.
//!
//! One listing instead of a GET per block and mark (Thanos' `IgnoreDeletionMarkFilter` reads each
//! block's `deletion-mark.json` at every sync): a bucket of 10,000 blocks lists in ~50 pages.
//!
//! [`covered`] is Thanos' `DeduplicateFilter` (`pkg/block/fetcher.go`, v0.25.1): a block whose
//! `compaction.sources` are all in one other block of the same resolution is that block's input, left
//! behind by a compactor that has not marked it yet (or was killed before it did): readers drop it,
//! so a sample is never read twice while both are in the bucket.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::block::BlockMeta;
use crate::marks::{Mark, MarkError, MarkKind};
use crate::objstore::{BlockObject, block_path};

/// One block directory of the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockEntry {
    pub has_meta: bool,
    pub deletion_mark: bool,
    pub no_compact_mark: bool,
    pub no_downsample_mark: bool,
    /// The last-modified time of its newest object, ms.
    pub newest_ms: i64,
}

/// Whether `s` is a ULID (26 characters of Crockford base32, upper case).
pub fn is_ulid(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

/// The creation time a ULID carries (its first 48 bits), ms.
pub fn ulid_time_ms(ulid: &str) -> Option<i64> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut v: u64 = 0;
    for b in ulid.bytes().take(10) {
        let d = ALPHABET.iter().position(|a| *a == b)?;
        v = (v << 5) | d as u64;
    }
    i64::try_from(v).ok()
}

/// Lists every block directory of the bucket (top-level ULID directories; other objects ignored).
pub async fn list_blocks(
    store: &dyn ObjectStore,
) -> Result<BTreeMap<String, BlockEntry>, object_store::Error> {
    let mut out: BTreeMap<String, BlockEntry> = BTreeMap::new();
    let mut objects = store.list(None);
    while let Some(o) = objects.try_next().await? {
        let mut parts = o.location.parts();
        let (Some(dir), Some(file)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !is_ulid(dir.as_ref()) {
            continue;
        }
        let nested = parts.next().is_some();
        let e = out.entry(dir.as_ref().to_owned()).or_default();
        e.newest_ms = e.newest_ms.max(o.last_modified.timestamp_millis());
        if nested {
            continue;
        }
        match file.as_ref() {
            "meta.json" => e.has_meta = true,
            f if f == MarkKind::Deletion.file_name() => e.deletion_mark = true,
            f if f == MarkKind::NoCompact.file_name() => e.no_compact_mark = true,
            f if f == MarkKind::NoDownsample.file_name() => e.no_downsample_mark = true,
            _ => {}
        }
    }
    Ok(out)
}

/// A block's `meta.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("no meta.json (upload unfinished, or the block is being deleted)")]
    Missing,
    #[error("reading meta.json: {0}")]
    Read(object_store::Error),
    #[error("meta.json: {0}")]
    Parse(serde_json::Error),
    #[error("meta.json names block {0:?}")]
    OtherBlock(String),
}

/// Reads block `ulid`'s `meta.json`; also returns its size in bytes.
pub async fn fetch_meta(
    store: &dyn ObjectStore,
    ulid: &str,
) -> Result<(BlockMeta, usize), MetaError> {
    let path = block_path(ulid, BlockObject::Meta);
    let body = match store.get(&path).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    let body = match body {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => return Err(MetaError::Missing),
        Err(e) => return Err(MetaError::Read(e)),
    };
    let meta: BlockMeta = serde_json::from_slice(&body).map_err(MetaError::Parse)?;
    if meta.ulid != ulid {
        return Err(MetaError::OtherBlock(meta.ulid));
    }
    Ok((meta, body.len()))
}

/// A mark could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MarkIoError {
    #[error("{path}: {source}")]
    Store {
        path: String,
        source: object_store::Error,
    },
    #[error(transparent)]
    Mark(#[from] MarkError),
}

fn mark_path(ulid: &str, kind: MarkKind) -> ObjectPath {
    block_path(ulid, BlockObject::File(kind.file_name()))
}

/// Reads a block's mark; `None` when it has none.
pub async fn read_mark(
    store: &dyn ObjectStore,
    ulid: &str,
    kind: MarkKind,
) -> Result<Option<Mark>, MarkIoError> {
    let path = mark_path(ulid, kind);
    let body = match store.get(&path).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    match body {
        Ok(b) => Ok(Some(Mark::parse(kind, ulid, &b)?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(MarkIoError::Store {
            path: path.to_string(),
            source,
        }),
    }
}

/// Writes a mark (replacing one of the same kind).
pub async fn write_mark(store: &dyn ObjectStore, mark: &Mark) -> Result<(), MarkIoError> {
    let path = mark_path(&mark.id, mark.kind);
    store
        .put(&path, PutPayload::from(mark.to_json()))
        .await
        .map_err(|source| MarkIoError::Store {
            path: path.to_string(),
            source,
        })?;
    Ok(())
}

/// Deletes a block's objects: `meta.json` first (readers stop seeing a block at once; a crash leaves
/// a partial block the partial-upload cleanup removes), then the rest, the deletion mark last (as
/// Thanos' `block.Delete`). Returns the objects deleted.
pub async fn delete_block(
    store: &dyn ObjectStore,
    ulid: &str,
) -> Result<usize, object_store::Error> {
    let meta = block_path(ulid, BlockObject::Meta);
    let mut deleted = 0;
    match store.delete(&meta).await {
        Ok(()) => deleted += 1,
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let prefix = ObjectPath::from(ulid);
    let all: Vec<ObjectPath> = store
        .list(Some(&prefix))
        .map_ok(|o| o.location)
        .try_collect()
        .await?;
    let mark = mark_path(ulid, MarkKind::Deletion);
    for p in all.iter().filter(|p| **p != mark && **p != meta) {
        match store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => return Err(e),
        }
    }
    if all.contains(&mark) {
        match store.delete(&mark).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Downloads block `ulid` into `<dir>/<ulid>` (replacing what is there), `meta.json` last, so a
/// directory with `meta.json` holds the whole block. Returns the bytes downloaded.
pub async fn download_block(
    store: &dyn ObjectStore,
    ulid: &str,
    dir: &std::path::Path,
) -> Result<u64, DownloadError> {
    use tokio::io::AsyncWriteExt;
    let local = dir.join(ulid);
    let fs_err = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source: std::io::Error| DownloadError::Local { path, source }
    };
    if tokio::fs::try_exists(&local).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(&local)
            .await
            .map_err(fs_err(&local))?;
    }
    let prefix = ObjectPath::from(ulid);
    let mut objects: Vec<ObjectPath> = store
        .list(Some(&prefix))
        .map_ok(|o| o.location)
        .try_collect()
        .await
        .map_err(DownloadError::Store)?;
    let meta = block_path(ulid, BlockObject::Meta);
    if !objects.contains(&meta) {
        return Err(DownloadError::Store(object_store::Error::NotFound {
            path: meta.to_string(),
            source: "no meta.json".into(),
        }));
    }
    // meta.json last.
    objects.retain(|o| *o != meta);
    objects.push(meta);
    let mut total = 0u64;
    for o in objects {
        let rel: Vec<String> = o.parts().skip(1).map(|p| p.as_ref().to_owned()).collect();
        if rel.is_empty() || rel.iter().any(|p| p == ".." || p == ".") {
            continue;
        }
        let path = rel.iter().fold(local.clone(), |p, part| p.join(part));
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(fs_err(parent))?;
        }
        let mut f = tokio::fs::File::create(&path)
            .await
            .map_err(fs_err(&path))?;
        let mut body = store
            .get(&o)
            .await
            .map_err(DownloadError::Store)?
            .into_stream();
        while let Some(bytes) = body.try_next().await.map_err(DownloadError::Store)? {
            total += bytes.len() as u64;
            f.write_all(&bytes).await.map_err(fs_err(&path))?;
        }
        f.sync_all().await.map_err(fs_err(&path))?;
    }
    Ok(total)
}

/// A block could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Store(object_store::Error),
    #[error("{path}: {source}")]
    Local {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What [`covered`] needs of a block.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    pub ulid: &'a str,
    /// `thanos.downsample.resolution`, ms.
    pub resolution: i64,
    /// `compaction.sources` (a block without any counts as its own source).
    pub sources: &'a [String],
}

/// The blocks whose sources all lie in one other block of the same resolution (see the module
/// documentation). Of blocks with equal sources, the one with the smallest ULID stays.
pub fn covered(blocks: &[Lineage<'_>]) -> BTreeSet<String> {
    let mut by_res: BTreeMap<i64, Vec<(&str, BTreeSet<&str>)>> = BTreeMap::new();
    for b in blocks {
        let sources: BTreeSet<&str> = if b.sources.is_empty() {
            std::iter::once(b.ulid).collect()
        } else {
            b.sources.iter().map(String::as_str).collect()
        };
        by_res
            .entry(b.resolution)
            .or_default()
            .push((b.ulid, sources));
    }
    let mut out = BTreeSet::new();
    for mut group in by_res.into_values() {
        // Larger source sets first; then by ULID, so of equal sets the first is kept.
        group.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        // For each source, the kept blocks holding it.
        let mut holders: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (ulid, sources)) in group.iter().enumerate() {
            let Some(first) = sources.iter().next() else {
                continue;
            };
            let is_covered = holders.get(first).is_some_and(|ks| {
                ks.iter()
                    .any(|k| group[*k].1.is_superset(sources) && group[*k].0 != *ulid)
            });
            if is_covered {
                out.insert((*ulid).to_owned());
                continue;
            }
            for s in sources {
                holders.entry(s).or_default().push(i);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn covered_blocks_are_the_compacted_inputs() {
        let a = s(&["A"]);
        let b = s(&["B"]);
        let c = s(&["C"]);
        let ab = s(&["A", "B"]);
        let abc = s(&["A", "B", "C"]);
        let lin = |ulid, resolution, sources| Lineage {
            ulid,
            resolution,
            sources,
        };
        let blocks = [
            lin("A", 0, &a),
            lin("B", 0, &b),
            lin("C", 0, &c),
            lin("AB", 0, &ab),
            lin("ABC", 0, &abc),
            // The 5m copy of AB has the same sources at another resolution: not covered by ABC.
            lin("AB5", 300_000, &ab),
            // No sources: its own.
            lin("D", 0, &[]),
        ];
        let got = covered(&blocks);
        assert_eq!(got, ["A", "AB", "B", "C"].map(String::from).into());
        // Two blocks with the same sources (a compaction uploaded twice): one stays.
        let twice = [lin("X1", 0, &ab), lin("X2", 0, &ab), lin("A", 0, &a)];
        assert_eq!(covered(&twice), ["A", "X2"].map(String::from).into());
        // A block overlapping but not containing another's sources is kept.
        let bc = s(&["B", "C"]);
        let partial = [lin("AB", 0, &ab), lin("BC", 0, &bc)];
        assert!(covered(&partial).is_empty());
    }

    #[test]
    fn ulid_times() {
        let u = crate::block::new_ulid(1_700_000_000_123);
        assert_eq!(ulid_time_ms(&u), Some(1_700_000_000_123));
        assert!(is_ulid(&u));
        assert!(!is_ulid("01ARZ3NDEKTSV4RRFFQ69G5FAu"));
        assert!(is_ulid("01HGW2N7EHJX0Y3ZQK3Q6T9V8R"));
        assert!(!is_ulid("01HGW2N7EHJX0Y3ZQK3Q6T9V8"), "25 characters");
        assert!(
            !is_ulid("01HGW2N7EHJX0Y3ZQK3Q6T9V8I"),
            "I is not Crockford base32"
        );
        assert!(!is_ulid("debug"));
        assert_eq!(ulid_time_ms("0000000001"), Some(1));
        assert_eq!(ulid_time_ms("7ZZZZZZZZZ"), Some((1 << 48) - 1));
        assert_eq!(ulid_time_ms("0000000010"), Some(32));
    }
}
