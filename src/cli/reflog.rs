use super::output::{print_json, print_table, table, time};
use super::Ctx;
use quackfs::engine::short;
use quackfs::error::Result;

/// Show where a branch pointed, when, and why (newest first).
#[derive(Debug, clap::Args)]
pub struct ReflogArgs {
    /// Branch [default: the current branch]
    pub branch: Option<String>,
}

pub async fn run(ctx: &Ctx, a: ReflogArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let name = ctx.require_repo()?;
    let repo = engine.repo(&name).await?;
    let branch = match a.branch {
        Some(b) => b,
        None => ctx.current_branch(&name)?,
    };
    let entries = engine.catalog.reflog(repo.id, &branch).await?;
    if entries.is_empty() {
        return Err(quackfs::error::Error::NoSuchRef {
            kind: "branch",
            name: branch,
            repo: name,
        });
    }
    if ctx.json {
        return print_json(&entries);
    }
    let mut t = table(&["TIME", "FROM", "TO", "REASON"]);
    for e in &entries {
        t.add_row(vec![
            time(e.at),
            e.old_commit
                .as_deref()
                .map(short)
                .unwrap_or("-")
                .to_string(),
            e.new_commit
                .as_deref()
                .map(short)
                .unwrap_or("-")
                .to_string(),
            e.reason.clone(),
        ]);
    }
    print_table(&t)?;
    Ok(())
}
