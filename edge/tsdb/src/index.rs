//! The block `index` file, Prometheus index format v2 (`tsdb/docs/format/index.md`):
//!
//! ```text
//! magic 0xBAAAD700 (u32 BE) | version 2 (u8)
//! symbol table      len u32 | #symbols u32 | (uvarint len, bytes)* | CRC32
//! series            per series, 16-byte aligned (ID = offset / 16):
//!                   uvarint len | #labels, (name ref, value ref)*, #chunks, chunk metas | CRC32
//! label indices     per name, 4-byte aligned: len | #names=1 | #values | value refs u32* | CRC32
//! postings          4-byte aligned lists: len | #refs u32 | series IDs u32* | CRC32
//!                   (first the list of all series, keyed ("", ""))
//! label offset tbl  len | #entries | (1, name, offset)* | CRC32
//! postings offset   len | #entries | (2, name, value, offset)* | CRC32, sorted by name, value
//! TOC               6 × u64 BE section offsets | CRC32
//! ```
//!
//! Symbol references are indices into the sorted symbol table; chunk metas are delta-encoded; all CRCs are
//! CRC32-Castagnoli over the bytes between the length field and the checksum.

use std::collections::{BTreeMap, BTreeSet};

use meridian_core::labels::Labels;
use meridian_core::matcher::Matcher;

pub const MAGIC_INDEX: u32 = 0xBAAA_D700;
pub const FORMAT_V2: u8 = 2;
/// Magic and version at the start of an index file.
pub const HEADER_LEN: usize = 5;
/// The table of contents at the end of an index file: six offsets and a checksum.
pub const TOC_LEN: usize = 6 * 8 + 4;

/// Where a chunk lives and what time it spans (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// `segment_index << 32 | byte_offset` in the block's `chunks/` files.
    pub chunk_ref: u64,
    pub min_time: i64,
    pub max_time: i64,
}

/// The index could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IndexError {
    #[error("index is {0} bytes, too short for a header and table of contents")]
    TooShort(usize),
    #[error("index has magic {0:#010x}, want 0xbaaad700")]
    BadMagic(u32),
    #[error("index format version {0} is not supported (only 2)")]
    BadVersion(u8),
    #[error("index {section} at offset {offset}: {reason}")]
    Corrupt {
        section: &'static str,
        offset: usize,
        reason: String,
    },
    #[error("series {0} of the index refers to symbol {1}, which does not exist")]
    BadSymbol(u32, u32),
}

impl IndexError {
    /// The error with its offset made absolute (errors of a section parsed from a slice count from the
    /// slice's start).
    fn shifted(self, by: usize) -> IndexError {
        match self {
            IndexError::Corrupt {
                section,
                offset,
                reason,
            } => IndexError::Corrupt {
                section,
                offset: offset + by,
                reason,
            },
            e => e,
        }
    }
}

/// Go's `binary.PutUvarint`, appended.
pub(crate) fn put_uvarint(b: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        b.push(x as u8 | 0x80);
        x >>= 7;
    }
    b.push(x as u8);
}

/// Go's `binary.PutVarint` (zig-zag), appended.
pub(crate) fn put_varint(b: &mut Vec<u8>, x: i64) {
    put_uvarint(b, ((x << 1) ^ (x >> 63)) as u64);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_uvarint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

fn pad(b: &mut Vec<u8>, align: usize) {
    while !b.len().is_multiple_of(align) {
        b.push(0);
    }
}

fn crc(b: &[u8]) -> [u8; 4] {
    crc32c::crc32c(b).to_be_bytes()
}

/// A length or count as the format's 4-byte big-endian field; an error (never a truncation) when it
/// does not fit.
fn be32_len(n: usize, what: &str) -> Result<[u8; 4], String> {
    u32::try_from(n)
        .map(u32::to_be_bytes)
        .map_err(|_| format!("index too large: {what} of {n} does not fit in 32 bits"))
}

/// Appends a section `len u32 | body | CRC32(body)`.
fn put_section(out: &mut Vec<u8>, body: &[u8]) -> Result<(), String> {
    out.extend_from_slice(&be32_len(body.len(), "section length")?);
    out.extend_from_slice(body);
    out.extend_from_slice(&crc(body));
    Ok(())
}

/// Builds an index file for series given in label order.
///
/// Errors when the series are not strictly increasing by labels, or the index outgrows its 4-byte
/// references (series IDs are offsets / 16, so ~64 GiB).
pub fn write_index(series: &[(Labels, Vec<ChunkMeta>)]) -> Result<Vec<u8>, String> {
    for w in series.windows(2) {
        if w[0].0 >= w[1].0 {
            return Err(format!("series out of order: {} then {}", w[0].0, w[1].0));
        }
    }
    let mut symbols = BTreeSet::new();
    for (l, _) in series {
        for x in l.iter() {
            symbols.insert(x.name);
            symbols.insert(x.value);
        }
    }
    let sym_ref: BTreeMap<&str, u32> = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i as u32))
        .collect();

    let mut out = Vec::with_capacity(1024 + series.len() * 64);
    out.extend_from_slice(&MAGIC_INDEX.to_be_bytes());
    out.push(FORMAT_V2);

    // Symbols.
    let toc_symbols = out.len() as u64;
    let mut body = Vec::new();
    body.extend_from_slice(&be32_len(symbols.len(), "symbol count")?);
    for s in &symbols {
        put_str(&mut body, s);
    }
    put_section(&mut out, &body)?;

    // Series.
    let toc_series = out.len() as u64;
    let mut ids = Vec::with_capacity(series.len());
    for (labels, chunks) in series {
        pad(&mut out, 16);
        let id = u32::try_from(out.len() / 16)
            .map_err(|_| "index too large: series ID exceeds 32 bits".to_owned())?;
        ids.push(id);
        body.clear();
        put_series_entry(&mut body, labels, chunks, &sym_ref);
        put_uvarint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body));
    }

    // Postings per label pair, in (name, value) order.
    let mut postings: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    for ((labels, _), id) in series.iter().zip(&ids) {
        for l in labels.iter() {
            postings.entry((l.name, l.value)).or_default().push(*id);
        }
    }

    // Label indices (no longer read by Prometheus, still written by it).
    let toc_label_indices = out.len() as u64;
    let mut label_index_offsets: Vec<(&str, u64)> = Vec::new();
    let mut by_name: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (name, value) in postings.keys() {
        by_name.entry(name).or_default().push(sym_ref[value]);
    }
    for (name, values) in &by_name {
        pad(&mut out, 4);
        label_index_offsets.push((name, out.len() as u64));
        body.clear();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&be32_len(values.len(), "label index length")?);
        for v in values {
            body.extend_from_slice(&v.to_be_bytes());
        }
        put_section(&mut out, &body)?;
    }

    // Postings lists.
    let toc_postings = out.len() as u64;
    pad(&mut out, 4);
    let mut postings_offsets: Vec<(&str, &str, u64)> = Vec::with_capacity(postings.len() + 1);
    let all = std::iter::once((("", ""), &ids));
    for ((name, value), list) in all.chain(postings.iter().map(|(k, v)| (*k, v))) {
        pad(&mut out, 4);
        postings_offsets.push((name, value, out.len() as u64));
        body.clear();
        body.extend_from_slice(&be32_len(list.len(), "postings list length")?);
        for id in list {
            body.extend_from_slice(&id.to_be_bytes());
        }
        put_section(&mut out, &body)?;
    }

    // Label offset table.
    let toc_label_table = out.len() as u64;
    body.clear();
    body.extend_from_slice(&be32_len(
        label_index_offsets.len(),
        "label offset table length",
    )?);
    for (name, off) in &label_index_offsets {
        put_uvarint(&mut body, 1);
        put_str(&mut body, name);
        put_uvarint(&mut body, *off);
    }
    put_section(&mut out, &body)?;

    // Postings offset table.
    let toc_postings_table = out.len() as u64;
    body.clear();
    body.extend_from_slice(&be32_len(
        postings_offsets.len(),
        "postings offset table length",
    )?);
    for (name, value, off) in &postings_offsets {
        put_uvarint(&mut body, 2);
        put_str(&mut body, name);
        put_str(&mut body, value);
        put_uvarint(&mut body, *off);
    }
    put_section(&mut out, &body)?;

    // TOC.
    let toc_start = out.len();
    for off in [
        toc_symbols,
        toc_series,
        toc_label_indices,
        toc_label_table,
        toc_postings,
        toc_postings_table,
    ] {
        out.extend_from_slice(&off.to_be_bytes());
    }
    let c = crc(&out[toc_start..]);
    out.extend_from_slice(&c);
    Ok(out)
}

/// One series entry's body: its label references and its chunks (the first in full, the rest as
/// deltas, as Prometheus writes them).
fn put_series_entry(
    body: &mut Vec<u8>,
    labels: &Labels,
    chunks: &[ChunkMeta],
    sym_ref: &BTreeMap<&str, u32>,
) {
    put_uvarint(body, labels.len() as u64);
    for l in labels.iter() {
        put_uvarint(body, u64::from(sym_ref[l.name]));
        put_uvarint(body, u64::from(sym_ref[l.value]));
    }
    put_uvarint(body, chunks.len() as u64);
    if let Some(c0) = chunks.first() {
        put_varint(body, c0.min_time);
        // Deltas as Prometheus writes them (Go's `uint64(a - b)` wraps; for a series' sorted,
        // non-overlapping chunks they are never negative). The reader checks them.
        put_uvarint(body, c0.max_time.wrapping_sub(c0.min_time) as u64);
        put_uvarint(body, c0.chunk_ref);
        let (mut t0, mut r0) = (c0.max_time, c0.chunk_ref as i64);
        for c in &chunks[1..] {
            put_uvarint(body, c.min_time.wrapping_sub(t0) as u64);
            put_uvarint(body, c.max_time.wrapping_sub(c.min_time) as u64);
            put_varint(body, (c.chunk_ref as i64).wrapping_sub(r0));
            t0 = c.max_time;
            r0 = c.chunk_ref as i64;
        }
    }
}

/// A cursor over index bytes.
struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
    section: &'static str,
}

impl<'a> Dec<'a> {
    fn new(b: &'a [u8], pos: usize, section: &'static str) -> Dec<'a> {
        Dec { b, pos, section }
    }

    fn err(&self, reason: impl Into<String>) -> IndexError {
        IndexError::Corrupt {
            section: self.section,
            offset: self.pos,
            reason: reason.into(),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], IndexError> {
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| self.err(format!("{n} bytes past the end")))?;
        self.pos += n;
        Ok(s)
    }

    fn be32(&mut self) -> Result<u32, IndexError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn be64(&mut self) -> Result<u64, IndexError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn uvarint(&mut self) -> Result<u64, IndexError> {
        let rest = self.b.get(self.pos..).unwrap_or_default();
        let (v, n) = super::chunks::uvarint(rest).ok_or_else(|| self.err("bad varint"))?;
        self.pos += n;
        Ok(v)
    }

    /// `base` plus a non-negative delta read as a uvarint; a sum past the i64 axis is corruption.
    fn add_delta(&mut self, base: i64, what: &str) -> Result<i64, IndexError> {
        let d = self.uvarint()?;
        i64::try_from(d)
            .ok()
            .and_then(|d| base.checked_add(d))
            .ok_or_else(|| self.err(format!("{what} delta {d} from {base} overflows")))
    }

    fn varint(&mut self) -> Result<i64, IndexError> {
        let u = self.uvarint()?;
        let x = (u >> 1) as i64;
        Ok(if u & 1 != 0 { !x } else { x })
    }

    fn str(&mut self) -> Result<&'a str, IndexError> {
        let n = self.uvarint()? as usize;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| self.err("string is not UTF-8"))
    }

    /// Reads `len u32 | body | CRC32` and returns the checked body.
    fn section(&mut self) -> Result<&'a [u8], IndexError> {
        let len = self.be32()? as usize;
        let body = self.bytes(len)?;
        let want = self.be32()?;
        if crc32c::crc32c(body) != want {
            return Err(self.err("checksum mismatch"));
        }
        Ok(body)
    }
}

/// The table of contents at the end of an index file: where each section starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Toc {
    pub symbols: u64,
    pub series: u64,
    pub label_indices: u64,
    pub label_offset_table: u64,
    pub postings: u64,
    pub postings_offset_table: u64,
}

impl Toc {
    /// Parses the last [`TOC_LEN`] bytes of an index file, found at offset `at`.
    pub fn parse(b: &[u8], at: usize) -> Result<Toc, IndexError> {
        let mut d = Dec::new(b, 0, "TOC");
        let mut t = [0u64; 6];
        for x in &mut t {
            *x = d.be64()?;
        }
        let want = d.be32()?;
        if crc32c::crc32c(&b[..48]) != want {
            return Err(IndexError::Corrupt {
                section: "TOC",
                offset: at,
                reason: "checksum mismatch".into(),
            });
        }
        let [
            symbols,
            series,
            label_indices,
            label_offset_table,
            postings,
            postings_offset_table,
        ] = t;
        Ok(Toc {
            symbols,
            series,
            label_indices,
            label_offset_table,
            postings,
            postings_offset_table,
        })
    }
}

/// Checks the first [`HEADER_LEN`] bytes of an index file (magic and format version).
pub fn check_header(b: &[u8]) -> Result<(), IndexError> {
    if b.len() < HEADER_LEN {
        return Err(IndexError::TooShort(b.len()));
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if magic != MAGIC_INDEX {
        return Err(IndexError::BadMagic(magic));
    }
    if b[4] != FORMAT_V2 {
        return Err(IndexError::BadVersion(b[4]));
    }
    Ok(())
}

/// The part of an index a reader keeps in memory: the symbol table and the postings offset table (what
/// Thanos calls the index-header). Series and postings lists are parsed from bytes the caller fetched,
/// from a mapped file ([`IndexReader`]) or by ranged reads from object storage.
#[derive(Debug, Clone)]
pub struct IndexHeader {
    symbols: Vec<String>,
    /// name -> (value, postings list offset), values sorted.
    postings: BTreeMap<String, Vec<(String, usize)>>,
    all_postings: usize,
}

impl IndexHeader {
    /// Parses the symbol table section (from its length field; found at offset `symbols_at`) and the
    /// postings offset table section, if the index has one.
    pub fn parse(
        symbols: &[u8],
        symbols_at: usize,
        postings_table: Option<(&[u8], usize)>,
    ) -> Result<IndexHeader, IndexError> {
        let body = Dec::new(symbols, 0, "symbol table")
            .section()
            .map_err(|e| e.shifted(symbols_at))?;
        let mut d = Dec::new(body, 0, "symbol table");
        let n = d.be32()? as usize;
        let mut syms = Vec::with_capacity(n.min(body.len()));
        for _ in 0..n {
            syms.push(d.str()?.to_owned());
        }
        let mut postings: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        let mut all_postings = None;
        if let Some((table, at)) = postings_table {
            let body = Dec::new(table, 0, "postings offset table")
                .section()
                .map_err(|e| e.shifted(at))?;
            let mut d = Dec::new(body, 0, "postings offset table");
            let n = d.be32()? as usize;
            for _ in 0..n {
                if d.uvarint()? != 2 {
                    return Err(d.err("entry with a key count other than 2"));
                }
                let name = d.str()?;
                let value = d.str()?;
                let off = d.uvarint()? as usize;
                if name.is_empty() && value.is_empty() {
                    all_postings = Some(off);
                } else {
                    postings
                        .entry(name.to_owned())
                        .or_default()
                        .push((value.to_owned(), off));
                }
            }
        }
        Ok(IndexHeader {
            symbols: syms,
            postings,
            all_postings: all_postings.unwrap_or(0),
        })
    }

    /// Label names with at least one series, sorted.
    pub fn label_names(&self) -> Vec<&str> {
        self.postings.keys().map(String::as_str).collect()
    }

    /// Values of a label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<&str> {
        self.postings
            .get(name)
            .map(|v| v.iter().map(|(v, _)| v.as_str()).collect())
            .unwrap_or_default()
    }

    /// Where the postings list of `name=value` starts; `None` when no series has that pair.
    pub fn postings_offset(&self, name: &str, value: &str) -> Option<usize> {
        let values = self.postings.get(name)?;
        values
            .binary_search_by(|(v, _)| v.as_str().cmp(value))
            .ok()
            .map(|i| values[i].1)
    }

    /// Where the list of every series starts; `None` when the index has none (no series).
    pub fn all_postings_offset(&self) -> Option<usize> {
        (self.all_postings != 0).then_some(self.all_postings)
    }

    /// Every postings list's start, sorted: a list ends where the next one starts (or where the
    /// postings section ends), which is what a ranged read of one list needs to know.
    pub fn postings_starts(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .postings
            .values()
            .flat_map(|vs| vs.iter().map(|(_, o)| *o))
            .chain(self.all_postings_offset())
            .collect();
        v.sort_unstable();
        v
    }

    /// Parses series `id` from `b`, the index bytes from the series' offset (`id × 16`) on; `b` must hold
    /// the whole entry ([`series_entry_len`] tells how long it is).
    pub fn parse_series(&self, id: u32, b: &[u8]) -> Result<(Labels, Vec<ChunkMeta>), IndexError> {
        let off = id as usize * 16;
        let mut d = Dec::new(b, 0, "series");
        let len = d.uvarint().map_err(|e| e.shifted(off))?;
        let body = d.bytes(len as usize).map_err(|e| e.shifted(off))?;
        if crc32c::crc32c(body) != d.be32().map_err(|e| e.shifted(off))? {
            return Err(IndexError::Corrupt {
                section: "series",
                offset: off,
                reason: format!("checksum mismatch in series {id}"),
            });
        }
        let mut d = Dec::new(body, 0, "series");
        let nl = d.uvarint()? as usize;
        let mut pairs = Vec::with_capacity(nl.min(body.len()));
        for _ in 0..nl {
            let n = d.uvarint()? as u32;
            let v = d.uvarint()? as u32;
            let sym = |r: u32| {
                self.symbols
                    .get(r as usize)
                    .map(String::as_str)
                    .ok_or(IndexError::BadSymbol(id, r))
            };
            pairs.push((sym(n)?, sym(v)?));
        }
        let nc = d.uvarint()? as usize;
        let mut chunks = Vec::with_capacity(nc.min(body.len()));
        if nc > 0 {
            let min_time = d.varint()?;
            let max_time = d.add_delta(min_time, "chunk max time")?;
            let chunk_ref = d.uvarint()?;
            chunks.push(ChunkMeta {
                chunk_ref,
                min_time,
                max_time,
            });
            let (mut t0, mut r0) = (max_time, chunk_ref as i64);
            for _ in 1..nc {
                let min_time = d.add_delta(t0, "chunk min time")?;
                let max_time = d.add_delta(min_time, "chunk max time")?;
                let r = r0
                    .checked_add(d.varint()?)
                    .ok_or_else(|| d.err("chunk reference overflows"))?;
                chunks.push(ChunkMeta {
                    chunk_ref: r as u64,
                    min_time,
                    max_time,
                });
                t0 = max_time;
                r0 = r;
            }
        }
        Ok((Labels::from_pairs(pairs), chunks))
    }

    /// Number of symbols (for `analyze`-style output).
    pub fn symbol_count(&self) -> usize {
        self.symbols.len()
    }

    /// Approximate heap bytes held (for byte-bounded caches).
    pub fn heap_size(&self) -> usize {
        let syms: usize = self.symbols.iter().map(|s| s.len() + 24).sum();
        let postings: usize = self
            .postings
            .iter()
            .map(|(n, vs)| n.len() + 48 + vs.iter().map(|(v, _)| v.len() + 32).sum::<usize>())
            .sum();
        syms + postings + 64
    }
}

/// The length of the series entry at the start of `b` (length field, body and checksum); `None` when
/// `b` is too short to hold the length field.
pub fn series_entry_len(b: &[u8]) -> Option<usize> {
    let (len, n) = super::chunks::uvarint(b)?;
    usize::try_from(len).ok()?.checked_add(n + 4)
}

/// Parses the postings list at the start of `b` (found at offset `at`): sorted series IDs.
pub fn parse_postings(b: &[u8], at: usize) -> Result<Vec<u32>, IndexError> {
    let body = Dec::new(b, 0, "postings")
        .section()
        .map_err(|e| e.shifted(at))?;
    let mut d = Dec::new(body, 0, "postings");
    let n = d.be32()? as usize;
    if n.saturating_mul(4) > body.len() {
        return Err(IndexError::Corrupt {
            section: "postings",
            offset: at,
            reason: format!("{n} entries do not fit in {} bytes", body.len()),
        });
    }
    (0..n).map(|_| d.be32()).collect()
}

/// An index file, parsed enough to answer lookups: the [`IndexHeader`] is loaded, series and postings
/// lists are decoded on demand from the (mapped) file.
#[derive(Debug)]
pub struct IndexReader {
    b: super::mmap::FileBytes,
    header: IndexHeader,
}

impl IndexReader {
    pub fn new(b: impl Into<super::mmap::FileBytes>) -> Result<IndexReader, IndexError> {
        let b: super::mmap::FileBytes = b.into();
        if b.len() < HEADER_LEN + TOC_LEN {
            return Err(IndexError::TooShort(b.len()));
        }
        check_header(&b)?;
        let toc_at = b.len() - TOC_LEN;
        let toc = Toc::parse(&b[toc_at..], toc_at)?;
        let from = |off: u64| b.get(off as usize..).unwrap_or_default();
        let table = (toc.postings_offset_table != 0).then(|| {
            (
                from(toc.postings_offset_table),
                toc.postings_offset_table as usize,
            )
        });
        let header = IndexHeader::parse(from(toc.symbols), toc.symbols as usize, table)?;
        Ok(IndexReader { b, header })
    }

    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    /// Label names with at least one series, sorted.
    pub fn label_names(&self) -> Vec<&str> {
        self.header.label_names()
    }

    /// Values of a label, sorted.
    pub fn label_values(&self, name: &str) -> Vec<&str> {
        self.header.label_values(name)
    }

    fn postings_at(&self, off: Option<usize>) -> Result<Vec<u32>, IndexError> {
        match off {
            None => Ok(vec![]),
            Some(off) => parse_postings(self.b.get(off..).unwrap_or_default(), off),
        }
    }

    /// Series IDs with `name=value`, sorted.
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, IndexError> {
        self.postings_at(self.header.postings_offset(name, value))
    }

    /// Every series ID, sorted (series order is label order).
    pub fn all_postings(&self) -> Result<Vec<u32>, IndexError> {
        self.postings_at(self.header.all_postings_offset())
    }

    /// Series IDs whose labels satisfy every matcher (a missing label counts as `""`), sorted. With no
    /// matchers, every series.
    pub fn select(&self, matchers: &[Matcher]) -> Result<Vec<u32>, IndexError> {
        Ok(super::postings::select(self, matchers)?
            .into_iter()
            .map(|id| id as u32)
            .collect())
    }

    /// A series' labels and chunk metas.
    pub fn series(&self, id: u32) -> Result<(Labels, Vec<ChunkMeta>), IndexError> {
        let off = id as usize * 16;
        self.header
            .parse_series(id, self.b.get(off..).unwrap_or_default())
    }

    /// Number of symbols (for `analyze`-style output).
    pub fn symbol_count(&self) -> usize {
        self.header.symbol_count()
    }
}

impl super::postings::Postings for IndexReader {
    type Error = IndexError;

    fn values(&self, name: &str) -> Vec<&str> {
        self.label_values(name)
    }

    fn list(&self, name: &str, value: &str) -> Result<Vec<u64>, IndexError> {
        Ok(self
            .postings(name, value)?
            .into_iter()
            .map(u64::from)
            .collect())
    }

    fn all(&self) -> Result<Vec<u64>, IndexError> {
        Ok(self.all_postings()?.into_iter().map(u64::from).collect())
    }

    /// The list's entry count, read from its first 8 bytes (length, count) rather than the whole list;
    /// its checksum is checked when the list itself is read.
    fn count(&self, name: &str, value: &str) -> Result<usize, IndexError> {
        let Some(off) = self.header.postings_offset(name, value) else {
            return Ok(0);
        };
        let mut d = Dec::new(self.b.get(off..).unwrap_or_default(), 0, "postings");
        let (len, n) = (d.be32()? as usize, d.be32()? as usize);
        if n.saturating_mul(4).saturating_add(4) > len {
            return Err(IndexError::Corrupt {
                section: "postings",
                offset: off,
                reason: format!("{n} entries do not fit in {len} bytes"),
            });
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22 (item 12's rule, in the index): a length past 32 bits is an error, not truncated.
    #[test]
    fn lengths_past_32_bits_are_refused_not_truncated() {
        assert_eq!(be32_len(7, "x").unwrap(), 7u32.to_be_bytes());
        assert_eq!(be32_len(u32::MAX as usize, "x").unwrap(), [0xff; 4]);
        let e = be32_len(u32::MAX as usize + 1, "section length").unwrap_err();
        assert!(e.contains("section length of 4294967296"), "{e}");
    }
    use meridian_core::matcher::{MatchType, matches_all};
    use proptest::prelude::*;

    fn sample_series() -> Vec<(Labels, Vec<ChunkMeta>)> {
        let mut v: Vec<(Labels, Vec<ChunkMeta>)> = (0..50)
            .map(|i| {
                let l = Labels::from_pairs([
                    (
                        "__name__",
                        if i % 3 == 0 {
                            "up"
                        } else {
                            "http_requests_total"
                        }
                        .to_string(),
                    ),
                    ("job", format!("job-{}", i % 4)),
                    ("instance", format!("host-{i}:9090")),
                    (
                        "code",
                        if i % 5 == 0 {
                            String::new()
                        } else {
                            format!("{}", 200 + i % 3)
                        },
                    ),
                ]);
                let chunks = (0..(i % 4))
                    .map(|c| ChunkMeta {
                        chunk_ref: 8 + (i * 1000 + c * 97) as u64,
                        min_time: 1_000 + c as i64 * 500 - i as i64,
                        max_time: 1_400 + c as i64 * 500,
                    })
                    .collect();
                (l, chunks)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn roundtrip_series_and_postings() {
        let series = sample_series();
        let bytes = write_index(&series).unwrap();
        let r = IndexReader::new(bytes).unwrap();
        let all = r.all_postings().unwrap();
        assert_eq!(all.len(), series.len());
        for (id, (l, c)) in all.iter().zip(&series) {
            assert_eq!(r.series(*id).unwrap(), (l.clone(), c.clone()));
        }
        assert_eq!(r.label_names(), vec!["__name__", "code", "instance", "job"]);
        assert_eq!(
            r.label_values("__name__"),
            vec!["http_requests_total", "up"]
        );
        assert_eq!(r.postings("__name__", "up").unwrap().len(), 17);
        assert!(r.postings("__name__", "nope").unwrap().is_empty());
        assert!(write_index(&[series[1].clone(), series[0].clone()]).is_err());
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = write_index(&sample_series()).unwrap();
        let mut bad = bytes.clone();
        bad[0] = 0;
        assert!(matches!(
            IndexReader::new(bad),
            Err(IndexError::BadMagic(_))
        ));
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 10] ^= 0xff;
        assert!(IndexReader::new(bad).is_err());
        // A flipped byte inside a series is caught by its checksum.
        let r = IndexReader::new(bytes.clone()).unwrap();
        let id = r.all_postings().unwrap()[3];
        let mut bad = bytes;
        bad[id as usize * 16 + 3] ^= 0x55;
        let r = IndexReader::new(bad).unwrap();
        assert!(r.series(id).is_err());
    }

    proptest! {
        #[test]
        fn select_agrees_with_brute_force(
            kinds in proptest::collection::vec((0usize..4, 0usize..3, "[a-c]{0,2}"), 1..4)
        ) {
            let series = sample_series();
            let r = IndexReader::new(write_index(&series).unwrap()).unwrap();
            let names = ["job", "code", "__name__", "missing"];
            let types = [MatchType::Equal, MatchType::NotEqual, MatchType::Regex, MatchType::NotRegex];
            let matchers: Vec<Matcher> = kinds.iter().map(|(n, t, v)| {
                let value = match *n { 0 => format!("job-{}", v.len()), 1 => if v.is_empty() { String::new() } else { "20.".into() }, _ => v.clone() };
                Matcher::new(types[*t % 4], names[*n], value).unwrap()
            }).collect();
            let got: Vec<Labels> = r.select(&matchers).unwrap().into_iter().map(|id| r.series(id).unwrap().0).collect();
            let want: Vec<Labels> = series.iter().filter(|(l, _)| matches_all(&matchers, l)).map(|(l, _)| l.clone()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
