//! Headless Chromium (Debian's `chromium`), for tests of the web console: the page as it
//! stands after its scripts ran, and screenshots.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long one Chromium run may take.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// Virtual time the page gets to run its scripts (and their fetches) before it is read.
const SCRIPT_TIME_MS: u32 = 5_000;

/// The browser: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !path.exists() {
        bail!("no browser at {} (Debian's chromium package; .ci/run installs it)", path.display());
    }
    Ok(path)
}

/// The document at `url` after its scripts ran.
pub fn dom(url: &str) -> anyhow::Result<String> {
    let output = run(&["--dump-dom".to_string(), url.to_string()])?;
    Ok(String::from_utf8_lossy(&output).into_owned())
}

/// A PNG screenshot of `url` after its scripts ran, `width`×`height`, written to `file`.
pub fn screenshot(url: &str, file: &Path, width: u32, height: u32) -> anyhow::Result<()> {
    run(&[
        format!("--screenshot={}", file.display()),
        format!("--window-size={width},{height}"),
        url.to_string(),
    ])?;
    if !file.exists() {
        bail!("chromium wrote no screenshot to {}", file.display());
    }
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<Vec<u8>> {
    let profile = tempfile::tempdir()?;
    let mut child = Command::new(chromium()?)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .args(["--no-first-run", "--disable-extensions", "--mute-audio"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={SCRIPT_TIME_MS}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot run chromium")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut { stdout }, &mut bytes);
        bytes
    });
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let output = reader.join().unwrap_or_default();
            if !status.success() {
                bail!("chromium exited with {status}");
            }
            return Ok(output);
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("chromium did not finish within {RUN_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
