//! `merge` and `gc`: bound read amplification and prune what nothing needs, beside live mounts.
//!
//! Both only add objects and change catalog rows in single transactions. Objects are deleted only
//! after a layer has been *doomed* (nothing needed it) for longer than the grace period, so a
//! reader that resolved its layers before the mark still reads; superseded layers (replaced by a
//! merge) stay live while any mount that started before the merge is alive. See
//! `docs/merge-and-gc.md` for the safety argument.

use super::extent_map::{ExtentMap, Source};
use super::session::SessionHandle;
use super::view::{piece_bytes, ViewLayer};
use super::{now_millis, Engine};
use crate::catalog::{Commit, CommitKind, GcSnapshot, LayerRow, Millis, Repo};
use crate::error::Result;
use crate::layer::{LayerIndex, LayerKind};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A head whose chain has more layers than this gets an image layer.
pub const IMAGE_THRESHOLD: usize = 4;
/// A pin or lease is alive while its heartbeat is younger than this (or the grace, if longer).
pub const HEARTBEAT_STALE_MS: i64 = 30_000;
/// A session (a mount, an import, a merge) whose heartbeat stopped keeps what it registered this
/// long (or the grace, if longer): gc cannot tell a dead host from one cut off for a while, so
/// it keeps the layers. A session of this machine is judged by its process instead.
pub const SESSION_EXPIRY_MS: i64 = 10 * 60 * 1000;
/// gc moves layers kept in the catalog into the store once they are this old (a live mount moves
/// its own within seconds).
const INLINE_SPILL_AGE_MS: i64 = 60_000;

/// Whether the holder of a session or pin whose last heartbeat was at `heartbeat_at` (server
/// clock) may still read: its process runs on this machine, or, unless it is a dead process of
/// this machine, its heartbeat is younger than `keep_ms`.
pub fn holder_alive(holder: &str, heartbeat_at: Millis, server_now: Millis, keep_ms: i64) -> bool {
    if crate::process::holder_is_dead(holder) {
        return false;
    }
    server_now - heartbeat_at <= keep_ms || crate::process::holder_runs_here(holder)
}
/// Commits whose segments `merge` merges at once.
const MERGE_CONCURRENCY: usize = 8;
/// Pages of zeros are left out of image and merged layers.
const PAGE: usize = 4096;

/// What `merge` did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MergeReport {
    /// Commits whose delta segments were merged into one layer: (commit, layers before).
    pub merged_segments: Vec<(String, usize)>,
    /// Commits that got an image layer: (commit, chain layers before).
    pub images: Vec<(String, usize)>,
    pub bytes_written: u64,
}

/// What `gc` did (or would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Layers kept in the catalog that gc moved into the store.
    pub inline_moved: usize,
    pub readable_commits: usize,
    pub expired_commits: usize,
    pub images_written: usize,
    pub live_layers: usize,
    pub newly_doomed: usize,
    pub revived: usize,
    pub deleted_layers: usize,
    pub deleted_bytes: u64,
    pub waiting_layers: usize,
    pub waiting_bytes: u64,
    pub orphans_deleted: usize,
    pub orphan_bytes: u64,
    /// Unreferenced objects kept because they cannot be proven to be this catalog's own (they
    /// were in the store before it was bound to this catalog).
    pub unproven_objects: usize,
}

/// A layer's extents with file truncations, folded from several layers.
struct Folded {
    maps: BTreeMap<u64, (ExtentMap, Option<u64>, u64)>,
}

impl Folded {
    fn new() -> Folded {
        Folded {
            maps: BTreeMap::new(),
        }
    }

    /// Applies a delta layer (numbered `no` in the layer table) on top.
    fn apply(&mut self, no: u32, index: &LayerIndex) {
        for f in &index.files {
            let (map, trunc, size) = self
                .maps
                .entry(f.file_id)
                .or_insert_with(|| (ExtentMap::new(), None, 0));
            if let Some(t) = f.truncate_to {
                map.truncate(t);
                *trunc = Some(trunc.map_or(t, |old: u64| old.min(t)));
            }
            for e in &f.extents {
                map.insert(
                    e.offset,
                    e.len as u64,
                    Source::Layer {
                        layer: no,
                        data_off: e.data_off,
                        ext_len: e.len,
                        crc: e.crc,
                        skip: 0,
                    },
                );
            }
            *size = f.size;
        }
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

impl Engine {
    /// Writes a layer of `kind` holding, per file id, (truncate_to, size, map) with bytes read
    /// through `layers`; an image leaves zero pages out. Stores it and returns its (unregistered)
    /// row.
    async fn write_folded(
        &self,
        session: &SessionHandle,
        repo_id: i64,
        kind: LayerKind,
        files: &BTreeMap<u64, (ExtentMap, Option<u64>, u64)>,
        layers: &[ViewLayer],
    ) -> Result<LayerRow> {
        let mut out = self.sink().begin(kind, session.layer_id())?;
        let w = out.writer();
        let mut buf = Vec::new();
        for (&file_id, (map, trunc, size)) in files {
            w.begin_file(file_id, *trunc, *size)?;
            for (off, piece) in map.iter() {
                if off >= *size {
                    break;
                }
                let len = piece.len.min(size - off) as usize;
                buf.resize(piece.len as usize, 0);
                piece_bytes(&self.layers, layers, piece, &mut buf).await?;
                // A delta must keep zeros: they hide older bytes. An image replaces everything,
                // so its zero pages read the same as holes and are left out.
                if kind == LayerKind::Delta {
                    w.add_extent(off, &buf[..len])?;
                    continue;
                }
                // Write runs of non-zero pages (page grid relative to the piece).
                let mut p = 0;
                while p < len {
                    let end = (p + PAGE).min(len);
                    if is_zero(&buf[p..end]) {
                        p = end;
                        continue;
                    }
                    let mut run_end = end;
                    while run_end < len {
                        let e = (run_end + PAGE).min(len);
                        if is_zero(&buf[run_end..e]) {
                            break;
                        }
                        run_end = e;
                    }
                    w.add_extent(off + p as u64, &buf[p..run_end])?;
                    p = run_end;
                }
            }
        }
        let mut row = self.sink().store(out, repo_id).await?.row;
        // The merged layer covers the time range of what it replaces (time travel by date).
        if let Some(t) = layers.iter().map(|l| l.row.min_time).min() {
            row.min_time = t;
        }
        if let Some(t) = layers.iter().map(|l| l.row.max_time).max() {
            row.max_time = t;
        }
        Ok(row)
    }

    /// Writes and registers an image layer holding every file of `commit` in full.
    pub async fn write_image(&self, session: &SessionHandle, commit: &Commit) -> Result<LayerRow> {
        let view = self.view(commit).await?;
        let files: BTreeMap<u64, (ExtentMap, Option<u64>, u64)> = view
            .files
            .values()
            .map(|f| (f.file_id, (f.map.clone(), None, f.size)))
            .collect();
        let row = self
            .write_folded(
                session,
                commit.repo_id,
                LayerKind::Image,
                &files,
                &view.layers,
            )
            .await?;
        Ok(self.catalog.add_layer(&commit.id, row).await?)
    }

    /// Merges the delta segments of one commit into one layer.
    /// Folds consecutive delta layers (oldest first) into one delta layer, written and stored
    /// under `session` (not registered): later writes win, truncations and zeros are kept.
    pub async fn fold_layers(
        &self,
        session: &SessionHandle,
        repo_id: i64,
        rows: Vec<LayerRow>,
    ) -> Result<(LayerRow, Vec<String>)> {
        // The footers are fetched at once (each is a round trip to a remote store), applied in
        // order.
        let indexes = futures::future::try_join_all(
            rows.iter()
                .map(|row| self.layers.index(&row.object_key, row.size_bytes as u64)),
        )
        .await?;
        let mut layers = Vec::new();
        let mut folded = Folded::new();
        for (row, index) in rows.into_iter().zip(indexes) {
            folded.apply(layers.len() as u32, &index);
            layers.push(ViewLayer { row, index });
        }
        let new = self
            .write_folded(session, repo_id, LayerKind::Delta, &folded.maps, &layers)
            .await?;
        Ok((new, layers.into_iter().map(|l| l.row.id).collect()))
    }

    async fn merge_segments(
        &self,
        session: &SessionHandle,
        commit: &Commit,
        rows: Vec<LayerRow>,
    ) -> Result<u64> {
        let (new, old) = self.fold_layers(session, commit.repo_id, rows).await?;
        let bytes = new.size_bytes as u64;
        self.catalog
            .replace_layers(&commit.id, &old, new, now_millis())
            .await?;
        Ok(bytes)
    }

    /// Compacts the database's layers: merges each commit's delta segments into one layer and
    /// writes image layers for heads (branches, tags) whose chains are long.
    pub async fn merge(
        &self,
        repo: &Repo,
        dry_run: bool,
        progress: &indicatif::ProgressBar,
    ) -> Result<MergeReport> {
        // The layers it writes are its session's until their catalog rows exist.
        let session = self.open_session(repo.id, "merge").await?;
        let r = self.merge_in(&session, repo, dry_run, progress).await;
        session.close().await;
        r
    }

    async fn merge_in(
        &self,
        session: &SessionHandle,
        repo: &Repo,
        dry_run: bool,
        progress: &indicatif::ProgressBar,
    ) -> Result<MergeReport> {
        let mut report = MergeReport::default();
        let commits = self.reachable_commits(repo).await?;
        progress.set_length(commits.len() as u64);
        // Commits are merged independently of each other (each its own layers, its own catalog
        // transaction), several at a time: each one waits on the store's round trips (footers,
        // extents, the upload), which a distant store makes long. Reported in commit order.
        let merges = futures::stream::iter(
            commits
                .iter()
                .filter(|c| c.repo_id == repo.id && c.expired_at.is_none()),
        )
        .map(|c| async move {
            let rows = self.catalog.commit_layers(&c.id).await?;
            let segments = rows.iter().filter(|l| l.kind == LayerKind::Delta).count();
            let mut merged = None;
            if segments > 1 && rows.iter().all(|l| l.kind == LayerKind::Delta) {
                let bytes = if dry_run {
                    0
                } else {
                    self.merge_segments(session, c, rows).await?
                };
                merged = Some((c.id.clone(), segments, bytes));
            }
            progress.inc(1);
            Ok::<_, crate::error::Error>(merged)
        })
        .buffered(MERGE_CONCURRENCY);
        futures::pin_mut!(merges);
        while let Some(merged) = merges.next().await {
            if let Some((id, segments, bytes)) = merged? {
                report.merged_segments.push((id, segments));
                report.bytes_written += bytes;
            }
        }
        let merged: HashSet<&str> = report
            .merged_segments
            .iter()
            .map(|(c, _)| c.as_str())
            .collect();
        let mut heads = BTreeSet::new();
        for r in self.catalog.refs(repo.id).await? {
            heads.insert(r.commit_id);
        }
        for id in heads {
            let c = self.commit(&id).await?;
            let chain = self.catalog.chain_layers(&c.id).await?;
            let from_image = chain
                .iter()
                .rposition(|l| l.kind == LayerKind::Image)
                .unwrap_or(0);
            // A dry run merged no segments: count each commit whose segments a real run merges
            // as the one layer it would have, so both runs announce the same images.
            let mut seen = BTreeSet::new();
            let depth = chain[from_image..]
                .iter()
                .filter(|l| match &l.commit_id {
                    Some(c) if dry_run && merged.contains(c.as_str()) => seen.insert(c.clone()),
                    _ => true,
                })
                .count();
            if depth > IMAGE_THRESHOLD {
                report.images.push((c.id.clone(), depth));
                if !dry_run {
                    report.bytes_written += self.write_image(session, &c).await?.size_bytes as u64;
                }
            }
        }
        Ok(report)
    }

    /// Prunes what nothing needs. See the module documentation and `docs/merge-and-gc.md`.
    pub async fn gc(
        &self,
        retain_ms: i64,
        grace_ms: i64,
        dry_run: bool,
        progress: &indicatif::ProgressBar,
    ) -> Result<GcReport> {
        let now = now_millis();
        let mut report = GcReport::default();
        if !dry_run {
            // Layers left in the catalog by mounts that did not move them (a dead mount).
            report.inline_moved = super::inline::spill(
                &self.catalog,
                &self.store,
                now - super::inline::spill_after_ms(INLINE_SPILL_AGE_MS),
                100_000,
            )
            .await?;
        }
        let mut snap = self.catalog.gc_snapshot().await?;
        let readable = readable_commits(&snap, now, retain_ms, grace_ms);
        report.readable_commits = readable.len();

        // Images at the retention boundary let older deltas go (written under a session of
        // this gc, so a gc running beside it never takes them for orphans).
        let mut session: Option<SessionHandle> = None;
        if !dry_run {
            let by_id: HashMap<&str, &Commit> =
                snap.commits.iter().map(|c| (c.id.as_str(), c)).collect();
            let mut order: Vec<&Commit> = readable
                .iter()
                .filter_map(|id| by_id.get(id.as_str()).copied())
                .collect();
            order.sort_by_key(|c| c.depth);
            let mut imaged: HashSet<String> = HashSet::new();
            let chains = Chains::new(&snap);
            for c in order {
                let chain = chains.needed(&c.id, &imaged);
                let reaches_expired = chain.iter().any(|(owner, _)| !readable.contains(owner));
                if reaches_expired {
                    let session = match &session {
                        Some(s) => s,
                        None => session.insert(self.open_session(0, "gc").await?),
                    };
                    self.write_image(session, c).await?;
                    imaged.insert(c.id.clone());
                    report.images_written += 1;
                }
            }
            if report.images_written > 0 {
                snap = self.catalog.gc_snapshot().await?;
            }
        }

        // Live layers: what readable commits need, pending segments, and every layer a live
        // session (a mount, an import, a merge) registered as one it reads. That is the whole
        // rule: a mount that started before a merge registered the layers the merge replaced.
        let mut live: HashSet<String> = HashSet::new();
        let chains = Chains::new(&snap);
        for id in &readable {
            for (_, layer) in chains.needed(id, &HashSet::new()) {
                live.insert(layer);
            }
        }
        let keep_ms = grace_ms.max(SESSION_EXPIRY_MS);
        let live_sessions: HashSet<&str> = snap
            .sessions
            .iter()
            .filter(|s| holder_alive(&s.holder, s.heartbeat_at, snap.server_now, keep_ms))
            .map(|s| s.id.as_str())
            .collect();
        for (session, layer) in &snap.session_layers {
            if live_sessions.contains(session.as_str()) {
                live.insert(layer.clone());
            }
        }
        // A session also holds the layers it wrote: their ids start with its id.
        for l in &snap.layers {
            if l.row
                .id
                .get(..16)
                .is_some_and(|p| live_sessions.contains(p))
            {
                live.insert(l.row.id.clone());
            }
        }
        for l in &snap.layers {
            // Pending segments (compacted ones are superseded: their writer registered them).
            if l.row.commit_id.is_none() && l.superseded_at.is_none() {
                live.insert(l.row.id.clone());
            }
        }
        let dead_sessions: Vec<String> = snap
            .sessions
            .iter()
            .filter(|s| !live_sessions.contains(s.id.as_str()))
            .map(|s| s.id.clone())
            .collect();
        report.live_layers = live.len();

        let mut doom = Vec::new();
        let mut revive = Vec::new();
        let mut delete: Vec<&crate::catalog::GcLayer> = Vec::new();
        for l in &snap.layers {
            match (live.contains(&l.row.id), l.doomed_at) {
                (true, Some(_)) => revive.push(l.row.id.clone()),
                (false, None) => doom.push(l.row.id.clone()),
                (false, Some(at)) if now - at >= grace_ms => delete.push(l),
                (false, Some(_)) => {
                    report.waiting_layers += 1;
                    report.waiting_bytes += l.row.size_bytes as u64;
                }
                (true, None) => {}
            }
        }
        report.newly_doomed = doom.len();
        report.revived = revive.len();
        report.deleted_layers = delete.len();
        report.deleted_bytes = delete.iter().map(|l| l.row.size_bytes as u64).sum();
        // Newly doomed layers wait for the grace period like the others.
        if grace_ms <= 0 {
            report.deleted_layers += doom.len();
            report.deleted_bytes += snap
                .layers
                .iter()
                .filter(|l| doom.contains(&l.row.id))
                .map(|l| l.row.size_bytes as u64)
                .sum::<u64>();
        } else {
            report.waiting_layers += doom.len();
            report.waiting_bytes += snap
                .layers
                .iter()
                .filter(|l| doom.contains(&l.row.id))
                .map(|l| l.row.size_bytes as u64)
                .sum::<u64>();
        }
        let expired: Vec<String> = snap
            .commits
            .iter()
            .filter(|c| c.expired_at.is_none() && !readable.contains(&c.id))
            .map(|c| c.id.clone())
            .collect();
        report.expired_commits = expired.len();

        // Objects no catalog row ever named (an upload whose transaction never happened). A
        // layer kept in the catalog may be being moved into the store: its `layers/ID` is known.
        let known_ids: HashSet<&str> = snap.layers.iter().map(|l| l.row.id.as_str()).collect();
        let mut known: HashSet<&str> = snap
            .layers
            .iter()
            .map(|l| l.row.object_key.as_str())
            .collect();
        let moved_keys: Vec<String> = known_ids.iter().map(|id| format!("layers/{id}")).collect();
        known.extend(moved_keys.iter().map(String::as_str));
        let objects = self.store.list("layers/").await?;
        // Only objects provably this catalog's own (see `binding`): never another catalog's.
        // An upload in flight: its layer id starts with the id of the live session writing it.
        let in_flight = |key: &str| {
            key.strip_prefix("layers/")
                .and_then(|id| id.get(..16))
                .is_some_and(|p| live_sessions.contains(p))
        };
        let (orphans, unproven): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .filter(|o| {
                !known.contains(o.key.as_str())
                    && !in_flight(&o.key)
                    && now - o.modified.timestamp_millis() >= grace_ms
            })
            .partition(|o| match &self.ownership {
                super::Ownership::Trusted => true,
                super::Ownership::Bound(b) => b.owns(o),
                super::Ownership::Unchecked => false,
            });
        report.unproven_objects = unproven.len();
        report.orphans_deleted = orphans.len();
        report.orphan_bytes = orphans.iter().map(|o| o.size).sum();
        if dry_run {
            return Ok(report);
        }
        // The store must still be this catalog's when anything is deleted from it.
        if let super::Ownership::Bound(b) = &self.ownership {
            super::binding::recheck(&self.store, b).await?;
        }

        // Sessions that are gone let go of what they registered before anything is doomed,
        // so one pass converges.
        for id in &dead_sessions {
            self.catalog.close_session(id).await?;
        }
        self.catalog.set_doomed(&revive, None).await?;
        self.catalog.set_doomed(&doom, Some(now)).await?;
        self.catalog.expire_commits(&expired, now).await?;
        let mut victims: Vec<(String, String)> = delete
            .iter()
            .map(|l| (l.row.id.clone(), l.row.object_key.clone()))
            .collect();
        if grace_ms <= 0 {
            victims.extend(
                snap.layers
                    .iter()
                    .filter(|l| doom.contains(&l.row.id))
                    .map(|l| (l.row.id.clone(), l.row.object_key.clone())),
            );
        }
        progress.set_length((victims.len() + orphans.len()) as u64);
        // Forget the rows first (a layer a session registered meanwhile keeps its row and its
        // object), then delete the objects of the rows that went.
        let ids: Vec<String> = victims.iter().map(|(id, _)| id.clone()).collect();
        let gone: HashSet<String> = self
            .catalog
            .delete_layers(&ids)
            .await?
            .into_iter()
            .collect();
        for (id, key) in &victims {
            if gone.contains(id) {
                self.store.delete(key).await?;
            }
            progress.inc(1);
        }
        for o in &orphans {
            self.store.delete(&o.key).await?;
            progress.inc(1);
        }
        if let Some(s) = session {
            s.close().await;
        }
        Ok(report)
    }
}

/// Commits that must stay readable: ref heads, everything a branch pointed to or a commit made
/// inside the retention window, clone sources and pinned commits (fresh heartbeat).
pub fn readable_commits(
    snap: &GcSnapshot,
    now: Millis,
    retain_ms: i64,
    grace_ms: i64,
) -> HashSet<String> {
    let since = now - retain_ms;
    let mut keep: HashSet<String> = snap.refs.iter().map(|r| r.commit_id.clone()).collect();
    // Where each branch pointed at the start of the window, and every move inside it.
    let mut at_start: HashMap<(i64, &str), (Millis, Option<&String>)> = HashMap::new();
    for (repo, e) in &snap.reflog {
        if e.at >= since {
            if let Some(c) = &e.new_commit {
                keep.insert(c.clone());
            }
        } else {
            let slot = at_start
                .entry((*repo, e.branch.as_str()))
                .or_insert((Millis::MIN, None));
            if e.at >= slot.0 {
                *slot = (e.at, e.new_commit.as_ref());
            }
        }
    }
    keep.extend(at_start.into_values().filter_map(|(_, c)| c.cloned()));
    for c in &snap.commits {
        if c.created_at >= since && c.expired_at.is_none() {
            keep.insert(c.id.clone());
        }
        if c.kind == CommitKind::Clone {
            if let Some(p) = &c.parent_id {
                keep.insert(p.clone());
            }
        }
    }
    for p in &snap.pins {
        let keep_ms = grace_ms.max(SESSION_EXPIRY_MS);
        if holder_alive(&p.holder, p.heartbeat_at, snap.server_now, keep_ms) {
            keep.insert(p.commit_id.clone());
        }
    }
    // Only commits that exist.
    let exists: HashSet<&str> = snap.commits.iter().map(|c| c.id.as_str()).collect();
    keep.retain(|c| exists.contains(c.as_str()));
    keep
}

/// Commits and their current (not superseded) layers in `seq` order, indexed once per snapshot.
struct Chains<'a> {
    commits: HashMap<&'a str, &'a Commit>,
    layers: HashMap<&'a str, Vec<&'a crate::catalog::GcLayer>>,
}

impl<'a> Chains<'a> {
    fn new(snap: &'a GcSnapshot) -> Chains<'a> {
        let commits = snap.commits.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut layers: HashMap<&str, Vec<&crate::catalog::GcLayer>> = HashMap::new();
        for l in &snap.layers {
            if let (Some(c), None) = (&l.row.commit_id, l.superseded_at) {
                layers.entry(c.as_str()).or_default().push(l);
            }
        }
        for ls in layers.values_mut() {
            ls.sort_by_key(|l| l.row.seq);
        }
        Chains { commits, layers }
    }

    /// The layers reading `id` needs, as (owning commit, layer id), newest commit first: down to
    /// and including the nearest image (or stopping at a commit in `imaged`, which has one now).
    fn needed(&self, id: &str, imaged: &HashSet<String>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut cur = Some(id);
        let mut seen = HashSet::new();
        while let Some(cid) = cur {
            if !seen.insert(cid) || (imaged.contains(cid) && cid != id) {
                break;
            }
            let ls = self.layers.get(cid).map(Vec::as_slice).unwrap_or_default();
            if let Some(img) = ls.iter().rev().find(|l| l.row.kind == LayerKind::Image) {
                out.push((cid.to_string(), img.row.id.clone()));
                break;
            }
            out.extend(ls.iter().map(|l| (cid.to_string(), l.row.id.clone())));
            cur = self.commits.get(cid).and_then(|c| c.parent_id.as_deref());
        }
        out
    }
}
