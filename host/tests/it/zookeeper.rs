//! The ZooKeeper front end, driven by a real ZooKeeper client (the `zookeeper-client` crate)
//! against a real `cairn serve`.

use std::time::Duration;

use zookeeper_client as zk;

use crate::start_node;

/// How long a ZooKeeper call may take in a test.
const DEADLINE: Duration = Duration::from_secs(60);

/// A node whose root anyone may use, as a fresh ZooKeeper's is (Cairn's is closed).
async fn open_node() -> anyhow::Result<(tempfile::TempDir, cairn_tests::Server, String)> {
    let (dir, node) = start_node(&[])?;
    let set = node.cli(&["acl", "set", "/", "world:anyone:cdrwa"])?;
    anyhow::ensure!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let addr = node.zk_addr().ok_or_else(|| anyhow::anyhow!("no zookeeper address"))?;
    Ok((dir, node, addr.to_string()))
}

async fn connect(addr: &str) -> anyhow::Result<zk::Client> {
    let connecting =
        zk::Client::connector().with_session_timeout(Duration::from_secs(10)).connect(addr);
    Ok(tokio::time::timeout(DEADLINE, connecting).await??)
}

fn open() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Create, read, write, list and delete, with ZooKeeper's versions and errors.
#[tokio::test(flavor = "multi_thread")]
async fn a_zookeeper_client_reads_and_writes() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let client = connect(&addr).await?;
    let (stat, _) = client.create("/app", b"v1", &open()).await?;
    assert_eq!(stat.version, 0);
    let (data, stat) = client.get_data("/app").await?;
    assert_eq!((data.as_slice(), stat.data_length), (b"v1".as_slice(), 2));
    let stat = client.set_data("/app", b"v2", Some(0)).await?;
    assert_eq!(stat.version, 1);
    assert!(matches!(client.set_data("/app", b"v3", Some(0)).await, Err(zk::Error::BadVersion)));
    assert!(matches!(client.create("/app", b"", &open()).await, Err(zk::Error::NodeExists)));
    assert!(matches!(client.get_data("/none").await, Err(zk::Error::NoNode)));
    assert_eq!(client.check_stat("/none").await?, None);

    client.create("/app/a", b"", &open()).await?;
    let sequential = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let (_, sequence) = client.create("/app/job-", b"", &sequential).await?;
    let mut children = client.list_children("/app").await?;
    children.sort();
    assert_eq!(children, ["a".to_string(), format!("job-{sequence}")]);
    let (names, stat) = client.get_children("/app").await?;
    assert_eq!((names.len(), stat.num_children), (2, 2));
    assert!(matches!(client.delete("/app", None).await, Err(zk::Error::NotEmpty)));
    client.delete("/app/a", None).await?;
    client.sync("/app").await?;
    Ok(())
}

/// A one-shot watch fires once, before the reply of the write that fired it is read.
#[tokio::test(flavor = "multi_thread")]
async fn watches_fire_as_zookeepers_do() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let watcher_client = connect(&addr).await?;
    let writer = connect(&addr).await?;
    writer.create("/w", b"0", &open()).await?;
    let (_, _, data_watch) = watcher_client.get_and_watch_data("/w").await?;
    let (_, exists_watch) = watcher_client.check_and_watch_stat("/w/new").await?;
    let (_, children_watch) = watcher_client.list_and_watch_children("/w").await?;
    writer.set_data("/w", b"1", None).await?;
    let event = tokio::time::timeout(DEADLINE, data_watch.changed()).await?;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeDataChanged, "/w"));
    writer.create("/w/new", b"", &open()).await?;
    let event = tokio::time::timeout(DEADLINE, exists_watch.changed()).await?;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeCreated, "/w/new"));
    let event = tokio::time::timeout(DEADLINE, children_watch.changed()).await?;
    assert_eq!(event.event_type, zk::EventType::NodeChildrenChanged);
    Ok(())
}

/// An ephemeral lives as long as its session: closing the session deletes it, and another
/// client sees it go.
#[tokio::test(flavor = "multi_thread")]
async fn an_ephemeral_goes_with_its_session() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let owner = connect(&addr).await?;
    let observer = connect(&addr).await?;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    owner.create("/lease", b"", &ephemeral).await?;
    let stat = observer.check_stat("/lease").await?.expect("there");
    assert_eq!(stat.ephemeral_owner, owner.session_id().0, "owned by the session");
    let (_, gone) = observer.check_and_watch_stat("/lease").await?;
    drop(owner);
    let event = tokio::time::timeout(DEADLINE, gone.changed()).await?;
    assert_eq!(event.event_type, zk::EventType::NodeDeleted);
    assert_eq!(observer.check_stat("/lease").await?, None);
    Ok(())
}

/// Without a grant, an anonymous ZooKeeper client may do nothing: Cairn ships closed.
#[tokio::test(flavor = "multi_thread")]
async fn an_anonymous_client_is_refused_by_default() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let addr = node.zk_addr().ok_or_else(|| anyhow::anyhow!("no zookeeper address"))?;
    let client = connect(&addr.to_string()).await?;
    assert!(matches!(client.create("/x", b"", &open()).await, Err(zk::Error::NoAuth)));
    Ok(())
}

/// A multi is all or none, and says which operation failed; a multiRead answers each read.
#[tokio::test(flavor = "multi_thread")]
async fn multi_is_all_or_none() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let client = connect(&addr).await?;
    client.create("/m", b"0", &open()).await?;
    let mut writer = client.new_multi_writer();
    writer.add_create("/m/a", b"a", &open())?;
    writer.add_set_data("/m", b"1", Some(0))?;
    writer.add_check_version("/m", 1)?;
    writer.add_delete("/m/a", None)?;
    let results = writer.commit().await?;
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[0], zk::MultiWriteResult::Create { path, .. } if path == "/m/a"));
    assert!(matches!(results[1], zk::MultiWriteResult::SetData { stat } if stat.version == 1));
    assert!(matches!(results[2], zk::MultiWriteResult::Check));
    assert!(matches!(results[3], zk::MultiWriteResult::Delete));

    let mut writer = client.new_multi_writer();
    writer.add_create("/m/b", b"", &open())?;
    writer.add_set_data("/m", b"2", Some(0))?;
    writer.add_delete("/m", None)?;
    let failed = writer.commit().await.expect_err("a stale version");
    assert_eq!(
        failed,
        zk::MultiWriteError::OperationFailed { index: 1, source: zk::Error::BadVersion }
    );
    assert_eq!(client.check_stat("/m/b").await?, None, "the create before it was undone");

    // A check of version -1 (Curator's default) asks only that the znode be there.
    let mut writer = client.new_multi_writer();
    writer.add_check_version("/m", -1)?;
    writer.add_create("/m/c", b"", &open())?;
    assert_eq!(writer.commit().await?.len(), 2);
    let mut writer = client.new_multi_writer();
    writer.add_check_version("/none", -1)?;
    let failed = writer.commit().await.expect_err("no such znode");
    assert_eq!(
        failed,
        zk::MultiWriteError::OperationFailed { index: 0, source: zk::Error::NoNode }
    );

    let mut reader = client.new_multi_reader();
    reader.add_get_data("/m")?;
    reader.add_get_children("/none")?;
    let results = reader.commit().await?;
    assert!(matches!(&results[0], zk::MultiReadResult::Data { data, .. } if data == b"1"));
    assert!(matches!(results[1], zk::MultiReadResult::Error { err: zk::Error::NoNode }));
    Ok(())
}

/// Sends a four-letter word and reads the answer to the end (the node closes after it).
async fn word(addr: &str, word: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.write_all(word.as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, socket.read_to_string(&mut answer)).await??;
    Ok(answer)
}

/// The four-letter words health checks and kazoo use, in ZooKeeper 3.8's text.
#[tokio::test(flavor = "multi_thread")]
async fn four_letter_words_answer() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let client = connect(&addr).await?;
    client.create("/counted", b"", &open()).await?;
    assert_eq!(word(&addr, "ruok").await?, "imok");
    assert_eq!(word(&addr, "isro").await?, "rw");
    let envi = word(&addr, "envi").await?;
    assert!(envi.starts_with("Environment:\nzookeeper.version=3.8."), "{envi}");
    let srvr = word(&addr, "srvr").await?;
    assert!(srvr.contains("\nMode: standalone\n"), "{srvr}");
    // As ZooKeeper counts them: every open connection, the one asking included.
    assert!(srvr.contains("\nConnections: 2\n"), "{srvr}");
    let stat = word(&addr, "stat").await?;
    let sid = format!("sid={:#x}", client.session_id().0);
    assert!(stat.contains(&sid), "the client's session is listed: {stat}");
    let mntr = word(&addr, "mntr").await?;
    let znodes: u64 = mntr
        .lines()
        .find_map(|line| line.strip_prefix("zk_znode_count\t"))
        .ok_or_else(|| anyhow::anyhow!("no znode count: {mntr}"))?
        .parse()?;
    assert!(znodes >= 2, "the root and /counted at least: {mntr}");
    Ok(())
}

/// Persistent and recursive watches, the session's ephemerals, the count of descendants, and
/// dropping a watch.
#[tokio::test(flavor = "multi_thread")]
async fn persistent_watches_ephemerals_and_counts() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let client = connect(&addr).await?;
    let writer = connect(&addr).await?;
    client.create("/p", b"", &open()).await?;
    let mut recursive = client.watch("/p", zk::AddWatchMode::PersistentRecursive).await?;
    for n in 0..3 {
        writer.create(&format!("/p/{n}"), b"", &open()).await?;
        let event = tokio::time::timeout(DEADLINE, recursive.changed()).await?;
        assert_eq!((event.event_type, event.path), (zk::EventType::NodeCreated, format!("/p/{n}")));
    }
    writer.set_data("/p/1", b"x", None).await?;
    let event = tokio::time::timeout(DEADLINE, recursive.changed()).await?;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeDataChanged, "/p/1"));
    drop(recursive);

    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    client.create("/p/0/mine", b"", &ephemeral).await?;
    writer.create("/p/1/theirs", b"", &ephemeral).await?;
    assert_eq!(client.list_ephemerals("/p").await?, ["/p/0/mine".to_string()]);
    assert_eq!(client.count_descendants_number("/p").await?, 5);
    assert!(matches!(client.count_descendants_number("/none").await, Err(zk::Error::NoNode)));

    let (_, _, data_watch) = client.get_and_watch_data("/p").await?;
    drop(data_watch);
    writer.set_data("/p", b"changed", None).await?;
    Ok(())
}

/// The node restarts under a connected client: the client resumes its session on it and sets
/// its watches again, and a change made meanwhile fires the watch.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_its_session_and_its_watches_after_a_restart() -> anyhow::Result<()> {
    let (_dir, mut node, addr) = open_node().await?;
    let client = connect(&addr).await?;
    client.create("/r", b"0", &open()).await?;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    client.create("/r/lease", b"", &ephemeral).await?;
    let (_, _, watch) = client.get_and_watch_data("/r").await?;
    node.restart()?;
    let writer = connect(&addr).await?;
    writer.set_data("/r", b"1", None).await?;
    let event = tokio::time::timeout(DEADLINE, watch.changed()).await?;
    assert_eq!((event.event_type, event.path.as_str()), (zk::EventType::NodeDataChanged, "/r"));
    // The session lived through the restart, and so did its ephemeral.
    assert!(writer.check_stat("/r/lease").await?.is_some());
    assert_eq!(client.get_data("/r").await?.0, b"1");
    Ok(())
}

/// ZooKeeper's digest identities: an ACL names `digest:user:base64(sha1(user:password))`, and
/// only a connection that proved that password with `auth` may use the znode. A wrong password
/// proves another identity, which the ACL does not name; a scheme Cairn does not know is
/// auth-failed.
#[tokio::test(flavor = "multi_thread")]
async fn digest_identities_guard_their_znodes() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let owner = connect(&addr).await?;
    owner.auth("digest", b"alice:secret").await?;
    // kazoo's make_digest_acl("alice", "secret").
    let alice = [zk::Acl::new(
        zk::Permission::ALL,
        zk::AuthId::new("digest", "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E="),
    )];
    let guarded = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&alice));
    owner.create("/secret", b"s", &guarded).await?;
    assert_eq!(owner.get_data("/secret").await?.0, b"s");

    let stranger = connect(&addr).await?;
    assert!(matches!(stranger.get_data("/secret").await, Err(zk::Error::NoAuth)));
    stranger.auth("digest", b"alice:secret").await?;
    assert_eq!(stranger.get_data("/secret").await?.0, b"s");

    // A watch set after `auth` hears what the proved identity may read.
    let (_, _, changed) = stranger.get_and_watch_data("/secret").await?;
    owner.set_data("/secret", b"t", None).await?;
    let event = tokio::time::timeout(DEADLINE, changed.changed()).await?;
    assert_eq!(event.event_type, zk::EventType::NodeDataChanged);

    // Who may read an ACL but not administer the znode sees digest identities without their
    // hash, as ZooKeeper shows them.
    let readable = [alice[0].clone(), zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone())];
    let readable = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&readable));
    owner.create("/readable", b"", &readable).await?;
    let (acl, _) = connect(&addr).await?.get_acl("/readable").await?;
    assert_eq!(acl[0].auth_id(), &zk::AuthId::new("digest", "alice:x"), "{acl:?}");
    let (acl, _) = owner.get_acl("/readable").await?;
    assert_eq!(acl[0], alice[0], "its administrator sees it whole");

    let guesser = connect(&addr).await?;
    guesser.auth("digest", b"alice:guess").await?;
    assert!(matches!(guesser.get_data("/secret").await, Err(zk::Error::NoAuth)));
    let unknown = connect(&addr).await?;
    assert!(matches!(unknown.auth("ip", b"10.0.0.1").await, Err(zk::Error::AuthFailed)));
    Ok(())
}

/// A ZooKeeper session is the cluster's, not a node's: opened on one node, resumed by id and
/// password on another with its ephemerals, and expired by the cluster once its client is
/// silent, after which it cannot be resumed anywhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_resumes_on_another_node_and_expires_for_all() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = crate::start_cluster(dir.path(), 3, &[])?;
    let admin = cluster.client(1).await?;
    let everyone = cairn_client::AclEntry::anyone(cairn_wire::access::ALL);
    admin.set_acl("/", vec![everyone], None).await?;
    let mut addrs = Vec::new();
    for id in 1..=3 {
        let addr = cluster.node(id).zk_addr().ok_or_else(|| anyhow::anyhow!("no zk on {id}"))?;
        addrs.push(addr.to_string());
    }
    let timeout = Duration::from_secs(4);
    let first =
        zk::Client::connector().with_session_timeout(timeout).with_detached().connect(&addrs[0]);
    let first = tokio::time::timeout(DEADLINE, first).await??;
    let ephemeral = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    first.create("/e", b"", &ephemeral).await?;
    let session = first.session().clone();
    drop(first);

    let resumed =
        zk::Client::connector().with_session(session.clone()).with_detached().connect(&addrs[1]);
    let resumed = tokio::time::timeout(DEADLINE, resumed).await??;
    assert_eq!(resumed.session_id(), session.id(), "the same session");
    let stat = resumed.check_stat("/e").await?.expect("its ephemeral lives");
    assert_eq!(stat.ephemeral_owner, session.id().0);
    resumed.create("/e2", b"", &ephemeral).await?;

    let observer = connect(&addrs[2]).await?;
    let (_, gone) = observer.check_and_watch_stat("/e2").await?;
    drop(resumed);
    let event = tokio::time::timeout(DEADLINE, gone.changed()).await?;
    assert_eq!(event.event_type, zk::EventType::NodeDeleted, "expired with its session");
    assert_eq!(observer.check_stat("/e").await?, None);
    let late = zk::Client::connector().with_session(session).connect(&addrs[0]);
    let late = tokio::time::timeout(DEADLINE, late).await?;
    assert!(matches!(late, Err(zk::Error::SessionExpired)), "{late:?}");
    Ok(())
}

/// What kazoo's suite is run with, from PyPI: kazoo itself, pytest, and what its harness and
/// handlers import (pure-sasl is left out, so the SASL tests skip).
const KAZOO_PACKAGES: &[&str] = &[
    "kazoo==2.11.0",
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "objgraph==3.7.0",
    "pyOpenSSL==26.4.0",
    "pyjks==20.0.0",
    "gevent==26.9.0",
    "eventlet==0.41.3",
];

/// kazoo tests that must pass against Cairn. 479 of the 493 pass: the 7 that fail need a
/// ZooKeeper quorum's reconfig (3), read-only mode (1), or a second server to fail over to
/// (`test_update_host_list`, once per handler), and 7 skip (SASL). The bar leaves room for a
/// few of kazoo's timing-sensitive tests to stumble on a loaded machine.
const KAZOO_PASSED_AT_LEAST: u64 = 470;

/// A Python environment with [`KAZOO_PACKAGES`], made once under the target directory.
fn kazoo_venv() -> anyhow::Result<std::path::PathBuf> {
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kazoo-venv");
    let pytest = venv.join("bin/pytest");
    if pytest.exists() {
        return Ok(venv);
    }
    let run = |command: &mut std::process::Command| -> anyhow::Result<()> {
        let output = command.output()?;
        anyhow::ensure!(
            output.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    };
    run(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(KAZOO_PACKAGES))?;
    Ok(venv)
}

/// The counts in pytest's last line: "2 failed, 465 passed, 7 skipped, … in 130.0s".
fn pytest_counts(summary: &str) -> (u64, u64) {
    let words: Vec<&str> = summary
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect();
    let count = |kind: &str| {
        words
            .windows(2)
            .find(|pair| pair[1] == kind)
            .and_then(|pair| pair[0].parse().ok())
            .unwrap_or(0)
    };
    (count("passed"), count("failed"))
}

/// The shell commands kazoo's harness runs to stop and start its server (the request-queuing
/// tests): each asks the test, through a file in `control`, and waits for its answer.
fn kazoo_server_commands(control: &std::path::Path) -> (String, String) {
    let control = control.display();
    let ask = |verb: &str, done: &str| {
        format!(
            "rm -f {control}/{done}-{{i}}; touch {control}/{verb}-{{i}}; \
             for n in $(seq 1200); do \
             [ -e {control}/{done}-{{i}} ] && rm -f {control}/{done}-{{i}} && exit 0; \
             sleep 0.05; done; exit 1"
        )
    };
    (ask("stop", "stopped"), ask("start", "started"))
}

/// Carries out what kazoo's harness asked for in `control`: kills the node (its clients lose
/// their connections at once, as when a ZooKeeper server stops) or starts it again on the same
/// data and ports.
fn serve_kazoo_requests(
    control: &std::path::Path,
    node: &mut cairn_tests::Server,
) -> anyhow::Result<()> {
    if std::fs::remove_file(control.join("stop-0")).is_ok() {
        node.kill()?;
        std::fs::write(control.join("stopped-0"), b"")?;
    }
    if std::fs::remove_file(control.join("start-0")).is_ok() {
        node.restart()?;
        std::fs::write(control.join("started-0"), b"")?;
    }
    Ok(())
}

/// kazoo 2.11's own test suite against a Cairn node opened to anonymous clients, through the
/// plugin in tests/zookeeper, on the plain port and the TLS port (with the administrator's
/// certificate); the harness may stop and start the node. The tests that need what Cairn does
/// not do (reconfig, read-only mode) are listed when it runs.
#[tokio::test(flavor = "multi_thread")]
async fn kazoo_test_suite() -> anyhow::Result<()> {
    let venv = tokio::task::spawn_blocking(kazoo_venv).await??;
    // As kazoo's own harness configures ZooKeeper: no limit on connections from one address
    // (its tests leave more than ZooKeeper's default 60 open).
    let (dir, mut node) =
        start_node(&["--zk-tls-listen", "127.0.0.1:0", "--zk-connections-per-ip", "0"])?;
    let set = node.cli(&["acl", "set", "/", "world:anyone:cdrwa"])?;
    anyhow::ensure!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let addr = node.zk_addr().ok_or_else(|| anyhow::anyhow!("no zookeeper address"))?.to_string();
    let tls_addr = node.zk_tls_addr().ok_or_else(|| anyhow::anyhow!("no TLS address"))?.to_string();
    // A restart keeps the TLS port too.
    let args: Vec<String> = node
        .args()
        .into_iter()
        .map(|arg| if arg == "127.0.0.1:0" { tls_addr.clone() } else { arg })
        .collect();
    node.set_args(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // kazoo's TLS test reads the client's key, certificate and CA from files of these names.
    let ssl = dir.path().join("kazoo-ssl");
    std::fs::create_dir(&ssl)?;
    for (from, to) in [
        ("ca.pem", "ca_cert.pem"),
        ("admin.pem", "client_cert.pem"),
        ("admin-key.pem", "client_key.pem"),
    ] {
        std::fs::copy(node.certs_dir().join(from), ssl.join(to))?;
    }
    let control = dir.path().join("kazoo-control");
    std::fs::create_dir(&control)?;
    let (stop, start) = kazoo_server_commands(&control);
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/zookeeper");
    let run = tokio::process::Command::new(venv.join("bin/pytest"))
        .args(["-p", "kazoo_external", "--pyargs", "kazoo.tests", "--timeout=60", "-q"])
        .args(["-p", "no:cacheprovider", "-rf"])
        .env("PYTHONPATH", plugin)
        .env("KAZOO_EXTERNAL_HOSTS", &addr)
        .env("KAZOO_EXTERNAL_SECURE_HOSTS", &tls_addr)
        .env("KAZOO_EXTERNAL_SSL_DIR", &ssl)
        .env("KAZOO_EXTERNAL_STOP_CMD", stop)
        .env("KAZOO_EXTERNAL_START_CMD", start)
        .env_remove("ZOOKEEPER_VERSION")
        .kill_on_drop(true)
        .output();
    let mut run = std::pin::pin!(tokio::time::timeout(Duration::from_secs(1500), run));
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let output = loop {
        tokio::select! {
            output = &mut run => break output??,
            _ = tick.tick() => tokio::task::block_in_place(|| serve_kazoo_requests(&control, &mut node))?,
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    let (passed, failed) = pytest_counts(summary);
    let failures: Vec<&str> = stdout.lines().filter(|line| line.starts_with("FAILED")).collect();
    eprintln!("kazoo against Cairn: {summary}\n{}", failures.join("\n"));
    assert!(
        passed >= KAZOO_PASSED_AT_LEAST,
        "kazoo: {passed} passed, {failed} failed, at least {KAZOO_PASSED_AT_LEAST} must pass:\n{stdout}"
    );
    Ok(())
}

#[test]
fn pytest_summaries_are_read() {
    let summary = "25 failed, 465 passed, 3 skipped, 407 warnings in 130.98s (0:02:10)";
    assert_eq!(pytest_counts(summary), (465, 25));
    assert_eq!(pytest_counts("=== 12 passed in 1.0s ==="), (12, 0));
    assert_eq!(pytest_counts("1 failed, 3 passed in 2.0s"), (3, 1));
}

/// A byte stream to the node: plain TCP or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A raw ZooKeeper connection, for what no well-behaved client sends.
struct Raw(Box<dyn Stream>);

impl Raw {
    async fn connect(addr: &str) -> anyhow::Result<Raw> {
        Ok(Raw(Box::new(tokio::net::TcpStream::connect(addr).await?)))
    }

    /// A TLS connection that trusts `ca` (PEM) and presents `client` (certificate and key,
    /// PEM) if given.
    async fn connect_tls(
        addr: &str,
        ca: &std::path::Path,
        client: Option<(Vec<u8>, Vec<u8>)>,
    ) -> anyhow::Result<Raw> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder.with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(&cert)?],
                PrivateKeyDer::from_pem_slice(&key)?,
            )?,
        };
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let socket = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost")?;
        let stream = tokio::time::timeout(DEADLINE, connector.connect(name, socket)).await??;
        Ok(Raw(Box::new(stream)))
    }

    /// Sends `body` behind a length that says `length` bytes.
    async fn send(&mut self, length: u32, body: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.0.write_all(&length.to_be_bytes()).await?;
        self.0.write_all(body).await?;
        Ok(())
    }

    async fn frame(&mut self, body: &[u8]) -> anyhow::Result<()> {
        self.send(body.len() as u32, body).await
    }

    /// The next frame's body; `None` once the node closed the connection.
    async fn reply(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let mut length = [0u8; 4];
            if self.0.read_exact(&mut length).await.is_err() {
                return Ok(None);
            }
            let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
            self.0.read_exact(&mut body).await?;
            anyhow::Ok(Some(body))
        };
        tokio::time::timeout(DEADLINE, read).await?
    }

    /// Opens a session: ZooKeeper's ConnectRequest, and its answer read.
    async fn handshake(&mut self) -> anyhow::Result<()> {
        self.resume(0, [0; 16]).await.map(|_| ())
    }

    /// Opens (`id` 0) or resumes a session; its id and password.
    async fn resume(&mut self, id: i64, passwd: [u8; 16]) -> anyhow::Result<(i64, [u8; 16])> {
        let mut connect = Vec::new();
        connect.extend_from_slice(&0i32.to_be_bytes()); // protocol version
        connect.extend_from_slice(&0i64.to_be_bytes()); // last zxid seen
        connect.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
        connect.extend_from_slice(&id.to_be_bytes()); // session id
        connect.extend_from_slice(&16i32.to_be_bytes()); // password
        connect.extend_from_slice(&passwd);
        connect.push(0); // read-only
        self.frame(&connect).await?;
        let answer = self.reply().await?.ok_or_else(|| anyhow::anyhow!("no connect answer"))?;
        // protocol version, timeout, session id, password (length and bytes), read-only.
        anyhow::ensure!(answer.len() == 37, "a connect answer of {} bytes", answer.len());
        let id = i64::from_be_bytes(answer[8..16].try_into()?);
        Ok((id, answer[20..36].try_into()?))
    }
}

/// A request frame's body: xid, opcode, then `rest`.
fn request(xid: i32, opcode: i32, rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&xid.to_be_bytes());
    body.extend_from_slice(&opcode.to_be_bytes());
    body.extend_from_slice(rest);
    body
}

/// A reply's xid and error code.
fn xid_and_err(reply: &[u8]) -> (i32, i32) {
    let int = |at: usize| i32::from_be_bytes(reply[at..at + 4].try_into().expect("4 bytes"));
    (int(0), int(12))
}

/// Absurd lengths, frames that do not decode and opcodes Cairn does not know: the offending
/// connection gets an error or is closed; the node loses nothing and serves everyone else.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_close_only_their_connection() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let client = connect(&addr).await?;
    client.create("/kept", b"safe", &open()).await?;

    // A handshake that claims 2 GiB: closed before anything is read or allocated.
    let mut huge_handshake = Raw::connect(&addr).await?;
    huge_handshake.send(0x7fff_ffff, b"\0\0\0\0").await?;
    assert_eq!(huge_handshake.reply().await?, None, "closed");

    // A handshake that does not decode.
    let mut garbage = Raw::connect(&addr).await?;
    garbage.frame(b"\x01\x02\x03").await?;
    assert_eq!(garbage.reply().await?, None, "closed");

    // After the handshake: a frame over jute.maxbuffer (1 MiB) closes the connection.
    let mut too_long = Raw::connect(&addr).await?;
    too_long.handshake().await?;
    too_long.send(2 * 1024 * 1024, &request(1, 4, b"")).await?;
    assert_eq!(too_long.reply().await?, None, "closed");

    // A getData whose path's length runs past the frame.
    let mut truncated = Raw::connect(&addr).await?;
    truncated.handshake().await?;
    truncated.frame(&request(1, 4, &[0, 0, 1, 0, b'/'])).await?;
    assert_eq!(truncated.reply().await?, None, "closed");

    // An opcode Cairn does not know: "unimplemented", and the connection stays.
    let mut unknown = Raw::connect(&addr).await?;
    unknown.handshake().await?;
    unknown.frame(&request(7, 999, b"whatever")).await?;
    let reply = unknown.reply().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    assert_eq!(xid_and_err(&reply), (7, -6), "xid 7, unimplemented");
    unknown.frame(&request(-2, 11, b"")).await?;
    let pong = unknown.reply().await?.ok_or_else(|| anyhow::anyhow!("closed after it"))?;
    assert_eq!(xid_and_err(&pong), (-2, 0), "a ping is still answered");

    // Nothing was lost, and the well-behaved client was served throughout.
    let (data, _) = client.get_data("/kept").await?;
    assert_eq!(data, b"safe");
    client.create("/kept/after", b"", &open()).await?;
    assert_eq!(client.list_children("/kept").await?, vec!["after".to_string()]);
    Ok(())
}

/// A ZooKeeper `create` request's body after the header: path, data, ACL world:anyone:cdrwa,
/// persistent.
fn create_body(path: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(path.len() as i32).to_be_bytes());
    body.extend_from_slice(path.as_bytes());
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(&1i32.to_be_bytes()); // one ACL entry
    body.extend_from_slice(&31i32.to_be_bytes()); // cdrwa
    for part in ["world", "anyone"] {
        body.extend_from_slice(&(part.len() as i32).to_be_bytes());
        body.extend_from_slice(part.as_bytes());
    }
    body.extend_from_slice(&0i32.to_be_bytes()); // persistent
    body
}

/// The TLS port (ZooKeeper's secureClientPort): a client certificate the cluster CA signed
/// speaks for its principal; without one a client is anonymous; a certificate from any other
/// CA does not get in, whatever name it carries.
#[tokio::test(flavor = "multi_thread")]
async fn the_tls_port_knows_clients_by_their_certificates() -> anyhow::Result<()> {
    // The root stays closed: only the administrator may create under it.
    let (_dir, node) = start_node(&["--zk-tls-listen", "127.0.0.1:0"])?;
    let addr = node.zk_tls_addr().ok_or_else(|| anyhow::anyhow!("no TLS port"))?.to_string();
    let certs = node.certs_dir();
    let admin =
        (std::fs::read(certs.join("admin.pem"))?, std::fs::read(certs.join("admin-key.pem"))?);
    let ca = certs.join("ca.pem");

    let mut anonymous = Raw::connect_tls(&addr, &ca, None).await?;
    anonymous.handshake().await?;
    anonymous.frame(&request(1, 1, &create_body("/by-anyone", b""))).await?;
    let reply = anonymous.reply().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    assert_eq!(xid_and_err(&reply), (1, -102), "anonymous: no auth");

    let mut administrator = Raw::connect_tls(&addr, &ca, Some(admin)).await?;
    administrator.handshake().await?;
    administrator.frame(&request(1, 1, &create_body("/by-admin", b"x"))).await?;
    let reply = administrator.reply().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    assert_eq!(xid_and_err(&reply), (1, 0), "the administrator's certificate: created");

    // A self-made certificate that calls itself "admin".
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "admin");
    let key = rcgen::KeyPair::generate()?;
    let forged = (params.self_signed(&key)?.pem().into_bytes(), key.serialize_pem().into_bytes());
    let refused = async {
        let mut forger = Raw::connect_tls(&addr, &ca, Some(forged)).await?;
        forger.handshake().await
    };
    assert!(refused.await.is_err(), "a certificate the cluster CA did not sign is refused");

    // The plain port is served beside it.
    assert!(node.zk_addr().is_some());
    Ok(())
}

/// As ZooKeeper's `maxClientCnxns`: connections from one address beyond the limit are closed
/// at once; those within it are served, and a closed one makes room.
#[tokio::test(flavor = "multi_thread")]
async fn connections_from_one_address_are_bounded() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&["--zk-connections-per-ip", "2"])?;
    let addr = node.zk_addr().ok_or_else(|| anyhow::anyhow!("no zookeeper address"))?.to_string();
    let mut first = Raw::connect(&addr).await?;
    first.handshake().await?;
    let mut second = Raw::connect(&addr).await?;
    second.handshake().await?;
    let mut third = Raw::connect(&addr).await?;
    assert!(third.handshake().await.is_err(), "a third is closed");
    drop(first);
    cairn_tests::wait_for("a closed connection to make room", DEADLINE, || async {
        match Raw::connect(&addr).await {
            Ok(mut another) => another.handshake().await.is_ok(),
            Err(_) => false,
        }
    })
    .await?;
    second.frame(&request(-2, 11, b"")).await?;
    let pong = second.reply().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    assert_eq!(xid_and_err(&pong), (-2, 0), "the second is served throughout");
    Ok(())
}

/// As ZooKeeper: a session resumed on a new connection is served there, and its old connection
/// is closed.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_a_session_closes_its_old_connection() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let mut old = Raw::connect(&addr).await?;
    let (id, passwd) = old.resume(0, [0; 16]).await?;
    let mut new = Raw::connect(&addr).await?;
    assert_eq!(new.resume(id, passwd).await?.0, id, "the same session");
    assert_eq!(old.reply().await?, None, "the old connection is closed");
    new.frame(&request(-2, 11, b"")).await?;
    let pong = new.reply().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    assert_eq!(xid_and_err(&pong), (-2, 0), "the new one is served");
    Ok(())
}

/// The `/zookeeper` subtree ZooKeeper clients expect is there, read-only.
#[tokio::test(flavor = "multi_thread")]
async fn the_zookeeper_subtree_is_there() -> anyhow::Result<()> {
    let (_dir, _node, addr) = open_node().await?;
    let client = connect(&addr).await?;
    let mut children = client.list_children("/zookeeper").await?;
    children.sort();
    assert_eq!(children, ["config", "quota"]);
    assert_eq!(client.get_data("/zookeeper/config").await?.0, b"");
    assert!(client.list_children("/").await?.contains(&"zookeeper".to_string()));
    let set = client.set_data("/zookeeper/config", b"server.1=elsewhere", None).await;
    assert!(matches!(set, Err(zk::Error::NoAuth)), "{set:?}");
    Ok(())
}
