use super::output::outln;
use super::output::{print_json, size, time};
use super::Ctx;
use quackfs::catalog::mask_url;
use quackfs::engine::maintenance::HEARTBEAT_STALE_MS;
use quackfs::engine::short;
use quackfs::error::Result;

/// Show the current database and branch, its head, uncommitted bytes, mounts (writable and
/// read-only), and where data lives.
///
/// A head whose layers cannot be read (a missing object, …) is reported on its line; the rest
/// is shown anyway.
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
    // One missing object must not hide everything else status knows.
    let view = engine.view(&head).await;
    let pending = engine.catalog.pending(repo.id, &branch).await?;
    let pending_bytes: i64 = pending
        .as_ref()
        .map(|p| p.layers.iter().map(|l| l.size_bytes).sum())
        .unwrap_or(0);
    let now = quackfs::engine::now_millis();
    let age = |hb: i64| (now - hb).max(0) / 1000;
    let mut mounts: Vec<_> = engine
        .catalog
        .leases(repo.id)
        .await?
        .into_iter()
        .map(|l| {
            // A holder of this machine whose process is gone (killed, crashed) holds nothing
            // any more: the next mount of the branch takes it over.
            serde_json::json!({ "branch": l.branch, "holder": l.holder, "writable": true,
                "heartbeat_age_secs": age(l.heartbeat_at),
                "process_gone": quackfs::process::holder_is_dead(&l.holder) })
        })
        .collect();
    // Read-only mounts pin their commit and keep its heartbeat fresh while they run.
    for p in engine.catalog.pins(repo.id).await? {
        if now - p.heartbeat_at <= HEARTBEAT_STALE_MS {
            mounts.push(
                serde_json::json!({ "commit": p.commit_id, "holder": p.holder,
                "writable": false, "heartbeat_age_secs": age(p.heartbeat_at),
                "follows": quackfs::process::holder_follows(&p.holder) }),
            );
        }
    }
    // A mount of this data directory writes its figures next to its run file.
    for m in &mut mounts {
        let snapshot = m["holder"]
            .as_str()
            .and_then(quackfs::process::holder_dir)
            .and_then(|d| super::mount::metrics_of(&ctx.cfg.run_dir(), d));
        m["metrics"] = snapshot.unwrap_or(serde_json::Value::Null);
    }
    let (files, problem) = match &view {
        Ok(v) => (
            v.files
                .values()
                .map(|f| serde_json::json!({ "file": f.path, "size": f.size, "layers": v.layers_per_file(f) }))
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (Vec::new(), Some(super::one_line(e))),
    };
    if ctx.json {
        return print_json(&serde_json::json!({
            "database": repo.name, "branch": branch, "head": head,
            "uncommitted": pending.is_some(), "uncommitted_bytes": pending_bytes,
            "uncommitted_layers": pending.as_ref().map_or(0, |p| p.layers.len()),
            "mounts": mounts, "files": files, "problem": problem,
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
    match &view {
        Ok(v) => outln!(
            "size     {} in {} file(s), reads through {} layer(s)",
            size(head.logical_size),
            v.files.len(),
            v.layers.len()
        ),
        Err(_) => outln!(
            "size     {} (its layers cannot be read: {}; `quackfs verify` lists what is damaged)",
            size(head.logical_size),
            problem.as_deref().unwrap_or("")
        ),
    }
    match &pending {
        Some(p) => outln!(
            "pending  {} synced but not committed in {} layer(s) (`quackfs commit` seals it)",
            size(pending_bytes),
            p.layers.len()
        ),
        None => outln!("pending  nothing synced-but-uncommitted"),
    }
    if mounts.is_empty() {
        outln!("mounts   none");
    }
    for m in &mounts {
        let holder = m["holder"].as_str().unwrap_or("");
        let hb = &m["heartbeat_age_secs"];
        match m["branch"].as_str() {
            Some(b) => {
                // Bytes written through the mount but not synced: not in the catalog yet, so
                // neither in `pending` nor in a commit (the mount's figures, if it is of this
                // data directory).
                let unsynced = match m["metrics"]["dirty_bytes"].as_u64() {
                    Some(n) if n > 0 => format!("; {} written, not synced yet", size(n as i64)),
                    _ => String::new(),
                };
                if m["process_gone"].as_bool() == Some(true) {
                    outln!(
                        "mount    {b} writable by {holder} (heartbeat {hb}s ago; its process is gone: the next mount of {b} takes the branch over)"
                    )
                } else {
                    outln!("mount    {b} writable by {holder} (heartbeat {hb}s ago{unsynced})")
                }
            }
            None => match m["follows"].as_str() {
                Some(b) => outln!(
                    "mount    {} read-only, following {b}, by {holder} (heartbeat {hb}s ago)",
                    short(m["commit"].as_str().unwrap_or(""))
                ),
                None => outln!(
                    "mount    {} read-only by {holder} (heartbeat {hb}s ago)",
                    short(m["commit"].as_str().unwrap_or(""))
                ),
            },
        }
    }
    outln!("catalog  {catalog}");
    outln!("store    {store}");
    Ok(())
}
