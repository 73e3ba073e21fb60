use super::branch::{create, delete, list};
use super::Ctx;
use quackfs::catalog::RefKind;
use quackfs::error::Result;

/// List, create or delete tags (immutable names for commits).
///
/// `quackfs tag` lists; `quackfs tag NAME [REV] [--at TIME]` names REV (default: the current
/// branch's head); `quackfs tag -d NAME` deletes. Tags never move.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// Tag to create (or delete with -d)
    pub name: Option<String>,
    /// The commit to tag [default: the current branch]
    #[arg(value_name = "REV")]
    pub rev: Option<String>,
    /// Tag where REV pointed at this time
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Delete the tag
    #[arg(short, long, conflicts_with_all = ["rev", "at"], requires = "name")]
    pub delete: bool,
}

pub async fn run(ctx: &Ctx, a: TagArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let repo = ctx.require_repo()?;
    match a.name {
        None => list(ctx, &engine, &repo, RefKind::Tag, None).await,
        Some(name) if a.delete => delete(ctx, &engine, &repo, RefKind::Tag, &name).await,
        Some(name) => {
            create(
                ctx,
                &engine,
                &repo,
                RefKind::Tag,
                &name,
                a.rev.as_deref(),
                a.at.as_deref(),
            )
            .await
        }
    }
}
