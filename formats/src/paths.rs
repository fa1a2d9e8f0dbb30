//! Data paths: the directory or object-store prefix a lake keeps its files in, and
//! the roots a superuser allows servers of other roles to use.
//!
//! Compared lexically, after normalization: `/a/./b//c/` and `/a/b/c` are one
//! directory, and `..` is refused instead of resolved, since `/lakes/x/..` names a
//! directory outside `/lakes/x` only when no component is a symbolic link.
//!
//! Object-store prefixes (`s3://bucket/prefix/`, `gs://...`) are not normalized but
//! checked: in a key `a//b` differs from `a/b`, so empty, `.` and `..` components are
//! refused, as are characters that would make the URL mean something else
//! (`?`, `#`, `\`, control characters).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Schemes of object stores whose prefixes a lake may keep its data under (DuckDB's
/// httpfs extension reads and writes the first three, its azure extension the others).
pub const OBJECT_STORE_SCHEMES: &[&str] = &["s3", "gs", "gcs", "az", "abfss"];

/// The scheme of a URL (`s3` of `s3://b/p/`), lowercase; None for a local path.
pub fn url_scheme(path: &str) -> Option<String> {
    let (scheme, _) = path.split_once("://")?;
    let valid = !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
    valid.then(|| scheme.to_ascii_lowercase())
}

/// Whether a (normalized) data path is an object-store prefix rather than a directory.
pub fn is_object_store(path: &str) -> bool {
    url_scheme(path).is_some()
}

/// `path` as a directory with one trailing slash: an absolute local directory with
/// no empty or `.` components, or an object-store prefix (see the module comment).
pub fn normalize_directory(path: &str) -> Result<String, PathError> {
    if let Some(scheme) = url_scheme(path) {
        return normalize_prefix(&scheme, &path[scheme.len() + 3..]);
    }
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

fn normalize_prefix(scheme: &str, rest: &str) -> Result<String, PathError> {
    if !OBJECT_STORE_SCHEMES.contains(&scheme) {
        return Err(PathError(format!(
            "uses {scheme}://, which is not an object store a lake can use (supported: s3://, gs://, az://, abfss://)"
        )));
    }
    if let Some(bad) = rest.chars().find(|c| c.is_control() || matches!(c, '?' | '#' | '\\')) {
        return Err(PathError(format!("must not contain {bad:?}")));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut components = rest.split('/');
    let bucket = components.next().unwrap_or_default();
    if bucket.is_empty() {
        return Err(PathError(format!("must name a bucket: {scheme}://bucket/prefix/")));
    }
    let mut out = format!("{scheme}://{bucket}/");
    for component in components {
        if component.is_empty() || component == "." || component == ".." {
            return Err(PathError(format!("must not contain an empty, \".\" or \"..\" component (\"{component}\")")));
        }
        out.push_str(component);
        out.push('/');
    }
    Ok(out)
}

/// The bucket of a normalized object-store prefix.
pub fn bucket(prefix: &str) -> Option<&str> {
    let rest = &prefix[url_scheme(prefix)?.len() + 3..];
    rest.split('/').next()
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
    fn object_store_prefixes_are_checked_not_rewritten() {
        assert_eq!(normalize_directory("s3://lake/data").unwrap(), "s3://lake/data/");
        assert_eq!(normalize_directory("S3://lake/a/b/").unwrap(), "s3://lake/a/b/");
        assert_eq!(normalize_directory("gs://lake").unwrap(), "gs://lake/");
        assert!(normalize_directory("s3://lake/a/../b").is_err());
        assert!(normalize_directory("s3://lake/a//b").is_err());
        assert!(normalize_directory("s3://lake/./b").is_err());
        assert!(normalize_directory("s3://lake/a?x=1").is_err());
        assert!(normalize_directory("s3:///a").is_err());
        assert!(normalize_directory("s3://").is_err());
        assert!(normalize_directory("http://host/a").unwrap_err().0.contains("not an object store"));
        assert_eq!(normalize_directory("az://c/a").unwrap(), "az://c/a/");
        assert!(normalize_directory("azure://c/a").unwrap_err().0.contains("not an object store"));
        assert_eq!(bucket("s3://lake/a/"), Some("lake"));
        assert!(is_object_store("s3://lake/"));
        assert!(!is_object_store("/lakes/s3:/x"));
    }

    #[test]
    fn prefixes_contain_by_whole_components() {
        assert!(is_within("s3://lake/alice/x/", "s3://lake/alice"));
        assert!(!is_within("s3://lake/alicebob/", "s3://lake/alice/"));
        assert!(!is_within("s3://lakes/", "s3://lake/"));
        assert!(!is_within("gs://lake/a/", "s3://lake/"));
        assert!(!is_within("s3://lake/a/", "/"));
        assert!(is_within("s3://lake/a/", "s3://lake/"));
    }

    #[test]
    fn root_lists_are_comma_separated() {
        assert_eq!(roots(" /a , /b/c/ ,,").unwrap(), vec!["/a/".to_owned(), "/b/c/".to_owned()]);
        assert_eq!(roots("").unwrap(), Vec::<String>::new());
        assert_eq!(roots("/a, relative"), Err(PathError("\"relative\" must be an absolute path".into())));
    }
}
