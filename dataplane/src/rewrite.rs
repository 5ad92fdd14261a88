//! Manifest rewriting: when a viewer's token came in the query, every URI in the HLS
//! playlist or DASH MPD gets the same `token=` parameter, so players need no custom code.
//! Pure functions over bytes; fuzzed.
//!
//! Only relative URIs are rewritten. An absolute URI (`scheme://...`) may point at another
//! host, and the token must never leak there; `data:` URIs carry no request at all.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, BytesText, Event};

/// Adds `param` (such as `token=eyJ...`) to `uri`, replacing an existing parameter of the same
/// name. Returns `None` when the URI must be left alone.
pub fn add_param(uri: &str, param: &str) -> Option<String> {
    let uri_trim = uri.trim();
    if uri_trim.is_empty() || is_absolute(uri_trim) {
        return None;
    }
    let name = param.split('=').next().unwrap_or(param);
    let (before_frag, frag) = match uri_trim.find('#') {
        Some(i) => uri_trim.split_at(i),
        None => (uri_trim, ""),
    };
    let (path, query) = match before_frag.find('?') {
        Some(i) => (&before_frag[..i], Some(&before_frag[i + 1..])),
        None => (before_frag, None),
    };
    let mut out = String::with_capacity(uri_trim.len() + param.len() + 1);
    out.push_str(path);
    out.push('?');
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap_or(pair);
            if key != name {
                out.push_str(pair);
                out.push('&');
            }
        }
    }
    out.push_str(param);
    out.push_str(frag);
    Some(out)
}

fn is_absolute(uri: &str) -> bool {
    if uri.starts_with("//") {
        return true;
    }
    // RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"
    match uri.find(':') {
        Some(i) => {
            let scheme = &uri[..i];
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !scheme.contains('/')
        }
        None => false,
    }
}

/// Rewrites an HLS playlist: URI lines, and every `URI="..."` attribute (EXT-X-MEDIA,
/// EXT-X-MAP, EXT-X-KEY, EXT-X-I-FRAME-STREAM-INF, EXT-X-PART, EXT-X-PRELOAD-HINT,
/// EXT-X-RENDITION-REPORT, EXT-X-SESSION-DATA, ...). Line endings are kept.
pub fn rewrite_hls(text: &str, param: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let (body, eol) = match line.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            },
        };
        if body.starts_with('#') {
            rewrite_uri_attrs(body, param, &mut out);
        } else if let Some(u) = add_param(body, param) {
            out.push_str(&u);
        } else {
            out.push_str(body);
        }
        out.push_str(eol);
    }
    out
}

fn rewrite_uri_attrs(tag: &str, param: &str, out: &mut String) {
    let mut rest = tag;
    while let Some(i) = find_uri_attr(rest) {
        let start = i + "URI=\"".len();
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.find('"') else {
            out.push_str(after);
            return;
        };
        let uri = &after[..end];
        match add_param(uri, param) {
            Some(u) => out.push_str(&u),
            None => out.push_str(uri),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
}

/// Finds `URI="` as an attribute name (at the start of the attribute list or after `,`).
fn find_uri_attr(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(rel) = s[from..].find("URI=\"") {
        let i = from + rel;
        let prev = s[..i].chars().next_back();
        if matches!(prev, Some(':') | Some(',')) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Why an MPD could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The MPD is not well-formed XML.
    #[error("MPD is not well-formed XML: {0}")]
    Xml(String),
}

/// Attributes that hold URIs in an MPD, by element.
fn uri_attrs(element: &[u8]) -> &'static [&'static [u8]] {
    match element {
        b"SegmentTemplate" => &[b"media", b"initialization", b"index", b"bitstreamSwitching"],
        b"SegmentURL" => &[b"media", b"index"],
        b"Initialization" | b"RepresentationIndex" => &[b"sourceURL"],
        _ => &[],
    }
}

fn local_name(name: &[u8]) -> &[u8] {
    name.rsplit(|c| *c == b':').next().unwrap_or(name)
}

/// Rewrites a DASH MPD: `BaseURL` text and the URI attributes of `SegmentTemplate`,
/// `SegmentURL`, `Initialization` and `RepresentationIndex`.
pub fn rewrite_mpd(xml: &[u8], param: &str) -> Result<Vec<u8>, RewriteError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(xml.len() + xml.len() / 4));
    let mut in_base_url = 0usize;
    let err = |e: &dyn std::fmt::Display| RewriteError::Xml(e.to_string());
    loop {
        let ev = reader.read_event().map_err(|e| err(&e))?;
        let out = match ev {
            Event::Eof => break,
            Event::Start(s) => {
                if local_name(s.name().as_ref()) == b"BaseURL" {
                    in_base_url += 1;
                }
                Event::Start(rewrite_element(&s, param).map_err(|e| err(&e))?)
            }
            Event::Empty(s) => Event::Empty(rewrite_element(&s, param).map_err(|e| err(&e))?),
            Event::End(e) => {
                if local_name(e.name().as_ref()) == b"BaseURL" {
                    in_base_url = in_base_url.saturating_sub(1);
                }
                Event::End(e)
            }
            Event::Text(t) if in_base_url > 0 => {
                let raw = t.decode().map_err(|e| err(&e))?;
                let text = quick_xml::escape::unescape(&raw).map_err(|e| err(&e))?;
                match add_param(&text, param) {
                    Some(u) => Event::Text(BytesText::new(&u).into_owned()),
                    None => Event::Text(t),
                }
            }
            other => other,
        };
        writer.write_event(out).map_err(|e| err(&e))?;
    }
    if in_base_url != 0 {
        return Err(RewriteError::Xml("unclosed BaseURL".into()));
    }
    Ok(writer.into_inner())
}

fn rewrite_element<'a>(
    s: &BytesStart<'a>,
    param: &str,
) -> Result<BytesStart<'a>, quick_xml::Error> {
    let names = uri_attrs(local_name(s.name().as_ref()));
    if names.is_empty() {
        return Ok(s.clone());
    }
    let mut out = BytesStart::new(String::from_utf8_lossy(s.name().as_ref()).into_owned());
    for a in s.attributes() {
        let a = a.map_err(quick_xml::Error::from)?;
        let key = a.key.as_ref();
        let value = a.unescape_value()?;
        let new: Cow<'_, str> = if names.contains(&key) {
            match add_param(&value, param) {
                Some(u) => Cow::Owned(u),
                None => value,
            }
        } else {
            value
        };
        out.push_attribute((String::from_utf8_lossy(key).as_ref(), new.as_ref()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
