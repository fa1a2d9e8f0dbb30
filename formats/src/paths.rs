//! Data paths: the directory (later also the object-store prefix) a lake keeps its
//! files in, and the roots a superuser allows servers of other roles to use.
//!
//! Compared lexically, after normalization: `/a/./b//c/` and `/a/b/c` are one
//! directory, and `..` is refused instead of resolved, since `/lakes/x/..` names a
//! directory outside `/lakes/x` only when no component is a symbolic link.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `path` as an absolute directory with one trailing slash and no empty or `.`
/// components.
pub fn normalize_directory(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError("must be an absolute path".into()));
    }
    if path.contains('\0') {
        return Err(PathError("must not contain a NUL character".into()));
    }
    let mut out = String::from("/");
    for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." {
            return Err(PathError("must not contain \"..\"".into()));
        }
        out.push_str(component);
        out.push('/');
    }
    Ok(out)
}

/// Whether directory `path` is `root` or lies below it (both normalized).
pub fn is_within(path: &str, root: &str) -> bool {
    match (normalize_directory(path), normalize_directory(root)) {
        (Ok(path), Ok(root)) => path.starts_with(&root),
        _ => false,
    }
}

/// The roots of a comma-separated list (a setting's value), normalized; empty
/// entries are skipped.
pub fn roots(list: &str) -> Result<Vec<String>, PathError> {
    list.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| normalize_directory(r).map_err(|e| PathError(format!("\"{r}\" {e}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_normalized() {
        assert_eq!(normalize_directory("/a/b").unwrap(), "/a/b/");
        assert_eq!(normalize_directory("/a//b/./c/").unwrap(), "/a/b/c/");
        assert_eq!(normalize_directory("/").unwrap(), "/");
        assert!(normalize_directory("a/b").is_err());
        assert!(normalize_directory("").is_err());
        assert!(normalize_directory("/a/../b").is_err());
        assert!(normalize_directory("/a/..").is_err());
        assert!(normalize_directory("/a\0b").is_err());
    }

    #[test]
    fn containment_is_by_whole_components() {
        assert!(is_within("/lakes/alice/x", "/lakes/alice"));
        assert!(is_within("/lakes/alice/", "/lakes/alice/"));
        assert!(is_within("/lakes/alice", "/lakes/alice/"));
        assert!(!is_within("/lakes/alicebob/x", "/lakes/alice"));
        assert!(!is_within("/lakes", "/lakes/alice"));
        assert!(!is_within("/lakes/alice/../bob", "/lakes/alice"));
        assert!(is_within("/anything", "/"));
    }

    #[test]
    fn root_lists_are_comma_separated() {
        assert_eq!(roots(" /a , /b/c/ ,,").unwrap(), vec!["/a/".to_owned(), "/b/c/".to_owned()]);
        assert_eq!(roots("").unwrap(), Vec::<String>::new());
        assert_eq!(roots("/a, relative"), Err(PathError("\"relative\" must be an absolute path".into())));
    }
}
