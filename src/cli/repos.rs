use super::output::{print_json, print_table, size, table, time};
use super::Ctx;
use quackfs::error::Result;

/// List databases: name, branches, commits, logical size of `main`, stored bytes, creation time.
#[derive(Debug, clap::Args)]
pub struct ReposArgs {}

#[derive(serde::Serialize)]
struct Row {
    name: String,
    branches: i64,
    tags: i64,
    commits: i64,
    logical_bytes: i64,
    stored_bytes: i64,
    /// Of the stored bytes, those kept in the catalog (small syncs; on the local store they stay
    /// there until merge and gc replace them).
    inline_bytes: i64,
    shared_bytes: i64,
    created_at: String,
}

pub async fn run(ctx: &Ctx, _a: ReposArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let mut rows = Vec::new();
    for repo in engine.catalog.repos().await? {
        let stats = engine.catalog.repo_stats(repo.id).await?;
        // Logical size and the bytes read from layers other databases own (clones share them).
        let (logical, shared) = match engine.branch_head(&repo, "main").await {
            Ok(c) => {
                let layers = engine.catalog.chain_layers(&c.id).await?;
                let shared = layers
                    .iter()
                    .filter(|l| l.repo_id != repo.id)
                    .map(|l| l.size_bytes)
                    .sum();
                (c.logical_size, shared)
            }
            Err(_) => (0, 0),
        };
        rows.push(Row {
            name: repo.name,
            branches: stats.branches,
            tags: stats.tags,
            commits: stats.commits,
            logical_bytes: logical,
            stored_bytes: stats.stored_bytes,
            inline_bytes: stats.inline_bytes,
            shared_bytes: shared,
            created_at: quackfs::engine::fmt_time(repo.created_at),
        });
    }
    if ctx.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        ctx.note("no databases yet; create one with `quackfs init NAME`");
        return Ok(());
    }
    let current = ctx.current_repo()?.unwrap_or_default();
    let mut t = table(&[
        "", "DATABASE", "BRANCHES", "TAGS", "COMMITS", "LOGICAL", "OWNED", "SHARED", "CREATED",
    ]);
    for r in &rows {
        let created = chrono::DateTime::parse_from_rfc3339(&r.created_at)
            .map(|d| time(d.timestamp_millis()))
            .unwrap_or_else(|_| r.created_at.clone());
        t.add_row(vec![
            if r.name == current {
                "*".to_string()
            } else {
                String::new()
            },
            r.name.clone(),
            r.branches.to_string(),
            r.tags.to_string(),
            r.commits.to_string(),
            size(r.logical_bytes),
            size(r.stored_bytes),
            size(r.shared_bytes),
            created,
        ]);
    }
    print_table(&t)?;
    Ok(())
}
