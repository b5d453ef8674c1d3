//! Writing a block series by series, with constant memory for chunk data: chunks go to the segment
//! file as they come (cut at 512 MiB, as Prometheus does), only labels and chunk metas are kept for the
//! index, which is written at [`BlockWriter::finish`] with `tombstones` and `meta.json`.
//!
//! The block is built in `<ULID>.tmp-for-creation` and renamed into place by `finish`, so a crash
//! (or a writer dropped without `finish`, whose directory is removed) never leaves a visible partial
//! block. The head's blocks ([`crate::block::write_block`]) and the compactor's merged blocks are both
//! written here.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use meridian_core::chunkenc::{Encoding, SAMPLES_PER_CHUNK, XorChunk};
use meridian_core::labels::Labels;
use meridian_core::sample::Sample;

use crate::block::{
    BlockError, BlockMeta, BlockStats, Compaction, META_VERSION, SEGMENT_MAX_SIZE, TMP_SUFFIX,
    invalid, io, sync_dir, write_synced,
};
use crate::chunks::{segment_header, write_chunk_record};
use crate::index::{ChunkMeta, write_index};

const MAGIC_TOMBSTONES: u32 = 0x0130_BA30;

/// A chunk with its bytes owned (see [`WriterChunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedChunk {
    pub min_time: i64,
    pub max_time: i64,
    pub encoding: u8,
    pub data: Vec<u8>,
}

impl OwnedChunk {
    fn xor(min_time: i64, max_time: i64, c: XorChunk) -> OwnedChunk {
        OwnedChunk {
            min_time,
            max_time,
            encoding: Encoding::Xor as u8,
            data: c.into_bytes(),
        }
    }
}

/// One chunk handed to the writer: its encoding byte as stored in segments (`1` XOR, `0xff` Thanos'
/// downsampled aggregates), its bytes and its first and last sample times.
#[derive(Debug, Clone, Copy)]
pub struct WriterChunk<'a> {
    pub min_time: i64,
    pub max_time: i64,
    pub encoding: u8,
    pub data: &'a [u8],
}

/// See the module documentation.
#[derive(Debug)]
pub struct BlockWriter {
    parent: PathBuf,
    ulid: String,
    tmp: PathBuf,
    chunks_dir: PathBuf,
    min_time: i64,
    max_time: i64,
    segment: Option<BufWriter<fs::File>>,
    segment_len: usize,
    segment_no: u64,
    stats: BlockStats,
    index_series: Vec<(Labels, Vec<ChunkMeta>)>,
    record: Vec<u8>,
    finished: bool,
}

impl BlockWriter {
    /// Starts block `ulid` for `[min_time, max_time)` under `parent`.
    pub fn create(
        parent: &Path,
        ulid: &str,
        min_time: i64,
        max_time: i64,
    ) -> Result<BlockWriter, BlockError> {
        if min_time >= max_time {
            return Err(invalid(
                parent,
                format!("empty block range [{min_time}, {max_time})"),
            ));
        }
        let tmp = parent.join(format!("{ulid}{TMP_SUFFIX}"));
        let chunks_dir = tmp.join("chunks");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&chunks_dir).map_err(io(&chunks_dir))?;
        Ok(BlockWriter {
            parent: parent.to_owned(),
            ulid: ulid.to_owned(),
            tmp,
            chunks_dir,
            min_time,
            max_time,
            segment: None,
            segment_len: 0,
            segment_no: 0,
            stats: BlockStats::default(),
            index_series: Vec::new(),
            record: Vec::new(),
            finished: false,
        })
    }

    /// The ULID being written.
    pub fn ulid(&self) -> &str {
        &self.ulid
    }

    /// Adds a series: `labels` must sort after the previous series', `chunks` in time order without
    /// overlaps and inside the block's range. A series without chunks is left out.
    pub fn add_chunks(
        &mut self,
        labels: Labels,
        chunks: &[WriterChunk<'_>],
    ) -> Result<(), BlockError> {
        if chunks.is_empty() {
            return Ok(());
        }
        if let Some((prev, _)) = self.index_series.last()
            && *prev >= labels
        {
            return Err(invalid(
                &self.parent,
                format!("series {labels} does not sort after {prev}"),
            ));
        }
        let mut metas = Vec::with_capacity(chunks.len());
        let mut prev_max: Option<i64> = None;
        for c in chunks {
            if c.min_time > c.max_time
                || c.min_time < self.min_time
                || c.max_time >= self.max_time
                || prev_max.is_some_and(|p| c.min_time <= p)
            {
                return Err(invalid(
                    &self.parent,
                    format!(
                        "chunk [{}, {}] of {labels} out of order or outside the block [{}, {})",
                        c.min_time, c.max_time, self.min_time, self.max_time
                    ),
                ));
            }
            prev_max = Some(c.max_time);
            metas.push(self.write_chunk(c)?);
            // XOR and both histogram encodings start with the 2-byte sample count (2.42 counts a
            // histogram as one sample in `numSamples`).
            let counted = [Encoding::Xor, Encoding::Histogram, Encoding::FloatHistogram];
            if counted.iter().any(|e| *e as u8 == c.encoding) && c.data.len() >= 2 {
                self.stats.num_samples += u64::from(u16::from_be_bytes([c.data[0], c.data[1]]));
            }
        }
        self.stats.num_series += 1;
        self.index_series.push((labels, metas));
        Ok(())
    }

    /// Adds a series from its samples (in time order), cut into XOR chunks of 120 samples; samples
    /// outside the block's range are left out.
    pub fn add_samples(&mut self, labels: Labels, samples: &[Sample]) -> Result<(), BlockError> {
        self.add_mixed(labels, samples, Vec::new())
    }

    /// Adds a series from its float samples (in time order, encoded as by [`BlockWriter::add_samples`])
    /// and chunks already encoded (the head's native-histogram chunks), in time order: an XOR chunk
    /// also ends where an encoded chunk starts. Samples outside the block's range are left out.
    pub fn add_mixed(
        &mut self,
        labels: Labels,
        samples: &[Sample],
        mut encoded: Vec<OwnedChunk>,
    ) -> Result<(), BlockError> {
        let lo = samples.partition_point(|s| s.t < self.min_time);
        let hi = samples.partition_point(|s| s.t < self.max_time);
        let samples = samples.get(lo..hi.max(lo)).unwrap_or_default();
        encoded.sort_by_key(|c| c.min_time);
        let starts: Vec<i64> = encoded.iter().map(|c| c.min_time).collect();
        // The encoded chunk each float sample comes before (its run ends there).
        let run_of = |t: i64| starts.partition_point(|s| *s <= t);
        let mut xor: Vec<OwnedChunk> = Vec::new();
        let mut c = XorChunk::new();
        let (mut first, mut prev): (Option<i64>, Option<i64>) = (None, None);
        for s in samples {
            if prev.is_some_and(|p| s.t <= p) {
                return Err(invalid(
                    &self.parent,
                    format!("samples of {labels} not in time order at {}", s.t),
                ));
            }
            let full = c.num_samples() >= SAMPLES_PER_CHUNK;
            if let (Some(f), Some(p)) = (first, prev)
                && (full || run_of(s.t) != run_of(p))
            {
                xor.push(OwnedChunk::xor(f, p, std::mem::take(&mut c)));
                first = None;
            }
            first.get_or_insert(s.t);
            prev = Some(s.t);
            c.append(s.t, s.v).map_err(|e| invalid(&self.parent, e))?;
        }
        if let (Some(f), Some(p)) = (first, prev) {
            xor.push(OwnedChunk::xor(f, p, c));
        }
        xor.extend(encoded);
        xor.sort_by_key(|c| c.min_time);
        let chunks: Vec<WriterChunk<'_>> = xor
            .iter()
            .map(|c| WriterChunk {
                min_time: c.min_time,
                max_time: c.max_time,
                encoding: c.encoding,
                data: &c.data,
            })
            .collect();
        self.add_chunks(labels, &chunks)
    }

    fn write_chunk(&mut self, c: &WriterChunk<'_>) -> Result<ChunkMeta, BlockError> {
        self.record.clear();
        write_chunk_record(&mut self.record, c.encoding, c.data);
        if self.segment.is_some() && self.segment_len + self.record.len() > SEGMENT_MAX_SIZE {
            self.close_segment()?;
            self.segment_no += 1;
        }
        if self.segment.is_none() {
            let path = self.segment_path();
            let mut f =
                BufWriter::with_capacity(1 << 20, fs::File::create(&path).map_err(io(&path))?);
            f.write_all(&segment_header()).map_err(io(&path))?;
            self.segment = Some(f);
            self.segment_len = segment_header().len();
        }
        let at = self.segment_len;
        let path = self.segment_path();
        if let Some(f) = self.segment.as_mut() {
            f.write_all(&self.record).map_err(io(&path))?;
        }
        self.segment_len += self.record.len();
        self.stats.num_chunks += 1;
        Ok(ChunkMeta {
            chunk_ref: (self.segment_no << 32) | at as u64,
            min_time: c.min_time,
            max_time: c.max_time,
        })
    }

    fn segment_path(&self) -> PathBuf {
        self.chunks_dir.join(format!("{:06}", self.segment_no + 1))
    }

    fn close_segment(&mut self) -> Result<(), BlockError> {
        let path = self.segment_path();
        if let Some(f) = self.segment.take() {
            let f = f.into_inner().map_err(|e| io(&path)(e.into_error()))?;
            f.sync_all().map_err(io(&path))?;
        }
        Ok(())
    }

    /// Writes the index, tombstones and `meta.json` (with `compaction` and the other tools' sections
    /// in `extra`), and moves the block into place. Returns its meta.
    pub fn finish(
        mut self,
        compaction: Compaction,
        extra: BTreeMap<String, serde_json::Value>,
    ) -> Result<BlockMeta, BlockError> {
        if self.segment.is_none() {
            // Prometheus writes one (empty) segment even for a block without chunks.
            let path = self.segment_path();
            write_synced(&path, &segment_header())?;
        }
        self.close_segment()?;
        let index = write_index(&self.index_series).map_err(|e| invalid(&self.tmp, e))?;
        write_synced(&self.tmp.join("index"), &index)?;
        // An empty tombstones file: header, then the CRC32 of no entries.
        let mut tomb = MAGIC_TOMBSTONES.to_be_bytes().to_vec();
        tomb.push(1);
        tomb.extend_from_slice(&crc32c::crc32c(&[]).to_be_bytes());
        write_synced(&self.tmp.join("tombstones"), &tomb)?;
        let meta = BlockMeta {
            ulid: self.ulid.clone(),
            min_time: self.min_time,
            max_time: self.max_time,
            stats: std::mem::take(&mut self.stats),
            compaction,
            version: META_VERSION,
            extra,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| invalid(&self.tmp, e))?;
        write_synced(&self.tmp.join("meta.json"), &json)?;
        sync_dir(&self.chunks_dir)?;
        sync_dir(&self.tmp)?;
        let dst = self.parent.join(&self.ulid);
        fs::rename(&self.tmp, &dst).map_err(io(&dst))?;
        sync_dir(&self.parent)?;
        self.finished = true;
        Ok(meta)
    }
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.segment = None;
            if let Err(e) = fs::remove_dir_all(&self.tmp) {
                tracing::warn!(dir = %self.tmp.display(), error = %e, "could not remove an unfinished block");
            }
        }
    }
}
