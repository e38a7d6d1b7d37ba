//! Znode paths: validation and the few operations on them both ends need.
//!
//! A path is absolute and `/`-separated like ZooKeeper's: `/` is the root; every other path
//! starts with `/`, has no empty segment, no trailing `/`, no `.` or `..` segment, and no control
//! or non-character code points.

use crate::{ApiError, ErrorCode, PATH_BYTES_MAX};

/// Digits of the number a sequential create appends to a name.
pub const SEQUENCE_DIGITS: usize = 10;

/// The number a sequential create appended to `name`: its last [`SEQUENCE_DIGITS`] characters,
/// if they are digits (their text order is their order).
pub fn sequence(name: &str) -> Option<&str> {
    let digits = name.get(name.len().checked_sub(SEQUENCE_DIGITS)?..)?;
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(digits)
}

/// Checks that `path` names a znode.
pub fn validate(path: &str) -> Result<(), ApiError> {
    validate_inner(path, false)
}

/// Checks the path given to a sequential create: like [`validate`], except that it may end in
/// `/` (the counter then is the whole last name, as in ZooKeeper).
pub fn validate_sequential_prefix(path: &str) -> Result<(), ApiError> {
    validate_inner(path, true)
}

fn validate_inner(path: &str, sequential: bool) -> Result<(), ApiError> {
    let invalid = |why: &str| Err(ApiError::at(ErrorCode::InvalidPath, path).with_detail(why));
    if path.is_empty() {
        return invalid("empty path");
    }
    if path.len() > PATH_BYTES_MAX {
        return Err(ApiError::new(ErrorCode::InvalidPath)
            .with_detail(format!("path of {} bytes, limit {PATH_BYTES_MAX}", path.len())));
    }
    if !path.starts_with('/') {
        return invalid("must start with /");
    }
    if path == "/" {
        return Ok(());
    }
    let body = match path.strip_suffix('/') {
        Some(body) if sequential => body,
        Some(_) => return invalid("must not end with /"),
        None => path,
    };
    if body.is_empty() {
        // A sequential prefix of "/" alone: the counter becomes a child of the root.
        return Ok(());
    }
    for segment in body[1..].split('/') {
        match segment {
            "" => return invalid("empty segment"),
            "." | ".." => return invalid("relative segment"),
            _ => {}
        }
        if let Some(c) = segment.chars().find(|&c| forbidden(c)) {
            return invalid(&format!("forbidden character U+{:04X}", c as u32));
        }
    }
    Ok(())
}

/// The code points ZooKeeper refuses in paths: NUL and other controls, and non-characters.
fn forbidden(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{fff0}'..='\u{ffff}')
}

/// The parent of a valid path other than the root: `/a/b` → `/a`, `/a` → `/`.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last name of a valid path: `/a/b` → `b`; the root's name is empty.
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The path of child `name` under `parent`.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses_as_zookeeper() {
        for ok in ["/", "/a", "/a/b", "/a-b_c.d", "/αβγ", "/a/..b", "/a/.b"] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a", "/a/", "//", "/a//b", "/.", "/a/..", "/a\0b", "/a\u{1}", "/\u{fffe}"] {
            assert_eq!(validate(bad).map_err(|e| e.code), Err(ErrorCode::InvalidPath), "{bad:?}");
        }
        let long = format!("/{}", "x".repeat(PATH_BYTES_MAX));
        assert!(validate(&long).is_err());
    }

    #[test]
    fn sequential_prefix_may_end_with_slash() {
        assert_eq!(validate_sequential_prefix("/q/"), Ok(()));
        assert_eq!(validate_sequential_prefix("/q/item-"), Ok(()));
        assert_eq!(validate_sequential_prefix("/"), Ok(()));
        assert!(validate_sequential_prefix("/q//").is_err());
    }

    #[test]
    fn parent_name_join() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
