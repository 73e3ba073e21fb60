use super::Ctx;
use quackfs::config::LocalState;
use quackfs::engine::now_millis;
use quackfs::error::{Error, Result};

/// Delete a database: its branches, tags and history names go.
///
/// Data that clones of it still need stays; `quackfs gc` removes the rest. Refused while a
/// writable mount holds one of its branches.
#[derive(Debug, clap::Args)]
pub struct DropArgs {
    /// The database to delete
    pub name: String,
    /// Confirm the deletion
    #[arg(long)]
    pub yes: bool,
}

pub async fn run(ctx: &Ctx, a: DropArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let repo = engine.repo(&a.name).await?;
    if !a.yes {
        return Err(Error::Refused(format!(
            "deleting database {:?} needs --yes",
            a.name
        )));
    }
    engine
        .unless_dead_writer(repo.id, || {
            engine.catalog.delete_repo(repo.id, now_millis())
        })
        .await?;
    let mut st = ctx.state()?;
    if st.repo.as_deref() == Some(a.name.as_str()) {
        st = LocalState::default();
        st.save(&ctx.cfg.state_path())?;
    }
    ctx.note(format!("deleted database {}", a.name));
    Ok(())
}
