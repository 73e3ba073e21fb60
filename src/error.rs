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
    #[error("nothing to commit")]
    NothingToCommit,
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
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

impl Error {
    /// Wraps an I/O error on a local path.
    pub fn file(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::File {
            path: path.as_ref().display().to_string(),
            source,
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
            Error::NoSuchRef { kind: "tag", .. } => Some("`quackfs tag` lists the tags".into()),
            Error::UnknownRevision { .. } => Some(
                "a revision is a branch, a tag, a commit id (4+ hex digits), REV~N or REV@{TIME}; `quackfs log` shows commits".into(),
            ),
            Error::AmbiguousRevision { .. } => Some("give more hex digits of the commit id".into()),
            Error::TargetExists(_) => Some("pass --force to overwrite it".into()),
            Error::NothingToCommit => Some("use --allow-empty to record a commit anyway".into()),
            Error::BadTime(..) => Some(
                "use RFC 3339 (2024-05-01T12:00:00Z), YYYY-MM-DD, 'YYYY-MM-DD HH:MM[:SS]' or 'N hours ago'".into(),
            ),
            Error::Store(StoreError::NoSpace(_)) => Some("free disk space and run the command again; nothing was committed".into()),
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
            Error::Catalog(CatalogError::Db { .. }) => {
                Some("check that the catalog server is up and the URL is right (QUACKFS_CATALOG / --catalog)".into())
            }
            Error::Corrupt(_) | Error::Layer(_) => Some("run `quackfs verify --all` to find every damaged object".into()),
            _ => None,
        }
    }
}

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
