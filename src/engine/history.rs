//! History operations beyond commits: zero-copy clones, diffs computed from extent maps, and
//! verification of every stored byte against its checksums.

use super::extent_map::{ExtentMap, Source};
use super::layers::LayerCache;
use super::view::ReadView;
use super::{new_id, now_millis, short, Engine};
use crate::catalog::{CommitKind, LayerRow, NewCommit, Repo};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How one file differs between two revisions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileDiff {
    pub name: String,
    /// None when the file does not exist on that side.
    pub old_size: Option<u64>,
    pub new_size: Option<u64>,
    /// Ranges `[start, end)` of the new side whose bytes come from different storage than the old
    /// (zeros from growth are not changed bytes; the sizes show them).
    pub ranges: Vec<(u64, u64)>,
    pub changed_bytes: u64,
}

/// What a byte position refers to: a byte of a stored object, a hole, or nothing (past the end).
#[derive(Debug, PartialEq, Eq, Clone)]
enum Ident {
    Byte(String, u64),
    Mem,
    Hole,
    Absent,
}

fn ident_at(view: &ReadView, map: Option<(&ExtentMap, u64)>, x: u64) -> Ident {
    let Some((map, size)) = map else {
        return Ident::Absent;
    };
    if x >= size {
        return Ident::Absent;
    }
    match map.range(x, x + 1).into_iter().next() {
        Some((_, p)) => match p.src {
            Source::Layer {
                layer,
                data_off,
                skip,
                ..
            } => match view.layers.get(layer as usize) {
                Some(l) => Ident::Byte(l.row.id.clone(), data_off + skip as u64),
                None => Ident::Mem,
            },
            Source::Mem { .. } => Ident::Mem,
        },
        None => Ident::Hole,
    }
}

/// Per-file differences between two views, from their extent maps alone (no data is read).
/// Bytes stored in different places count as changed even if equal.
pub fn diff_views(old: &ReadView, new: &ReadView) -> Vec<FileDiff> {
    let names: BTreeSet<&String> = old.files.keys().chain(new.files.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let a = old.files.get(name).map(|f| (&f.map, f.size));
        let b = new.files.get(name).map(|f| (&f.map, f.size));
        let mut cuts = BTreeSet::new();
        for (map, size) in [a, b].into_iter().flatten() {
            cuts.insert(0);
            cuts.insert(size);
            for (off, p) in map.iter() {
                cuts.insert(off);
                cuts.insert(off + p.len);
            }
        }
        let cuts: Vec<u64> = cuts.into_iter().collect();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for w in cuts.windows(2) {
            let (x, y) = (w[0], w[1]);
            let ia = ident_at(old, a, x);
            let ib = ident_at(new, b, x);
            // Growth that reads as zeros stores nothing: the size change reports it.
            let zero_growth = ia == Ident::Absent && ib == Ident::Hole;
            if ib == Ident::Absent || zero_growth || (ia == ib && ia != Ident::Mem) {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.1 == x => last.1 = y,
                _ => ranges.push((x, y)),
            }
        }
        let changed_bytes = ranges.iter().map(|(s, e)| e - s).sum();
        let old_size = a.map(|(_, s)| s);
        let new_size = b.map(|(_, s)| s);
        if changed_bytes > 0 || old_size != new_size {
            out.push(FileDiff {
                name: name.clone(),
                old_size,
                new_size,
                ranges,
                changed_bytes,
            });
        }
    }
    out
}

/// What `verify` checked.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub commits: usize,
    pub layers: usize,
    pub extents: u64,
    pub bytes: u64,
    /// Everything found wrong, each object or file once (empty: every byte checked out).
    pub damaged: Vec<Damage>,
}

/// One thing `verify` found wrong.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Damage {
    /// The layer object, or the commit whose file claims more bytes than its layers hold.
    pub what: String,
    pub problem: String,
}

impl Engine {
    /// Creates `name` as a zero-copy clone of `source` (its `main` starts there).
    pub async fn clone_repo(
        &self,
        source_repo: &Repo,
        source: &crate::catalog::Commit,
        name: &str,
    ) -> Result<Repo> {
        crate::names::validate_name("database", name)?;
        let root = NewCommit {
            id: new_id(),
            kind: CommitKind::Clone,
            message: format!("clone of {}@{}", source_repo.name, short(&source.id)),
            author: self.author.clone(),
            time: now_millis(),
            merge_parent: None,
        };
        let (repo, _) = self
            .catalog
            .create_clone(name, source, root)
            .await
            .map_err(|e| match e {
                crate::catalog::CatalogError::Exists { .. } => Error::RepoExists(name.to_string()),
                other => other.into(),
            })?;
        Ok(repo)
    }

    /// Every commit reachable from the database's branches and tags.
    pub async fn reachable_commits(&self, repo: &Repo) -> Result<Vec<crate::catalog::Commit>> {
        let mut seen = BTreeMap::new();
        for r in self.catalog.refs(repo.id).await? {
            for c in self.catalog.ancestors(&r.commit_id, i64::MAX).await? {
                seen.entry(c.id.clone()).or_insert(c);
            }
        }
        Ok(seen.into_values().collect())
    }

    /// `id` and every commit it descends from, through first and second parents (one catalog
    /// query per first-parent chain).
    pub async fn ancestry(&self, id: &str) -> Result<BTreeMap<String, crate::catalog::Commit>> {
        let mut seen = BTreeMap::new();
        let mut todo = vec![id.to_string()];
        while let Some(start) = todo.pop() {
            if seen.contains_key(&start) {
                continue;
            }
            for c in self.catalog.ancestors(&start, i64::MAX).await? {
                if seen.contains_key(&c.id) {
                    break;
                }
                if let Some(p2) = &c.merge_parent_id {
                    todo.push(p2.clone());
                }
                seen.insert(c.id.clone(), c);
            }
        }
        Ok(seen)
    }

    /// The merge base of two commits: the newest commit both descend from (None: unrelated).
    pub async fn merge_base(
        &self,
        a: &crate::catalog::Commit,
        b: &crate::catalog::Commit,
    ) -> Result<Option<crate::catalog::Commit>> {
        let ours = self.ancestry(&a.id).await?;
        let theirs = self.ancestry(&b.id).await?;
        Ok(theirs
            .into_values()
            .filter(|c| ours.contains_key(&c.id))
            .max_by_key(|c| (c.created_at, c.depth)))
    }

    /// Re-reads every layer the given commits need, straight from the store, checking the footer
    /// checksum and every extent's checksum, and checks that every byte a commit claims (its
    /// files' sizes in the catalog) is backed by its layers (a size no layer wrote would read as
    /// zeros). Goes on past damage: every damaged object and file is in the report.
    pub async fn verify(
        &self,
        commits: &[crate::catalog::Commit],
        progress: &indicatif::ProgressBar,
    ) -> Result<VerifyReport> {
        let mut layers: BTreeMap<String, LayerRow> = BTreeMap::new();
        let mut chains = Vec::with_capacity(commits.len());
        for c in commits {
            let chain = self.catalog.chain_layers(&c.id).await?;
            // Readers start at the newest image layer (see `ReadView::open`).
            let start = chain
                .iter()
                .rposition(|l| l.kind == crate::layer::LayerKind::Image)
                .unwrap_or(0);
            let ids: Vec<String> = chain[start..].iter().map(|l| l.id.clone()).collect();
            for l in chain {
                layers.entry(l.id.clone()).or_insert(l);
            }
            chains.push((c, ids));
        }
        progress.set_length(layers.values().map(|l| l.size_bytes.max(0) as u64).sum());
        // A cache that keeps nothing: every byte comes from the store.
        let cache = Arc::new(LayerCache::new(self.store.clone(), 0));
        let mut report = VerifyReport {
            commits: commits.len(),
            layers: layers.len(),
            ..Default::default()
        };
        let mut indexes = BTreeMap::new();
        for l in layers.values() {
            let damage = |e: Error| Damage {
                what: l.object_key.clone(),
                problem: match e {
                    Error::Store(crate::store::StoreError::NotFound(_)) => {
                        "missing from the store".to_string()
                    }
                    other => other.to_string(),
                },
            };
            let index = match cache.index(&l.object_key, l.size_bytes as u64).await {
                Ok(ix) => ix,
                Err(e) => {
                    report.damaged.push(damage(e));
                    progress.inc(l.size_bytes.max(0) as u64);
                    continue;
                }
            };
            let mut intact = true;
            'files: for f in &index.files {
                for e in &f.extents {
                    if let Err(err) = cache.extent(&l.object_key, e.data_off, e.len, e.crc).await {
                        report.damaged.push(damage(err));
                        intact = false;
                        break 'files;
                    }
                    report.extents += 1;
                    report.bytes += e.len as u64;
                }
            }
            if intact {
                indexes.insert(l.id.clone(), index);
            }
            progress.inc(l.size_bytes.max(0) as u64);
        }
        // Sizes: the newest layer of the chain that touches a file says how big it is.
        for (c, ids) in chains {
            if ids.iter().any(|id| !indexes.contains_key(id)) {
                continue; // its damaged layers are reported already
            }
            for f in self.catalog.commit_files(&c.id).await? {
                let backed = ids
                    .iter()
                    .rev()
                    .find_map(|id| indexes.get(id)?.file(f.file_id as u64).map(|e| e.size))
                    .unwrap_or(0);
                if f.size.max(0) as u64 > backed {
                    report.damaged.push(Damage {
                        what: format!("commit {}", short(&c.id)),
                        problem: format!(
                            "{} claims {} bytes, but its layers hold only {backed}",
                            f.path, f.size
                        ),
                    });
                }
            }
        }
        Ok(report)
    }
}
