//! The admin listener: /metrics read as Prometheus reads it, the health checks, the console's
//! writes and who may make them, and the console itself in a real browser.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use cairn_client::CreateOptions;
use cairn_tests::cluster::Cluster;
use cairn_tests::{browser, http, wait_for};

use super::{binary, compiled_dir, compiled_key, start_cluster, start_node};

const DEADLINE: Duration = Duration::from_secs(60);

/// The node's metrics, parsed: each sample's name and labels, and its value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

async fn scrape(url: &str) -> anyhow::Result<Samples> {
    let answer = http::get(&format!("{url}metrics"), &[]).await?;
    anyhow::ensure!(answer.status == 200, "/metrics answered {}: {}", answer.status, answer.body);
    let lines = answer.body.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines)?;
    let mut samples = Samples::new();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            // Histograms are checked through their _count and _sum.
            _ => continue,
        };
        let labels: BTreeMap<String, String> =
            sample.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        samples.insert((sample.metric, labels), value);
    }
    Ok(samples)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(&(name.to_string(), labels)).copied().unwrap_or(0.0)
}

fn admin_url(server: &cairn_tests::Server) -> anyhow::Result<String> {
    server.admin_url().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no admin listener"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_with_the_work_done() -> anyhow::Result<()> {
    const N: usize = 25;
    let (_dir, node) = start_node(&[])?;
    let url = admin_url(&node)?;
    let client = node.client().await?;
    let before = scrape(&url).await?;
    for i in 0..N {
        client.create(&format!("/m-{i}"), b"x".to_vec(), CreateOptions::persistent()).await?;
    }
    // One more that fails: it counts under its outcome, not as a create that worked.
    assert!(client.create("/m-0", Vec::new(), CreateOptions::persistent()).await.is_err());
    let after = scrape(&url).await?;

    let created = [("frontend", "quic"), ("kind", "create"), ("outcome", "ok")];
    let exists = [("frontend", "quic"), ("kind", "create"), ("outcome", "node-exists")];
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(moved("cairn_requests_total", &created), N as f64);
    assert_eq!(moved("cairn_requests_total", &exists), 1.0);
    assert_eq!(moved("cairn_znodes", &[]), N as f64);
    assert!(moved("cairn_znode_data_bytes", &[]) > 0.0);
    let latencies = [("frontend", "quic"), ("kind", "create")];
    assert_eq!(moved("cairn_request_duration_seconds_count", &latencies), (N + 1) as f64);
    // Every create went through the log and an fsync.
    assert!(moved("cairn_log_entries_written_total", &[]) >= N as f64);
    assert!(moved("cairn_log_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(moved("cairn_log_entries_per_fsync_sum", &[]) >= N as f64);
    assert_eq!(value(&after, "cairn_raft_is_leader", &[]), 1.0);
    assert_eq!(value(&after, "cairn_raft_members", &[]), 1.0);
    assert!(value(&after, "cairn_sessions", &[]) >= 1.0);
    assert!(value(&after, "cairn_connections", &[("frontend", "quic")]) >= 1.0);
    let applied = value(&after, "cairn_raft_applied_index", &[]);
    assert!(applied > 0.0 && applied == value(&after, "cairn_raft_commit_index", &[]));

    // A recipe call is counted with its fuel.
    let lock = client.lock("metered").acquire().await?;
    lock.release().await?;
    let recipes = scrape(&url).await?;
    let fair_lock = [("recipe", "fair-lock")];
    assert!(value(&recipes, "cairn_recipe_calls_total", &fair_lock) >= 2.0);
    assert!(value(&recipes, "cairn_recipe_fuel_used_total", &fair_lock) > 0.0);
    Ok(())
}

/// Every metric the shipped Grafana dashboard queries is one a cluster's leader exports.
#[tokio::test(flavor = "multi_thread")]
async fn the_grafana_dashboard_queries_only_metrics_the_node_exports() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = start_cluster(dir.path(), 3, &[])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let client = cluster.client(leader).await?;
    client.create("/seen", Vec::new(), CreateOptions::persistent()).await?;
    let url = admin_url(&cluster.nodes[(leader - 1) as usize])?;
    let text = http::get(&format!("{url}metrics"), &[]).await?.body;
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    let dashboard =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dashboard)?)?;
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(at) = rest.find("cairn_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    for name in &queried {
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(families.contains(family), "the dashboard queries {name}, which no family exports");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_node_is_healthy_and_ready_and_its_console_loads() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let url = admin_url(&node)?;
    let health = http::get(&format!("{url}healthz"), &[]).await?;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = http::get(&format!("{url}readyz"), &[]).await?;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ok\n"));
    let page = http::get(&url, &[]).await?;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some());
    // A page elsewhere that rebinds its own name to loopback is not answered.
    let rebound =
        http::get(&format!("{url}api/cluster"), &[("Host", "attacker.example:80")]).await?;
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn console_writes_need_an_administrator_and_the_console_header() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let url = admin_url(&node)?;
    let client = node.client().await?;
    client.create("/doomed", b"bye".to_vec(), CreateOptions::persistent()).await?;
    let admin_token = client.create_token("admin").await?;
    let other_token = client.create_token("alice").await?;
    let delete = format!("{url}api/delete");
    let body = r#"{"path":"/doomed"}"#;
    let bearer = |token: &str| format!("Bearer {token}");

    // The anonymous viewer of the loopback listener may look, not write.
    let anonymous = http::post_json(&delete, &[("X-Cairn-Console", "1")], body).await?;
    assert_eq!(anonymous.status, 403, "{}", anonymous.body);
    let alice = bearer(&other_token);
    let alice = [("X-Cairn-Console", "1"), ("Authorization", alice.as_str())];
    let not_admin = http::post_json(&delete, &alice, body).await?;
    assert_eq!(not_admin.status, 403, "{}", not_admin.body);
    // An administrator's token without the console's header: what a cross-site form sends.
    let admin = bearer(&admin_token);
    let forged = http::post_json(&delete, &[("Authorization", admin.as_str())], body).await?;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let unknown = [("X-Cairn-Console", "1"), ("Authorization", "Bearer not-a-token")];
    assert_eq!(http::post_json(&delete, &unknown, body).await?.status, 401);
    assert!(client.exists("/doomed").await?.is_some(), "a refused write deleted the znode");

    let admin = [("X-Cairn-Console", "1"), ("Authorization", admin.as_str())];
    let stale = http::post_json(&delete, &admin, r#"{"path":"/doomed","version":7}"#).await?;
    assert_eq!(stale.status, 409, "{}", stale.body);
    let deleted = http::post_json(&delete, &admin, body).await?;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(client.exists("/doomed").await?.is_none());
    let whoami = http::get(&format!("{url}api/whoami"), &admin).await?;
    assert!(whoami.body.contains(r#""admin":true"#), "{}", whoami.body);
    Ok(())
}

/// An administrator has a snapshot built on demand: it covers every write made before, and the
/// node reports it; a viewer who is not an administrator cannot ask for one.
#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_takes_a_snapshot_on_demand() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let url = admin_url(&node)?;
    let client = node.client().await?;
    client.create("/kept", b"x".to_vec(), CreateOptions::persistent()).await?;
    let written = client.server_info().await?.applied_zxid;
    assert_eq!(client.server_info().await?.snapshot_zxid, None, "no snapshot yet");
    let snapshot = format!("{url}api/snapshot");

    let anonymous = http::post_json(&snapshot, &[("X-Cairn-Console", "1")], "{}").await?;
    assert_eq!(anonymous.status, 403, "{}", anonymous.body);
    let token = format!("Bearer {}", client.create_token("admin").await?);
    let admin = [("X-Cairn-Console", "1"), ("Authorization", token.as_str())];
    let taken = http::post_json(&snapshot, &admin, "{}").await?;
    assert_eq!(taken.status, 200, "{}", taken.body);
    let taken: serde_json::Value = serde_json::from_str(&taken.body)?;
    let zxid = taken["zxid"].as_u64().context("zxid")?;
    assert!(zxid >= written, "the snapshot at {zxid} misses the write at {written}");
    assert!(taken["bytes"].as_u64().is_some_and(|bytes| bytes > 0), "{taken}");
    assert_eq!(client.server_info().await?.snapshot_zxid, Some(zxid));
    Ok(())
}

/// Over TLS (as on any address but loopback), a viewer must prove who it is: an administrator
/// or a principal `--admin-viewers` names, by a client certificate the cluster CA signed.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_listener_lets_in_only_administrators_and_named_viewers() -> anyhow::Result<()> {
    let args = ["--admin-listen", "127.0.0.1:0", "--admin-tls", "--admin-viewers", "prometheus"];
    let (dir, node) = start_node(&args)?;
    let url = admin_url(&node)?;
    assert!(url.starts_with("https://"), "{url}");
    let certs = node.certs_dir();
    let ca = certs.join("ca.pem");
    for name in ["prometheus", "mallory"] {
        let issued = std::process::Command::new(binary())
            .args(["cert", "issue", name, "--out"])
            .arg(dir.path().join(name))
            .arg("--ca")
            .arg(&ca)
            .stdin(std::process::Stdio::null())
            .output()?;
        anyhow::ensure!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    }
    let identity = |name: &str| {
        let dir = dir.path().join(name);
        (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")))
    };
    let as_user = |name: &str| {
        let (cert, key) = identity(name);
        http::Tls::new(&ca, Some((&cert, &key)))
    };
    let admin =
        http::Tls::new(&ca, Some((&certs.join("admin.pem"), &certs.join("admin-key.pem"))))?;
    let anonymous = http::Tls::new(&ca, None)?;
    let metrics = format!("{url}metrics");

    assert_eq!(anonymous.get(&format!("{url}healthz"), &[]).await?.status, 200, "anyone");
    assert_eq!(anonymous.get(&metrics, &[]).await?.status, 401);
    assert_eq!(as_user("mallory")?.get(&metrics, &[]).await?.status, 403);
    let scraped = as_user("prometheus")?.get(&metrics, &[]).await?;
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(scraped.body.contains("cairn_raft_term"));
    let whoami = admin.get(&format!("{url}api/whoami"), &[]).await?;
    assert!(whoami.body.contains(r#""admin":true"#), "{}", whoami.body);

    // A viewer is not an administrator: no writes.
    let client = node.client().await?;
    client.create("/kept", Vec::new(), CreateOptions::persistent()).await?;
    let delete = format!("{url}api/delete");
    let console = [("X-Cairn-Console", "1")];
    let refused =
        as_user("prometheus")?.post_json(&delete, &console, r#"{"path":"/kept"}"#).await?;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(client.exists("/kept").await?.is_some());
    let deleted = admin.post_json(&delete, &console, r#"{"path":"/kept"}"#).await?;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(client.exists("/kept").await?.is_none());

    // Plain HTTP to the TLS port gets no answer.
    let plain = format!("http://{}", url.trim_start_matches("https://"));
    assert!(
        !matches!(http::get(&format!("{plain}metrics"), &[]).await, Ok(answer) if answer.status == 200)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_cut_off_from_the_leader_is_not_ready_until_it_catches_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (compiled, key) = (compiled_dir(), compiled_key());
    let shared = [
        "--compiled-dir",
        compiled.to_str().unwrap_or_default(),
        "--compiled-key",
        key.to_str().unwrap_or_default(),
    ];
    let cluster = Cluster::start_linked(binary(), dir.path(), 3, &shared).await?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let cut = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let url = admin_url(&cluster.nodes[(cut - 1) as usize])?;
    let ready = |url: String| async move {
        http::get(&format!("{url}readyz"), &[]).await.map(|answer| answer.status)
    };
    wait_for("the follower ready", DEADLINE, || async {
        ready(url.clone()).await.ok() == Some(200)
    })
    .await?;

    cluster.isolate(cut);
    wait_for("the cut-off member not ready", DEADLINE, || async {
        ready(url.clone()).await.ok() == Some(503)
    })
    .await?;
    // Still alive: it is not to be restarted, only not sent traffic.
    assert_eq!(http::get(&format!("{url}healthz"), &[]).await?.status, 200);
    let answer = http::get(&format!("{url}readyz"), &[]).await?;
    assert!(answer.body.contains("no leader"), "{}", answer.body);
    // The rest go on writing while it is away.
    let majority = (1..=3).find(|id| *id != cut && *id != leader).unwrap_or(leader);
    let writer = cluster.client(majority).await?;
    let mut n = 0;
    wait_for("writes in the majority", DEADLINE, || {
        let path = format!("/while-away-{n}");
        n += 1;
        let writer = &writer;
        async move { writer.create(&path, Vec::new(), CreateOptions::persistent()).await.is_ok() }
    })
    .await?;

    cluster.heal();
    wait_for("the member ready again", DEADLINE, || async {
        ready(url.clone()).await.ok() == Some(200)
    })
    .await?;

    // A leader cut off from the rest believes it leads, but no quorum hears it: not ready.
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let leader_url = admin_url(&cluster.nodes[(leader - 1) as usize])?;
    cluster.isolate(leader);
    wait_for("the cut-off leader not ready", DEADLINE, || async {
        ready(leader_url.clone()).await.ok() == Some(503)
    })
    .await?;
    cluster.heal();
    wait_for("the old leader ready again", DEADLINE, || async {
        ready(leader_url.clone()).await.ok() == Some(200)
    })
    .await?;
    Ok(())
}

/// The console in headless Chromium: a three-node cluster with a znode, a lock held with two
/// waiters; the page, after its scripts ran, shows the znode, the holder with its fencing
/// token and the waiters in order, and the three members. Screenshots of the main views are
/// kept in the target directory (`console-screenshots`).
#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_the_tree_a_lock_and_the_members_in_a_browser() -> anyhow::Result<()> {
    browser::chromium()?;
    let dir = tempfile::tempdir()?;
    let cluster = start_cluster(dir.path(), 3, &[])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let client = cluster.client(leader).await?;
    // Readable by anyone, so by the console's anonymous viewer; a secret beside it is not.
    let anyone = vec![cairn_wire::AclEntry::anyone(cairn_wire::access::READ)];
    let persistent = CreateOptions::persistent;
    client.create_with_acl("/inventory", b"widgets: 42".to_vec(), persistent(), anyone).await?;
    client.create("/inventory/shelf-a", Vec::new(), persistent()).await?;
    let admins_only = vec![cairn_wire::AclEntry::user("admin", cairn_wire::access::ALL)];
    let combination = b"the combination".to_vec();
    client.create_with_acl("/inventory/secret", combination, persistent(), admins_only).await?;

    let holder = cluster.client(leader).await?;
    let held = holder.lock("orders").acquire().await?;
    let token = held.token();
    // Two waiters, queued in this order.
    let mut waiters = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let waiter = cluster.client(leader).await?;
        let queued = waiters.len() + 1;
        waiters.push(format!("{:#x}", waiter.session_id()));
        tasks.push(tokio::spawn(async move {
            let guard = waiter.lock("orders").acquire().await;
            (waiter, guard)
        }));
        let lock = client.lock("orders");
        wait_for("the waiter in the queue", DEADLINE, || async {
            lock.status().await.is_ok_and(|status| status.queue.len() == queued)
        })
        .await?;
    }
    let holder_session = format!("{:#x}", holder.session_id());

    // Any member shows the same replicated state; look at a follower's console.
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let url = admin_url(&cluster.nodes[(follower - 1) as usize])?;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots)?;

    let coordination = format!("{url}#coordination");
    let page = wait_for_page(&coordination, |dom| dom.contains(&waiters[1])).await?;
    let lock = section(&page, r#"data-name="orders""#);
    let holder_row = section(lock, r#"class="holder""#);
    assert!(holder_row.contains(&format!(r#"data-session="{holder_session}""#)), "{lock}");
    assert!(holder_row.contains(&format!(r#"<td class="num token">{token}</td>"#)), "{lock}");
    let first = lock.find(&format!(r#"data-session="{}""#, waiters[0]));
    let second = lock.find(&format!(r#"data-session="{}""#, waiters[1]));
    assert!(matches!((first, second), (Some(a), Some(b)) if a < b), "waiters out of order: {lock}");
    assert_eq!(lock.matches(r#"class="waiter""#).count(), 2, "{lock}");
    let shoot = |url: &str, file: &str, height: u32| {
        tokio::task::block_in_place(|| browser::screenshot(url, &shots.join(file), 1280, height))
    };
    shoot(&coordination, "coordination.png", 900)?;

    let tree = format!("{url}#tree:/inventory");
    let page = wait_for_page(&tree, |dom| dom.contains("widgets: 42")).await?;
    assert!(page.contains(r#"data-path="/inventory/shelf-a""#), "{page}");
    assert!(page.contains(r#"<h2 id="znode-path" class="mono">/inventory</h2>"#), "{page}");
    shoot(&tree, "tree.png", 800)?;
    // The viewer sees the secret's stat, not its data: as on the client ports, by its ACL.
    let secret = format!("{url}#tree:/inventory/secret");
    let page = wait_for_page(&secret, |dom| dom.contains("not readable")).await?;
    assert!(!page.contains("the combination"), "{page}");
    assert!(page.contains(r#"<h2 id="znode-path" class="mono">/inventory/secret</h2>"#), "{page}");

    let members = format!("{url}#cluster");
    let page = wait_for_page(&members, |dom| dom.matches(r#"class="member""#).count() == 3).await?;
    for id in 1..=3u64 {
        let role = if id == leader { "leader" } else { "follower" };
        let row = format!(r#"class="member" data-id="{id}" data-role="{role}""#);
        assert!(page.contains(&row), "no {row} in {page}");
    }
    shoot(&members, "cluster.png", 900)?;
    shoot(&format!("{url}#recipes"), "recipes.png", 800)?;
    shoot(&format!("{url}#sessions"), "sessions.png", 600)?;
    eprintln!("console screenshots in {}", shots.display());

    held.release().await?;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// The page at `url` once its scripts have shown what `shown` looks for.
async fn wait_for_page(url: &str, shown: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let mut last = String::new();
    let found = wait_for(&format!("the console at {url}"), DEADLINE, || {
        let dom = tokio::task::block_in_place(|| browser::dom(url)).unwrap_or_default();
        let done = shown(&dom);
        last = dom;
        async move { done }
    })
    .await;
    found.map(|()| last.clone()).map_err(|error| error.context(last))
}

/// The part of `page` from the element whose opening tag holds `marker` to the end of its
/// parent's content, roughly: enough to look inside one instance or row.
fn section<'a>(page: &'a str, marker: &str) -> &'a str {
    let Some(at) = page.find(marker) else { return "" };
    let start = page[..at].rfind('<').unwrap_or(at);
    let end = page[at..].find("</table>").map_or(page.len(), |end| at + end);
    &page[start..end]
}
