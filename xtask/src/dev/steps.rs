//! Numbered step output for async tasks (`dev`, `recover`): each step with its outcome and
//! duration, a progress line every 10 s while one runs, and a summary table; the same shape
//! as `util::run_steps`, which runs synchronous steps.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::util::secs;

/// Prints numbered steps with outcome and duration, a progress line every 10 s while a step
/// runs, and a summary; the same shape as `util::run_steps`, for async steps.
pub struct Steps {
    task: &'static str,
    /// Every step's name in order, so the summary can list those a failure left unrun.
    names: &'static [&'static str],
    total: usize,
    next: usize,
    outcomes: Vec<(&'static str, String)>,
    started: Instant,
}

impl Steps {
    /// The steps `names` of `task`, run (or skipped) in that order.
    pub fn new(task: &'static str, names: &'static [&'static str]) -> Self {
        Steps {
            task,
            names,
            total: names.len(),
            next: 1,
            outcomes: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Runs one step.
    pub async fn run<T>(
        &mut self,
        name: &'static str,
        about: &str,
        action: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let n = self.next;
        self.next += 1;
        let total = self.total;
        println!("==> [{n}/{total}] {name}: {about}");
        let t = Instant::now();
        let ticker = async {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await; // The first tick is immediate.
            loop {
                tick.tick().await;
                println!(
                    "... [{n}/{total}] {name}: still running ({})",
                    secs(t.elapsed())
                );
            }
        };
        let result = tokio::select! {
            result = action => result,
            () = ticker => unreachable!("the ticker never ends"),
        };
        let took = secs(t.elapsed());
        match &result {
            Ok(_) => {
                println!("<== [{n}/{total}] {name}: ok in {took}");
                self.outcomes.push((name, format!("ok       {took:>8}")));
            }
            Err(err) => {
                println!("<== [{n}/{total}] {name}: FAILED after {took}");
                println!("    {err:#}");
                self.outcomes.push((name, format!("FAILED   {took:>8}")));
            }
        }
        result.with_context(|| format!("{}: step `{name}` failed", self.task))
    }

    /// Records a skipped step.
    pub fn skip(&mut self, name: &'static str, why: &str) {
        let n = self.next;
        self.next += 1;
        println!("==> [{n}/{}] {name}: skipped ({why})", self.total);
        self.outcomes.push((name, "skipped".to_owned()));
    }

    /// Prints the summary table.
    pub fn summary(&self) {
        println!();
        println!("{}: summary", self.task);
        for (name, outcome) in &self.outcomes {
            println!("  {name:<14} {outcome}");
        }
        for name in self.names.iter().skip(self.outcomes.len()) {
            println!("  {name:<14} not run");
        }
        println!("  {:<14} {:>17}", "total", secs(self.started.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use anyhow::bail;

    use super::*;

    #[tokio::test]
    async fn steps_report_failures_with_the_step_name() {
        let mut steps = Steps::new("dev", &["one", "two", "three"]);
        let ok: Result<u32> = steps.run("one", "works", async { Ok(1) }).await;
        assert_eq!(ok.expect("ok"), 1);
        let failed: Result<()> = steps.run("two", "fails", async { bail!("boom") }).await;
        let err = format!("{:#}", failed.expect_err("failed"));
        assert!(
            err.contains("step `two` failed") && err.contains("boom"),
            "{err}"
        );
    }
}
