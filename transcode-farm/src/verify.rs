//! Independent check of a finished output folder: every playlist and the MPD
//! are parsed by readers that share no code with the writers (`m3u8-rs` for
//! HLS, `quick-xml` for DASH), every URI they name is resolved inside the
//! folder, and each file must exist and be non-empty. HLS and DASH must name
//! the same media files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use m3u8_rs::MediaPlaylistType;
use serde::Serialize;

use crate::manifest::{DASH_MANIFEST, MASTER_PLAYLIST};

mod mpd;
mod uri;

pub use mpd::{MpdError, MpdRepresentation, mpd_references};

/// How many problem URIs an error lists.
const LISTED: usize = 10;

/// What [`verify_output`] checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// HLS playlists parsed, the master included.
    pub playlists: usize,
    /// DASH Representations expanded.
    pub representations: usize,
    /// Distinct media files (init and media segments) found present.
    pub media_files: usize,
    /// Their total size in bytes.
    pub media_bytes: u64,
}

/// Why an output folder failed verification.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A manifest could not be read from disk.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An HLS playlist is malformed or not what a VOD output needs.
    #[error("HLS playlist {uri}: {reason}")]
    Playlist {
        /// The playlist, relative to the output folder.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// The MPD is malformed or uses addressing this check does not follow.
    #[error("DASH manifest: {0}")]
    Mpd(#[from] MpdError),
    /// A manifest names something outside the output folder.
    #[error("{manifest} references {uri:?}, which is not a relative path inside the output folder")]
    Escapes {
        /// The manifest holding the URI.
        manifest: String,
        /// The offending URI.
        uri: String,
    },
    /// Referenced files are missing or empty.
    #[error("{count} referenced file(s) missing or empty, first: {}", first.join(", "))]
    Missing {
        /// How many.
        count: usize,
        /// The first few, relative to the output folder.
        first: Vec<String>,
    },
    /// HLS and DASH do not reference the same media files.
    #[error("HLS and DASH reference different files; only in HLS: [{}], only in DASH: [{}]", only_hls.join(", "), only_dash.join(", "))]
    Mismatch {
        /// The first files only the HLS playlists name.
        only_hls: Vec<String>,
        /// The first files only the MPD names.
        only_dash: Vec<String>,
    },
}

/// Where [`verify_files`] reads an output from: a folder, or a listing of objects.
trait Files {
    /// The bytes of manifest `rel`; [`VerifyError::Missing`] when absent.
    fn read(&self, rel: &str) -> Result<Vec<u8>, VerifyError>;
    /// The size of `rel`, `None` when absent.
    fn size(&self, rel: &str) -> Result<Option<u64>, VerifyError>;
}

/// An output folder on disk.
struct Dir {
    root: PathBuf,
}

impl Files for Dir {
    fn read(&self, rel: &str) -> Result<Vec<u8>, VerifyError> {
        read(&self.root, rel)
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, VerifyError> {
        file_size(&self.root, rel)
    }
}

/// An output known by its manifests' text and the sizes of its media objects, as the farm
/// has it before publishing to object storage.
struct Listing<'a> {
    manifests: &'a BTreeMap<String, String>,
    media: &'a BTreeMap<String, u64>,
}

impl Files for Listing<'_> {
    fn read(&self, rel: &str) -> Result<Vec<u8>, VerifyError> {
        self.manifests
            .get(rel)
            .map(|m| m.as_bytes().to_vec())
            .ok_or_else(|| VerifyError::Missing {
                count: 1,
                first: vec![rel.to_owned()],
            })
    }

    fn size(&self, rel: &str) -> Result<Option<u64>, VerifyError> {
        Ok(self.media.get(rel).copied())
    }
}

/// Checks that `out_dir` holds a complete, self-consistent HLS + DASH output.
pub fn verify_output(out_dir: &Path) -> Result<VerifyReport, VerifyError> {
    let root = fs::canonicalize(out_dir).map_err(|source| VerifyError::Read {
        path: out_dir.to_path_buf(),
        source,
    })?;
    verify_files(&Dir { root })
}

/// [`verify_output`] of an output held as `manifests` (path relative to the output root
/// and text) and `media` (path and size of every init and media segment), with the same
/// independent parsers and the same rules.
pub fn verify_listing(
    manifests: &BTreeMap<String, String>,
    media: &BTreeMap<String, u64>,
) -> Result<VerifyReport, VerifyError> {
    verify_files(&Listing { manifests, media })
}

fn verify_files(files: &dyn Files) -> Result<VerifyReport, VerifyError> {
    let (playlists, hls_files) = hls_references(files)?;

    let xml = String::from_utf8(files.read(DASH_MANIFEST)?).map_err(|e| VerifyError::Read {
        path: PathBuf::from(DASH_MANIFEST),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    let reps = mpd_references(&xml)?;
    let mut dash_files = BTreeSet::new();
    for rep in &reps {
        for u in rep.init.iter().chain(&rep.media) {
            dash_files.insert(resolve_in(DASH_MANIFEST, "", u)?);
        }
    }

    let mut missing = Vec::new();
    let mut media_bytes = 0u64;
    for rel in hls_files.union(&dash_files) {
        match files.size(rel)? {
            Some(len) if len > 0 => media_bytes = media_bytes.saturating_add(len),
            _ => missing.push(rel.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(VerifyError::Missing {
            count: missing.len(),
            first: missing.into_iter().take(LISTED).collect(),
        });
    }
    if hls_files != dash_files {
        return Err(VerifyError::Mismatch {
            only_hls: hls_files
                .difference(&dash_files)
                .take(LISTED)
                .cloned()
                .collect(),
            only_dash: dash_files
                .difference(&hls_files)
                .take(LISTED)
                .cloned()
                .collect(),
        });
    }
    Ok(VerifyReport {
        playlists,
        representations: reps.len(),
        media_files: hls_files.len(),
        media_bytes,
    })
}

/// Parses the master and every media playlist; returns how many playlists
/// were read and the media files they name.
fn hls_references(src: &dyn Files) -> Result<(usize, BTreeSet<String>), VerifyError> {
    let master_bytes = src.read(MASTER_PLAYLIST)?;
    let master =
        m3u8_rs::parse_master_playlist_res(&master_bytes).map_err(|_| VerifyError::Playlist {
            uri: MASTER_PLAYLIST.to_owned(),
            reason: "not a valid master playlist".to_owned(),
        })?;
    if master.variants.is_empty() {
        return Err(VerifyError::Playlist {
            uri: MASTER_PLAYLIST.to_owned(),
            reason: "no variant streams".to_owned(),
        });
    }
    let media_uris = master
        .variants
        .iter()
        .map(|v| v.uri.as_str())
        .chain(master.alternatives.iter().filter_map(|a| a.uri.as_deref()));
    let mut playlists = BTreeSet::new();
    for u in media_uris {
        playlists.insert(resolve_in(MASTER_PLAYLIST, "", u)?);
    }

    let mut files = BTreeSet::new();
    for rel in &playlists {
        let bytes = src.read(rel)?;
        let bad = |reason: &str| VerifyError::Playlist {
            uri: rel.clone(),
            reason: reason.to_owned(),
        };
        let media = m3u8_rs::parse_media_playlist_res(&bytes)
            .map_err(|_| bad("not a valid media playlist"))?;
        if !media.end_list {
            return Err(bad("no #EXT-X-ENDLIST"));
        }
        if media.playlist_type != Some(MediaPlaylistType::Vod) {
            return Err(bad("playlist type is not VOD"));
        }
        if media.segments.is_empty() {
            return Err(bad("no segments"));
        }
        if media.segments.first().is_none_or(|s| s.map.is_none()) {
            return Err(bad("no #EXT-X-MAP before the first segment"));
        }
        let dir = uri::parent(rel);
        for seg in &media.segments {
            if let Some(map) = &seg.map {
                files.insert(resolve_in(rel, dir, &map.uri)?);
            }
            files.insert(resolve_in(rel, dir, &seg.uri)?);
        }
    }
    Ok((playlists.len() + 1, files))
}

fn resolve_in(manifest: &str, dir: &str, u: &str) -> Result<String, VerifyError> {
    uri::resolve(dir, u).map_err(|_| VerifyError::Escapes {
        manifest: manifest.to_owned(),
        uri: u.to_owned(),
    })
}

fn read(root: &Path, rel: &str) -> Result<Vec<u8>, VerifyError> {
    let path = root.join(rel);
    if file_size(root, rel)?.is_none() {
        return Err(VerifyError::Missing {
            count: 1,
            first: vec![rel.to_owned()],
        });
    }
    fs::read(&path).map_err(|source| VerifyError::Read { path, source })
}

/// Size of regular file `rel` under `root`, `None` when absent. A symlink
/// leading outside `root` counts as an escape.
fn file_size(root: &Path, rel: &str) -> Result<Option<u64>, VerifyError> {
    let path = root.join(rel);
    let Ok(real) = fs::canonicalize(&path) else {
        return Ok(None);
    };
    if !real.starts_with(root) {
        // The symlink `rel` points outside the folder.
        return Err(VerifyError::Escapes {
            manifest: rel.to_owned(),
            uri: real.display().to_string(),
        });
    }
    match fs::metadata(&real) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
