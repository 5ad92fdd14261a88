use proptest::prelude::*;

use super::*;

fn mk_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&u32::try_from(body.len() + 8).unwrap().to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn full(version: u8, flags: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
    out.extend_from_slice(rest);
    out
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn avc1_entry(width: u16, height: u16) -> Vec<u8> {
    let mut body = vec![0u8; 24];
    body.extend_from_slice(&width.to_be_bytes());
    body.extend_from_slice(&height.to_be_bytes());
    body.extend_from_slice(&[0u8; 50]);
    body.extend(mk_box(b"avcC", &[1, 0x64, 0x00, 0x1f, 0xff, 0xe1]));
    mk_box(b"avc1", &body)
}

fn mp4a_entry(channels: u16, rate: u32, aot: u8) -> Vec<u8> {
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // version, revision, vendor
    body.extend_from_slice(&channels.to_be_bytes());
    body.extend_from_slice(&[0, 16, 0, 0, 0, 0]);
    body.extend_from_slice(&(rate << 16).to_be_bytes());
    let asc = [aot << 3, 0x10];
    let mut dsi = vec![0x05, asc.len() as u8];
    dsi.extend_from_slice(&asc);
    let mut dcd_body = vec![0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    dcd_body.extend(dsi);
    // A multi-byte (0x80-continued) length, as ffmpeg does not write but others do.
    let mut dcd = vec![0x04, 0x80, 0x80, 0x80, dcd_body.len() as u8];
    dcd.extend(dcd_body);
    let mut es_body = vec![0, 1, 0];
    es_body.extend(dcd);
    es_body.extend_from_slice(&[0x06, 0x01, 0x02]);
    let mut es = vec![0x03, es_body.len() as u8];
    es.extend(es_body);
    body.extend(mk_box(b"esds", &full(0, 0, &es)));
    mk_box(b"mp4a", &body)
}

fn init_segment(handler: &[u8; 4], entry: Vec<u8>, timescale: u32, trex_duration: u32) -> Vec<u8> {
    init_with_tracks(handler, entry, timescale, trex_duration, 1)
}

fn init_with_tracks(
    handler: &[u8; 4],
    entry: Vec<u8>,
    timescale: u32,
    trex_duration: u32,
    tracks: usize,
) -> Vec<u8> {
    let tkhd = mk_box(
        b"tkhd",
        &full(0, 3, &cat(&[vec![0; 8], be32(1).to_vec(), vec![0; 68]])),
    );
    let mdhd = mk_box(
        b"mdhd",
        &full(
            0,
            0,
            &cat(&[vec![0; 8], be32(timescale).to_vec(), vec![0; 8]]),
        ),
    );
    let hdlr = mk_box(
        b"hdlr",
        &full(0, 0, &cat(&[vec![0; 4], handler.to_vec(), vec![0; 13]])),
    );
    let stsd = mk_box(b"stsd", &full(0, 0, &cat(&[be32(1).to_vec(), entry])));
    let stbl = mk_box(b"stbl", &stsd);
    let minf = mk_box(b"minf", &stbl);
    let mdia = mk_box(b"mdia", &cat(&[mdhd, hdlr, minf]));
    let trak = mk_box(b"trak", &cat(&[tkhd, mdia]));
    let trex = mk_box(
        b"trex",
        &full(
            0,
            0,
            &cat(&[
                be32(1).to_vec(),
                be32(1).to_vec(),
                be32(trex_duration).to_vec(),
                vec![0; 4],
                be32(0x0101_0000).to_vec(),
            ]),
        ),
    );
    let mvex = mk_box(b"mvex", &trex);
    let mut moov_body = mk_box(b"mvhd", &[0; 100]);
    for _ in 0..tracks {
        moov_body.extend_from_slice(&trak);
    }
    moov_body.extend(mvex);
    let moov = mk_box(b"moov", &moov_body);
    cat(&[mk_box(b"ftyp", b"iso5\0\0\0\x01iso6mp41"), moov])
}

fn video_init() -> Vec<u8> {
    init_segment(b"vide", avc1_entry(1280, 720), 15360, 0)
}

/// A fragment whose trun carries explicit per-sample durations and sizes.
fn fragment(tfdt: u64, durations: &[u32], first_flags: Option<u32>) -> Vec<u8> {
    let tfhd = mk_box(b"tfhd", &full(0, 0x02_0000, &be32(1)));
    let tfdt = mk_box(b"tfdt", &full(1, 0, &tfdt.to_be_bytes()));
    let mut flags = 0x001 | 0x100 | 0x200;
    let mut run = be32(durations.len() as u32).to_vec();
    run.extend_from_slice(&be32(0));
    if let Some(f) = first_flags {
        flags |= 0x004;
        run.extend_from_slice(&be32(f));
    }
    for d in durations {
        run.extend_from_slice(&be32(*d));
        run.extend_from_slice(&be32(10));
    }
    let trun = mk_box(b"trun", &full(0, flags, &run));
    let traf = mk_box(b"traf", &cat(&[tfhd, tfdt, trun]));
    let moof = mk_box(
        b"moof",
        &cat(&[mk_box(b"mfhd", &full(0, 0, &be32(1))), traf]),
    );
    let mdat = mk_box(b"mdat", &vec![0u8; durations.len() * 10]);
    cat(&[moof, mdat])
}

#[test]
fn reads_video_init() {
    let init = parse_init(&video_init()).unwrap();
    assert_eq!(init.track_id, 1);
    assert_eq!(init.timescale, 15360);
    assert_eq!(init.codecs, "avc1.64001f");
    assert_eq!(
        init.media,
        TrackMedia::Video {
            width: 1280,
            height: 720
        }
    );
}

#[test]
fn reads_audio_init() {
    let init = parse_init(&init_segment(b"soun", mp4a_entry(2, 48000, 2), 48000, 1024)).unwrap();
    assert_eq!(init.codecs, "mp4a.40.2");
    assert_eq!(
        init.media,
        TrackMedia::Audio {
            channels: 2,
            sample_rate: 48000
        }
    );
    assert_eq!(init.default_sample_duration, 1024);
    let he = parse_init(&init_segment(b"soun", mp4a_entry(2, 48000, 5), 48000, 1024)).unwrap();
    assert_eq!(he.codecs, "mp4a.40.5");
}

#[test]
fn rejects_two_tracks_and_unknown_entries() {
    let two = init_with_tracks(b"vide", avc1_entry(64, 64), 90000, 0, 2);
    assert_eq!(parse_init(&two), Err(CmafError::TrackCount(2)));
    let mut data = video_init();
    let hev = init_segment(b"vide", mk_box(b"hvc1", &[0; 80]), 90000, 0);
    assert!(matches!(
        parse_init(&hev),
        Err(CmafError::UnsupportedSampleEntry(_))
    ));
    let text = init_segment(b"text", mk_box(b"tx3g", &[0; 40]), 1000, 0);
    assert!(matches!(
        parse_init(&text),
        Err(CmafError::UnsupportedHandler(_))
    ));
    data.truncate(data.len() - 3);
    assert!(parse_init(&data).is_err());
    assert_eq!(parse_init(b""), Err(CmafError::Missing("moov")));
}

#[test]
fn sums_explicit_sample_durations() {
    let init = parse_init(&video_init()).unwrap();
    let seg = cat(&[
        mk_box(b"styp", b"msdh\0\0\0\0msdhmsix"),
        fragment(49152, &[512; 96], Some(0x0200_0000)),
    ]);
    let m = parse_segment(&seg, &init).unwrap();
    assert_eq!(m.base_media_decode_time, 49152);
    assert_eq!(m.duration, 512 * 96);
    assert_eq!(m.sample_count, 96);
    assert!(m.starts_with_sync_sample);
    assert_eq!(m.size, seg.len() as u64);
}

#[test]
fn sums_several_fragments_and_spots_non_sync_start() {
    let init = parse_init(&video_init()).unwrap();
    let seg = cat(&[
        fragment(0, &[500, 524], Some(0x0101_0000)),
        fragment(1024, &[512], None),
    ]);
    let m = parse_segment(&seg, &init).unwrap();
    assert_eq!(m.base_media_decode_time, 0);
    assert_eq!(m.duration, 1536);
    assert_eq!(m.sample_count, 3);
    assert!(!m.starts_with_sync_sample);
}

#[test]
fn falls_back_to_tfhd_then_trex_defaults() {
    let init = parse_init(&init_segment(b"soun", mp4a_entry(2, 48000, 2), 48000, 1024)).unwrap();
    // trun with only a sample count: durations from trex.
    let trun = mk_box(b"trun", &full(0, 0, &be32(150)));
    let tfhd = mk_box(b"tfhd", &full(0, 0x02_0000, &be32(1)));
    let tfdt = mk_box(b"tfdt", &full(0, 0, &be32(0)));
    let traf = mk_box(b"traf", &cat(&[tfhd, tfdt, trun.clone()]));
    let seg = cat(&[mk_box(b"moof", &traf), mk_box(b"mdat", &[1])]);
    let m = parse_segment(&seg, &init).unwrap();
    assert_eq!(m.duration, 150 * 1024);
    // trex flags say "non-sync": audio built this way would not start with a sync sample.
    assert!(!m.starts_with_sync_sample);

    // tfhd default duration (flag 0x08) and default flags (0x20) override trex.
    let tfhd = mk_box(
        b"tfhd",
        &full(
            0,
            0x02_0028,
            &cat(&[be32(1).to_vec(), be32(1000).to_vec(), be32(0).to_vec()]),
        ),
    );
    let tfdt = mk_box(b"tfdt", &full(0, 0, &be32(7)));
    let traf = mk_box(b"traf", &cat(&[tfhd, tfdt, trun]));
    let seg = cat(&[mk_box(b"moof", &traf), mk_box(b"mdat", &[1])]);
    let m = parse_segment(&seg, &init).unwrap();
    assert_eq!(m.base_media_decode_time, 7);
    assert_eq!(m.duration, 150_000);
    assert!(m.starts_with_sync_sample);
}

#[test]
fn rejects_foreign_track_and_missing_boxes() {
    let init = parse_init(&video_init()).unwrap();
    let other = InitSegment {
        track_id: 2,
        ..init.clone()
    };
    let seg = fragment(0, &[512], None);
    assert_eq!(
        parse_segment(&seg, &other),
        Err(CmafError::TrackMismatch {
            expected: 2,
            found: 1
        })
    );
    assert_eq!(
        parse_segment(&mk_box(b"mdat", &[0]), &init),
        Err(CmafError::Missing("moof"))
    );
    let moof_only = &seg[..seg.len() - 18];
    assert!(parse_segment(moof_only, &init).is_err());
}

#[test]
fn huge_sample_count_is_rejected_without_looping() {
    let init = parse_init(&video_init()).unwrap();
    // Claims 4 billion samples with per-sample durations but carries none.
    let trun = mk_box(b"trun", &full(0, 0x100, &be32(u32::MAX)));
    let tfhd = mk_box(b"tfhd", &full(0, 0, &be32(1)));
    let tfdt = mk_box(b"tfdt", &full(0, 0, &be32(0)));
    let seg = cat(&[
        mk_box(b"moof", &mk_box(b"traf", &cat(&[tfhd, tfdt, trun]))),
        mk_box(b"mdat", &[]),
    ]);
    assert_eq!(
        parse_segment(&seg, &init),
        Err(CmafError::Truncated("trun"))
    );
}

#[test]
fn large_and_zero_box_sizes() {
    // size == 1: 64-bit size follows; size == 0: box runs to the end.
    let mut large = vec![0, 0, 0, 1];
    large.extend_from_slice(b"free");
    large.extend_from_slice(&20u64.to_be_bytes());
    large.extend_from_slice(&[0; 4]);
    let mut to_end = vec![0, 0, 0, 0];
    to_end.extend_from_slice(b"moov");
    let data = cat(&[large, to_end]);
    assert_eq!(parse_init(&data), Err(CmafError::TrackCount(0)));
    let bad = [0, 0, 0, 4, b'm', b'o', b'o', b'v'];
    assert!(matches!(
        parse_init(&bad),
        Err(CmafError::BadBoxSize { .. })
    ));
    let huge = [
        0, 0, 0, 1, b'm', b'o', b'o', b'v', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(parse_init(&huge).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let init = parse_init(&data);
        let fallback = parse_init(&video_init()).unwrap();
        let _ = parse_segment(&data, init.as_ref().unwrap_or(&fallback));
    }

    #[test]
    fn mutated_segments_never_panic(
        durations in proptest::collection::vec(1u32..100_000, 1..64),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let init_bytes = video_init();
        let init = parse_init(&init_bytes).unwrap();
        let mut seg = fragment(123, &durations, None);
        let clean = parse_segment(&seg, &init).unwrap();
        prop_assert_eq!(clean.duration, durations.iter().map(|&d| u64::from(d)).sum::<u64>());
        prop_assert_eq!(clean.sample_count, durations.len() as u64);
        for (at, byte) in flips {
            let i = at % seg.len();
            seg[i] = byte;
        }
        seg.truncate(cut % (seg.len() + 1));
        let _ = parse_segment(&seg, &init);
        let mut init_bytes = init_bytes;
        init_bytes.truncate(cut % (init_bytes.len() + 1));
        let _ = parse_init(&init_bytes);
    }
}
