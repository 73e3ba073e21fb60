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
        println!("no database selected (`quackfs use NAME` or -r NAME)");
        println!("catalog  {catalog}");
        println!("store    {store}");
        return Ok(());
    };
    let repo = engine.repo(&name).await?;
    let branch = ctx.current_branch(&name)?;
    let head = engine.branch_head(&repo, &branch).await?;
    let view = engine.view(&head).await?;
    let layers: Vec<_> = view
        .files
        .values()
        .map(|f| serde_json::json!({ "file": f.path, "size": f.size, "layers": view.layers_per_file(f) }))
        .collect();
    if ctx.json {
        return print_json(&serde_json::json!({
            "database": repo.name, "branch": branch, "head": head,
            "uncommitted_bytes": 0, "mounts": [], "files": layers,
            "catalog": catalog, "store": store,
        }));
    }
    println!("database {}  branch {}", repo.name, branch);
    println!(
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
    println!(
        "size     {} in {} file(s), reads through {} layer(s)",
        size(head.logical_size),
        view.files.len(),
        view.layers.len()
    );
    println!("pending  nothing synced-but-uncommitted");
    println!("mounts   none");
    println!("catalog  {catalog}");
    println!("store    {store}");
    Ok(())
}
