use super::output::outln;
use super::output::print_json;
use super::Ctx;
use quackfs::catalog::{Commit, Repo};
use quackfs::engine::{short, Engine};
use quackfs::error::{Error, Result};
use quackfs::fuse::snapshot::Snapshot;
use quackfs::rows::duck;
use std::sync::Arc;

/// Find the first commit between GOOD and BAD where a query turns false.
///
/// Binary search over the first-parent history from GOOD (assumed good) to BAD (assumed bad):
/// each candidate is mounted read-only in place and QUERY runs on its database in DuckDB (the
/// duckdb CLI, or QUACKFS_DUCKDB); it must return one boolean: true = good. Opens about log2(N)
/// candidates of N. Prints the first bad commit and every step.
#[derive(Debug, clap::Args)]
pub struct BisectArgs {
    /// A revision where QUERY returns true
    #[arg(value_name = "GOOD")]
    pub good: String,
    /// A later revision (GOOD is among its first parents) where QUERY returns false
    #[arg(value_name = "BAD")]
    pub bad: String,
    /// The query: one row, one boolean column (true = good), run with the database as the
    /// default catalog
    #[arg(long, value_name = "QUERY")]
    pub sql: String,
    /// The database file to query [default: the commit's only .duckdb file]
    #[arg(long, value_name = "NAME")]
    pub file: Option<String>,
}

#[derive(serde::Serialize)]
struct Step {
    commit: String,
    good: bool,
    /// Candidates left after this step.
    remaining: usize,
}

pub async fn run(ctx: &Ctx, a: BisectArgs) -> Result<()> {
    let engine = Arc::new(ctx.engine().await?);
    let good = ctx.resolve_rev(&engine, Some(&a.good), None).await?;
    let bad = engine
        .resolve_spec(&ctx.parse_spec(&a.bad, None)?, Some(&good.repo.name))
        .await?;
    if bad.repo.id != good.repo.id {
        return Err(Error::Invalid(format!(
            "{} and {} are in different databases",
            a.good, a.bad
        )));
    }
    // Oldest first: GOOD, then every first-parent descendant up to BAD.
    let mut chain = Vec::new();
    for c in engine.catalog.ancestors(&bad.commit.id, i64::MAX).await? {
        let found = c.id == good.commit.id;
        chain.push(c);
        if found {
            break;
        }
    }
    if chain.last().map(|c| &c.id) != Some(&good.commit.id) {
        return Err(Error::Invalid(format!(
            "{} is not an ancestor of {} along first parents (`quackfs log {}` shows them)",
            a.good, a.bad, a.bad
        )));
    }
    chain.reverse();
    if chain.len() < 2 {
        return Err(Error::Usage {
            message: format!(
                "{} and {} are the same commit: nothing to search",
                a.good, a.bad
            ),
            hint: "give a GOOD commit older than BAD (`quackfs log BAD` lists its ancestors)"
                .into(),
        });
    }
    let (mut lo, mut hi) = (0, chain.len() - 1);
    let mut steps = Vec::new();
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let ok = test(&engine, &good.repo, &chain[mid], a.file.as_deref(), &a.sql).await?;
        if ok {
            lo = mid;
        } else {
            hi = mid;
        }
        let step = Step {
            commit: chain[mid].id.clone(),
            good: ok,
            remaining: hi - lo - 1,
        };
        if !ctx.json {
            outln!(
                "step {}: {} is {} ({} candidate(s) left)",
                steps.len() + 1,
                short(&step.commit),
                if ok { "good" } else { "bad" },
                step.remaining
            );
        }
        steps.push(step);
    }
    let first_bad = &chain[hi];
    if ctx.json {
        return print_json(&serde_json::json!({
            "first_bad": first_bad, "last_good": chain[lo].id,
            "candidates": chain.len() - 2, "steps": steps,
        }));
    }
    outln!(
        "first bad commit: {} {} ({} step(s) for {} candidate(s))",
        first_bad.id,
        first_bad.message,
        steps.len(),
        chain.len() - 2
    );
    Ok(())
}

/// Runs the query on `commit`, mounted read-only.
async fn test(
    engine: &Arc<Engine>,
    repo: &Repo,
    commit: &Commit,
    file: Option<&str>,
    sql: &str,
) -> Result<bool> {
    let view = engine.view(commit).await?;
    let db = match file {
        Some(f) => {
            if !view.files.contains_key(f) {
                return Err(Error::Invalid(format!(
                    "commit {} has no file {f}",
                    short(&commit.id)
                )));
            }
            f.to_string()
        }
        None => {
            let dbs: Vec<&String> = view
                .files
                .keys()
                .filter(|n| n.ends_with(".duckdb"))
                .collect();
            match dbs.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(Error::Invalid(format!(
                        "commit {} has no .duckdb file",
                        short(&commit.id)
                    )))
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "commit {} has several databases; name one with --file",
                        short(&commit.id)
                    )))
                }
            }
        }
    };
    let snap = Snapshot::mount(engine.clone(), repo, commit, &std::env::temp_dir()).await?;
    let script = format!(
        "ATTACH {} AS bisected (READ_ONLY);\nUSE bisected;\n{};",
        duck::lit(&snap.path(&db).to_string_lossy()),
        sql.trim().trim_end_matches(';')
    );
    let result = duck::run(&script).await;
    snap.close().await;
    let results = result?;
    let value = results
        .last()
        .and_then(|rows| match rows.as_slice() {
            [row] if row.len() == 1 => row.values().next().cloned(),
            _ => None,
        })
        .ok_or_else(|| {
            Error::Invalid(format!(
                "the query must return one row with one boolean column (on commit {})",
                short(&commit.id)
            ))
        })?;
    match value {
        serde_json::Value::Bool(b) => Ok(b),
        other => Err(Error::Invalid(format!(
            "the query returned {other} on commit {}, not true or false",
            short(&commit.id)
        ))),
    }
}
