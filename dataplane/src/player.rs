//! The player page's libraries, served by the edge itself: hls.js and dash.js as npm
//! installs them (`scripts/setup-player.sh`), read once at start from
//! `[edge.player] libraries`. The page (`player.html`) loads them from this edge only, and
//! its Content-Security-Policy lets it load nothing from anywhere else.

use std::path::{Path, PathBuf};

use bytes::Bytes;

/// One of the two libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    /// hls.js, at `/player/hls.min.js`.
    Hls,
    /// dash.js, at `/player/dash.all.min.js`.
    Dash,
}

/// The two libraries' bytes.
#[derive(Debug, Clone)]
pub struct Libraries {
    hls: Bytes,
    dash: Bytes,
}

/// Where npm puts each build under the directory: hls.js 1.x; dash.js 5 (`modern/umd`),
/// then dash.js 4.
fn candidates(dir: &Path, lib: Lib) -> Vec<PathBuf> {
    let m = dir.join("node_modules");
    match lib {
        Lib::Hls => vec![m.join("hls.js/dist/hls.min.js")],
        Lib::Dash => vec![
            m.join("dashjs/dist/modern/umd/dash.all.min.js"),
            m.join("dashjs/dist/dash.all.min.js"),
        ],
    }
}

impl Libraries {
    /// Reads both from `dir` (holding `node_modules/hls.js` and `node_modules/dashjs`); the
    /// error names what is missing and how to install it.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let read = |lib: Lib| -> Result<Bytes, String> {
            let paths = candidates(dir, lib);
            for p in &paths {
                if let Ok(b) = std::fs::read(p) {
                    return Ok(Bytes::from(b));
                }
            }
            Err(format!(
                "edge.player.libraries {}: no {} (looked for {}); ./scripts/setup-player.sh installs hls.js and dash.js there",
                dir.display(),
                match lib {
                    Lib::Hls => "hls.js",
                    Lib::Dash => "dash.js",
                },
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        };
        Ok(Self {
            hls: read(Lib::Hls)?,
            dash: read(Lib::Dash)?,
        })
    }

    /// The bytes of `lib`.
    pub fn get(&self, lib: Lib) -> &Bytes {
        match lib {
            Lib::Hls => &self.hls,
            Lib::Dash => &self.dash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_load_from_an_npm_tree_or_say_how_to_install_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = Libraries::load(dir.path()).unwrap_err();
        assert!(
            e.contains("no hls.js") && e.contains("setup-player.sh"),
            "{e}"
        );
        let m = dir.path().join("node_modules");
        std::fs::create_dir_all(m.join("hls.js/dist")).unwrap();
        std::fs::write(m.join("hls.js/dist/hls.min.js"), "hls").unwrap();
        let e = Libraries::load(dir.path()).unwrap_err();
        assert!(e.contains("no dash.js") && e.contains("modern/umd"), "{e}");
        // dash.js 4 keeps its build in dist/.
        std::fs::create_dir_all(m.join("dashjs/dist")).unwrap();
        std::fs::write(m.join("dashjs/dist/dash.all.min.js"), "dash4").unwrap();
        let l = Libraries::load(dir.path()).unwrap();
        assert_eq!(
            (&l.get(Lib::Hls)[..], &l.get(Lib::Dash)[..]),
            (&b"hls"[..], &b"dash4"[..])
        );
        // dash.js 5 (dist/modern/umd) first.
        std::fs::create_dir_all(m.join("dashjs/dist/modern/umd")).unwrap();
        std::fs::write(m.join("dashjs/dist/modern/umd/dash.all.min.js"), "dash5").unwrap();
        assert_eq!(
            &Libraries::load(dir.path()).unwrap().get(Lib::Dash)[..],
            b"dash5"
        );
    }
}
