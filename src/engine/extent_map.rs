//! Per-file extent map: an ordered map from file offset to the newest piece of data covering it.
//!
//! Pieces never overlap. Inserting a range trims or splits the pieces it overlaps, so the map holds
//! only live data: its size is proportional to the live extents, not to the history that produced
//! them. Lookups are O(log n). Offsets not covered by any piece (below the file size) read as zeros.

use bytes::Bytes;
use std::collections::BTreeMap;

/// Where the bytes of a piece come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Part of an extent stored in a layer object.
    Layer {
        /// Index of the layer in the owning view's layer table.
        layer: u32,
        /// Offset of the whole extent's bytes inside the object (the unit that is checksummed).
        data_off: u64,
        /// Length of the whole extent.
        ext_len: u32,
        /// crc32c of the whole extent.
        crc: u32,
        /// Where this piece starts inside the extent.
        skip: u32,
    },
    /// Bytes held in memory (written but not yet in a stored layer). `seq` orders writes, so a
    /// sync can later swap exactly the pieces it stored for layer pieces.
    Mem { buf: Bytes, seq: u64 },
}

impl Source {
    /// The same source, starting `n` bytes later.
    fn advance(&self, n: u64) -> Source {
        match self {
            Source::Layer {
                layer,
                data_off,
                ext_len,
                crc,
                skip,
            } => Source::Layer {
                layer: *layer,
                data_off: *data_off,
                ext_len: *ext_len,
                crc: *crc,
                skip: skip + n as u32,
            },
            Source::Mem { buf, seq } => Source::Mem {
                buf: buf.slice(n as usize..),
                seq: *seq,
            },
        }
    }
}

/// A run of bytes at some file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub len: u64,
    pub src: Source,
}

/// Ordered, non-overlapping map of pieces of one file.
#[derive(Debug, Clone, Default)]
pub struct ExtentMap {
    pieces: BTreeMap<u64, Piece>,
}

impl ExtentMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Makes `[start, start+len)` read from `src`, replacing whatever covered it.
    pub fn insert(&mut self, start: u64, len: u64, src: Source) {
        if len == 0 {
            return;
        }
        self.clear_range(start, start + len);
        self.pieces.insert(start, Piece { len, src });
    }

    /// Removes coverage of `[start, end)`, trimming and splitting pieces at the edges.
    pub fn clear_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // A piece starting before `start` may reach into the range.
        if let Some((&p_start, p)) = self.pieces.range(..start).next_back() {
            let p_end = p_start + p.len;
            if p_end > start {
                let p = p.clone();
                if p_end > end {
                    self.pieces.insert(
                        end,
                        Piece {
                            len: p_end - end,
                            src: p.src.advance(end - p_start),
                        },
                    );
                }
                if let Some(head) = self.pieces.get_mut(&p_start) {
                    head.len = start - p_start;
                }
            }
        }
        // Pieces starting inside the range are removed; the last may leave a tail.
        let inside: Vec<u64> = self.pieces.range(start..end).map(|(&k, _)| k).collect();
        for k in inside {
            if let Some(p) = self.pieces.remove(&k) {
                let p_end = k + p.len;
                if p_end > end {
                    self.pieces.insert(
                        end,
                        Piece {
                            len: p_end - end,
                            src: p.src.advance(end - k),
                        },
                    );
                }
            }
        }
    }

    /// Drops everything at or beyond `size`.
    pub fn truncate(&mut self, size: u64) {
        self.clear_range(size, u64::MAX);
    }

    /// The pieces overlapping `[start, end)`, clipped to it, in offset order.
    pub fn range(&self, start: u64, end: u64) -> Vec<(u64, Piece)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        if let Some((&p_start, p)) = self.pieces.range(..start).next_back() {
            let p_end = p_start + p.len;
            if p_end > start {
                let len = p_end.min(end) - start;
                out.push((
                    start,
                    Piece {
                        len,
                        src: p.src.advance(start - p_start),
                    },
                ));
            }
        }
        for (&k, p) in self.pieces.range(start..end) {
            let len = (k + p.len).min(end) - k;
            out.push((
                k,
                Piece {
                    len,
                    src: p.src.clone(),
                },
            ));
        }
        out
    }

    /// All pieces in offset order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Piece)> {
        self.pieces.iter().map(|(&k, p)| (k, p))
    }

    /// Replaces memory pieces written at or before `seq` inside `[start, start+len)` with `src`
    /// (the same bytes, now stored in a layer). Newer memory pieces are left alone.
    pub fn settle(&mut self, start: u64, len: u64, seq: u64, src: &Source) {
        for (off, piece) in self.range(start, start + len) {
            if let Source::Mem { seq: s, .. } = piece.src {
                if s <= seq {
                    self.insert(off, piece.len, src.advance(off - start));
                }
            }
        }
    }

    /// Drops memory pieces written at or before `seq`.
    pub fn drop_settled(&mut self, seq: u64) {
        let old: Vec<u64> = self
            .pieces
            .iter()
            .filter(|(_, p)| matches!(p.src, Source::Mem { seq: s, .. } if s <= seq))
            .map(|(&k, _)| k)
            .collect();
        for k in old {
            self.pieces.remove(&k);
        }
    }

    /// Bytes covered by pieces.
    pub fn covered_bytes(&self) -> u64 {
        self.pieces.values().map(|p| p.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Materialises a map over `size` bytes; Mem pieces only.
    fn render(map: &ExtentMap, size: u64) -> Vec<u8> {
        let mut out = vec![0u8; size as usize];
        for (off, p) in map.range(0, size) {
            let Source::Mem { buf, .. } = &p.src else {
                unreachable!()
            };
            out[off as usize..(off + p.len) as usize].copy_from_slice(&buf[..p.len as usize]);
        }
        out
    }

    #[test]
    fn overwrite_splits_and_trims() {
        let mut m = ExtentMap::new();
        m.insert(
            0,
            10,
            Source::Mem {
                buf: Bytes::from(vec![1u8; 10]),
                seq: 0,
            },
        );
        m.insert(
            3,
            4,
            Source::Mem {
                buf: Bytes::from(vec![2u8; 4]),
                seq: 0,
            },
        );
        assert_eq!(render(&m, 12), vec![1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 0, 0]);
        assert_eq!(m.len(), 3);
        m.insert(
            0,
            10,
            Source::Mem {
                buf: Bytes::from(vec![3u8; 10]),
                seq: 0,
            },
        );
        assert_eq!(m.len(), 1, "overwrites coalesce to the live pieces");
        m.truncate(4);
        assert_eq!(render(&m, 6), vec![3, 3, 3, 3, 0, 0]);
    }

    proptest! {
        #[test]
        fn matches_a_flat_model(ops in proptest::collection::vec((0u64..200, 1u64..60, any::<u8>(), any::<bool>()), 1..60)) {
            let mut m = ExtentMap::new();
            let mut model = vec![0u8; 300];
            for (off, len, byte, truncate) in ops {
                if truncate {
                    m.truncate(off);
                    for b in &mut model[off as usize..] { *b = 0; }
                } else {
                    m.insert(off, len, Source::Mem { buf: Bytes::from(vec![byte; len as usize]), seq: 0 });
                    for b in &mut model[off as usize..(off + len) as usize] { *b = byte; }
                }
                // Pieces never overlap and are in order.
                let mut last_end = 0;
                for (k, p) in m.iter() {
                    prop_assert!(k >= last_end);
                    prop_assert!(p.len > 0);
                    last_end = k + p.len;
                }
            }
            prop_assert_eq!(render(&m, 300), model.clone());
            // Clipped ranges agree with the model too.
            let r = m.range(17, 123);
            for (k, p) in r {
                prop_assert!(k >= 17 && k + p.len <= 123);
                let Source::Mem { buf, .. } = &p.src else { unreachable!() };
                prop_assert_eq!(&buf[..p.len as usize], &model[k as usize..(k + p.len) as usize]);
            }
        }
    }
}
