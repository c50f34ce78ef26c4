//! Where supervision events go: CONTRACT §7 JSON lines on stdout, in a file, and to subscribers.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use protocol::{LogEntry, LogLevel, Timestamp};
use serde_json::Value;
use tokio::sync::broadcast;

/// Where supervision events go, as CONTRACT §7 JSON lines: stdout (the developer's terminal),
/// optionally a file, and every [`EventLog::subscribe`]r (tests wait on these).
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<EventLogInner>,
}

struct EventLogInner {
    /// The least severe level printed to stdout; `None` prints nothing. Changed at run time:
    /// `dev` shows only warnings while its steps print, and everything once the stack is up.
    stdout: Mutex<Option<LogLevel>>,
    /// Appended to, one line per event; a mutex because events come from several tasks.
    file: Mutex<Option<File>>,
    /// Fan-out to subscribers; lagging subscribers lose old events rather than slow us down.
    tx: broadcast::Sender<LogEntry>,
}

impl EventLog {
    /// A log printing events of `stdout` level and above, and appending all to `file`.
    pub fn new(stdout: Option<LogLevel>, file: Option<&Path>) -> Result<Self> {
        let file = match file {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                Some(
                    File::options()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )
            }
            None => None,
        };
        let (tx, _) = broadcast::channel(1024);
        Ok(EventLog {
            inner: Arc::new(EventLogInner {
                stdout: Mutex::new(stdout),
                file: Mutex::new(file),
                tx,
            }),
        })
    }

    /// A log that only feeds subscribers (for tests).
    #[cfg(test)]
    pub fn silent() -> Self {
        let (tx, _) = broadcast::channel(1024);
        EventLog {
            inner: Arc::new(EventLogInner {
                stdout: Mutex::new(None),
                file: Mutex::new(None),
                tx,
            }),
        }
    }

    /// From now on, print events of `level` and above to stdout (`None`: none).
    pub fn set_stdout_level(&self, level: Option<LogLevel>) {
        *self
            .inner
            .stdout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = level;
    }

    /// Every event emitted from now on.
    #[cfg(test)]
    pub fn subscribe(&self) -> broadcast::Receiver<LogEntry> {
        self.inner.tx.subscribe()
    }

    /// Writes one event. `data` should be a JSON object; anything else lands in
    /// `data.message`.
    pub fn emit(&self, level: LogLevel, component: &str, event: &str, data: Value) {
        let data = match data {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => {
                let mut map = serde_json::Map::new();
                map.insert("message".to_owned(), other);
                map
            }
        };
        let entry = LogEntry {
            timestamp: now(),
            level,
            component: component.to_owned(),
            event: event.to_owned(),
            data,
            connection_id: None,
        };
        if let Ok(line) = serde_json::to_string(&entry) {
            let shown = *self
                .inner
                .stdout
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if shown.is_some_and(|min| level >= min) {
                println!("{line}");
            }
            let mut file = self
                .inner
                .file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(file) = file.as_mut() {
                // A full disk must not take the supervisor down; the line is also on stdout.
                let _ = writeln!(file, "{line}");
            }
        }
        // No subscriber is fine: the send only fails when nobody listens.
        let _ = self.inner.tx.send(entry);
    }
}

/// The wall clock as a CONTRACT timestamp.
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(ms)
}
