use super::Ctx;
use quackfs::config::LocalState;
use quackfs::engine::import::check_import;
use quackfs::engine::{now_millis, short};
use quackfs::error::Result;
use std::path::PathBuf;

/// Create a new, empty database with branch `main`; it becomes the current database.
///
/// With --import, the given files (e.g. an existing `analytics.duckdb`) become its first commit;
/// if they cannot be imported (or Ctrl-C stops it), no database is left behind.
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
    // Files that cannot be imported are refused before the database exists.
    if !a.import.is_empty() {
        check_import(&a.import)?;
        quackfs::engine::import::prefetch(&a.import);
    }
    let (engine, repo, root) = super::interruptible(async {
        let engine = ctx.engine().await?;
        let (repo, root) = engine.init(&a.name).await?;
        Ok((engine, repo, root))
    })
    .await?;
    let mut head = root;
    if !a.import.is_empty() {
        let pb = ctx.progress("import");
        let imported = super::interruptible(engine.import(
            &repo,
            "main",
            &a.import,
            a.message.as_deref(),
            &pb,
        ))
        .await;
        pb.finish_and_clear();
        let out = match imported {
            Ok(out) => out,
            Err(e) => {
                // Failed or interrupted: the database goes again, so that running the same
                // command once more starts afresh (its stored objects are orphans for gc).
                if let Err(d) = engine.catalog.delete_repo(repo.id, now_millis()).await {
                    ctx.note(format!(
                        "database {} was created, but removing it after the failed import failed too ({d}): delete it with `quackfs drop {} --yes`",
                        repo.name, repo.name
                    ));
                }
                return Err(e);
            }
        };
        if let Some(c) = out.commit {
            head = c;
        }
    }
    LocalState {
        repo: Some(repo.name.clone()),
        branch: Some("main".into()),
    }
    .save(&ctx.cfg.state_path())?;
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
