use super::output::outln;
use super::output::size;
use super::Ctx;
use quackfs::error::{Error, Result};

/// Re-read every byte of a revision (or of every commit) and check it against its checksums.
///
/// Reports the first damaged or missing layer object by name and exits 1.
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
        let rev = match (&a.rev, &current) {
            (Some(r), _) => r.clone(),
            (None, Some(repo)) => ctx.current_branch(repo)?,
            (None, None) => return Err(Error::NoRepoSelected),
        };
        let spec = ctx.parse_spec(&rev, None)?;
        vec![engine.resolve_spec(&spec, current.as_deref()).await?.commit]
    };
    let (commits, expired): (Vec<_>, Vec<_>) =
        commits.into_iter().partition(|c| c.expired_at.is_none());
    if commits.is_empty() && !expired.is_empty() {
        return Err(Error::Expired(format!(
            "commit {} expired: gc removed what it needed",
            quackfs::engine::short(&expired[0].id)
        )));
    }
    let pb = ctx.progress("verify");
    let report = engine.verify(&commits, &pb).await?;
    pb.finish_and_clear();
    if ctx.json {
        return super::output::print_json(&report);
    }
    outln!(
        "ok: {} commit(s), {} layer(s), {} extent(s), {}: every checksum matches",
        report.commits,
        report.layers,
        report.extents,
        size(report.bytes as i64)
    );
    if !expired.is_empty() {
        ctx.note(format!(
            "skipped {} expired commit(s) (gc removed their data)",
            expired.len()
        ));
    }
    Ok(())
}
