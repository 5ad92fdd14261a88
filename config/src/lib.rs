//! Reading StreamGate's configuration: a TOML file, overridden by `STREAMGATE_*`
//! environment variables ([`apply_env`]), read field by field into typed config.
//!
//! Serde stops at the first error; operators want the whole list at once, so every
//! component reads its tables through [`Fields`], which records problems and unknown keys
//! with their field paths instead of failing. It is its own crate because every component
//! (edge, control plane, transcode farm) reads the same file this way and none owns it.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One problem in a configuration, at a field path such as `edge.cache.max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Collected errors, shared by all the [`Fields`] of one read.
#[derive(Debug, Default)]
pub struct Errors(Vec<ConfigError>);

impl Errors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.to_string(),
        });
    }

    /// `Ok(v)` if nothing was recorded, else every error.
    pub fn finish<T>(self, v: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(v)
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

/// The fields of one TOML table, read one at a time.
pub struct Fields<'v> {
    path: String,
    table: Option<&'v toml::Table>,
    seen: BTreeSet<&'static str>,
}

impl<'v> Fields<'v> {
    /// The root table of a document.
    pub fn root(table: &'v toml::Table) -> Self {
        Self {
            path: String::new(),
            table: Some(table),
            seen: BTreeSet::new(),
        }
    }

    fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn raw(&mut self, key: &'static str) -> Option<&'v toml::Value> {
        self.seen.insert(key);
        self.table.and_then(|t| t.get(key))
    }

    /// A sub-table; absent reads as empty, a non-table is an error.
    pub fn table(&mut self, errs: &mut Errors, key: &'static str) -> Self {
        let path = self.field_path(key);
        let table = match self.raw(key) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                errs.push(&path, "expected a table");
                None
            }
        };
        Fields {
            path,
            table,
            seen: BTreeSet::new(),
        }
    }

    /// The fields of `table`, reported under `path` (for a table read from a value that
    /// may also take another shape, such as `edge.gate.etcd`: a list or a table).
    pub fn nested(path: String, table: &'v toml::Table) -> Self {
        Fields {
            path,
            table: Some(table),
            seen: BTreeSet::new(),
        }
    }

    /// A table of sub-tables named by the operator (`[edge.chains."eip155:1"]`): each name
    /// with its fields. Absent reads as empty; a non-table entry is an error.
    pub fn named_tables(&mut self, errs: &mut Errors, key: &'static str) -> Vec<(String, Self)> {
        let path = self.field_path(key);
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let toml::Value::Table(t) = v else {
            errs.push(&path, "expected a table of tables");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, v) in t {
            let sub = format!("{path}.{name:?}");
            match v {
                toml::Value::Table(inner) => out.push((name.clone(), Self::nested(sub, inner))),
                _ => errs.push(sub, "expected a table"),
            }
        }
        out
    }

    /// A list of tables (`endpoints = [{ url = "..." }, ...]`). Absent reads as empty.
    pub fn table_list(&mut self, errs: &mut Errors, key: &'static str) -> Vec<Self> {
        let path = self.field_path(key);
        let Some(v) = self.raw(key) else {
            return Vec::new();
        };
        let toml::Value::Array(items) = v else {
            errs.push(&path, "expected a list of tables");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in items.iter().enumerate() {
            match v {
                toml::Value::Table(inner) => out.push(Self::nested(format!("{path}[{i}]"), inner)),
                _ => errs.push(format!("{path}[{i}]"), "expected a table"),
            }
        }
        out
    }

    /// This table's path, for messages about it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Reads `key` with `parse`, or `default` when absent. Errors are recorded and yield `default`.
    pub fn get<T>(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
        default: T,
        parse: impl FnOnce(&toml::Value) -> Result<T, String>,
    ) -> T {
        match self.opt(errs, key, parse) {
            Some(v) => v,
            None => default,
        }
    }

    /// Reads an optional `key` with `parse`.
    pub fn opt<T>(
        &mut self,
        errs: &mut Errors,
        key: &'static str,
        parse: impl FnOnce(&toml::Value) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.raw(key)?;
        match parse(v) {
            Ok(t) => Some(t),
            Err(msg) => {
                errs.push(self.field_path(key), msg);
                None
            }
        }
    }

    /// Records every key of this table that was never read.
    pub fn finish(self, errs: &mut Errors) {
        if let Some(t) = self.table {
            for k in t.keys() {
                if !self.seen.contains(k.as_str()) {
                    errs.push(self.field_path(k), "unknown field");
                }
            }
        }
    }
}

/// A string value.
pub fn string(v: &toml::Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| "expected a string".to_owned())
}

/// A path value.
pub fn path(v: &toml::Value) -> Result<PathBuf, String> {
    string(v).map(PathBuf::from)
}

/// A boolean value.
pub fn boolean(v: &toml::Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| "expected true or false".to_owned())
}

/// An integer within `lo..=hi`.
pub fn int_in(lo: u64, hi: u64) -> impl FnOnce(&toml::Value) -> Result<u64, String> {
    move |v| match v.as_integer() {
        Some(i) if i >= 0 && (lo..=hi).contains(&(i as u64)) => Ok(i as u64),
        _ => Err(format!("expected an integer from {lo} to {hi}")),
    }
}

/// A socket address such as `0.0.0.0:8080`.
pub fn socket_addr(v: &toml::Value) -> Result<SocketAddr, String> {
    let s = v
        .as_str()
        .ok_or("expected an address like \"0.0.0.0:8080\"")?;
    s.parse()
        .map_err(|_| format!("{s:?} is not an address like \"0.0.0.0:8080\""))
}

/// A duration such as `"2s"` or `"1h 30m"`.
pub fn duration(v: &toml::Value) -> Result<Duration, String> {
    let s = v.as_str().ok_or("expected a duration like \"10s\"")?;
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like \"10s\": {e}"))
}

/// A byte size such as `"512MiB"`, `"64MB"` or an integer count of bytes.
pub fn byte_size(v: &toml::Value) -> Result<u64, String> {
    if let Some(i) = v.as_integer() {
        return u64::try_from(i).map_err(|_| "expected a non-negative size".to_owned());
    }
    let s = v.as_str().ok_or("expected a size like \"512MiB\"")?;
    parse_byte_size(s).ok_or_else(|| format!("{s:?} is not a size like \"512MiB\""))
}

/// Parses `"512MiB"`, `"1.5 GB"`, `"4096"`.
pub fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    let bytes = n * mult as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A list of strings.
pub fn strings(v: &toml::Value) -> Result<Vec<String>, String> {
    let arr = v.as_array().ok_or("expected a list of strings")?;
    arr.iter()
        .map(|x| {
            x.as_str()
                .map(str::to_owned)
                .ok_or_else(|| "expected a list of strings".to_owned())
        })
        .collect()
}

/// Applies `STREAMGATE_*` overrides: `STREAMGATE_EDGE__CACHE__MAX_BYTES=1GiB` sets
/// `edge.cache.max_bytes`. Values parse as TOML when they can (numbers, booleans, lists)
/// and are strings otherwise.
pub fn apply_env(
    doc: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
    errs: &mut Errors,
) {
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("STREAMGATE_") else {
            continue;
        };
        if !rest.contains("__") {
            // Not a config path (e.g. STREAMGATE_LOG); top-level keys are all tables.
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        if let Err(d) = set_path(doc, &parts, parsed) {
            errs.push(&name, format!("{d} is not a table"));
        }
    }
}

fn set_path(t: &mut toml::Table, parts: &[String], v: toml::Value) -> Result<(), String> {
    match parts {
        [] => Ok(()),
        [last] => {
            t.insert(last.clone(), v);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = t
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(sub) => set_path(sub, rest, v),
                _ => Err(first.clone()),
            }
        }
    }
}
