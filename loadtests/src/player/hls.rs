//! HLS (RFC 8216) as a player reads it: the master playlist's variants and audio
//! renditions, and media playlists with `EXT-X-MAP`, byte ranges, and live playlists
//! (no `EXT-X-ENDLIST`) merged across refreshes by media sequence.

use super::{
    ByteRange, ManifestError, Presentation, Rendition, Resource, Segment, Source, Track, bad,
    resolve,
};

/// What a playlist turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// A master playlist.
    Master(Presentation),
    /// A media playlist (a URL given straight to the player).
    Media(Track),
}

/// Splits an attribute list (`A=1,B="x,y",C=z`) into pairs; quoted values lose their quotes.
fn attributes(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(c) => (&after[..c], &after[c..]),
                None => (after, ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start_matches(',').trim_start();
    }
    out
}

fn attr<'a>(list: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// `n[@o]`: the offset defaults to where the previous range of the same URI ended.
fn byte_range(s: &str, previous_end: Option<u64>, line: usize) -> Result<ByteRange, ManifestError> {
    let (len, start) = match s.split_once('@') {
        Some((n, o)) => (n, Some(o)),
        None => (s, None),
    };
    let len = len
        .trim()
        .parse::<u64>()
        .map_err(|_| bad(format!("line {line}"), format!("byte range {s:?}")))?;
    let start = match start {
        Some(o) => o
            .trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("line {line}"), format!("byte range offset {s:?}")))?,
        None => previous_end.ok_or_else(|| {
            bad(
                format!("line {line}"),
                "a byte range without an offset must follow one of the same URI",
            )
        })?,
    };
    Ok(ByteRange { start, len })
}

/// Parses `text`, fetched from `url` (the final URL after redirects: the base of relative
/// URIs).
pub fn parse(text: &str, url: &str) -> Result<Playlist, ManifestError> {
    let mut lines = text.lines().map(str::trim);
    if lines.next().map(|l| l.trim_start_matches('\u{feff}')) != Some("#EXTM3U") {
        return Err(ManifestError::NotManifest(
            "an HLS playlist starts with #EXTM3U".into(),
        ));
    }
    if text.contains("#EXT-X-STREAM-INF") {
        parse_master(text, url).map(Playlist::Master)
    } else {
        parse_media(text, url).map(Playlist::Media)
    }
}

struct Audio {
    group: String,
    uri: Option<String>,
    default: bool,
    name: String,
}

fn parse_master(text: &str, url: &str) -> Result<Presentation, ManifestError> {
    let mut variants: Vec<(u64, String, Option<String>)> = Vec::new();
    let mut audio: Vec<Audio> = Vec::new();
    let mut pending: Option<(u64, Option<String>)> = None;
    for (i, line) in text.lines().map(str::trim).enumerate() {
        let n = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(a) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let a = attributes(a);
            let bw = attr(&a, "AVERAGE-BANDWIDTH")
                .or_else(|| attr(&a, "BANDWIDTH"))
                .ok_or_else(|| bad(format!("line {n}"), "EXT-X-STREAM-INF without BANDWIDTH"))?;
            let bw = bw
                .parse::<u64>()
                .map_err(|_| bad(format!("line {n}"), format!("BANDWIDTH {bw:?}")))?;
            pending = Some((bw, attr(&a, "AUDIO").map(str::to_owned)));
        } else if let Some(a) = line.strip_prefix("#EXT-X-MEDIA:") {
            let a = attributes(a);
            if attr(&a, "TYPE") == Some("AUDIO") {
                audio.push(Audio {
                    group: attr(&a, "GROUP-ID").unwrap_or_default().to_owned(),
                    uri: attr(&a, "URI").map(|u| resolve(url, u)).transpose()?,
                    default: attr(&a, "DEFAULT") == Some("YES"),
                    name: attr(&a, "NAME").unwrap_or_default().to_owned(),
                });
            }
        } else if !line.starts_with('#') {
            let (bw, group) = pending.take().ok_or_else(|| {
                bad(
                    format!("line {n}"),
                    "a URI in a master playlist must follow EXT-X-STREAM-INF",
                )
            })?;
            variants.push((bw, resolve(url, line)?, group));
        }
    }
    if variants.is_empty() {
        return Err(ManifestError::Empty("variant in the master playlist"));
    }
    variants.sort_by_key(|v| v.0);
    // The audio group of the variants (players use one; a master with several groups per
    // codec still shares the renditions' URIs): the DEFAULT=YES member, else the first.
    let group = variants.iter().find_map(|v| v.2.clone());
    let audio = group.and_then(|g| {
        let members: Vec<&Audio> = audio.iter().filter(|a| a.group == g).collect();
        let pick = members
            .iter()
            .find(|a| a.default)
            .or(members.first())
            .copied()?;
        let uri = pick.uri.clone()?;
        Some(Rendition {
            id: if pick.name.is_empty() {
                path_of(&uri)
            } else {
                pick.name.clone()
            },
            bandwidth: 0,
            source: Source::Playlist(uri),
        })
    });
    let video = variants
        .into_iter()
        .map(|(bandwidth, uri, _)| Rendition {
            id: path_of(&uri),
            bandwidth,
            source: Source::Playlist(uri),
        })
        .collect();
    Ok(Presentation {
        video,
        audio,
        manifest_refresh: None,
    })
}

/// The path of a URL, for rendition names in reports.
fn path_of(url: &str) -> String {
    url::Url::parse(url).map_or_else(|_| url.to_owned(), |u| u.path().to_owned())
}

/// Parses a media playlist. Segment start times count from the first segment listed.
pub fn parse_media(text: &str, url: &str) -> Result<Track, ManifestError> {
    let mut track = Track::default();
    let mut seq: u64 = 0;
    let mut duration: Option<f64> = None;
    let mut range: Option<ByteRange> = None;
    let mut map: Option<Resource> = None;
    let mut last_end: Option<(String, u64)> = None;
    let mut t = 0.0;
    let mut target = None;
    for (i, line) in text.lines().map(str::trim).enumerate() {
        let n = i + 1;
        let at = || format!("line {n}");
        if line.is_empty() {
            continue;
        }
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = Some(
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| bad(at(), format!("target duration {v:?}")))?,
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v
                .trim()
                .parse()
                .map_err(|_| bad(at(), format!("media sequence {v:?}")))?;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or_default().trim();
            let d = d
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite() && *d >= 0.0)
                .ok_or_else(|| bad(at(), format!("EXTINF duration {d:?}")))?;
            duration = Some(d);
        } else if let Some(v) = line.strip_prefix("#EXT-X-BYTERANGE:") {
            range = Some(byte_range(v, None, n).or_else(|e| {
                // Without an offset it continues the previous range of the next URI; the
                // URI is only known on the next line, so keep the length and resolve later.
                let len = v.trim().parse::<u64>().map_err(|_| e)?;
                Ok::<_, ManifestError>(ByteRange {
                    start: u64::MAX,
                    len,
                })
            })?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            let a = attributes(v);
            let uri = attr(&a, "URI").ok_or_else(|| bad(at(), "EXT-X-MAP without URI"))?;
            let range = attr(&a, "BYTERANGE")
                .map(|r| byte_range(r, Some(0), n))
                .transpose()?;
            map = Some(Resource {
                url: resolve(url, uri)?,
                range,
            });
        } else if line == "#EXT-X-ENDLIST" {
            track.ended = true;
        } else if line.starts_with("#EXT-X-KEY:") && !line.contains("METHOD=NONE") {
            return Err(ManifestError::Unsupported(format!(
                "line {n}: encrypted segments (EXT-X-KEY)"
            )));
        } else if !line.starts_with('#') {
            let d = duration
                .take()
                .ok_or_else(|| bad(at(), "a segment URI without EXTINF before it"))?;
            let seg_url = resolve(url, line)?;
            let range = match range.take() {
                Some(r) if r.start == u64::MAX => {
                    let start = match &last_end {
                        Some((u, end)) if *u == seg_url => *end,
                        _ => {
                            return Err(bad(
                                at(),
                                "a byte range without an offset must follow one of the same URI",
                            ));
                        }
                    };
                    Some(ByteRange { start, len: r.len })
                }
                r => r,
            };
            last_end = range.map(|r| (seg_url.clone(), r.start + r.len));
            track.segments.push(Segment {
                seq,
                start: t,
                duration: d,
                res: Resource {
                    url: seg_url,
                    range,
                },
                init: map.clone(),
            });
            t += d;
            seq += 1;
        }
    }
    track.target_duration = target.ok_or_else(|| bad("playlist", "no EXT-X-TARGETDURATION"))?;
    if track.target_duration <= 0.0 {
        return Err(bad("playlist", "EXT-X-TARGETDURATION must be positive"));
    }
    if track.segments.is_empty() && track.ended {
        return Err(ManifestError::Empty("segment in the media playlist"));
    }
    Ok(track)
}

/// Merges a refreshed live playlist into `old`: segments already known keep their place on
/// the timeline, new ones follow the last known one. Returns how many were added.
pub fn merge(old: &mut Track, new: Track) -> usize {
    old.ended = new.ended;
    old.target_duration = new.target_duration;
    let last = old.segments.last().map(|s| (s.seq, s.start + s.duration));
    let mut added = 0;
    match last {
        None => {
            old.segments = new.segments;
            added = old.segments.len();
        }
        Some((last_seq, mut end)) => {
            for mut s in new.segments.into_iter().filter(|s| s.seq > last_seq) {
                s.start = end;
                end += s.duration;
                old.segments.push(s);
                added += 1;
            }
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://edge.test/v/demo/master.m3u8?token=t";

    #[test]
    fn master_with_separate_audio() {
        let text = "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio/index.m3u8\"\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"French\",URI=\"audio-fr/index.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS=\"avc1.640028,mp4a.40.2\",RESOLUTION=1280x720,AUDIO=\"aud\"\n\
            video/720p/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000,AUDIO=\"aud\"\n\
            video/360p/index.m3u8\n";
        let Playlist::Master(p) = parse(text, BASE).unwrap() else {
            panic!("master")
        };
        assert_eq!(p.video.len(), 2);
        assert_eq!(p.video[0].bandwidth, 800_000, "sorted by bandwidth");
        assert_eq!(
            p.video[1].source,
            Source::Playlist("https://edge.test/v/demo/video/720p/index.m3u8".into())
        );
        let a = p.audio.unwrap();
        assert_eq!(a.id, "English");
        assert_eq!(
            a.source,
            Source::Playlist("https://edge.test/v/demo/audio/index.m3u8".into())
        );
    }

    #[test]
    fn media_playlist_with_map_and_byte_ranges() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n\
            #EXT-X-MAP:URI=\"all.mp4\",BYTERANGE=\"800@0\"\n\
            #EXTINF:2.0,\n#EXT-X-BYTERANGE:1000@800\nall.mp4\n\
            #EXTINF:1.5,\n#EXT-X-BYTERANGE:500\nall.mp4\n\
            #EXT-X-MAP:URI=\"init2.mp4\"\n\
            #EXTINF:2,\nseg-3.m4s?x=1\n#EXT-X-ENDLIST\n";
        let t = parse_media(text, "https://e.test/a/v/index.m3u8").unwrap();
        assert!(t.ended);
        assert_eq!(t.target_duration, 2.0);
        assert_eq!(t.segments.len(), 3);
        let s = &t.segments;
        assert_eq!(s[0].seq, 5);
        assert_eq!(
            s[0].res.range,
            Some(ByteRange {
                start: 800,
                len: 1000
            })
        );
        assert_eq!(
            s[1].res.range,
            Some(ByteRange {
                start: 1800,
                len: 500
            })
        );
        assert_eq!(s[1].start, 2.0);
        assert_eq!(s[2].start, 3.5);
        assert_eq!(
            s[0].init.as_ref().unwrap().range,
            Some(ByteRange { start: 0, len: 800 })
        );
        assert_eq!(
            s[2].init.as_ref().unwrap().url,
            "https://e.test/a/v/init2.mp4"
        );
        assert_eq!(s[2].res.url, "https://e.test/a/v/seg-3.m4s?x=1");
        assert_eq!(s[0].res.range.unwrap().header(), "bytes=800-1799");
    }

    #[test]
    fn live_refresh_merges_by_sequence() {
        let p1 = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
            #EXTINF:2,\ns10.m4s\n#EXTINF:2,\ns11.m4s\n";
        let p2 = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:11\n\
            #EXTINF:2,\ns11.m4s\n#EXTINF:2,\ns12.m4s\n#EXTINF:1,\ns13.m4s\n";
        let mut t = parse_media(p1, "http://e/x/i.m3u8").unwrap();
        assert!(!t.ended);
        let added = merge(&mut t, parse_media(p2, "http://e/x/i.m3u8").unwrap());
        assert_eq!(added, 2);
        let seqs: Vec<u64> = t.segments.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [10, 11, 12, 13]);
        assert_eq!(t.segments[3].start, 6.0);
        assert_eq!(t.end(), 7.0);
    }

    #[test]
    fn malformed_playlists_are_errors_not_panics() {
        for (text, want) in [
            ("", "EXTM3U"),
            ("hello", "EXTM3U"),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=1x1\nv.m3u8\n",
                "BANDWIDTH",
            ),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=abc\nv.m3u8\n",
                "BANDWIDTH",
            ),
            ("#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg.ts\n", "EXTINF"),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:x,\nseg.ts\n",
                "EXTINF",
            ),
            ("#EXTM3U\n#EXTINF:2,\nseg.ts\n", "TARGETDURATION"),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n#EXT-X-BYTERANGE:10\nseg.ts\n",
                "offset",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-ENDLIST\n",
                "segment",
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n",
                "encrypted",
            ),
        ] {
            let e = parse(text, BASE).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn attribute_lists_keep_commas_in_quotes() {
        let a = attributes("BANDWIDTH=1,CODECS=\"avc1,mp4a\",AUDIO=\"a\"");
        assert_eq!(
            a,
            [("BANDWIDTH", "1"), ("CODECS", "avc1,mp4a"), ("AUDIO", "a")]
        );
    }
}
