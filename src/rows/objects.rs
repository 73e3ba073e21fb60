//! The catalog objects other than tables, for `apply`: views, indexes and sequences it brings
//! over as the source changed them (created, redefined, dropped; a sequence advanced), and
//! macros and types, which it does not recreate: a change the source made to one of those that
//! the branch does not have refuses the merge, rather than leave it out unsaid.

use super::display_name;
use super::duck::{self, ident, lit, text, Row};
use crate::error::Result;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Schema,
    Type,
    Macro,
    Sequence,
    View,
    Index,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Schema => "schema",
            Kind::Type => "type",
            Kind::Macro => "macro",
            Kind::Sequence => "sequence",
            Kind::View => "view",
            Kind::Index => "index",
        }
    }
}

/// (kind, schema, name) -> definition: DuckDB's CREATE statement where it keeps one (views,
/// indexes, sequences, whose CREATE SEQUENCE says its next value as START), else a description
/// that changes whenever the object does.
pub type Objects = BTreeMap<(Kind, String, String), String>;

/// The queries that read the objects of the databases attached as `dbs`: one result per kind,
/// rows (db, s, n, d); [`parse`] takes them.
pub fn objects_sql(dbs: &[&str]) -> String {
    let list = dbs.iter().map(|d| lit(d)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT database_name AS db, 'main' AS s, schema_name AS n, 'schema' AS d FROM duckdb_schemas() WHERE NOT internal AND database_name IN ({list}) ORDER BY ALL;\n\
         SELECT database_name AS db, schema_name AS s, type_name AS n, logical_type || coalesce(' ' || CAST(labels AS VARCHAR), '') AS d FROM duckdb_types() WHERE NOT internal AND database_name IN ({list}) ORDER BY ALL;\n\
         SELECT database_name AS db, schema_name AS s, function_name AS n, string_agg(function_type || '(' || array_to_string(parameters, ', ') || ') ' || coalesce(macro_definition, ''), '; ' ORDER BY function_type, macro_definition) AS d FROM duckdb_functions() WHERE function_type IN ('macro', 'table_macro') AND NOT internal AND database_name IN ({list}) GROUP BY ALL ORDER BY ALL;\n\
         SELECT database_name AS db, schema_name AS s, sequence_name AS n, sql AS d FROM duckdb_sequences() WHERE NOT temporary AND database_name IN ({list}) ORDER BY ALL;\n\
         SELECT database_name AS db, schema_name AS s, view_name AS n, sql AS d FROM duckdb_views() WHERE NOT internal AND NOT temporary AND database_name IN ({list}) ORDER BY ALL;\n\
         SELECT database_name AS db, schema_name AS s, index_name AS n, sql AS d FROM duckdb_indexes() WHERE sql IS NOT NULL AND database_name IN ({list}) ORDER BY ALL;\n"
    )
}

/// The objects of each database, from the results of [`objects_sql`].
pub fn parse(results: &mut std::vec::IntoIter<Vec<Row>>) -> Result<BTreeMap<String, Objects>> {
    let kinds = [
        Kind::Schema,
        Kind::Type,
        Kind::Macro,
        Kind::Sequence,
        Kind::View,
        Kind::Index,
    ];
    let mut out: BTreeMap<String, Objects> = BTreeMap::new();
    for kind in kinds {
        for r in duck::take(results, kind.word())? {
            out.entry(text(&r, "db"))
                .or_default()
                .insert((kind, text(&r, "s"), text(&r, "n")), text(&r, "d"));
        }
    }
    Ok(out)
}

/// A sequence's CREATE statement split into its definition without the next value, the next
/// value (START) and its increment.
fn sequence_parts(sql: &str) -> Option<(String, i64, i64)> {
    let number_after = |word: &str| -> Option<(usize, usize, i64)> {
        let at = sql.find(word)? + word.len();
        let len = sql[at..]
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(sql.len() - at);
        Some((at, at + len, sql[at..at + len].parse().ok()?))
    };
    let (from, to, start) = number_after(" START ")?;
    let (_, _, increment) = number_after(" INCREMENT BY ")?;
    Some((format!("{}{}", &sql[..from], &sql[to..]), start, increment))
}

/// How many values a sequence moved from definition `a` to `b` (negative: back), when nothing
/// else of it changed; None if it was redefined.
fn advance(a: &str, b: &str) -> Option<i64> {
    let (ad, a_next, inc) = sequence_parts(a)?;
    let (bd, b_next, _) = sequence_parts(b)?;
    let moved = b_next.checked_sub(a_next)?;
    (ad == bd && moved.checked_rem(inc)? == 0)
        .then(|| moved.checked_div(inc))
        .flatten()
}

/// How an object changed from `a` to `b` (which differ), in words: `created`, `dropped`,
/// `advanced by 5` (a sequence), `redefined`.
fn how(kind: Kind, a: Option<&String>, b: Option<&String>) -> String {
    match (a, b) {
        (None, _) => "created".to_string(),
        (_, None) => "dropped".to_string(),
        (Some(a), Some(b)) => match advance(a, b).filter(|_| kind == Kind::Sequence) {
            Some(n) if n >= 0 => format!("advanced by {n}"),
            Some(n) => format!("moved back by {}", n.unsigned_abs()),
            None => "redefined".to_string(),
        },
    }
}

/// `view v`, `sequence s.ids`.
fn what(key: &(Kind, String, String)) -> String {
    format!("{} {}", key.0.word(), display_name(&key.1, &key.2))
}

/// The objects that differ from `a` to `b`, each in words (`view v created`).
pub fn changes(a: &Objects, b: &Objects) -> Vec<String> {
    let keys: BTreeSet<&(Kind, String, String)> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{} {}", what(k), how(k.0, a.get(k), b.get(k))))
        .collect()
}

/// What bringing the source's object changes onto the branch does.
#[derive(Debug, Default)]
pub struct ObjectMerge {
    /// Statements to run before the tables' changes (sequences a default may use).
    pub before: String,
    /// Statements to run after them (views and indexes over the tables, drops).
    pub after: String,
    /// Statements to run last (schemas dropped, once what they held is gone).
    pub last: String,
    /// What is brought over, in words (`view v created`).
    pub changes: Vec<String>,
    /// Changes that cannot be brought over, or were made differently on both sides.
    pub conflicts: Vec<String>,
}

/// Plans the merge of the objects: `base`, `ours` and `theirs` as [`parse`] gives them; the
/// statements name the branch's copy as the database `ours`.
pub fn merge(base: &Objects, ours: &Objects, theirs: &Objects) -> ObjectMerge {
    let mut m = ObjectMerge::default();
    let keys: BTreeSet<&(Kind, String, String)> = base
        .keys()
        .chain(ours.keys())
        .chain(theirs.keys())
        .collect();
    for key in keys {
        let (kind, schema, name) = key;
        let (b, o, t) = (base.get(key), ours.get(key), theirs.get(key));
        if t == b || o == t {
            // The source left it alone, or the branch already has it as the source does.
            continue;
        }
        let what = what(key);
        let change = format!("{what} {}", how(*kind, b, t));
        let in_ours = format!("{}.{}.{}", ident("ours"), ident(schema), ident(name));
        let create = |sql: &str| {
            format!(
                "CREATE SCHEMA IF NOT EXISTS ours.{s};\nUSE ours.{s};\n{};\nUSE memory;\n",
                sql.trim_end_matches(';'),
                s = ident(schema)
            )
        };
        let drop = format!(
            "DROP {} IF EXISTS {in_ours};\n",
            kind.word().to_ascii_uppercase()
        );
        match kind {
            // (Keyed by name under `main`: `schema s`.)
            Kind::Schema => {
                if o != b {
                    m.conflicts
                        .push(format!("{what}: changed differently on both sides"));
                    continue;
                }
                let s = format!("ours.{}", ident(name));
                if t.is_some() {
                    m.before
                        .insert_str(0, &format!("CREATE SCHEMA IF NOT EXISTS {s};\n"));
                } else {
                    m.last.push_str(&format!("DROP SCHEMA IF EXISTS {s};\n"));
                }
                m.changes.push(change);
            }
            Kind::Sequence => {
                // The next value each side has: the source's advance is replayed on the branch
                // (as running both sides' changes by hand would), so that neither side's values
                // are handed out again.
                match (b, o, t) {
                    (None, None, Some(t)) => {
                        m.before.push_str(&create(t));
                        m.changes.push(change);
                    }
                    (Some(bs), Some(os), Some(ts)) => match (advance(bs, os), advance(bs, ts)) {
                        (Some(_), Some(calls)) => {
                            if calls > 0 {
                                m.before.push_str(&format!(
                                    "SELECT count(nextval({})) FROM range({calls});\n",
                                    lit(&in_ours)
                                ));
                                m.changes.push(change);
                            } else {
                                m.conflicts
                                    .push(format!("{what}: moved back by the source"));
                            }
                        }
                        _ => m.conflicts.push(format!(
                            "{what}: redefined by the source; apply does not redefine a sequence"
                        )),
                    },
                    (Some(_), Some(o), None) if Some(o) == b => {
                        m.after.push_str(&drop);
                        m.changes.push(change);
                    }
                    _ => m
                        .conflicts
                        .push(format!("{what}: changed differently on both sides")),
                }
            }
            Kind::View | Kind::Index => {
                if o != b {
                    m.conflicts
                        .push(format!("{what}: changed differently on both sides"));
                    continue;
                }
                m.after.push_str(&drop);
                if let Some(t) = t {
                    m.after.push_str(&create(t));
                }
                m.changes.push(change);
            }
            Kind::Macro | Kind::Type => {
                m.conflicts.push(format!(
                    "{what}: {} by the source, and apply does not bring {}s over: make the same change on the branch and apply again",
                    how(*kind, b, t),
                    kind.word()
                ));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: &str = "CREATE SEQUENCE sq INCREMENT BY 2 MINVALUE 1 MAXVALUE 9223372036854775807 START 11 NO CYCLE;";

    #[test]
    fn a_sequence_splits_into_definition_next_value_and_increment() {
        let (def, start, inc) = sequence_parts(SEQ).unwrap();
        assert_eq!((start, inc), (11, 2));
        assert!(
            !def.contains("11") && def.contains("INCREMENT BY 2"),
            "{def}"
        );
        assert!(sequence_parts("CREATE SEQUENCE x;").is_none());
        // Extremes neither overflow nor panic.
        let at = |n: i64| SEQ.replace("START 11", &format!("START {n}"));
        assert_eq!(advance(&at(i64::MIN), &at(i64::MAX)), None);
        assert_eq!(advance(&at(11), &at(21)), Some(5));
        assert_eq!(advance(&at(21), &at(11)), Some(-5));
        assert_eq!(advance(&at(11), &SEQ.replace("BY 2", "BY 3")), None);
    }

    fn objs(list: &[(Kind, &str, &str)]) -> Objects {
        list.iter()
            .map(|(k, n, d)| ((*k, "main".to_string(), n.to_string()), d.to_string()))
            .collect()
    }

    #[test]
    fn the_sources_changes_are_planned_and_conflicts_named() {
        let seq = |start: i64| SEQ.replace("START 11", &format!("START {start}"));
        let base = objs(&[
            (Kind::Sequence, "ids", &seq(11)),
            (Kind::View, "old", "CREATE VIEW old AS SELECT 1;"),
            (Kind::Macro, "m", "macro(x) x + 1"),
        ]);
        let ours = objs(&[
            (Kind::Sequence, "ids", &seq(15)),
            (Kind::View, "old", "CREATE VIEW old AS SELECT 1;"),
            (Kind::Macro, "m", "macro(x) x + 1"),
        ]);
        let theirs = objs(&[
            (Kind::Schema, "x", "schema"),
            (Kind::Sequence, "ids", &seq(21)),
            (Kind::View, "v", "CREATE VIEW v AS SELECT 2;"),
            (Kind::Macro, "m", "macro(x) x + 2"),
        ]);
        let m = merge(&base, &ours, &theirs);
        assert_eq!(
            m.changes,
            [
                "schema x created",
                "sequence ids advanced by 5",
                "view old dropped",
                "view v created"
            ]
        );
        assert!(
            m.before
                .starts_with("CREATE SCHEMA IF NOT EXISTS ours.\"x\";\n"),
            "{}",
            m.before
        );
        assert!(m.before.contains("range(5)"), "{}", m.before);
        assert!(
            m.after
                .contains("DROP VIEW IF EXISTS \"ours\".\"main\".\"old\""),
            "{}",
            m.after
        );
        assert!(
            m.after.contains("CREATE VIEW v AS SELECT 2;\nUSE memory"),
            "{}",
            m.after
        );
        assert_eq!(m.conflicts.len(), 1, "{:?}", m.conflicts);
        assert!(m.conflicts[0].starts_with("macro m: redefined by the source"));
        // Nothing changed by the source: nothing to do, whatever the branch did.
        let none = merge(&base, &ours, &base);
        assert!(none.changes.is_empty() && none.conflicts.is_empty() && none.before.is_empty());
    }
}
