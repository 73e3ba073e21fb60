use super::output::outln;
use super::output::{print_json, print_table, size, table, time};
use super::Ctx;
use quackfs::error::Result;

/// Show one commit: parent, files and sizes, layers, bytes.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The commit to show [default: the current branch]
    #[arg(value_name = "REV")]
    pub rev: Option<String>,
    /// Where the branch pointed at this time (same as REV@{TIME})
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

#[derive(serde::Serialize)]
struct FileOut {
    name: String,
    size: u64,
    layers: usize,
    extents: usize,
}

#[derive(serde::Serialize)]
struct LayerOut {
    id: String,
    kind: &'static str,
    bytes: i64,
    object_key: String,
}

pub async fn run(ctx: &Ctx, a: ShowArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let r = ctx
        .resolve_rev(&engine, a.rev.as_deref(), a.at.as_deref())
        .await?;
    let view = engine.view(&r.commit).await?;
    let files: Vec<FileOut> = view
        .files
        .values()
        .map(|f| FileOut {
            name: f.path.clone(),
            size: f.size,
            layers: view.layers_per_file(f),
            extents: f.map.len(),
        })
        .collect();
    let own = engine.catalog.commit_layers(&r.commit.id).await?;
    let layers: Vec<LayerOut> = own
        .iter()
        .map(|l| LayerOut {
            id: l.id.clone(),
            kind: match l.kind {
                quackfs::layer::LayerKind::Delta => "delta",
                quackfs::layer::LayerKind::Image => "image",
            },
            bytes: l.size_bytes,
            object_key: l.object_key.clone(),
        })
        .collect();
    let c = &r.commit;
    if ctx.json {
        return print_json(&serde_json::json!({
            "database": r.repo.name, "commit": c, "files": files, "layers": layers,
            "chain_layers": view.layers.len(),
        }));
    }
    outln!("commit   {}", c.id);
    outln!("database {}", r.repo.name);
    outln!("parent   {}", c.parent_id.as_deref().unwrap_or("(none)"));
    if let Some(p2) = &c.merge_parent_id {
        outln!("merged   {p2} (second parent, ^2)");
    }
    outln!("kind     {}", c.kind.as_str());
    outln!("author   {}", c.author);
    outln!("time     {}", time(c.created_at));
    outln!(
        "size     {} in {} file(s)",
        size(c.logical_size),
        files.len()
    );
    outln!(
        "added    {} in {} layer(s); reads go through {} layer(s)",
        size(c.bytes_added),
        layers.len(),
        view.layers.len()
    );
    outln!();
    outln!(
        "    {}",
        if c.message.is_empty() {
            "(no message)"
        } else {
            &c.message
        }
    );
    if !files.is_empty() {
        outln!();
        let mut t = table(&["FILE", "SIZE", "BYTES", "LAYERS", "EXTENTS"]);
        for f in &files {
            t.add_row(vec![
                f.name.clone(),
                size(f.size as i64),
                f.size.to_string(),
                f.layers.to_string(),
                f.extents.to_string(),
            ]);
        }
        print_table(&t)?;
    }
    if !layers.is_empty() {
        outln!();
        let mut t = table(&["LAYER", "KIND", "BYTES"]);
        for l in &layers {
            // Whole: the layers one mount writes share their first 16 digits (its session id).
            t.add_row(vec![l.id.clone(), l.kind.to_string(), size(l.bytes)]);
        }
        print_table(&t)?;
    }
    Ok(())
}
