//! `[edge.player]`: where the player page's libraries (hls.js, dash.js) come from.

use std::path::PathBuf;

use super::reader::{self, Errors, Fields};

/// The player page's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlayerConfig {
    /// A directory holding `node_modules/hls.js` and `node_modules/dashjs` as npm installs
    /// them (`scripts/setup-player.sh`). The edge reads the two minified builds at start
    /// and serves them itself; without it, `/player` says the libraries are missing. The
    /// page never loads anything from another host.
    pub libraries: Option<PathBuf>,
}

impl PlayerConfig {
    /// Reads `[edge.player]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        let mut k = e.table(errs, "player");
        let cfg = Self {
            libraries: k.opt(errs, "libraries", reader::path),
        };
        k.finish(errs);
        cfg
    }
}
