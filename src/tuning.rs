//! Tuning variables: the `QUACKFS_*` settings read from the environment (docs/operations.md,
//! "Configuration"), each parsed here by the one parser of its kind. [`check`] runs when the CLI
//! starts, so a value that does not parse is an error naming the variable and what it expects,
//! never a silent fall back to the default.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Bytes: `4MiB`, `1.5 GB`, `65536`.
    Size,
    /// A whole number: `4`, `0`.
    Count,
    /// humantime: `30s`, `250ms`, `1h`.
    Duration,
}

/// Every tuning variable and the kind of value it takes.
const VARS: &[(&str, Kind)] = &[
    ("QUACKFS_CONNECT_TIMEOUT", Kind::Duration),
    ("QUACKFS_S3_RETRY_TIMEOUT", Kind::Duration),
    ("QUACKFS_INLINE_MAX", Kind::Size),
    ("QUACKFS_INLINE_SPILL_AFTER", Kind::Duration),
    ("QUACKFS_DISK_CACHE", Kind::Size),
    ("QUACKFS_COMPACT_FAN_IN", Kind::Count),
    ("QUACKFS_FETCH_WINDOW", Kind::Size),
    ("QUACKFS_READAHEAD", Kind::Count),
];

/// A parsed value.
#[derive(Debug, PartialEq)]
enum Value {
    Number(u64),
    Duration(Duration),
}

fn parse(kind: Kind, text: &str) -> Result<Value, &'static str> {
    let text = text.trim();
    match kind {
        Kind::Size => text
            .parse::<bytesize::ByteSize>()
            .map(|b| Value::Number(b.as_u64()))
            .map_err(|_| "a size such as 4MiB, 512KiB or 65536"),
        Kind::Count => text
            .parse::<u64>()
            .map(Value::Number)
            .map_err(|_| "a whole number such as 4 (0 turns it off)"),
        Kind::Duration => humantime::parse_duration(text)
            .map(Value::Duration)
            .map_err(|_| "a duration such as 30s, 250ms or 2m"),
    }
}

fn kind_of(name: &str) -> Kind {
    VARS.iter()
        .find(|(n, _)| *n == name)
        .map_or(Kind::Count, |(_, k)| *k)
}

/// The value of variable `name`: None when it is unset or empty; a message naming it when it
/// does not parse.
fn read(name: &str) -> Result<Option<Value>, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => parse(kind_of(name), &v)
            .map(Some)
            .map_err(|expected| format!("invalid {name}={v:?}: expected {expected}")),
        _ => Ok(None),
    }
}

/// Checks every tuning variable that is set; the first one that does not parse is an error.
pub fn check() -> Result<(), String> {
    for (name, _) in VARS {
        read(name)?;
    }
    Ok(())
}

fn number(name: &str) -> Option<u64> {
    match read(name) {
        Ok(Some(Value::Number(n))) => Some(n),
        _ => None,
    }
}

/// A size variable in bytes (None: unset; [`check`] reported a malformed one at start).
pub fn size(name: &str) -> Option<u64> {
    number(name)
}

/// A count variable (None: unset; [`check`] reported a malformed one at start).
pub fn count(name: &str) -> Option<u64> {
    number(name)
}

/// A duration variable: None when unset; a message naming it when it does not parse.
pub fn duration(name: &str) -> Result<Option<Duration>, String> {
    match read(name)? {
        Some(Value::Duration(d)) => Ok(Some(d)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_parses_its_values_and_names_what_it_expects() {
        assert_eq!(parse(Kind::Size, " 4MiB "), Ok(Value::Number(4 << 20)));
        assert_eq!(parse(Kind::Size, "65536"), Ok(Value::Number(65536)));
        assert_eq!(parse(Kind::Count, "0"), Ok(Value::Number(0)));
        assert_eq!(
            parse(Kind::Duration, "250ms"),
            Ok(Value::Duration(Duration::from_millis(250)))
        );
        assert!(parse(Kind::Count, "four")
            .unwrap_err()
            .contains("whole number"));
        assert!(parse(Kind::Count, "-1").is_err());
        assert!(parse(Kind::Size, "lots").unwrap_err().contains("size"));
        assert!(parse(Kind::Duration, "5").unwrap_err().contains("duration"));
        // Every variable has a kind (a name missing from VARS would be parsed as a count).
        for (name, kind) in VARS {
            assert_eq!(kind_of(name), *kind);
        }
    }
}
