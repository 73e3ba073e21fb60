use super::output::outln;
use super::output::{print_json, size};
use super::Ctx;
use quackfs::engine::short;
use quackfs::error::{Error, Result};

/// Compact the current database's layers offline, beside live mounts.
///
/// Merges each commit's delta segments into one layer and writes image layers (every file in
/// full) for branch heads and tags whose chains have grown long, so a mount reads through few
/// layers. Every commit keeps reading the same bytes; old layers go only with `quackfs gc`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Show what would be done without writing anything
    #[arg(long)]
    pub dry_run: bool,
    /// (Not a merge of branches: bringing a branch's changes in is `quackfs apply SOURCE`.)
    #[arg(value_name = "SOURCE", hide = true)]
    pub source: Option<String>,
}

pub async fn run(ctx: &Ctx, a: MergeArgs) -> Result<()> {
    if let Some(source) = &a.source {
        return Err(Error::Usage {
            message: format!(
                "`quackfs merge` compacts layers and takes no revision ({source:?})"
            ),
            hint: format!(
                "to bring the changes of {source} into a branch, run `quackfs apply {source}` (-b BRANCH for another branch than the current one)"
            ),
        });
    }
    let engine = ctx.engine().await?;
    // It reads history its own layers replace: that is not worth a place in the disk cache.
    if let Some(d) = engine.disk_cache() {
        d.set_fill(false);
    }
    let repo = engine.repo(&ctx.require_repo()?).await?;
    let pb = ctx.progress("merge");
    let started = std::time::Instant::now();
    let report = engine.merge(&repo, a.dry_run, &pb).await?;
    pb.finish_and_clear();
    if ctx.json {
        return print_json(&report);
    }
    let verb = if a.dry_run { "would merge" } else { "merged" };
    for (c, n) in &report.merged_segments {
        outln!("{verb} {n} segments of commit {}", short(c));
    }
    let verb = if a.dry_run { "would write" } else { "wrote" };
    for (c, n) in &report.images {
        outln!("{verb} an image of {} (its chain had {n} layers)", short(c));
    }
    if report.merged_segments.is_empty() && report.images.is_empty() {
        outln!("nothing to merge: every head reads through few layers");
    } else if !a.dry_run {
        ctx.note(format!(
            "wrote {} in {:.1}s; `quackfs gc` removes the layers nothing needs any more",
            size(report.bytes_written as i64),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(())
}
