//! A read view of one commit: every file of the commit with its exact size and an extent map built
//! from the layers of the commit's chain (down to the newest image layer).

use super::extent_map::{ExtentMap, Piece, Source};
use super::layers::LayerCache;
use crate::catalog::{Commit, DynCatalog, FileRow, LayerRow, Pending};
use crate::error::{Error, Result};
use crate::layer::{LayerIndex, LayerKind};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One file as of the view's commit.
#[derive(Debug, Clone)]
pub struct FileView {
    pub path: String,
    pub file_id: u64,
    pub size: u64,
    pub map: ExtentMap,
}

/// A layer the view reads from.
#[derive(Debug, Clone)]
pub struct ViewLayer {
    pub row: LayerRow,
    pub index: Arc<LayerIndex>,
}

/// What a commit contains, ready to be read.
pub struct ReadView {
    pub commit: Commit,
    /// Files by name.
    pub files: BTreeMap<String, FileView>,
    /// The layers the extent maps point into (`Source::Layer::layer` indexes this).
    pub layers: Vec<ViewLayer>,
    cache: Arc<LayerCache>,
}

/// Applies one layer's index to the per-file maps (keyed by file id).
pub fn apply_layer(maps: &mut HashMap<u64, ExtentMap>, layer_no: u32, index: &LayerIndex) {
    if index.kind == LayerKind::Image {
        maps.clear();
    }
    for f in &index.files {
        let map = maps.entry(f.file_id).or_default();
        if let Some(t) = f.truncate_to {
            map.truncate(t);
        }
        for e in &f.extents {
            map.insert(
                e.offset,
                e.len as u64,
                Source::Layer {
                    layer: layer_no,
                    data_off: e.data_off,
                    ext_len: e.len,
                    crc: e.crc,
                    skip: 0,
                },
            );
        }
    }
}

/// Layer footers fetched at the same time when a view is built.
const FOOTER_FETCHES: usize = 32;

impl ReadView {
    /// Builds the view of `commit`.
    pub async fn open(
        catalog: &DynCatalog,
        cache: Arc<LayerCache>,
        commit: Commit,
    ) -> Result<ReadView> {
        Self::open_with(catalog, cache, commit, None).await
    }

    /// Builds the view of `commit` with a branch's synced-but-uncommitted state on top: its
    /// pending layers and durable file table (what a writable mount resumes from).
    pub async fn open_with(
        catalog: &DynCatalog,
        cache: Arc<LayerCache>,
        commit: Commit,
        pending: Option<Pending>,
    ) -> Result<ReadView> {
        let (chain, files) = ViewChain::build(catalog, &cache, commit, pending).await?;
        let ViewChain {
            commit,
            mut maps,
            layers,
            ..
        } = chain;
        let files = Self::files_from(files, &mut maps);
        Ok(ReadView {
            commit,
            files,
            layers,
            cache,
        })
    }

    /// Builds the view of `commit` and the chain it was built from, from which a follower
    /// builds the views of the commits after it ([`ViewChain::advance`]).
    pub async fn open_chain(
        catalog: &DynCatalog,
        cache: Arc<LayerCache>,
        commit: Commit,
    ) -> Result<(ReadView, ViewChain)> {
        let (chain, files) = ViewChain::build(catalog, &cache, commit, None).await?;
        Ok((chain.view(files, cache), chain))
    }

    fn files_from(
        rows: Vec<FileRow>,
        maps: &mut HashMap<u64, ExtentMap>,
    ) -> BTreeMap<String, FileView> {
        rows.into_iter()
            .map(|f| {
                let file_id = f.file_id as u64;
                let size = f.size as u64;
                let mut map = maps.remove(&file_id).unwrap_or_default();
                map.truncate(size);
                (
                    f.path.clone(),
                    FileView {
                        path: f.path,
                        file_id,
                        size,
                        map,
                    },
                )
            })
            .collect()
    }

    pub fn file(&self, name: &str) -> Option<&FileView> {
        self.files.get(name)
    }

    /// Total size of all files.
    pub fn logical_size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// Reads `[off, off + buf.len())` of `file` into `buf`; bytes beyond the file size or in holes
    /// are zeros. Returns how many bytes lie within the file.
    pub async fn read(&self, file: &FileView, off: u64, buf: &mut [u8]) -> Result<usize> {
        let end = (off + buf.len() as u64).min(file.size);
        buf.fill(0);
        if off >= end {
            return Ok(0);
        }
        for (start, piece) in file.map.range(off, end) {
            let at = (start - off) as usize;
            let dst = &mut buf[at..at + piece.len as usize];
            self.piece_bytes(&piece, dst).await?;
        }
        Ok((end - off) as usize)
    }

    /// Copies the bytes of `piece` into `dst` (whose length is the piece's length).
    pub async fn piece_bytes(&self, piece: &Piece, dst: &mut [u8]) -> Result<()> {
        piece_bytes(&self.cache, &self.layers, piece, dst).await
    }

    /// How many distinct layers the file's extents come from (read amplification).
    pub fn layers_per_file(&self, file: &FileView) -> usize {
        let mut seen: Vec<u32> = file
            .map
            .iter()
            .filter_map(|(_, p)| match p.src {
                Source::Layer { layer, .. } => Some(layer),
                Source::Mem { .. } => None,
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }
}

/// What a view of a commit was built from: the extent maps of every file id of the commit's
/// chain (before the commit's file table cut them to its files and sizes) and the layers they
/// point into. A follower keeps it to build the view of a later commit of its branch from the
/// layers of the commits in between ([`advance`](Self::advance)), not from the whole history.
pub struct ViewChain {
    commit: Commit,
    maps: HashMap<u64, ExtentMap>,
    layers: Vec<ViewLayer>,
    /// How many layers the chain had when it was last built whole.
    built_with: usize,
}

/// Footers of `rows`, fetched [`FOOTER_FETCHES`] at a time (each is a round trip to the store),
/// in order.
async fn footers(cache: &LayerCache, rows: &[LayerRow]) -> Result<Vec<Arc<LayerIndex>>> {
    use futures::stream::{StreamExt, TryStreamExt};
    futures::stream::iter(rows)
        .map(|row| cache.index(&row.object_key, row.size_bytes as u64))
        .buffered(FOOTER_FETCHES)
        .try_collect()
        .await
}

impl ViewChain {
    /// The chain of `commit` (with a branch's pending layers on top), and the file table the
    /// view takes from it.
    async fn build(
        catalog: &DynCatalog,
        cache: &LayerCache,
        commit: Commit,
        pending: Option<Pending>,
    ) -> Result<(ViewChain, Vec<FileRow>)> {
        let mut rows = catalog.chain_layers(&commit.id).await?;
        let files = match pending {
            Some(p) => {
                rows.extend(p.layers);
                p.files
            }
            None => catalog.commit_files(&commit.id).await?,
        };
        // Readers stop at the newest image layer: it holds every file in full.
        let start = rows
            .iter()
            .rposition(|l| l.kind == LayerKind::Image)
            .unwrap_or(0);
        rows.drain(..start);
        let indexes = footers(cache, &rows).await?;
        let mut chain = ViewChain {
            commit,
            maps: HashMap::new(),
            layers: Vec::with_capacity(rows.len()),
            built_with: 0,
        };
        chain.apply(rows, indexes);
        chain.built_with = chain.layers.len();
        Ok((chain, files))
    }

    fn apply(&mut self, rows: Vec<LayerRow>, indexes: Vec<Arc<LayerIndex>>) {
        for (row, index) in rows.into_iter().zip(indexes) {
            apply_layer(&mut self.maps, self.layers.len() as u32, &index);
            self.layers.push(ViewLayer { row, index });
        }
    }

    /// The view of the chain's commit with file table `files`.
    fn view(&self, files: Vec<FileRow>, cache: Arc<LayerCache>) -> ReadView {
        let mut maps = self.maps.clone();
        ReadView {
            commit: self.commit.clone(),
            files: ReadView::files_from(files, &mut maps),
            layers: self.layers.clone(),
            cache,
        }
    }

    /// The layers the chain's extent maps point into, oldest first.
    pub fn layers(&self) -> &[ViewLayer] {
        &self.layers
    }

    /// Whether the chain grew, by [`advance`](Self::advance), past what a build from scratch
    /// costs (at least 64 layers): then it is better built whole again, which also drops what
    /// a `merge` since has replaced.
    pub fn grown(&self) -> bool {
        self.layers.len() - self.built_with > self.built_with.max(64)
    }

    /// The view of `commit`, a descendant of the chain's commit on its first-parent line, and
    /// its chain: this chain with the layers of the commits in between applied on top, exactly
    /// what a build from scratch reads (the view is the same). `None` when `commit` does not
    /// descend from the chain's commit, or an image layer (a merge) lies in between: build it
    /// whole.
    pub async fn advance(
        &self,
        catalog: &DynCatalog,
        cache: Arc<LayerCache>,
        commit: Commit,
    ) -> Result<Option<(ReadView, ViewChain)>> {
        let steps = commit.depth - self.commit.depth;
        let Some(rows) = catalog
            .chain_layers_since(&commit.id, &self.commit.id, steps)
            .await?
        else {
            return Ok(None);
        };
        if rows.iter().any(|l| l.kind == LayerKind::Image) {
            return Ok(None);
        }
        let files = catalog.commit_files(&commit.id).await?;
        let indexes = footers(&cache, &rows).await?;
        let mut next = ViewChain {
            commit,
            maps: self.maps.clone(),
            layers: self.layers.clone(),
            built_with: self.built_with,
        };
        next.apply(rows, indexes);
        Ok(Some((next.view(files, cache), next)))
    }
}

/// Most bytes one bulk request fetches from the store.
const BULK_MAX: u64 = 8 << 20;

/// A stretch of a file for a bulk pass (export, import's comparison).
#[derive(Debug, Clone)]
pub enum BulkChunk {
    /// Whole extents stored back to back in one layer object (in file order, possibly with holes
    /// between them in the file): fetched in one request and verified extent by extent from those
    /// bytes, bypassing the extent cache.
    Run {
        layer: u32,
        obj_off: u64,
        len: u64,
        /// (file offset, length, crc32c) of each extent, in order.
        parts: Vec<(u64, u32, u32)>,
    },
    /// Anything else (part of an extent, bytes in memory): read through the cache.
    Piece { file_off: u64, piece: Piece },
}

impl BulkChunk {
    /// Length in bytes of what is fetched (never zero: extent maps hold no empty pieces).
    pub fn byte_len(&self) -> u64 {
        match self {
            BulkChunk::Run { len, .. } => *len,
            BulkChunk::Piece { piece, .. } => piece.len,
        }
    }

    /// Where the fetched bytes go: (file offset, offset in the fetched bytes, length).
    pub fn placements(&self) -> Vec<(u64, usize, usize)> {
        match self {
            BulkChunk::Run { parts, .. } => {
                let mut at = 0;
                parts
                    .iter()
                    .map(|&(file_off, len, _)| {
                        let p = (file_off, at, len as usize);
                        at += len as usize;
                        p
                    })
                    .collect()
            }
            BulkChunk::Piece { file_off, piece } => vec![(*file_off, 0, piece.len as usize)],
        }
    }
}

impl ReadView {
    /// The covered parts of `[off, end)` of `file` as bulk chunks, in file order (holes omitted).
    pub fn bulk_chunks(&self, file: &FileView, off: u64, end: u64) -> Vec<BulkChunk> {
        let mut out: Vec<BulkChunk> = Vec::new();
        for (start, piece) in file.map.range(off, end.min(file.size)) {
            if let Source::Layer {
                layer,
                data_off,
                ext_len,
                crc,
                skip: 0,
            } = piece.src
            {
                if piece.len == ext_len as u64 {
                    if let Some(BulkChunk::Run {
                        layer: run_layer,
                        obj_off,
                        len,
                        parts,
                    }) = out.last_mut()
                    {
                        if *run_layer == layer
                            && *obj_off + *len == data_off
                            && *len + piece.len <= BULK_MAX
                        {
                            *len += piece.len;
                            parts.push((start, ext_len, crc));
                            continue;
                        }
                    }
                    out.push(BulkChunk::Run {
                        layer,
                        obj_off: data_off,
                        len: piece.len,
                        parts: vec![(start, ext_len, crc)],
                    });
                    continue;
                }
            }
            out.push(BulkChunk::Piece {
                file_off: start,
                piece,
            });
        }
        out
    }

    /// The bytes of `chunk`, in `buf` (resized to the chunk's length and handed back).
    pub async fn fetch_chunk(&self, chunk: &BulkChunk, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        buf.resize(chunk.byte_len() as usize, 0);
        match chunk {
            BulkChunk::Piece { piece, .. } => {
                self.piece_bytes(piece, &mut buf).await?;
                Ok(buf)
            }
            BulkChunk::Run {
                layer,
                obj_off,
                parts,
                ..
            } => {
                let key = self.layer_key(*layer)?;
                let buf = self
                    .cache
                    .store()
                    .read_into(key, *obj_off, buf)
                    .await
                    .map_err(|e| match e {
                        crate::store::StoreError::Io { source, .. }
                            if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                        {
                            Error::Corrupt(format!(
                                "layer object {key}: shorter than its index says"
                            ))
                        }
                        e => e.into(),
                    })?;
                verify_run(key, *obj_off, parts, &buf)?;
                Ok(buf)
            }
        }
    }

    /// The object key of layer `layer` of this view.
    pub fn layer_key(&self, layer: u32) -> Result<&str> {
        self.layers
            .get(layer as usize)
            .map(|l| l.row.object_key.as_str())
            .ok_or_else(|| Error::Corrupt(format!("extent refers to missing layer {layer}")))
    }

    /// The store the view reads from.
    pub fn store(&self) -> &crate::store::DynStore {
        self.cache.store()
    }

    /// Reads `[off, off + dst.len())` of `file` into `dst` like [`read`](Self::read), for
    /// sequential whole-file passes: contiguous extents come in one store request each through
    /// `scratch` instead of the extent cache. Returns how many bytes lie within the file.
    pub async fn read_bulk(
        &self,
        file: &FileView,
        off: u64,
        dst: &mut [u8],
        scratch: &mut Vec<u8>,
    ) -> Result<usize> {
        let end = (off + dst.len() as u64).min(file.size);
        dst.fill(0);
        if off >= end {
            return Ok(0);
        }
        for chunk in self.bulk_chunks(file, off, end) {
            let bytes = self.fetch_chunk(&chunk, std::mem::take(scratch)).await?;
            for (file_off, from, len) in chunk.placements() {
                let at = (file_off - off) as usize;
                dst[at..at + len].copy_from_slice(&bytes[from..from + len]);
            }
            *scratch = bytes;
        }
        Ok((end - off) as usize)
    }
}

/// Checks the crc32c of each extent of a [`BulkChunk::Run`] of object `key` against `bytes`, the
/// run's bytes (which start at `obj_off` in the object).
pub fn verify_run(key: &str, obj_off: u64, parts: &[(u64, u32, u32)], bytes: &[u8]) -> Result<()> {
    let mut at = 0usize;
    let mut data_off = obj_off;
    for &(_, len, crc) in parts {
        let entry = crate::layer::ExtentEntry {
            offset: 0,
            len,
            data_off,
            crc,
        };
        let ext = bytes.get(at..at + len as usize).ok_or_else(|| {
            Error::Corrupt(format!("layer object {key}: shorter than its index says"))
        })?;
        crate::layer::verify_extent(&entry, ext).map_err(|e| {
            Error::Corrupt(format!(
                "layer object {key}: extent at object offset {data_off}: {e}"
            ))
        })?;
        at += len as usize;
        data_off += len as u64;
    }
    Ok(())
}

/// Copies the bytes of `piece` (whose layer numbers index `layers`) into `dst`.
pub async fn piece_bytes(
    cache: &LayerCache,
    layers: &[ViewLayer],
    piece: &Piece,
    dst: &mut [u8],
) -> Result<()> {
    match &piece.src {
        Source::Mem { buf, .. } => dst.copy_from_slice(&buf[..dst.len()]),
        Source::Layer {
            layer,
            data_off,
            ext_len,
            crc,
            skip,
        } => {
            let l = layers
                .get(*layer as usize)
                .ok_or_else(|| Error::Corrupt(format!("extent refers to missing layer {layer}")))?;
            let bytes = cache
                .extent(&l.row.object_key, *data_off, *ext_len, *crc)
                .await?;
            let from = *skip as usize;
            let src = bytes.get(from..from + dst.len()).ok_or_else(|| {
                Error::Corrupt(format!(
                    "layer object {}: extent shorter than its index says",
                    l.row.object_key
                ))
            })?;
            dst.copy_from_slice(src);
        }
    }
    Ok(())
}
