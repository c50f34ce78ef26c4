//! The outbox file: the outbound queue persisted so queued publishes survive a restart of the
//! client process (CONTRACT §8). Each save writes a temporary file beside the target, syncs
//! it and renames it over the target, so a crash leaves either the old or the new queue,
//! never a torn one.
use std::io::Write;
use std::path::{Path, PathBuf};

use resilience::queue::{OutboundQueue, QueueConfig};

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
        source: resilience::queue::RestoreError,
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

    /// The saved queue, or an empty one when the file does not exist.
    pub fn load(&self, config: QueueConfig) -> Result<OutboundQueue, OutboxError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                OutboundQueue::from_json(config, &text).map_err(|source| OutboxError::Corrupt {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Ok(OutboundQueue::new(config))
            }
            Err(source) => Err(OutboxError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Saves `queue` atomically: temp file, fsync, rename.
    pub fn save(&self, queue: &OutboundQueue) -> Result<(), OutboxError> {
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
        file.write_all(queue.to_json().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Publish, Timestamp};

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path().join("sub").join("outbox.json"));
        let mut queue = outbox.load(QueueConfig::default()).unwrap();
        assert!(queue.is_empty());
        queue
            .push(
                Timestamp::from_unix_millis(1),
                Publish {
                    id: "m1".into(),
                    channel: "room:1".into(),
                    data: serde_json::json!({"n": 1}),
                },
            )
            .unwrap();
        outbox.save(&queue).unwrap();
        let restored = outbox.load(QueueConfig::default()).unwrap();
        assert_eq!(restored.entries().next().unwrap().id, "m1");
        assert!(!dir.path().join("sub").join("outbox.json.tmp").exists());
        std::fs::write(outbox.path(), "not json").unwrap();
        assert!(matches!(
            outbox.load(QueueConfig::default()),
            Err(OutboxError::Corrupt { .. })
        ));
    }
}
