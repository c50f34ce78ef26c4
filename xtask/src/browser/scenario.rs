//! Issue 5's browser scenario: the dashboard against a real `tether`, through the dev web server.
//!
//! Steps (each with a deadline and a screenshot in `target/browser/`): the page shows
//! `Connected`; a message published from the page appears with its offset; the server is
//! killed → `Reconnecting...`; a publish while it is down shows "1 waiting to sync"; a reload
//! while it is still down keeps the queued message; the server restarts on the same database →
//! `Connected`, the queue drains ("All synced"), and the history endpoint holds the message
//! exactly once. Then issue 11's call steps (`scenario/calls.rs`): a simulated Twilio call in the
//! Calls panel, its agent link lost and restored, the call ended.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, Locator};

mod calls;

use super::{Driver, ProcessGuard, ensure_chromium, free_port, screenshot, wait_for_text};
use crate::util::project_root;
use crate::web::{WebBuild, target_dir};
use crate::webserve::http_get;

/// The channel the scenario publishes to.
const CHANNEL: &str = "e2e:browser";
/// Text of the message published while connected.
const FIRST: &str = "hello from the browser";
/// Text of the message published while the server is down.
const OFFLINE: &str = "sent while offline";

/// Default wait for something the page should show soon.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Wait for a (re)connection, which may sit behind a backoff delay of several seconds.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the server, starts it, the dev web server and a headless Chromium, and runs the
/// scenario. Everything it started is stopped by pid on every path out.
pub fn run_scenario(web: &WebBuild) -> Result<()> {
    let started = Instant::now();
    let chromium = ensure_chromium()?;
    let tether = build_server()?;

    let out_dir = target_dir().join("browser");
    let run_dir = out_dir.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(async {
        // The whole scenario is bounded, whatever step hangs.
        tokio::time::timeout(
            Duration::from_secs(300),
            scenario(web, &chromium, &tether, &out_dir, &run_dir),
        )
        .await
        .context("the browser scenario did not finish within 300 s")?
    });
    // Closes the web server's remaining connections with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match &result {
        Ok(()) => println!(
            "browser: scenario passed in {:.1}s; screenshots in {}",
            started.elapsed().as_secs_f64(),
            out_dir.display()
        ),
        Err(err) => println!(
            "browser: scenario FAILED after {:.1}s: {err:#}; screenshots and logs in {}",
            started.elapsed().as_secs_f64(),
            out_dir.display()
        ),
    }
    result
}

/// `cargo build -p server --bin tether` into the target dir in effect; returns the binary.
fn build_server() -> Result<PathBuf> {
    println!("browser: cargo build -p server --bin tether");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(project_root())
        .args(["build", "-p", "server", "--bin", "tether"])
        .status()
        .context("running cargo to build the server")?;
    if !status.success() {
        bail!("building the `tether` binary failed ({status})");
    }
    let bin = target_dir().join("debug").join("tether");
    ensure!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    Ok(bin)
}

/// The running `tether` and how to start it again the same way.
struct Server {
    bin: PathBuf,
    port: u16,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    process: Option<ProcessGuard>,
}

impl Server {
    fn new(bin: &Path, run_dir: &Path, web_origin: &str) -> Result<Self> {
        let port = free_port()?;
        let db = run_dir.join("db").join("tether.db");
        let env = vec![
            ("TETHER_HOST", "127.0.0.1".to_owned()),
            ("PORT", port.to_string()),
            ("DATABASE_URL", format!("sqlite://{}", db.display())),
            ("TETHER_ENV", "development".to_owned()),
            ("TETHER_ALLOWED_ORIGINS", web_origin.to_owned()),
            ("TETHER_LOG_FORMAT", "json".to_owned()),
            // Short enough that the page notices a dead server within the scenario's waits.
            ("TETHER_HEARTBEAT_MS", "5000".to_owned()),
            ("TETHER_DRAIN_MS", "200".to_owned()),
        ];
        Ok(Self {
            bin: bin.to_owned(),
            port,
            env,
            log: run_dir.join("tether.log"),
            process: None,
        })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Starts `tether serve` (appending to its log) and waits for `/health/live`.
    async fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let mut guard = ProcessGuard::new("tether", child);
        println!(
            "browser: tether pid {} on {} (log {})",
            guard.pid(),
            self.addr(),
            self.log.display()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(self.addr(), "/health/live", None).await {
                break;
            }
            if guard.has_exited() {
                bail!("tether exited at start; see {}", self.log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "tether did not answer /health/live within 30 s; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.process = Some(guard);
        Ok(())
    }

    /// Kills the server (an abrupt stop, like a crash) by pid.
    fn stop(&mut self) {
        if let Some(mut guard) = self.process.take() {
            guard.stop();
        }
    }

    /// A token from `tether token` with the same configuration (same dev secret).
    fn token(&self, sub: &str) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(["token", "--sub", sub, "--subscribe", "*", "--publish", "*"])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .context("running `tether token`")?;
        ensure!(
            out.status.success(),
            "`tether token` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(!token.is_empty(), "`tether token` printed nothing");
        Ok(token)
    }
}

/// The scenario proper; the caller bounds its time and owns the runtime.
async fn scenario(
    web: &WebBuild,
    chromium: &super::Chromium,
    tether: &Path,
    out_dir: &Path,
    run_dir: &Path,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the web server")?;
    let web_addr = listener.local_addr()?;
    let origin = format!("http://{web_addr}");

    let mut server = Server::new(tether, run_dir, &origin)?;
    server.start().await?;

    let (stop_web, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let web_task = tokio::spawn(crate::webserve::serve_web_on(
        listener,
        web.dist.clone(),
        server.addr(),
        async move {
            // A dropped sender means the scenario is over either way.
            let _ = web_stopped.await;
        },
    ));
    println!("browser: dev web server on {origin} → {}", server.addr());

    let driver = Driver::start(chromium, &out_dir.join("chromedriver.log"))?;
    let client = driver.open(chromium, &run_dir.join("profile")).await?;

    let steps = steps(&client, &mut server, &origin, out_dir).await;
    // js: the @tether/client package in a plain page on the same origin (browser/js_client.rs).
    let steps = match steps {
        Ok(()) => super::js_client::run(&client, &origin, &web.dist, out_dir).await,
        err => err,
    };
    if steps.is_err() {
        // Best effort: what the page showed when it failed, for whoever reads the CI log.
        let _ = screenshot(&client, out_dir, "failure").await;
        if let Ok(html) = client.source().await {
            let path = out_dir.join("failure.html");
            if std::fs::write(&path, html).is_ok() {
                println!("browser: page source at failure: {}", path.display());
            }
        }
        if let Ok(log) = std::fs::read_to_string(&server.log) {
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            println!("browser: last lines of {}:", server.log.display());
            for line in tail.into_iter().rev() {
                println!("  {line}");
            }
        }
    }

    // Teardown on every path: browser session, chromedriver, server, web server.
    if let Err(err) = client.close().await {
        println!("browser: closing the session failed: {err}");
    }
    drop(driver);
    server.stop();
    let _ = stop_web.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), web_task).await;
    steps
}

async fn steps(client: &Client, server: &mut Server, origin: &str, shots: &Path) -> Result<()> {
    let step_started = Instant::now();
    let step = |name: &str| {
        println!(
            "browser: [{:>5.1}s] {name}",
            step_started.elapsed().as_secs_f64()
        );
    };

    step("1. open the dashboard, expect `Connected`");
    client
        .goto(&format!("{origin}/"))
        .await
        .context("opening the page")?;
    let shown = wait_for_text(
        client,
        "status-label",
        RECONNECT_TIMEOUT,
        "Connected",
        |t| t == "Connected",
    )
    .await;
    screenshot(client, shots, "01-connected").await?;
    shown?;

    step("2. subscribe and publish; expect the message with its offset");
    fill(client, "channel-input", CHANNEL).await?;
    click(client, "subscribe-button").await?;
    wait_for_text(
        client,
        "channel-status",
        STEP_TIMEOUT,
        "the subscription",
        |t| t.contains("Subscribed"),
    )
    .await?;
    fill(client, "composer-input", FIRST).await?;
    click(client, "publish-button").await?;
    let shown = wait_for_message(client, FIRST, STEP_TIMEOUT).await;
    screenshot(client, shots, "02-published").await?;
    let first_offset = shown?;
    ensure!(
        first_offset == 1,
        "the first message shows offset {first_offset}, expected 1"
    );

    step("3. stop the server; expect `Reconnecting...`");
    server.stop();
    let shown = wait_for_text(
        client,
        "status-label",
        STEP_TIMEOUT,
        "Reconnecting...",
        |t| t == "Reconnecting...",
    )
    .await;
    screenshot(client, shots, "03-reconnecting").await?;
    shown?;

    step("4. publish while disconnected; expect \"1 waiting to sync\"");
    fill(client, "composer-input", OFFLINE).await?;
    click(client, "publish-button").await?;
    let shown = wait_for_text(
        client,
        "sync-status",
        STEP_TIMEOUT,
        "1 waiting to sync",
        |t| t == "1 waiting to sync",
    )
    .await;
    screenshot(client, shots, "04-queued").await?;
    shown?;

    step("5. reload while the server is down; expect the message still queued");
    client.refresh().await.context("reloading the page")?;
    let shown = wait_for_text(
        client,
        "sync-status",
        STEP_TIMEOUT,
        "1 waiting to sync",
        |t| t == "1 waiting to sync",
    )
    .await;
    screenshot(client, shots, "05-reloaded-offline").await?;
    shown?;

    step("6. restart the server on the same database; expect `Connected` and \"All synced\"");
    server.start().await?;
    wait_for_text(
        client,
        "status-label",
        RECONNECT_TIMEOUT,
        "Connected",
        |t| t == "Connected",
    )
    .await?;
    let shown = wait_for_text(client, "sync-status", STEP_TIMEOUT, "All synced", |t| {
        t == "All synced"
    })
    .await;
    let delivered = match shown {
        Ok(_) => wait_for_message(client, OFFLINE, STEP_TIMEOUT).await,
        Err(err) => Err(err),
    };
    screenshot(client, shots, "06-synced").await?;
    let offline_offset = delivered?;
    ensure!(
        offline_offset == 2,
        "the offline message shows offset {offline_offset}, expected 2"
    );

    step("7. check the history endpoint: each message stored exactly once");
    let token = server.token("e2e-checker")?;
    let path = format!("/v1/channels/{CHANNEL}/messages?since=0&limit=100");
    let (status, body) = http_get(server.addr(), &path, Some(&token)).await?;
    ensure!(status == 200, "GET {path} answered {status}: {body}");
    let history: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("GET {path} body: {body}"))?;
    let messages = history["messages"]
        .as_array()
        .with_context(|| format!("no `messages` array in {body}"))?;
    let texts: Vec<(u64, String)> = messages
        .iter()
        .map(|m| {
            let offset = m["offset"].as_u64().unwrap_or(0);
            let text = m["data"]["text"].as_str().unwrap_or_default().to_owned();
            (offset, text)
        })
        .collect();
    let expected = vec![(1, FIRST.to_owned()), (2, OFFLINE.to_owned())];
    ensure!(
        texts == expected,
        "history holds {texts:?}, expected {expected:?}"
    );
    calls::steps(client, server, shots, &step).await?;
    step("8. the same page at phone width, for people to look at");
    client
        .set_window_size(390, 1600)
        .await
        .context("resizing the window")?;
    screenshot(client, shots, "07-phone-width").await?;
    step("done: both messages stored exactly once");
    Ok(())
}

/// Types `text` into the input `#id`, replacing what was there.
async fn fill(client: &Client, id: &str, text: &str) -> Result<()> {
    let input = client
        .wait()
        .at_most(STEP_TIMEOUT)
        .for_element(Locator::Id(id))
        .await
        .with_context(|| format!("finding #{id}"))?;
    input
        .clear()
        .await
        .with_context(|| format!("clearing #{id}"))?;
    input
        .send_keys(text)
        .await
        .with_context(|| format!("typing into #{id}"))
}

/// Clicks the element `#id`.
async fn click(client: &Client, id: &str) -> Result<()> {
    client
        .wait()
        .at_most(STEP_TIMEOUT)
        .for_element(Locator::Id(id))
        .await
        .with_context(|| format!("finding #{id}"))?
        .click()
        .await
        .with_context(|| format!("clicking #{id}"))?;
    Ok(())
}

/// Waits until the channel view lists a delivered message with `text`; returns its offset.
async fn wait_for_message(client: &Client, text: &str, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    let script = r#"
        const want = arguments[0];
        for (const el of document.querySelectorAll('[data-testid="message"]')) {
            const body = el.querySelector('[data-testid="message-text"]');
            if (body && body.textContent === want) return Number(el.dataset.offset);
        }
        return null;
    "#;
    loop {
        let found = client
            .execute(script, vec![serde_json::Value::from(text)])
            .await
            .context("reading the message list")?;
        if let Some(offset) = found.as_u64() {
            return Ok(offset);
        }
        if Instant::now() > deadline {
            bail!("waited {timeout:?} for the message {text:?} to appear with an offset");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
