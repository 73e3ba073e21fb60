use super::output::outln;
use super::output::{print_json, size};
use super::Ctx;
use quackfs::engine::short;
use quackfs::error::Result;
use std::path::PathBuf;

/// Commit local files onto a branch (each under its base name).
///
/// Only the byte ranges that differ from the branch head are stored, so re-importing a large
/// database after a small change stores kilobytes. Prints the new commit id.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Files to import, e.g. analytics.duckdb
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Branch to commit onto [default: the current branch]
    #[arg(short, long)]
    pub branch: Option<String>,
    /// Commit message [default: "import FILE…"]
    #[arg(short, long)]
    pub message: Option<String>,
}

pub async fn run(ctx: &Ctx, a: ImportArgs) -> Result<()> {
    quackfs::engine::import::prefetch(&a.files);
    let engine = ctx.engine().await?;
    let name = ctx.require_repo()?;
    let repo = engine.repo(&name).await?;
    let branch = match a.branch {
        Some(b) => b,
        None => ctx.current_branch(&name)?,
    };
    let pb = ctx.progress("import");
    let out = engine
        .import(&repo, &branch, &a.files, a.message.as_deref(), &pb)
        .await?;
    pb.finish_and_clear();
    if ctx.json {
        return print_json(&out);
    }
    for f in &out.files {
        ctx.note(format!(
            "{}: {}, {} changed in {} range(s)",
            f.name,
            size(f.size as i64),
            size(f.changed_bytes as i64),
            f.changed_ranges
        ));
    }
    for w in &out.removed {
        ctx.note(format!(
            "{w}: removed (the WAL of the database file it replaced)"
        ));
    }
    match &out.commit {
        Some(c) => {
            ctx.note(format!(
                "committed {} on {name}@{branch} ({} stored)",
                short(&c.id),
                size(out.stored_bytes as i64)
            ));
            outln!("{}", c.id);
        }
        None => ctx.note(format!(
            "nothing changed: the files are identical to {name}@{branch}; no commit made"
        )),
    }
    Ok(())
}
