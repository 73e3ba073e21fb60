use super::output::outln;
use super::output::{print_json, size};
use super::Ctx;
use quackfs::engine::{export, short};
use quackfs::error::Result;
use std::path::PathBuf;

/// Write every file of a revision into a directory, byte-identical to what a mount shows.
///
/// REV is `[REPO@]REV` (a database name alone means its `main`). Existing files are refused
/// unless --force is given.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Revision to export, e.g. main, v1, analytics@main~2, main@{2024-05-01}
    #[arg(value_name = "REV")]
    pub rev: String,
    /// Directory to write into (created if missing)
    pub dir: PathBuf,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
    /// Where the branch pointed at this time (same as REV@{TIME})
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

pub async fn run(ctx: &Ctx, a: ExportArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let r = ctx
        .resolve_rev(&engine, Some(&a.rev), a.at.as_deref())
        .await?;
    let view = engine.view(&r.commit).await?;
    let pb = ctx.progress("export");
    let files = export::export(&view, &a.dir, a.force, &pb).await?;
    pb.finish_and_clear();
    if ctx.json {
        return print_json(
            &serde_json::json!({ "database": r.repo.name, "commit": r.commit.id, "files": files }),
        );
    }
    for f in &files {
        outln!("{}", f.path.display());
    }
    ctx.note(format!(
        "exported {} file(s), {} from {}@{}",
        files.len(),
        size(view.logical_size() as i64),
        r.repo.name,
        short(&r.commit.id)
    ));
    Ok(())
}
