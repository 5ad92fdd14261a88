//! Pure resolution of manifest URIs to paths inside the output folder.

/// Why a URI cannot name a file inside the output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriProblem {
    /// Absolute, with a scheme, a query, a fragment, an escape or a backslash.
    NotRelative,
    /// `..` climbs above the output folder.
    Escapes,
    /// Nothing left after normalisation.
    Empty,
}

/// Resolves `uri` found in a manifest that lives in folder `dir` (relative
/// to the output root, `""` for the root) to a normalised relative path
/// such as `video/720p/seg-00001.m4s`.
pub(crate) fn resolve(dir: &str, uri: &str) -> Result<String, UriProblem> {
    if uri.is_empty() {
        return Err(UriProblem::Empty);
    }
    let forbidden = |c: char| matches!(c, ':' | '\\' | '?' | '#' | '%' | '\0') || c.is_control();
    if uri.starts_with('/') || uri.contains(forbidden) {
        return Err(UriProblem::NotRelative);
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in dir.split('/').chain(uri.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or(UriProblem::Escapes)?;
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() || uri.ends_with('/') {
        return Err(UriProblem::Empty);
    }
    Ok(parts.join("/"))
}

/// The folder part of a resolved path: `video/720p` for `video/720p/index.m3u8`.
pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Joins a relative reference onto a base URL the way URL resolution does:
/// the base's last path segment is replaced unless the base ends with `/`.
/// Absolute references are returned unchanged, for [`resolve`] to reject.
pub(crate) fn join(base: &str, reference: &str) -> String {
    let absolute = reference.starts_with('/') || reference.contains(':');
    if absolute {
        return reference.to_owned();
    }
    let prefix = base.rsplit_once('/').map_or("", |(dir, _)| dir);
    if prefix.is_empty() && !base.starts_with('/') {
        reference.to_owned()
    } else {
        format!("{prefix}/{reference}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_uris() {
        assert_eq!(
            resolve("", "video/720p/index.m3u8").unwrap(),
            "video/720p/index.m3u8"
        );
        assert_eq!(
            resolve("video/720p", "seg-00001.m4s").unwrap(),
            "video/720p/seg-00001.m4s"
        );
        assert_eq!(
            resolve("video/720p", "./init.mp4").unwrap(),
            "video/720p/init.mp4"
        );
        assert_eq!(
            resolve("video/720p", "../480p/init.mp4").unwrap(),
            "video/480p/init.mp4"
        );
        assert_eq!(parent("video/720p/index.m3u8"), "video/720p");
        assert_eq!(parent("master.m3u8"), "");
    }

    #[test]
    fn rejects_escapes() {
        assert_eq!(resolve("", "../secret"), Err(UriProblem::Escapes));
        assert_eq!(
            resolve("video/720p", "../../../etc/passwd"),
            Err(UriProblem::Escapes)
        );
        assert_eq!(resolve("", "/etc/passwd"), Err(UriProblem::NotRelative));
        assert_eq!(
            resolve("", "https://example.com/a.m4s"),
            Err(UriProblem::NotRelative)
        );
        assert_eq!(resolve("", "a.m4s?token=1"), Err(UriProblem::NotRelative));
        assert_eq!(resolve("", "%2e%2e/x"), Err(UriProblem::NotRelative));
        assert_eq!(resolve("", "..\\x"), Err(UriProblem::NotRelative));
        assert_eq!(resolve("", ""), Err(UriProblem::Empty));
        assert_eq!(resolve("", "video/"), Err(UriProblem::Empty));
        assert_eq!(resolve("a", ".."), Err(UriProblem::Empty));
    }

    #[test]
    fn joins_like_urls() {
        assert_eq!(join("", "video/720p/"), "video/720p/");
        assert_eq!(
            join("video/720p/", "seg-00001.m4s"),
            "video/720p/seg-00001.m4s"
        );
        assert_eq!(join("video/720p", "seg-00001.m4s"), "video/seg-00001.m4s");
        assert_eq!(join("video/", "/abs"), "/abs");
        assert_eq!(join("video/", "http://x/y"), "http://x/y");
        assert_eq!(join("http://cdn/a/", "b"), "http://cdn/a/b");
    }
}
