use super::Ctx;
use quackfs::config::LocalState;
use quackfs::error::Result;
use quackfs::names::validate_name;

/// Set the current database (and branch) used when -r is not given.
#[derive(Debug, clap::Args)]
pub struct UseArgs {
    /// REPO or REPO@BRANCH
    #[arg(value_name = "REPO[@BRANCH]")]
    pub target: String,
}

pub async fn run(ctx: &Ctx, a: UseArgs) -> Result<()> {
    let (name, branch) = match a.target.split_once('@') {
        Some((r, b)) => (r.to_string(), b.to_string()),
        None => (a.target.clone(), "main".to_string()),
    };
    validate_name("branch", &branch)?;
    let engine = ctx.engine().await?;
    let repo = engine.repo(&name).await?;
    engine.branch_head(&repo, &branch).await?;
    LocalState {
        repo: Some(name.clone()),
        branch: Some(branch.clone()),
    }
    .save(&ctx.cfg.state_path())?;
    ctx.note(format!("now using {name}@{branch}"));
    Ok(())
}
