//! Command-line interface: one module per subcommand, each with an `Args` struct (its doc comment
//! is the help text) and a `run` function. Data goes to stdout, everything else to stderr.

mod apply;
mod bisect;
mod branch;
mod clone;
mod commit;
mod completions;
mod diff;
mod drop;
mod export;
mod gc;
mod import;
mod init;
mod log;
mod merge;
mod mount;
mod output;
mod reflog;
mod repos;
mod reset;
mod show;
mod status;
mod tag;
mod umount;
mod use_;
mod verify;

use clap::{Args, Parser, Subcommand};
use quackfs::config::{Config, LocalState, Overrides};
use quackfs::engine::{Access, Engine, Resolved};
use quackfs::error::{Error, Result};
use quackfs::refspec::{self, Rev, RevSpec};
use std::path::PathBuf;

pub use output::one_line;

/// Git for DuckDB databases: versioned, differential storage with branches, tags and time travel.
///
/// Each database is a repository whose history is a chain of commits; each commit stores only the
/// bytes that changed. Start with `quackfs init NAME`.
#[derive(Debug, Parser)]
#[command(
    name = "quackfs",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = quackfs::error::exit::help()
)]
pub struct Cli {
    #[command(flatten, next_help_heading = "Global options")]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (flag > environment > config file > default).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Data directory: embedded catalog, objects, cache, local state
    /// [default: $XDG_DATA_HOME/quackfs]
    #[arg(long, global = true, env = "QUACKFS_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Catalog: sqlite://PATH or postgres://USER:PASS@HOST:PORT/DB [default: sqlite://DATA_DIR/catalog.sqlite]
    #[arg(
        long,
        global = true,
        env = "QUACKFS_CATALOG",
        value_name = "URL",
        hide_env_values = true
    )]
    pub catalog: Option<String>,
    /// Object store: file://PATH or s3://BUCKET[/PREFIX] [default: file://DATA_DIR/objects]
    #[arg(long, global = true, env = "QUACKFS_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Which database [default: the one mounted where the current directory is, else the one
    /// chosen with `quackfs use`]
    #[arg(
        short = 'r',
        long,
        global = true,
        env = "QUACKFS_REPO",
        value_name = "NAME"
    )]
    pub repo: Option<String>,
    /// Machine-readable JSON output
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (repeat for more); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::InitArgs),
    Use(use_::UseArgs),
    Repos(repos::ReposArgs),
    Import(import::ImportArgs),
    Export(export::ExportArgs),
    Mount(mount::MountArgs),
    Umount(umount::UmountArgs),
    Commit(commit::CommitArgs),
    Log(log::LogArgs),
    Show(show::ShowArgs),
    Status(status::StatusArgs),
    Branch(branch::BranchArgs),
    Tag(tag::TagArgs),
    Reflog(reflog::ReflogArgs),
    Reset(reset::ResetArgs),
    Clone(clone::CloneArgs),
    Diff(diff::DiffArgs),
    Apply(apply::ApplyArgs),
    Bisect(bisect::BisectArgs),
    Verify(verify::VerifyArgs),
    Drop(drop::DropArgs),
    Merge(merge::MergeArgs),
    Gc(gc::GcArgs),
    Completions(completions::CompletionsArgs),
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Completions(a) = &cli.command {
        return completions::run(a);
    }
    // A tuning variable that does not parse is an error before anything runs.
    quackfs::tuning::check().map_err(Error::Config)?;
    let g = &cli.global;
    let cfg = Config::load(Overrides {
        data_dir: g.data_dir.clone(),
        catalog: g.catalog.clone(),
        store: g.store.clone(),
        repo: g.repo.clone(),
    })?;
    let ctx = Ctx {
        cfg,
        json: g.json,
        quiet: g.quiet,
        verbose: g.verbose,
        access: access(&cli.command),
    };
    if let Command::Mount(a) = cli.command {
        // A mount handles Ctrl-C and SIGTERM itself: it unmounts, flushes and releases.
        return mount::run(&ctx, a).await;
    }
    if let Command::Init(a) = cli.command {
        // So does init: an import it cannot finish takes the new database away again.
        return init::run(&ctx, a).await;
    }
    interruptible(dispatch(&ctx, cli.command)).await
}

/// Runs `command` until it ends or Ctrl-C / SIGTERM arrives. On a signal the command is dropped
/// at its next await point, so its guards run: temporary files are removed, an open catalog
/// transaction rolls back (objects already stored are orphans gc collects). Killing the
/// process outright would skip all of that.
async fn interruptible<T>(command: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use tokio::signal::unix::{signal, SignalKind};
    let watch =
        |kind| signal(kind).map_err(|e| Error::Invalid(format!("cannot watch signals: {e}")));
    let mut sigint = watch(SignalKind::interrupt())?;
    let mut sigterm = watch(SignalKind::terminate())?;
    tokio::select! {
        r = command => r,
        _ = sigint.recv() => Err(Error::Interrupted("SIGINT")),
        _ = sigterm.recv() => Err(Error::Interrupted("SIGTERM")),
    }
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<()> {
    match command {
        Command::Init(a) => init::run(ctx, a).await,
        Command::Use(a) => use_::run(ctx, a).await,
        Command::Repos(a) => repos::run(ctx, a).await,
        Command::Import(a) => import::run(ctx, a).await,
        Command::Export(a) => export::run(ctx, a).await,
        Command::Mount(a) => mount::run(ctx, a).await,
        Command::Umount(a) => umount::run(ctx, a).await,
        Command::Commit(a) => commit::run(ctx, a).await,
        Command::Log(a) => log::run(ctx, a).await,
        Command::Show(a) => show::run(ctx, a).await,
        Command::Status(a) => status::run(ctx, a).await,
        Command::Branch(a) => branch::run(ctx, a).await,
        Command::Tag(a) => tag::run(ctx, a).await,
        Command::Reflog(a) => reflog::run(ctx, a).await,
        Command::Reset(a) => reset::run(ctx, a).await,
        Command::Clone(a) => clone::run(ctx, a).await,
        Command::Diff(a) => diff::run(ctx, a).await,
        Command::Apply(a) => apply::run(ctx, a).await,
        Command::Bisect(a) => bisect::run(ctx, a).await,
        Command::Verify(a) => verify::run(ctx, a).await,
        Command::Drop(a) => drop::run(ctx, a).await,
        Command::Merge(a) => merge::run(ctx, a).await,
        Command::Gc(a) => gc::run(ctx, a).await,
        Command::Completions(_) => Ok(()),
    }
}

/// What a command does with the backends: `init` alone creates a catalog; commands that write
/// or delete objects check the catalog's binding to its store; the others only need the catalog.
fn access(command: &Command) -> Access {
    match command {
        Command::Init(_) => Access::Create,
        Command::Import(_)
        | Command::Mount(_)
        | Command::Merge(_)
        | Command::Gc(_)
        | Command::Apply(_) => Access::Write,
        _ => Access::Read,
    }
}

/// What every command gets: configuration and output settings.
pub struct Ctx {
    pub cfg: Config,
    pub json: bool,
    pub quiet: bool,
    /// How many `-v` were given (a daemon mount passes them on to its process).
    pub verbose: u8,
    /// What the command does with the backends (see [`access`]).
    pub access: Access,
}

impl Ctx {
    /// The engine over the configured backends, checked for what this command does with them.
    pub async fn engine(&self) -> Result<Engine> {
        Engine::open(&self.cfg, self.access).await
    }

    pub fn state(&self) -> Result<LocalState> {
        LocalState::load(&self.cfg.state_path())
    }

    /// The database named by -r/QUACKFS_REPO/config, else the one mounted where the current
    /// directory is, else the one chosen with `use`.
    pub fn current_repo(&self) -> Result<Option<String>> {
        if let Some(r) = &self.cfg.repo {
            return Ok(Some(r.clone()));
        }
        if let Some((repo, _)) = cwd_mount() {
            return Ok(Some(repo));
        }
        Ok(self.state()?.repo)
    }

    pub fn require_repo(&self) -> Result<String> {
        self.current_repo()?.ok_or(Error::NoRepoSelected)
    }

    /// The current branch of `repo`: the branch mounted writable where the current directory
    /// is, else the one chosen with `use REPO@BRANCH`, else `main`.
    pub fn current_branch(&self, repo: &str) -> Result<String> {
        if let Some((r, rev)) = cwd_mount() {
            // A read-only mount shows a short commit id instead of a branch.
            let commit_id = rev.len() == 12 && rev.bytes().all(|b| b.is_ascii_hexdigit());
            if r == repo && !commit_id {
                return Ok(rev);
            }
        }
        let st = self.state()?;
        Ok(match (st.repo, st.branch) {
            (Some(r), Some(b)) if r == repo => b,
            _ => "main".to_string(),
        })
    }

    /// Parses `[REPO@]REV`, applying `--at TIME` if given.
    pub fn parse_spec(&self, text: &str, at: Option<&str>) -> Result<RevSpec> {
        let now = chrono::Utc::now();
        let mut spec = refspec::parse_revspec(text, now)?;
        if let Some(at) = at {
            apply_at(&mut spec.rev, at, now)?;
        }
        Ok(spec)
    }

    /// Resolves a revision given on the command line (`[REPO@]REV`, see docs/revisions.md), or,
    /// without one, the current branch of the current database; prints the resolution's notes.
    /// The current branch never falls through to a database of the same name: if it was
    /// deleted, that is the error.
    pub async fn resolve_rev(
        &self,
        engine: &Engine,
        rev: Option<&str>,
        at: Option<&str>,
    ) -> Result<Resolved> {
        let r = match rev {
            Some(text) => {
                let spec = self.parse_spec(text, at)?;
                let current = self.current_repo()?;
                engine.resolve_spec(&spec, current.as_deref()).await?
            }
            None => {
                let name = self.require_repo()?;
                let repo = engine.repo(&name).await?;
                let branch = self.current_branch(&name)?;
                let is_branch = matches!(
                    engine.catalog.get_ref(repo.id, &branch).await?,
                    Some(r) if r.kind == quackfs::catalog::RefKind::Branch
                );
                if !is_branch {
                    return Err(Error::NoSuchRef {
                        kind: "current branch",
                        name: branch,
                        repo: name,
                    });
                }
                let spec = self.parse_spec(&branch, at)?;
                engine.resolve(&repo, &spec.rev).await?
            }
        };
        for n in &r.notes {
            self.note(format!("note: {n}"));
        }
        Ok(r)
    }

    /// A progress bar on stderr when stdout is a terminal; hidden otherwise.
    pub fn progress(&self, what: &str) -> indicatif::ProgressBar {
        output::progress(what, self.quiet || self.json)
    }

    /// A status line on stderr (suppressed by -q). A stderr that cannot be written (a closed
    /// pipe, a full log disk) loses the line, never the command: a mount must still unmount.
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{}", msg.as_ref());
        }
    }
}

/// Argument parser for sizes (`--cache-size 512MiB`): accepts what `bytesize` reads (`512MiB`,
/// `1.5 GB`, `4096`), so a typo is a usage error (exit 2) before anything runs. Keeps the text.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    quackfs::tuning::parse_size(text)
        .map_err(|_| "expected a size such as 512MiB, 2GiB or 1048576".to_string())
}

/// Argument parser for durations (`--retain 7d`): what `humantime` reads, checked up front.
pub fn parse_duration(text: &str) -> std::result::Result<String, String> {
    humantime::parse_duration(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("{e} (examples: 7d, 12h, 30m, 0s)"))
}

/// The database and revision of the quackfs mount the current directory is in, if it is in one
/// (from the mount's fsname `quackfs:REPO@REV` in /proc/self/mountinfo).
fn cwd_mount() -> Option<(String, String)> {
    let cwd = std::env::current_dir().ok()?;
    let entry = quackfs::mountinfo::containing(&cwd)?;
    let (repo, rev) = entry.quackfs()?;
    Some((repo.to_string(), rev.to_string()))
}

/// Applies `--at TIME` to a revision (same as writing `REV@{TIME}`).
pub fn apply_at(rev: &mut Rev, at: &str, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let t = refspec::parse_time(at, now)?;
    rev.suffixes.push(refspec::Suffix::At(refspec::TimeSpec {
        text: at.to_string(),
        at: t,
    }));
    Ok(())
}
