//! Block marks in the bucket, in Thanos' format (`pkg/block/metadata/markers.go`, v0.25.1; the
//! no-downsample mark from v0.30.0): `<ULID>/deletion-mark.json`, `<ULID>/no-compact-mark.json`,
//! `<ULID>/no-downsample-mark.json`.
//!
//! Each is a JSON object `{"id", "version": 1, "details"?, "<kind>_time": unix seconds,
//! "reason"?}`, written compact with its fields in that order (what Thanos' `json.Marshal` writes),
//! so Thanos reads ours and we read Thanos'. Reading: a mark that is absent or does not parse
//! counts as absent (Thanos warns and goes on); a `version` other than 1 is an error, as in Thanos.

use serde::{Deserialize, Serialize};

/// Which mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkKind {
    /// The block is being deleted: readers stop using it; it is deleted after the delete delay.
    Deletion,
    /// The compactor leaves the block out of compaction plans.
    NoCompact,
    /// The compactor does not downsample the block.
    NoDownsample,
}

impl MarkKind {
    /// The mark's file name in the block's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            MarkKind::Deletion => "deletion-mark.json",
            MarkKind::NoCompact => "no-compact-mark.json",
            MarkKind::NoDownsample => "no-downsample-mark.json",
        }
    }

    fn time_field(self) -> &'static str {
        match self {
            MarkKind::Deletion => "deletion_time",
            MarkKind::NoCompact => "no_compact_time",
            MarkKind::NoDownsample => "no_downsample_time",
        }
    }
}

/// Why a block is not compacted or downsampled (Thanos' reasons; deletion marks have none).
pub mod reason {
    pub const MANUAL: &str = "manual";
    pub const INDEX_SIZE_EXCEEDING: &str = "index-size-exceeding";
    pub const OUT_OF_ORDER_CHUNK: &str = "block-index-out-of-order-chunk";
    pub const DOWNSAMPLE_VERTICAL_COMPACTION: &str = "downsample-vertical-compaction";
}

/// A mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub kind: MarkKind,
    /// The block's ULID.
    pub id: String,
    pub details: String,
    /// When the mark was made, unix seconds.
    pub time: i64,
    /// Empty for deletion marks.
    pub reason: String,
}

/// The wire form: every kind's time field is optional here, the one of the kind is required.
#[derive(Serialize, Deserialize)]
struct Raw {
    id: String,
    version: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    details: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deletion_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    no_compact_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    no_downsample_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A mark that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkError {
    /// Thanos treats this as absent (with a warning).
    #[error("{file} of block {block}: not a mark: {reason}")]
    Unparsable {
        block: String,
        file: &'static str,
        reason: String,
    },
    /// Thanos fails on this.
    #[error("{file} of block {block}: version {version} is not 1")]
    Version {
        block: String,
        file: &'static str,
        version: i64,
    },
}

impl Mark {
    /// A mark of `kind` for block `id` made at `time` (unix seconds).
    pub fn new(kind: MarkKind, id: &str, time: i64, details: &str, reason: &str) -> Mark {
        Mark {
            kind,
            id: id.to_owned(),
            details: details.to_owned(),
            time,
            reason: reason.to_owned(),
        }
    }

    /// The file's bytes, as Thanos writes them.
    pub fn to_json(&self) -> Vec<u8> {
        let raw = Raw {
            id: self.id.clone(),
            version: 1,
            details: self.details.clone(),
            deletion_time: (self.kind == MarkKind::Deletion).then_some(self.time),
            no_compact_time: (self.kind == MarkKind::NoCompact).then_some(self.time),
            no_downsample_time: (self.kind == MarkKind::NoDownsample).then_some(self.time),
            reason: (self.kind != MarkKind::Deletion).then(|| self.reason.clone()),
        };
        serde_json::to_vec(&raw).unwrap_or_default()
    }

    /// Reads a mark file of `kind` found in block `block`'s directory.
    pub fn parse(kind: MarkKind, block: &str, bytes: &[u8]) -> Result<Mark, MarkError> {
        let unparsable = |reason: String| MarkError::Unparsable {
            block: block.to_owned(),
            file: kind.file_name(),
            reason,
        };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| unparsable(e.to_string()))?;
        if raw.version != 1 {
            return Err(MarkError::Version {
                block: block.to_owned(),
                file: kind.file_name(),
                version: raw.version,
            });
        }
        let time = match kind {
            MarkKind::Deletion => raw.deletion_time,
            MarkKind::NoCompact => raw.no_compact_time,
            MarkKind::NoDownsample => raw.no_downsample_time,
        }
        .ok_or_else(|| unparsable(format!("no {}", kind.time_field())))?;
        Ok(Mark {
            kind,
            id: raw.id,
            details: raw.details,
            time,
            reason: raw.reason.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ID: &str = "01FXQ4F8Z5N0Q7J4X8Y9V1W2T3";

    #[test]
    fn writes_what_thanos_writes() {
        let d = Mark::new(
            MarkKind::Deletion,
            ID,
            1_700_000_000,
            "source of compacted block",
            "",
        );
        assert_eq!(
            String::from_utf8(d.to_json()).unwrap(),
            format!(
                r#"{{"id":"{ID}","version":1,"details":"source of compacted block","deletion_time":1700000000}}"#
            )
        );
        let n = Mark::new(MarkKind::NoCompact, ID, 5, "", reason::MANUAL);
        assert_eq!(
            String::from_utf8(n.to_json()).unwrap(),
            format!(r#"{{"id":"{ID}","version":1,"no_compact_time":5,"reason":"manual"}}"#)
        );
        for m in [
            d,
            n,
            Mark::new(MarkKind::NoDownsample, ID, 7, "x", reason::MANUAL),
        ] {
            assert_eq!(Mark::parse(m.kind, ID, &m.to_json()).unwrap(), m);
        }
    }

    #[test]
    fn reads_thanos_marks_and_refuses_other_versions() {
        let thanos = format!(
            r#"{{"id":"{ID}","version":1,"details":"block exceeding retention of 720h0m0s","deletion_time":1650000000}}"#
        );
        let m = Mark::parse(MarkKind::Deletion, ID, thanos.as_bytes()).unwrap();
        assert_eq!(m.time, 1_650_000_000);
        assert!(matches!(
            Mark::parse(
                MarkKind::Deletion,
                ID,
                br#"{"id":"x","version":2,"deletion_time":1}"#
            ),
            Err(MarkError::Version { version: 2, .. })
        ));
        assert!(matches!(
            Mark::parse(
                MarkKind::NoCompact,
                ID,
                br#"{"id":"x","version":1,"deletion_time":1}"#
            ),
            Err(MarkError::Unparsable { .. })
        ));
        assert!(matches!(
            Mark::parse(MarkKind::Deletion, ID, b"not json"),
            Err(MarkError::Unparsable { .. })
        ));
    }
}
