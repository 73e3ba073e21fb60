//! The revision grammar: `[REPO@]REV` where REV is `BASE` followed by any number of `~N`, `^N`
//! and `@{TIME}` suffixes (`^` alone is `^1`, the first parent; `^2` is the second parent of a
//! commit made by `apply`). BASE is a branch, a tag or a commit id prefix (resolved by the engine).
//!
//! TIME is RFC 3339, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` (local time unless a zone is given), or
//! `N seconds|minutes|hours|days|weeks ago`. Parse errors say which character is wrong.

use crate::error::Error;
use crate::names::MAX_NAME_LEN;
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::fmt;

/// A parsed `[REPO@]REV`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevSpec {
    pub repo: Option<String>,
    pub rev: Rev,
}

/// A revision: a base name and suffixes applied left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rev {
    pub base: String,
    pub suffixes: Vec<Suffix>,
}

/// A revision suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suffix {
    /// `~N`: the N-th first parent.
    Parent(u32),
    /// `^N`: the N-th parent (`^1` the first, `^2` the second of a merge commit, `^0` itself).
    Nth(u32),
    /// `@{TIME}`: where the branch pointed at that time (from its reflog).
    At(TimeSpec),
}

/// A point in time as the user wrote it, and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSpec {
    pub text: String,
    pub at: DateTime<Utc>,
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)?;
        for s in &self.suffixes {
            match s {
                Suffix::Parent(n) => write!(f, "~{n}")?,
                Suffix::Nth(n) => write!(f, "^{n}")?,
                Suffix::At(t) => write!(f, "@{{{}}}", t.text)?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for RevSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(repo) = &self.repo {
            write!(f, "{repo}@")?;
        }
        write!(f, "{}", self.rev)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn bad(input: &str, pos: usize, why: impl Into<String>) -> Error {
    Error::BadRevision {
        input: input.to_string(),
        pos: pos + 1,
        why: why.into(),
    }
}

/// Parses a name at `pos`; returns the name and the position after it.
fn parse_name(input: &str, pos: usize, what: &str) -> Result<(String, usize), Error> {
    let rest = &input[pos..];
    let len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
    let name = &rest[..len];
    match name.chars().next() {
        None => {
            let why = match rest.chars().next() {
                None => format!("expected a {what} name"),
                Some(c) => format!("expected a {what} name, found {c:?}"),
            };
            return Err(bad(input, pos, why));
        }
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(bad(
                input,
                pos,
                format!("a {what} name must start with a letter or digit"),
            ))
        }
        _ => {}
    }
    if len > MAX_NAME_LEN {
        return Err(bad(
            input,
            pos + MAX_NAME_LEN,
            format!("a {what} name has at most {MAX_NAME_LEN} characters"),
        ));
    }
    Ok((name.to_string(), pos + len))
}

/// Parses `[REPO@]REV`, with `now` as the reference for relative times.
pub fn parse_revspec(input: &str, now: DateTime<Utc>) -> Result<RevSpec, Error> {
    // The repository part ends at the first '@' that does not open "@{".
    let bytes = input.as_bytes();
    let split = (0..bytes.len()).find(|&i| bytes[i] == b'@' && bytes.get(i + 1) != Some(&b'{'));
    let (repo, start) = match split {
        Some(i) => {
            let (name, end) = parse_name(input, 0, "database")?;
            if end != i {
                let c = input[end..].chars().next().unwrap_or('@');
                return Err(bad(
                    input,
                    end,
                    format!("unexpected {c:?} in the database name"),
                ));
            }
            if i + 1 == input.len() {
                return Err(bad(input, i + 1, "expected a revision after '@'"));
            }
            (Some(name), i + 1)
        }
        None => (None, 0),
    };
    let rev = parse_rev_at(input, start, now)?;
    Ok(RevSpec { repo, rev })
}

/// Parses a REV (no database part).
pub fn parse_rev(input: &str, now: DateTime<Utc>) -> Result<Rev, Error> {
    parse_rev_at(input, 0, now)
}

fn parse_rev_at(input: &str, start: usize, now: DateTime<Utc>) -> Result<Rev, Error> {
    let (base, mut pos) = parse_name(input, start, "revision")?;
    let mut suffixes = Vec::new();
    while pos < input.len() {
        let rest = &input[pos..];
        if let Some((sigil, after)) = rest
            .strip_prefix('~')
            .map(|a| ('~', a))
            .or_else(|| rest.strip_prefix('^').map(|a| ('^', a)))
        {
            let digits = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let n = if digits == 0 {
                1
            } else {
                after[..digits].parse::<u32>().map_err(|_| {
                    bad(
                        input,
                        pos + 1,
                        format!("the number after '{sigil}' is too large"),
                    )
                })?
            };
            suffixes.push(if sigil == '~' {
                Suffix::Parent(n)
            } else {
                Suffix::Nth(n)
            });
            pos += 1 + digits;
        } else if rest.starts_with("@{") {
            let Some(close) = rest.find('}') else {
                return Err(bad(input, pos, "'@{' is not closed by '}'"));
            };
            let text = &rest[2..close];
            let at = parse_time(text, now).map_err(|e| match e {
                Error::BadTime(_, why) => bad(input, pos + 2, format!("bad time {text:?}: {why}")),
                other => other,
            })?;
            suffixes.push(Suffix::At(TimeSpec {
                text: text.to_string(),
                at,
            }));
            pos += close + 1;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            return Err(bad(
                input,
                pos,
                format!("unexpected {c:?} (expected '~N', '^N' or '@{{TIME}}')"),
            ));
        }
    }
    Ok(Rev { base, suffixes })
}

/// Parses a point in time. See the module documentation for the accepted forms.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    let t = text.trim();
    let err = |why: &str| Error::BadTime(text.to_string(), why.to_string());
    if t.is_empty() {
        return Err(err("it is empty"));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Some(ago) = t.strip_suffix(" ago") {
        let mut parts = ago.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected 'N units ago', e.g. '2 hours ago'"));
        };
        let n: i64 = n
            .parse()
            .map_err(|_| err("expected a whole number before the unit"))?;
        let secs = match unit.trim_end_matches('s') {
            "second" | "sec" => 1,
            "minute" | "min" => 60,
            "hour" => 3600,
            "day" => 86_400,
            "week" => 604_800,
            _ => {
                return Err(err(
                    "the unit must be seconds, minutes, hours, days or weeks",
                ))
            }
        };
        let total = n.checked_mul(secs).ok_or_else(|| err("too far back"))?;
        let delta = chrono::Duration::try_seconds(total).ok_or_else(|| err("too far back"))?;
        return now
            .checked_sub_signed(delta)
            .ok_or_else(|| err("too far back"));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let naive = d.and_hms_opt(0, 0, 0).ok_or_else(|| err("invalid date"))?;
        return local(naive).ok_or_else(|| err("that local time does not exist"));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, fmt) {
            return local(naive).ok_or_else(|| err("that local time does not exist"));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%d %H:%M%#z",
        "%Y-%m-%d %H:%M:%S %#z",
        "%Y-%m-%d %H:%M %#z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.with_timezone(&Utc));
        }
    }
    if let Some(naive) = t.strip_suffix(" UTC").or_else(|| t.strip_suffix('Z')) {
        for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(naive, fmt) {
                return Ok(Utc.from_utc_datetime(&n));
            }
        }
    }
    Err(err("not a time quackfs understands"))
}

fn local(naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
    }

    fn p(s: &str) -> Result<RevSpec, Error> {
        parse_revspec(s, now())
    }

    #[test]
    fn parses_forms() {
        let r = p("analytics@exp").unwrap();
        assert_eq!(r.repo.as_deref(), Some("analytics"));
        assert_eq!(r.rev.base, "exp");
        let r = p("main~3").unwrap();
        assert_eq!(r.repo, None);
        assert_eq!(r.rev.suffixes, vec![Suffix::Parent(3)]);
        let r = p("main~").unwrap();
        assert_eq!(r.rev.suffixes, vec![Suffix::Parent(1)]);
        let r = p("db@main@{2024-05-01T00:00:00Z}~2").unwrap();
        assert_eq!(r.repo.as_deref(), Some("db"));
        assert_eq!(
            r.rev.suffixes,
            vec![
                Suffix::At(TimeSpec {
                    text: "2024-05-01T00:00:00Z".into(),
                    at: Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()
                }),
                Suffix::Parent(2)
            ]
        );
        let r = p("main@{2 hours ago}").unwrap();
        assert_eq!(r.repo, None);
        match &r.rev.suffixes[0] {
            Suffix::At(t) => assert_eq!(t.at, now() - chrono::Duration::hours(2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(p("a1b2c3d4").unwrap().rev.base, "a1b2c3d4");
    }

    #[test]
    fn errors_point_at_the_bad_character() {
        let cases = [
            ("", "expected a revision name (at character 1)"),
            (
                "main!",
                "unexpected '!' (expected '~N', '^N' or '@{TIME}') (at character 5)",
            ),
            ("db@", "expected a revision after '@' (at character 4)"),
            (
                "d b@x",
                "unexpected ' ' in the database name (at character 2)",
            ),
            (
                "main@{yesterday-ish}",
                "bad time \"yesterday-ish\": not a time quackfs understands (at character 7)",
            ),
            (
                "main@{2024-05-01",
                "'@{' is not closed by '}' (at character 5)",
            ),
            (
                "-x",
                "a revision name must start with a letter or digit (at character 1)",
            ),
            (
                "main~99999999999",
                "the number after '~' is too large (at character 6)",
            ),
            (
                "db@@x",
                "expected a revision name, found '@' (at character 4)",
            ),
        ];
        for (input, want) in cases {
            let got = p(input).unwrap_err().to_string();
            assert!(
                got.ends_with(want),
                "{input:?}: got {got:?}, want …{want:?}"
            );
        }
    }

    #[test]
    fn times() {
        let utc = |y, mo, d, h, mi, s| Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap();
        assert_eq!(
            parse_time("2024-05-01T12:00:00Z", now()).unwrap(),
            utc(2024, 5, 1, 12, 0, 0)
        );
        assert_eq!(
            parse_time("2024-05-01T12:00:00+02:00", now()).unwrap(),
            utc(2024, 5, 1, 10, 0, 0)
        );
        assert_eq!(
            parse_time("3 days ago", now()).unwrap(),
            utc(2024, 5, 29, 12, 0, 0)
        );
        assert_eq!(
            parse_time("1 week ago", now()).unwrap(),
            utc(2024, 5, 25, 12, 0, 0)
        );
        assert_eq!(
            parse_time("90 seconds ago", now()).unwrap(),
            utc(2024, 6, 1, 11, 58, 30)
        );
        assert_eq!(
            parse_time("2024-05-01 10:30:00Z", now()).unwrap(),
            utc(2024, 5, 1, 10, 30, 0)
        );
        let local_midnight = Local
            .with_ymd_and_hms(2024, 5, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("2024-05-01", now()).unwrap(), local_midnight);
        let local_time = Local
            .with_ymd_and_hms(2024, 5, 1, 13, 5, 0)
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("2024-05-01 13:05", now()).unwrap(), local_time);
        for bad in [
            "",
            "soon",
            "2 fortnights ago",
            "x hours ago",
            "2024-13-01",
            "99999999999999999 weeks ago",
        ] {
            assert!(parse_time(bad, now()).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn random_strings_never_panic(s in "\\PC{0,40}") {
            let _ = parse_revspec(&s, now());
        }

        #[test]
        fn random_grammar_like_strings_never_panic(s in "[a-z0-9@{}~^ :.-]{0,30}") {
            let _ = parse_revspec(&s, now());
        }

        #[test]
        fn printed_revisions_parse_back(
            repo in proptest::option::of("[a-z][a-z0-9_.-]{0,10}"),
            base in "[A-Za-z0-9][A-Za-z0-9_.-]{0,20}",
            suffixes in proptest::collection::vec(
                prop_oneof![
                    (0u32..1000).prop_map(Suffix::Parent),
                    (0u32..3).prop_map(Suffix::Nth),
                    (0i64..2_000_000_000).prop_map(|s| {
                        let at = DateTime::from_timestamp(s, 0).unwrap();
                        Suffix::At(TimeSpec { text: at.to_rfc3339(), at })
                    }),
                ],
                0..4,
            ),
        ) {
            let spec = RevSpec { repo, rev: Rev { base, suffixes } };
            let printed = spec.to_string();
            prop_assert_eq!(parse_revspec(&printed, now()).unwrap(), spec);
        }
    }
}
