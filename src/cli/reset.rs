use super::Ctx;
use quackfs::engine::{now_millis, short};
use quackfs::error::{Error, Result};

/// Move a branch to another revision (recorded in the reflog).
///
/// Refused while a writable mount holds the branch, or while it has synced changes that were not
/// committed.
#[derive(Debug, clap::Args)]
pub struct ResetArgs {
    /// The branch to move
    pub branch: String,
    /// Where it should point: a revision of the same database
    #[arg(value_name = "REV")]
    pub rev: String,
    /// Move it to where REV pointed at this time
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

pub async fn run(ctx: &Ctx, a: ResetArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let name = ctx.require_repo()?;
    let repo = engine.repo(&name).await?;
    let old = engine.branch_head(&repo, &a.branch).await?;
    let spec = ctx.parse_spec(&a.rev, a.at.as_deref())?;
    if spec.repo.as_deref().is_some_and(|r| r != name) {
        return Err(Error::Invalid(
            "reset moves a branch within its own database".into(),
        ));
    }
    let r = engine.resolve(&repo, &spec.rev).await?;
    let reason = format!("reset to {}", spec.rev);
    engine
        .unless_dead_writer(repo.id, || {
            engine.catalog.move_branch(
                repo.id,
                &a.branch,
                None,
                &r.commit.id,
                &reason,
                now_millis(),
            )
        })
        .await?;
    ctx.note(format!(
        "{} moved from {} to {}",
        a.branch,
        short(&old.id),
        short(&r.commit.id)
    ));
    Ok(())
}
