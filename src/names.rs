//! Validation of user-chosen names (databases, branches, tags) and file names inside a database.

use crate::error::Error;

/// The longest name accepted for a database, branch or tag.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a database, branch or tag name against `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    let bad = |why: String| Error::BadName {
        what: what.to_string(),
        name: name.to_string(),
        why,
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(bad("it is empty".into())),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(bad(format!(
                "it must start with a letter or digit, not {c:?}"
            )))
        }
        _ => {}
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!("it is longer than {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(bad(format!(
            "{c:?} is not allowed (use letters, digits, '.', '_' and '-')"
        )));
    }
    Ok(())
}

/// Whether a branch or tag name could also be read as a commit id or prefix (4 or more hex
/// digits): such a ref hides the commits whose ids start with it (refs are resolved first).
pub fn looks_like_commit_id(name: &str) -> bool {
    name.len() >= 4 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks the base name of a file stored in a database (`analytics.duckdb`, `analytics.duckdb.wal`).
pub fn validate_file_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            what: "file".into(),
            name: name.to_string(),
            why: "a file name must be a plain base name of at most 255 bytes".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for n in [
            "a",
            "analytics",
            "v1.0",
            "exp_2024-05",
            "A9",
            &"x".repeat(64),
        ] {
            validate_name("branch", n).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        let cases = [
            ("", "empty"),
            ("-x", "must start"),
            (".hidden", "must start"),
            ("a b", "' ' is not allowed"),
            ("a@b", "'@' is not allowed"),
            ("a~1", "'~' is not allowed"),
            ("a/b", "'/' is not allowed"),
        ];
        for (name, why) in cases {
            let err = validate_name("branch", name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        let long = "x".repeat(65);
        assert!(validate_name("tag", &long)
            .unwrap_err()
            .to_string()
            .contains("longer than 64"));
    }

    #[test]
    fn commit_id_lookalikes() {
        for n in [
            "abcd",
            "D21BB256",
            "2024",
            "0123456789abcdef0123456789abcdef",
        ] {
            assert!(looks_like_commit_id(n), "{n}");
        }
        for n in ["abc", "main", "v1.0", "abcg", "2024-05"] {
            assert!(!looks_like_commit_id(n), "{n}");
        }
    }

    #[test]
    fn file_names() {
        validate_file_name("db.duckdb.wal").unwrap();
        for bad in ["", ".", "..", "a/b"] {
            assert!(validate_file_name(bad).is_err());
        }
    }
}
