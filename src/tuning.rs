//! Tuning variables: the `QUACKFS_*` settings read from the environment (docs/operations.md,
//! "Configuration"), each parsed here by the one parser of its kind. [`check`] runs when the CLI
//! starts, so a value that does not parse is an error naming the variable and what it expects,
//! never a silent fall back to the default.

use std::time::Duration;

/// What a parser expects, for the message when a value does not parse.
type Expected = &'static str;

#[derive(Clone, Copy)]
enum Kind {
    Size,
    Count,
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

/// Bytes, as `bytesize` reads them: `4MiB`, `1.5 GB`, `65536` (also the CLI's `--cache-size`).
pub fn parse_size(text: &str) -> Result<u64, Expected> {
    let text = text.trim();
    match text.parse::<bytesize::ByteSize>() {
        Ok(b) if !text.is_empty() => Ok(b.as_u64()),
        _ => Err("a size such as 4MiB, 512KiB or 65536"),
    }
}

/// A whole number: `4`, `0`.
fn parse_count(text: &str) -> Result<usize, Expected> {
    text.trim()
        .parse()
        .map_err(|_| "a whole number such as 4 (0 turns it off)")
}

/// A humantime duration: `30s`, `250ms`, `1h`.
fn parse_duration(text: &str) -> Result<Duration, Expected> {
    humantime::parse_duration(text.trim()).map_err(|_| "a duration such as 30s, 250ms or 2m")
}

/// Variable `name` through `parse`: None when it is unset or empty; a message naming it when it
/// does not parse.
fn read<T>(name: &str, parse: fn(&str) -> Result<T, Expected>) -> Result<Option<T>, String> {
    debug_assert!(
        VARS.iter().any(|(n, _)| *n == name),
        "{name} is not in VARS: `check` would not see it"
    );
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => parse(&v)
            .map(Some)
            .map_err(|expected| format!("invalid {name}={v:?}: expected {expected}")),
        _ => Ok(None),
    }
}

/// Checks every tuning variable that is set; the first one that does not parse is an error.
pub fn check() -> Result<(), String> {
    for &(name, kind) in VARS {
        match kind {
            Kind::Size => read(name, parse_size).map(drop)?,
            Kind::Count => read(name, parse_count).map(drop)?,
            Kind::Duration => read(name, parse_duration).map(drop)?,
        }
    }
    Ok(())
}

/// A size variable in bytes (None: unset; [`check`] reported a malformed one at start).
pub fn size(name: &str) -> Option<u64> {
    read(name, parse_size).ok().flatten()
}

/// A count variable (None: unset; [`check`] reported a malformed one at start).
pub fn count(name: &str) -> Option<usize> {
    read(name, parse_count).ok().flatten()
}

/// A duration variable: None when unset; a message naming it when it does not parse.
pub fn duration(name: &str) -> Result<Option<Duration>, String> {
    read(name, parse_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_parses_its_values_and_names_what_it_expects() {
        assert_eq!(parse_size(" 4MiB "), Ok(4 << 20));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_count("0"), Ok(0));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_count("four").unwrap_err().contains("whole number"));
        assert!(parse_count("-1").is_err());
        assert!(parse_size("lots").unwrap_err().contains("size"));
        assert!(parse_size(" ").is_err(), "an empty size is no size");
        assert!(parse_duration("5").unwrap_err().contains("duration"));
    }
}
