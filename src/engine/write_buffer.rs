//! The write buffer: changes made since the last layer, per file, in memory. Turning it into a
//! delta layer writes each dirty file's truncation point, final size and dirty ranges.

use super::extent_map::{ExtentMap, Source};
use crate::error::Result;
use crate::layer::{LayerIndex, LayerKind, LayerWriter};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Write;

/// Unsynced changes of one file.
#[derive(Debug, Clone, Default)]
pub struct DirtyFile {
    /// Written ranges (memory pieces only).
    pub dirty: ExtentMap,
    /// The smallest size the file was cut to since the last layer (applied before `dirty`).
    pub truncate_to: Option<u64>,
    /// Size of the file now.
    pub size: u64,
}

/// Changes of several files since the last layer, keyed by file id.
#[derive(Debug, Clone, Default)]
pub struct WriteBuffer {
    files: BTreeMap<u64, DirtyFile>,
    bytes: u64,
}

impl WriteBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes of dirty data held (an upper bound: overwritten ranges are counted until flushed).
    pub fn buffered_bytes(&self) -> u64 {
        self.bytes
    }

    fn entry(&mut self, file_id: u64, size: u64) -> &mut DirtyFile {
        self.files.entry(file_id).or_insert_with(|| DirtyFile {
            size,
            ..Default::default()
        })
    }

    /// Records a write to a file whose current size is `size`.
    pub fn write(&mut self, file_id: u64, size: u64, off: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len() as u64;
        let f = self.entry(file_id, size);
        f.dirty.insert(
            off,
            data.len() as u64,
            Source::Mem {
                buf: Bytes::copy_from_slice(data),
                seq: 0,
            },
        );
        f.size = f.size.max(off + data.len() as u64);
    }

    /// Records a size change (truncate or extend) of a file whose current size is `size`.
    pub fn set_size(&mut self, file_id: u64, size: u64, new_size: u64) {
        let f = self.entry(file_id, size);
        if new_size < f.size {
            f.dirty.truncate(new_size);
            f.truncate_to = Some(f.truncate_to.map_or(new_size, |t| t.min(new_size)));
        }
        f.size = new_size;
    }

    /// Forgets a file (deleted: its changes no longer matter).
    pub fn forget(&mut self, file_id: u64) {
        self.files.remove(&file_id);
    }

    pub fn file(&self, file_id: u64) -> Option<&DirtyFile> {
        self.files.get(&file_id)
    }

    /// Serialises the buffer as a delta layer into `w`.
    pub fn write_layer<W: Write>(&self, w: W) -> Result<(W, LayerIndex, u64)> {
        let mut lw = LayerWriter::new(w, LayerKind::Delta);
        for (&id, f) in &self.files {
            lw.begin_file(id, f.truncate_to, f.size)?;
            for (off, piece) in f.dirty.iter() {
                if let Source::Mem { buf, .. } = &piece.src {
                    lw.add_extent(off, &buf[..piece.len as usize])?;
                }
            }
        }
        Ok(lw.finish()?)
    }
}
