use super::output::outln;
use super::Ctx;
use quackfs::engine::short;
use quackfs::error::{Error, Result};

/// Seal everything synced on the branch into a commit and print its id.
///
/// Exits 4 with "nothing to commit" when nothing changed since the head, unless --allow-empty.
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
    let commit = quackfs::catalog::NewCommit {
        id: quackfs::engine::new_id(),
        kind: quackfs::catalog::CommitKind::Manual,
        message: a.message.clone(),
        author: engine.author.clone(),
        time: quackfs::engine::now_millis(),
        merge_parent: None,
    };
    engine.branch_head(&repo, &branch).await?;
    let asked = std::time::SystemTime::now();
    let pending = engine
        .catalog
        .commit_pending(repo.id, &branch, commit, a.allow_empty)
        .await;
    let c = match pending {
        Err(quackfs::catalog::CatalogError::NothingPending) => {
            let unsynced = unsynced_on_mount(ctx, &engine, repo.id, &branch, asked, false).await;
            // Else the head now, if a checkpoint made it (one made meanwhile took what was
            // synced); the hint names only one of the two.
            let checkpoint_head = match unsynced {
                Some(_) => None,
                None => engine
                    .branch_head(&repo, &branch)
                    .await
                    .ok()
                    .filter(|h| h.kind == quackfs::catalog::CommitKind::Checkpoint)
                    .map(|h| format!("{} ({})", short(&h.id), h.message)),
            };
            return Err(Error::NothingToCommit {
                unsynced,
                checkpoint_head,
            });
        }
        c => c?,
    };
    // Bytes the mount holds unsynced (a file another program wrote and closed without fsync,
    // DuckDB's `COPY ... TO` into the mount) are not in the commit: say so.
    let left_out = unsynced_on_mount(ctx, &engine, repo.id, &branch, asked, true).await;
    if ctx.json {
        super::output::print_json(&c)?;
    } else {
        ctx.note(format!("committed {} on {name}@{branch}", short(&c.id)));
        outln!("{}", c.id);
    }
    if let Some(unsynced) = left_out {
        ctx.note(format!(
            "note: not in this commit: {unsynced} (a file's bytes are committed once synced: fsync, `sync FILE`, or unmounting)"
        ));
    }
    Ok(())
}

/// What the writable mount of `branch`, if it is a mount of this data directory, held written but
/// not synced after the commit was asked for (`asked`; the mount writes its figures every
/// second), as a sentence. With `if_seen`, only if its last figures (of up to a second ago)
/// showed such bytes already: no wait for its next report otherwise.
async fn unsynced_on_mount(
    ctx: &Ctx,
    engine: &quackfs::engine::Engine,
    repo_id: i64,
    branch: &str,
    asked: std::time::SystemTime,
    if_seen: bool,
) -> Option<String> {
    let leases = engine.catalog.leases(repo_id).await.ok()?;
    let lease = leases.into_iter().find(|l| l.branch == branch)?;
    let dir = quackfs::process::holder_dir(&lease.holder)?;
    let dirty = |m: serde_json::Value| m["dirty_bytes"].as_u64().filter(|&b| b > 0);
    if if_seen
        && super::mount::metrics_of(&ctx.cfg.run_dir(), dir)
            .and_then(dirty)
            .is_none()
    {
        return None;
    }
    let bytes = dirty(super::mount::fresh_metrics(&ctx.cfg.run_dir(), dir, asked).await?)?;
    Some(format!(
        "the mount at {dir} holds {} written but not synced",
        super::output::size(bytes as i64)
    ))
}
