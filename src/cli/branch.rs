use super::output::{print_json, print_table, table, time};
use super::Ctx;
use quackfs::catalog::RefKind;
use quackfs::engine::{now_millis, short, Engine};
use quackfs::error::{Error, Result};
use quackfs::names::{looks_like_commit_id, validate_name};

/// List, create or delete branches.
///
/// `quackfs branch` lists; `quackfs branch NAME [REV] [--at TIME]` creates NAME at REV (default:
/// the current branch), or where REV pointed at TIME; `quackfs branch -d NAME` deletes.
#[derive(Debug, clap::Args)]
pub struct BranchArgs {
    /// Branch to create (or delete with -d)
    pub name: Option<String>,
    /// Where the new branch starts [default: the current branch]
    #[arg(value_name = "REV")]
    pub rev: Option<String>,
    /// Start where REV pointed at this time (RFC 3339, YYYY-MM-DD, 'N hours ago')
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Delete the branch
    #[arg(short, long, conflicts_with_all = ["rev", "at"], requires = "name")]
    pub delete: bool,
}

#[derive(serde::Serialize)]
pub struct RefOut {
    pub name: String,
    pub kind: RefKind,
    pub commit: String,
    pub time: String,
    pub message: String,
}

/// Lists refs of one kind with their head commit.
pub async fn list(
    ctx: &Ctx,
    engine: &Engine,
    repo_name: &str,
    kind: RefKind,
    current: Option<&str>,
) -> Result<()> {
    let repo = engine.repo(repo_name).await?;
    let mut out = Vec::new();
    for r in engine
        .catalog
        .refs(repo.id)
        .await?
        .into_iter()
        .filter(|r| r.kind == kind)
    {
        let c = engine.commit(&r.commit_id).await?;
        out.push(RefOut {
            name: r.name,
            kind,
            commit: c.id,
            time: quackfs::engine::fmt_time(c.created_at),
            message: c.message,
        });
    }
    if ctx.json {
        return print_json(&out);
    }
    let mut t = table(&[
        "",
        kind.as_str().to_uppercase().as_str(),
        "COMMIT",
        "TIME",
        "MESSAGE",
    ]);
    for r in &out {
        let ms = chrono::DateTime::parse_from_rfc3339(&r.time)
            .map(|d| d.timestamp_millis())
            .unwrap_or(0);
        t.add_row(vec![
            if Some(r.name.as_str()) == current {
                "*".into()
            } else {
                String::new()
            },
            r.name.clone(),
            short(&r.commit).to_string(),
            time(ms),
            r.message.clone(),
        ]);
    }
    print_table(&t)?;
    Ok(())
}

/// Creates a ref of `kind` called `name` at `rev` (or the current branch), `--at` applied.
pub async fn create(
    ctx: &Ctx,
    engine: &Engine,
    repo_name: &str,
    kind: RefKind,
    name: &str,
    rev: Option<&str>,
    at: Option<&str>,
) -> Result<()> {
    validate_name(kind.as_str(), name)?;
    let repo = engine.repo(repo_name).await?;
    if looks_like_commit_id(name) {
        // Refs are resolved before commit ids (docs/revisions.md): this name would hide them.
        let prefix = name.to_ascii_lowercase();
        if let Some(c) = engine
            .catalog
            .commits_by_prefix(repo.id, &prefix, 1)
            .await?
            .first()
        {
            return Err(Error::Refused(format!(
                "{} name {name:?} would hide commit {}: a name is a branch or tag before it is a commit id; choose a name that is not all hex digits",
                kind.as_str(),
                short(&c.id)
            )));
        }
        ctx.note(format!(
            "warning: {} name {name:?} looks like a commit id; commits whose ids start with it need more digits from now on",
            kind.as_str()
        ));
    }
    let base = match rev {
        Some(r) => r.to_string(),
        None => ctx.current_branch(repo_name)?,
    };
    let spec = ctx.parse_spec(&base, at)?;
    if let Some(other) = spec.repo.as_deref().filter(|r| *r != repo_name) {
        return Err(Error::Invalid(format!(
            "{} must be in database {repo_name:?}, not {other:?} (use `quackfs clone` to start a new database from it)",
            kind.as_str()
        )));
    }
    let r = engine.resolve(&repo, &spec.rev).await?;
    for n in &r.notes {
        ctx.note(format!("note: {n}"));
    }
    let reason = format!("{} created from {}", kind.as_str(), spec.rev);
    engine
        .catalog
        .create_ref(repo.id, name, kind, &r.commit.id, &reason, now_millis())
        .await
        .map_err(|e| match e {
            quackfs::catalog::CatalogError::Exists { what, .. } => Error::RefExists {
                kind: if what == "tag" { "tag" } else { "branch" },
                name: name.to_string(),
                repo: repo_name.to_string(),
            },
            other => other.into(),
        })?;
    ctx.note(format!(
        "created {} {name} at {}",
        kind.as_str(),
        short(&r.commit.id)
    ));
    Ok(())
}

/// Deletes a ref of `kind`.
pub async fn delete(
    ctx: &Ctx,
    engine: &Engine,
    repo_name: &str,
    kind: RefKind,
    name: &str,
) -> Result<()> {
    let repo = engine.repo(repo_name).await?;
    let refs = engine.catalog.refs(repo.id).await?;
    let Some(target) = refs.iter().find(|r| r.name == name && r.kind == kind) else {
        return Err(Error::NoSuchRef {
            kind: kind.as_str(),
            name: name.to_string(),
            repo: repo_name.to_string(),
        });
    };
    if kind == RefKind::Branch && refs.iter().filter(|r| r.kind == RefKind::Branch).count() == 1 {
        return Err(Error::Refused(format!(
            "{name:?} is the last branch of {repo_name:?}; a database keeps at least one branch"
        )));
    }
    engine
        .unless_dead_writer(repo.id, || {
            engine.catalog.delete_ref(repo.id, name, kind, now_millis())
        })
        .await?;
    ctx.note(format!(
        "deleted {} {name} (was {})",
        kind.as_str(),
        short(&target.commit_id)
    ));
    Ok(())
}

pub async fn run(ctx: &Ctx, a: BranchArgs) -> Result<()> {
    let engine = ctx.engine().await?;
    let repo = ctx.require_repo()?;
    match a.name {
        None => {
            let cur = ctx.current_branch(&repo)?;
            list(ctx, &engine, &repo, RefKind::Branch, Some(&cur)).await
        }
        Some(name) if a.delete => delete(ctx, &engine, &repo, RefKind::Branch, &name).await,
        Some(name) => {
            create(
                ctx,
                &engine,
                &repo,
                RefKind::Branch,
                &name,
                a.rev.as_deref(),
                a.at.as_deref(),
            )
            .await
        }
    }
}
