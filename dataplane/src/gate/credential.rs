//! Where a viewer's token comes from: `Authorization: Bearer`, the `?token=` query, or the
//! `sg_token` cookie, in that order. No allocation unless the query value is percent-encoded.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// Where the token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `?token=<token>`.
    Query,
    /// `Cookie: sg_token=<token>`.
    Cookie,
}

/// The cookie name.
pub const COOKIE_NAME: &str = "sg_token";

/// Finds the request's token, if any.
pub fn find<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<(Cow<'a, str>, Source)> {
    for v in headers.get_all(AUTHORIZATION) {
        if let Ok(v) = v.to_str()
            && v.len() > 7
            && v[..7].eq_ignore_ascii_case("bearer ")
        {
            let t = v[7..].trim();
            if !t.is_empty() {
                return Some((Cow::Borrowed(t), Source::Header));
            }
        }
    }
    if let Some(t) = query.and_then(query_token) {
        return Some((t, Source::Query));
    }
    for v in headers.get_all(COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == COOKIE_NAME
                && !val.is_empty()
            {
                return Some((Cow::Borrowed(val.trim_matches('"')), Source::Cookie));
            }
        }
    }
    None
}

/// The `token=...` pair exactly as it appears in a raw query string (still encoded), for
/// copying into rewritten manifests.
pub fn raw_query_pair(query: &str) -> Option<&str> {
    query
        .split('&')
        .find(|p| p.len() > 6 && p.starts_with("token="))
}

/// The value of `token=` in a raw query string.
pub fn query_token(query: &str) -> Option<Cow<'_, str>> {
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("token=") {
            if v.is_empty() {
                return None;
            }
            if !v.contains('%') {
                return Some(Cow::Borrowed(v));
            }
            return percent_encoding::percent_decode_str(v).decode_utf8().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_forms() {
        let mut h = HeaderMap::new();
        assert!(find(&h, None).is_none());
        assert_eq!(
            find(&h, Some("a=1&token=q.q.q")).unwrap(),
            (Cow::Borrowed("q.q.q"), Source::Query)
        );
        assert_eq!(find(&h, Some("token=a%2Eb")).unwrap().0, "a.b");
        assert!(find(&h, Some("token=")).is_none());
        assert!(find(&h, Some("xtoken=a")).is_none());
        h.insert(COOKIE, "theme=dark; sg_token=c.c.c".parse().unwrap());
        assert_eq!(
            find(&h, None).unwrap(),
            (Cow::Borrowed("c.c.c"), Source::Cookie)
        );
        assert_eq!(find(&h, Some("token=q")).unwrap().1, Source::Query);
        h.insert(AUTHORIZATION, "bearer h.h.h".parse().unwrap());
        assert_eq!(
            find(&h, Some("token=q")).unwrap(),
            (Cow::Borrowed("h.h.h"), Source::Header)
        );
        h.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(find(&h, None).unwrap().1, Source::Cookie);
    }
}
