use super::Ctx;
use quackfs::engine::short;
use quackfs::error::Result;

/// Create a new database whose `main` starts at REV, sharing all its layers (zero copy).
///
/// Only catalog rows are written. Writing to the clone never changes the source, and deleting
/// the source later does not break the clone.
#[derive(Debug, clap::Args)]
pub struct CloneArgs {
    /// What to clone: [DB@]REV, e.g. analytics@v1, analytics@main@{2024-05-01}
    #[arg(value_name = "REV")]
    pub rev: String,
    /// Name of the new database
    pub name: String,
    /// Clone where REV pointed at this time (same as REV@{TIME})
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

pub async fn run(ctx: &Ctx, a: CloneArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let r = ctx
        .resolve_rev(&engine, Some(&a.rev), a.at.as_deref())
        .await?;
    let repo = engine.clone_repo(&r.repo, &r.commit, &a.name).await?;
    if ctx.json {
        return super::output::print_json(&serde_json::json!({
            "database": repo.name, "source": r.repo.name, "commit": r.commit.id,
        }));
    }
    ctx.note(format!(
        "created database {} from {}@{} (no data copied)",
        repo.name,
        r.repo.name,
        short(&r.commit.id)
    ));
    Ok(())
}
