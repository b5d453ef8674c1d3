//! Merging a plan's blocks into one: every series of every input, in label order, written once.
//!
//! - Chunks of one series that do not overlap in time are **copied as they are** (no decoding), as
//!   Prometheus' compactor does.
//! - Where they overlap (vertical compaction: blocks of one stream covering the same time, or
//!   replicas merged offline) the series is decoded and merged:
//!   - [`DedupFunc::OneToOne`] (Thanos' default `--deduplication.func=""`, Prometheus'
//!     `ChainedSeriesMerge`): the union of the samples, one sample per timestamp — right for
//!     byte-identical replicas (Receive with a replication factor);
//!   - [`DedupFunc::Penalty`] (`--deduplication.func=penalty`): each replica's samples chained,
//!     then the replicas merged by **the gateway's own online algorithm** ([`crate::dedup::dedup`]),
//!     so an offline-deduplicated block answers as the gateway answers over the replicas.
//!
//! Memory: one series' chunks (or samples) at a time, plus the index entries of the output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use meridian_core::chunkenc::{Encoding, XorIterator};
use meridian_core::labels::Labels;
use meridian_core::sample::Sample;
use meridian_tsdb::block::{Block, BlockError, BlockMeta, Compaction};
use meridian_tsdb::blockwriter::{BlockWriter, WriterChunk};
use meridian_tsdb::index::ChunkMeta;

use crate::dedup::{dedup, kind_of};

/// How series of different replicas (and overlapping chunks) are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupFunc {
    /// One sample per timestamp (Thanos' `""`).
    #[default]
    OneToOne,
    /// The gateway's penalty deduplication across replicas (Thanos' `penalty`).
    Penalty,
}

impl std::str::FromStr for DedupFunc {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Ok(DedupFunc::OneToOne),
            "penalty" => Ok(DedupFunc::Penalty),
            other => Err(format!(
                "--deduplication.func={other:?}: want \"\" (one-to-one) or \"penalty\""
            )),
        }
    }
}

/// One input block and the replica it belongs to (blocks of one replica have equal external labels
/// including the replica labels; without offline dedup every input is its own replica 0).
#[derive(Debug)]
pub struct Input<'a> {
    pub block: &'a Block,
    pub replica: usize,
}

/// What the output block is.
#[derive(Debug, Clone)]
pub struct Output<'a> {
    pub parent: &'a Path,
    pub ulid: &'a str,
    pub min_time: i64,
    pub max_time: i64,
    pub compaction: Compaction,
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One chunk of a series: its replica, meta, encoding and bytes.
type Part<'a> = (usize, ChunkMeta, Encoding, &'a [u8]);

/// A cursor over one input's series, in label order.
struct Cursor<'a> {
    block: &'a Block,
    replica: usize,
    ids: Vec<u32>,
    pos: usize,
    current: Option<(Labels, Vec<ChunkMeta>)>,
}

impl Cursor<'_> {
    fn advance(&mut self) -> Result<(), BlockError> {
        self.current = match self.ids.get(self.pos) {
            Some(id) => Some(self.block.series_meta(*id)?),
            None => None,
        };
        self.pos += 1;
        Ok(())
    }
}

/// Merges `inputs` into the block `out` describes; returns its meta.
pub fn merge(
    inputs: &[Input<'_>],
    func: DedupFunc,
    out: Output<'_>,
) -> Result<BlockMeta, BlockError> {
    let mut w = BlockWriter::create(out.parent, out.ulid, out.min_time, out.max_time)?;
    let mut cursors = Vec::with_capacity(inputs.len());
    for i in inputs {
        let ids = i
            .block
            .index()
            .all_postings()
            .map_err(|e| invalid(i.block, e))?;
        let mut c = Cursor {
            block: i.block,
            replica: i.replica,
            ids,
            pos: 0,
            current: None,
        };
        c.advance()?;
        cursors.push(c);
    }
    while let Some(labels) = cursors
        .iter()
        .filter_map(|c| c.current.as_ref().map(|(l, _)| l))
        .min()
        .cloned()
    {
        // Every input's chunks of this series: (replica, chunk meta, encoding, bytes).
        let mut parts: Vec<Part<'_>> = Vec::new();
        for c in &mut cursors {
            if c.current.as_ref().is_some_and(|(l, _)| *l == labels) {
                if let Some((_, metas)) = c.current.take() {
                    for m in metas {
                        let (encoding, data) = c.block.raw_chunk(m.chunk_ref)?;
                        parts.push((c.replica, m, encoding, data));
                    }
                }
                c.advance()?;
            }
        }
        parts.sort_by_key(|(_, m, _, _)| (m.min_time, m.max_time));
        write_series(&mut w, labels, &parts, func)?;
    }
    w.finish(out.compaction, out.extra)
}

fn invalid(b: &Block, e: impl std::fmt::Display) -> BlockError {
    BlockError::Invalid {
        path: b.dir().to_owned(),
        reason: e.to_string(),
    }
}

fn write_series(
    w: &mut BlockWriter,
    labels: Labels,
    parts: &[Part<'_>],
    func: DedupFunc,
) -> Result<(), BlockError> {
    let overlapping = parts.windows(2).any(|p| p[1].1.min_time <= p[0].1.max_time);
    if !overlapping {
        // Copied as they are, whatever their encoding (downsampled aggregates included).
        let chunks: Vec<WriterChunk<'_>> = parts
            .iter()
            .map(|(_, m, encoding, data)| WriterChunk {
                min_time: m.min_time,
                max_time: m.max_time,
                encoding: *encoding as u8,
                data,
            })
            .collect();
        return w.add_chunks(labels, &chunks);
    }
    if let Some((_, m, e, _)) = parts.iter().find(|p| p.2 != Encoding::Xor) {
        return Err(chunk_error(
            &labels,
            format!(
                "overlapping chunks at {} with encoding {e:?}: only float samples are merged",
                m.min_time
            ),
        ));
    }
    let decode = |data: &[u8]| -> Result<Vec<Sample>, BlockError> {
        let mut it = XorIterator::new(data).map_err(|e| chunk_error(&labels, e))?;
        let mut out = Vec::with_capacity(usize::from(it.total()));
        while let Some((t, v)) = it.next_sample() {
            out.push(Sample::new(t, v));
        }
        if let Some(e) = it.err() {
            return Err(chunk_error(&labels, e));
        }
        Ok(out)
    };
    let replicas: BTreeMap<usize, Vec<&[u8]>> =
        parts.iter().fold(BTreeMap::new(), |mut m, (r, _, _, d)| {
            m.entry(*r).or_insert_with(Vec::new).push(*d);
            m
        });
    let samples = if func == DedupFunc::Penalty && replicas.len() > 1 {
        let mut each: Vec<Vec<Sample>> = Vec::with_capacity(replicas.len());
        for chunks in replicas.values() {
            let mut s = Vec::new();
            for d in chunks {
                s.extend(decode(d)?);
            }
            each.push(chain(s));
        }
        let slices: Vec<&[Sample]> = each.iter().map(Vec::as_slice).collect();
        let kind = kind_of(labels.metric_name().unwrap_or(""), None, None);
        let mut merged = dedup(&slices, kind);
        // At the end of its data the online algorithm takes another replica's last sample even when
        // it lies within half a scrape interval of the last merged one (the same scrape at another
        // phase). Here that end is only the block's: over a longer range the gateway would not take
        // it, so the merged block leaves it out.
        let half = crate::dedup::scrape_interval(&slices) / 2;
        if let [.., prev, last] = merged.as_slice()
            && last.t - prev.t < half
        {
            merged.pop();
        }
        merged
    } else {
        let mut s = Vec::new();
        for (_, _, _, d) in parts {
            s.extend(decode(d)?);
        }
        chain(s)
    };
    w.add_samples(labels, &samples)
}

/// Sorts samples by time, keeping one per timestamp (the first given: Prometheus keeps one of equal
/// samples, and replicas' samples at one timestamp are equal where one-to-one merging is right).
fn chain(mut s: Vec<Sample>) -> Vec<Sample> {
    s.sort_by_key(|x| x.t);
    s.dedup_by_key(|x| x.t);
    s
}

fn chunk_error(labels: &Labels, e: impl std::fmt::Display) -> BlockError {
    BlockError::Invalid {
        path: std::path::PathBuf::new(),
        reason: format!("a chunk of {labels}: {e}"),
    }
}
/// The blocking part of a compaction: open the downloaded inputs, merge them into a new block.
pub(crate) struct MergeJob {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) ulid: String,
    /// Each input block's ULID and external labels.
    pub(crate) inputs: Vec<(String, Labels)>,
    pub(crate) func: DedupFunc,
    pub(crate) stream_labels: Labels,
    pub(crate) resolution: i64,
}

impl MergeJob {
    pub(crate) fn run(self) -> Result<BlockMeta, BlockError> {
        let blocks = self
            .inputs
            .iter()
            .map(|(u, _)| Block::open(&self.dir.join(u)))
            .collect::<Result<Vec<_>, _>>()?;
        // Inputs with equal external labels are one replica.
        let mut replicas: Vec<&Labels> = Vec::new();
        let mut inputs = Vec::with_capacity(blocks.len());
        for (b, (_, labels)) in blocks.iter().zip(&self.inputs) {
            let replica = match replicas.iter().position(|l| *l == labels) {
                Some(i) => i,
                None => {
                    replicas.push(labels);
                    replicas.len() - 1
                }
            };
            inputs.push(Input { block: b, replica });
        }
        let metas: Vec<&BlockMeta> = blocks.iter().map(Block::meta).collect();
        let min_time = metas.iter().map(|m| m.min_time).min().unwrap_or(0);
        let max_time = metas.iter().map(|m| m.max_time).max().unwrap_or(1);
        let sources: BTreeSet<String> = metas
            .iter()
            .flat_map(|m| {
                if m.compaction.sources.is_empty() {
                    vec![m.ulid.clone()]
                } else {
                    m.compaction.sources.clone()
                }
            })
            .collect();
        let parents: Vec<serde_json::Value> = metas
            .iter()
            .map(|m| serde_json::json!({"ulid": m.ulid, "minTime": m.min_time, "maxTime": m.max_time}))
            .collect();
        let level = metas.iter().map(|m| m.compaction.level).max().unwrap_or(0) + 1;
        let mut compaction_extra = BTreeMap::new();
        compaction_extra.insert("parents".to_owned(), serde_json::Value::Array(parents));
        let mut extra = BTreeMap::new();
        extra.insert(
            "thanos".to_owned(),
            serde_json::json!({
                "labels": label_map(&self.stream_labels),
                "downsample": {"resolution": self.resolution},
                "source": "compactor",
            }),
        );
        merge(
            &inputs,
            self.func,
            Output {
                parent: &self.dir,
                ulid: &self.ulid,
                min_time,
                max_time,
                compaction: Compaction {
                    level,
                    sources: sources.into_iter().collect(),
                    extra: compaction_extra,
                },
                extra,
            },
        )
    }
}

fn label_map(l: &Labels) -> BTreeMap<String, String> {
    l.iter()
        .map(|l| (l.name.to_owned(), l.value.to_owned()))
        .collect()
}
