//! A snapshot of environment variables, and the typo check on unknown `TETHER_*` names.

use std::collections::BTreeMap;

use super::{Check, SECRET_ENV};
use crate::cli::Settings;

/// A snapshot of environment variables (the process's, or a test's).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The process environment (non-UTF-8 values are skipped).
    #[must_use]
    pub fn process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// A given set of variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// One variable; empty counts as unset.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A `TETHER_*` variable close to a setting's name is probably a typo: warn, do not fail.
/// Others (the tools' own `TETHER_BIN`, `TETHER_TOKEN`, …) are none of the server's business.
pub(super) fn warn_unknown(c: &mut Check, env: &Env) {
    let mut known = Settings::env_names();
    known.push(SECRET_ENV.to_owned());
    known.push(super::observability::METRICS_TOKEN_ENV.to_owned());
    for name in env.vars.keys().filter(|k| k.starts_with("TETHER_")) {
        if known.iter().any(|k| k == name) {
            continue;
        }
        if let Some(close) = known
            .iter()
            .map(|k| (edit_distance(k, name), k))
            .filter(|(d, _)| *d <= 2)
            .min()
        {
            c.warn(
                name,
                format!("unknown setting, ignored (did you mean {}?)", close.1),
            );
        }
    }
}

/// Levenshtein distance (ASCII names). Hand-written: ten lines do not justify a dependency.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<u8> = b.bytes().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
