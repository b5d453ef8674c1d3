//! Block directories in Prometheus' format: `<ULID>/meta.json`, `index`, `chunks/000001…`, `tombstones`.
//!
//! A block is written into `<ULID>.tmp-for-creation`, synced, then renamed into place, so a crash never
//! leaves a visible partial block (the same convention as Prometheus, whose start-up deletes such
//! leftovers). Readers accept blocks written by Prometheus and promtool as well as ours; `meta.json`
//! sections we do not know (e.g. Thanos' `thanos`) are kept as they are.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chunks::Segment;
use super::index::{ChunkMeta, IndexReader};
use meridian_core::chunkenc::Encoding;
use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;
use meridian_core::sample::Sample;

/// Chunk segment files are cut at this size, as Prometheus does.
pub const SEGMENT_MAX_SIZE: usize = 512 << 20;
pub const META_VERSION: u32 = 1;
pub(crate) const TMP_SUFFIX: &str = ".tmp-for-creation";

/// A block could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn invalid(path: &Path, reason: impl std::fmt::Display) -> BlockError {
    BlockError::Invalid {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub ulid: String,
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// Exclusive.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    #[serde(default)]
    pub stats: BlockStats,
    #[serde(default)]
    pub compaction: Compaction,
    pub version: u32,
    /// Sections of other tools (Thanos' `thanos`), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl BlockMeta {
    fn thanos(&self, key: &str) -> Option<&serde_json::Value> {
        self.extra.get("thanos").and_then(|t| t.get(key))
    }

    /// The external labels of Thanos' section (`thanos.labels`; none without one).
    pub fn thanos_labels(&self) -> Labels {
        self.thanos("labels")
            .and_then(|l| l.as_object())
            .map(|m| {
                Labels::from_pairs(
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))),
                )
            })
            .unwrap_or_else(Labels::empty)
    }

    /// `thanos.downsample.resolution`, ms (0: raw data).
    pub fn resolution(&self) -> i64 {
        self.thanos("downsample")
            .and_then(|d| d.get("resolution"))
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    }

    /// The size of one of the block's files as `thanos.files` lists it (`index`, `chunks/000001`).
    pub fn thanos_file_size(&self, rel_path: &str) -> Option<u64> {
        self.thanos("files")?
            .as_array()?
            .iter()
            .find(|f| f.get("rel_path").and_then(serde_json::Value::as_str) == Some(rel_path))?
            .get("size_bytes")?
            .as_u64()
    }

    /// `thanos.source` (`sidecar`, `receive`, `compactor`, …; empty without one).
    pub fn thanos_source(&self) -> &str {
        self.thanos("source")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    #[serde(rename = "numSamples", default, skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    #[serde(rename = "numSeries", default, skip_serializing_if = "is_zero")]
    pub num_series: u64,
    #[serde(rename = "numChunks", default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    pub level: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A new ULID: 48 bits of milliseconds, 80 random bits, Crockford base32.
pub fn new_ulid(ms: u64) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let random: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
    let v = (u128::from(ms & ((1 << 48) - 1)) << 80) | random;
    (0..26)
        .rev()
        .map(|i| ALPHABET[((v >> (i * 5)) & 0x1f) as usize] as char)
        .collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BlockError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), BlockError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Writes one block holding the samples of `series` within `[min_time, max_time)` under `parent`, and
/// returns its meta (level 1, its own source). Series without samples in range are left out; chunks are
/// cut every 120 samples.
pub fn write_block(
    parent: &Path,
    series: Vec<(Labels, Vec<Sample>)>,
    min_time: i64,
    max_time: i64,
) -> Result<BlockMeta, BlockError> {
    let series = series
        .into_iter()
        .map(|(l, s)| (l, s, Vec::new()))
        .collect();
    write_block_with(parent, series, min_time, max_time)
}

/// A series as a block is written from it: float samples and chunks already encoded.
pub type SeriesToWrite = (Labels, Vec<Sample>, Vec<crate::blockwriter::OwnedChunk>);

/// As [`write_block`], with chunks already encoded beside the float samples (native histograms).
pub fn write_block_with(
    parent: &Path,
    series: Vec<SeriesToWrite>,
    min_time: i64,
    max_time: i64,
) -> Result<BlockMeta, BlockError> {
    let ulid = new_ulid(now_ms());
    let mut w = crate::blockwriter::BlockWriter::create(parent, &ulid, min_time, max_time)?;
    let mut series = series;
    series.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in series.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(invalid(parent, format!("series {} given twice", pair[0].0)));
        }
    }
    for (labels, samples, encoded) in series {
        w.add_mixed(labels, &samples, encoded)?;
    }
    w.finish(
        Compaction {
            level: 1,
            sources: vec![ulid.clone()],
            extra: BTreeMap::new(),
        },
        BTreeMap::new(),
    )
}

/// Whether a directory entry is a block under construction (to be deleted at start-up).
pub fn is_tmp_block(name: &str) -> bool {
    name.ends_with(TMP_SUFFIX)
}

/// One series selected from a block: its labels and its chunks overlapping the query range.
#[derive(Debug, Clone)]
pub struct BlockSeries<'a> {
    pub labels: Labels,
    pub chunks: Vec<(ChunkMeta, Encoding, &'a [u8])>,
}

/// An open block.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: IndexReader,
    segments: Vec<Segment>,
}

impl Block {
    /// Opens a block directory (ours or Prometheus').
    pub fn open(dir: &Path) -> Result<Block, BlockError> {
        let meta_path = dir.join("meta.json");
        let meta: BlockMeta =
            serde_json::from_slice(&fs::read(&meta_path).map_err(io(&meta_path))?)
                .map_err(|e| invalid(&meta_path, e))?;
        if meta.version != META_VERSION {
            return Err(invalid(
                &meta_path,
                format!("meta version {} is not supported", meta.version),
            ));
        }
        let index_path = dir.join("index");
        let index =
            IndexReader::new(super::mmap::FileBytes::map(&index_path).map_err(io(&index_path))?)
                .map_err(|e| invalid(&index_path, e))?;
        let chunks_dir = dir.join("chunks");
        let mut files: Vec<PathBuf> = fs::read_dir(&chunks_dir)
            .map_err(io(&chunks_dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        files.sort();
        let segments = files
            .iter()
            .map(|p| Segment::open(p).map_err(|e| invalid(p, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Block {
            dir: dir.to_owned(),
            meta,
            index,
            segments,
        })
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    /// A chunk by its reference, whatever its encoding.
    pub fn raw_chunk(&self, r: u64) -> Result<(Encoding, &[u8]), BlockError> {
        let seg = self.segments.get((r >> 32) as usize).ok_or_else(|| {
            invalid(
                &self.dir,
                format!("chunk reference {r:#x} names a missing segment"),
            )
        })?;
        let c = seg
            .chunk_at((r & 0xffff_ffff) as usize)
            .map_err(|e| invalid(&self.dir, e))?;
        Ok((c.encoding, c.data))
    }

    /// A chunk of samples (XOR floats or native histograms) by its reference; downsampled aggregates
    /// are refused.
    pub fn served_chunk(&self, r: u64) -> Result<(Encoding, &[u8]), BlockError> {
        let (encoding, data) = self.raw_chunk(r)?;
        match encoding {
            Encoding::Xor | Encoding::Histogram | Encoding::FloatHistogram => Ok((encoding, data)),
            _ => Err(invalid(
                &self.dir,
                format!(
                    "chunk {r:#x} has encoding {encoding:?}; downsampled aggregates are not read here"
                ),
            )),
        }
    }

    /// The bytes of a chunk by its reference.
    pub fn chunk(&self, r: u64) -> Result<&[u8], BlockError> {
        let (encoding, data) = self.raw_chunk(r)?;
        if encoding != Encoding::Xor {
            return Err(invalid(
                &self.dir,
                format!(
                    "chunk {r:#x} has encoding {encoding:?}; native histograms and downsampled aggregates are not read here"
                ),
            ));
        }
        Ok(data)
    }

    /// Appends the chunks `metas` name to `out` as a series source hands them out, their bytes
    /// copied when `with_data`.
    pub fn push_chunks(
        &self,
        metas: &[ChunkMeta],
        with_data: bool,
        out: &mut Vec<meridian_core::series::SourceChunk>,
    ) -> Result<(), BlockError> {
        for m in metas {
            // Without data the encoding is not looked up (that would read the chunk).
            let (encoding, data) = if with_data {
                let (e, d) = self.served_chunk(m.chunk_ref)?;
                (e, bytes::Bytes::copy_from_slice(d))
            } else {
                (Encoding::Xor, bytes::Bytes::new())
            };
            out.push(meridian_core::series::SourceChunk {
                encoding,
                min_time: m.min_time,
                max_time: m.max_time,
                data,
            });
        }
        Ok(())
    }

    /// IDs of the series matching `matchers`, in label order.
    pub fn series_ids(&self, matchers: &[Matcher]) -> Result<Vec<u32>, BlockError> {
        self.index
            .select(matchers)
            .map_err(|e| invalid(&self.dir, e))
    }

    /// [`crate::postings::cheap_cost`] of `matchers` on this block's index (`None` also when the index
    /// could not be read: the selection reports that).
    pub fn cheap_cost(&self, matchers: &[Matcher]) -> Option<meridian_core::series::SelectCost> {
        crate::postings::cheap_cost(&self.index, matchers)
            .ok()
            .flatten()
    }

    /// The labels and chunk metas of series `id`.
    pub fn series_meta(&self, id: u32) -> Result<(Labels, Vec<ChunkMeta>), BlockError> {
        self.index.series(id).map_err(|e| invalid(&self.dir, e))
    }

    /// Series matching `matchers` with chunks overlapping `[mint, maxt]`, in label order.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<BlockSeries<'_>>, BlockError> {
        let ids = self
            .index
            .select(matchers)
            .map_err(|e| invalid(&self.dir, e))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (labels, metas) = self.index.series(id).map_err(|e| invalid(&self.dir, e))?;
            let mut chunks = Vec::with_capacity(metas.len());
            for m in metas {
                if m.min_time <= maxt && m.max_time >= mint {
                    let (encoding, data) = self.served_chunk(m.chunk_ref)?;
                    chunks.push((m, encoding, data));
                }
            }
            if !chunks.is_empty() {
                out.push(BlockSeries { labels, chunks });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::chunkenc::XorIterator;
    use meridian_core::matcher::MatchType;
    use meridian_core::sample::stale_nan;

    #[test]
    fn ulid_shape() {
        let a = new_ulid(1_700_000_000_000);
        let b = new_ulid(1_700_000_000_000);
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert_eq!(&a[..10], &b[..10], "same millisecond, same time prefix");
        assert!(new_ulid(1) < new_ulid(2_000_000_000_000));
    }

    #[test]
    fn write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let series: Vec<(Labels, Vec<Sample>)> = (0..30)
            .map(|i| {
                let l = Labels::from_pairs([("__name__", "m"), ("i", &format!("{i:02}"))]);
                let mut s: Vec<Sample> = (0..300)
                    .map(|k| Sample::new(k * 15_000, (i * k) as f64))
                    .collect();
                s[299].v = stale_nan();
                (l, s)
            })
            .collect();
        let meta = write_block(dir.path(), series.clone(), 0, 7_200_000).unwrap();
        assert_eq!(meta.stats.num_series, 30);
        assert_eq!(meta.stats.num_samples, 9000);
        assert_eq!(meta.stats.num_chunks, 90);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![meta.ulid.clone()],
            "no temporary directory left"
        );
        let b = Block::open(&dir.path().join(&meta.ulid)).unwrap();
        assert_eq!(b.meta(), &meta);
        let got = b
            .select(
                &[Matcher::new(MatchType::Regex, "i", "0.").unwrap()],
                0,
                i64::MAX,
            )
            .unwrap();
        assert_eq!(got.len(), 10);
        for (s, (l, want)) in got.iter().zip(&series) {
            assert_eq!(&s.labels, l);
            let samples: Vec<Sample> = s
                .chunks
                .iter()
                .flat_map(|(_, _, d)| XorIterator::new(d).unwrap())
                .collect();
            assert_eq!(&samples, want);
        }
        // Time filtering by chunk.
        let got = b
            .select(&[Matcher::equal("i", "05")], 2_000_000, 2_100_000)
            .unwrap();
        assert_eq!(got[0].chunks.len(), 1);
        // Samples outside the block range are refused by construction.
        let m = write_block(dir.path(), series[..1].to_vec(), 0, 1_000_000).unwrap();
        assert_eq!(m.stats.num_samples, 67);
    }
}
