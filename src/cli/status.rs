use super::output::outln;
use super::output::{print_json, size, time};
use super::Ctx;
use quackfs::catalog::mask_url;
use quackfs::engine::short;
use quackfs::error::Result;

/// Show the current database and branch, its head, uncommitted bytes, and where data lives.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

pub async fn run(ctx: &Ctx, _a: StatusArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let catalog = engine.catalog.describe();
    let store = mask_url(&engine.store.describe());
    let Some(name) = ctx.current_repo()? else {
        if ctx.json {
            return print_json(
                &serde_json::json!({ "database": null, "catalog": catalog, "store": store }),
            );
        }
        outln!("no database selected (`quackfs use NAME` or -r NAME)");
        outln!("catalog  {catalog}");
        outln!("store    {store}");
        return Ok(());
    };
    let repo = engine.repo(&name).await?;
    let branch = ctx.current_branch(&name)?;
    let head = engine.branch_head(&repo, &branch).await?;
    let view = engine.view(&head).await?;
    let pending = engine.catalog.pending(repo.id, &branch).await?;
    let pending_bytes: i64 = pending
        .as_ref()
        .map(|p| p.layers.iter().map(|l| l.size_bytes).sum())
        .unwrap_or(0);
    let now = quackfs::engine::now_millis();
    let mounts: Vec<_> = engine
        .catalog
        .leases(repo.id)
        .await?
        .into_iter()
        .map(|l| {
            serde_json::json!({ "branch": l.branch, "holder": l.holder, "writable": true,
                "heartbeat_age_secs": (now - l.heartbeat_at).max(0) / 1000 })
        })
        .collect();
    let layers: Vec<_> = view
        .files
        .values()
        .map(|f| serde_json::json!({ "file": f.path, "size": f.size, "layers": view.layers_per_file(f) }))
        .collect();
    if ctx.json {
        return print_json(&serde_json::json!({
            "database": repo.name, "branch": branch, "head": head,
            "uncommitted": pending.is_some(), "uncommitted_bytes": pending_bytes,
            "mounts": mounts, "files": layers,
            "catalog": catalog, "store": store,
        }));
    }
    outln!("database {}  branch {}", repo.name, branch);
    outln!(
        "head     {} {} {} ({})",
        short(&head.id),
        time(head.created_at),
        head.kind.as_str(),
        if head.message.is_empty() {
            "no message"
        } else {
            &head.message
        }
    );
    outln!(
        "size     {} in {} file(s), reads through {} layer(s)",
        size(head.logical_size),
        view.files.len(),
        view.layers.len()
    );
    match &pending {
        Some(p) => outln!(
            "pending  {} synced but not committed in {} layer(s) (`quackfs commit` seals it)",
            size(pending_bytes),
            p.layers.len()
        ),
        None => outln!("pending  nothing synced-but-uncommitted"),
    }
    if mounts.is_empty() {
        outln!("mounts   no writable mount");
    }
    for m in &mounts {
        outln!(
            "mount    {} writable by {} (heartbeat {}s ago)",
            m["branch"].as_str().unwrap_or(""),
            m["holder"].as_str().unwrap_or(""),
            m["heartbeat_age_secs"]
        );
    }
    outln!("catalog  {catalog}");
    outln!("store    {store}");
    Ok(())
}
