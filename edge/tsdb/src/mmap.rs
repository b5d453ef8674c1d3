//! Read-only file contents for block files: memory-mapped, so opening a block costs no reads and the
//! kernel pages index and chunks in as queries touch them.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

/// A file's bytes: mapped, or owned (tests, empty files).
#[derive(Debug)]
pub enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Maps a block file read-only.
    pub fn map(path: &Path) -> std::io::Result<FileBytes> {
        let f = File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: block files are immutable once their block directory is renamed into place: nothing
        // writes to them again, and deletion renames the directory and unlinks the files, which on Unix
        // leaves existing mappings valid. A mapping is therefore never changed or truncated under us.
        #[allow(unsafe_code)]
        let m = unsafe { memmap2::Mmap::map(&f)? };
        Ok(FileBytes::Mapped(m))
    }
}

impl Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl From<Vec<u8>> for FileBytes {
    fn from(v: Vec<u8>) -> FileBytes {
        FileBytes::Owned(v)
    }
}
