//! quackfs: Git for DuckDB databases.
//!
//! A repository is one database (its `.duckdb` file, WAL and siblings). Its history is a chain of
//! commits; each commit owns immutable *layers* holding only the byte ranges that changed.
//! See `docs/architecture.md` for the model.

pub mod catalog;
pub mod config;
pub mod engine;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod layer;
pub mod metrics;
pub mod mountinfo;
pub mod names;
pub mod process;
pub mod refspec;
pub mod rows;
pub mod store;
pub mod tmpfiles;
pub mod tuning;
