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
    let out = tokio::process::Command::new(&bin)
        .args(["-json", "-bail", "-batch", ":memory:"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
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

/// The `i`-th result of a [`run`], or an error naming what was expected.
pub fn take(results: &mut std::vec::IntoIter<Vec<Row>>, what: &str) -> Result<Vec<Row>> {
    results
        .next()
        .ok_or_else(|| Error::Invalid(format!("DuckDB returned no result for {what}")))
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
    fn quoting() {
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
