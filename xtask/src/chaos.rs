//! `cargo xtask chaos`: the connection-recovery drill of CONTRACT §9.
//!
//! Builds and starts the real `tether` on a temporary database, then kills it with SIGKILL
//! and SIGTERM by pid several times, restarting it on the same database and port each time.

mod server;

use std::time::Duration;

use anyhow::{Context, Result};

use server::{Kill, Server};

/// Arguments of `cargo xtask chaos`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// How long the drill runs, seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Server kills over the drill (alternating SIGKILL and SIGTERM).
    #[arg(long, default_value_t = 6)]
    pub kills: u32,
    /// Seed of the drill's randomness (kill times, fault choices); printed so a run can be repeated.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Server port (0: a free ephemeral one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The short version run by `cargo xtask test`: few clients, 2 kills, well under a minute.
    #[arg(long)]
    pub smoke: bool,
}

/// Runs the drill.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(drill(args))
}

/// The chaos step of `cargo xtask test`: the short drill.
pub fn test_step() -> Result<()> {
    run(Args {
        clients: 6,
        duration: 15,
        kills: 2,
        seed: None,
        port: 0,
        smoke: true,
    })
}

async fn drill(args: Args) -> Result<()> {
    let bin = server::build()?;
    let dir = std::env::temp_dir().join(format!("tether-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut server = Server::new(&bin, &dir, args.port, 2_000)?;
    let took = server.start().await?;
    println!("chaos: tether on {} ready in {took:?}", server.addr());
    for n in 0..args.kills {
        let kill = if n % 2 == 0 {
            Kill::Hard
        } else {
            Kill::Graceful
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = server.kill(kill).await?;
        let took = server.start().await?;
        println!(
            "chaos: {} #{} ({status}); back in {took:?}",
            kill.name(),
            n + 1
        );
    }
    Ok(())
}
