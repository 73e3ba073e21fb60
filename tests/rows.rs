//! Row-level history on real databases written with the duckdb CLI through writable mounts:
//! `diff --rows` (counts, schema changes, examples, unchanged tables skipped), `apply`
//! (fast-forward, three-way merge by rows checked row by row against doing both changes by hand
//! on one file, conflicts that commit nothing, --theirs), `REV^2`, and `bisect`.

mod common;
use common::{duckdb, duckdb_bin, Env};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Runs `sql` through a writable mount of `rev` and lets DuckDB checkpoint (a commit).
fn write(env: &Env, rev: &str, sql: &str) {
    let dir = env.path(&format!("w-{}", common::uuid_like()));
    let m = env.mount(rev, &dir, &[]);
    duckdb(&dir.join("db.duckdb"), &format!("{sql}; CHECKPOINT"));
    m.unmount();
}

fn json(env: &Env, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = env.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn head(env: &Env, rev: &str) -> String {
    json(env, &["show", rev])["commit"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The file of `rev`, exported.
fn export(env: &Env, rev: &str) -> PathBuf {
    let dir = env.path(&format!("x-{}", common::uuid_like()));
    env.ok(&["export", rev, dir.to_str().unwrap()]);
    dir.join("db.duckdb")
}

/// Runs SQL on an in-memory database with `a` and `b` attached read-only; CSV output.
fn compare(a: &Path, b: &Path, sql: &str) -> String {
    let out = std::process::Command::new(duckdb_bin())
        .args(["-csv", "-noheader", "-bail", ":memory:", "-c"])
        .arg(format!(
            "ATTACH '{}' AS a (READ_ONLY); ATTACH '{}' AS b (READ_ONLY); {sql}",
            a.display(),
            b.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Asserts that two database files hold the same tables, columns (types, defaults, NOT NULL)
/// and rows (as multisets).
fn assert_same_rows(got: &Path, want: &Path) {
    let tables = |db: &str| {
        format!(
            "SELECT schema_name || '.' || table_name || ':' || string_agg(column_name || ' ' || data_type || coalesce(' DEFAULT ' || column_default, '') || CASE WHEN is_nullable THEN '' ELSE ' NOT NULL' END, '; ' ORDER BY column_index) FROM duckdb_columns() WHERE database_name = '{db}' GROUP BY schema_name, table_name ORDER BY 1"
        )
    };
    let g = compare(got, want, &tables("a"));
    let w = compare(got, want, &tables("b"));
    assert_eq!(g, w, "tables and columns differ");
    // (A sequence's CREATE statement says its next value.)
    let objects = |db: &str| {
        format!(
            "SELECT string_agg(sql, ' | ' ORDER BY sql) FROM (SELECT sql FROM duckdb_views() WHERE database_name = '{db}' AND NOT internal UNION ALL SELECT sql FROM duckdb_indexes() WHERE database_name = '{db}' UNION ALL SELECT sql FROM duckdb_sequences() WHERE database_name = '{db}' UNION ALL SELECT 'schema ' || schema_name FROM duckdb_schemas() WHERE database_name = '{db}')"
        )
    };
    assert_eq!(
        compare(got, want, &objects("a")),
        compare(got, want, &objects("b")),
        "views, indexes or sequences differ"
    );
    let names = compare(
        got,
        want,
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = 'a' ORDER BY 1",
    );
    for qualified in names.lines() {
        let (s, t) = qualified.split_once('.').unwrap();
        let n = compare(
            got,
            want,
            &format!(
                "SELECT (SELECT count(*) FROM (SELECT * FROM a.\"{s}\".\"{t}\" EXCEPT ALL SELECT * FROM b.\"{s}\".\"{t}\")) || ' ' || (SELECT count(*) FROM (SELECT * FROM b.\"{s}\".\"{t}\" EXCEPT ALL SELECT * FROM a.\"{s}\".\"{t}\"))"
            ),
        );
        assert_eq!(n, "0 0", "rows of {qualified} differ (missing, extra)");
    }
}

const BASE: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, v VARCHAR, w DOUBLE);
    INSERT INTO t SELECT range, 'v' || range, range / 7 FROM range(200000);
    CREATE TABLE k(a INTEGER, b VARCHAR);
    INSERT INTO k VALUES (1, 'a'), (1, 'a'), (2, 'b'), (3, 'c');
    CREATE TABLE d(id INTEGER PRIMARY KEY, x VARCHAR);
    INSERT INTO d SELECT range, md5(range::VARCHAR) FROM range(100000);
    CREATE TABLE big AS SELECT range AS r, md5(range::VARCHAR) AS h FROM range(1000000);
    CREATE SCHEMA s;
    CREATE TABLE s.u(id INTEGER PRIMARY KEY, n INTEGER);
    INSERT INTO s.u SELECT range, range FROM range(1000);
    CREATE SEQUENCE ids START 1;
    CREATE VIEW old_v AS SELECT id FROM t WHERE id < 3";

#[test]
fn diff_rows_counts_changes_and_skips_unchanged_tables() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    write(&env, "db@main", BASE);
    env.ok(&["tag", "base"]);
    write(
        &env,
        "db@main",
        "UPDATE t SET v = 'changed', w = 'NaN' WHERE id < 5;
         DELETE FROM t WHERE id BETWEEN 100 AND 109;
         INSERT INTO t VALUES (900000, 'new', 'Infinity'), (900001, 'new', '-Infinity');
         ALTER TABLE t ADD COLUMN z INTEGER;
         INSERT INTO k VALUES (1, 'a'), (4, 'd');
         DELETE FROM k WHERE b = 'c';
         DELETE FROM d WHERE id % 1000 = 0;
         ALTER TABLE d RENAME COLUMN x TO hash;
         ALTER TABLE s.u DROP COLUMN n;
         CREATE TABLE fresh AS SELECT 1 AS one;
         SELECT count(nextval('ids')) FROM range(2);
         DROP VIEW old_v;
         CREATE MACRO m1(x) AS x + 1",
    );
    let diff = json(&env, &["diff", "base", "main", "--rows", "--show", "2"]);
    let file = &diff["rows"][0];
    assert_eq!(file["file"], "db.duckdb");
    let table = |name: &str| -> Value {
        file["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {file}"))
    };
    let t = table("t");
    assert_eq!(
        (&t["inserted"], &t["deleted"], &t["updated"]),
        (&2.into(), &10.into(), &5.into()),
        "{t}"
    );
    assert_eq!(t["key"], serde_json::json!(["id"]));
    assert_eq!(t["schema"], serde_json::json!(["column z added (INTEGER)"]));
    // (DuckDB prints NaN and infinities as bare words, which are not JSON: they come as strings.)
    let mut ws: Vec<&str> = t["examples"]["inserted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["w"].as_str().unwrap())
        .collect();
    ws.sort();
    assert_eq!(ws, ["-Infinity", "Infinity"], "{t}");
    let upd = &t["examples"]["updated"][0];
    assert_eq!(upd["new"]["v"], "changed", "{upd}");
    assert_eq!(upd["new"]["w"], "NaN", "{upd}");
    assert!(upd["old"]["v"].as_str().unwrap().starts_with('v'), "{upd}");
    let k = table("k");
    assert_eq!(
        (&k["inserted"], &k["deleted"], &k["updated"], &k["key"]),
        (&2.into(), &1.into(), &0.into(), &Value::Null),
        "{k}"
    );
    // Only deletions: the data blocks stay, the row count tells.
    let d = table("d");
    assert_eq!(
        (&d["deleted"], &d["inserted"], &d["updated"]),
        (&100.into(), &0.into(), &0.into()),
        "{d}"
    );
    // A renamed column is the same column: no row changed for it.
    assert_eq!(
        d["schema"],
        serde_json::json!(["column x renamed to hash"]),
        "{d}"
    );
    let u = table("s.u");
    assert_eq!(u["schema"], serde_json::json!(["column n dropped"]), "{u}");
    assert_eq!(table("fresh")["change"], "added");
    assert_eq!(file["skipped"], serde_json::json!(["big"]), "{file}");
    assert_eq!(
        file["objects"],
        serde_json::json!([
            "macro m1 created",
            "sequence ids advanced by 2",
            "view old_v dropped"
        ]),
        "{file}"
    );

    // Scanning every table finds the same and nothing in `big`.
    let all = json(&env, &["diff", "base", "main", "--rows", "--scan-all"]);
    assert_eq!(all["rows"][0]["skipped"], serde_json::json!([]));
    assert_eq!(all["rows"][0]["unchanged"], serde_json::json!(["big"]));
    for (a, b) in file["tables"]
        .as_array()
        .unwrap()
        .iter()
        .zip(all["rows"][0]["tables"].as_array().unwrap())
    {
        for f in ["table", "inserted", "deleted", "updated", "schema"] {
            assert_eq!(a[f], b[f], "{f} of {}", a["table"]);
        }
    }
    // Named tables only; the text form.
    let only = json(&env, &["diff", "base", "main", "--rows", "k"]);
    assert_eq!(only["rows"][0]["tables"].as_array().unwrap().len(), 1);
    assert_eq!(only["rows"][0]["objects"], serde_json::json!([]));
    let text = env.ok(&["diff", "base", "main", "--rows"]);
    assert!(
        text.contains("also: macro m1 created; sequence ids advanced by 2; view old_v dropped"),
        "{text}"
    );
    assert!(text.contains("1 skipped (storage unchanged)"), "{text}");
    assert!(text.contains("column z added (INTEGER)"), "{text}");
    // No change: nothing to report, every table skipped.
    let same = json(&env, &["diff", "main", "main", "--rows"]);
    assert_eq!(same["rows"][0]["tables"], serde_json::json!([]));
    assert_eq!(same["rows"][0]["skipped"].as_array().unwrap().len(), 6);
}

const THEIRS: &str = "UPDATE t SET v = 'theirs' WHERE id < 10;
    DELETE FROM t WHERE id BETWEEN 1000 AND 1004;
    INSERT INTO t VALUES (500000, 'theirs new', 1.5);
    ALTER TABLE t ADD COLUMN z INTEGER;
    UPDATE t SET z = id WHERE id BETWEEN 10 AND 19;
    INSERT INTO k VALUES (1, 'a'), (9, 'theirs');
    DELETE FROM k WHERE a = 2;
    ALTER TABLE d DROP COLUMN x;
    CREATE TABLE theirs_new(id INTEGER PRIMARY KEY, s VARCHAR);
    INSERT INTO theirs_new VALUES (1, 'one'), (2, 'two');
    DROP TABLE big;
    DELETE FROM s.u WHERE id < 10;
    ALTER TABLE k ADD COLUMN w DOUBLE DEFAULT 0.5;
    ALTER TABLE s.u ADD COLUMN flag VARCHAR DEFAULT 'on';
    ALTER TABLE s.u ALTER COLUMN flag SET NOT NULL;
    ALTER TABLE t ALTER COLUMN v SET DEFAULT 'unnamed';
    ALTER TABLE t ALTER COLUMN w SET NOT NULL;
    SELECT count(nextval('ids')) FROM range(5);
    CREATE SEQUENCE fresh START 100;
    CREATE VIEW small AS SELECT id, v FROM t WHERE id < 10;
    DROP VIEW old_v;
    ALTER TABLE k RENAME COLUMN b TO name;
    CREATE SCHEMA empty_one;
    ALTER TABLE s.u RENAME COLUMN n TO amount;
    CREATE INDEX k_a ON k(a)";

const OURS: &str = "UPDATE t SET v = 'ours' WHERE id BETWEEN 100 AND 149;
    DELETE FROM t WHERE id BETWEEN 2000 AND 2009;
    INSERT INTO t VALUES (600000, 'ours new', 2.5);
    INSERT INTO k VALUES (7, 'ours');
    UPDATE d SET x = 'ours' WHERE id < 3;
    INSERT INTO d VALUES (100000, 'ours');
    UPDATE s.u SET n = -n WHERE id >= 990;
    SELECT count(nextval('ids')) FROM range(3)";

fn apply_merges_rows_like_doing_both_by_hand(env: Env) {
    env.ok(&["init", "db"]);
    write(&env, "db@main", BASE);
    env.ok(&["tag", "base"]);
    env.ok(&["branch", "feat"]);
    write(&env, "db@feat", THEIRS);
    write(&env, "db@main", OURS);
    let (ours, theirs) = (head(&env, "main"), head(&env, "feat"));

    // What it would do, and nothing committed.
    let dry = json(&env, &["apply", "feat", "--dry-run"]);
    assert_eq!(dry["result"], "dry-run", "{dry}");
    assert_eq!(head(&env, "main"), ours);
    let t = dry["files"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "t")
        .unwrap()
        .clone();
    assert_eq!(t["theirs"]["updated"], 20, "{t}");
    assert_eq!(t["ours"]["updated"], 50, "{t}");
    assert_eq!(t["conflicts"], 0, "{t}");
    // A keyless table the source added a defaulted column to: the branch's own change is one row.
    let k = dry["files"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "k")
        .unwrap();
    assert_eq!(
        (&k["ours"]["inserted"], &k["ours"]["deleted"]),
        (&1.into(), &0.into()),
        "{k}"
    );
    assert_eq!(
        dry["files"][0]["objects"],
        serde_json::json!([
            "schema empty_one created",
            "sequence fresh created",
            "sequence ids advanced by 5",
            "view old_v dropped",
            "view small created",
            "index k_a created"
        ]),
        "{dry}"
    );

    let held = env.path("held");
    let m = env.mount("db@main", &held, &[]);
    let e = env.fails_with(3, &["apply", "feat"]);
    assert!(e.contains("mounted writable"), "{e}");
    m.unmount();
    assert_eq!(head(&env, "main"), ours);
    let out = json(&env, &["apply", "feat"]);
    assert_eq!(out["result"], "merged", "{out}");
    assert_eq!(out["parents"], serde_json::json!([ours, theirs]));
    let merged = head(&env, "main");
    assert_eq!(head(&env, "main^2"), theirs);
    assert_eq!(head(&env, "main^1"), ours);
    assert_eq!(head(&env, "main^"), ours);
    let show = json(&env, &["show", "main"]);
    assert_eq!(show["commit"]["kind"], "merge");
    assert_eq!(show["commit"]["merge_parent_id"], theirs.as_str());
    let log = env.ok(&["log", "-n", "1"]);
    assert!(
        log.contains(&format!("merge of {}", &theirs[..12])),
        "{log}"
    );
    let e = env.fails_with(6, &["show", "main^3"]);
    assert!(e.contains("main^3: main has two parents"), "{e}");

    // Row by row the same as both changes made by hand on one copy of the base.
    let want = export(&env, "base");
    duckdb(&want, OURS);
    duckdb(&want, THEIRS);
    let got = export(&env, "main");
    assert_same_rows(&got, &want);

    // The merge commit opens in DuckDB through a mount, and applying again changes nothing.
    let ro = env.path("ro");
    let m = env.mount(&merged[..12], &ro, &[]);
    let out = common::duckdb_raw(
        &ro.join("db.duckdb"),
        "SELECT count(*) FROM t WHERE v = 'theirs'",
        &["-readonly"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10", "{out:?}");
    m.unmount();
    let again = json(&env, &["apply", "feat"]);
    assert_eq!(again["result"], "up-to-date", "{again}");
    assert_eq!(head(&env, "main"), merged);
}

on_both_backends!(
    apply_merges_rows_like_doing_both_by_hand_embedded,
    apply_merges_rows_like_doing_both_by_hand_pgs3,
    apply_merges_rows_like_doing_both_by_hand
);

/// Many conflicts: the first 100 by key are listed (the same ones each time, whatever order
/// DuckDB's parallel joins find them in), and a line says how many more there are.
#[test]
fn many_conflicts_list_the_first_by_key_and_count_the_rest() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    write(
        &env,
        "db@main",
        "CREATE TABLE t(id BIGINT PRIMARY KEY, v VARCHAR); INSERT INTO t SELECT range, 'v' || range FROM range(600000)",
    );
    env.ok(&["branch", "feat"]);
    write(
        &env,
        "db@feat",
        "UPDATE t SET v = 'theirs' WHERE id % 3 = 0",
    );
    write(&env, "db@main", "UPDATE t SET v = 'ours' WHERE id % 3 = 0");
    let out = env
        .cmd()
        .args(["--json", "apply", "feat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"][0]["tables"][0]["conflicts"], 200000);
    let keys: Vec<i64> = report["files"][0]["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(keys, (0..100).map(|i| i * 3).collect::<Vec<i64>>());
    let text = env
        .cmd()
        .args(["apply", "feat", "--dry-run"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&text.stdout);
    assert_eq!(listed.matches("conflict in t at").count(), 100, "{listed}");
    assert!(
        listed.contains(
            "... and 199900 more conflicting row(s) in db.duckdb (the first 100 by key are listed)"
        ),
        "{listed}"
    );
}

#[test]
fn conflicting_changes_are_listed_and_nothing_is_committed() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    write(
        &env,
        "db@main",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v VARCHAR, d DECIMAL(38, 10) DEFAULT 12345678901234567890.1234567891); INSERT INTO t (id, v) SELECT range, 'v' || range FROM range(100)",
    );
    env.ok(&["branch", "feat"]);
    write(&env, "db@feat", "UPDATE t SET v = 'theirs' WHERE id IN (1, 2); DELETE FROM t WHERE id = 3; UPDATE t SET v = 'only theirs' WHERE id = 50");
    write(&env, "db@main", "UPDATE t SET v = 'ours' WHERE id = 1; UPDATE t SET v = 'theirs' WHERE id = 2; UPDATE t SET v = 'ours' WHERE id = 3");
    let ours = head(&env, "main");
    let out = env
        .cmd()
        .args(["--json", "apply", "feat"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result"], "conflicts");
    let conflicts = report["files"][0]["conflicts"].as_array().unwrap();
    // Row 2 changed the same way on both sides: no conflict. Rows 1 and 3 conflict.
    let mut keys: Vec<i64> = conflicts
        .iter()
        .map(|c| c["key"]["id"].as_i64().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, vec![1, 3], "{report}");
    let c1 = conflicts.iter().find(|c| c["key"]["id"] == 1).unwrap();
    assert_eq!(c1["base"]["v"], "v1");
    // Exact, as DuckDB prints it (not a JSON number rounded to a double).
    assert_eq!(c1["ours"]["d"], "12345678901234567890.1234567891", "{c1}");
    assert_eq!(c1["ours"]["v"], "ours");
    assert_eq!(c1["theirs"]["v"], "theirs");
    let c3 = conflicts.iter().find(|c| c["key"]["id"] == 3).unwrap();
    assert_eq!(c3["theirs"], Value::Null, "deleted on their side: {c3}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 row(s) changed differently"), "{stderr}");
    assert!(stderr.contains("--ours or --theirs"), "{stderr}");
    assert_eq!(head(&env, "main"), ours, "nothing is committed");
    // Text form lists them too.
    let text = env.fails_with(3, &["apply", "feat", "--dry-run"]);
    assert!(text.contains("2 row(s)"), "{text}");
    // The table's action says what happens to it: nothing, for its conflicts.
    assert_eq!(report["files"][0]["tables"][0]["action"], "conflicts");
    let out = env
        .cmd()
        .args(["apply", "feat", "--dry-run"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.contains(" t "))
        .unwrap_or_default();
    assert!(line.contains("conflicts"), "{table}");
    let plan = |how: &str| -> Value {
        let out = env
            .cmd()
            .args(["--json", "apply", "feat", "--dry-run", how])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(plan["result"], "dry-run", "{plan}");
        plan
    };
    assert_eq!(
        plan("--ours")["files"][0]["tables"][0]["action"],
        "merged, ours kept"
    );
    assert_eq!(
        plan("--theirs")["files"][0]["tables"][0]["action"],
        "merged, theirs taken"
    );

    // --ours keeps the branch's rows, and still takes the source's other changes.
    env.ok(&["branch", "try-ours", "main"]);
    env.ok(&["apply", "feat", "-b", "try-ours", "--ours"]);
    let got = export(&env, "try-ours");
    assert_eq!(
        duckdb(
            &got,
            "SELECT string_agg(id || '=' || v, ' ' ORDER BY id) FROM t WHERE id IN (1, 2, 3, 50)"
        ),
        "1=ours 2=theirs 3=ours 50=only theirs"
    );
    // --theirs takes the source's rows (row 3 is deleted); its JSON is one document.
    let out = env
        .cmd()
        .args(["--json", "apply", "feat", "--theirs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["result"], "merged", "{done}");
    let got = export(&env, "main");
    assert_eq!(
        duckdb(
            &got,
            "SELECT string_agg(id || '=' || v, ' ' ORDER BY id) FROM t WHERE id IN (1, 2, 3, 50)"
        ),
        "1=theirs 2=theirs 50=only theirs"
    );

    // Conflicting schema changes refuse the merge whatever the resolution.
    env.ok(&["branch", "s1", "main"]);
    env.ok(&["branch", "s2", "main"]);
    write(&env, "db@s1", "ALTER TABLE t ADD COLUMN c INTEGER");
    write(&env, "db@s2", "ALTER TABLE t ADD COLUMN c VARCHAR");
    let before = head(&env, "s2");
    let e = env.fails_with(3, &["apply", "s1", "-b", "s2", "--theirs"]);
    assert!(
        e.contains("column c added on both sides with different types"),
        "{e}"
    );
    assert_eq!(head(&env, "s2"), before);
}

/// Tables tied by foreign keys merge in an order the keys allow: the source deletes a child row
/// and its parent, updates a parent row a child refers to, adds a parent and a child, and
/// creates two tables, the referring one first by name. Generated columns are left to DuckDB.
#[test]
fn apply_respects_foreign_keys_and_generated_columns() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    write(
        &env,
        "db@main",
        "CREATE TABLE a_parent(id INTEGER PRIMARY KEY, n VARCHAR, loud VARCHAR GENERATED ALWAYS AS (upper(n)));
         CREATE TABLE z_child(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES a_parent(id));
         CREATE TABLE g(a INTEGER, b INTEGER AS (a + 1));
         INSERT INTO a_parent (id, n) VALUES (1, 'one'), (2, 'two');
         INSERT INTO z_child VALUES (10, 1), (20, 2);
         INSERT INTO g (a) VALUES (1), (2)",
    );
    env.ok(&["tag", "base"]);
    env.ok(&["branch", "feat"]);
    let theirs = "DELETE FROM z_child WHERE id = 20; DELETE FROM a_parent WHERE id = 2;
        UPDATE a_parent SET n = 'uno' WHERE id = 1;
        INSERT INTO a_parent (id, n) VALUES (3, 'three'); INSERT INTO z_child VALUES (30, 3);
        INSERT INTO g (a) VALUES (7); DELETE FROM g WHERE a = 1;
        CREATE TABLE m_new(id INTEGER PRIMARY KEY); CREATE TABLE b_ref(x INTEGER REFERENCES m_new(id));
        INSERT INTO m_new VALUES (5); INSERT INTO b_ref VALUES (5)";
    let ours =
        "INSERT INTO a_parent (id, n) VALUES (4, 'four'); INSERT INTO z_child VALUES (40, 4);
        INSERT INTO g (a) VALUES (9)";
    write(&env, "db@feat", theirs);
    write(&env, "db@main", ours);
    let out = json(&env, &["apply", "feat"]);
    assert_eq!(out["result"], "merged", "{out}");
    let want = export(&env, "base");
    duckdb(&want, ours);
    duckdb(&want, theirs);
    assert_same_rows(&export(&env, "main"), &want);
}

/// A database the source removed is removed by the merge, if the branch left its tables alone;
/// if the branch changed them, the merge is refused.
#[test]
fn apply_removes_a_database_the_source_removed() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    let dir = env.path("m");
    let m = env.mount("db@main", &dir, &[]);
    duckdb(
        &dir.join("db.duckdb"),
        "CREATE TABLE t AS SELECT 1 AS x; CHECKPOINT",
    );
    duckdb(
        &dir.join("old.duckdb"),
        "CREATE TABLE u AS SELECT 2 AS y; CHECKPOINT",
    );
    m.unmount();
    env.ok(&["branch", "feat"]);
    env.ok(&["branch", "other"]);
    let m = env.mount("db@feat", &dir, &[]);
    std::fs::remove_file(dir.join("old.duckdb")).unwrap();
    m.unmount();
    env.ok(&["commit", "-b", "feat", "-m", "remove old"]);
    write(&env, "db@main", "INSERT INTO t VALUES (5)");
    let out = json(&env, &["apply", "feat"]);
    assert_eq!(out["result"], "merged", "{out}");
    let files: Vec<String> = json(&env, &["show", "main"])["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(files, ["db.duckdb"]);
    let got = export(&env, "main");
    assert_eq!(compare(&got, &got, "SELECT sum(x) FROM a.t"), "6");
    // Changed on the branch: refused, nothing committed.
    let m = env.mount("db@other", &dir, &[]);
    duckdb(
        &dir.join("old.duckdb"),
        "INSERT INTO u VALUES (3); CHECKPOINT",
    );
    m.unmount();
    let before = head(&env, "other");
    let e = env.fails_with(3, &["apply", "feat", "-b", "other"]);
    assert!(
        e.contains("u: dropped by the source, changed on the branch"),
        "{e}"
    );
    assert_eq!(head(&env, "other"), before);
}

/// What apply cannot bring over (a macro, a type) refuses the merge and is named, rather than
/// left out; once the branch has it the same, the merge goes through.
#[test]
fn apply_refuses_what_it_cannot_bring_over() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    write(
        &env,
        "db@main",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v VARCHAR); INSERT INTO t VALUES (1, 'a')",
    );
    env.ok(&["branch", "feat"]);
    let made = "CREATE MACRO twice(x) AS x * 2; CREATE TYPE mood AS ENUM ('sad', 'happy')";
    write(
        &env,
        "db@feat",
        &format!("{made}; CREATE TABLE m(id INTEGER, feel mood); INSERT INTO m VALUES (1, 'happy'); INSERT INTO t VALUES (2, 'b')"),
    );
    write(&env, "db@main", "INSERT INTO t VALUES (3, 'c')");
    let ours = head(&env, "main");
    let e = env.fails_with(3, &["apply", "feat"]);
    assert!(
        e.contains("macro twice: created by the source, and apply does not bring macros over")
            && e.contains("type mood: created by the source"),
        "{e}"
    );
    assert!(e.contains("make the same change on the branch"), "{e}");
    assert_eq!(head(&env, "main"), ours, "nothing is committed");
    write(&env, "db@main", made);
    let out = json(&env, &["apply", "feat"]);
    assert_eq!(out["result"], "merged", "{out}");
    let got = export(&env, "main");
    assert_eq!(
        compare(
            &got,
            &got,
            "SELECT (SELECT string_agg(id::VARCHAR, '/' ORDER BY id) FROM a.t) || ':' || (SELECT feel::VARCHAR FROM a.m)"
        ),
        "1/2/3:happy"
    );
}

#[test]
fn fast_forward_touches_no_rows_and_merge_points_at_apply() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    write(
        &env,
        "db@main",
        "CREATE TABLE t AS SELECT range AS id FROM range(10)",
    );
    env.ok(&["branch", "feat"]);
    write(&env, "db@feat", "INSERT INTO t VALUES (10)");
    let theirs = head(&env, "feat");
    // One writer per branch: not while a mount holds it.
    let held = env.path("held");
    let m = env.mount("db@main", &held, &[]);
    let e = env.fails_with(3, &["apply", "feat"]);
    assert!(e.contains("mounted writable"), "{e}");
    m.unmount();
    let out = json(&env, &["apply", "feat", "--dry-run"]);
    assert_eq!(out["result"], "fast-forward");
    assert_ne!(head(&env, "main"), theirs);
    let text = env.ok(&["apply", "feat"]);
    assert!(text.contains("fast-forward"), "{text}");
    assert_eq!(head(&env, "main"), theirs);
    let again = env.ok(&["apply", "feat"]);
    assert!(again.contains("already has every change"), "{again}");
    // `merge` is layer compaction; it points at `apply`.
    let e = env.fails_with(2, &["merge", "feat"]);
    assert!(e.contains("quackfs apply feat"), "{e}");
    let e = env.fails_with(6, &["apply", "nosuch"]);
    assert!(e.contains("nosuch"), "{e}");
}

#[test]
fn bisect_finds_a_planted_bad_commit_among_64() {
    let mut env = Env::new();
    // Snapshot mounts of this test only go here (other tests run beside it).
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    env.backend
        .push(("TMPDIR".to_string(), tmp.to_string_lossy().to_string()));
    env.ok(&["init", "db"]);
    let dir = env.path("m");
    let m = env.mount("db@main", &dir, &[]);
    let db = dir.join("db.duckdb");
    duckdb(&db, "CREATE TABLE t(i INTEGER, v INTEGER); CHECKPOINT");
    // 64 commits after the good one; the 41st plants a negative value.
    for i in 1..=64 {
        let v = if i == 41 { -1 } else { i };
        duckdb(&db, &format!("INSERT INTO t VALUES ({i}, {v}); CHECKPOINT"));
    }
    m.unmount();
    let log = json(&env, &["log"]);
    let commits: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    // Newest first; the oldest is the empty `init`, the next one made the table.
    let good = commits[commits.len() - 2].clone();
    let candidates = commits.len() - 3;
    assert!(candidates >= 63, "{candidates} commits between");
    let query = "SELECT count(*) FILTER (WHERE v < 0) = 0 FROM t";
    let out = json(&env, &["bisect", &good, "main", "--sql", query]);
    let first_bad = out["first_bad"]["id"].as_str().unwrap().to_string();
    assert_eq!(out["candidates"], candidates, "{out}");
    // It is the commit that planted the value: bad, and its parent good.
    let at = |rev: &str| {
        duckdb(
            &export(&env, rev),
            "SELECT count(*) FILTER (WHERE v < 0) FROM t",
        )
    };
    assert_eq!(at(&first_bad[..12]), "1");
    assert_eq!(at(&format!("{}~1", &first_bad[..12])), "0");
    assert_eq!(
        duckdb(&export(&env, &first_bad[..12]), "SELECT max(i) FROM t"),
        "41"
    );
    let steps = out["steps"].as_array().unwrap().len();
    let bound = (candidates as f64 + 1.0).log2().ceil() as usize;
    assert!(
        steps <= bound,
        "{steps} versions opened for {candidates} candidates"
    );
    let text = env.ok(&["bisect", &good, "main", "--sql", query]);
    assert!(
        text.contains(&format!("first bad commit: {first_bad}")),
        "{text}"
    );
    let good = &good;
    // A query that is not one boolean is an error that names the commit.
    let e = env.fails(&["bisect", good, "main", "--sql", "SELECT 1, 2"]);
    assert!(e.contains("one row with one boolean column"), "{e}");
    let e = env.fails(&["bisect", "main", good, "--sql", "SELECT true"]);
    assert!(e.contains("is not an ancestor"), "{e}");
    // No snapshot mount is left behind.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tmp.to_str().unwrap()), "{mounts}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "snapshot directories left"
    );
}

/// An encrypted database cannot be read without its key: `diff --rows` lists it as not compared
/// and still compares the other databases of the commit.
#[test]
fn diff_rows_notes_an_encrypted_database_and_compares_the_rest() {
    let env = Env::new();
    env.ok(&["init", "r"]);
    let encrypted = |dir: &Path, sql: &str| {
        let file = dir.join("enc.duckdb");
        duckdb(
            Path::new(":memory:"),
            &format!(
                "SET force_mbedtls_unsafe = 'true'; ATTACH '{}' AS e (ENCRYPTION_KEY 'k'); {sql}",
                file.display()
            ),
        );
    };
    let dir = env.path("w1");
    let m = env.mount("r", &dir, &[]);
    duckdb(
        &dir.join("db.duckdb"),
        "CREATE TABLE t AS SELECT range AS id FROM range(10)",
    );
    encrypted(&dir, "CREATE TABLE e.s AS SELECT 1 AS x");
    m.unmount();
    env.ok(&["tag", "base"]);
    let dir = env.path("w2");
    let m = env.mount("r", &dir, &[]);
    duckdb(&dir.join("db.duckdb"), "DELETE FROM t WHERE id < 3");
    encrypted(&dir, "INSERT INTO e.s VALUES (2)");
    m.unmount();
    let diff = json(&env, &["diff", "base", "main", "--rows"]);
    let rows = diff["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{diff}");
    assert_eq!(rows[0]["file"], "db.duckdb");
    assert_eq!(rows[0]["tables"][0]["deleted"], 3, "{diff}");
    assert_eq!(rows[1]["file"], "enc.duckdb");
    assert_eq!(rows[1]["encrypted"], true, "{diff}");
    let text = env.ok(&["diff", "base", "main", "--rows"]);
    assert!(
        text.contains("rows of enc.duckdb: not compared (an encrypted database"),
        "{text}"
    );
}

/// Detaches, when dropped, every mount left under a directory (a test that failed before the
/// sweep it checks must not leave dead mounts behind).
struct DetachUnder(PathBuf);

impl Drop for DetachUnder {
    fn drop(&mut self) {
        for m in mounts_under(&self.0) {
            let _ = quackfs::mountinfo::lazy_unmount(&m);
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    quackfs::mountinfo::entries()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// A `quackfs apply` stalled at its merge (its DuckDB sleeps instead); killed (SIGKILL, with its
/// sleeping DuckDB) when dropped, also when the test fails.
struct Stalled {
    child: std::process::Child,
    sleeper: String,
}

impl Stalled {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL to the command alone.
    fn kill_command(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn kill(&mut self) {
        self.kill_command();
        let _ = std::process::Command::new("kill")
            .args(["-9", &self.sleeper])
            .status();
    }

    /// Whether its DuckDB (the sleeper) has ended, waiting up to 10 s for it.
    fn duckdb_ended(&self) -> bool {
        let stat = format!("/proc/{}/stat", self.sleeper);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // Gone, or a zombie nobody has reaped yet.
            match std::fs::read_to_string(&stat) {
                Err(_) => return true,
                Ok(s)
                    if s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return true
                }
                Ok(_) => {}
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `quackfs apply feat` with a DuckDB that stops (sleeps) at the merge, snapshots in `tmp`: the
/// running command, once it is there (the sleeper's pid is in `mark`).
fn stalled_apply(env: &Env, tmp: &Path, mark: &Path) -> Stalled {
    let fake = env.path("stalling-duckdb");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nscript=$(cat)\ncase \"$script\" in *\"/apply-\"*) echo $$ > '{}'; exec sleep 120 ;; esac\nprintf '%s' \"$script\" | exec '{}' \"$@\"\n",
            mark.display(),
            duckdb_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = std::fs::remove_file(mark);
    let mut child = env
        .std_cmd()
        .env("TMPDIR", tmp)
        .env("QUACKFS_DUCKDB", &fake)
        .args(["apply", "feat"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let pid = std::fs::read_to_string(mark).unwrap_or_default();
        if !pid.trim().is_empty() {
            return Stalled {
                child,
                sleeper: pid.trim().to_string(),
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("apply ended ({status}) before it reached the merge");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "apply never reached the merge"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A command killed outright (SIGKILL) while it has versions mounted cannot clean up: its
/// snapshots stay in the mount table, dead, and apply's working copy stays on disk. The next
/// command that mounts versions clears them, and leaves those of a command still running alone.
#[test]
fn what_a_killed_apply_leaves_is_cleared_by_the_next_command() {
    let env = Env::new();
    env.ok(&["init", "db"]);
    write(
        &env,
        "db@main",
        "CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT); INSERT INTO t SELECT range, range FROM range(1000)",
    );
    env.ok(&["branch", "feat"]);
    write(&env, "db@feat", "UPDATE t SET v = v + 1 WHERE k < 10");
    write(&env, "db@main", "INSERT INTO t VALUES (5000, 1)");
    let tmp = env.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let _detach = DetachUnder(tmp.clone());
    let work = env.home().join("tmp");
    let snapshots = || -> Vec<String> {
        common::listing(&tmp)
            .into_iter()
            .filter(|n| n.starts_with("quackfs-snapshot-"))
            .collect()
    };
    let with_tmp = |args: &[&str]| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = env.ok_env(&[("TMPDIR", tmp.to_str().unwrap())], &all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let copies = || -> Vec<String> {
        common::listing(&work)
            .into_iter()
            .filter(|n| n.starts_with("apply-"))
            .collect()
    };

    let mark = env.path("mark");
    let mut killed = stalled_apply(&env, &tmp, &mark);
    let of = |pid: u32, names: Vec<String>| -> usize {
        names
            .iter()
            .filter(|n| n.contains(&format!("-{pid}-")))
            .count()
    };
    killed.kill_command();
    assert!(
        killed.duckdb_ended(),
        "the killed apply's DuckDB runs on (pid {})",
        killed.sleeper
    );
    // (Dead, nobody serves them; a root may still answer stat from the kernel's attribute cache.)
    let left = mounts_under(&tmp);
    assert_eq!(left.len(), 3, "base, ours and theirs mounted: {left:?}");
    assert_eq!(of(killed.pid(), snapshots()), 3);
    assert_eq!(of(killed.pid(), copies()), 1, "apply's working copy");

    // The next apply clears them as it starts; it is kept running (its DuckDB stalls).
    let mut running = stalled_apply(&env, &tmp, &mark);
    assert_eq!(of(killed.pid(), snapshots()), 0);
    assert_eq!(of(killed.pid(), copies()), 0);
    let live = mounts_under(&tmp);
    assert_eq!(live.len(), 3, "{live:?}");
    // A command that mounts versions meanwhile leaves the running one's alone.
    let out = with_tmp(&["diff", "main", "feat", "--rows"]);
    let t = &out["rows"][0]["tables"][0];
    assert_eq!(
        (&t["table"], &t["updated"]),
        (&"t".into(), &10.into()),
        "{out}"
    );
    assert_eq!(mounts_under(&tmp), live);
    assert!(live.iter().all(|m| !quackfs::mountinfo::is_dead(m)));
    assert_eq!(of(running.pid(), snapshots()), 3);
    assert_eq!(of(running.pid(), copies()), 1);

    running.kill();
    // And with both gone, nothing is left; the merge goes through.
    let out = with_tmp(&["apply", "feat"]);
    assert_eq!(out["result"], "merged", "{out}");
    assert_eq!(mounts_under(&tmp), Vec::<PathBuf>::new());
    assert_eq!(snapshots(), Vec::<String>::new());
    assert_eq!(copies(), Vec::<String>::new());
}
