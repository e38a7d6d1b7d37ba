//! ZooKeeper's own command-line client (`zkCli.sh`, from Debian's `zookeeper` package) runs the
//! README's walkthrough against a Cairn node and against a ZooKeeper server started beside it:
//! what it prints must be what ZooKeeper makes it print, and what the README shows.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_tests::zookeeper::{ZKCLI, ZooKeeper};

use crate::start_node;

/// How long zkCli may take to run the walkthrough (a JVM starting is most of it).
const ZKCLI_DEADLINE: Duration = Duration::from_secs(120);

/// Where the README marks the walkthrough this test runs: the next fenced block.
const README_MARK: &str = "<!-- zkcli walkthrough -->";

/// The walkthrough as the README shows it: the commands typed at zkCli's prompt, and the lines
/// it printed.
struct Walkthrough {
    commands: Vec<String>,
    printed: Vec<String>,
}

/// Reads the walkthrough out of `readme`.
fn walkthrough(readme: &str) -> anyhow::Result<Walkthrough> {
    let (_, after) = readme.split_once(README_MARK).context("the README has no walkthrough")?;
    let block = after
        .split_once("```console\n")
        .and_then(|(_, block)| block.split_once("\n```"))
        .map(|(block, _)| block)
        .context("no ```console block after the walkthrough's mark")?;
    let mut walkthrough = Walkthrough { commands: Vec::new(), printed: Vec::new() };
    for line in block.lines() {
        // `[zk: 127.0.0.1:2181(CONNECTED) 3] set /demo world`
        match line.strip_prefix("[zk: ").and_then(|rest| rest.split_once("] ")) {
            Some((_, command)) => walkthrough.commands.push(command.to_string()),
            None if line.starts_with('$') => {}
            None => walkthrough.printed.push(line.to_string()),
        }
    }
    anyhow::ensure!(!walkthrough.commands.is_empty(), "the walkthrough has no commands");
    Ok(walkthrough)
}

/// What zkCli printed, split in two: its answers to the commands, in order, and the watch
/// events, in order (zkCli prints events from a thread of their own, so how the two interleave
/// is not fixed). Lines that name a time, a zxid or a session are masked; the start-up chatter,
/// blank lines and the connection's own events are left out.
fn normalize(lines: &[String]) -> (Vec<String>, Vec<String>) {
    const MASKED: [&str; 5] = ["cZxid = ", "mZxid = ", "pZxid = ", "ctime = ", "mtime = "];
    const CHATTER: [&str; 5] =
        ["SLF4J:", "Connecting to ", "Welcome to ZooKeeper!", "JLine ", "WATCHER::"];
    let (mut answers, mut events) = (Vec::new(), Vec::new());
    for line in lines.iter().map(|line| line.trim_end()) {
        if line.is_empty() || CHATTER.iter().any(|chatter| line.starts_with(chatter)) {
            continue;
        }
        if line.starts_with("WatchedEvent ") {
            if !line.contains("type:None") {
                events.push(line.to_string());
            }
            continue;
        }
        let masked = match MASKED.iter().find(|field| line.starts_with(*field)) {
            Some(field) => format!("{field}…"),
            None if line.starts_with("ephemeralOwner = ") && line != "ephemeralOwner = 0x0" => {
                "ephemeralOwner = <session>".to_string()
            }
            None => line.to_string(),
        };
        answers.push(masked);
    }
    (answers, events)
}

/// Runs `commands` in one zkCli session against `server`; what it printed. zkCli prints some
/// answers on stdout and some on stderr (`Created ...`): both go to one file, in the order it
/// wrote them.
fn run_zkcli(server: &str, commands: &[String], dir: &Path) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        Path::new(ZKCLI).exists(),
        "{ZKCLI} is missing: install Debian's zookeeper package (.ci/run does)"
    );
    let printed = dir.join("zkcli.out");
    let out = std::fs::File::create(&printed)?;
    let mut child = Command::new(ZKCLI)
        .args(["-server", server])
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting zkCli.sh")?;
    let mut stdin = child.stdin.take().context("zkCli's stdin")?;
    for command in commands {
        writeln!(stdin, "{command}")?;
    }
    drop(stdin);
    let deadline = Instant::now() + ZKCLI_DEADLINE;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("zkCli did not finish within {ZKCLI_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(std::fs::read_to_string(&printed)?.lines().map(str::to_string).collect())
}

#[test]
fn the_readme_zkcli_walkthrough_prints_what_zookeeper_prints() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))?;
    let walkthrough = walkthrough(&readme)?;

    let dir = tempfile::tempdir()?;
    let (zk_dir, cairn_dir) = (dir.path().join("zookeeper"), dir.path().join("cairn"));
    std::fs::create_dir_all(&cairn_dir)?;
    // ZooKeeper's TTL znodes (`create -t`) are behind this setting; Cairn's are always on.
    let zookeeper = ZooKeeper::start(&zk_dir, 1, &["extendedTypesEnabled=true"])?;
    let theirs = run_zkcli(&zookeeper.servers()[0].to_string(), &walkthrough.commands, &zk_dir)?;
    drop(zookeeper);

    // A fresh Cairn node's root is closed; the README opens it first, as this does.
    let (_node_dir, node) = start_node(&[])?;
    let opened = node.cli(&["acl", "set", "/", "world:anyone:cdrwa"])?;
    anyhow::ensure!(opened.status.success(), "{}", String::from_utf8_lossy(&opened.stderr));
    let zk_addr = node.zk_addr().context("the node serves no ZooKeeper clients")?;
    let ours = run_zkcli(&zk_addr.to_string(), &walkthrough.commands, &cairn_dir)?;

    let (their_answers, their_events) = normalize(&theirs);
    let (our_answers, our_events) = normalize(&ours);
    let (readme_answers, readme_events) = normalize(&walkthrough.printed);
    assert_eq!(our_answers, their_answers, "Cairn's answers, then ZooKeeper's");
    assert_eq!(our_events, their_events, "Cairn's events, then ZooKeeper's");
    assert_eq!(readme_answers, our_answers, "the README's answers, then what zkCli printed");
    assert_eq!(readme_events, our_events, "the README's events, then what zkCli printed");
    Ok(())
}

#[test]
fn the_walkthrough_reader_splits_commands_from_answers() -> anyhow::Result<()> {
    let readme = format!(
        "intro\n{README_MARK}\n```console\n$ zkCli.sh -server 127.0.0.1:2181\n\
         [zk: 127.0.0.1:2181(CONNECTED) 0] create /a x\n\nWATCHER::\n\n\
         WatchedEvent state:SyncConnected type:NodeCreated path:/a\nCreated /a\n\
         [zk: 127.0.0.1:2181(CONNECTED) 1] stat /a\ncZxid = 0x5\nephemeralOwner = 0x1000\n```\n"
    );
    let walkthrough = walkthrough(&readme)?;
    assert_eq!(walkthrough.commands, ["create /a x", "stat /a"]);
    let (answers, events) = normalize(&walkthrough.printed);
    assert_eq!(answers, ["Created /a", "cZxid = …", "ephemeralOwner = <session>"]);
    assert_eq!(events, ["WatchedEvent state:SyncConnected type:NodeCreated path:/a"]);
    Ok(())
}
