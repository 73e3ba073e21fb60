//! Row-level history, computed by DuckDB itself on versions served in place (read-only snapshot
//! mounts, nothing exported): what changed between two versions table by table
//! (`diff --rows`), and bringing one branch's row changes into another ([`apply`]).
//!
//! Rows are matched by the table's primary key where both sides have the same one, otherwise as
//! a multiset of whole rows. Tables whose storage did not change are not scanned (see
//! [`unchanged_tables`] and docs/rows.md for why that is sound).

pub mod apply;
pub mod duck;
pub mod objects;

use crate::error::Result;
use duck::{ident, int, lit, text, Row};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The first DuckDB block starts after the main header and the two database headers.
pub const FIRST_BLOCK: u64 = 3 * 4096;

/// Tables per attached database, by (schema, name).
pub type TablesByDb = BTreeMap<String, BTreeMap<(String, String), Table>>;

/// One table of one version.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// (name, type) in column order.
    pub columns: Vec<(String, String)>,
    /// The primary key's columns, if it has one.
    pub key: Option<Vec<String>>,
    /// Column defaults, as DuckDB prints their expressions, by column.
    #[serde(skip)]
    pub defaults: BTreeMap<String, String>,
    /// Columns declared NOT NULL.
    #[serde(skip)]
    pub not_null: BTreeSet<String>,
    /// Generated columns (`GENERATED ALWAYS AS …`): computed by DuckDB, never written.
    #[serde(skip)]
    pub generated: BTreeSet<String>,
    /// Columns read under another name (name here -> name in the database), see
    /// [`Table::renamed`].
    #[serde(skip)]
    pub aliases: BTreeMap<String, String>,
    /// DuckDB's CREATE TABLE statement for it.
    #[serde(skip)]
    pub sql: String,
    /// Its place in its database's catalog (DuckDB's oid): a table a foreign key refers to comes
    /// before the tables that refer to it. Not part of what the table is (`==` ignores it).
    #[serde(skip)]
    pub order: i64,
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.schema,
            &self.name,
            &self.columns,
            &self.key,
            &self.defaults,
            &self.not_null,
            &self.sql,
        ) == (
            &other.schema,
            &other.name,
            &other.columns,
            &other.key,
            &other.defaults,
            &other.not_null,
            &other.sql,
        )
    }
}

impl Eq for Table {}

impl Table {
    /// `name`, or `schema.name` outside `main`.
    pub fn display(&self) -> String {
        display_name(&self.schema, &self.name)
    }

    /// The table in the database attached as `db`.
    pub fn in_db(&self, db: &str) -> String {
        format!(
            "{}.{}.{}",
            ident(db),
            ident(&self.schema),
            ident(&self.name)
        )
    }

    fn column_type(&self, c: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, t)| t.as_str())
    }

    /// The table as if its columns `renames` (old -> new) had their new names: queries read
    /// them under those names (see [`relation`]); its attributes follow.
    pub fn renamed(&self, renames: &BTreeMap<String, String>) -> Table {
        let mut t = self.clone();
        for (old, new) in renames {
            if t.column_type(old).is_none() || t.column_type(new).is_some() {
                continue;
            }
            for (c, _) in t.columns.iter_mut().filter(|(c, _)| c == old) {
                *c = new.clone();
            }
            if let Some(k) = t.key.as_mut() {
                for c in k.iter_mut().filter(|c| *c == old) {
                    *c = new.clone();
                }
            }
            if let Some(d) = t.defaults.remove(old) {
                t.defaults.insert(new.clone(), d);
            }
            for set in [&mut t.not_null, &mut t.generated] {
                if set.remove(old) {
                    set.insert(new.clone());
                }
            }
            let actual = t.aliases.remove(old).unwrap_or_else(|| old.clone());
            t.aliases.insert(new.clone(), actual);
        }
        t
    }

    /// The name of column `c` in the database.
    fn actual<'a>(&'a self, c: &'a str) -> &'a str {
        self.aliases.get(c).map_or(c, String::as_str)
    }
}

pub fn display_name(schema: &str, name: &str) -> String {
    if schema == "main" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

/// `ATTACH` statements for `(alias, file, read_only)`.
pub fn attach(sides: &[(&str, &PathBuf, bool)]) -> String {
    let mut s = String::new();
    for (alias, path, ro) in sides {
        s.push_str(&format!(
            "ATTACH {} AS {}{};\n",
            lit(&path.to_string_lossy()),
            ident(alias),
            if *ro { " (READ_ONLY)" } else { "" }
        ));
    }
    s
}

/// The table queries of [`read_catalog`], for the databases attached as `dbs`.
fn tables_sql(dbs: &[&str]) -> String {
    let list = dbs.iter().map(|d| lit(d)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT database_name AS db, schema_name AS s, table_name AS t, sql, table_oid AS oid FROM duckdb_tables() WHERE database_name IN ({list}) AND NOT temporary ORDER BY 1, 2, 3;\n\
         SELECT database_name AS db, schema_name AS s, table_name AS t, column_name AS c, data_type AS ty, column_default AS d, is_nullable AS n FROM duckdb_columns() WHERE database_name IN ({list}) ORDER BY db, s, t, column_index;\n\
         SELECT database_name AS db, schema_name AS s, table_name AS t, constraint_column_names AS k FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY' AND database_name IN ({list});\n"
    )
}

/// Tables per attached database, from the three results of [`tables_sql`].
fn parse_tables(results: &mut std::vec::IntoIter<Vec<Row>>) -> Result<TablesByDb> {
    let tables = duck::take(results, "the list of tables")?;
    let columns = duck::take(results, "the list of columns")?;
    let keys = duck::take(results, "the primary keys")?;
    let mut out: BTreeMap<String, BTreeMap<(String, String), Table>> = BTreeMap::new();
    for r in &tables {
        let (db, s, t) = (text(r, "db"), text(r, "s"), text(r, "t"));
        out.entry(db).or_default().insert(
            (s.clone(), t.clone()),
            Table {
                schema: s,
                name: t,
                columns: Vec::new(),
                key: None,
                defaults: BTreeMap::new(),
                not_null: BTreeSet::new(),
                generated: BTreeSet::new(),
                aliases: BTreeMap::new(),
                sql: text(r, "sql"),
                order: int(r, "oid"),
            },
        );
    }
    for r in &columns {
        if let Some(t) = out
            .get_mut(&text(r, "db"))
            .and_then(|m| m.get_mut(&(text(r, "s"), text(r, "t"))))
        {
            let (c, ty) = (text(r, "c"), text(r, "ty"));
            if let Some(serde_json::Value::String(d)) = r.get("d") {
                // duckdb_columns() gives a generated column's expression as its default; only
                // the table's CREATE statement tells them apart.
                let generated = [c.clone(), ident(&c)]
                    .iter()
                    .any(|n| t.sql.contains(&format!("{n} {ty} GENERATED ALWAYS AS")));
                if generated {
                    t.generated.insert(c.clone());
                } else {
                    t.defaults.insert(c.clone(), d.clone());
                }
            }
            if r.get("n") == Some(&serde_json::Value::Bool(false)) {
                t.not_null.insert(c.clone());
            }
            t.columns.push((c, ty));
        }
    }
    for r in &keys {
        if let Some(t) = out
            .get_mut(&text(r, "db"))
            .and_then(|m| m.get_mut(&(text(r, "s"), text(r, "t"))))
        {
            let k: Vec<String> = match r.get("k") {
                Some(serde_json::Value::Array(v)) => v
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            if !k.is_empty() {
                t.key = Some(k);
            }
        }
    }
    Ok(out)
}

/// The tables and other catalog objects of the databases attached by `attach_sql` as `dbs`, read
/// in one DuckDB run.
pub async fn read_catalog(
    attach_sql: &str,
    dbs: &[&str],
) -> Result<(TablesByDb, BTreeMap<String, objects::Objects>)> {
    let results = duck::run(&format!(
        "{attach_sql}{}{}",
        tables_sql(dbs),
        objects::objects_sql(dbs)
    ))
    .await?;
    let mut results = results.into_iter();
    Ok((parse_tables(&mut results)?, objects::parse(&mut results)?))
}

/// Columns `t` has under a new name: a column of `b` that `t` lacks, where `t` has, at the same
/// place, a column of the same type that `b` lacks (old name -> new name).
pub fn renamed_columns(b: &Table, t: &Table) -> BTreeMap<String, String> {
    b.columns
        .iter()
        .zip(&t.columns)
        .filter(|((old, bt), (new, tt))| {
            bt == tt && old != new && t.column_type(old).is_none() && b.column_type(new).is_none()
        })
        .map(|((old, _), (new, _))| (old.clone(), new.clone()))
        .collect()
}

/// Renamed columns (old -> new), in words.
pub fn renames_in_words(renames: &BTreeMap<String, String>) -> Vec<String> {
    renames
        .iter()
        .map(|(old, new)| format!("column {old} renamed to {new}"))
        .collect()
}

/// How a table's columns changed from `old` to `new`, in words.
pub fn schema_changes(old: &Table, new: &Table) -> Vec<String> {
    let mut out = Vec::new();
    let default = |t: &Table, c: &str| t.defaults.get(c).cloned().unwrap_or("none".into());
    for (c, ty) in &new.columns {
        let Some(o) = old.column_type(c) else {
            let d = new.defaults.get(c).map(|d| format!(" DEFAULT {d}"));
            let nn = if new.not_null.contains(c) {
                " NOT NULL"
            } else {
                ""
            };
            out.push(format!(
                "column {c} added ({ty}{}{nn})",
                d.unwrap_or_default()
            ));
            continue;
        };
        if o != ty {
            out.push(format!("column {c} retyped {o} -> {ty}"));
        }
        if old.defaults.get(c) != new.defaults.get(c) {
            out.push(format!(
                "column {c} default {} -> {}",
                default(old, c),
                default(new, c)
            ));
        }
        match (old.not_null.contains(c), new.not_null.contains(c)) {
            (false, true) => out.push(format!("column {c} NOT NULL set")),
            (true, false) => out.push(format!("column {c} NOT NULL dropped")),
            _ => {}
        }
    }
    for (c, _) in &old.columns {
        if new.column_type(c).is_none() {
            out.push(format!("column {c} dropped"));
        }
    }
    if old.key != new.key {
        out.push(format!(
            "primary key {} -> {}",
            old.key
                .as_ref()
                .map(|k| k.join(", "))
                .unwrap_or_else(|| "none".into()),
            new.key
                .as_ref()
                .map(|k| k.join(", "))
                .unwrap_or_else(|| "none".into())
        ));
    }
    out
}

/// The columns rows are compared on: every column of either side, in `first`'s order then the
/// others'; a side without one reads NULL, and a column whose type differs is compared as text.
pub fn compare_columns(sides: &[&Table]) -> Vec<(String, String, bool)> {
    let mut names: Vec<String> = Vec::new();
    for t in sides {
        for (c, _) in &t.columns {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|c| {
            let types: BTreeSet<&str> = sides.iter().filter_map(|t| t.column_type(&c)).collect();
            let same = types.len() == 1;
            let ty = if same {
                types
                    .iter()
                    .next()
                    .copied()
                    .unwrap_or("VARCHAR")
                    .to_string()
            } else {
                "VARCHAR".to_string()
            };
            (c, ty, !same)
        })
        .collect()
}

/// `SELECT` of the compared columns from `table` in `db` (a subquery), or an empty relation of
/// those columns when the side has no such table.
pub fn relation(db: &str, table: Option<&Table>, cols: &[(String, String, bool)]) -> String {
    relation_filled(db, table, cols, &BTreeMap::new())
}

/// [`relation`], where a column the table lacks reads `fill`'s expression for it, if any (else
/// NULL).
pub fn relation_filled(
    db: &str,
    table: Option<&Table>,
    cols: &[(String, String, bool)],
    fill: &BTreeMap<String, String>,
) -> String {
    let list = cols
        .iter()
        .map(
            |(c, ty, as_text)| match table.filter(|t| t.column_type(c).is_some()) {
                Some(t) if *as_text => {
                    format!("CAST({} AS VARCHAR) AS {}", ident(t.actual(c)), ident(c))
                }
                Some(t) => format!("{} AS {}", ident(t.actual(c)), ident(c)),
                None => format!(
                    "CAST({} AS {ty}) AS {}",
                    fill.get(c).map_or("NULL", String::as_str),
                    ident(c)
                ),
            },
        )
        .collect::<Vec<_>>()
        .join(", ");
    match table {
        Some(t) => format!("(SELECT {list} FROM {})", t.in_db(db)),
        None => format!("(SELECT {list} WHERE false)"),
    }
}

/// `a.k1 = b.k1 AND …`
pub fn key_match(a: &str, b: &str, key: &[String]) -> String {
    key.iter()
        .map(|k| format!("{a}.{} = {b}.{}", ident(k), ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `a.c IS DISTINCT FROM b.c OR …` over the non-key columns (`false` if there are none).
pub fn row_differs(a: &str, b: &str, cols: &[(String, String, bool)], key: &[String]) -> String {
    let parts: Vec<String> = cols
        .iter()
        .filter(|(c, _, _)| !key.contains(c))
        .map(|(c, _, _)| format!("{a}.{} IS DISTINCT FROM {b}.{}", ident(c), ident(c)))
        .collect();
    if parts.is_empty() {
        "false".into()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

/// The key rows are matched by between `sides`: the primary key if every side has the same one.
pub fn common_key(sides: &[&Table]) -> Option<Vec<String>> {
    let first = sides.first()?.key.clone()?;
    sides
        .iter()
        .all(|t| t.key.as_ref() == Some(&first))
        .then_some(first)
}

/// Row changes of one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableRows {
    pub table: String,
    /// "changed", "added" or "dropped".
    pub change: String,
    /// Columns rows were matched by (None: whole rows, as a multiset).
    pub key: Option<Vec<String>>,
    pub inserted: i64,
    pub deleted: i64,
    pub updated: i64,
    pub schema: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub examples: Option<Examples>,
}

/// Example rows of each kind of change (`--show N`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Examples {
    pub inserted: Vec<Row>,
    pub deleted: Vec<Row>,
    /// `{"old": …, "new": …}` pairs.
    pub updated: Vec<Row>,
}

/// The row diff of one database file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileRows {
    pub file: String,
    /// Tables with changes.
    pub tables: Vec<TableRows>,
    /// Tables scanned and found unchanged.
    pub unchanged: Vec<String>,
    /// Tables not scanned: their storage is the same on both sides.
    pub skipped: Vec<String>,
    /// Views, indexes, sequences, macros and types that changed, in words (`view v created`,
    /// `sequence ids advanced by 5`); not listed when only some tables are compared.
    pub objects: Vec<String>,
    /// Not compared at all: a side is an encrypted database (DuckDB opens it only with its key).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

/// What to compare.
pub struct RowDiffRequest<'a> {
    pub file: String,
    pub old: Option<PathBuf>,
    pub new: Option<PathBuf>,
    /// Byte ranges of the file that differ (from the extent maps); None: unknown, scan all.
    pub changed: Option<&'a [(u64, u64)]>,
    /// Only these tables (`name` or `schema.name`); empty: all.
    pub only: &'a [String],
    /// Example rows per kind.
    pub show: usize,
}

/// Per-table row changes between the old and new versions of one database file.
pub async fn diff_file(req: RowDiffRequest<'_>) -> Result<FileRows> {
    let mut sides: Vec<(&str, &PathBuf, bool)> = Vec::new();
    if let Some(p) = &req.old {
        sides.push(("old", p, true));
    }
    if let Some(p) = &req.new {
        sides.push(("new", p, true));
    }
    let att = attach(&sides);
    let dbs: Vec<&str> = sides.iter().map(|s| s.0).collect();
    let (mut all, mut objs) = read_catalog(&att, &dbs).await?;
    let old = all.remove("old").unwrap_or_default();
    let new = all.remove("new").unwrap_or_default();
    let wanted = |s: &str, n: &str| {
        req.only.is_empty()
            || req
                .only
                .iter()
                .any(|w| *w == display_name(s, n) || *w == format!("{s}.{n}"))
    };
    let names: BTreeSet<&(String, String)> = old
        .keys()
        .chain(new.keys())
        .filter(|(s, n)| wanted(s, n))
        .collect();
    let skipped = match (req.changed, req.old.is_some() && req.new.is_some()) {
        (Some(changed), true) => {
            let both: Vec<(&Table, &Table)> = names
                .iter()
                .filter_map(|k| Some((old.get(*k)?, new.get(*k)?)))
                .filter(|(a, b)| a == b)
                .collect();
            unchanged_tables(&att, &both, changed).await?
        }
        _ => BTreeSet::new(),
    };
    let mut out = FileRows {
        file: req.file.clone(),
        ..FileRows::default()
    };
    if req.only.is_empty() {
        let mut side = |db: &str| objs.remove(db).unwrap_or_default();
        out.objects = objects::changes(&side("old"), &side("new"));
    }
    // One DuckDB run for every table to scan: counts, then examples.
    let mut script = att.clone();
    let mut plan: Vec<TableRows> = Vec::new();
    for k in &names {
        let (a, b) = (old.get(*k), new.get(*k));
        // A column renamed (see [`renamed_columns`]) is compared under its new name.
        let renames = match (a, b) {
            (Some(a), Some(b)) => renamed_columns(a, b),
            _ => BTreeMap::new(),
        };
        let a_renamed = a.map(|a| a.renamed(&renames));
        let a = a_renamed.as_ref();
        let display = display_name(&k.0, &k.1);
        if skipped.contains(&display) {
            out.skipped.push(display);
            continue;
        }
        let present: Vec<&Table> = [a, b].into_iter().flatten().collect();
        let cols = compare_columns(&present);
        let key = match (a, b) {
            (Some(a), Some(b)) => common_key(&[a, b]),
            _ => present.first().and_then(|t| t.key.clone()),
        };
        let (ra, rb) = (relation("old", a, &cols), relation("new", b, &cols));
        let n = req.show;
        match &key {
            Some(key) => {
                let on = key_match("__x", "__y", key);
                let differs = row_differs("__x", "__y", &cols, key);
                script.push_str(&format!(
                    "SELECT (SELECT count(*) FROM {rb} __y ANTI JOIN {ra} __x ON {on}) AS ins, \
                     (SELECT count(*) FROM {ra} __x ANTI JOIN {rb} __y ON {on}) AS del, \
                     (SELECT count(*) FROM {ra} __x JOIN {rb} __y ON {on} WHERE {differs}) AS upd;\n"
                ));
                if n > 0 {
                    script.push_str(&format!(
                        "SELECT __y.* FROM {rb} __y ANTI JOIN {ra} __x ON {on} LIMIT {n};\n\
                         SELECT __x.* FROM {ra} __x ANTI JOIN {rb} __y ON {on} LIMIT {n};\n\
                         SELECT {}, {} FROM {ra} __x JOIN {rb} __y ON {on} WHERE {differs} LIMIT {n};\n",
                        duck::tagged("__x", "old", &cols),
                        duck::tagged("__y", "new", &cols),
                    ));
                }
            }
            None => {
                script.push_str(&format!(
                    "SELECT (SELECT count(*) FROM ({rb} EXCEPT ALL {ra})) AS ins, \
                     (SELECT count(*) FROM ({ra} EXCEPT ALL {rb})) AS del, 0 AS upd;\n"
                ));
                if n > 0 {
                    script.push_str(&format!(
                        "SELECT * FROM ({rb} EXCEPT ALL {ra}) LIMIT {n};\n\
                         SELECT * FROM ({ra} EXCEPT ALL {rb}) LIMIT {n};\n\
                         SELECT 1 AS none WHERE false;\n"
                    ));
                }
            }
        }
        plan.push(TableRows {
            table: display,
            change: match (a, b) {
                (None, Some(_)) => "added",
                (Some(_), None) => "dropped",
                _ => "changed",
            }
            .into(),
            key,
            schema: match (a, b) {
                (Some(a), Some(b)) => renames_in_words(&renames)
                    .into_iter()
                    .chain(schema_changes(a, b))
                    .collect(),
                _ => Vec::new(),
            },
            ..TableRows::default()
        });
    }
    if plan.is_empty() {
        return Ok(out);
    }
    let mut results = duck::run(&script).await?.into_iter();
    for mut t in plan {
        let counts = duck::take(&mut results, &t.table)?;
        let c = counts.first().cloned().unwrap_or_default();
        t.inserted = int(&c, "ins");
        t.deleted = int(&c, "del");
        t.updated = int(&c, "upd");
        if req.show > 0 {
            let inserted = duck::take(&mut results, &t.table)?;
            let deleted = duck::take(&mut results, &t.table)?;
            let updated = duck::take(&mut results, &t.table)?
                .iter()
                .map(|r| {
                    let mut pair = Row::new();
                    for side in ["old", "new"] {
                        pair.insert(side.into(), serde_json::Value::Object(duck::untag(r, side)));
                    }
                    pair
                })
                .collect();
            t.examples = Some(Examples {
                inserted,
                deleted,
                updated,
            });
        }
        let changed =
            t.change != "changed" || t.inserted + t.deleted + t.updated > 0 || !t.schema.is_empty();
        if changed {
            out.tables.push(t);
        } else {
            out.unchanged.push(t.table);
        }
    }
    Ok(out)
}

/// The tables (by display name) of `both` (same schema on both sides) whose storage is
/// provably the same in the old and new versions, so their rows are too:
///
/// - DuckDB never changes a table's rows without writing them: appended and updated rows go to
///   column segments, which checkpoints write into blocks; a changed segment is a new block or
///   new bytes in a block. A block none of whose bytes changed (by the extent maps) holds the
///   same data on both sides.
/// - Deleted rows are kept in delete markers in metadata blocks, shared by all tables, so they are
///   caught by the exact row count instead.
/// - Rows not yet checkpointed (replayed from a WAL) show as non-persistent segments or segments
///   with updates.
///
/// A table is skipped when its segment list (`pragma_storage_info`) is identical on both sides,
/// every segment is persistent and has no updates, none of its blocks lies in a changed byte
/// range, and both sides count the same rows. Anything else is scanned.
pub async fn unchanged_tables(
    attach_sql: &str,
    both: &[(&Table, &Table)],
    changed: &[(u64, u64)],
) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if both.is_empty() {
        return Ok(out);
    }
    let mut script = attach_sql.to_string();
    script.push_str(
        "SELECT database_name AS db, block_size AS bs FROM pragma_database_size() WHERE database_name IN ('old', 'new');\n",
    );
    for (a, _) in both {
        for db in ["old", "new"] {
            let qualified = format!("{}.{}.{}", ident(db), ident(&a.schema), ident(&a.name));
            script.push_str(&format!(
                "SELECT row_group_id, column_path, segment_id, segment_type, start, count, compression, stats, has_updates, persistent, block_id, block_offset, segment_info, additional_block_ids FROM pragma_storage_info({}) ORDER BY row_group_id, column_id, column_path, segment_id;\n\
                 SELECT count(*) AS n FROM {qualified};\n",
                lit(&qualified)
            ));
        }
    }
    let mut results = duck::run(&script).await?.into_iter();
    let sizes = duck::take(&mut results, "block sizes")?;
    let bs: Vec<i64> = sizes.iter().map(|r| int(r, "bs")).collect();
    // Both sides must use one block size for block numbers to mean the same bytes.
    let block_size = match bs.as_slice() {
        [a, b] if a == b && *a > 0 => *a as u64,
        _ => return Ok(out),
    };
    let touched = |block: i64| -> bool {
        if block < 0 {
            return false;
        }
        let start = FIRST_BLOCK + block as u64 * block_size;
        let end = start + block_size;
        changed.iter().any(|&(s, e)| s < end && e > start)
    };
    for (a, _) in both {
        let so = duck::take(&mut results, "storage")?;
        let no = duck::take(&mut results, "row count")?;
        let sn = duck::take(&mut results, "storage")?;
        let nn = duck::take(&mut results, "row count")?;
        let clean = so.iter().all(|r| {
            r.get("persistent") == Some(&serde_json::Value::Bool(true))
                && r.get("has_updates") == Some(&serde_json::Value::Bool(false))
        });
        let blocks_untouched = so.iter().all(|r| {
            let extra = match r.get("additional_block_ids") {
                Some(serde_json::Value::Array(v)) => v.iter().filter_map(|x| x.as_i64()).collect(),
                _ => Vec::new(),
            };
            !touched(int(r, "block_id")) && !extra.into_iter().any(touched)
        });
        if so == sn && clean && blocks_untouched && no == nn {
            out.insert(a.display());
        }
    }
    Ok(out)
}
