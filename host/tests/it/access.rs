//! Who may do what: principals from client certificates and tokens, znode ACLs, administrators'
//! rights and quotas, each right tried by a principal that has it and by one that does not.

use std::path::Path;
use std::time::Duration;

use cairn_client::{
    ADMIN, ALL, AclEntry, CREATE, Client, CreateOptions, Credentials, ErrorCode, EventKind, Quota,
    READ, WRITE,
};
use cairn_tests::{Server, wait_for};

use crate::{start_cluster, start_node};

const DEADLINE: Duration = Duration::from_secs(60);

/// A client certificate for principal `name` from `node`'s development CA.
fn user(node: &Server, dir: &Path, name: &str) -> anyhow::Result<Credentials> {
    let ca = node.certs_dir().join("ca.pem");
    let (cert, key) = cairn::tls::issue_client_certificate(&ca, name, dir)?;
    Ok(Credentials::from_ca_file(&ca)?.with_certificate_files(cert, key)?)
}

async fn connect(node: &Server, credentials: &Credentials) -> Result<Client, cairn_client::Error> {
    Client::connect(&node.addr().to_string(), credentials).await
}

/// Fails unless `result` is the node's refusal with `code`.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, cairn_client::Error>, code: ErrorCode) {
    match result {
        Err(error) if error.code() == Some(code) => {}
        other => panic!("expected {code}, got {other:?}"),
    }
}

fn counter_add() -> Vec<u8> {
    br#"{"name":"n","delta":1}"#.to_vec()
}

/// A client with no certificate and no token is the anonymous principal, and may do nothing
/// until an administrator grants it something.
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_may_do_nothing_until_granted() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    admin.create("/app", b"x".to_vec(), CreateOptions::persistent()).await?;
    let anonymous = connect(&node, &node.anonymous()).await?;
    assert_eq!(anonymous.who_am_i().await?, ("anonymous".to_string(), false));
    assert_eq!(admin.who_am_i().await?, ("admin".to_string(), true));

    refused(
        anonymous.create("/mine", Vec::new(), CreateOptions::persistent()).await,
        ErrorCode::NoAuth,
    );
    refused(anonymous.get("/app").await, ErrorCode::NoAuth);
    refused(anonymous.children("/").await, ErrorCode::NoAuth);
    refused(anonymous.exists("/app").await, ErrorCode::NoAuth);
    // Nor may it learn what is not there.
    refused(anonymous.exists("/nothing/here").await, ErrorCode::NoAuth);
    refused(anonymous.set("/app", b"y".to_vec(), None).await, ErrorCode::NoAuth);
    refused(anonymous.delete("/app", None).await, ErrorCode::NoAuth);
    refused(anonymous.watch("/", true).await, ErrorCode::NoAuth);
    refused(anonymous.invoke("counter", None, "add", counter_add()).await, ErrorCode::NoAuth);
    refused(anonymous.state_digest().await, ErrorCode::NoAuth);
    refused(anonymous.recipes().await, ErrorCode::NoAuth);
    refused(anonymous.create_token("anyone").await, ErrorCode::NoAuth);
    refused(anonymous.set_acl("/", vec![AclEntry::anyone(ALL)], None).await, ErrorCode::NoAuth);
    // It sees its own session only, and an outline of the node.
    let sessions = anonymous.sessions().await?;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].principal, "anonymous");
    assert!(admin.sessions().await?.len() >= 2);
    let outline = anonymous.server_info().await?;
    assert_eq!((outline.log_fsyncs, outline.members[0].peer_addr.as_str()), (0, ""));
    assert!(admin.server_info().await?.log_fsyncs > 0);

    // Granted read on the root and create on /app, it may read and create there, no more.
    admin.set_acl("/", vec![AclEntry::anyone(READ)], None).await?;
    admin.set_acl("/app", vec![AclEntry::user("anonymous", READ | CREATE)], None).await?;
    assert_eq!(anonymous.children("/").await?, ["app", "cairn"]);
    anonymous.create("/app/granted", Vec::new(), CreateOptions::persistent()).await?;
    refused(anonymous.set("/app", b"y".to_vec(), None).await, ErrorCode::NoAuth);
    Ok(())
}

/// Each right of a znode's ACL, tried by a principal that holds it and one that does not.
#[tokio::test(flavor = "multi_thread")]
async fn each_znode_right_is_granted_by_the_acl_and_only_by_it() -> anyhow::Result<()> {
    let (dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    let alice = connect(&node, &user(&node, dir.path(), "alice")?).await?;
    let bob = connect(&node, &user(&node, dir.path(), "bob")?).await?;
    let carol = connect(&node, &user(&node, dir.path(), "carol")?).await?;
    assert_eq!(alice.who_am_i().await?, ("alice".to_string(), false));

    let acl = vec![AclEntry::user("alice", ALL), AclEntry::user("bob", READ)];
    admin.create_with_acl("/app", Vec::new(), CreateOptions::persistent(), acl.clone()).await?;
    // create: alice may, bob may not. A child that names no ACL takes its parent's.
    alice.create("/app/x", b"1".to_vec(), CreateOptions::persistent()).await?;
    refused(bob.create("/app/y", Vec::new(), CreateOptions::persistent()).await, ErrorCode::NoAuth);
    assert_eq!(alice.get_acl("/app/x").await?.0, acl);
    // set
    alice.set("/app/x", b"2".to_vec(), None).await?;
    refused(bob.set("/app/x", b"3".to_vec(), None).await, ErrorCode::NoAuth);
    // get, children, exists: bob may read, carol may not, not even what is missing.
    assert_eq!(bob.get("/app/x").await?.0, b"2");
    refused(carol.get("/app/x").await, ErrorCode::NoAuth);
    assert_eq!(bob.children("/app").await?, ["x"]);
    refused(carol.children("/app").await, ErrorCode::NoAuth);
    assert!(bob.exists("/app/x").await?.is_some());
    assert!(bob.exists("/app/missing").await?.is_none());
    refused(carol.exists("/app/x").await, ErrorCode::NoAuth);
    refused(carol.exists("/app/missing").await, ErrorCode::NoAuth);
    refused(carol.get("/app/missing").await, ErrorCode::NoAuth);
    refused(bob.get("/app/missing").await, ErrorCode::NoNode);
    // watch registration: bob's watch fires on alice's change; carol cannot set one.
    refused(carol.get_watch("/app/x").await, ErrorCode::NoAuth);
    refused(carol.watch("/app", true).await, ErrorCode::NoAuth);
    let (_, _, watch) = bob.get_watch("/app/x").await?;
    alice.set("/app/x", b"4".to_vec(), None).await?;
    let fired = tokio::time::timeout(DEADLINE, watch.fired()).await??;
    assert_eq!(fired.kind, EventKind::DataChanged);
    // delete
    refused(bob.delete("/app/x", None).await, ErrorCode::NoAuth);
    alice.delete("/app/x", None).await?;
    // ACLs: read with read (or admin), change with admin, against the expected aversion.
    assert_eq!(bob.get_acl("/app").await?.0, acl);
    refused(carol.get_acl("/app").await, ErrorCode::NoAuth);
    let widened = vec![AclEntry::user("alice", ALL), AclEntry::user("bob", READ | WRITE)];
    refused(bob.set_acl("/app", widened.clone(), None).await, ErrorCode::NoAuth);
    let stat = alice.set_acl("/app", widened.clone(), Some(0)).await?;
    assert_eq!(stat.aversion, 1);
    refused(alice.set_acl("/app", widened, Some(0)).await, ErrorCode::BadVersion);
    // `auth` stands for whoever sets it.
    let auth = AclEntry { scheme: "auth".into(), id: String::new(), perms: ALL };
    alice.create_with_acl("/app/own", Vec::new(), CreateOptions::persistent(), vec![auth]).await?;
    assert_eq!(admin.get_acl("/app/own").await?.0, [AclEntry::user("alice", ALL)]);
    refused(bob.get("/app/own").await, ErrorCode::NoAuth);
    // Listing /app, bob sees the name but not the stat of a child he may not read.
    let (_, listed) = bob.children_with_stats("/app").await?;
    let own = listed.iter().find(|child| child.name == "own").expect("listed");
    assert!(own.stat.is_none(), "{own:?}");
    let (_, listed) = alice.children_with_stats("/app").await?;
    assert!(listed.iter().all(|child| child.stat.is_some()), "{listed:?}");
    // An administrator passes every ACL.
    admin.get("/app/own").await?;
    Ok(())
}

/// A recursive watch on the root hears nothing of a subtree its principal may not read.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_hears_nothing_it_may_not_read() -> anyhow::Result<()> {
    let (dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    let alice = connect(&node, &user(&node, dir.path(), "alice")?).await?;
    let carol = connect(&node, &user(&node, dir.path(), "carol")?).await?;
    admin.set_acl("/", vec![AclEntry::anyone(READ)], None).await?;
    let mut everything = carol.watch("/", true).await?;

    let secret = vec![AclEntry::user("alice", ALL)];
    admin.create_with_acl("/secret", Vec::new(), CreateOptions::persistent(), secret).await?;
    alice.create("/secret/plan", b"x".to_vec(), CreateOptions::persistent()).await?;
    alice.set("/secret/plan", b"y".to_vec(), None).await?;
    alice.delete("/secret/plan", None).await?;
    admin.create("/open", Vec::new(), CreateOptions::persistent()).await?;

    // Events come in zxid order: anything of /secret would come before /open.
    let first = tokio::time::timeout(DEADLINE, everything.next()).await?.expect("an event");
    assert_eq!((first.kind, first.path.as_str()), (EventKind::Created, "/open"));
    // Replayed after a reconnect, the history is filtered the same way (set-watches).
    assert!(everything.try_next().is_none());
    Ok(())
}

/// Deploying a new name, retiring, state digests, membership changes, tokens, quotas and
/// other principals' sessions are an administrator's; a recipe's owner deploys its versions;
/// invoking a recipe needs write on its namespace root.
#[tokio::test(flavor = "multi_thread")]
async fn administrators_rights_and_recipe_owners() -> anyhow::Result<()> {
    let (dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    let alice = connect(&node, &user(&node, dir.path(), "alice")?).await?;
    let bob = connect(&node, &user(&node, dir.path(), "bob")?).await?;
    let component = crate::recipes::component("counter");

    // invoke: write on /cairn/recipes/counter; the recipe then acts with alice's rights
    // there, so a new counter (a new znode) needs create too.
    refused(alice.invoke("counter", None, "add", counter_add()).await, ErrorCode::NoAuth);
    let namespace = "/cairn/recipes/counter";
    admin.set_acl(namespace, vec![AclEntry::user("alice", READ | WRITE)], None).await?;
    refused(alice.invoke("counter", None, "add", counter_add()).await, ErrorCode::NoAuth);
    let granted = vec![AclEntry::user("alice", READ | WRITE | CREATE)];
    admin.set_acl(namespace, granted, None).await?;
    alice.invoke("counter", None, "add", counter_add()).await?;
    refused(bob.invoke("counter", None, "add", counter_add()).await, ErrorCode::NoAuth);
    // It reads with her rights too: with write alone, reading a counter is refused.
    let get = br#"{"name":"n"}"#.to_vec();
    admin.set_acl(namespace, vec![AclEntry::user("alice", WRITE)], None).await?;
    refused(alice.invoke("counter", None, "get", get.clone()).await, ErrorCode::NoAuth);
    admin.set_acl(namespace, vec![AclEntry::user("alice", READ | WRITE | CREATE)], None).await?;
    alice.invoke("counter", None, "get", get).await?;
    // A recipe's own znodes take no ACL of their own: its root's governs them.
    let inner = admin.set_acl("/cairn/recipes/counter/n", vec![AclEntry::anyone(ALL)], None).await;
    refused(inner, ErrorCode::InvalidArgument);

    // deploy: a new name is an administrator's to create, and belongs to whom it says.
    refused(bob.deploy_recipe("bobs", None, component.clone()).await, ErrorCode::NoAuth);
    admin.deploy_recipe_for("bobs", "bob", component.clone()).await?;
    assert_eq!(bob.deploy_recipe("bobs", None, component.clone()).await?.0, 2);
    refused(alice.deploy_recipe("bobs", None, component.clone()).await, ErrorCode::NoAuth);
    // The built-ins belong to the system.
    refused(bob.deploy_recipe("counter", None, component.clone()).await, ErrorCode::NoAuth);
    // retire: administrators only, even for the owner.
    refused(bob.retire_recipe("bobs", 1).await, ErrorCode::NoAuth);
    admin.retire_recipe("bobs", 1).await?;
    refused(alice.freeze_recipes().await, ErrorCode::NoAuth);

    // state digests and membership changes.
    refused(alice.state_digest().await, ErrorCode::NoAuth);
    admin.state_digest().await?;
    refused(alice.remove_member(2).await, ErrorCode::NoAuth);
    refused(alice.add_member(9, "127.0.0.1:1", "127.0.0.1:2").await, ErrorCode::NoAuth);
    let not_for_rights = admin.remove_member(9).await;
    assert_ne!(not_for_rights.err().and_then(|e| e.code()), Some(ErrorCode::NoAuth));

    // sessions: each sees its own; an administrator sees all.
    let mine = alice.sessions().await?;
    assert!(mine.iter().all(|s| s.principal == "alice") && !mine.is_empty(), "{mine:?}");
    let all = admin.sessions().await?;
    assert!(all.iter().any(|s| s.principal == "bob"), "{all:?}");
    let mine = vec![AclEntry::user("bob", ALL)];
    admin.create_with_acl("/b", Vec::new(), CreateOptions::persistent(), mine).await?;
    bob.create("/b/e", Vec::new(), CreateOptions::ephemeral()).await?;
    // Another principal's session reads as one with nothing.
    assert!(alice.ephemerals(Some(bob.session_id())).await?.is_empty());
    assert_eq!(admin.ephemerals(Some(bob.session_id())).await?, ["/b/e"]);

    // tokens and quotas are administered by administrators.
    refused(alice.create_token("alice").await, ErrorCode::NoAuth);
    refused(alice.set_quota("alice", Quota::DEFAULT).await, ErrorCode::NoAuth);
    refused(alice.quota(Some("bob")).await, ErrorCode::NoAuth);
    assert_eq!(alice.quota(None).await?.0, "alice");

    // An administrator can make another; the last one cannot be removed.
    admin.set_admin("alice", true).await?;
    alice.state_digest().await?;
    let mut everything = alice.watch("/", true).await?;
    admin.set_admin("alice", false).await?;
    refused(admin.set_admin("admin", false).await, ErrorCode::InvalidArgument);
    refused(alice.state_digest().await, ErrorCode::NoAuth);
    // Her watch, set while she was one, hears from then on only what she may read.
    admin.create("/hidden", Vec::new(), CreateOptions::persistent()).await?;
    let seen = vec![AclEntry::user("alice", READ)];
    admin.create_with_acl("/seen", Vec::new(), CreateOptions::persistent(), seen).await?;
    let first = tokio::time::timeout(DEADLINE, everything.next()).await?.expect("an event");
    assert_eq!((first.kind, first.path.as_str()), (EventKind::Created, "/seen"));
    Ok(())
}

/// A token speaks for its principal until revoked; the cluster keeps only its hash.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_speaks_for_its_principal_until_revoked() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    let token = admin.create_token("ci").await?;
    assert_eq!(token.len(), 64, "{token}");
    refused(admin.create_token("ci").await, ErrorCode::NodeExists);
    admin
        .create_with_acl(
            "/builds",
            Vec::new(),
            CreateOptions::persistent(),
            vec![AclEntry::user("ci", ALL)],
        )
        .await?;
    let ci = connect(&node, &node.anonymous().with_token(token.clone())).await?;
    assert_eq!(ci.who_am_i().await?, ("ci".to_string(), false));
    ci.create("/builds/1", Vec::new(), CreateOptions::persistent()).await?;

    let wrong = connect(&node, &node.anonymous().with_token("0".repeat(64))).await;
    refused(wrong, ErrorCode::AuthFailed);
    // The state holds the hash, not the token.
    let (_, digest_before) = admin.state_digest().await?;
    assert!(!digest_before.is_empty());

    let mut builds = ci.watch("/builds", true).await?;
    admin.revoke_token("ci").await?;
    admin.create("/builds/after", Vec::new(), CreateOptions::persistent()).await?;
    // The stream that spoke with the token loses its watches at the revocation: it hears
    // `resync-needed`, not the create that came after.
    let event = tokio::time::timeout(DEADLINE, builds.next()).await?.expect("an event");
    assert_eq!(event.kind, EventKind::ResyncNeeded, "{event:?}");
    refused(
        ci.create("/builds/2", Vec::new(), CreateOptions::persistent()).await,
        ErrorCode::AuthFailed,
    );
    refused(ci.get("/builds/1").await, ErrorCode::AuthFailed);
    refused(connect(&node, &node.anonymous().with_token(token)).await, ErrorCode::AuthFailed);
    Ok(())
}

/// Quotas bound what one principal holds: sessions, watches, znodes, bytes and connections.
#[tokio::test(flavor = "multi_thread")]
async fn quotas_bound_each_principal() -> anyhow::Result<()> {
    let (dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    let alice_files = user(&node, dir.path(), "alice")?;
    admin
        .create_with_acl(
            "/a",
            Vec::new(),
            CreateOptions::persistent(),
            vec![AclEntry::user("alice", ALL)],
        )
        .await?;
    let quota = Quota { sessions: 2, connections: 10, watches: 1, znodes: 2, bytes: 1_000 };
    admin.set_quota("alice", quota).await?;

    let alice = connect(&node, &alice_files).await?;
    let second = connect(&node, &alice_files).await?;
    refused(connect(&node, &alice_files).await, ErrorCode::QuotaExceeded);
    // znodes: two, then no more until one goes.
    alice.create("/a/1", Vec::new(), CreateOptions::persistent()).await?;
    alice.create("/a/2", Vec::new(), CreateOptions::persistent()).await?;
    refused(
        alice.create("/a/3", Vec::new(), CreateOptions::persistent()).await,
        ErrorCode::QuotaExceeded,
    );
    alice.delete("/a/2", None).await?;
    alice.create("/a/3", Vec::new(), CreateOptions::persistent()).await?;
    // bytes: of path and data together.
    refused(alice.set("/a/1", vec![0; 1_000], None).await, ErrorCode::QuotaExceeded);
    alice.set("/a/1", vec![0; 500], None).await?;
    // watches: one.
    let _watch = alice.get_watch("/a/1").await?;
    refused(second.get_watch("/a/3").await, ErrorCode::QuotaExceeded);
    let (_, _, usage) = admin.quota(Some("alice")).await?;
    assert_eq!((usage.sessions, usage.znodes, usage.watches), (2, 2, 1));
    // What a recipe creates for alice counts against her quota, and the call says so.
    let use_counter = vec![AclEntry::user("alice", ALL & !ADMIN)];
    admin.set_acl("/cairn/recipes/counter", use_counter, None).await?;
    refused(alice.invoke("counter", None, "add", counter_add()).await, ErrorCode::QuotaExceeded);
    // Administrators are not bounded by anyone's quota; alice's does not touch bob's.
    for n in 0..3 {
        admin.create(&format!("/a/admin-{n}"), Vec::new(), CreateOptions::persistent()).await?;
    }

    // connections: on each node, refused at the handshake.
    admin.set_quota("alice", Quota { connections: 2, ..quota }).await?;
    assert!(connect(&node, &alice_files).await.is_err(), "a third connection");
    drop(second);
    wait_for("alice's second connection to close", DEADLINE, || async {
        admin.quota(Some("alice")).await.is_ok_and(|(_, _, usage)| usage.connections < 2)
    })
    .await?;
    admin.set_quota("alice", Quota { sessions: 3, ..quota }).await?;
    connect(&node, &alice_files).await?;
    Ok(())
}

/// ACLs, tokens and administrators are replicated state: every node agrees on them, and they
/// outlive a snapshot, the leader's death and a restart.
#[tokio::test(flavor = "multi_thread")]
async fn acls_and_tokens_survive_snapshots_failover_and_restarts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = start_cluster(dir.path(), 3, &["--snapshot-every", "20"])?;
    let leader = cluster.leader(&[1, 2, 3], DEADLINE).await?;
    let admin = Client::connect(&cluster.nodes[0].addr().to_string(), &cluster.admin()).await?;
    let acl = vec![AclEntry::user("alice", ALL), AclEntry::user("ci", READ | ADMIN)];
    admin.create_with_acl("/app", Vec::new(), CreateOptions::persistent(), acl.clone()).await?;
    let token = admin.create_token("ci").await?;
    // Enough entries for a snapshot on every node.
    for n in 0..30 {
        admin.create(&format!("/app/{n}"), Vec::new(), CreateOptions::persistent()).await?;
    }
    cluster.node(leader).kill()?;
    let running: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.leader(&running, DEADLINE).await?;
    cluster.node(leader).restart()?;
    cluster.wait_converged(DEADLINE).await?;

    let alice_files = user(&cluster.nodes[0], dir.path(), "alice")?;
    let bob_files = user(&cluster.nodes[0], dir.path(), "bob")?;
    for id in 1..=3u64 {
        let node = &cluster.nodes[usize::try_from(id - 1)?];
        let reader = connect(node, &cluster.admin()).await?;
        assert_eq!(reader.get_acl("/app").await?.0, acl, "node {id}");
        let ci = connect(node, &node.anonymous().with_token(token.clone())).await?;
        // The 30 written before, and one by alice through each node before this one.
        let expected = 30 + usize::try_from(id - 1)?;
        assert_eq!(ci.children("/app").await?.len(), expected, "node {id}");
        let alice = connect(node, &alice_files).await?;
        alice
            .create(&format!("/app/by-alice-{id}"), Vec::new(), CreateOptions::persistent())
            .await?;
        let bob = connect(node, &bob_files).await?;
        refused(bob.get("/app").await, ErrorCode::NoAuth);
    }
    cluster.wait_converged(DEADLINE).await?;
    Ok(())
}

/// A grant on a recipe's namespace root lets a principal use the recipe whole, what it made
/// before the grant included: a lock passes from an administrator to alice.
#[tokio::test(flavor = "multi_thread")]
async fn a_grant_on_a_recipe_reaches_everything_it_holds() -> anyhow::Result<()> {
    let (dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    let alice = connect(&node, &user(&node, dir.path(), "alice")?).await?;
    let held = admin.lock("jobs").acquire().await?;
    refused(alice.lock("jobs").try_acquire().await, ErrorCode::NoAuth);

    let granted = vec![AclEntry::user("alice", ALL & !ADMIN)];
    admin.set_acl("/cairn/recipes/fair-lock", granted, None).await?;
    let waiting = tokio::spawn(async move {
        let guard = alice.lock("jobs").acquire().await?;
        Ok::<_, cairn_client::Error>((guard.token(), alice))
    });
    crate::wait_for_status(&admin, "jobs", 1).await?;
    let before = held.token();
    held.release().await?;
    let (token, _alice) = tokio::time::timeout(DEADLINE, waiting).await???;
    assert!(token > before, "{token} after {before}");
    Ok(())
}
