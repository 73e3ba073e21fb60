use super::output::outln;
use super::output::{print_json, print_table, size, table};
use super::Ctx;
use quackfs::catalog::{Commit, Repo};
use quackfs::engine::history::{diff_views, FileDiff};
use quackfs::engine::{duckdb_file, short, Engine};
use quackfs::error::Result;
use quackfs::fuse::snapshot::Snapshot;
use quackfs::rows::{self, FileRows, RowDiffRequest};
use std::sync::Arc;

/// Show what changed between two revisions: per file from the extent maps (no data read), and
/// with --rows per table.
///
/// For each file: size change, number of changed ranges, bytes changed. With --rows (needs the
/// duckdb CLI on PATH, or QUACKFS_DUCKDB): per table of each DuckDB file, rows inserted, deleted
/// and updated (matched by primary key, else as a multiset of whole rows) and schema changes.
/// Both versions are read in place through read-only snapshot mounts; tables whose storage did
/// not change are not scanned.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The old side
    #[arg(value_name = "REV")]
    pub rev: String,
    /// The new side [default: the head of the current branch]
    #[arg(value_name = "REV2")]
    pub rev2: Option<String>,
    /// Compare rows, table by table (all tables, or only those named: NAME or SCHEMA.NAME)
    #[arg(long, value_name = "TABLE", num_args = 0.., value_delimiter = ',')]
    pub rows: Option<Vec<String>>,
    /// With --rows: up to N example rows per kind of change (shown with --json)
    #[arg(long, value_name = "N", default_value_t = 0, requires = "rows")]
    pub show: usize,
    /// With --rows: scan every table, also those whose storage is unchanged
    #[arg(long, requires = "rows")]
    pub scan_all: bool,
}

pub async fn run(ctx: &Ctx, a: DiffArgs) -> Result<()> {
    let engine = Arc::new(ctx.engine().await?);
    let old = ctx.resolve_rev(&engine, Some(&a.rev), None).await?;
    let rev2 = match &a.rev2 {
        Some(r) => r.clone(),
        None => format!("{}@{}", old.repo.name, ctx.current_branch(&old.repo.name)?),
    };
    let new = engine
        .resolve_spec(&ctx.parse_spec(&rev2, None)?, Some(&old.repo.name))
        .await?;
    let va = engine.view(&old.commit).await?;
    let vb = engine.view(&new.commit).await?;
    let files = diff_views(&va, &vb);
    let rows = match &a.rows {
        Some(only) => Some(
            row_diff(
                &engine,
                (&old.repo, &old.commit),
                (&new.repo, &new.commit),
                &files,
                only,
                a.show,
                a.scan_all,
            )
            .await?,
        ),
        None => None,
    };
    if ctx.json {
        return print_json(&serde_json::json!({
            "old": old.commit.id, "new": new.commit.id, "files": files, "rows": rows,
        }));
    }
    outln!("diff {} {}", short(&old.commit.id), short(&new.commit.id));
    if files.is_empty() {
        outln!("no file changed");
    } else {
        let mut t = table(&["FILE", "OLD SIZE", "NEW SIZE", "RANGES", "CHANGED"]);
        for f in &files {
            let sz = |s: Option<u64>| s.map(|s| size(s as i64)).unwrap_or_else(|| "-".into());
            t.add_row(vec![
                f.name.clone(),
                sz(f.old_size),
                sz(f.new_size),
                f.ranges.len().to_string(),
                size(f.changed_bytes as i64),
            ]);
        }
        print_table(&t)?;
    }
    for f in rows.iter().flatten() {
        outln!();
        if f.encrypted {
            outln!(
                "rows of {}: not compared (an encrypted database: DuckDB opens it only with its key)",
                f.file
            );
            continue;
        }
        outln!(
            "rows of {}: {} table(s) changed, {} unchanged, {} skipped (storage unchanged)",
            f.file,
            f.tables.len(),
            f.unchanged.len(),
            f.skipped.len()
        );
        if !f.tables.is_empty() {
            print_table(&rows_table(&f.tables))?;
        }
        if !f.objects.is_empty() {
            outln!("also: {}", f.objects.join("; "));
        }
    }
    Ok(())
}

/// The text table of a file's changed tables.
fn rows_table(tables: &[quackfs::rows::TableRows]) -> comfy_table::Table {
    let mut t = table(&[
        "TABLE",
        "CHANGE",
        "MATCHED BY",
        "INSERTED",
        "DELETED",
        "UPDATED",
        "SCHEMA",
    ]);
    for r in tables {
        t.add_row(vec![
            r.table.clone(),
            r.change.clone(),
            r.key
                .as_ref()
                .map(|k| k.join(", "))
                .unwrap_or_else(|| "whole rows".into()),
            r.inserted.to_string(),
            r.deleted.to_string(),
            r.updated.to_string(),
            r.schema.join("; "),
        ]);
    }
    t
}

/// Whether file `name` of `view` is an encrypted DuckDB database.
async fn encrypted(view: &quackfs::engine::view::ReadView, name: &str) -> Result<bool> {
    let Some(f) = view.file(name) else {
        return Ok(false);
    };
    let mut head = vec![0u8; duckdb_file::HEADER_SIZE.min(f.size) as usize];
    let n = view.read(f, 0, &mut head).await?;
    Ok(duckdb_file::is_encrypted(&head[..n]))
}

/// Row changes of every DuckDB database file either side has (an encrypted one is listed, not
/// compared).
async fn row_diff(
    engine: &Arc<Engine>,
    old: (&Repo, &Commit),
    new: (&Repo, &Commit),
    files: &[FileDiff],
    only: &[String],
    show: usize,
    scan_all: bool,
) -> Result<Vec<FileRows>> {
    let va = engine.view(old.1).await?;
    let vb = engine.view(new.1).await?;
    let mut dbs: Vec<&String> = va
        .files
        .keys()
        .chain(vb.files.keys())
        .filter(|n| n.ends_with(".duckdb"))
        .collect();
    dbs.sort();
    dbs.dedup();
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let tmp = std::env::temp_dir();
    let sa = Snapshot::mount(engine.clone(), old.0, old.1, &tmp).await?;
    let sb = Snapshot::mount(engine.clone(), new.0, new.1, &tmp).await?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for name in dbs {
        if encrypted(&va, name).await? || encrypted(&vb, name).await? {
            out.push(FileRows {
                file: name.clone(),
                encrypted: true,
                ..FileRows::default()
            });
            continue;
        }
        let diff = files.iter().find(|f| &f.name == name);
        // A WAL that differs means rows that are not in the database file's blocks yet.
        let wal_changed = duckdb_file::WAL_SUFFIXES
            .iter()
            .any(|s| files.iter().any(|f| f.name == format!("{name}{s}")));
        let no_change: Vec<(u64, u64)> = Vec::new();
        let changed = match diff {
            _ if scan_all || wal_changed => None,
            Some(d) => Some(d.ranges.as_slice()),
            None => Some(no_change.as_slice()),
        };
        let req = RowDiffRequest {
            file: name.clone(),
            old: va.files.contains_key(name).then(|| sa.path(name)),
            new: vb.files.contains_key(name).then(|| sb.path(name)),
            changed,
            only,
            show,
        };
        match rows::diff_file(req).await {
            Ok(f) => out.push(f),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    sa.close().await;
    sb.close().await;
    result.map(|()| out)
}
