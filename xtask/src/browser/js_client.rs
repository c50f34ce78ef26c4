//! Issue 15's browser page: the built `@tether/client` package in real Chromium, on the same
//! origin, web server and `tether` as the dashboard scenario (`scenario.rs` calls [`run`]).
//!
//! The page (`js-client/index.html` beside the dashboard's files) imports the package with a
//! plain `<script type=module>`, takes its tokens from `/dev/token` through a provider, and
//! shows the client's `state` label in `#js-state` and every label it went through in
//! `#js-labels`. Steps: `Connected` (after `Connecting...`); a publish is acknowledged with an
//! offset; `close()` → `Offline`; `connect()` → `Connected` again.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use fantoccini::Client;

use super::{screenshot, wait_for_text};

/// Where the page and the package go inside the served folder.
const DIR: &str = "js-client";
/// How long one step may take (a first connection has no backoff in front of it).
const STEP: Duration = Duration::from_secs(20);

/// The page: a plain module script over the package; no bundler, no framework.
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>@tether/client</title></head>
<body>
<h1>@tether/client in a plain page</h1>
<p>state: <span id="js-state">loading</span></p>
<p>labels: <span id="js-labels"></span></p>
<p>ack: <span id="js-ack"></span></p>
<script type="module">
import { TetherClient } from "./pkg/index.js";
const labels = [];
const show = (s) => {
  document.getElementById("js-state").textContent = s.label;
  labels.push(s.label);
  document.getElementById("js-labels").textContent = labels.join(" > ");
};
const client = new TetherClient({
  url: `ws://${location.host}/ws`,
  token: async () => (await (await fetch("/dev/token?sub=js-page")).json()).token,
  storage: localStorage,
});
show(client.state);
client.on("state", show);
window.tetherClient = client;
window.tetherPublish = async () => {
  const ack = await client.publish("e2e:js", { text: "from the js page" });
  document.getElementById("js-ack").textContent = `offset ${ack.offset} duplicate ${ack.duplicate}`;
};
</script>
</body></html>
"#;

/// Builds the package, serves it beside the dashboard in `dist` and runs the page's steps.
pub async fn run(client: &Client, origin: &str, dist: &Path, shots: &Path) -> Result<()> {
    println!("browser: js client page");
    let built = crate::js::build()?;
    let dir = dist.join(DIR);
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(&pkg).with_context(|| format!("creating {}", pkg.display()))?;
    for entry in std::fs::read_dir(&built.pkg).context("listing the package")? {
        let path = entry?.path();
        let name = path.file_name().context("a file name")?;
        std::fs::copy(&path, pkg.join(name))
            .with_context(|| format!("copying {}", path.display()))?;
    }
    std::fs::write(dir.join("index.html"), PAGE).context("writing the js client page")?;

    client
        .goto(&format!("{origin}/{DIR}/index.html"))
        .await
        .context("opening the js client page")?;
    let shown = wait_for_text(client, "js-state", STEP, "Connected", |t| t == "Connected").await;
    screenshot(client, shots, "js-01-connected").await?;
    shown?;
    let labels = wait_for_text(client, "js-labels", STEP, "the labels", |t| !t.is_empty()).await?;
    ensure!(
        labels == "Connecting... > Connected",
        "the page went through {labels:?}, expected \"Connecting... > Connected\""
    );

    client
        .execute("window.tetherPublish(); return null;", vec![])
        .await
        .context("publishing from the page")?;
    let ack = wait_for_text(client, "js-ack", STEP, "the ack", |t| {
        t.starts_with("offset ")
    })
    .await?;
    ensure!(
        ack.ends_with("duplicate false"),
        "the page shows the ack {ack:?}"
    );

    client
        .execute("window.tetherClient.close(); return null;", vec![])
        .await
        .context("closing the client")?;
    let shown = wait_for_text(client, "js-state", STEP, "Offline", |t| t == "Offline").await;
    screenshot(client, shots, "js-02-offline").await?;
    shown?;

    client
        .execute("window.tetherClient.connect(); return null;", vec![])
        .await
        .context("connecting again")?;
    let shown = wait_for_text(client, "js-state", STEP, "Connected", |t| t == "Connected").await;
    screenshot(client, shots, "js-03-connected-again").await?;
    shown?;
    let labels = wait_for_text(client, "js-labels", STEP, "the labels", |t| !t.is_empty()).await?;
    println!("browser: js client page went through {labels}");
    ensure!(
        labels.ends_with("Connected > Offline > Connecting... > Connected")
            || labels.ends_with("Connected > Offline > Reconnecting... > Connected"),
        "after close and connect the page went through {labels:?}"
    );
    Ok(())
}
