//! The problem collector every per-topic loader writes into, and the small parsers they share.
//!
//! A topic loader (`config/<topic>.rs`) takes `&mut Check` and the [`Settings`](crate::cli::Settings),
//! parses its settings with a default for each, and records every bad one with
//! [`Check::error`] (or a questionable one with [`Check::warn`]) instead of returning early, so
//! `tether check-env` and a refused `serve` list *all* problems at once.

use std::fmt;
use std::time::Duration;

use super::ConfigProblem;

/// Collects problems while parsing.
#[derive(Debug, Default)]
pub(crate) struct Check {
    pub(super) errors: Vec<ConfigProblem>,
    pub(super) warnings: Vec<ConfigProblem>,
}

impl Check {
    /// A setting is wrong: `load` fails, naming it.
    pub(crate) fn error(&mut self, setting: &str, message: impl Into<String>) {
        self.errors.push(ConfigProblem {
            setting: setting.to_owned(),
            message: message.into(),
        });
    }

    /// A setting is allowed but questionable: logged as `config_warning` at startup.
    pub(crate) fn warn(&mut self, setting: &str, message: impl Into<String>) {
        self.warnings.push(ConfigProblem {
            setting: setting.to_owned(),
            message: message.into(),
        });
    }

    /// Parses a number with a default and a minimum.
    pub(crate) fn num<T>(&mut self, setting: &str, raw: Option<&String>, default: T, min: T) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = given(raw) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(v) if v >= min => v,
            Ok(_) => {
                self.error(setting, format!("{raw:?} is below the minimum {min}"));
                default
            }
            Err(_) => {
                self.error(setting, format!("not a number: {raw:?}"));
                default
            }
        }
    }

    /// A number of milliseconds, with a default and a minimum.
    pub(crate) fn millis(
        &mut self,
        setting: &str,
        raw: Option<&String>,
        default: u64,
        min: u64,
    ) -> Duration {
        Duration::from_millis(self.num(setting, raw, default, min))
    }

    /// A number of seconds, with a default and a minimum.
    pub(crate) fn secs(
        &mut self,
        setting: &str,
        raw: Option<&String>,
        default: u64,
        min: u64,
    ) -> Duration {
        Duration::from_secs(self.num(setting, raw, default, min))
    }

    /// One of a few words, case-insensitive; `None` (unset) is the first choice.
    pub(crate) fn choice<T: Copy>(
        &mut self,
        setting: &str,
        raw: Option<&String>,
        what: &str,
        choices: &[(&str, T)],
    ) -> T {
        let first = choices[0].1; // every caller passes at least one choice (its default)
        let Some(v) = given(raw) else {
            return first;
        };
        if let Some((_, t)) = choices.iter().find(|(w, _)| v.eq_ignore_ascii_case(w)) {
            return *t;
        }
        let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
        let (last, rest) = words.split_last().unwrap_or((&"", &[]));
        let list = if rest.is_empty() {
            (*last).to_owned()
        } else {
            format!("{} or {last}", rest.join(", "))
        };
        self.error(setting, format!("unknown {what} {v:?} (use {list})"));
        first
    }
}

/// A setting's raw value, trimmed; empty counts as unset.
pub(crate) fn given(raw: Option<&String>) -> Option<&str> {
    raw.map(|s| s.trim()).filter(|s| !s.is_empty())
}
