//! Common Media Client Data (CTA-5004): what a player tells the server about each request,
//! in the query (`CMCD=...`) or in the four `CMCD-*` headers, keys in alphabetical order as
//! hls.js and dash.js send them.

/// How CMCD travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CmcdMode {
    /// Not sent.
    Off,
    /// `CMCD=` query parameter.
    Query,
    /// `CMCD-Request`, `CMCD-Object`, `CMCD-Status`, `CMCD-Session` headers.
    Header,
}

/// Object types (`ot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `m`: a manifest or playlist.
    Manifest,
    /// `v`: video only.
    Video,
    /// `a`: audio only.
    Audio,
    /// `av`: muxed audio and video.
    Muxed,
    /// `i`: an initialisation segment.
    Init,
}

impl ObjectType {
    fn token(self) -> &'static str {
        match self {
            Self::Manifest => "m",
            Self::Video => "v",
            Self::Audio => "a",
            Self::Muxed => "av",
            Self::Init => "i",
        }
    }
}

/// The CMCD data of one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cmcd {
    /// `br`: encoded bitrate of the object, kbps.
    pub br: Option<u64>,
    /// `bl`: buffer length, ms (rounded to 100 ms).
    pub bl: Option<u64>,
    /// `d`: object duration, ms.
    pub d: Option<u64>,
    /// `ot`: object type.
    pub ot: Option<ObjectType>,
    /// `su`: buffer starving or starting up.
    pub su: bool,
    /// `mtp`: measured throughput, kbps (rounded to 100 kbps).
    pub mtp: Option<u64>,
    /// `nor`: the next object's URL, relative to this one.
    pub nor: Option<String>,
    /// `bs`: the buffer starved since the previous request.
    pub bs: bool,
}

/// The session part: `sid` and `cid`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CmcdSession {
    /// `sid`: the playback session id.
    pub sid: String,
    /// `cid`: the content id.
    pub cid: String,
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The four header groups (request, object, status, session), each `key=value,...`.
fn groups(c: &Cmcd, s: &CmcdSession) -> [Vec<(&'static str, String)>; 4] {
    let mut request = Vec::new();
    let mut object = Vec::new();
    let mut session = Vec::new();
    if let Some(v) = c.bl {
        request.push(("bl", v.to_string()));
    }
    if let Some(v) = c.mtp {
        request.push(("mtp", v.to_string()));
    }
    if let Some(v) = &c.nor {
        request.push(("nor", quoted(v)));
    }
    if c.su {
        request.push(("su", String::new()));
    }
    if let Some(v) = c.br {
        object.push(("br", v.to_string()));
    }
    if let Some(v) = c.d {
        object.push(("d", v.to_string()));
    }
    if let Some(v) = c.ot {
        object.push(("ot", v.token().to_owned()));
    }
    if !s.cid.is_empty() {
        session.push(("cid", quoted(&s.cid)));
    }
    if !s.sid.is_empty() {
        session.push(("sid", quoted(&s.sid)));
    }
    let mut status = Vec::new();
    if c.bs {
        status.push(("bs", String::new()));
    }
    [request, object, status, session]
}

fn join(pairs: &[(&'static str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                (*k).to_owned()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The value of the `CMCD` query parameter (not yet percent-encoded): every key, sorted.
pub fn query_value(c: &Cmcd, s: &CmcdSession) -> String {
    let mut all: Vec<(&'static str, String)> = groups(c, s).into_iter().flatten().collect();
    all.sort_by_key(|p| p.0);
    join(&all)
}

/// The `CMCD-*` headers that have something to say.
pub fn headers(c: &Cmcd, s: &CmcdSession) -> Vec<(&'static str, String)> {
    let names = ["CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session"];
    groups(c, s)
        .into_iter()
        .zip(names)
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, n)| (n, join(&g)))
        .collect()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Rounds a buffer length in ms to the nearest 100 ms, as the spec asks.
pub fn round100(v: f64) -> u64 {
    ((v / 100.0).round() * 100.0).max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Cmcd, CmcdSession) {
        (
            Cmcd {
                br: Some(3000),
                bl: Some(round100(21_340.0)),
                d: Some(3200),
                ot: Some(ObjectType::Video),
                su: true,
                mtp: Some(25_400),
                nor: Some("seg-00003.m4s".into()),
                bs: true,
            },
            CmcdSession {
                sid: "6e2fb550-c457-11e9-bb97-0800200c9a66".into(),
                cid: "demo".into(),
            },
        )
    }

    #[test]
    fn query_mode_sorts_every_key() {
        let (c, s) = sample();
        assert_eq!(
            query_value(&c, &s),
            "bl=21300,br=3000,bs,cid=\"demo\",d=3200,mtp=25400,nor=\"seg-00003.m4s\",ot=v,sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\",su"
        );
        assert!(percent_encode("a=\"b\",c").starts_with("a%3D%22b%22%2Cc"));
    }

    #[test]
    fn header_mode_groups_keys() {
        let (c, s) = sample();
        let h = headers(&c, &s);
        assert_eq!(
            h,
            [
                (
                    "CMCD-Request",
                    "bl=21300,mtp=25400,nor=\"seg-00003.m4s\",su".to_owned()
                ),
                ("CMCD-Object", "br=3000,d=3200,ot=v".to_owned()),
                ("CMCD-Status", "bs".to_owned()),
                (
                    "CMCD-Session",
                    "cid=\"demo\",sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\"".to_owned()
                ),
            ]
        );
        let empty = headers(&Cmcd::default(), &CmcdSession::default());
        assert!(empty.is_empty());
    }
}
