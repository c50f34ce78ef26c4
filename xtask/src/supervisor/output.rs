//! A supervised child's output: appended to its log file, the last lines kept in memory for
//! "the server's last log lines", optionally echoed to the terminal.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How many of a child's output lines are kept in memory.
const TAIL_LINES: usize = 200;

/// A child's output: appended to a file, the last lines kept, optionally echoed.
pub(super) struct Output {
    file: Mutex<Option<File>>,
    tail: Mutex<VecDeque<String>>,
    /// Whether lines are printed too; switched on once the stack is up.
    pub(super) echo: AtomicBool,
}

impl Output {
    pub(super) fn new(path: Option<&Path>) -> Self {
        let file = path.and_then(|path| {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir); // The open below reports the failure.
            }
            File::options().create(true).append(true).open(path).ok()
        });
        Output {
            file: Mutex::new(file),
            tail: Mutex::new(VecDeque::with_capacity(TAIL_LINES)),
            echo: AtomicBool::new(false),
        }
    }

    fn push(&self, line: String) {
        if self.echo.load(Ordering::Relaxed) {
            println!("{line}");
        }
        if let Some(file) = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            let _ = writeln!(file, "{line}"); // A full disk must not stop the pump.
        }
        let mut tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    pub(super) fn last_lines(&self, n: usize) -> Vec<String> {
        let tail = self
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tail.iter()
            .skip(tail.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// Copies lines from a child's pipe into its [`Output`] until the pipe closes.
pub(super) async fn pump(pipe: impl AsyncRead + Unpin, output: Arc<Output>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        output.push(line);
    }
}
