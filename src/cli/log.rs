use super::output::{print_json, print_table, size, table, time};
use super::Ctx;
use quackfs::engine::short;
use quackfs::error::Result;

/// Show history, newest first: id, time, author, kind, message, bytes added.
///
/// The history follows first parents; a commit made by `apply` names its second parent (the
/// source head it brought in, `REV^2`) after its message.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Where to start [default: the current branch]
    #[arg(value_name = "REV")]
    pub rev: Option<String>,
    /// Show at most N commits
    #[arg(short = 'n', long, value_name = "N")]
    pub max_count: Option<u32>,
    /// Start where the branch pointed at this time (same as REV@{TIME})
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

pub async fn run(ctx: &Ctx, a: LogArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let r = ctx
        .resolve_rev(&engine, a.rev.as_deref(), a.at.as_deref())
        .await?;
    let limit = a.max_count.map(i64::from).unwrap_or(i64::MAX);
    let commits = engine.catalog.ancestors(&r.commit.id, limit).await?;
    if ctx.json {
        return print_json(&commits);
    }
    if commits.is_empty() {
        return Ok(());
    }
    let mut t = table(&["COMMIT", "TIME", "AUTHOR", "KIND", "ADDED", "MESSAGE"]);
    for c in &commits {
        t.add_row(vec![
            short(&c.id).to_string(),
            time(c.created_at),
            c.author.clone(),
            if c.expired_at.is_some() {
                format!("{} (expired)", c.kind.as_str())
            } else {
                c.kind.as_str().to_string()
            },
            size(c.bytes_added),
            match &c.merge_parent_id {
                Some(p2) => format!("{} (merge of {})", c.message, short(p2)),
                None => c.message.clone(),
            },
        ]);
    }
    print_table(&t)?;
    Ok(())
}
