//! The `cairn` command line as people type it.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{binary, start_node};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "failed: {}", stderr(&output));
    stdout(&output)
}

fn json(output: Output) -> Value {
    let text = ok(output);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn walkthrough() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;

    assert_eq!(ok(node.cli(&["create", "/app", "hello"])?), "/app\n");
    assert_eq!(ok(node.cli(&["get", "/app"])?), "hello\n");
    let with_stat = ok(node.cli(&["get", "/app", "--stat"])?);
    assert!(with_stat.starts_with("hello\nczxid = "), "{with_stat}");
    assert!(
        with_stat.contains("\nversion = 0\n") && with_stat.contains("\ndataLength = 5\n"),
        "{with_stat}"
    );

    assert_eq!(
        ok(node.cli(&["create", "/app/job-", "a", "--sequential"])?),
        "/app/job-0000000000\n"
    );
    assert_eq!(
        ok(node.cli(&["create", "/app/job-", "b", "--sequential"])?),
        "/app/job-0000000001\n"
    );
    assert_eq!(ok(node.cli(&["ls", "/app"])?), "job-0000000000\njob-0000000001\n");
    let table = ok(node.cli(&["ls", "/app", "--stat"])?);
    assert!(table.starts_with("NAME") && table.contains("job-0000000001"), "{table}");

    // Conditional set: right version, then a stale one.
    assert_eq!(ok(node.cli(&["set", "/app", "v2", "--version", "0"])?), "");
    let stale = node.cli(&["set", "/app", "v3", "--version", "0"])?;
    assert!(!stale.status.success());
    assert_eq!(stderr(&stale), "error: bad version: /app (expected version 0, found 1)\n");

    let stat = ok(node.cli(&["stat", "/app"])?);
    assert!(stat.contains("version = 1\n") && stat.contains("numChildren = 2\n"), "{stat}");

    // Deleting a parent needs --recursive.
    let not_empty = node.cli(&["rm", "/app"])?;
    assert!(!not_empty.status.success());
    assert_eq!(stderr(&not_empty), "error: not empty: /app (2 children)\n");
    assert_eq!(ok(node.cli(&["rm", "/app", "--recursive"])?), "");

    let missing = node.cli(&["get", "/missing"])?;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stderr(&missing), "error: no node: /missing\n");
    assert_eq!(stdout(&missing), "");

    let invalid = node.cli(&["create", "no-slash"])?;
    assert!(!invalid.status.success());
    assert!(stderr(&invalid).starts_with("error: invalid path: no-slash"), "{}", stderr(&invalid));

    // Versioned delete.
    ok(node.cli(&["create", "/v"])?);
    let wrong = node.cli(&["rm", "/v", "--version", "3"])?;
    assert!(stderr(&wrong).starts_with("error: bad version: /v"), "{}", stderr(&wrong));
    ok(node.cli(&["rm", "/v", "--version", "0"])?);
    Ok(())
}

#[test]
fn json_output_for_programs() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let created = json(node.cli(&["create", "/j", "data", "--json"])?);
    assert_eq!(created["path"], "/j");

    let got = json(node.cli(&["get", "/j", "--json"])?);
    assert_eq!(got["data"], "data");
    assert_eq!(got["stat"]["version"], 0);
    assert_eq!(got["stat"]["data_length"], 4);

    let set = json(node.cli(&["set", "/j", "more", "--json"])?);
    assert_eq!(set["stat"]["version"], 1);

    ok(node.cli(&["create", "/j/a"])?);
    let listed = json(node.cli(&["ls", "/j", "--json", "--stat"])?);
    assert_eq!(listed["children"][0]["name"], "a");
    assert_eq!(listed["children"][0]["stat"]["num_children"], 0);

    let stat = json(node.cli(&["stat", "/j", "--json"])?);
    assert_eq!(stat["stat"]["num_children"], 1);
    Ok(())
}

#[test]
fn ttl_and_container_flags() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    ok(node.cli(&["create", "/c", "--container"])?);
    ok(node.cli(&["create", "/c/x"])?);
    ok(node.cli(&["rm", "/c/x"])?);
    let gone = node.cli(&["get", "/c"])?;
    assert_eq!(stderr(&gone), "error: no node: /c\n", "a container goes with its last child");

    ok(node.cli(&["create", "/t", "--ttl", "300"])?);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let output = node.cli(&["stat", "/t"])?;
        if stderr(&output) == "error: no node: /t\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "TTL znode never reaped");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn defaults_and_environment() -> anyhow::Result<()> {
    let (dir, node) = start_node(&[])?;
    // The node's data dir is `<dir>/cairn-data`, so from `<dir>` the default CA path is right.
    let run = |args: &[&str], envs: &[(&str, String)]| -> anyhow::Result<Output> {
        let mut command = Command::new(binary());
        command
            .args(args)
            .current_dir(dir.path())
            .env_remove("CAIRN_SERVER")
            .env_remove("CAIRN_CA");
        for (key, value) in envs {
            command.env(key, value);
        }
        Ok(command.stdin(Stdio::null()).output()?)
    };
    let server = node.addr().to_string();
    ok(run(&["create", "/e", "x", "--server", &server], &[])?);
    assert_eq!(ok(run(&["get", "/e"], &[("CAIRN_SERVER", server.clone())])?), "x\n");

    let ca = node.ca_file().display().to_string();
    let elsewhere = tempfile::tempdir()?;
    let output = Command::new(binary())
        .args(["get", "/e"])
        .current_dir(elsewhere.path())
        .env("CAIRN_SERVER", &server)
        .env("CAIRN_CA", &ca)
        .output()?;
    assert_eq!(ok(output), "x\n");

    let no_ca = Command::new(binary())
        .args(["get", "/e", "--server", &server])
        .current_dir(elsewhere.path())
        .env_remove("CAIRN_CA")
        .output()?;
    assert!(!no_ca.status.success());
    assert!(
        stderr(&no_ca).starts_with("error: CA file cairn-data/tls/ca.pem not found"),
        "{}",
        stderr(&no_ca)
    );
    Ok(())
}

#[test]
fn ephemeral_watch_and_sessions() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    ok(node.cli(&["create", "/svc"])?);
    let mut watch = node.spawn_cli(&["watch", "/svc", "--recursive", "--json"])?;
    // The watch is live once it reports a probe.
    let mut probe = 0;
    let first = loop {
        ok(node.cli(&["create", &format!("/svc/probe-{probe}")])?);
        if let Some(line) = watch.line_within(std::time::Duration::from_millis(500)) {
            break line;
        }
        probe += 1;
        assert!(probe < 100, "the watch never reported");
    };
    let event: Value = serde_json::from_str(&first)?;
    assert_eq!(event["kind"], "created");
    assert!(event["zxid"].as_u64().is_some_and(|zxid| zxid > 0));
    while watch.line_within(std::time::Duration::from_millis(200)).is_some() {}

    let mut holder =
        node.spawn_cli(&["create", "/svc/worker-", "w", "--ephemeral", "--sequential"])?;
    let worker = holder.line()?;
    assert!(
        worker.starts_with("/svc/worker-") && worker.len() == "/svc/worker-".len() + 10,
        "{worker}"
    );
    let event: Value = serde_json::from_str(&watch.line()?)?;
    assert_eq!(
        (event["kind"].as_str(), event["path"].as_str()),
        (Some("created"), Some(worker.as_str()))
    );

    let sessions = json(node.cli(&["sessions", "--json"])?);
    let held: Vec<&Value> = sessions["sessions"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|s| s["ephemerals"] == 1)
        .collect();
    assert_eq!(held.len(), 1, "{sessions}");
    assert_eq!(held[0]["timeout_ms"], 10_000);

    // SIGINT ends the holder's session: the znode goes at once.
    assert!(holder.interrupt()?.success());
    let event: Value = serde_json::from_str(&watch.line()?)?;
    assert_eq!(
        (event["kind"].as_str(), event["path"].as_str()),
        (Some("deleted"), Some(worker.as_str()))
    );
    assert!(watch.interrupt()?.success());

    // get --watch prints the data, then the change.
    let mut getter = node.spawn_cli(&["get", "/svc", "--watch"])?;
    assert_eq!(getter.line()?, "");
    ok(node.cli(&["set", "/svc", "new"])?);
    let event = getter.line()?;
    assert!(event.starts_with("data-changed /svc "), "{event}");
    assert!(getter.child.wait()?.success());
    Ok(())
}

/// A reader that stops early (`cairn get /big | head -c 10`) ends the command quietly, with
/// success, not with a panic about a broken pipe.
#[test]
fn a_closed_pipe_ends_the_output_quietly() -> anyhow::Result<()> {
    use std::io::Read;

    let (_dir, node) = start_node(&[])?;
    // Larger than a pipe's buffer (64 KiB), so the write is still going when the reader
    // leaves; smaller than the largest single argument (128 KiB).
    let big = "x".repeat(120 * 1024);
    ok(node.cli(&["create", "/big", &big])?);
    let mut child = Command::new(binary())
        .args(["get", "/big", "--server", &node.addr().to_string(), "--ca"])
        .arg(node.ca_file())
        .env_remove("CAIRN_SERVER")
        .env_remove("CAIRN_CA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut first = [0u8; 10];
    let mut pipe = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    pipe.read_exact(&mut first)?;
    drop(pipe);
    let output = child.wait_with_output()?;
    assert_eq!(&first, b"xxxxxxxxxx");
    assert!(output.status.success(), "{:?}: {}", output.status, stderr(&output));
    Ok(())
}

/// README's "Who may do what" walkthrough, as typed (from the directory holding the node's
/// `cairn-data`, with CAIRN_SERVER naming the node's port), then tokens.
#[test]
fn access_walkthrough() -> anyhow::Result<()> {
    let (dir, node) = start_node(&[])?;
    let server = node.addr().to_string();
    let run = |args: &[&str], token: Option<&str>| -> anyhow::Result<Output> {
        let mut command = Command::new(binary());
        command.args(args).current_dir(dir.path()).env("CAIRN_SERVER", &server);
        for key in ["CAIRN_CA", "CAIRN_CERT", "CAIRN_KEY", "CAIRN_TOKEN"] {
            command.env_remove(key);
        }
        if let Some(token) = token {
            command.env("CAIRN_TOKEN", token);
        }
        Ok(command.stdin(Stdio::null()).output()?)
    };
    let alice = ["--cert", "alice/alice.pem", "--key", "alice/alice-key.pem"];
    fn as_alice<'a>(args: &[&'a str], alice: &[&'a str]) -> Vec<&'a str> {
        [args, alice].concat()
    }

    assert_eq!(ok(run(&["whoami"], None)?), "admin (administrator)\n");
    assert_eq!(ok(run(&["create", "/shared", "for the team"], None)?), "/shared\n");
    assert_eq!(ok(run(&["create", "/private", "not for alice"], None)?), "/private\n");
    assert_eq!(
        ok(run(&["cert", "issue", "alice", "--out", "alice"], None)?),
        "alice/alice.pem\nalice/alice-key.pem\n"
    );
    assert_eq!(ok(run(&["acl", "set", "/shared", "user:alice:r"], None)?), "");
    assert_eq!(ok(run(&as_alice(&["get", "/shared"], &alice), None)?), "for the team\n");
    let private = run(&as_alice(&["get", "/private"], &alice), None)?;
    assert_eq!(stderr(&private), "error: not authorized: /private (alice may not read here)\n");
    let create = run(&as_alice(&["create", "/shared/x"], &alice), None)?;
    assert_eq!(
        stderr(&create),
        "error: not authorized: /shared/x (alice may not create children here)\n"
    );
    let anonymous = run(&["get", "/shared", "--anonymous"], None)?;
    assert_eq!(
        stderr(&anonymous),
        "error: not authorized: /shared (anonymous may not read here)\n"
    );
    assert_eq!(ok(run(&["acl", "get", "/shared"], None)?), "user:alice:r\naversion = 1\n");

    // Tokens: issued once, spoken with, revoked.
    let token = ok(run(&["token", "create", "ci"], None)?).trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    ok(run(&["acl", "set", "/shared", "user:alice:r,user:ci:rw", "--version", "1"], None)?);
    let stale = run(&["acl", "set", "/shared", "user:alice:r", "--version", "1"], None)?;
    assert!(stderr(&stale).starts_with("error: bad version: /shared"), "{}", stderr(&stale));
    assert_eq!(ok(run(&["whoami"], Some(&token))?), "ci\n");
    ok(run(&["set", "/shared", "v2"], Some(&token))?);
    ok(run(&["token", "revoke", "ci"], None)?);
    let revoked = run(&["get", "/shared"], Some(&token))?;
    assert!(stderr(&revoked).contains("authentication failed"), "{}", stderr(&revoked));
    Ok(())
}
