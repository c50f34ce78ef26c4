//! The real-browser harness: Debian's Chromium driven through chromedriver with fantoccini.
//!
//! Everything started here is owned by a guard that stops it by pid when dropped, so a failed
//! step, an error or a panic never leaves a chromedriver or a server behind. Every wait has a
//! deadline. Screenshots and logs go to `target/browser/`.
//!
//! The scenario itself (dashboard against a real `tether`) is in `browser/scenario.rs`.

mod scenario;
// js: the @tether/client page (issue 15).
mod js_client;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder, Locator};

pub use scenario::run_scenario;

/// The headless flags of issue 5: no GPU, no QUIC, nothing phoning home.
const CHROME_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1500",
];

/// How long chromedriver may take to answer its `/status` after starting.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the browser and its driver are on this machine.
#[derive(Debug, Clone)]
pub struct Chromium {
    /// The browser binary chromedriver starts.
    pub browser: PathBuf,
    /// The chromedriver binary.
    pub driver: PathBuf,
}

/// Finds Debian's `chromium` and `chromium-driver`, installing them with apt-get when missing
/// and running as root; otherwise fails with the exact command to run.
pub fn ensure_chromium() -> Result<Chromium> {
    if let Some(found) = find_chromium() {
        return Ok(found);
    }
    let install = "apt-get update && apt-get install -y chromium chromium-driver";
    if !running_as_root() {
        bail!("Chromium and chromedriver are missing; install them with: sudo sh -c '{install}'");
    }
    println!("browser: Chromium or chromedriver is missing; running `{install}`");
    for args in [
        &["update"][..],
        &["install", "-y", "chromium", "chromium-driver"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("`apt-get {}` failed ({status})", args.join(" "));
        }
    }
    find_chromium().context("apt-get finished but chromium/chromedriver are still not found")
}

fn find_chromium() -> Option<Chromium> {
    // Debian's /usr/bin/chromium is a wrapper script; chromedriver is happier with the real
    // binary, which also skips the wrapper's shell quirks.
    let browser = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())?;
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())?;
    Some(Chromium { browser, driver })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A free loopback port, chosen by the OS (released again before the caller binds it).
pub fn free_port() -> Result<u16> {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(probe.local_addr()?.port())
}

/// A child process stopped by pid when this guard is dropped, whatever path drops it.
#[derive(Debug)]
pub struct ProcessGuard {
    name: &'static str,
    child: Option<Child>,
}

impl ProcessGuard {
    /// Takes ownership of a started child.
    pub fn new(name: &'static str, child: Child) -> Self {
        Self {
            name,
            child: Some(child),
        }
    }

    /// The child's pid (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process has exited on its own.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// How the process ended, once it has exited on its own (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Kills the process (SIGKILL, by pid) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            // Already exited is fine: the wait below reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            println!("browser: stopped {} (pid {pid})", self.name);
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running chromedriver on a loopback port.
#[derive(Debug)]
pub struct Driver {
    process: ProcessGuard,
    port: u16,
}

impl Driver {
    /// Starts chromedriver on a free loopback port, logging to `log`, and waits until it answers.
    pub fn start(chromium: &Chromium, log: &Path) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new(&chromium.driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromium.driver.display()))?;
        let mut driver = Self {
            process: ProcessGuard::new("chromedriver", child),
            port,
        };
        println!(
            "browser: chromedriver pid {} on 127.0.0.1:{port}",
            driver.process.pid()
        );
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if driver.process.has_exited() {
                bail!("chromedriver exited at start; see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver did not listen within {DRIVER_START_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(driver)
    }

    /// The WebDriver URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Opens a headless browser session with a fresh profile in `user_data_dir`.
    pub async fn open(&self, chromium: &Chromium, user_data_dir: &Path) -> Result<Client> {
        let mut args: Vec<String> = CHROME_FLAGS.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", user_data_dir.display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": chromium.browser, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut builder = ClientBuilder::new(connector);
        builder.capabilities(caps);
        let url = self.url();
        tokio::time::timeout(Duration::from_secs(60), builder.connect(&url))
            .await
            .context("the browser session did not open within 60 s")?
            .context("opening a Chromium session through chromedriver")
    }
}

/// Polls `#id`'s text until `ready` accepts it, for at most `timeout`; returns the last text.
pub async fn wait_for_text(
    client: &Client,
    id: &str,
    timeout: Duration,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if let Ok(element) = client.find(Locator::Id(id)).await
            && let Ok(text) = element.text().await
        {
            if ready(&text) {
                return Ok(text);
            }
            last = text;
        }
        if Instant::now() > deadline {
            bail!("waited {timeout:?} for {what}; #{id} shows {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves a PNG of the page to `dir/name.png` and returns the path.
pub async fn screenshot(client: &Client, dir: &Path, name: &str) -> Result<PathBuf> {
    let png = client.screenshot().await.context("taking a screenshot")?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    println!("browser: screenshot {}", path.display());
    Ok(path)
}
