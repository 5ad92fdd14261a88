//! `[edge.cors]`: which browser origins may read responses.

use std::time::Duration;

use super::reader::{self, Errors, Fields};

/// Which browser origins may read responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Allowed `Origin` values; `"*"` allows any. Empty turns CORS off.
    pub allow_origins: Vec<String>,
    /// `Access-Control-Max-Age` of preflight answers.
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    /// Reads `[edge.cors]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut c = e.table(errs, "cors");
        let d = Self::default();
        let cors = Self {
            allow_origins: c.get(errs, "allow_origins", d.allow_origins, strings),
            max_age: c.get(errs, "max_age", d.max_age, duration),
        };
        c.finish(errs);
        cors
    }
}
