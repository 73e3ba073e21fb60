//! Three-way merge by rows of one DuckDB database file: the changes SOURCE ("theirs") made since
//! the merge base ("base"), applied onto the branch's head ("ours"), table by table.
//!
//! Rows are matched by primary key when all three sides have the same one: a key changed on one
//! side takes that side's row; a key changed on both sides to the same row is no change; to
//! different rows (including deleted on one side, updated on the other) it is a conflict. Tables
//! without a common key merge as multisets of whole rows: ours plus the rows theirs added, minus
//! the rows theirs removed (never a conflict). Schema changes (tables created or dropped, columns
//! added, dropped or retyped) are applied from the side that made them; the same thing changed
//! differently on both sides refuses the merge.

use super::duck::{self, ident, int, Row};
use super::objects;
use super::{
    attach, common_key, compare_columns, key_match, read_catalog, relation, relation_filled,
    renamed_columns, renames_in_words, row_differs, schema_changes, Table,
};
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// How conflicting rows are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Conflicts refuse the merge.
    Refuse,
    /// Keep the branch's rows.
    Ours,
    /// Take the source's rows.
    Theirs,
}

/// What the merge does to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableMerge {
    pub table: String,
    /// "merged", "added" (created from the source), "dropped" (dropped as the source did);
    /// a merged table with conflicting rows: "conflicts" (nothing is committed), "merged, ours
    /// kept" (`--ours`) or "merged, theirs taken" (`--theirs`).
    pub action: String,
    pub key: Option<Vec<String>>,
    /// The source's changes since the merge base.
    pub theirs: Counts,
    /// The branch's changes since the merge base.
    pub ours: Counts,
    /// Rows changed on both sides differently.
    pub conflicts: i64,
    /// Schema changes taken from the source.
    pub schema: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub inserted: i64,
    pub deleted: i64,
    pub updated: i64,
}

impl Counts {
    pub fn total(&self) -> i64 {
        self.inserted + self.deleted + self.updated
    }
}

/// One conflicting row: its key and the row on each side (null: absent there).
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub table: String,
    pub key: Row,
    pub base: serde_json::Value,
    pub ours: serde_json::Value,
    pub theirs: serde_json::Value,
}

/// The merge of one database file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileMerge {
    pub file: String,
    pub tables: Vec<TableMerge>,
    /// Up to [`CONFLICTS_SHOWN`] conflicting rows, the first by their keys (each table's count is
    /// in `tables`).
    pub conflicts: Vec<Conflict>,
    /// Schema changes made differently on both sides, or that apply cannot bring over (the
    /// merge is refused).
    pub schema_conflicts: Vec<String>,
    /// The source's changes to views, indexes and sequences brought over, in words.
    pub objects: Vec<String>,
}

impl FileMerge {
    pub fn conflict_count(&self) -> i64 {
        self.tables.iter().map(|t| t.conflicts).sum()
    }
}

/// Conflicting rows listed per file.
pub const CONFLICTS_SHOWN: usize = 100;

/// The three versions of the file (None: it does not exist there).
pub struct Sides {
    pub base: Option<PathBuf>,
    pub ours: PathBuf,
    pub theirs: Option<PathBuf>,
}

/// What one table needs: its three versions.
struct Plan<'a> {
    name: String,
    b: Option<&'a Table>,
    o: Option<&'a Table>,
    t: Option<&'a Table>,
}

/// Analyses the merge (everything read-only); with `write`, also applies it to `sides.ours`,
/// which must then be a writable copy of the branch's version, and only if there are no
/// conflicts left under `resolve`.
pub async fn merge_file(
    file: &str,
    sides: &Sides,
    resolve: Resolve,
    write: bool,
) -> Result<FileMerge> {
    let mut att: Vec<(&str, &PathBuf, bool)> = vec![("ours", &sides.ours, !write)];
    if let Some(b) = &sides.base {
        att.push(("base", b, true));
    }
    if let Some(t) = &sides.theirs {
        att.push(("theirs", t, true));
    }
    let att_sql = attach(&att);
    let dbs: Vec<&str> = att.iter().map(|a| a.0).collect();
    let (mut all, mut objs) = read_catalog(&att_sql, &dbs).await?;
    let base = all.remove("base").unwrap_or_default();
    let ours = all.remove("ours").unwrap_or_default();
    let theirs = all.remove("theirs").unwrap_or_default();
    let mut side = |db: &str| objs.remove(db).unwrap_or_default();
    let (ob, oo, ot) = (side("base"), side("ours"), side("theirs"));
    let om = objects::merge(&ob, &oo, &ot);
    let names: BTreeSet<&(String, String)> = base
        .keys()
        .chain(ours.keys())
        .chain(theirs.keys())
        .collect();
    let plans: Vec<Plan> = names
        .into_iter()
        .map(|k| Plan {
            name: super::display_name(&k.0, &k.1),
            b: base.get(k),
            o: ours.get(k),
            t: theirs.get(k),
        })
        .collect();

    let mut out = FileMerge {
        file: file.to_string(),
        schema_conflicts: om.conflicts,
        objects: om.changes,
        ..FileMerge::default()
    };
    // Phase 1: per table, the changes of each side and the conflicts (temporary tables).
    let mut script = att_sql.clone();
    script.push_str("USE memory;\n");
    let mut analysed = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let Some(t) = table_deltas(i, p, &mut out.schema_conflicts) else {
            continue;
        };
        script.push_str(&t.sql);
        analysed.push((i, t));
    }
    let mut results = duck::run(&script).await?.into_iter();
    // Each table's removals and additions, with their places; see below.
    let mut removals: Vec<((u8, i64), String)> = Vec::new();
    let mut additions: Vec<((u8, i64), String)> = Vec::new();
    for (i, a) in &analysed {
        let p = &plans[*i];
        let counts = duck::take(&mut results, &p.name)?;
        let c = counts.first().cloned().unwrap_or_default();
        let conflict_rows = duck::take(&mut results, &p.name)?;
        let mut m = TableMerge {
            table: p.name.clone(),
            action: a.action.to_string(),
            key: a.key.clone(),
            theirs: Counts {
                inserted: int(&c, "ti"),
                deleted: int(&c, "td"),
                updated: int(&c, "tu"),
            },
            ours: Counts {
                inserted: int(&c, "oi"),
                deleted: int(&c, "od"),
                updated: int(&c, "ou"),
            },
            conflicts: int(&c, "cf"),
            schema: a.schema.clone(),
        };
        // A table the source dropped (or created) is taken as it did only if the branch left
        // it alone; otherwise it is a schema conflict.
        if a.action == "dropped" && (m.ours.total() > 0 || a.ours_schema_changed) {
            out.schema_conflicts.push(format!(
                "{}: dropped by the source, changed on the branch",
                p.name
            ));
        }
        if a.action == "kept" {
            if m.theirs.total() > 0 || a.theirs_schema_changed {
                out.schema_conflicts.push(format!(
                    "{}: dropped on the branch, changed by the source",
                    p.name
                ));
            }
            m.action = "merged".into();
            m.theirs = Counts::default();
            m.conflicts = 0;
        }
        for r in conflict_rows {
            if out.conflicts.len() >= CONFLICTS_SHOWN {
                break;
            }
            out.conflicts
                .push(conflict_of(&p.name, a.key.as_deref(), r));
        }
        if m.conflicts > 0 && m.action == "merged" {
            m.action = match resolve {
                Resolve::Refuse => "conflicts",
                Resolve::Ours => "merged, ours kept",
                Resolve::Theirs => "merged, theirs taken",
            }
            .into();
        }
        // In an order foreign keys allow (a table referred to comes before the tables that
        // refer to it in its catalog): removals from tables that refer to others before
        // removals from those they refer to, tables the source dropped first; additions the
        // other way round, to the tables the source created last (in its catalog's order).
        let w = a.write_sql(resolve);
        let (order_b, order_o, order_t) = (
            p.b.map_or(0, |t| t.order),
            p.o.map_or(0, |t| t.order),
            p.t.map_or(0, |t| t.order),
        );
        let (removal, addition) = match a.action {
            "dropped" => ((0, -order_b), (0, 0)),
            "added" => ((1, 0), (1, order_t)),
            _ => ((1, -order_o), (0, order_o)),
        };
        removals.push((removal, w.remove));
        additions.push((addition, w.add));
        out.tables.push(m);
    }
    if !write {
        return Ok(out);
    }
    if !out.schema_conflicts.is_empty() {
        return Err(Error::MergeConflict(format!(
            "{file}: schema changes cannot be merged: {}",
            out.schema_conflicts.join("; ")
        )));
    }
    if out.conflict_count() > 0 && resolve == Resolve::Refuse {
        return Err(Error::MergeConflict(format!(
            "{file}: {} row(s) changed differently on both sides",
            out.conflict_count()
        )));
    }
    // Phase 2: the same analysis in a writable session, then the changes.
    let mut script = att_sql;
    script.push_str("USE memory;\n");
    for (_, a) in &analysed {
        script.push_str(&a.sql);
    }
    // (No explicit transaction: DuckDB refuses ALTER TABLE after changes to the table in the same
    // transaction. The file is a private copy: a failure discards it whole.)
    // Sequences first (a default may use one), views and indexes over the merged tables last.
    script.push_str(&om.before);
    removals.sort_by_key(|w| w.0);
    additions.sort_by_key(|w| w.0);
    for (_, w) in removals.iter().chain(&additions) {
        script.push_str(w);
    }
    script.push_str(&om.after);
    script.push_str(&om.last);
    script.push_str("CHECKPOINT ours;\n");
    duck::run(&script).await?;
    Ok(out)
}

fn conflict_of(table: &str, key: Option<&[String]>, mut r: Row) -> Conflict {
    let key_cols = key.unwrap_or(&[]);
    let mut k = Row::new();
    for c in key_cols {
        if let Some(v) = r.remove(c) {
            k.insert(c.clone(), v);
        }
    }
    // A side without the row reads as NULLs (its key is NULL there).
    let side = |tag: &str| {
        let m = duck::untag(&r, tag);
        match key_cols.first() {
            Some(c) if m.get(c).is_none_or(|x| x.is_null()) => serde_json::Value::Null,
            _ => serde_json::Value::Object(m),
        }
    };
    Conflict {
        table: table.to_string(),
        key: k,
        base: side("base"),
        ours: side("ours"),
        theirs: side("theirs"),
    }
}

/// The analysis of one table: SQL that creates its temporary tables and prints two results
/// (counts, conflicting rows), and what to run to apply it.
struct Analysed {
    sql: String,
    action: &'static str,
    key: Option<Vec<String>>,
    schema: Vec<String>,
    ours_schema_changed: bool,
    theirs_schema_changed: bool,
    /// Statements applying the source's changes, by resolution.
    apply_refuse: Writes,
    apply_theirs: Writes,
}

impl Analysed {
    fn write_sql(&self, resolve: Resolve) -> Writes {
        match resolve {
            Resolve::Theirs => self.apply_theirs.clone(),
            Resolve::Refuse | Resolve::Ours => self.apply_refuse.clone(),
        }
    }
}

/// The statements that apply one table's merge, in two parts: all tables' removals (rows,
/// columns, tables) run before all their additions, so that foreign keys hold in between.
#[derive(Debug, Clone, Default)]
struct Writes {
    remove: String,
    add: String,
}

impl Writes {
    fn adding(add: String) -> Writes {
        Writes {
            remove: String::new(),
            add,
        }
    }

    fn removing(remove: String) -> Writes {
        Writes {
            remove,
            add: String::new(),
        }
    }
}

/// Column changes from `from` to `to`: (added with type, dropped, retyped to).
type ColumnChanges = (
    BTreeMap<String, String>,
    BTreeSet<String>,
    BTreeMap<String, String>,
);

fn column_changes(from: &Table, to: &Table) -> ColumnChanges {
    let mut added = BTreeMap::new();
    let mut retyped = BTreeMap::new();
    for (c, ty) in &to.columns {
        match from.column_type(c) {
            None => {
                added.insert(c.clone(), ty.clone());
            }
            Some(o) if o != ty => {
                retyped.insert(c.clone(), ty.clone());
            }
            _ => {}
        }
    }
    let dropped = from
        .columns
        .iter()
        .filter(|(c, _)| to.column_type(c).is_none())
        .map(|(c, _)| c.clone())
        .collect();
    (added, dropped, retyped)
}

/// The value each column `added` (by `t`) holds in the rows that were there when it was added:
/// its default, as an expression of its type, when that is the same for every row (no sequence,
/// clock or random number in it). A column without one (or with a volatile one) is left out:
/// those rows read NULL.
fn added_values(t: &Table, added: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    const VOLATILE: [&str; 10] = [
        "nextval",
        "currval",
        "random",
        "uuid",
        "now(",
        "current_",
        "get_current",
        "today(",
        "transaction_timestamp",
        "setseed",
    ];
    added
        .iter()
        .filter_map(|(c, ty)| {
            let d = t.defaults.get(c)?;
            let lower = d.to_ascii_lowercase();
            (!VOLATILE.iter().any(|v| lower.contains(v)))
                .then(|| (c.clone(), format!("CAST(({d}) AS {ty})")))
        })
        .collect()
}

fn table_deltas(i: usize, p: &Plan, schema_conflicts: &mut Vec<String>) -> Option<Analysed> {
    let name = &p.name;
    // Which tables exist where decides the kind of merge.
    let (o, action) = match (p.b, p.o, p.t) {
        // Created by the source only: created on the branch as the source has it.
        (None, None, Some(t)) => {
            let create = format!(
                "CREATE SCHEMA IF NOT EXISTS ours.{};\nUSE ours.{};\n{};\nUSE memory;\nINSERT INTO {} SELECT * FROM {};\n",
                ident(&t.schema),
                ident(&t.schema),
                t.sql.trim_end_matches(';'),
                t.in_db("ours"),
                t.in_db("theirs"),
            );
            return Some(Analysed {
                sql: format!(
                    "SELECT (SELECT count(*) FROM {}) AS ti;\nSELECT 1 AS none WHERE false;\n",
                    t.in_db("theirs")
                ),
                action: "added",
                key: t.key.clone(),
                schema: vec![format!("table {name} created")],
                ours_schema_changed: false,
                theirs_schema_changed: true,
                apply_refuse: Writes::adding(create.clone()),
                apply_theirs: Writes::adding(create),
            });
        }
        // Not on the branch: dropped there (kept dropped, unless the source changed it) or
        // dropped on both sides.
        (Some(_), None, _) | (None, None, None) => {
            let (b, t) = (p.b?, p.t?);
            let cols = compare_columns(&[b, t]);
            let key = common_key(&[b, t]);
            let changed = delta_counts(
                &cols,
                key.as_deref(),
                &relation("base", Some(b), &cols),
                &relation("theirs", Some(t), &cols),
            );
            return Some(Analysed {
                sql: format!("SELECT {changed};\nSELECT 1 AS none WHERE false;\n"),
                action: "kept",
                key,
                schema: Vec::new(),
                ours_schema_changed: false,
                theirs_schema_changed: b != t,
                apply_refuse: Writes::default(),
                apply_theirs: Writes::default(),
            });
        }
        (_, Some(o), None) => (o, if p.b.is_some() { "dropped" } else { "merged" }),
        (_, Some(o), Some(_)) => (o, "merged"),
    };
    if action == "dropped" {
        let b = p.b?;
        let cols = compare_columns(&[b, o]);
        let key = common_key(&[b, o]);
        let changed = delta_counts(
            &cols,
            key.as_deref(),
            &relation("base", Some(b), &cols),
            &relation("ours", Some(o), &cols),
        )
        .replace(" AS ti", " AS oi")
        .replace(" AS td", " AS od")
        .replace(" AS tu", " AS ou");
        let drop = format!("DROP TABLE {};\n", o.in_db("ours"));
        return Some(Analysed {
            sql: format!("SELECT {changed};\nSELECT 1 AS none WHERE false;\n"),
            action: "dropped",
            key,
            schema: vec![format!("table {name} dropped")],
            ours_schema_changed: b != o,
            theirs_schema_changed: true,
            apply_refuse: Writes::removing(drop.clone()),
            apply_theirs: Writes::removing(drop),
        });
    }
    let t = p.t?;
    // Created on both sides: merged as if the base were empty, if they agree on the columns.
    let empty_base;
    let b = match p.b {
        Some(b) => b,
        None => {
            if o.columns != t.columns || o.key != t.key {
                schema_conflicts.push(format!(
                    "{name}: created on both sides with different columns"
                ));
                return None;
            }
            empty_base = o.clone();
            &empty_base
        }
    };
    // A column the source renamed (dropped, with one of its type added at its place) is the
    // same column: the base and the branch are read with it renamed (values compared as they
    // are), and the branch's copy is renamed before anything else is written to it.
    let renames = renamed_columns(b, t);
    let (b_renamed, o_renamed);
    let mut rename_ddl = String::new();
    let (b, o) = if renames.is_empty() {
        (b, o)
    } else {
        for (old, new) in &renames {
            if o.column_type(old).is_some() && o.column_type(new).is_none() {
                rename_ddl.push_str(&format!(
                    "ALTER TABLE {} RENAME COLUMN {} TO {};\n",
                    o.in_db("ours"),
                    ident(old),
                    ident(new)
                ));
            }
        }
        b_renamed = b.renamed(&renames);
        o_renamed = o.renamed(&renames);
        (&b_renamed, &o_renamed)
    };
    let (t_add, t_drop, t_retype) = column_changes(b, t);
    let (o_add, o_drop, o_retype) = column_changes(b, o);
    for (c, ty) in &t_add {
        if t.generated.contains(c) && !o_add.contains_key(c) {
            schema_conflicts.push(format!(
                "{name}: generated column {c} added by the source (DuckDB adds none to a table that exists)"
            ));
        }
        if o_add.get(c).is_some_and(|x| x != ty) {
            schema_conflicts.push(format!(
                "{name}: column {c} added on both sides with different types"
            ));
        }
    }
    for (c, ty) in &t_retype {
        if o_retype.get(c).is_some_and(|x| x != ty) || o_drop.contains(c) {
            schema_conflicts.push(format!(
                "{name}: column {c} changed differently on both sides"
            ));
        }
    }
    for c in &t_drop {
        if o_retype.contains_key(c) {
            schema_conflicts.push(format!(
                "{name}: column {c} dropped by the source, retyped on the branch"
            ));
        }
    }
    if b.key != t.key && b.key != o.key && o.key != t.key {
        schema_conflicts.push(format!(
            "{name}: primary key changed differently on both sides"
        ));
    }
    let cols = compare_columns(&[b, o, t]);
    let key = common_key(&[b, o, t]);
    // A column the source added with a default gave every row it had then that value: the
    // base's rows are compared with the source's as holding it (else every row would look
    // changed by the source, and conflict with any the branch changed).
    let fill = added_values(t, &t_add);
    let (rb, ro, rt) = (
        relation_filled("base", Some(b), &cols, &fill),
        relation("ours", Some(o), &cols),
        relation("theirs", Some(t), &cols),
    );
    let ours_t = o.in_db("ours");
    let theirs_t = t.in_db("theirs");
    // Schema changes the source made, applied before its rows come in (NOT NULL after them).
    let mut ddl = String::new();
    let mut not_null = String::new();
    let set_not_null = |c: &str| {
        format!(
            "ALTER TABLE {ours_t} ALTER COLUMN {} SET NOT NULL;\n",
            ident(c)
        )
    };
    let mut schema = renames_in_words(&renames);
    schema.extend(schema_changes(b, t));
    schema.retain(|s| !s.starts_with("primary key"));
    for (c, ty) in &t_add {
        if !o_add.contains_key(c) {
            let default = t
                .defaults
                .get(c)
                .map(|d| format!(" DEFAULT ({d})"))
                .unwrap_or_default();
            ddl.push_str(&format!(
                "ALTER TABLE {ours_t} ADD COLUMN {} {ty}{default};\n",
                ident(c)
            ));
            if t.not_null.contains(c) {
                not_null.push_str(&set_not_null(c));
            }
        }
    }
    for c in &t_drop {
        if !o_drop.contains(c) {
            ddl.push_str(&format!("ALTER TABLE {ours_t} DROP COLUMN {};\n", ident(c)));
        }
    }
    // A default or NOT NULL the source changed on a column the base had: taken if the branch
    // left it as the base had it.
    for (c, _) in &t.columns {
        if b.column_type(c).is_none() {
            continue;
        }
        let col = ident(c);
        let (bd, td, od) = (b.defaults.get(c), t.defaults.get(c), o.defaults.get(c));
        if td != bd && od != td {
            if od != bd || o.column_type(c).is_none() {
                schema_conflicts.push(format!(
                    "{name}: default of column {c} changed differently on both sides"
                ));
            } else {
                ddl.push_str(&match td {
                    Some(d) => {
                        format!("ALTER TABLE {ours_t} ALTER COLUMN {col} SET DEFAULT ({d});\n")
                    }
                    None => format!("ALTER TABLE {ours_t} ALTER COLUMN {col} DROP DEFAULT;\n"),
                });
            }
        }
        let (bn, tn, on) = (
            b.not_null.contains(c),
            t.not_null.contains(c),
            o.not_null.contains(c),
        );
        if tn != bn && on != tn {
            if on != bn || o.column_type(c).is_none() {
                schema_conflicts.push(format!(
                    "{name}: NOT NULL of column {c} changed differently on both sides"
                ));
            } else if tn {
                not_null.push_str(&set_not_null(c));
            } else {
                ddl.push_str(&format!(
                    "ALTER TABLE {ours_t} ALTER COLUMN {col} DROP NOT NULL;\n"
                ));
            }
        }
    }
    for (c, ty) in &t_retype {
        if !o_retype.contains_key(c) {
            ddl.push_str(&format!(
                "ALTER TABLE {ours_t} ALTER {} TYPE {ty};\n",
                ident(c)
            ));
        }
    }
    // The branch's columns once the source's schema changes are in, that rows are written to
    // (DuckDB computes a generated column).
    let mut final_cols: Vec<String> = o
        .columns
        .iter()
        .map(|(c, _)| c.clone())
        .filter(|c| !t_drop.contains(c))
        .collect();
    for c in t_add.keys() {
        if !final_cols.contains(c) {
            final_cols.push(c.clone());
        }
    }
    final_cols.retain(|c| !o.generated.contains(c) && !t.generated.contains(c));
    let col_list = |cs: &[String]| cs.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let (sql, apply_refuse, apply_theirs) = match &key {
        Some(key) => {
            let kc = key.iter().map(|k| ident(k)).collect::<Vec<_>>();
            let coalesce = key
                .iter()
                .map(|k| format!("COALESCE(__x.{k}, __y.{k}) AS {k}", k = ident(k)))
                .collect::<Vec<_>>()
                .join(", ");
            let first = ident(&key[0]);
            // A side's changes are judged on its own columns (a column it dropped is not a
            // change of every row); the two sides' rows are compared on the columns both have.
            let of = |side: &Table| -> Vec<(String, String, bool)> {
                cols.iter()
                    .filter(|(c, _, _)| side.column_type(c).is_some())
                    .cloned()
                    .collect()
            };
            let (cols_t, cols_o) = (of(t), of(o));
            let cols_ot: Vec<(String, String, bool)> = cols_t
                .iter()
                .filter(|(c, _, _)| o.column_type(c).is_some())
                .cloned()
                .collect();
            let delta = |from: &str, to: &str, side_cols: &[(String, String, bool)]| {
                format!(
                    "SELECT {coalesce}, __x.{first} IS NULL AS __ins, __y.{first} IS NULL AS __del FROM {from} __x FULL OUTER JOIN {to} __y ON {on} WHERE __x.{first} IS NULL OR __y.{first} IS NULL OR {differs}",
                    on = key_match("__x", "__y", key),
                    differs = row_differs("__x", "__y", side_cols, key),
                )
            };
            let (dt, dop, cf) = (format!("__dt{i}"), format!("__do{i}"), format!("__cf{i}"));
            let both_changed = format!(
                "SELECT __d.* FROM (SELECT {klist} FROM {dt} SEMI JOIN {dop} __e ON {m}) __d LEFT JOIN {rt} __y ON {dy} LEFT JOIN {ro} __z ON {dz} WHERE (__y.{first} IS NULL) <> (__z.{first} IS NULL) OR {differs}",
                klist = kc.iter().map(|k| format!("{dt}.{k}")).collect::<Vec<_>>().join(", "),
                m = key_match(&dt, "__e", key),
                dy = key_match("__d", "__y", key),
                dz = key_match("__d", "__z", key),
                differs = row_differs("__y", "__z", &cols_ot, key),
            );
            let mut sql = format!(
                "CREATE OR REPLACE TEMP TABLE {dt} AS {};\nCREATE OR REPLACE TEMP TABLE {dop} AS {};\nCREATE OR REPLACE TEMP TABLE {cf} AS {both_changed};\n",
                delta(&rb, &rt, &cols_t),
                delta(&rb, &ro, &cols_o),
            );
            sql.push_str(&format!(
                "SELECT (SELECT count(*) FROM {dt} WHERE __ins) AS ti, (SELECT count(*) FROM {dt} WHERE __del) AS td, (SELECT count(*) FROM {dt} WHERE NOT __ins AND NOT __del) AS tu, \
                 (SELECT count(*) FROM {dop} WHERE __ins) AS oi, (SELECT count(*) FROM {dop} WHERE __del) AS od, (SELECT count(*) FROM {dop} WHERE NOT __ins AND NOT __del) AS ou, \
                 (SELECT count(*) FROM {cf}) AS cf;\n"
            ));
            sql.push_str(&format!(
                "SELECT __d.*, {}, {}, {} FROM {cf} __d LEFT JOIN {rb} __x ON {dx} LEFT JOIN {ro} __z ON {dz} LEFT JOIN {rt} __y ON {dy} ORDER BY {order} LIMIT {CONFLICTS_SHOWN};\n",
                duck::tagged("__x", "base", &cols),
                duck::tagged("__z", "ours", &cols),
                duck::tagged("__y", "theirs", &cols),
                dx = key_match("__d", "__x", key),
                dz = key_match("__d", "__z", key),
                dy = key_match("__d", "__y", key),
                // (The same rows listed each time, in the order of their keys.)
                order = kc.iter().map(|k| format!("__d.{k}")).collect::<Vec<_>>().join(", "),
            ));
            // Keys to take from the source: changed only there (and, with --theirs, the
            // conflicting ones).
            let take = |with_conflicts: bool| {
                let ap = format!("__ap{i}");
                let renamed = kc
                    .iter()
                    .enumerate()
                    .map(|(j, k)| format!("{k} AS __k{j}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut s = format!(
                    "CREATE OR REPLACE TEMP TABLE {ap} AS SELECT {renamed} FROM (SELECT {klist} FROM {dt} ANTI JOIN {dop} __e ON {m}{extra});\n",
                    klist = kc.iter().map(|k| format!("{dt}.{k}")).collect::<Vec<_>>().join(", "),
                    m = key_match(&dt, "__e", key),
                    extra = if with_conflicts {
                        format!(" UNION ALL SELECT {} FROM {cf}", kc.join(", "))
                    } else {
                        String::new()
                    },
                );
                let on_ap = kc
                    .iter()
                    .enumerate()
                    .map(|(j, k)| format!("__k{j} = {k}"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                // Keys the source removed go; the others are updated in place (a row that a
                // foreign key refers to can be updated, not deleted and inserted again) or
                // inserted, once the schema changes are in.
                s.push_str(&format!(
                    "DELETE FROM {ours_t} WHERE EXISTS (SELECT 1 FROM {ap} WHERE {on_ap}) AND NOT EXISTS (SELECT 1 FROM {theirs_t} __y WHERE {in_theirs});\n",
                    in_theirs = key_match(&ours_t, "__y", key),
                ));
                s.push_str(&ddl);
                let mut add = String::new();
                // Columns of the source's rows that the result has.
                let ins: Vec<String> = final_cols
                    .iter()
                    .filter(|c| t.column_type(c).is_some())
                    .cloned()
                    .collect();
                let on_y = kc
                    .iter()
                    .enumerate()
                    .map(|(j, k)| format!("__k{j} = __y.{k}"))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let set: Vec<String> = ins
                    .iter()
                    .filter(|c| !key.contains(c))
                    .map(|c| format!("{c} = __y.{c}", c = ident(c)))
                    .collect();
                if !set.is_empty() {
                    add.push_str(&format!(
                        "UPDATE {ours_t} AS __o SET {} FROM {theirs_t} __y WHERE {} AND EXISTS (SELECT 1 FROM {ap} WHERE {on_y});\n",
                        set.join(", "),
                        key_match("__o", "__y", key),
                    ));
                }
                add.push_str(&format!(
                    "INSERT INTO {ours_t} ({}) SELECT {} FROM {theirs_t} __y WHERE EXISTS (SELECT 1 FROM {ap} WHERE {on_y}) AND NOT EXISTS (SELECT 1 FROM {ours_t} __o WHERE {});\n",
                    col_list(&ins),
                    ins.iter().map(|c| format!("__y.{}", ident(c))).collect::<Vec<_>>().join(", "),
                    key_match("__o", "__y", key),
                ));
                add.push_str(&not_null);
                Writes { remove: s, add }
            };
            (sql, take(false), take(true))
        }
        None => {
            let (add, rm) = (format!("__add{i}"), format!("__rm{i}"));
            // The branch's changes are counted against the base as it had it (a column only
            // the source added reads NULL on both).
            let rb_own = relation("base", Some(b), &cols);
            let mut sql = format!(
                "CREATE OR REPLACE TEMP TABLE {add} AS SELECT * FROM ({rt} EXCEPT ALL {rb});\n\
                 CREATE OR REPLACE TEMP TABLE {rm} AS SELECT *, count(*) AS __n FROM ({rb} EXCEPT ALL {rt}) GROUP BY ALL;\n"
            );
            sql.push_str(&format!(
                "SELECT (SELECT count(*) FROM {add}) AS ti, (SELECT coalesce(sum(__n), 0) FROM {rm}) AS td, 0 AS tu, \
                 (SELECT count(*) FROM ({ro} EXCEPT ALL {rb_own})) AS oi, (SELECT count(*) FROM ({rb_own} EXCEPT ALL {ro})) AS od, 0 AS ou, 0 AS cf;\n\
                 SELECT 1 AS none WHERE false;\n"
            ));
            // The branch's rows as compared (its own columns; where it has none, what the
            // source's schema changes will give them, else NULL).
            let z_expr = |c: &str, as_text: bool| match (o.column_type(c), fill.get(c)) {
                (Some(_), _) if as_text => format!("CAST(__z.{} AS VARCHAR)", ident(c)),
                (Some(_), _) => format!("__z.{}", ident(c)),
                (None, Some(v)) if as_text => format!("CAST({v} AS VARCHAR)"),
                (None, Some(v)) => v.clone(),
                (None, None) => "NULL".to_string(),
            };
            let zs: Vec<String> = cols.iter().map(|(c, _, t)| z_expr(c, *t)).collect();
            let on = cols
                .iter()
                .zip(&zs)
                .map(|((c, _, _), z)| format!("{z} IS NOT DISTINCT FROM __r.{}", ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let mut s = format!(
                "DELETE FROM {ours_t} WHERE rowid IN (SELECT __rid FROM (SELECT __z.rowid AS __rid, row_number() OVER (PARTITION BY {}) AS __rn, __r.__n FROM {ours_t} __z JOIN {rm} __r ON {on}) WHERE __rn <= __n);\n",
                zs.join(", "),
            );
            s.push_str(&ddl);
            let ins: Vec<String> = final_cols
                .iter()
                .filter(|c| cols.iter().any(|(x, _, _)| x == *c))
                .cloned()
                .collect();
            let mut added = format!(
                "INSERT INTO {ours_t} ({}) SELECT {} FROM {add};\n",
                col_list(&ins),
                col_list(&ins),
            );
            added.push_str(&not_null);
            let w = Writes {
                remove: s,
                add: added,
            };
            (sql, w.clone(), w)
        }
    };
    let renamed_first = |w: Writes| Writes {
        remove: format!("{rename_ddl}{}", w.remove),
        add: w.add,
    };
    Some(Analysed {
        sql,
        action: "merged",
        key,
        schema,
        ours_schema_changed: b != o,
        theirs_schema_changed: b != t,
        apply_refuse: renamed_first(apply_refuse),
        apply_theirs: renamed_first(apply_theirs),
    })
}

/// `(…) AS ti, (…) AS td, (…) AS tu`: the changes from `from` to `to`.
fn delta_counts(
    cols: &[(String, String, bool)],
    key: Option<&[String]>,
    from: &str,
    to: &str,
) -> String {
    match key {
        Some(key) => {
            let on = key_match("__x", "__y", key);
            let differs = row_differs("__x", "__y", cols, key);
            format!(
                "(SELECT count(*) FROM {to} __y ANTI JOIN {from} __x ON {on}) AS ti, (SELECT count(*) FROM {from} __x ANTI JOIN {to} __y ON {on}) AS td, (SELECT count(*) FROM {from} __x JOIN {to} __y ON {on} WHERE {differs}) AS tu"
            )
        }
        None => format!(
            "(SELECT count(*) FROM ({to} EXCEPT ALL {from})) AS ti, (SELECT count(*) FROM ({from} EXCEPT ALL {to})) AS td, 0 AS tu"
        ),
    }
}
