use super::Ctx;
use quackfs::config::LocalState;
use quackfs::engine::short;
use quackfs::error::Result;
use std::path::PathBuf;

/// Create a new, empty database with branch `main`; it becomes the current database.
///
/// With --import, the given files (e.g. an existing `analytics.duckdb`) become its first commit.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Name of the database: letters, digits, '.', '_' and '-', up to 64 characters
    pub name: String,
    /// Files to import as the first commit (stored under their base names)
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub import: Vec<PathBuf>,
    /// Message of the import commit
    #[arg(short, long)]
    pub message: Option<String>,
}

pub async fn run(ctx: &Ctx, a: InitArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let (repo, root) = engine.init(&a.name).await?;
    LocalState {
        repo: Some(repo.name.clone()),
        branch: Some("main".into()),
    }
    .save(&ctx.cfg.state_path())?;
    let mut head = root;
    if !a.import.is_empty() {
        let pb = ctx.progress("import");
        let out = engine
            .import(&repo, "main", &a.import, a.message.as_deref(), &pb)
            .await?;
        pb.finish_and_clear();
        if let Some(c) = out.commit {
            head = c;
        }
    }
    if ctx.json {
        super::output::print_json(
            &serde_json::json!({ "database": repo.name, "branch": "main", "head": head.id }),
        )?;
    } else {
        ctx.note(format!(
            "created database {} (branch main at {}); it is now the current database",
            repo.name,
            short(&head.id)
        ));
    }
    Ok(())
}
