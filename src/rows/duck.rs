//! Running SQL in DuckDB itself: the `duckdb` CLI (or `QUACKFS_DUCKDB`) on an in-memory database
//! that attaches the versions it compares. Each statement's result comes back as JSON rows.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// One result row: column name -> value.
pub type Row = Map<String, Value>;

/// The DuckDB CLI to run: `QUACKFS_DUCKDB`, else `duckdb` on PATH.
pub fn binary() -> String {
    std::env::var("QUACKFS_DUCKDB").unwrap_or_else(|_| "duckdb".to_string())
}

/// A string as a SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A name as a SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Runs `script` (statements separated by `;`, stopping at the first error) and returns the
/// result of every statement that prints rows, in order.
pub async fn run(script: &str) -> Result<Vec<Vec<Row>>> {
    let bin = binary();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(["-json", "-bail", "-batch", ":memory:"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // DuckDB ends with this process however it ends: `kill_on_drop` covers every way but a
    // SIGKILL (the OOM killer, `kill -9`), which left it running on its own. The kernel's
    // parent-death signal goes when the thread that started the child ends: commands run their
    // work on the main thread (`block_on`), which ends with the process.
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure calls only prctl and getppid, which are
    // async-signal-safe, and allocates nothing on success.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // (This process may have died before the signal was asked for.)
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let out = cmd
        .spawn()
        .map_err(|e| {
            Error::Invalid(format!(
                "this command runs DuckDB ({bin}) and cannot start it: {e}; install the duckdb CLI or set QUACKFS_DUCKDB"
            ))
        })?;
    let mut child = out;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let text = format!("{script};\n");
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| Error::Invalid(format!("cannot send SQL to {bin}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Invalid(format!("{bin} failed: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no message)");
        return Err(Error::Invalid(format!("DuckDB: {}", first.trim())));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let text = standard_json(&text);
    let mut results = Vec::new();
    for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let v = v.map_err(|e| Error::Invalid(format!("unexpected output from {bin}: {e}")))?;
        let Value::Array(rows) = v else {
            return Err(Error::Invalid(format!(
                "unexpected output from {bin}: not a list of rows"
            )));
        };
        results.push(
            rows.into_iter()
                .filter_map(|r| match r {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect(),
        );
    }
    Ok(results)
}

/// DuckDB's JSON output made standard: it prints a floating-point NaN or infinity as the bare
/// words `NaN`, `Infinity` and `-Infinity`, which no JSON parser takes. Outside strings they
/// become the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
fn standard_json(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(word) = ["NaN", "Infinity", "-Infinity"]
            .into_iter()
            .find(|w| rest.starts_with(w))
        {
            out.push('"');
            out.push_str(word);
            out.push('"');
            rest = &rest[word.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// The `i`-th result of a [`run`], or an error naming what was expected.
pub fn take(results: &mut std::vec::IntoIter<Vec<Row>>, what: &str) -> Result<Vec<Row>> {
    results
        .next()
        .ok_or_else(|| Error::Invalid(format!("DuckDB returned no result for {what}")))
}

/// The columns `cols` of the relation aliased `alias`, named `TAG:column`: several rows side by
/// side in one result row, each value printed as DuckDB prints a top-level one (a DECIMAL or a
/// HUGEINT as exact text; inside a struct it would be a JSON number, rounded on reading).
pub fn tagged(alias: &str, tag: &str, cols: &[(String, String, bool)]) -> String {
    cols.iter()
        .map(|(c, _, _)| format!("{alias}.{} AS {}", ident(c), ident(&format!("{tag}:{c}"))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The row tagged `tag` (see [`tagged`]) out of a result row.
pub fn untag(row: &Row, tag: &str) -> Row {
    let prefix = format!("{tag}:");
    row.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v.clone())))
        .collect()
}

/// An integer column of a row (DuckDB prints HUGEINT and large integers as strings).
pub fn int(row: &Row, col: &str) -> i64 {
    match row.get(col) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// A string column of a row.
pub fn text(row: &Row, col: &str) -> String {
    match row.get(col) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_numbers_become_strings() {
        let duck = r#"[{"f":NaN,"l":[NaN,-Infinity,Infinity,1.5],"s":{"x":NaN},"t":"NaN \" Infinity","e":"\\"}]"#;
        let v: Value = serde_json::from_str(&standard_json(duck)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"f": "NaN", "l": ["NaN", "-Infinity", "Infinity", 1.5],
                "s": {"x": "NaN"}, "t": "NaN \" Infinity", "e": "\\"}])
        );
        // Plain output is left as it is.
        assert!(matches!(
            standard_json("[{\"a\":1}]"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn tagged_rows_come_apart() {
        let cols = [("a".to_string(), "INTEGER".to_string(), false)];
        assert_eq!(tagged("__x", "old", &cols), "__x.\"a\" AS \"old:a\"");
        let row: Row = serde_json::from_str(r#"{"id":1,"old:a":"1.500","new:a":"2.500"}"#).unwrap();
        assert_eq!(
            Value::Object(untag(&row, "new")),
            serde_json::json!({"a": "2.500"})
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
