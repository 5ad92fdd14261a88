//! CMCD (CTA-5004) as players send it: the `CMCD` query parameter (percent-encoded) or the
//! `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers, each a
//! comma-separated list of `key=value` (integers, tokens, quoted strings) and bare keys
//! (true). Pure, bounded and fuzzed: the input comes from outside.

// Public for the fuzz targets (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::borrow::Cow;

use http::HeaderMap;
use http::header::HeaderName;

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

/// What the QoE aggregates read from one request's CMCD.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Data {
    /// `br`: the object's encoded bitrate, kbps.
    pub br: Option<f64>,
    /// `mtp`: the throughput the player measured, kbps.
    pub mtp: Option<f64>,
    /// `bs`: the buffer starved since the previous request.
    pub bs: bool,
    /// `su`: starting up (or after a seek).
    pub su: bool,
    /// `ot`: the object type, as its token (`m`, `a`, `v`, `av`, `i`, `c`, `tt`, `k`, `o`).
    pub ot: Option<ObjectType>,
    /// A hash of `sid` (empty or over [`MAX_SID`] ignored).
    pub sid: Option<u64>,
}

/// CMCD object types, as far as the aggregates tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `m`: a manifest or playlist.
    Manifest,
    /// `v` or `av`: video (or muxed) media.
    Video,
    /// `a`: audio only.
    Audio,
    /// `i`: an initialisation segment.
    Init,
    /// Captions, keys and the rest.
    Other,
}

static CMCD_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("cmcd-request"),
    HeaderName::from_static("cmcd-object"),
    HeaderName::from_static("cmcd-status"),
    HeaderName::from_static("cmcd-session"),
];

fn read_into(text: &str, d: &mut Data) -> Result<(), &'static str> {
    let mut bad = None;
    visit(text, |k, v| {
        match (k, v) {
            ("br", CmcdValue::Number(n)) if n >= 0.0 => d.br = Some(n),
            ("mtp", CmcdValue::Number(n)) if n >= 0.0 => d.mtp = Some(n),
            ("bs", CmcdValue::True) => d.bs = true,
            ("su", CmcdValue::True) => d.su = true,
            ("ot", CmcdValue::Token(t)) => {
                d.ot = Some(match t {
                    "m" => ObjectType::Manifest,
                    "v" | "av" => ObjectType::Video,
                    "a" => ObjectType::Audio,
                    "i" => ObjectType::Init,
                    _ => ObjectType::Other,
                });
            }
            ("sid", CmcdValue::Str(s)) if !s.is_empty() && s.len() <= MAX_SID => {
                d.sid = Some(xxhash_rust::xxh3::xxh3_64(s.as_bytes()));
            }
            // An empty or overlong id is no id.
            ("sid", CmcdValue::Str(_)) => {}
            ("br" | "mtp" | "bs" | "su" | "ot" | "sid", _) => {
                bad = Some("a CMCD key with a value of the wrong type");
                return false;
            }
            _ => {}
        }
        true
    })?;
    bad.map_or(Ok(()), Err)
}

/// The CMCD of a request, from the `CMCD` query parameter or else the four `CMCD-*`
/// headers: `Ok(None)` without any, `Err` when it is malformed (too long, not UTF-8 once
/// decoded, or a bad entry).
pub fn read(query: Option<&str>, headers: &HeaderMap) -> Result<Option<Data>, &'static str> {
    let mut d = Data::default();
    if let Some(q) = query
        && let Some(raw) = q.split('&').find_map(|p| p.strip_prefix("CMCD="))
    {
        if raw.len() > MAX_LEN * 3 {
            return Err("CMCD data too long");
        }
        let text = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| "CMCD data is not UTF-8")?;
        read_into(&text, &mut d)?;
        return Ok(Some(d));
    }
    let mut any = false;
    for name in &CMCD_HEADERS {
        if let Some(h) = headers.get(name) {
            any = true;
            read_into(h.to_str().map_err(|_| "CMCD header is not text")?, &mut d)?;
        }
    }
    Ok(any.then_some(d))
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
        let sid = |q: Option<&str>, h: &HeaderMap| read(q, h).ok().flatten().and_then(|d| d.sid);
        let hash = |s: &str| Some(xxhash_rust::xxh3::xxh3_64(s.as_bytes()));
        let mut h = HeaderMap::new();
        let q = "token=x&CMCD=bl%3D21300%2Csid%3D%22abc-1%22";
        assert_eq!(sid(Some(q), &h), hash("abc-1"));
        h.insert(
            "cmcd-session",
            r#"cid="c",sid="from-header""#.parse().unwrap(),
        );
        assert_eq!(sid(None, &h), hash("from-header"));
        // The query wins when both are there; a number is no id; an overlong one is none.
        assert_eq!(sid(Some(q), &h), hash("abc-1"));
        assert!(read(Some("CMCD=sid%3D5"), &HeaderMap::new()).is_err());
        let long = format!("CMCD=sid%3D%22{}%22", "a".repeat(MAX_SID + 1));
        assert_eq!(sid(Some(&long), &HeaderMap::new()), None);
        assert_eq!(sid(Some("CMCD=sid%3D%22%22"), &HeaderMap::new()), None);
    }

    #[test]
    fn the_aggregated_keys_are_read_from_either_place() {
        let none = HeaderMap::new();
        assert_eq!(read(Some("token=x"), &none), Ok(None));
        let q = "CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Cmtp%3D25400%2Cot%3Dv%2Csid%3D%22s-1%22%2Csu";
        let d = read(Some(q), &none).unwrap().unwrap();
        assert_eq!(d.br, Some(3200.0));
        assert_eq!(d.mtp, Some(25400.0));
        assert!(d.bs && d.su);
        assert_eq!(d.ot, Some(ObjectType::Video));
        assert_eq!(d.sid, Some(xxhash_rust::xxh3::xxh3_64(b"s-1")));
        let mut h = HeaderMap::new();
        h.insert("cmcd-object", "br=800,ot=a".parse().unwrap());
        h.insert("cmcd-status", "bs".parse().unwrap());
        h.insert("cmcd-session", r#"sid="s-1""#.parse().unwrap());
        let d = read(None, &h).unwrap().unwrap();
        assert_eq!(
            (d.br, d.ot, d.bs, d.su),
            (Some(800.0), Some(ObjectType::Audio), true, false)
        );
        assert_eq!(d.sid, Some(xxhash_rust::xxh3::xxh3_64(b"s-1")));
        // Malformed data is an error, not half a record.
        assert!(read(Some("CMCD=br%3D%22x%22"), &none).is_err());
        assert!(read(Some("CMCD=%ff"), &none).is_err());
        assert!(read(Some("CMCD=bs%3D1%2C%3D"), &none).is_err());
        h.insert("cmcd-request", "bl=,".parse().unwrap());
        assert!(read(None, &h).is_err());
    }
}
