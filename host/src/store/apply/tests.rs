//! Apply, write by write: the outcome table, invariants, and random commands.

use cairn_wire::{
    AclEntry, CreateMode, CreateRequest, DeleteRequest, EventKind, MultiOp, MultiResult,
    SetRequest, Stat, Usage, ZNODE_DATA_BYTES_MAX,
};

use super::*;
use crate::store::recipes::NoRecipes;
use crate::store::{Change, Principal, SecretHash, SessionId, Zxid};

impl DataTree {
    /// One write of a tree that runs no recipes, as `apply_command` applies it.
    fn apply(
        &mut self,
        zxid: u64,
        time_ms: u64,
        write: &Write,
        effects: &mut Effects,
    ) -> Result<Reply, ApiError> {
        self.apply_write(Zxid(zxid), time_ms, write, effects, &NoRecipes)
    }
}

fn request(path: &str) -> CreateRequest {
    CreateRequest {
        path: path.into(),
        data: path.as_bytes().to_vec(),
        null_data: false,
        mode: CreateMode::Persistent,
        sequential: false,
        ttl_ms: None,
        acl: None,
    }
}

fn create(path: &str) -> Action {
    Action::Create(request(path))
}

fn create_as(path: &str, mode: CreateMode, sequential: bool, ttl_ms: Option<u64>) -> Action {
    Action::Create(CreateRequest {
        path: path.into(),
        data: Vec::new(),
        null_data: false,
        mode,
        sequential,
        ttl_ms,
        acl: None,
    })
}

fn set(path: &str, data: &str, version: Option<u32>) -> Action {
    Action::Set(SetRequest { path: path.into(), data: data.into(), null_data: false, version })
}

fn delete(path: &str, version: Option<u32>) -> Action {
    Action::Delete(DeleteRequest { path: path.into(), version })
}

fn multi(ops: Vec<Action>) -> Action {
    Action::Multi(
        ops.into_iter()
            .map(|action| match action {
                Action::Create(r) => MultiOp::Create(r),
                Action::Set(r) => MultiOp::Set(r),
                Action::Delete(r) => MultiOp::Delete(r),
                other => panic!("{other:?} is not a multi op"),
            })
            .collect(),
    )
}

fn check(path: &str, version: Option<u32>) -> MultiOp {
    MultiOp::Check { path: path.into(), version }
}

/// Applies `actions` at zxids 1, 2, ... and times 1000, 2000, ..., checking every invariant
/// after each, and returns the tree with the last reply.
fn run(actions: &[Action]) -> (DataTree, Result<Reply, ApiError>) {
    let mut tree = DataTree::new();
    let mut last = Ok(Reply::Synced {});
    for (i, action) in actions.iter().enumerate() {
        let zxid = i as u64 + 1;
        let before = tree.clone();
        last =
            tree.apply(zxid, zxid * 1000, &Write::system(action.clone()), &mut Effects::default());
        tree.check_invariants().unwrap_or_else(|e| panic!("after {action:?}: {e}"));
        let failed = match &last {
            Err(_) => true,
            Ok(Reply::Multi { results }) => {
                results.iter().any(|r| matches!(r, MultiResult::Error(_)))
            }
            Ok(_) => false,
        };
        if failed {
            assert_eq!(tree.nodes, before.nodes, "a refused {action:?} changed the tree");
        }
    }
    (tree, last)
}

fn stat(tree: &DataTree, path: &str) -> Stat {
    tree.exists(path).expect("valid path").unwrap_or_else(|| panic!("{path} missing"))
}

fn code(result: &Result<Reply, ApiError>) -> Option<ErrorCode> {
    result.as_ref().err().map(|e| e.code)
}

enum Expect {
    Ok,
    Error(ErrorCode),
    Created(&'static str),
    MultiFailedAt(usize, ErrorCode),
}

struct Case {
    name: &'static str,
    actions: Vec<Action>,
    expect: Expect,
    /// Paths that must exist afterwards, and paths that must not.
    present: &'static [&'static str],
    absent: &'static [&'static str],
}

#[test]
fn table() {
    let ttl = |path: &str, ttl_ms| create_as(path, CreateMode::Ttl, false, Some(ttl_ms));
    let container = |path: &str| create_as(path, CreateMode::Container, false, None);
    let seq = |path: &str| create_as(path, CreateMode::Persistent, true, None);
    let big = Action::Create(CreateRequest {
        path: "/big".into(),
        data: vec![0; ZNODE_DATA_BYTES_MAX + 1],
        null_data: false,
        mode: CreateMode::Persistent,
        sequential: false,
        ttl_ms: None,
        acl: None,
    });
    let cases = vec![
        Case {
            name: "create under root",
            actions: vec![create("/a")],
            expect: Expect::Created("/a"),
            present: &["/a"],
            absent: &[],
        },
        Case {
            name: "create nested",
            actions: vec![create("/a"), create("/a/b")],
            expect: Expect::Created("/a/b"),
            present: &["/a/b"],
            absent: &[],
        },
        Case {
            name: "create without parent",
            actions: vec![create("/a/b")],
            expect: Expect::Error(ErrorCode::NoNode),
            present: &[],
            absent: &["/a/b"],
        },
        Case {
            name: "create twice",
            actions: vec![create("/a"), create("/a")],
            expect: Expect::Error(ErrorCode::NodeExists),
            present: &["/a"],
            absent: &[],
        },
        Case {
            name: "create root",
            actions: vec![create("/")],
            expect: Expect::Error(ErrorCode::NodeExists),
            present: &["/"],
            absent: &[],
        },
        Case {
            name: "create relative path",
            actions: vec![create("a")],
            expect: Expect::Error(ErrorCode::InvalidPath),
            present: &[],
            absent: &[],
        },
        Case {
            name: "create trailing slash",
            actions: vec![create("/a/")],
            expect: Expect::Error(ErrorCode::InvalidPath),
            present: &[],
            absent: &[],
        },
        Case {
            name: "create data too large",
            actions: vec![big],
            expect: Expect::Error(ErrorCode::TooLarge),
            present: &[],
            absent: &["/big"],
        },
        Case {
            name: "sequential first is zero",
            actions: vec![create("/q"), seq("/q/item-")],
            expect: Expect::Created("/q/item-0000000000"),
            present: &[],
            absent: &[],
        },
        Case {
            name: "sequential counts",
            actions: vec![create("/q"), seq("/q/item-"), seq("/q/item-")],
            expect: Expect::Created("/q/item-0000000001"),
            present: &["/q/item-0000000000"],
            absent: &[],
        },
        Case {
            // ZooKeeper numbers by children created; a deletion does not count.
            name: "sequential counts children created",
            actions: vec![create("/q"), create("/q/x"), delete("/q/x", None), seq("/q/")],
            expect: Expect::Created("/q/0000000001"),
            present: &[],
            absent: &["/q/x"],
        },
        Case {
            name: "sequential is not advanced by a multi that failed",
            actions: vec![
                create("/q"),
                multi(vec![seq("/q/a-"), create("/missing/x")]),
                seq("/q/a-"),
            ],
            expect: Expect::Created("/q/a-0000000000"),
            present: &[],
            absent: &[],
        },
        Case {
            name: "sequential under root",
            actions: vec![seq("/")],
            expect: Expect::Created("/0000000000"),
            present: &[],
            absent: &[],
        },
        Case {
            name: "set right version",
            actions: vec![create("/a"), set("/a", "x", Some(0)), set("/a", "y", Some(1))],
            expect: Expect::Ok,
            present: &["/a"],
            absent: &[],
        },
        Case {
            name: "set wrong version",
            actions: vec![create("/a"), set("/a", "x", Some(3))],
            expect: Expect::Error(ErrorCode::BadVersion),
            present: &[],
            absent: &[],
        },
        Case {
            name: "set missing",
            actions: vec![set("/a", "x", None)],
            expect: Expect::Error(ErrorCode::NoNode),
            present: &[],
            absent: &[],
        },
        Case {
            name: "delete wrong version",
            actions: vec![create("/a"), delete("/a", Some(1))],
            expect: Expect::Error(ErrorCode::BadVersion),
            present: &["/a"],
            absent: &[],
        },
        Case {
            name: "delete right version",
            actions: vec![create("/a"), delete("/a", Some(0))],
            expect: Expect::Ok,
            present: &[],
            absent: &["/a"],
        },
        Case {
            name: "delete with children",
            actions: vec![create("/a"), create("/a/b"), delete("/a", None)],
            expect: Expect::Error(ErrorCode::NotEmpty),
            present: &["/a", "/a/b"],
            absent: &[],
        },
        Case {
            name: "delete root",
            actions: vec![delete("/", None)],
            expect: Expect::Error(ErrorCode::InvalidArgument),
            present: &["/"],
            absent: &[],
        },
        Case {
            name: "delete missing",
            actions: vec![delete("/a", None)],
            expect: Expect::Error(ErrorCode::NoNode),
            present: &[],
            absent: &[],
        },
        Case {
            name: "container goes with its last child",
            actions: vec![
                container("/c"),
                create("/c/x"),
                create("/c/y"),
                delete("/c/x", None),
                delete("/c/y", None),
            ],
            expect: Expect::Ok,
            present: &[],
            absent: &["/c"],
        },
        Case {
            name: "container stays while a child is left",
            actions: vec![container("/c"), create("/c/x"), create("/c/y"), delete("/c/x", None)],
            expect: Expect::Ok,
            present: &["/c", "/c/y"],
            absent: &[],
        },
        Case {
            name: "nested containers cascade",
            actions: vec![
                container("/c"),
                container("/c/d"),
                create("/c/d/x"),
                delete("/c/d/x", None),
            ],
            expect: Expect::Ok,
            present: &[],
            absent: &["/c/d", "/c"],
        },
        Case {
            name: "container that never had children stays",
            actions: vec![container("/c")],
            expect: Expect::Created("/c"),
            present: &["/c"],
            absent: &[],
        },
        Case {
            name: "sequential container refused",
            actions: vec![create_as("/c", CreateMode::Container, true, None)],
            expect: Expect::Error(ErrorCode::InvalidArgument),
            present: &[],
            absent: &[],
        },
        Case {
            name: "ttl needs ttl_ms",
            actions: vec![create_as("/t", CreateMode::Ttl, false, None)],
            expect: Expect::Error(ErrorCode::InvalidArgument),
            present: &[],
            absent: &["/t"],
        },
        Case {
            name: "ttl of zero refused",
            actions: vec![ttl("/t", 0)],
            expect: Expect::Error(ErrorCode::InvalidArgument),
            present: &[],
            absent: &["/t"],
        },
        Case {
            name: "ttl_ms only for ttl",
            actions: vec![create_as("/p", CreateMode::Persistent, false, Some(5))],
            expect: Expect::Error(ErrorCode::InvalidArgument),
            present: &[],
            absent: &["/p"],
        },
        // Created at time 1000; reaped at 2000 (1000 ms later) but not at 1999.
        Case {
            name: "ttl reaped when due",
            actions: vec![ttl("/t", 1000), Action::ReapTtl],
            expect: Expect::Ok,
            present: &[],
            absent: &["/t"],
        },
        Case {
            name: "ttl kept before due",
            actions: vec![ttl("/t", 1001), Action::ReapTtl],
            expect: Expect::Ok,
            present: &["/t"],
            absent: &[],
        },
        Case {
            name: "ttl kept while it has children",
            actions: vec![ttl("/t", 1), create("/t/x"), Action::ReapTtl],
            expect: Expect::Ok,
            present: &["/t", "/t/x"],
            absent: &[],
        },
        Case {
            name: "ttl change restarts the clock",
            actions: vec![ttl("/t", 1500), set("/t", "x", None), Action::ReapTtl],
            expect: Expect::Ok,
            present: &["/t"],
            absent: &[],
        },
        Case {
            name: "ttl children reaped before parents",
            actions: vec![ttl("/t", 1), ttl("/t/u", 1), Action::ReapTtl],
            expect: Expect::Ok,
            present: &[],
            absent: &["/t/u", "/t"],
        },
        Case {
            name: "multi applies all",
            actions: vec![multi(vec![create("/m"), create("/m/a"), set("/m", "x", Some(0))])],
            expect: Expect::Ok,
            present: &["/m", "/m/a"],
            absent: &[],
        },
        Case {
            name: "multi failing check applies nothing",
            actions: vec![
                create("/k"),
                Action::Multi(vec![
                    MultiOp::Create(CreateRequest {
                        path: "/m".into(),
                        data: vec![],
                        null_data: false,
                        mode: CreateMode::Persistent,
                        sequential: false,
                        ttl_ms: None,
                        acl: None,
                    }),
                    MultiOp::Delete(DeleteRequest { path: "/k".into(), version: None }),
                    check("/k", Some(0)),
                ]),
            ],
            expect: Expect::MultiFailedAt(2, ErrorCode::NoNode),
            present: &["/k"],
            absent: &["/m"],
        },
        Case {
            name: "multi check of any version passes on a znode that is there",
            actions: vec![
                create("/k"),
                set("/k", "x", None),
                Action::Multi(vec![
                    check("/k", None),
                    MultiOp::Delete(DeleteRequest { path: "/k".into(), version: None }),
                ]),
            ],
            expect: Expect::Ok,
            present: &[],
            absent: &["/k"],
        },
        Case {
            name: "multi check of any version fails on a znode that is not",
            actions: vec![Action::Multi(vec![MultiOp::Create(request("/m")), check("/k", None)])],
            expect: Expect::MultiFailedAt(1, ErrorCode::NoNode),
            present: &[],
            absent: &["/m"],
        },
        Case {
            name: "multi failing set restores data",
            actions: vec![create("/k"), multi(vec![set("/k", "x", None), set("/k", "y", Some(0))])],
            expect: Expect::MultiFailedAt(1, ErrorCode::BadVersion),
            present: &["/k"],
            absent: &[],
        },
        Case {
            name: "multi sees its own writes",
            actions: vec![multi(vec![
                create("/m"),
                create("/m/a"),
                delete("/m/a", None),
                delete("/m", None),
            ])],
            expect: Expect::Ok,
            present: &[],
            absent: &["/m"],
        },
        Case {
            name: "multi container refill in one entry",
            actions: vec![
                container("/c"),
                create("/c/x"),
                multi(vec![delete("/c/x", None), create("/c/y")]),
            ],
            expect: Expect::Ok,
            present: &["/c", "/c/y"],
            absent: &["/c/x"],
        },
        Case {
            name: "empty multi",
            actions: vec![Action::Multi(vec![])],
            expect: Expect::Ok,
            present: &[],
            absent: &[],
        },
    ];
    for case in cases {
        let (tree, result) = run(&case.actions);
        match (&case.expect, &result) {
            (Expect::Ok, Ok(reply)) => {
                if let Reply::Multi { results } = reply {
                    assert!(
                        results.iter().all(|r| matches!(r, MultiResult::Ok(_))),
                        "{}: {results:?}",
                        case.name
                    );
                }
            }
            (Expect::Error(expected), _) => {
                assert_eq!(code(&result), Some(*expected), "{}", case.name)
            }
            (Expect::Created(expected), Ok(Reply::Created { path, .. })) => {
                assert_eq!(path, expected, "{}", case.name)
            }
            (Expect::MultiFailedAt(index, expected), Ok(Reply::Multi { results })) => {
                for (i, r) in results.iter().enumerate() {
                    let want = if i == *index { *expected } else { ErrorCode::RolledBack };
                    assert!(
                        matches!(r, MultiResult::Error(e) if e.code == want),
                        "{}: result {i} is {r:?}",
                        case.name
                    );
                }
            }
            (_, other) => panic!("{}: unexpected {other:?}", case.name),
        }
        for path in case.present {
            assert!(
                tree.exists(path).expect("valid").is_some(),
                "{}: {path} should exist",
                case.name
            );
        }
        for path in case.absent {
            assert!(
                tree.exists(path).expect("valid").is_none(),
                "{}: {path} should be gone",
                case.name
            );
        }
    }
}

/// The tree's node-wide bounds hold against every kind of write; deletes make room.
#[test]
fn the_tree_stays_within_its_limits() {
    use crate::store::TreeLimits;
    // The root (1 byte of path) and two znodes of 2 + 2 bytes fit; a third does not.
    let mut tree = DataTree::new().with_limits(TreeLimits { znodes_max: 3, bytes_max: 12 });
    let mut zxid = 0;
    let mut apply = |tree: &mut DataTree, action: Action| {
        zxid += 1;
        let reply = tree.apply(zxid, zxid, &Write::system(action), &mut Effects::default());
        tree.check_invariants().expect("invariants");
        match reply {
            Ok(Reply::Multi { results }) => results.iter().find_map(|result| match result {
                MultiResult::Error(error) if error.code != ErrorCode::RolledBack => {
                    Some(error.code)
                }
                _ => None,
            }),
            Ok(_) => None,
            Err(error) => Some(error.code),
        }
    };
    assert_eq!(apply(&mut tree, create("/a")), None);
    assert_eq!(apply(&mut tree, create("/b")), None);
    assert_eq!(tree.size(), (3, 9));
    assert_eq!(apply(&mut tree, create("/c")), Some(ErrorCode::QuotaExceeded));
    // A multi that would pass the bound writes nothing.
    assert_eq!(apply(&mut tree, delete("/b", None)), None);
    let both = multi(vec![create("/c"), create("/d")]);
    assert_eq!(apply(&mut tree, both), Some(ErrorCode::QuotaExceeded));
    assert_eq!(tree.size(), (2, 5));
    // Growing data counts; shrinking it always goes through.
    assert_eq!(apply(&mut tree, set("/a", "1234567", None)), None);
    assert_eq!(tree.size(), (2, 10));
    assert_eq!(apply(&mut tree, set("/a", "12345678901", None)), Some(ErrorCode::QuotaExceeded));
    assert_eq!(apply(&mut tree, set("/a", "", None)), None);
    assert_eq!(tree.size(), (2, 3));
}

#[test]
fn stat_follows_zookeeper() {
    let (tree, _) =
        run(&[create("/a"), create("/a/b"), set("/a", "xyz", None), delete("/a/b", None)]);
    let a = stat(&tree, "/a");
    assert_eq!((a.czxid, a.mzxid, a.pzxid), (1, 3, 4));
    assert_eq!((a.ctime, a.mtime), (1000, 3000));
    assert_eq!((a.version, a.cversion, a.aversion), (1, 2, 0));
    assert_eq!((a.data_length, a.num_children, a.ephemeral_owner), (3, 0, 0));
    let root = stat(&tree, "/");
    assert_eq!((root.cversion, root.pzxid, root.num_children), (1, 1, 1));
}

#[test]
fn null_data_is_kept_apart_from_empty() {
    let null = |path: &str| CreateRequest { data: Vec::new(), null_data: true, ..request(path) };
    let set_null = |path: &str| {
        Action::Set(SetRequest {
            path: path.into(),
            data: Vec::new(),
            null_data: true,
            version: None,
        })
    };
    let is_null = |tree: &DataTree, path: &str| tree.node(path).expect("there").null_data();
    let (tree, _) =
        run(&[Action::Create(null("/n")), create_as("/e", CreateMode::Persistent, false, None)]);
    assert!(is_null(&tree, "/n"), "created null");
    assert!(!is_null(&tree, "/e"), "created empty");
    assert_eq!(stat(&tree, "/n").data_length, 0);
    let (tree, _) = run(&[Action::Create(null("/n")), set("/n", "", None)]);
    assert!(!is_null(&tree, "/n"), "set to empty");
    let (tree, _) = run(&[create("/n"), set_null("/n")]);
    assert!(is_null(&tree, "/n"), "set to null");
    // A multi that fails puts the null back with the data.
    let (tree, _) = run(&[
        Action::Create(null("/n")),
        multi(vec![set("/n", "x", None), delete("/absent", None)]),
    ]);
    assert!(is_null(&tree, "/n"), "a failed multi leaves it null");
    // Null with data is not null: the data wins.
    let both = CreateRequest { data: b"x".to_vec(), null_data: true, ..request("/b") };
    let (tree, _) = run(&[Action::Create(both)]);
    assert!(!is_null(&tree, "/b"));
}

#[test]
fn time_never_goes_back() {
    let mut tree = DataTree::new();
    let mut effects = Effects::default();
    tree.apply(1, 5000, &Write::system(create("/a")), &mut effects).expect("create");
    // A new leader whose clock is behind stamps an earlier time.
    tree.apply(2, 4000, &Write::system(set("/a", "x", None)), &mut effects).expect("set");
    assert_eq!(stat(&tree, "/a").mtime, 5000);
    tree.check_invariants().expect("invariants");
}

#[test]
fn actions_of_one_entry_share_its_zxid_and_stand_alone() {
    let mut tree = DataTree::new();
    let writes = [create("/a"), create("/a"), create("/a/b"), set("/a", "x", Some(0))];
    let command =
        Command { time_ms: 1000, writes: writes.into_iter().map(Write::system).collect() };
    let replies = tree
        .apply_command(
            Zxid(7),
            &command,
            &mut Effects::default(),
            &crate::store::recipes::NoRecipes,
        )
        .expect("no fault");
    assert!(replies[0].is_ok());
    assert_eq!(replies[1].as_ref().err().map(|e| e.code), Some(ErrorCode::NodeExists));
    assert!(replies[2].is_ok() && replies[3].is_ok(), "a refused action undoes no other");
    let a = stat(&tree, "/a");
    assert_eq!((a.czxid, a.mzxid, a.pzxid, a.version), (7, 7, 7, 1));
    tree.check_invariants().expect("invariants");
}

#[test]
fn ttl_due_matches_reap() {
    let (tree, _) = run(&[create_as("/t", CreateMode::Ttl, false, Some(500))]);
    assert!(!tree.ttl_due(1499));
    assert!(tree.ttl_due(1500));
}

#[test]
fn sessions_own_their_ephemerals() {
    let mut tree = DataTree::new();
    let mut zxid = 0;
    let mut effects = Effects::default();
    let mut apply =
        |tree: &mut DataTree, session: Option<u64>, action: Action, effects: &mut Effects| {
            zxid += 1;
            let write =
                Write { session: session.map(SessionId), principal: Principal::System, action };
            let reply = tree.apply(zxid, zxid * 1000, &write, effects);
            tree.check_invariants().unwrap_or_else(|e| panic!("after {write:?}: {e}"));
            reply
        };
    let ephemeral = |path: &str| create_as(path, CreateMode::Ephemeral, false, None);
    let open = Action::OpenSession { timeout_ms: 1000, secret_hash: SecretHash::of(7) };
    let reply = apply(&mut tree, None, open, &mut effects);
    assert_eq!(reply, Ok(Reply::Session { session_id: 1, secret: 0, timeout_ms: 1000 }));
    assert_eq!(tree.session(SessionId(1)).map(|s| s.secret_hash), Some(SecretHash::of(7)));

    assert!(
        apply(&mut tree, None, create_as("/c", CreateMode::Container, false, None), &mut effects)
            .is_ok()
    );
    assert!(apply(&mut tree, Some(1), ephemeral("/c/e"), &mut effects).is_ok());
    assert!(apply(&mut tree, Some(1), ephemeral("/e"), &mut effects).is_ok());
    assert_eq!(stat(&tree, "/e").ephemeral_owner, 1);
    let code_of = |reply: Result<Reply, ApiError>| reply.err().map(|e| e.code);
    assert_eq!(
        code_of(apply(&mut tree, None, ephemeral("/x"), &mut effects)),
        Some(ErrorCode::NoSession)
    );
    assert_eq!(
        code_of(apply(&mut tree, Some(9), ephemeral("/x"), &mut effects)),
        Some(ErrorCode::SessionExpired)
    );
    assert_eq!(
        code_of(apply(&mut tree, Some(1), create("/e/child"), &mut effects)),
        Some(ErrorCode::NoChildrenForEphemerals)
    );
    assert_eq!(tree.ephemerals_of(SessionId(1)).cloned().collect::<Vec<_>>(), ["/c/e", "/e"]);

    // A snapshot keeps the session and rebuilds its index of ephemerals.
    let image = tree.to_image().expect("encodes");
    assert_eq!(DataTree::from_image(&image).expect("loads"), tree);

    let mut ended = Effects::default();
    let expire = Action::ExpireSession { session: SessionId(1) };
    assert_eq!(apply(&mut tree, None, expire.clone(), &mut ended), Ok(Reply::Synced {}));
    assert_eq!(ended.ended_sessions, vec![SessionId(1)]);
    for path in ["/e", "/c/e", "/c"] {
        assert!(tree.exists(path).expect("valid").is_none(), "{path} outlived its session");
        let deleted = |c: &Change| c.kind == EventKind::Deleted && c.path == path;
        assert!(ended.changes.iter().any(deleted), "{path}");
    }
    assert!(tree.session(SessionId(1)).is_none());
    assert_eq!(
        code_of(apply(&mut tree, None, expire, &mut effects)),
        Some(ErrorCode::SessionExpired)
    );
    assert_eq!(
        code_of(apply(&mut tree, Some(1), Action::CloseSession, &mut effects)),
        Some(ErrorCode::SessionExpired)
    );

    let too_short = Action::OpenSession { timeout_ms: 1, secret_hash: SecretHash::of(0) };
    assert_eq!(
        code_of(apply(&mut tree, None, too_short, &mut effects)),
        Some(ErrorCode::InvalidArgument)
    );
    // Ids are never reused.
    let reply = apply(
        &mut tree,
        None,
        Action::OpenSession { timeout_ms: 1000, secret_hash: SecretHash::of(1) },
        &mut effects,
    );
    assert!(matches!(reply, Ok(Reply::Session { session_id: 2, .. })));
}

#[test]
fn changes_name_what_watches_hear_of() {
    let mut tree = DataTree::new();
    let mut effects = Effects::default();
    for (zxid, action) in [create("/a"), set("/a", "x", None), create("/a/b"), delete("/a/b", None)]
        .into_iter()
        .enumerate()
    {
        tree.apply(zxid as u64 + 1, 0, &Write::system(action), &mut effects).expect("applies");
    }
    let expected = [
        (EventKind::ChildrenChanged, "/"),
        (EventKind::Created, "/a"),
        (EventKind::DataChanged, "/a"),
        (EventKind::ChildrenChanged, "/a"),
        (EventKind::Created, "/a/b"),
        (EventKind::Deleted, "/a/b"),
        (EventKind::ChildrenChanged, "/a"),
    ];
    let got: Vec<(EventKind, &str)> =
        effects.changes.iter().map(|c| (c.kind, c.path.as_str())).collect();
    assert_eq!(got, expected);

    // A refused multi reports no change at all.
    let mut refused = Effects::default();
    let failing = multi(vec![create("/z"), delete("/missing", None)]);
    tree.apply(9, 0, &Write::system(failing), &mut refused).expect("answers");
    assert!(refused.changes.is_empty(), "{refused:?}");
}

/// Random commands against the tree: invariants hold after each, refused commands change
/// nothing, and a snapshot image loads back to the same tree.
#[test]
fn random_commands_keep_invariants() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = ["/a", "/b", "/a/x", "/a/y", "/b/x", "/a/x/z"];
    let mut actions = Vec::new();
    for _ in 0..2000 {
        let path = names[next(names.len() as u64) as usize];
        let version = (next(3) > 0).then(|| next(3) as u32);
        let action = match next(8) {
            0 | 1 => create(path),
            2 => create_as(path, CreateMode::Container, false, None),
            3 => create_as(path, CreateMode::Ttl, next(2) == 0, Some(1 + next(3000))),
            4 => set(path, "v", version),
            5 => delete(path, version),
            6 => Action::ReapTtl,
            _ => multi(vec![
                create(path),
                set(path, "m", None),
                delete(names[next(6) as usize], None),
            ]),
        };
        actions.push(action);
    }
    let (tree, _) = run(&actions);
    let image = tree.to_image().expect("encodes");
    let loaded = DataTree::from_image(&image).expect("loads");
    assert_eq!(loaded, tree);
}

/// Applies `action` as `principal` at the next zxid.
fn apply_as(tree: &mut DataTree, principal: &Principal, action: Action) -> Result<Reply, ApiError> {
    let zxid = tree.last_zxid().0 + 1;
    let write = Write { session: None, principal: principal.clone(), action };
    let reply = tree.apply(zxid, zxid, &write, &mut Effects::default());
    tree.check_invariants().expect("invariants hold");
    reply
}

#[test]
fn a_multi_with_one_op_it_may_not_do_changes_nothing_and_counts_nothing() {
    use cairn_wire::access::{ALL, READ};
    let mut tree = DataTree::new();
    let alice = Principal::Certificate("alice".into());
    let acl = vec![AclEntry::user("alice", ALL)];
    let mut app = CreateRequest { acl: Some(acl), ..request("/app") };
    app.data = Vec::new();
    apply_as(&mut tree, &Principal::System, Action::Create(app)).expect("created");
    let locked = CreateRequest { acl: Some(vec![AclEntry::user("alice", READ)]), ..request("/ro") };
    apply_as(&mut tree, &Principal::System, Action::Create(locked)).expect("created");
    let before = tree.clone();

    // Two creates alice may do, then one under a znode she may only read.
    let ops = vec![
        MultiOp::Create(request("/app/a")),
        MultiOp::Create(request("/app/b")),
        MultiOp::Create(request("/ro/c")),
    ];
    let Ok(Reply::Multi { results }) = apply_as(&mut tree, &alice, Action::Multi(ops)) else {
        panic!("a multi answers per operation");
    };
    assert!(matches!(&results[2], MultiResult::Error(e) if e.code == ErrorCode::NoAuth));
    assert!(tree.node("/app/a").is_none());
    assert_eq!(tree.usage("alice"), Usage::default(), "nothing left counted against alice");
    assert_eq!(tree.nodes, before.nodes);

    // Done alone, the creates count against alice, and deleting gives the room back.
    apply_as(&mut tree, &alice, create("/app/a")).expect("created");
    assert_eq!(tree.usage("alice").znodes, 1);
    apply_as(&mut tree, &alice, delete("/app/a", None)).expect("deleted");
    assert_eq!(tree.usage("alice"), Usage::default());
}

#[test]
fn an_acl_changes_only_with_admin_right_and_the_expected_aversion() {
    use cairn_wire::access::{ADMIN, ALL, READ};
    let mut tree = DataTree::new();
    let (alice, bob) =
        (Principal::Certificate("alice".into()), Principal::Certificate("bob".into()));
    let acl = vec![AclEntry::user("alice", ADMIN), AclEntry::user("bob", READ)];
    let app = CreateRequest { acl: Some(acl), ..request("/app") };
    apply_as(&mut tree, &Principal::System, Action::Create(app)).expect("created");
    let set =
        |version| Action::SetAcl { path: "/app".into(), acl: vec![AclEntry::anyone(ALL)], version };
    let refused = apply_as(&mut tree, &bob, set(None)).expect_err("bob may only read");
    assert_eq!(refused.code, ErrorCode::NoAuth);
    let stale = apply_as(&mut tree, &alice, set(Some(3))).expect_err("stale aversion");
    assert_eq!(stale.code, ErrorCode::BadVersion);
    let Ok(Reply::Stat { stat }) = apply_as(&mut tree, &alice, set(Some(0))) else {
        panic!("set");
    };
    assert_eq!(stat.aversion, 1);
    assert_eq!(**tree.node("/app").expect("there").acl(), [AclEntry::anyone(ALL)]);
    // A missing znode is no-auth to whoever may not read above it, no-node to who may.
    let missing = Action::SetAcl { path: "/nope/x".into(), acl: Vec::new(), version: None };
    assert_eq!(apply_as(&mut tree, &bob, missing.clone()).expect_err("").code, ErrorCode::NoAuth);
    let readable = Action::SetAcl { path: "/app/x".into(), acl: Vec::new(), version: None };
    assert_eq!(apply_as(&mut tree, &bob, readable).expect_err("").code, ErrorCode::NoNode);
}

#[test]
fn a_prefix_of_children_and_the_first_sequential_are_found_without_a_listing() {
    let (tree, outcome) = run(&[
        create("/q"),
        create_as("/q/w-b-", CreateMode::Persistent, true, None),
        create_as("/q/w-a-", CreateMode::Persistent, true, None),
        create_as("/q/w-a-", CreateMode::Persistent, true, None),
        create("/q/plain"),
        create("/q/w-c-0000000123x"),
    ]);
    outcome.expect("created");
    let names = |prefix: &str, limit| tree.children_with_prefix("/q", prefix, limit).expect("ok");
    assert_eq!(names("w-a-", 10), ["w-a-0000000001", "w-a-0000000002"]);
    assert_eq!(names("w-a-", 1), ["w-a-0000000001"]);
    assert_eq!(names("w-", 10).len(), 4);
    assert!(names("w-d-", 10).is_empty());
    // The lowest sequence number, wherever its name sorts; names not ending in ten digits are
    // no candidates.
    let first = tree.first_sequential("/q").expect("ok");
    assert_eq!(first.as_deref(), Some("w-b-0000000000"));
    assert_eq!(tree.first_sequential("/q/plain").expect("ok"), None);
    // The index follows deletions, and is rebuilt from a snapshot.
    let (tree, outcome) = run(&[
        create("/q"),
        create_as("/q/w-b-", CreateMode::Persistent, true, None),
        create_as("/q/w-a-", CreateMode::Persistent, true, None),
        delete("/q/w-b-0000000000", None),
    ]);
    outcome.expect("deleted");
    assert_eq!(tree.first_sequential("/q").expect("ok").as_deref(), Some("w-a-0000000001"));
    let image = tree.to_image().expect("encodes");
    let restored = DataTree::from_image(&image).expect("decodes");
    assert_eq!(restored.first_sequential("/q").expect("ok").as_deref(), Some("w-a-0000000001"));
    assert_eq!(restored, tree);
    let missing = tree.first_sequential("/nowhere").expect_err("no node");
    assert_eq!(missing.code, ErrorCode::NoNode);
    let missing = tree.children_with_prefix("/nowhere", "", 1).expect_err("no node");
    assert_eq!(missing.code, ErrorCode::NoNode);
}
