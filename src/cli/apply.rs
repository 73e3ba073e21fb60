use super::output::outln;
use super::output::{print_json, print_table, table};
use super::Ctx;
use quackfs::catalog::CommitKind;
use quackfs::engine::history::diff_views;
use quackfs::engine::import::ImportAs;
use quackfs::engine::{duckdb_file, export, now_millis, short};
use quackfs::error::{Error, Result};
use quackfs::fuse::snapshot::Snapshot;
use quackfs::rows::apply::{merge_file, FileMerge, Resolve, Sides};
use std::sync::Arc;

/// Bring the changes SOURCE made since the merge base onto a branch.
///
/// Fast-forward when the branch has not moved since the merge base (no rows touched). Otherwise
/// a three-way merge by rows, per table of each DuckDB file: by primary key (a row changed on
/// both sides to different values is a conflict), keyless tables as multisets of whole rows;
/// schema changes made on one side are applied, conflicting ones refuse the merge. Views and
/// indexes come along, sequences are advanced; a macro or type SOURCE changed refuses the merge
/// (make the same change on the branch first). With conflicts nothing is committed: they are
/// listed (base / ours / theirs). The result is one
/// commit with two parents (`REV^2` names SOURCE's head). Needs the duckdb CLI (or
/// QUACKFS_DUCKDB).
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The revision whose changes to bring in (a branch, tag or commit of the same database)
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The branch to apply them to [default: the current branch]
    #[arg(short = 'b', long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Show what would change; commit nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Resolve every conflicting row by keeping the branch's version
    #[arg(long, conflicts_with = "theirs")]
    pub ours: bool,
    /// Resolve every conflicting row by taking SOURCE's version
    #[arg(long)]
    pub theirs: bool,
    /// Message of the merge commit [default: "apply SOURCE onto BRANCH"]
    #[arg(short = 'm', long, value_name = "MSG")]
    pub message: Option<String>,
}

pub async fn run(ctx: &Ctx, a: ApplyArgs) -> Result<()> {
    let engine = Arc::new(ctx.engine().await?);
    let source = ctx.resolve_rev(&engine, Some(&a.source), None).await?;
    let repo = source.repo.clone();
    if let Some(current) = ctx.current_repo()? {
        if current != repo.name && a.source.contains('@') {
            return Err(Error::Invalid(format!(
                "apply brings changes within one database; {} is in {}, the branch in {current}",
                a.source, repo.name
            )));
        }
    }
    let branch = match &a.branch {
        Some(b) => b.clone(),
        None => ctx.current_branch(&repo.name)?,
    };
    let ours = engine.branch_head(&repo, &branch).await?;
    let theirs = source.commit.clone();
    let Some(base) = engine.merge_base(&ours, &theirs).await? else {
        return Err(Error::Refused(format!(
            "{} and {branch} have no commit in common",
            a.source
        )));
    };
    let resolve = match (a.ours, a.theirs) {
        (true, _) => Resolve::Ours,
        (_, true) => Resolve::Theirs,
        _ => Resolve::Refuse,
    };
    if base.id == theirs.id {
        if ctx.json {
            return print_json(&serde_json::json!({"result": "up-to-date", "head": ours.id}));
        }
        outln!("{branch} already has every change of {}", a.source);
        return Ok(());
    }
    if base.id == ours.id {
        if !a.dry_run {
            let reason = format!("apply {} (fast-forward)", a.source);
            engine
                .unless_dead_writer(repo.id, || {
                    engine.catalog.move_branch(
                        repo.id,
                        &branch,
                        Some(&ours.id),
                        &theirs.id,
                        &reason,
                        now_millis(),
                    )
                })
                .await?;
        }
        if ctx.json {
            return print_json(&serde_json::json!({
                "result": "fast-forward", "dry_run": a.dry_run, "from": ours.id, "to": theirs.id,
            }));
        }
        outln!(
            "{} {branch} from {} to {} (fast-forward: no rows touched)",
            if a.dry_run { "would move" } else { "moved" },
            short(&ours.id),
            short(&theirs.id)
        );
        return Ok(());
    }

    // A three-way merge of each database file the source changed.
    let vb = engine.view(&base).await?;
    let vo = engine.view(&ours).await?;
    let vt = engine.view(&theirs).await?;
    let theirs_changed = diff_views(&vb, &vt);
    let mut dbs: Vec<String> = Vec::new();
    for f in &theirs_changed {
        let db = duckdb_file::database_of_wal(&f.name)
            .map(str::to_string)
            .unwrap_or_else(|| f.name.clone());
        if !db.ends_with(".duckdb") {
            return Err(Error::Refused(format!(
                "{} changed {}, which is not a DuckDB database: apply merges databases by rows",
                a.source, f.name
            )));
        }
        if !dbs.contains(&db) {
            dbs.push(db);
        }
    }
    if dbs
        .iter()
        .any(|d| !vo.files.contains_key(d) && vb.files.contains_key(d) && vt.files.contains_key(d))
    {
        return Err(Error::MergeConflict(format!(
            "a database {} changed was removed on {branch}",
            a.source
        )));
    }
    let tmp = std::env::temp_dir();
    let sb = Snapshot::mount(engine.clone(), &repo, &base, &tmp).await?;
    let so = Snapshot::mount(engine.clone(), &repo, &ours, &tmp).await?;
    let st = Snapshot::mount(engine.clone(), &repo, &theirs, &tmp).await?;
    let sides = |ours_path: std::path::PathBuf, db: &str| Sides {
        base: vb.files.contains_key(db).then(|| sb.path(db)),
        ours: ours_path,
        theirs: vt.files.contains_key(db).then(|| st.path(db)),
    };
    let mut merges: Vec<FileMerge> = Vec::new();
    let mut analysis = Ok(());
    for db in &dbs {
        if !vo.files.contains_key(db) {
            // New on the source only: taken whole below.
            continue;
        }
        match merge_file(db, &sides(so.path(db), db), resolve, false).await {
            Ok(m) => merges.push(m),
            Err(e) => {
                analysis = Err(e);
                break;
            }
        }
    }
    let outcome = async {
        analysis?;
        report(ctx, &merges, a.dry_run, resolve)?;
        let schema_conflicts: Vec<&str> = merges
            .iter()
            .flat_map(|m| m.schema_conflicts.iter().map(String::as_str))
            .collect();
        let conflicts: i64 = merges.iter().map(|m| m.conflict_count()).sum();
        if !schema_conflicts.is_empty() {
            return Err(Error::MergeConflict(format!(
                "schema changes cannot be merged ({}); nothing was committed",
                schema_conflicts.join("; ")
            )));
        }
        if conflicts > 0 && resolve == Resolve::Refuse {
            return Err(Error::MergeConflict(format!(
                "{conflicts} row(s) changed differently on {branch} and {}; nothing was committed",
                a.source
            )));
        }
        if a.dry_run {
            return Ok(None);
        }
        // The result: the branch's files, each database merged in a private copy.
        let work = engine.tmp_dir.join(format!(
            "apply-{}-{}",
            std::process::id(),
            quackfs::engine::new_id()
        ));
        let _cleanup = RemoveOnDrop(work.clone());
        let pb = indicatif::ProgressBar::hidden();
        let r = async {
            export::export(&vo, &work, false, &pb).await?;
            let (mut paths, mut remove) = (Vec::new(), Vec::new());
            for db in &dbs {
                let path = work.join(db);
                if !vt.files.contains_key(db) {
                    // Removed by the source; the analysis found its tables unchanged on the
                    // branch (else a schema conflict refused the merge). Gone on both: nothing.
                    if vo.files.contains_key(db) {
                        remove.push(db.clone());
                    }
                    continue;
                }
                if vo.files.contains_key(db) {
                    merge_file(db, &sides(path.clone(), db), resolve, true).await?;
                } else {
                    std::fs::copy(st.path(db), &path).map_err(|e| Error::file(&path, e))?;
                }
                paths.push(path);
            }
            let message = a
                .message
                .clone()
                .unwrap_or_else(|| format!("apply {} onto {branch}", a.source));
            let how = ImportAs {
                kind: Some(CommitKind::Merge),
                expected_head: Some(ours.id.clone()),
                merge_parent: Some(theirs.id.clone()),
                remove,
            };
            engine
                .import_as(&repo, &branch, &paths, Some(&message), &pb, &how)
                .await
        }
        .await;
        r.map(Some)
    }
    .await;
    sb.close().await;
    so.close().await;
    st.close().await;
    let Some(done) = outcome? else {
        return Ok(());
    };
    match done.commit {
        Some(c) => {
            if ctx.json {
                return print_json(&serde_json::json!({
                    "result": "merged", "commit": c.id, "parents": [ours.id, theirs.id], "files": merges,
                }));
            }
            outln!(
                "{} (merge of {} into {branch}; parents {} and {})",
                c.id,
                a.source,
                short(&ours.id),
                short(&theirs.id)
            );
        }
        None => {
            if ctx.json {
                return print_json(&serde_json::json!({"result": "no-change", "head": ours.id}));
            }
            outln!("{branch} already holds the rows {} changed", a.source);
        }
    }
    Ok(())
}

/// Prints what the merge does per table, and the conflicts (JSON: the whole analysis, only for
/// a dry run or a refused merge; a committed one prints its result, so stdout holds one
/// document).
fn report(ctx: &Ctx, merges: &[FileMerge], dry_run: bool, resolve: Resolve) -> Result<()> {
    // Conflicts that refuse the merge (`--ours`/`--theirs` resolve rows, never schemas).
    let conflicted = merges.iter().any(|m| {
        (m.conflict_count() > 0 && resolve == Resolve::Refuse) || !m.schema_conflicts.is_empty()
    });
    if ctx.json {
        if dry_run || conflicted {
            print_json(&serde_json::json!({
                "result": if conflicted { "conflicts" } else { "dry-run" }, "files": merges,
            }))?;
        }
        return Ok(());
    }
    for m in merges {
        let mut t = table(&[
            "TABLE",
            "ACTION",
            "THEIRS +/-/~",
            "OURS +/-/~",
            "CONFLICTS",
            "SCHEMA",
        ]);
        for tm in &m.tables {
            if tm.theirs.total() == 0
                && tm.conflicts == 0
                && tm.schema.is_empty()
                && tm.action == "merged"
            {
                continue;
            }
            let c = |x: &quackfs::rows::apply::Counts| {
                format!("+{} -{} ~{}", x.inserted, x.deleted, x.updated)
            };
            t.add_row(vec![
                tm.table.clone(),
                tm.action.clone(),
                c(&tm.theirs),
                c(&tm.ours),
                tm.conflicts.to_string(),
                tm.schema.join("; "),
            ]);
        }
        outln!("{}:", m.file);
        print_table(&t)?;
        if !m.objects.is_empty() {
            outln!("also: {}", m.objects.join("; "));
        }
        for s in &m.schema_conflicts {
            outln!("schema conflict: {s}");
        }
        for c in &m.conflicts {
            outln!(
                "conflict in {} at {}: base {} / ours {} / theirs {}",
                c.table,
                serde_json::Value::Object(c.key.clone()),
                c.base,
                c.ours,
                c.theirs
            );
        }
        let total: u64 = m.tables.iter().map(|t| t.conflicts as u64).sum();
        if total > m.conflicts.len() as u64 {
            outln!(
                "... and {} more conflicting row(s) in {} (the first {} by key are listed)",
                total - m.conflicts.len() as u64,
                m.file,
                m.conflicts.len()
            );
        }
    }
    Ok(())
}

/// Removes a private work directory when dropped (also on an error or Ctrl-C).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
