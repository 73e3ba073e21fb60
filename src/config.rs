//! Configuration: flag > environment > config file > default (see `CLI.md`).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Values from `$XDG_CONFIG_HOME/quackfs/config.toml`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub catalog: Option<String>,
    pub store: Option<String>,
    pub repo: Option<String>,
    pub author: Option<String>,
}

/// The effective configuration of one invocation.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub catalog_url: String,
    pub store_url: String,
    pub repo: Option<String>,
    pub author: String,
}

/// Values given on the command line (already merged with the environment by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub catalog: Option<String>,
    pub store: Option<String>,
    pub repo: Option<String>,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_CONFIG_HOME/quackfs/config.toml` (or `~/.config/...`).
pub fn config_file_path() -> Option<PathBuf> {
    env_path("XDG_CONFIG_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("quackfs").join("config.toml"))
}

fn default_data_dir() -> Result<PathBuf> {
    env_path("XDG_DATA_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".local").join("share")))
        .map(|d| d.join("quackfs"))
        .ok_or_else(|| {
            Error::Config(
                "cannot find a data directory: set HOME, XDG_DATA_HOME or QUACKFS_HOME".into(),
            )
        })
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(Error::file(path, e)),
    }
}

impl Config {
    /// Resolves the configuration from overrides (flags and environment), the config file and defaults.
    pub fn load(o: Overrides) -> Result<Config> {
        let file = match config_file_path() {
            Some(p) => read_file_config(&p)?,
            None => FileConfig::default(),
        };
        let data_dir = match o.data_dir.or(file.data_dir) {
            Some(d) => d,
            None => default_data_dir()?,
        };
        let data_dir = if data_dir.is_absolute() {
            data_dir
        } else {
            std::env::current_dir()
                .map_err(|e| Error::file(".", e))?
                .join(data_dir)
        };
        let catalog_url = o
            .catalog
            .or(file.catalog)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("catalog.sqlite").display()));
        let store_url = o
            .store
            .or(file.store)
            .unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display()));
        let author = std::env::var("QUACKFS_AUTHOR")
            .ok()
            .filter(|a| !a.is_empty())
            .or(file.author)
            .unwrap_or_else(default_author);
        Ok(Config {
            data_dir,
            catalog_url,
            store_url,
            repo: o.repo.or(file.repo),
            author,
        })
    }

    /// Local state (current database) lives here.
    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("state.toml")
    }

    /// Scratch space for layers being written (same filesystem as the local store).
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }

    /// Mounts' private directories for DuckDB's spill files (one per mount, removed at unmount).
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    /// Mount pid and ready files.
    pub fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }

    /// Logs of mounts started with `--daemon`.
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// The disk cache of extents read from a remote store.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache").join("extents")
    }

    /// The directories a mount writes into while it serves, named for messages: a mount point
    /// inside one of them would make the mount wait on itself.
    pub fn working_dirs(&self) -> Vec<(&'static str, PathBuf)> {
        let mut dirs = vec![
            ("the temporary directory", self.tmp_dir()),
            ("the scratch directory", self.scratch_dir()),
            ("the run directory", self.run_dir()),
            ("the log directory", self.logs_dir()),
            ("the disk cache", self.cache_dir()),
        ];
        if let Some(p) = self.store_url.strip_prefix("file://") {
            dirs.push(("the object store", PathBuf::from(p)));
        }
        dirs
    }
}

fn default_author() -> String {
    // (Services and containers often set neither variable: then the account of the process.)
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| whoami::username().ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// The locally remembered current database and branch (`quackfs use`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct LocalState {
    pub repo: Option<String>,
    pub branch: Option<String>,
}

impl LocalState {
    pub fn load(path: &Path) -> Result<LocalState> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LocalState::default()),
            Err(e) => Err(Error::file(path, e)),
        }
    }

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
        }
        crate::tmpfiles::write_whole(path, text).map_err(|e| Error::file(path, e))
    }
}
