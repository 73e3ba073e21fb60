//! The library's error type. Each variant is one thing a user can act on; the CLI prints it as one
//! `error:` line plus an optional `hint:` line, and the FUSE layer maps it to an errno.

use crate::catalog::CatalogError;
use crate::layer::LayerError;
use crate::store::StoreError;

/// Errors returned by the quackfs library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} name {name:?}: {why}")]
    BadName {
        what: String,
        name: String,
        why: String,
    },
    #[error("database {0:?} does not exist")]
    NoSuchRepo(String),
    #[error("database {0:?} already exists")]
    RepoExists(String),
    #[error("{kind} {name:?} does not exist in database {repo:?}")]
    NoSuchRef {
        kind: &'static str,
        name: String,
        repo: String,
    },
    #[error("{kind} {name:?} already exists in database {repo:?}")]
    RefExists {
        kind: &'static str,
        name: String,
        repo: String,
    },
    #[error("unknown revision {rev:?} in database {repo:?}")]
    UnknownRevision { rev: String, repo: String },
    #[error("revision {rev:?} is ambiguous: it matches commits {candidates}")]
    AmbiguousRevision { rev: String, candidates: String },
    #[error("invalid revision {input:?}: {why} (at character {pos})")]
    BadRevision {
        input: String,
        pos: usize,
        why: String,
    },
    #[error("invalid time {0:?}: {1}")]
    BadTime(String, String),
    #[error("{0}")]
    TimeOutOfRange(String),
    /// `REV~N` past the first commit, `REV^2` of a commit with one parent: no such revision.
    #[error("{0}")]
    NoSuchAncestor(String),
    #[error("no database selected")]
    NoRepoSelected,
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already exists")]
    TargetExists(String),
    /// Nothing synced since the head; with what a live mount of the branch holds unsynced (a
    /// sentence for the hint), if anything, and the head itself when a DuckDB checkpoint made it
    /// (its short id and message: a user's changes are often already there).
    #[error("nothing to commit")]
    NothingToCommit {
        unsynced: Option<String>,
        checkpoint_head: Option<String>,
    },
    /// A mount ended but its last writes could not be made durable.
    #[error("{0}")]
    LostWrites(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Expired(String),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// `verify` found damage; the damaged objects and files were listed on stdout.
    #[error("verify found {0}")]
    Damaged(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// Standard output could not be written (a full disk, a closed file): the data did not
    /// reach its reader, so the command fails.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// The command was stopped by a signal (Ctrl-C, SIGTERM) and cleaned up after itself.
    #[error("interrupted by {0}; the command stopped and removed its temporary files")]
    Interrupted(&'static str),
    /// The catalog and the object store do not belong together (see `docs/operations.md`).
    #[error("{0}")]
    StoreMismatch(String),
    /// A command used in a way it never works, with what to do instead.
    #[error("{message}")]
    Usage { message: String, hint: String },
    /// `apply`: rows or schemas changed differently on both sides; nothing was committed.
    #[error("{0}")]
    MergeConflict(String),
}

/// The documented exit codes (`docs/cli.md`, `quackfs --help`): one per kind of failure, so a
/// script can tell them apart. `hint:` lines are not part of the contract, codes are.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other error (I/O, bad input that depends on the state, …).
    pub const ERROR: u8 = 1;
    /// Usage: the command line can never work (unknown command or flag, malformed name,
    /// revision, time, duration or size, no database selected).
    pub const USAGE: u8 = 2;
    /// Refused or conflict: a branch is held by a writable mount, moved meanwhile, has
    /// uncommitted syncs; a target exists; the command needs a confirmation.
    pub const REFUSED: u8 = 3;
    /// `commit`: nothing to commit.
    pub const NOTHING_TO_COMMIT: u8 = 4;
    /// Data corruption detected: a damaged or missing object, a size no layer backs.
    pub const CORRUPT: u8 = 5;
    /// No such database, branch, tag or revision (or an ambiguous commit prefix).
    pub const NOT_FOUND: u8 = 6;
    /// The revision expired: gc removed the data it needed.
    pub const EXPIRED: u8 = 7;
    /// A backend (catalog server, object store) could not be reached: retrying later may work.
    pub const UNAVAILABLE: u8 = 8;
    /// Configuration: no catalog there, or the catalog and the object store do not belong
    /// together, or a URL is invalid.
    pub const CONFIG: u8 = 9;
    /// Interrupted by Ctrl-C (128 + SIGINT); SIGTERM gives 143.
    pub const INTERRUPTED: u8 = 130;
    /// Interrupted by SIGTERM (128 + 15).
    pub const TERMINATED: u8 = 143;

    /// Every code with its one-line meaning, in order (the `--help` text and docs/cli.md).
    pub const TABLE: &[(u8, &str)] = &[
        (OK, "success"),
        (ERROR, "error (anything not listed below)"),
        (
            USAGE,
            "usage: bad command line, malformed name/revision/time/size, no database selected",
        ),
        (
            REFUSED,
            "refused or conflict: branch held or moved meanwhile, uncommitted syncs, target exists",
        ),
        (NOTHING_TO_COMMIT, "nothing to commit"),
        (
            CORRUPT,
            "data corruption detected (damaged or missing object, size not backed by layers)",
        ),
        (
            NOT_FOUND,
            "no such database, branch, tag or revision (or an ambiguous prefix)",
        ),
        (EXPIRED, "the revision expired: gc removed its data"),
        (
            UNAVAILABLE,
            "catalog server or object store unreachable: retry later",
        ),
        (
            CONFIG,
            "configuration: no catalog, catalog and store do not belong together, bad URL",
        ),
        (
            INTERRUPTED,
            "interrupted by Ctrl-C (143: by SIGTERM); temporary files removed",
        ),
    ];

    /// The exit codes as a help section.
    pub fn help() -> String {
        let mut s = String::from("Exit codes:\n");
        for (code, what) in TABLE {
            s.push_str(&format!("  {code:>3}  {what}\n"));
        }
        s
    }
}

impl Error {
    /// The error for reading (or building on) a commit that gc expired at `at`.
    pub fn expired(commit_id: &str, at: crate::catalog::Millis) -> Error {
        Error::Expired(crate::catalog::expired_message(commit_id, at))
    }

    /// Wraps an I/O error on a local path.
    pub fn file(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::File {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// The documented exit code of this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadName { .. }
            | Error::BadRevision { .. }
            | Error::BadTime(..)
            | Error::NoRepoSelected
            | Error::Usage { .. } => exit::USAGE,
            Error::NoSuchRepo(_)
            | Error::NoSuchRef { .. }
            | Error::UnknownRevision { .. }
            | Error::AmbiguousRevision { .. }
            | Error::TimeOutOfRange(_)
            | Error::NoSuchAncestor(_) => exit::NOT_FOUND,
            Error::TargetExists(_)
            | Error::RepoExists(_)
            | Error::RefExists { .. }
            | Error::Conflict(_)
            | Error::MergeConflict(_)
            | Error::Refused(_) => exit::REFUSED,
            Error::NothingToCommit { .. } => exit::NOTHING_TO_COMMIT,
            Error::Expired(_) => exit::EXPIRED,
            Error::Corrupt(_) | Error::Damaged(_) => exit::CORRUPT,
            Error::Layer(LayerError::Io(_) | LayerError::Invalid(_)) => exit::ERROR,
            Error::Layer(_) => exit::CORRUPT,
            Error::Config(_) | Error::StoreMismatch(_) => exit::CONFIG,
            Error::Interrupted("SIGTERM") => exit::TERMINATED,
            Error::Interrupted(_) => exit::INTERRUPTED,
            Error::Catalog(e) => match e {
                CatalogError::NotFound { .. } => exit::NOT_FOUND,
                CatalogError::Conflict(_)
                | CatalogError::LeaseHeld { .. }
                | CatalogError::PendingChanges { .. }
                | CatalogError::Fenced(_)
                | CatalogError::Refused(_)
                | CatalogError::Exists { .. } => exit::REFUSED,
                CatalogError::NothingPending => exit::NOTHING_TO_COMMIT,
                CatalogError::Expired(_) => exit::EXPIRED,
                CatalogError::BadRow { .. } => exit::CORRUPT,
                CatalogError::BadUrl(_) | CatalogError::Missing { .. } => exit::CONFIG,
                CatalogError::Db { error, .. } | CatalogError::Unreachable { error, .. } => {
                    db_exit_code(error)
                }
                CatalogError::Migrate { .. } | CatalogError::Sqlite { .. } => exit::ERROR,
            },
            Error::Store(e) => match e {
                StoreError::NotFound(_) => exit::CORRUPT,
                StoreError::Backend(_) | StoreError::Injected(_) => exit::UNAVAILABLE,
                _ => exit::ERROR,
            },
            Error::File { .. } | Error::Invalid(_) | Error::Output(_) | Error::LostWrites(_) => {
                exit::ERROR
            }
        }
    }

    /// A one-line suggestion printed under the error by the CLI, when there is a useful one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::NoSuchRepo(_) => Some("`quackfs repos` lists the databases; `quackfs init NAME` creates one".into()),
            Error::NoRepoSelected => Some(
                "pass -r NAME, set QUACKFS_REPO, or run `quackfs use NAME` (`quackfs repos` lists them)".into(),
            ),
            Error::NoSuchRef { kind: "branch", .. } => Some("`quackfs branch` lists the branches".into()),
            Error::NoSuchRef { kind: "current branch", repo, .. } => Some(format!(
                "`quackfs use {repo}@BRANCH` picks another one (`quackfs branch -r {repo}` lists them), or name a revision"
            )),
            Error::NoSuchRef { kind: "tag", .. } => Some("`quackfs tag` lists the tags".into()),
            Error::UnknownRevision { .. } => Some(
                "a revision is a branch, a tag, a commit id (4+ hex digits), REV~N or REV@{TIME}; `quackfs log` shows commits".into(),
            ),
            Error::AmbiguousRevision { .. } => Some("give more hex digits of the commit id".into()),
            Error::Config(m) if m.starts_with("invalid QUACKFS_") => Some(
                "docs/operations.md lists the QUACKFS_* variables and their defaults; unset it for the default".into(),
            ),
            Error::TargetExists(_) => Some("pass --force to overwrite it".into()),
            Error::Usage { hint, .. } => Some(hint.clone()),
            Error::MergeConflict(_) => Some(
                "the conflicts are listed above; resolve them with --ours or --theirs, or change one side and apply again".into(),
            ),
            Error::NothingToCommit { unsynced: Some(unsynced), .. } => Some(format!(
                "{unsynced}: a file's bytes are committed once they are synced (fsync, `sync FILE`, or unmounting); DuckDB syncs its own at each commit"
            )),
            Error::NothingToCommit { checkpoint_head: Some(head), .. } => Some(format!(
                "the head, {head}, already has every synced byte: a DuckDB checkpoint on a mount is committed by itself; use --allow-empty to record a commit anyway"
            )),
            Error::NothingToCommit { .. } => Some("use --allow-empty to record a commit anyway".into()),
            Error::BadTime(..) => Some(
                "use RFC 3339 (2024-05-01T12:00:00Z), YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' or 'N hours ago'".into(),
            ),
            Error::Store(StoreError::NoSpace(_)) => Some("free disk space and run the command again; nothing was committed".into()),
            // (What a command writes beside the store: an export's files, apply's working copy
            // of each database in DATA_DIR/tmp. The command removed what it had written.)
            Error::File { source, .. } if is_no_space(source) => {
                Some("free disk space on that filesystem and run the command again".into())
            }
            Error::LostWrites(_) => Some(
                "what DuckDB synced (committed transactions) is safe; the mount's log (DATA_DIR/logs) has the details".into(),
            ),
            Error::Catalog(CatalogError::LeaseHeld { holder, branch, .. }) => Some(match crate::process::holder_dir(holder) {
                Some(dir) => format!("unmount it first (`quackfs umount {dir}` on the host that mounted it), or name another branch with -b"),
                None => format!("unmount branch {branch} first, or name another branch with -b"),
            }),
            Error::Catalog(CatalogError::PendingChanges { branch }) => Some(format!(
                "seal them into a commit first with `quackfs commit -b {branch}` (`quackfs status` shows them)"
            )),
            Error::Catalog(CatalogError::Conflict(_)) => {
                Some("someone else committed to the branch meanwhile; run the command again".into())
            }
            Error::Catalog(e) if e.is_no_space() => Some(
                "the catalog's disk is full: free space there and run the command again; nothing was committed".into(),
            ),
            Error::Catalog(CatalogError::Migrate {
                source: sqlx::migrate::MigrateError::VersionMissing(_),
                ..
            }) => Some(
                "a newer quackfs has upgraded this catalog (it holds data this version cannot read): use that version or a later one".into(),
            ),
            Error::Catalog(CatalogError::Db { .. } | CatalogError::Unreachable { .. }) => {
                Some("check that the catalog server is up and the URL is right (QUACKFS_CATALOG / --catalog)".into())
            }
            Error::Layer(LayerError::Io(e)) if is_no_space(e) => {
                Some("free disk space and run the command again; nothing was committed".into())
            }
            Error::Layer(LayerError::Io(_) | LayerError::Invalid(_)) => None,
            Error::Corrupt(_) | Error::Layer(_) => Some("run `quackfs verify --all` to find every damaged object".into()),
            Error::Damaged(_) => Some(
                "each damaged object and file is listed above; the commits that need them do not read correctly until the objects are restored".into(),
            ),
            Error::Catalog(CatalogError::Missing { .. }) => Some(
                "only `quackfs init NAME` creates a catalog; if you expected an existing one, check --catalog / QUACKFS_CATALOG and --data-dir".into(),
            ),
            Error::StoreMismatch(_) => Some(
                "a catalog and its object store are bound to each other when the catalog is created; check --catalog / QUACKFS_CATALOG and --store / QUACKFS_STORE (docs/operations.md)".into(),
            ),
            Error::Expired(_) | Error::Catalog(CatalogError::Expired(_)) => Some("`quackfs log` marks expired commits; use a newer one".into()),
            _ => None,
        }
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Unreachable servers are `UNAVAILABLE`; a PostgreSQL database that does not exist, a role
/// that does not exist or a wrong password (SQLSTATE 3D000, class 28) are `CONFIG`.
fn db_exit_code(e: &sqlx::Error) -> u8 {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => exit::UNAVAILABLE,
        sqlx::Error::Database(d)
            if d.code()
                .is_some_and(|c| c == "3D000" || c.starts_with("28")) =>
        {
            exit::CONFIG
        }
        _ => exit::ERROR,
    }
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::exit;

    #[test]
    fn docs_list_every_exit_code() {
        let docs = include_str!("../docs/cli.md");
        for (code, what) in exit::TABLE {
            let row = format!("| {code} | {what} |");
            assert!(docs.contains(&row), "docs/cli.md lacks {row}");
        }
        let help = exit::help();
        assert!(exit::TABLE.iter().all(|(_, what)| help.contains(what)));
    }
}
