use super::Ctx;
use quackfs::engine::short;
use quackfs::error::{Error, Result};

/// Seal everything synced on the branch into a commit and print its id.
///
/// Exits 1 with "nothing to commit" when nothing changed since the head, unless --allow-empty.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// Commit message
    #[arg(short, long, default_value = "")]
    pub message: String,
    /// Branch to commit [default: the current branch]
    #[arg(short, long)]
    pub branch: Option<String>,
    /// Record a commit even if nothing changed
    #[arg(long)]
    pub allow_empty: bool,
}

pub async fn run(ctx: &Ctx, a: CommitArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let name = ctx.require_repo()?;
    let repo = engine.repo(&name).await?;
    let branch = match a.branch {
        Some(b) => b,
        None => ctx.current_branch(&name)?,
    };
    // Without a writable mount nothing can be synced-but-uncommitted on a branch.
    engine.branch_head(&repo, &branch).await?;
    if !a.allow_empty {
        return Err(Error::NothingToCommit);
    }
    let c = engine.commit_empty(&repo, &branch, &a.message).await?;
    if ctx.json {
        return super::output::print_json(&c);
    }
    ctx.note(format!("committed {} on {name}@{branch}", short(&c.id)));
    println!("{}", c.id);
    Ok(())
}
