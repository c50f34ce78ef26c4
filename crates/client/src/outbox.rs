//! The outbox file: the session's outbound queue (and subscription positions) persisted so
//! queued publishes survive a restart of the client process (CONTRACT §8). Each save writes a
//! temporary file beside the target, syncs it and renames it over the target, so a crash
//! leaves either the old or the new state, never a torn one.
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Reading or writing the file failed.
    #[error("outbox {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a saved queue.
    #[error("outbox {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: resilience::session::RestoreError,
    },
}

/// An outbox file.
#[derive(Debug, Clone)]
pub struct Outbox {
    path: PathBuf,
}

impl Outbox {
    /// The outbox at `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved text, or `None` when the file does not exist.
    pub fn load(&self) -> Result<Option<String>, OutboxError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(OutboxError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// A corrupt-file error for this outbox.
    pub(crate) fn corrupt(&self, source: resilience::session::RestoreError) -> OutboxError {
        OutboxError::Corrupt {
            path: self.path.clone(),
            source,
        }
    }

    /// Saves `state` (from `Session::persist`) atomically: temp file, fsync, rename.
    pub fn save(&self, state: &str) -> Result<(), OutboxError> {
        let io = |source| OutboxError::Io {
            path: self.path.clone(),
            source,
        };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(state.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Timestamp;
    use resilience::{Config, Instant, Session};

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path().join("sub").join("outbox.json"));
        assert_eq!(outbox.load().unwrap(), None);
        let now = Instant::now();
        let wall = Timestamp::from_unix_millis(1);
        let mut session = Session::new(Config::new(1), now, wall);
        session
            .publish(now, "m1", "room:1", serde_json::json!({"n": 1}))
            .unwrap();
        outbox.save(&session.persist()).unwrap();
        let saved = outbox.load().unwrap().unwrap();
        let restored = Session::restore(Config::new(1), now, wall, &saved).unwrap();
        assert_eq!(restored.queue().entries().next().unwrap().id, "m1");
        assert!(!dir.path().join("sub").join("outbox.json.tmp").exists());
        std::fs::write(outbox.path(), "not json").unwrap();
        let text = outbox.load().unwrap().unwrap();
        assert!(Session::restore(Config::new(1), now, wall, &text).is_err());
    }
}
