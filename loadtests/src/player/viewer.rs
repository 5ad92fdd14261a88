//! One viewer as a state machine. The caller asks [`Viewer::poll_request`] what to fetch
//! now, fetches it, hands the result to [`Viewer::on_response`], and wakes the viewer at
//! [`Viewer::poll_timeout`]. Times are seconds on the caller's clock (`f64`, any origin).
//!
//! Like hls.js it keeps one segment download in flight per track (video, separate audio)
//! and one playlist load per track; it buffers up to a target level, starts playing once a
//! startup threshold is buffered, stalls when a track runs dry and resumes at a rebuffer
//! threshold, and leaves after its session length. Every request carries the time the
//! player needed it (`needed_at`), so latencies can count from there.

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use super::abr::{Abr, AbrConfig};
use super::cmcd::{Cmcd, ObjectType, round100};
use super::{
    Kind, ManifestError, Media, Presentation, Rendition, Resource, Rng, Segment, Source, Track,
    dash, hls,
};

/// Slack for comparing media times (floating-point segment boundaries).
const EPS: f64 = 1e-3;

/// How long a viewer watches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SessionLength {
    /// Until the content ends (a live stream: forever).
    ToEnd,
    /// This many seconds of playback.
    Fixed(f64),
    /// Uniform between the two, seconds.
    Uniform(f64, f64),
    /// Exponential with this mean, seconds.
    Exponential(f64),
}

impl SessionLength {
    /// Parses `end`, `60s`, `30s..120s` or `exp:90s`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = |v: &str| {
            humantime::parse_duration(v.trim())
                .map(|d| d.as_secs_f64())
                .map_err(|e| format!("{v:?}: {e}"))
        };
        if s == "end" {
            Ok(Self::ToEnd)
        } else if let Some(m) = s.strip_prefix("exp:") {
            Ok(Self::Exponential(d(m)?))
        } else if let Some((a, b)) = s.split_once("..") {
            let (a, b) = (d(a)?, d(b)?);
            if a > b {
                return Err(format!("{s:?}: the lower bound is above the upper"));
            }
            Ok(Self::Uniform(a, b))
        } else {
            Ok(Self::Fixed(d(s)?))
        }
    }

    fn draw(self, rng: &mut Rng) -> f64 {
        match self {
            Self::ToEnd => f64::INFINITY,
            Self::Fixed(s) => s,
            Self::Uniform(a, b) => a + (b - a) * rng.unit(),
            Self::Exponential(m) => rng.exponential(m),
        }
    }
}

/// How a viewer plays.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerConfig {
    /// Seconds buffered before playback starts (less when the whole content is shorter).
    pub startup_threshold: f64,
    /// Seconds buffered before playback resumes after a stall.
    pub rebuffer_threshold: f64,
    /// The buffer level the player fills up to, seconds.
    pub target_buffer: f64,
    /// How long it watches.
    pub session: SessionLength,
    /// Rendition choice.
    pub abr: AbrConfig,
    /// Retries of a request that failed in transport or with 5xx.
    pub max_retries: u32,
    /// Wait before a retry, seconds.
    pub retry_delay: f64,
    /// A live stream starts this many segments before the live edge.
    pub live_edge_segments: usize,
    /// Chance that a session seeks once (VOD), at a uniform point of it to a uniform point
    /// of the content.
    pub seek_probability: f64,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        Self {
            startup_threshold: 2.0,
            rebuffer_threshold: 2.0,
            target_buffer: 30.0,
            session: SessionLength::ToEnd,
            abr: AbrConfig::default(),
            max_retries: 2,
            retry_delay: 0.5,
            live_edge_segments: 3,
            seek_probability: 0.0,
        }
    }
}

/// One object the viewer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Identifies the answer.
    pub id: u64,
    /// What it is.
    pub kind: Kind,
    /// Which track.
    pub media: Media,
    /// Where.
    pub res: Resource,
    /// When the player needed it (its latency counts from here).
    pub needed_at: f64,
    /// What the player would tell the server (CTA-5004).
    pub cmcd: Cmcd,
    /// Which attempt this is (0: the first).
    pub attempt: u32,
}

/// What came of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A 2xx answer, read to the end.
    Ok {
        /// The URL after redirects (the base for relative URIs in it).
        final_url: String,
        /// The text of a manifest or playlist (ignored for segments).
        body: Option<String>,
        /// Body bytes.
        bytes: u64,
        /// When the request went out (throughput is measured from here).
        sent_at: f64,
    },
    /// No usable answer.
    Failed {
        /// The status, when there was one.
        status: Option<u16>,
        /// The edge's JSON `reason`, or what failed.
        reason: String,
        /// Worth trying again (transport errors, 5xx).
        retryable: bool,
    },
}

/// How a viewer ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Watched its session (or the content) to the end.
    Completed,
    /// Gave up: a request failed for good or a manifest was unusable.
    Failed {
        /// The object that failed.
        kind: Kind,
        /// Its status, if any.
        status: Option<u16>,
        /// The edge's reason, or what failed.
        reason: String,
    },
}

/// What happened, for the caller's counters and time series.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Playback started after `startup` seconds.
    Started {
        /// Seconds from arrival to the first frame.
        startup: f64,
    },
    /// The buffer ran dry.
    StallStarted,
    /// Playback resumed after `duration` seconds.
    StallEnded {
        /// Seconds stalled.
        duration: f64,
    },
    /// A media segment arrived.
    SegmentDone {
        /// Which track.
        media: Media,
        /// Took longer (from when it was needed) than its own duration.
        late: bool,
        /// Its rendition's bandwidth, bits per second.
        bandwidth: u64,
        /// Its duration, seconds.
        duration: f64,
    },
    /// The viewer seeked.
    Seeked {
        /// Playhead before, seconds of media.
        from: f64,
        /// Playhead after (the start of the segment holding the target).
        to: f64,
    },
    /// The video rendition changed.
    Switched {
        /// Old bandwidth.
        from: u64,
        /// New bandwidth.
        to: u64,
    },
    /// The viewer left.
    Finished(Outcome),
}

/// Where the viewer is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Loading,
    Playing,
    Stalled { since: f64 },
    Seeking,
    Done,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    busy: bool,
    idle_since: f64,
    retry: Option<(f64, Pending)>,
}

#[derive(Debug, Clone, PartialEq)]
enum What {
    Master {
        refresh: bool,
    },
    Playlist {
        track: usize,
        rendition: usize,
    },
    Init {
        track: usize,
        res: Resource,
    },
    Segment {
        track: usize,
        rendition: usize,
        seg: Segment,
        epoch: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Pending {
    what: What,
    needed_at: f64,
    attempt: u32,
}

#[derive(Debug, Clone)]
struct TrackState {
    media: Media,
    rendition: usize,
    /// A switch waiting for its playlist.
    want: Option<usize>,
    buffered_end: f64,
    init: Option<Resource>,
    seg: Slot,
    playlist: Slot,
    loaded_at: f64,
    finished: bool,
}

/// Counters a viewer keeps about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ViewerStats {
    /// Seconds from arrival to playback, once started.
    pub startup: Option<f64>,
    /// Seconds played.
    pub watched: f64,
    /// Seconds stalled.
    pub stalled: f64,
    /// Stalls.
    pub stalls: u32,
    /// Media segments fetched.
    pub segments: u32,
    /// Of those, late ones.
    pub late: u32,
    /// Sum of bandwidth x duration of the video segments, for the mean bitrate.
    pub bit_seconds: f64,
    /// Seconds of video segments.
    pub video_seconds: f64,
    /// Seeks.
    pub seeks: u32,
    /// Seconds waited after seeks until playback resumed.
    pub seek_wait: f64,
}

/// One virtual viewer.
#[derive(Debug)]
pub struct Viewer {
    cfg: ViewerConfig,
    url: String,
    arrived: f64,
    t: f64,
    phase: Phase,
    playhead: f64,
    session: f64,
    pres: Option<Presentation>,
    tracks: Vec<TrackState>,
    manifest: Slot,
    manifest_loaded_at: f64,
    abr: Abr,
    fetched: HashSet<u64>,
    pending: Vec<(u64, Pending)>,
    next_id: u64,
    events: VecDeque<Event>,
    /// The buffer starved since the last request was made (CMCD `bs` on the next one).
    starved: bool,
    stats: ViewerStats,
    live_start: Option<f64>,
    master_requested: bool,
    playlist_urls: std::collections::HashMap<(bool, usize), String>,
    /// A seek still to come: (fraction of the session, fraction of the content).
    seek: Option<(f64, f64)>,
    /// Bumped by a seek: answers to older segment requests no longer fill the buffer.
    epoch: u32,
}

fn key(r: &Resource) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.hash(&mut h);
    h.finish()
}

fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

impl Viewer {
    /// A viewer arriving at `now` to play `url` (an HLS master or media playlist, or an MPD).
    /// `seed` draws its session length.
    pub fn new(mut cfg: ViewerConfig, url: String, now: f64, seed: u64) -> Self {
        // A threshold above the target level could never be reached.
        cfg.startup_threshold = cfg.startup_threshold.min(cfg.target_buffer);
        cfg.rebuffer_threshold = cfg.rebuffer_threshold.min(cfg.target_buffer);
        let mut rng = Rng::new(seed);
        let session = cfg.session.draw(&mut rng).max(0.0);
        let seek = (rng.unit() < cfg.seek_probability).then(|| (rng.unit(), rng.unit()));
        let abr = Abr::new(cfg.abr.clone());
        Self {
            cfg,
            url,
            arrived: now,
            t: now,
            phase: Phase::Loading,
            playhead: 0.0,
            session,
            pres: None,
            tracks: Vec::new(),
            manifest: Slot {
                idle_since: now,
                ..Slot::default()
            },
            manifest_loaded_at: now,
            abr,
            fetched: HashSet::new(),
            pending: Vec::new(),
            next_id: 0,
            events: VecDeque::new(),
            starved: false,
            stats: ViewerStats::default(),
            live_start: None,
            master_requested: false,
            playlist_urls: std::collections::HashMap::new(),
            seek,
            epoch: 0,
        }
    }

    /// The viewer has left.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Its counters so far.
    pub fn stats(&self) -> &ViewerStats {
        &self.stats
    }

    /// The session length it drew, seconds.
    pub fn session_length(&self) -> f64 {
        self.session
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The current throughput estimate, bits per second.
    pub fn estimate(&self) -> f64 {
        self.abr.estimate()
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.phase == Phase::Done {
            return;
        }
        if let Phase::Stalled { since } = self.phase {
            self.events.push_back(Event::StallEnded {
                duration: self.t - since,
            });
        }
        self.phase = Phase::Done;
        self.pending.clear();
        self.events.push_back(Event::Finished(outcome));
    }

    fn fail(&mut self, kind: Kind, status: Option<u16>, reason: String) {
        self.finish(Outcome::Failed {
            kind,
            status,
            reason,
        });
    }

    fn rendition(&self, track: usize, r: usize) -> Option<&Rendition> {
        let p = self.pres.as_ref()?;
        match self.tracks.get(track)?.media {
            Media::Audio => p.audio.as_ref(),
            _ => p.video.get(r),
        }
    }

    fn rendition_mut(&mut self, track: usize, r: usize) -> Option<&mut Rendition> {
        let media = self.tracks.get(track)?.media;
        let p = self.pres.as_mut()?;
        match media {
            Media::Audio => p.audio.as_mut(),
            _ => p.video.get_mut(r),
        }
    }

    fn track_of(&self, track: usize, r: usize) -> Option<&Track> {
        match &self.rendition(track, r)?.source {
            Source::Track(t) => Some(t),
            Source::Playlist(_) => None,
        }
    }

    /// Seconds buffered ahead of the playhead on the shortest track.
    fn level(&self) -> f64 {
        self.tracks
            .iter()
            .map(|t| t.buffered_end - self.playhead)
            .fold(f64::INFINITY, f64::min)
            .max(0.0)
    }

    /// Where the content ends, once every track is known to end.
    fn content_end(&self) -> Option<f64> {
        if self.tracks.is_empty() {
            return None;
        }
        let mut end = f64::INFINITY;
        for (i, t) in self.tracks.iter().enumerate() {
            let tr = self.track_of(i, t.rendition)?;
            if !tr.ended {
                return None;
            }
            end = end.min(tr.end());
        }
        Some(end)
    }

    fn fully_buffered(&self) -> bool {
        self.content_end()
            .is_some_and(|e| self.tracks.iter().all(|t| t.buffered_end >= e - EPS))
    }

    /// Moves playback on to `now`: the playhead advances while playing, a stall starts when
    /// a track runs dry, and the viewer leaves at the end of its session or the content.
    pub fn handle_timeout(&mut self, now: f64) {
        while self.t < now {
            match self.phase {
                Phase::Playing => {
                    let dt = now - self.t;
                    let level = self.level();
                    let content_left = self
                        .content_end()
                        .map_or(f64::INFINITY, |e| (e - self.playhead).max(0.0));
                    let session_left = (self.session - self.stats.watched).max(0.0);
                    let seek_left = self
                        .seek_at()
                        .map_or(f64::INFINITY, |s| (s - self.stats.watched).max(0.0));
                    let step = dt
                        .min(level)
                        .min(content_left)
                        .min(session_left)
                        .min(seek_left);
                    self.playhead += step;
                    self.stats.watched += step;
                    self.t += step;
                    if session_left <= step + EPS || content_left <= step + EPS {
                        self.finish(Outcome::Completed);
                        return;
                    }
                    if seek_left <= step + EPS {
                        self.do_seek();
                        continue;
                    }
                    if level <= step + EPS && step < dt {
                        self.phase = Phase::Stalled { since: self.t };
                        self.stats.stalls += 1;
                        self.events.push_back(Event::StallStarted);
                        self.starved = true;
                    } else if step >= dt {
                        self.t = now;
                    }
                }
                Phase::Stalled { .. } => {
                    self.stats.stalled += now - self.t;
                    self.t = now;
                }
                Phase::Seeking => {
                    self.stats.seek_wait += now - self.t;
                    self.t = now;
                }
                Phase::Loading | Phase::Done => self.t = now,
            }
        }
        self.settle();
    }

    /// When (in seconds watched) the pending seek happens, once the content's end is known.
    fn seek_at(&self) -> Option<f64> {
        let (at, _) = self.seek?;
        Some(at * self.session.min(self.content_end()?))
    }

    /// Jumps to the start of the segment holding the seek target. Segments already fetched
    /// stay in the buffer (they are not fetched again when playback reaches them).
    fn do_seek(&mut self) {
        let Some((_, to)) = self.seek.take() else {
            return;
        };
        let (Some(end), Some(track)) = (
            self.content_end(),
            self.tracks
                .first()
                .and_then(|t| self.track_of(0, t.rendition)),
        ) else {
            return;
        };
        let target = to * end;
        let start = track
            .segments
            .iter()
            .rev()
            .find(|s| s.start <= target + EPS)
            .map_or(0.0, |s| s.start);
        let from = self.playhead;
        self.stats.seeks += 1;
        self.epoch += 1;
        self.playhead = start;
        let t = self.t;
        for tr in &mut self.tracks {
            tr.buffered_end = start;
            tr.finished = false;
            if !tr.seg.busy {
                tr.seg.idle_since = t;
            }
        }
        self.phase = Phase::Seeking;
        self.events.push_back(Event::Seeked { from, to: start });
    }

    /// At a standstill in time: a playing viewer with nothing buffered stalls now, and one
    /// at the end of its session or the content leaves now.
    fn settle(&mut self) {
        if self.phase != Phase::Playing {
            return;
        }
        let content_left = self
            .content_end()
            .map_or(f64::INFINITY, |e| e - self.playhead);
        if self.session - self.stats.watched <= EPS || content_left <= EPS {
            self.finish(Outcome::Completed);
        } else if self.level() <= EPS {
            self.phase = Phase::Stalled { since: self.t };
            self.stats.stalls += 1;
            self.events.push_back(Event::StallStarted);
            self.starved = true;
        }
    }

    /// Starts or resumes playback when enough is buffered.
    fn check_play(&mut self) {
        let ready = |threshold: f64| self.level() >= threshold - EPS || self.fully_buffered();
        match self.phase {
            Phase::Loading if !self.tracks.is_empty() && ready(self.cfg.startup_threshold) => {
                self.phase = Phase::Playing;
                let startup = self.t - self.arrived;
                self.stats.startup = Some(startup);
                self.events.push_back(Event::Started { startup });
                if self.session <= 0.0 {
                    self.finish(Outcome::Completed);
                }
            }
            Phase::Seeking if ready(self.cfg.startup_threshold) => {
                self.phase = Phase::Playing;
            }
            Phase::Stalled { since } if ready(self.cfg.rebuffer_threshold) => {
                self.phase = Phase::Playing;
                self.events.push_back(Event::StallEnded {
                    duration: self.t - since,
                });
            }
            _ => {}
        }
    }

    /// When the viewer next needs to be woken (without any answer arriving).
    pub fn poll_timeout(&self) -> Option<f64> {
        if self.phase == Phase::Done {
            return None;
        }
        let mut next = f64::INFINITY;
        let mut consider = |t: f64| {
            if t.is_finite() {
                next = next.min(t);
            }
        };
        if self.phase == Phase::Playing {
            let level = self.level();
            if level > EPS {
                consider(self.t + level);
            }
            if let Some(e) = self.content_end() {
                consider(self.t + (e - self.playhead).max(0.0));
            }
            consider(self.t + (self.session - self.stats.watched).max(0.0));
            if let Some(at) = self.seek_at() {
                consider(self.t + (at - self.stats.watched).max(0.0));
            }
            for t in &self.tracks {
                if !t.seg.busy && !t.finished {
                    let ahead = t.buffered_end - self.playhead;
                    if ahead > self.cfg.target_buffer + EPS {
                        consider(self.t + ahead - self.cfg.target_buffer);
                    }
                }
            }
        }
        for (i, t) in self.tracks.iter().enumerate() {
            for slot in [&t.seg, &t.playlist] {
                if let Some((at, ..)) = &slot.retry {
                    consider(*at);
                }
            }
            if let Some(tr) = self.track_of(i, t.rendition)
                && !tr.ended
                && !t.playlist.busy
                && matches!(
                    self.rendition(i, t.rendition).map(|r| &r.source),
                    Some(Source::Track(_))
                )
                && self.is_hls_track(i, t.rendition)
            {
                consider(t.loaded_at + tr.target_duration);
            }
        }
        if let Some(r) = self.pres.as_ref().and_then(|p| p.manifest_refresh)
            && !self.manifest.busy
        {
            consider(self.manifest_loaded_at + r);
        }
        if let Some((at, ..)) = &self.manifest.retry {
            consider(*at);
        }
        next.is_finite().then_some(next.max(self.t))
    }

    /// Whether rendition `r` of `track` came from an HLS media playlist (refreshed on its
    /// own) rather than an MPD (refreshed with the manifest).
    fn is_hls_track(&self, _track: usize, _r: usize) -> bool {
        self.pres
            .as_ref()
            .is_some_and(|p| p.manifest_refresh.is_none())
    }

    fn issue(&mut self, p: Pending) -> Request {
        let attempt = p.attempt;
        let id = self.next_id;
        self.next_id += 1;
        let (kind, media, res, mut cmcd) = self.describe(&p.what);
        // `bs`: starved since the previous request (or starved still).
        cmcd.bs = std::mem::take(&mut self.starved) || matches!(self.phase, Phase::Stalled { .. });
        self.pending.push((id, p.clone()));
        Request {
            id,
            kind,
            media,
            res,
            needed_at: p.needed_at,
            cmcd,
            attempt,
        }
    }

    fn describe(&self, what: &What) -> (Kind, Media, Resource, Cmcd) {
        let su = !matches!(self.phase, Phase::Playing);
        let mtp = Some(round100(self.abr.estimate() / 1000.0));
        let base = Cmcd {
            su,
            mtp,
            ..Cmcd::default()
        };
        match what {
            What::Master { .. } => (
                Kind::Master,
                Media::Manifest,
                Resource {
                    url: self.url.clone(),
                    range: None,
                },
                Cmcd {
                    ot: Some(ObjectType::Manifest),
                    ..base
                },
            ),
            What::Playlist { track, rendition } => {
                let url = match self.rendition(*track, *rendition).map(|r| &r.source) {
                    Some(Source::Playlist(u)) => u.clone(),
                    _ => self.playlist_url(*track, *rendition).unwrap_or_default(),
                };
                (
                    Kind::Playlist,
                    self.tracks[*track].media,
                    Resource { url, range: None },
                    Cmcd {
                        ot: Some(ObjectType::Manifest),
                        ..base
                    },
                )
            }
            What::Init { track, res } => {
                let t = &self.tracks[*track];
                let br = self
                    .rendition(*track, t.rendition)
                    .map(|r| r.bandwidth / 1000);
                (
                    Kind::Init,
                    t.media,
                    res.clone(),
                    Cmcd {
                        ot: Some(ObjectType::Init),
                        br: br.filter(|b| *b > 0),
                        bl: Some(round100(self.level() * 1000.0)),
                        ..base
                    },
                )
            }
            What::Segment {
                track,
                rendition,
                seg,
                ..
            } => {
                let t = &self.tracks[*track];
                let br = self
                    .rendition(*track, *rendition)
                    .map(|r| r.bandwidth / 1000);
                let nor = self
                    .track_of(*track, *rendition)
                    .and_then(|tr| tr.segments.iter().find(|s| s.start > seg.start + EPS))
                    .map(|s| file_name(&s.res.url));
                let ot = match (t.media, self.tracks.len()) {
                    (Media::Audio, _) => ObjectType::Audio,
                    (_, 1) => ObjectType::Muxed,
                    _ => ObjectType::Video,
                };
                (
                    Kind::Segment,
                    t.media,
                    seg.res.clone(),
                    Cmcd {
                        ot: Some(ot),
                        br: br.filter(|b| *b > 0),
                        bl: Some(round100((t.buffered_end - self.playhead).max(0.0) * 1000.0)),
                        d: Some((seg.duration * 1000.0).round() as u64),
                        nor,
                        ..base
                    },
                )
            }
        }
    }

    /// The playlist URL a loaded HLS rendition was read from (kept for refreshes).
    fn playlist_url(&self, track: usize, r: usize) -> Option<String> {
        self.playlist_urls
            .get(&(self.tracks.get(track)?.media == Media::Audio, r))
            .cloned()
    }

    /// The next request to make at `now`, if any. Call it until it returns `None`.
    pub fn poll_request(&mut self, now: f64) -> Option<Request> {
        self.handle_timeout(now);
        if self.phase == Phase::Done {
            return None;
        }
        if !self.master_requested {
            self.master_requested = true;
            self.manifest.busy = true;
            let p = Pending {
                what: What::Master { refresh: false },
                needed_at: self.arrived,
                attempt: 0,
            };
            return Some(self.issue(p));
        }
        if let Some(r) = self.retry_due(now) {
            return Some(r);
        }
        if let Some(refresh) = self.pres.as_ref().and_then(|p| p.manifest_refresh)
            && !self.manifest.busy
            && self.manifest.retry.is_none()
            && now >= self.manifest_loaded_at + refresh
        {
            self.manifest.busy = true;
            let p = Pending {
                what: What::Master { refresh: true },
                needed_at: self.manifest_loaded_at + refresh,
                attempt: 0,
            };
            return Some(self.issue(p));
        }
        for i in 0..self.tracks.len() {
            if let Some(r) = self.track_request(i, now) {
                return Some(r);
            }
        }
        None
    }

    fn retry_due(&mut self, now: f64) -> Option<Request> {
        if let Some((at, ..)) = &self.manifest.retry
            && *at <= now
        {
            let (_, p) = self.manifest.retry.take().expect("checked");
            self.manifest.busy = true;
            return Some(self.issue(p));
        }
        for i in 0..self.tracks.len() {
            for playlist in [false, true] {
                let t = &mut self.tracks[i];
                let slot = if playlist {
                    &mut t.playlist
                } else {
                    &mut t.seg
                };
                if let Some((at, ..)) = &slot.retry
                    && *at <= now
                {
                    let (_, p) = slot.retry.take().expect("checked");
                    slot.busy = true;
                    return Some(self.issue(p));
                }
            }
        }
        None
    }

    fn track_request(&mut self, i: usize, now: f64) -> Option<Request> {
        let (rendition, want) = (self.tracks[i].rendition, self.tracks[i].want);
        // A playlist to load: the current rendition's first load, a switch target, or a
        // live refresh.
        if !self.tracks[i].playlist.busy && self.tracks[i].playlist.retry.is_none() {
            let load = want.or(Some(rendition)).filter(|&r| {
                matches!(
                    self.rendition(i, r).map(|x| &x.source),
                    Some(Source::Playlist(_))
                )
            });
            let refresh_due = self.track_of(i, rendition).and_then(|tr| {
                let due = self.tracks[i].loaded_at + tr.target_duration;
                (!tr.ended && self.is_hls_track(i, rendition) && now >= due).then_some(due)
            });
            if let Some(r) = load {
                self.tracks[i].playlist.busy = true;
                // A switch needs its playlist from the moment ABR chose it (now); the
                // first load from when the master arrived.
                let needed_at = if want.is_some() {
                    now
                } else {
                    self.tracks[i].playlist.idle_since
                };
                let p = Pending {
                    what: What::Playlist {
                        track: i,
                        rendition: r,
                    },
                    needed_at,
                    attempt: 0,
                };
                return Some(self.issue(p));
            }
            if let Some(due) = refresh_due {
                self.tracks[i].playlist.busy = true;
                let p = Pending {
                    what: What::Playlist {
                        track: i,
                        rendition,
                    },
                    needed_at: due,
                    attempt: 0,
                };
                return Some(self.issue(p));
            }
        }
        let t = &self.tracks[i];
        if t.seg.busy || t.seg.retry.is_some() || t.finished || t.want.is_some() {
            return None;
        }
        let ahead = t.buffered_end - self.playhead;
        if ahead > self.cfg.target_buffer + EPS {
            return None;
        }
        let needed_at = match self.phase {
            Phase::Playing => t
                .seg
                .idle_since
                .max(now - (self.cfg.target_buffer - ahead))
                .min(now),
            _ => t.seg.idle_since.min(now),
        };
        // ABR decides before each video segment.
        let mut rendition = rendition;
        if t.media == Media::Video
            && let Some(p) = &self.pres
            && p.video.len() > 1
        {
            let bws: Vec<u64> = p.video.iter().map(|r| r.bandwidth).collect();
            let seg_len = self
                .track_of(i, rendition)
                .and_then(|tr| tr.segments.first())
                .map_or(4.0, |s| s.duration);
            let pick = self.abr.choose(
                &bws,
                Some(rendition),
                self.level(),
                seg_len,
                self.phase == Phase::Playing,
            );
            if pick != rendition {
                let (from, to) = (bws[rendition], bws[pick]);
                if matches!(
                    self.rendition(i, pick).map(|x| &x.source),
                    Some(Source::Playlist(_))
                ) {
                    self.tracks[i].want = Some(pick);
                    return self.track_request(i, now);
                }
                self.tracks[i].rendition = pick;
                self.events.push_back(Event::Switched { from, to });
                rendition = pick;
            }
        }
        let track = self.track_of(i, rendition)?;
        let end = self.tracks[i].buffered_end;
        let Some(seg) = track
            .segments
            .iter()
            .find(|s| s.start + s.duration > end + EPS)
            .cloned()
        else {
            if track.ended {
                self.tracks[i].finished = true;
                self.check_play();
            }
            return None;
        };
        if let Some(init) = &seg.init
            && self.tracks[i].init.as_ref() != Some(init)
        {
            if self.fetched.contains(&key(init)) {
                self.tracks[i].init = Some(init.clone());
            } else {
                self.tracks[i].seg.busy = true;
                let p = Pending {
                    what: What::Init {
                        track: i,
                        res: init.clone(),
                    },
                    needed_at,
                    attempt: 0,
                };
                return Some(self.issue(p));
            }
        }
        if self.fetched.contains(&key(&seg.res)) {
            // Already appended (a rendition sharing segments): the buffer has it.
            self.tracks[i].buffered_end = seg.start + seg.duration;
            return self.track_request(i, now);
        }
        self.tracks[i].seg.busy = true;
        let p = Pending {
            what: What::Segment {
                track: i,
                rendition,
                seg,
                epoch: self.epoch,
            },
            needed_at,
            attempt: 0,
        };
        Some(self.issue(p))
    }

    /// Hands in the answer to request `id` at `now`.
    pub fn on_response(&mut self, id: u64, now: f64, resp: Response) {
        self.handle_timeout(now);
        let Some(pos) = self.pending.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, p) = self.pending.swap_remove(pos);
        let kind = match &p.what {
            What::Master { .. } => Kind::Master,
            What::Playlist { .. } => Kind::Playlist,
            What::Init { .. } => Kind::Init,
            What::Segment { .. } => Kind::Segment,
        };
        let slot = self.slot_mut(&p.what);
        slot.busy = false;
        slot.idle_since = now;
        match resp {
            Response::Failed {
                status,
                reason,
                retryable,
            } => {
                if retryable && p.attempt < self.cfg.max_retries {
                    let at = now + self.cfg.retry_delay;
                    let p = Pending {
                        attempt: p.attempt + 1,
                        ..p
                    };
                    let what = p.what.clone();
                    self.slot_mut(&what).retry = Some((at, p));
                } else {
                    self.fail(kind, status, reason);
                }
            }
            Response::Ok {
                final_url,
                body,
                bytes,
                sent_at,
            } => self.on_ok(p, now, final_url, body, bytes, sent_at),
        }
    }

    fn slot_mut(&mut self, what: &What) -> &mut Slot {
        match what {
            What::Master { .. } => &mut self.manifest,
            What::Playlist { track, .. } => &mut self.tracks[*track].playlist,
            What::Init { track, .. } | What::Segment { track, .. } => &mut self.tracks[*track].seg,
        }
    }

    fn on_ok(
        &mut self,
        p: Pending,
        now: f64,
        final_url: String,
        body: Option<String>,
        bytes: u64,
        sent_at: f64,
    ) {
        match p.what {
            What::Master { refresh } => {
                self.manifest_loaded_at = now;
                let text = body.unwrap_or_default();
                let parsed = if text.trim_start().starts_with("#EXTM3U") {
                    hls::parse(&text, &final_url).map(|pl| match pl {
                        hls::Playlist::Master(p) => p,
                        hls::Playlist::Media(t) => Presentation {
                            video: vec![Rendition {
                                id: file_name(&final_url),
                                bandwidth: 0,
                                source: Source::Track(t),
                            }],
                            audio: None,
                            manifest_refresh: None,
                        },
                    })
                } else {
                    dash::parse(&text, &final_url)
                };
                match parsed {
                    Ok(pres) if refresh => self.merge_mpd(pres),
                    Ok(pres) => self.start(pres, now),
                    Err(e) => self.fail(Kind::Master, None, manifest_reason(&e)),
                }
            }
            What::Playlist { track, rendition } => {
                let parsed = hls::parse(&body.unwrap_or_default(), &final_url);
                let media = match parsed {
                    Ok(hls::Playlist::Media(t)) => t,
                    Ok(hls::Playlist::Master(_)) => {
                        return self.fail(
                            Kind::Playlist,
                            None,
                            "bad_playlist: a master playlist where a media playlist belongs".into(),
                        );
                    }
                    Err(e) => return self.fail(Kind::Playlist, None, manifest_reason(&e)),
                };
                self.tracks[track].loaded_at = now;
                self.playlist_urls.insert(
                    (self.tracks[track].media == Media::Audio, rendition),
                    final_url,
                );
                let Some(r) = self.rendition_mut(track, rendition) else {
                    return;
                };
                match &mut r.source {
                    Source::Track(old) => {
                        hls::merge(old, media);
                    }
                    src @ Source::Playlist(_) => *src = Source::Track(media),
                }
                self.place_live_start(track, rendition);
                if self.tracks[track].want == Some(rendition) {
                    let from = self
                        .rendition(track, self.tracks[track].rendition)
                        .map_or(0, |r| r.bandwidth);
                    let to = self.rendition(track, rendition).map_or(0, |r| r.bandwidth);
                    self.tracks[track].want = None;
                    self.tracks[track].rendition = rendition;
                    self.events.push_back(Event::Switched { from, to });
                }
                self.check_play();
            }
            What::Init { track, res } => {
                self.fetched.insert(key(&res));
                self.tracks[track].init = Some(res);
            }
            What::Segment {
                track,
                rendition,
                seg,
                epoch,
            } => {
                self.fetched.insert(key(&seg.res));
                let t = &mut self.tracks[track];
                // Fetched before a seek: kept, but not where the buffer now grows from.
                if epoch == self.epoch {
                    t.buffered_end = t.buffered_end.max(seg.start + seg.duration);
                }
                let media = t.media;
                if media == Media::Video {
                    self.abr.sample(bytes, now - sent_at, seg.duration);
                }
                let bandwidth = self.rendition(track, rendition).map_or(0, |r| r.bandwidth);
                let late = now - p.needed_at > seg.duration;
                self.stats.segments += 1;
                if late {
                    self.stats.late += 1;
                }
                if media == Media::Video {
                    self.stats.bit_seconds += bandwidth as f64 * seg.duration;
                    self.stats.video_seconds += seg.duration;
                }
                self.events.push_back(Event::SegmentDone {
                    media,
                    late,
                    bandwidth,
                    duration: seg.duration,
                });
                self.check_play();
            }
        }
    }

    /// A live track starts `live_edge_segments` before its end; every track starts where
    /// the first one did.
    fn place_live_start(&mut self, track: usize, rendition: usize) {
        let Some(tr) = self.track_of(track, rendition) else {
            return;
        };
        if tr.ended || self.tracks[track].buffered_end > 0.0 || self.phase != Phase::Loading {
            return;
        }
        let start = match self.live_start {
            Some(s) => s,
            None => {
                let n = tr.segments.len();
                let k = n.saturating_sub(self.cfg.live_edge_segments);
                let s = tr.segments.get(k).map_or(0.0, |s| s.start);
                self.live_start = Some(s);
                self.playhead = s;
                s
            }
        };
        self.tracks[track].buffered_end = start;
    }

    fn start(&mut self, pres: Presentation, now: f64) {
        let bws: Vec<u64> = pres.video.iter().map(|r| r.bandwidth).collect();
        let first = self.abr.choose(&bws, None, 0.0, 4.0, false);
        let has_audio = pres.audio.is_some();
        self.pres = Some(pres);
        let track = |media, rendition| TrackState {
            media,
            rendition,
            want: None,
            buffered_end: 0.0,
            init: None,
            seg: Slot {
                idle_since: now,
                ..Slot::default()
            },
            playlist: Slot {
                idle_since: now,
                ..Slot::default()
            },
            loaded_at: now,
            finished: false,
        };
        self.tracks.push(track(Media::Video, first));
        if has_audio {
            self.tracks.push(track(Media::Audio, 0));
        }
        for i in 0..self.tracks.len() {
            let r = self.tracks[i].rendition;
            self.place_live_start(i, r);
        }
    }

    /// A refreshed dynamic MPD: new segments of each known representation are appended.
    fn merge_mpd(&mut self, new: Presentation) {
        let Some(old) = self.pres.as_mut() else {
            return;
        };
        let news = new.video.into_iter().chain(new.audio);
        for n in news {
            let Source::Track(nt) = n.source else {
                continue;
            };
            let target = old
                .video
                .iter_mut()
                .chain(old.audio.as_mut())
                .find(|o| o.id == n.id);
            if let Some(Rendition {
                source: Source::Track(ot),
                ..
            }) = target
            {
                hls::merge(ot, nt);
            }
        }
    }
}

fn manifest_reason(e: &ManifestError) -> String {
    format!("bad_manifest: {e}")
}

#[cfg(test)]
mod tests;
