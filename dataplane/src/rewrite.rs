//! Manifest rewriting: when a viewer's token came in the query, every URI in the HLS
//! playlist or DASH MPD gets the same `token=` parameter, so players need no custom code.
//! Pure functions over bytes; fuzzed.
//!
//! Only URIs that stay on the edge's own origin are rewritten, decided as browsers and
//! players resolve them (WHATWG URL): leading and trailing controls and spaces are
//! ignored, tabs and newlines anywhere are dropped, and `\` counts as `/` in http(s)
//! URLs. So `\\host/x`, `/\host/x` and `/<TAB>/host/x` are other hosts, like `//host/x`
//! and `https://host/x`, and never get the token; `data:` URIs carry no request at all. In
//! an MPD, a URI is resolved against the `BaseURL`s above it: under an absolute one,
//! relative templates point at another host too.

// Public for the fuzz targets and benchmarks (`internals`); crate-private otherwise.
#![cfg_attr(not(any(fuzzing, feature = "internals")), allow(unreachable_pub))]

use std::borrow::Cow;

use quick_xml::events::{BytesStart, BytesText, Event};

/// Adds `param` (such as `token=eyJ...`) to `uri`, replacing an existing parameter of the same
/// name. Returns `None` when the URI must be left alone.
pub fn add_param(uri: &str, param: &str) -> Option<String> {
    let uri_trim = uri.trim();
    if uri_trim.is_empty() || !same_origin(uri_trim) {
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

/// Whether `uri`, a reference found in a manifest the edge served, resolves to the edge's
/// own origin under WHATWG URL parsing with an http(s) base. References with a scheme
/// count as elsewhere, even `http:x` (which a browser would resolve here): the edge does
/// not know its own public name, so it never appends a token to an absolute URI.
pub fn same_origin(uri: &str) -> bool {
    let c0_or_space = |c: char| c <= ' ';
    let mut chars = uri
        .trim_matches(c0_or_space)
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'));
    let slash = |c: Option<char>| matches!(c, Some('/' | '\\'));
    let first = chars.next();
    if slash(first) {
        // `/x` stays here; `//host`, `\\host`, `/\host` name another host.
        return !slash(chars.next());
    }
    // A scheme is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"; anything else before
    // the first ':' makes the reference a relative path.
    match first {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return true,
    }
    for c in chars {
        match c {
            ':' => return false,
            c if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') => {}
            _ => return true,
        }
    }
    true
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

/// Elements whose `BaseURL` children set the base of everything below them, and whose
/// segment information (templates, lists, bases) applies to all their descendants.
fn is_scope(local: &[u8]) -> bool {
    matches!(
        local,
        b"MPD" | b"Period" | b"AdaptationSet" | b"Representation"
    )
}

/// Where an MPD's `BaseURL`s point elsewhere, by element (numbered in document order,
/// counting start and empty tags): `direct[n]`: element `n` has a `BaseURL` child that is
/// not same-origin; `below[n]`: such a `BaseURL` sits anywhere inside element `n`.
#[derive(Default)]
struct Foreign {
    direct: Vec<bool>,
    below: Vec<bool>,
}

impl Foreign {
    fn scan(xml: &[u8]) -> Result<Self, RewriteError> {
        let mut f = Self::default();
        let mut reader = quick_xml::Reader::from_reader(xml);
        let mut open: Vec<usize> = Vec::new();
        let mut in_base: Option<usize> = None;
        loop {
            match reader.read_event().map_err(|e| xml_err(&e))? {
                Event::Eof => break,
                Event::Start(s) => {
                    let n = f.push();
                    if local_name(s.name().as_ref()) == b"BaseURL" {
                        in_base = Some(open.len());
                    }
                    open.push(n);
                }
                Event::Empty(_) => {
                    f.push();
                }
                Event::End(_) => {
                    open.pop();
                    if in_base.is_some_and(|d| d >= open.len()) {
                        in_base = None;
                    }
                }
                Event::Text(t) if in_base.is_some() => {
                    let raw = t.decode().map_err(|e| xml_err(&e))?;
                    let text = quick_xml::escape::unescape(&raw).map_err(|e| xml_err(&e))?;
                    if !text.trim().is_empty() && !same_origin(text.trim()) {
                        // open = [..., parent, BaseURL]
                        let parents = &open[..open.len().saturating_sub(1)];
                        if let Some(&p) = parents.last() {
                            f.direct[p] = true;
                        }
                        for &a in parents {
                            f.below[a] = true;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(f)
    }

    fn push(&mut self) -> usize {
        self.direct.push(false);
        self.below.push(false);
        self.direct.len() - 1
    }
}

fn xml_err(e: &dyn std::fmt::Display) -> RewriteError {
    RewriteError::Xml(e.to_string())
}

/// One open element during the rewrite.
struct Open {
    /// Its number in document order.
    n: usize,
    /// It is a scope element ([`is_scope`]).
    scope: bool,
    /// It, or an element above it, has a `BaseURL` pointing elsewhere.
    inherited: bool,
}

/// Rewrites a DASH MPD: `BaseURL` text and the URI attributes of `SegmentTemplate`,
/// `SegmentURL`, `Initialization` and `RepresentationIndex`, where they resolve to the
/// edge. A URI in segment information resolves against the `BaseURL` of every
/// Representation it applies to, so it is rewritten only when no `BaseURL` above its
/// scope, or anywhere inside that scope, points at another host.
pub fn rewrite_mpd(xml: &[u8], param: &str) -> Result<Vec<u8>, RewriteError> {
    // The pre-pass is only needed when there are BaseURLs at all.
    let foreign = if xml.windows(7).any(|w| w == b"BaseURL") {
        Foreign::scan(xml)?
    } else {
        Foreign::default()
    };
    let flag = |v: &[bool], n: usize| v.get(n).copied().unwrap_or(false);
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut writer = quick_xml::Writer::new(Vec::with_capacity(xml.len() + xml.len() / 4));
    let mut open: Vec<Open> = Vec::new();
    let mut next = 0usize;
    let mut in_base_url = 0usize;
    // Whether URIs of an element whose parent is at the top of `open` may carry the token.
    let rewritable = |open: &[Open]| {
        let scope = open.iter().rev().find(|o| o.scope);
        match scope {
            Some(s) => !s.inherited && !flag(&foreign.below, s.n),
            None => !open.last().is_some_and(|o| o.inherited),
        }
    };
    loop {
        let ev = reader.read_event().map_err(|e| xml_err(&e))?;
        let out = match ev {
            Event::Eof => break,
            Event::Start(s) => {
                let n = next;
                next += 1;
                let name = s.name();
                let local = local_name(name.as_ref());
                if local == b"BaseURL" {
                    in_base_url += 1;
                }
                let scope = is_scope(local);
                let ok = rewritable(&open);
                let inherited =
                    open.last().is_some_and(|o| o.inherited) || flag(&foreign.direct, n);
                let el = if ok {
                    rewrite_element(&s, param).map_err(|e| xml_err(&e))?
                } else {
                    s.clone()
                };
                open.push(Open {
                    n,
                    scope,
                    inherited,
                });
                Event::Start(el)
            }
            Event::Empty(s) => {
                next += 1;
                if rewritable(&open) {
                    Event::Empty(rewrite_element(&s, param).map_err(|e| xml_err(&e))?)
                } else {
                    Event::Empty(s)
                }
            }
            Event::End(e) => {
                if local_name(e.name().as_ref()) == b"BaseURL" {
                    in_base_url = in_base_url.saturating_sub(1);
                }
                open.pop();
                Event::End(e)
            }
            Event::Text(t) if in_base_url > 0 => {
                // open = [..., grandparent, parent, BaseURL]: this BaseURL resolves against
                // the base its parent inherits, which the BaseURLs above the parent set
                // (the parent's other BaseURLs are alternatives to this one).
                let parent_foreign = open.len() >= 3 && open[open.len() - 3].inherited;
                let raw = t.decode().map_err(|e| xml_err(&e))?;
                let text = quick_xml::escape::unescape(&raw).map_err(|e| xml_err(&e))?;
                match (parent_foreign, add_param(&text, param)) {
                    (false, Some(u)) => Event::Text(BytesText::new(&u).into_owned()),
                    _ => Event::Text(t),
                }
            }
            other => other,
        };
        writer.write_event(out).map_err(|e| xml_err(&e))?;
    }
    if in_base_url != 0 {
        return Err(RewriteError::Xml("unclosed BaseURL".into()));
    }
    Ok(writer.into_inner())
}

/// A manifest rewritten once with a placeholder token and split where the token goes, so
/// that a viewer's rewrite is one copy into a buffer of known size instead of a parse.
/// Built on the first `?token=` request for a cached manifest and kept with it.
#[derive(Debug)]
pub struct Template {
    /// The rewritten text between token values: `chunks.len() - 1` slots.
    chunks: Vec<bytes::Bytes>,
    len: usize,
}

/// The placeholder token. A manifest that contains it is rewritten per request instead.
const SLOT: &str = "sgT0kenSl0t7q";
/// The parameter the template is rewritten with: `token=` and [`SLOT`].
const SLOT_PARAM: &str = "token=sgT0kenSl0t7q";

impl Template {
    /// Builds the template of an HLS playlist (`mpd: false`) or a DASH MPD for the
    /// `token=` parameter. `Ok(None)`: the manifest cannot be templated (it contains the
    /// placeholder); rewrite it per request. Errors are the rewriter's.
    pub fn build(body: &[u8], mpd: bool) -> Result<Option<Self>, RewriteError> {
        if body.windows(SLOT.len()).any(|w| w == SLOT.as_bytes()) {
            return Ok(None);
        }
        let param = SLOT_PARAM;
        let out = if mpd {
            rewrite_mpd(body, param)?
        } else {
            let text = std::str::from_utf8(body)
                .map_err(|_| RewriteError::Xml("playlist is not UTF-8".into()))?;
            rewrite_hls(text, param).into_bytes()
        };
        let out = bytes::Bytes::from(out);
        let mut chunks = Vec::new();
        let mut from = 0;
        let mut i = 0;
        while i + SLOT.len() <= out.len() {
            if &out[i..i + SLOT.len()] == SLOT.as_bytes() {
                chunks.push(out.slice(from..i));
                i += SLOT.len();
                from = i;
            } else {
                i += 1;
            }
        }
        chunks.push(out.slice(from..));
        let len = chunks.iter().map(|c| c.len()).sum();
        Ok(Some(Self { chunks, len }))
    }

    /// The manifest rewritten for `token=<value>`. `value` must be [`template_safe`]: the
    /// rewriter would not escape or alter it in any URI, HLS line or XML attribute.
    pub fn render(&self, value: &str) -> bytes::Bytes {
        debug_assert!(template_safe(value));
        self.render_parts(&[value])
    }

    /// The manifest rewritten for `token=<parts joined>`: the caller vouches that the
    /// joined text is what the rewriter would write in this manifest's syntax (such as a
    /// [`template_safe`] token, `&amp;` in an MPD or `&` in a playlist, and a URL-safe
    /// session parameter).
    pub fn render_parts(&self, parts: &[&str]) -> bytes::Bytes {
        let slots = self.chunks.len() - 1;
        if slots == 0 {
            return self.chunks[0].clone();
        }
        let n: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = bytes::BytesMut::with_capacity(self.len + slots * n);
        for (i, c) in self.chunks.iter().enumerate() {
            if i > 0 {
                for p in parts {
                    out.extend_from_slice(p.as_bytes());
                }
            }
            out.extend_from_slice(c);
        }
        out.freeze()
    }
}

/// Whether a raw (still percent-encoded) token value can be put into a [`Template`]: it
/// holds only characters that no rewriter step escapes or interprets (no `&`, `#`, `<`,
/// quotes, spaces or controls).
pub fn template_safe(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%' | b'+')
        })
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
