//! HLS (RFC 8216) master and media playlists, version 7, fMP4 segments.

use std::fmt::Write as _;

use super::{AUDIO_GROUP, MEDIA_PLAYLIST, Presentation, Track, fixed_secs, fps_3};
use crate::cmaf::TrackMedia;
use crate::ffmpeg::INIT_NAME;

/// The master playlist: the audio group, then one variant per video
/// rendition, highest first. Bandwidths include the audio.
pub(crate) fn master_playlist(p: &Presentation) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    if let Some(audio) = &p.audio {
        let channels = match audio.init.media {
            TrackMedia::Audio { channels, .. } => channels,
            TrackMedia::Video { .. } => 0,
        };
        let _ = write!(out, "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",");
        if let Some(lang) = &p.audio_language {
            let _ = write!(out, "LANGUAGE=\"{lang}\",");
        }
        let _ = writeln!(
            out,
            "NAME=\"Audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"{channels}\",URI=\"{}/{MEDIA_PLAYLIST}\"",
            audio.dir
        );
    }
    let (audio_peak, audio_avg) = p
        .audio
        .as_ref()
        .map_or((0, 0), |a| (a.peak_bps(), a.average_bps()));
    for v in &p.video {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
            v.peak_bps().saturating_add(audio_peak),
            v.average_bps().saturating_add(audio_avg)
        );
        if let Some((w, h)) = v.size() {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some((num, den)) = v.frame_rate() {
            let _ = write!(out, ",FRAME-RATE={}", fps_3(num, den));
        }
        let _ = write!(out, ",CODECS=\"{}", v.init.codecs);
        if let Some(a) = &p.audio {
            let _ = write!(out, ",{}", a.init.codecs);
        }
        out.push('"');
        if p.audio.is_some() {
            let _ = write!(out, ",AUDIO=\"{AUDIO_GROUP}\"");
        }
        let _ = writeln!(out, "\n{}/{MEDIA_PLAYLIST}", v.dir);
    }
    out
}

/// A VOD media playlist of one rendition, with measured segment durations.
pub(crate) fn media_playlist(t: &Track) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", t.target_duration_secs());
    out.push_str(
        "#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
    );
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{INIT_NAME}\"");
    for (i, seg) in t.segments.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXTINF:{},\n{}",
            fixed_secs(seg.duration, t.timescale(), 6),
            Track::segment_uri(i + 1)
        );
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}
