use super::output::outln;
use super::output::{print_json, print_table, size, table};
use super::Ctx;
use quackfs::engine::history::diff_views;
use quackfs::engine::{export, short};
use quackfs::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Show what changed between two revisions, per file, from the extent maps (no data read).
///
/// For each file: size change, number of changed ranges, bytes changed. With --tables (needs the
/// duckdb CLI on PATH), also tables added or dropped and row counts before and after.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The old side
    #[arg(value_name = "REV")]
    pub rev: String,
    /// The new side [default: the head of the current branch]
    #[arg(value_name = "REV2")]
    pub rev2: Option<String>,
    /// Also compare tables and row counts (exports both sides and queries them with duckdb)
    #[arg(long)]
    pub tables: bool,
}

pub async fn run(ctx: &Ctx, a: DiffArgs) -> Result<()> {
    let engine = ctx.engine().await?;
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
    let tables = if a.tables {
        Some(table_diff(&va, &vb).await?)
    } else {
        None
    };
    if ctx.json {
        return print_json(&serde_json::json!({
            "old": old.commit.id, "new": new.commit.id, "files": files, "tables": tables,
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
    if let Some(tables) = tables {
        outln!();
        let mut t = table(&["TABLE", "OLD ROWS", "NEW ROWS", "CHANGE"]);
        for r in &tables {
            let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            let change = match (r.old_rows, r.new_rows) {
                (None, Some(_)) => "added".to_string(),
                (Some(_), None) => "dropped".to_string(),
                (Some(a), Some(b)) if a != b => format!("{:+}", b - a),
                _ => String::new(),
            };
            t.add_row(vec![r.table.clone(), n(r.old_rows), n(r.new_rows), change]);
        }
        print_table(&t)?;
    }
    Ok(())
}

/// Row counts of one table on both sides.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableDiff {
    pub table: String,
    pub old_rows: Option<i64>,
    pub new_rows: Option<i64>,
}

async fn table_diff(
    va: &quackfs::engine::view::ReadView,
    vb: &quackfs::engine::view::ReadView,
) -> Result<Vec<TableDiff>> {
    let tmp = tempdir()?;
    let (da, db) = (tmp.join("old"), tmp.join("new"));
    let pb = indicatif::ProgressBar::hidden();
    let result = async {
        export::export(va, &da, false, &pb).await?;
        export::export(vb, &db, false, &pb).await?;
        let a = tables_of(&da, va)?;
        let b = tables_of(&db, vb)?;
        let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .map(|n| TableDiff {
                table: n.clone(),
                old_rows: a.get(n).copied(),
                new_rows: b.get(n).copied(),
            })
            .filter(|d| d.old_rows != d.new_rows || d.old_rows.is_none())
            .collect())
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn tempdir() -> Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!("quackfs-diff-{}", quackfs::engine::new_id()));
    std::fs::create_dir_all(&p).map_err(|e| Error::file(&p, e))?;
    Ok(p)
}

/// Table name -> row count of the first `.duckdb` file of an exported revision.
fn tables_of(dir: &Path, view: &quackfs::engine::view::ReadView) -> Result<BTreeMap<String, i64>> {
    let Some(db) = view.files.keys().find(|n| n.ends_with(".duckdb")) else {
        return Ok(BTreeMap::new());
    };
    let path = dir.join(db);
    let list = run_duckdb(
        &path,
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() ORDER BY 1",
    )?;
    let mut out = BTreeMap::new();
    for t in list.lines().filter(|l| !l.is_empty()) {
        let (schema, name) = t.split_once('.').unwrap_or(("main", t));
        let q = format!(
            "SELECT count(*) FROM \"{}\".\"{}\"",
            schema.replace('"', "\"\""),
            name.replace('"', "\"\"")
        );
        let n = run_duckdb(&path, &q)?
            .trim()
            .parse::<i64>()
            .map_err(|_| Error::Invalid(format!("cannot count rows of {t}")))?;
        out.insert(
            if schema == "main" {
                name.to_string()
            } else {
                t.to_string()
            },
            n,
        );
    }
    Ok(out)
}

fn run_duckdb(db: &Path, sql: &str) -> Result<String> {
    let out = std::process::Command::new("duckdb")
        .args(["-readonly", "-csv", "-noheader"])
        .arg(db)
        .arg("-c")
        .arg(sql)
        .output()
        .map_err(|e| Error::Invalid(format!("diff --tables needs the duckdb CLI on PATH: {e}")))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "duckdb failed on {}: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
