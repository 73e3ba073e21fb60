use super::output::outln;
use super::output::size;
use super::Ctx;
use quackfs::error::{Error, Result};

/// Re-read every byte of a revision (or of every commit) and check it against its checksums.
///
/// Goes on past damage: lists every damaged or missing layer object, and every file whose size
/// in the catalog is more than its layers hold, then exits 5.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The revision to check [default: the current branch]
    #[arg(value_name = "REV", conflicts_with = "all")]
    pub rev: Option<String>,
    /// Check every commit reachable from a branch or tag
    #[arg(long)]
    pub all: bool,
}

pub async fn run(ctx: &Ctx, a: VerifyArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let current = ctx.current_repo()?;
    let commits = if a.all {
        let name = current.clone().ok_or(Error::NoRepoSelected)?;
        let repo = engine.repo(&name).await?;
        engine.reachable_commits(&repo).await?
    } else {
        vec![
            ctx.resolve_rev(&engine, a.rev.as_deref(), None)
                .await?
                .commit,
        ]
    };
    let (commits, expired): (Vec<_>, Vec<_>) =
        commits.into_iter().partition(|c| c.expired_at.is_none());
    if let (true, Some(c)) = (commits.is_empty(), expired.first()) {
        return Err(Error::expired(&c.id, c.expired_at.unwrap_or_default()));
    }
    let pb = ctx.progress("verify");
    let report = engine.verify(&commits, &pb).await?;
    pb.finish_and_clear();
    if ctx.json {
        super::output::print_json(&report)?;
    } else {
        for d in &report.damaged {
            outln!("damaged  {}: {}", d.what, d.problem);
        }
    }
    if !expired.is_empty() {
        ctx.note(format!(
            "skipped {} expired commit(s) (gc removed their data)",
            expired.len()
        ));
    }
    if let Some(first) = report.damaged.first() {
        return Err(Error::Damaged(format!(
            "{} problem(s) in {} commit(s) and {} layer(s) checked, the first: {}: {}",
            report.damaged.len(),
            report.commits,
            report.layers,
            first.what,
            first.problem
        )));
    }
    if !ctx.json {
        outln!(
            "ok: {} commit(s), {} layer(s), {} extent(s), {}: every checksum matches and every byte is backed",
            report.commits,
            report.layers,
            report.extents,
            size(report.bytes as i64)
        );
    }
    Ok(())
}
