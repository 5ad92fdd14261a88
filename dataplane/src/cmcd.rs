//! CMCD (CTA-5004) as players send it: the `CMCD` query parameter (percent-encoded) or the
//! `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers, each a
//! comma-separated list of `key=value` (integers, tokens, quoted strings) and bare keys
//! (true). Pure, bounded and fuzzed: the input comes from outside.

// Public for the fuzz targets (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::borrow::Cow;

use http::HeaderMap;
use http::header::HeaderName;

static CMCD_SESSION: HeaderName = HeaderName::from_static("cmcd-session");

/// The longest CMCD text read (a query value or one header).
pub const MAX_LEN: usize = 2048;
/// The longest session id kept (CTA-5004 says 64 characters).
pub const MAX_SID: usize = 64;

/// One CMCD value.
#[derive(Debug, Clone, PartialEq)]
pub enum CmcdValue<'a> {
    /// An integer or decimal.
    Number(f64),
    /// A quoted string, unescaped.
    Str(Cow<'a, str>),
    /// A token (unquoted, such as `ot=v`).
    Token(&'a str),
    /// A bare key: true.
    True,
}

/// The pairs of a CMCD list, in order; `Err` at the first malformed entry.
#[cfg(any(test, fuzzing, feature = "internals"))]
pub fn pairs(s: &str) -> Result<Vec<(&str, CmcdValue<'_>)>, &'static str> {
    let mut out = Vec::new();
    visit(s, |k, v| {
        out.push((k, v));
        true
    })?;
    Ok(out)
}

/// Calls `f` with each pair of a CMCD list in order, without allocating (but for a string
/// with escapes), until it returns false; `Err` at the first malformed entry before that.
pub fn visit<'a>(
    s: &'a str,
    mut f: impl FnMut(&'a str, CmcdValue<'a>) -> bool,
) -> Result<(), &'static str> {
    if s.len() > MAX_LEN {
        return Err("CMCD data too long");
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[start..i].trim();
        if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err("bad CMCD key");
        }
        if i == b.len() || b[i] == b',' {
            if !f(key, CmcdValue::True) {
                return Ok(());
            }
            i += 1;
            continue;
        }
        i += 1; // '='
        if i < b.len() && b[i] == b'"' {
            let from = i + 1;
            let rest = &s[from..];
            let mut owned: Option<String> = None;
            let mut end = None;
            let mut chars = rest.char_indices();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\'))) => {
                            owned.get_or_insert_with(|| rest[..j].to_owned()).push(e);
                        }
                        _ => return Err("bad escape in CMCD string"),
                    },
                    '"' => {
                        end = Some(j);
                        break;
                    }
                    c => {
                        if let Some(o) = &mut owned {
                            o.push(c);
                        }
                    }
                }
            }
            let j = end.ok_or("unterminated CMCD string")?;
            let v = match owned {
                Some(o) => Cow::Owned(o),
                None => Cow::Borrowed(&rest[..j]),
            };
            i = from + j;
            if !f(key, CmcdValue::Str(v)) {
                return Ok(());
            }
            i += 1; // closing quote
            if i < b.len() {
                if b[i] != b',' {
                    return Err("junk after a CMCD string");
                }
                i += 1;
            }
        } else {
            let from = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            let raw = s[from..i].trim();
            let v = match raw.parse::<f64>() {
                Ok(n) if n.is_finite() => CmcdValue::Number(n),
                _ if !raw.is_empty() && raw.bytes().all(|c| c.is_ascii_graphic() && c != b'"') => {
                    CmcdValue::Token(raw)
                }
                _ => return Err("bad CMCD value"),
            };
            if !f(key, v) {
                return Ok(());
            }
            i += 1;
        }
    }
    Ok(())
}

/// The `sid` string of a CMCD list, if it has a well-formed one before any malformed entry.
fn sid_of(s: &str) -> Option<Cow<'_, str>> {
    let mut sid = None;
    let _ = visit(s, |k, v| {
        if k == "sid" {
            if let CmcdValue::Str(v) = v {
                sid = Some(v);
            }
            return false;
        }
        true
    });
    sid
}

/// The session id (`sid`) a request's CMCD carries, from the query or the
/// `CMCD-Session` header; `None` when absent, empty, too long or malformed.
pub fn session_id<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
    let from = |text: Cow<'a, str>| -> Option<Cow<'a, str>> {
        let sid = match text {
            Cow::Borrowed(t) => sid_of(t)?,
            Cow::Owned(t) => Cow::Owned(sid_of(&t)?.into_owned()),
        };
        (!sid.is_empty() && sid.len() <= MAX_SID).then_some(sid)
    };
    if let Some(q) = query
        && let Some(raw) = q.split('&').find_map(|p| p.strip_prefix("CMCD="))
        && raw.len() <= MAX_LEN
    {
        let text = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .ok()?;
        return from(text);
    }
    let h = headers.get(&CMCD_SESSION)?.to_str().ok()?;
    from(Cow::Borrowed(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_players_send_them() {
        // dash.js / hls.js style, as the CTA-5004 examples.
        let p = pairs(r#"bl=21300,br=3200,bs,cid="faec5fc2-ac30-11ea-bb37-0242ac130002",d=4004,mtp=25400,ot=v,rtp=15000,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",tb=6000"#).unwrap();
        assert_eq!(p[0], ("bl", CmcdValue::Number(21300.0)));
        assert_eq!(p[2], ("bs", CmcdValue::True));
        assert_eq!(p[6], ("ot", CmcdValue::Token("v")));
        assert_eq!(
            p[8],
            (
                "sid",
                CmcdValue::Str(Cow::Borrowed("6e2fb550-c457-11e9-bb97-0800200c9a66"))
            )
        );
        assert_eq!(p.len(), 10);
        let e = pairs(r#"sid="a\"b\\c",su"#).unwrap();
        assert_eq!(e[0].1, CmcdValue::Str(Cow::Owned("a\"b\\c".into())));
        assert_eq!(e[1], ("su", CmcdValue::True));
        let u = pairs(r#"sid="é\"x""#).unwrap();
        assert_eq!(u[0].1, CmcdValue::Str(Cow::Owned("é\"x".into())));
        for bad in [
            r#"sid="open"#,
            "=3",
            "br=",
            r#"sid="x"y"#,
            r#"a="\q""#,
            "k y=1",
        ] {
            assert!(pairs(bad).is_err(), "{bad}");
        }
        assert!(pairs(&"a".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn session_ids_come_from_the_query_or_the_header() {
        let mut h = HeaderMap::new();
        let q = "token=x&CMCD=bl%3D21300%2Csid%3D%22abc-1%22";
        assert_eq!(session_id(Some(q), &h).as_deref(), Some("abc-1"));
        h.insert(
            "cmcd-session",
            r#"cid="c",sid="from-header""#.parse().unwrap(),
        );
        assert_eq!(session_id(None, &h).as_deref(), Some("from-header"));
        // The query wins when both are there; junk gives none.
        assert_eq!(session_id(Some(q), &h).as_deref(), Some("abc-1"));
        assert_eq!(session_id(Some("CMCD=sid%3D5"), &HeaderMap::new()), None);
        let long = format!("CMCD=sid%3D%22{}%22", "a".repeat(MAX_SID + 1));
        assert_eq!(session_id(Some(&long), &HeaderMap::new()), None);
        assert_eq!(session_id(Some("CMCD=%ff"), &HeaderMap::new()), None);
    }
}
