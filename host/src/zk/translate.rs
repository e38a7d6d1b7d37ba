//! ZooKeeper requests as Cairn's, and Cairn's replies as ZooKeeper frames. Pure: the
//! connection (zk/mod.rs) proposes or reads what this says and writes what it encodes.

use cairn_wire::access::{ADMIN, CREATE, DELETE, READ, WRITE};
use cairn_wire::{
    AclEntry, ApiError, CreateMode, CreateRequest, DeleteRequest, ErrorCode, EventKind, MultiOp,
    MultiResult, OpResult, RemoveKind, Reply, Request as CairnRequest, SetRequest, WatchKind,
    WatchSpec,
};

use super::jute::Writer;
use super::proto::{self, Acl, Create, Request, code, event, op};
use crate::store::Action;
use crate::store::access::{digest_principal, digest_user, from_hex};

/// What a ZooKeeper request becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A write, through the log.
    Write(Action),
    /// A read of this node's state (ZooKeeper's reads are served by the server a client is
    /// connected to).
    Read(CairnRequest),
    /// Reads of this node's state, each answered on its own (`multiRead`).
    Reads(Vec<CairnRequest>),
    /// Answered at once with this error code.
    Refuse(i32),
}

/// A ZooKeeper ACL as Cairn's: `world:anyone` as is; `x509` and `digest` name the principal
/// (the certificate's CN, or the digest's user name); anything else is `invalid-acl`.
pub fn acl_entries(acl: &[Acl]) -> Result<Vec<AclEntry>, i32> {
    acl.iter()
        .map(|entry| {
            let perms = u32::try_from(entry.perms).map_err(|_| code::INVALID_ACL)?;
            if perms & !(READ | WRITE | CREATE | DELETE | ADMIN) != 0 {
                return Err(code::INVALID_ACL);
            }
            let (scheme, id) = match entry.scheme.as_str() {
                "world" if entry.id == "anyone" => ("world", "anyone".to_string()),
                "auth" => ("auth", String::new()),
                "digest" => ("user", digest_acl_principal(&entry.id)?),
                "x509" => ("user", cn_of(&entry.id).to_string()),
                _ => return Err(code::INVALID_ACL),
            };
            Ok(AclEntry { scheme: scheme.into(), id, perms })
        })
        .collect()
}

/// The principal of a digest ACL id, `user:base64(sha1(user:password))`.
fn digest_acl_principal(id: &str) -> Result<String, i32> {
    use base64::Engine;
    let (user, hash) = id.split_once(':').ok_or(code::INVALID_ACL)?;
    let sha1 =
        base64::engine::general_purpose::STANDARD.decode(hash).map_err(|_| code::INVALID_ACL)?;
    digest_principal(user, &sha1).ok_or(code::INVALID_ACL)
}

/// The digest identity `user:password` proves (`addauth digest user:password`), as the
/// principal it speaks for.
pub fn digest_identity(credentials: &[u8]) -> Option<String> {
    use sha1::Digest;
    let text = std::str::from_utf8(credentials).ok()?;
    let (user, _password) = text.split_once(':')?;
    digest_principal(user, &sha1::Sha1::digest(text.as_bytes()))
}

/// The CN of an X.509 subject (`CN=alice,O=example`), or the whole text if it names none.
fn cn_of(subject: &str) -> &str {
    subject.split(',').find_map(|part| part.trim().strip_prefix("CN=")).unwrap_or(subject)
}

/// What a redacted digest identity's hash reads as (ZooKeeper's `digest:user:x`).
const REDACTED: &str = "x";

/// Hides the hash of every digest identity in `acl`, for a caller that may not administer the
/// znode, as ZooKeeper hides it (the hash is all an offline guess of the password needs).
pub fn redact_digests(acl: &mut [AclEntry]) {
    for entry in acl.iter_mut().filter(|entry| entry.scheme == "user") {
        if let Some((user, _)) = entry.id.rsplit_once("@digest.") {
            entry.id = format!("{user}@digest.{REDACTED}");
        }
    }
}

/// The digest ACL id (`user:base64(sha1)`) of a digest identity's principal name, if it is one.
fn digest_acl_id(principal: &str) -> Option<String> {
    use base64::Engine;
    let (user, hex) = digest_user(principal)?;
    if hex == REDACTED {
        return Some(format!("{user}:{REDACTED}"));
    }
    let sha1 = from_hex(hex)?;
    Some(format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(sha1)))
}

/// Cairn's ACL as ZooKeeper's: a digest identity's principal as `digest:user:<base64 sha1>`,
/// any other `user:NAME` as `x509:CN=NAME`.
pub fn zk_acl(acl: &[AclEntry]) -> Vec<Acl> {
    acl.iter()
        .map(|entry| {
            let (scheme, id) = match entry.scheme.as_str() {
                "user" => match digest_acl_id(&entry.id) {
                    Some(id) => ("digest".to_string(), id),
                    None => ("x509".to_string(), format!("CN={}", entry.id)),
                },
                other => (other.to_string(), entry.id.clone()),
            };
            Acl { perms: entry.perms as i32, scheme, id }
        })
        .collect()
}

/// A create's mode, as ZooKeeper's flags give it: the mode, and whether it is sequential.
fn create_mode(flags: i32, ttl_ms: Option<i64>) -> Result<(CreateMode, bool, Option<u64>), i32> {
    let ttl = || ttl_ms.filter(|ttl| *ttl > 0).map(|ttl| ttl as u64).ok_or(code::BAD_ARGUMENTS);
    Ok(match flags {
        0 => (CreateMode::Persistent, false, None),
        1 => (CreateMode::Ephemeral, false, None),
        2 => (CreateMode::Persistent, true, None),
        3 => (CreateMode::Ephemeral, true, None),
        4 => (CreateMode::Container, false, None),
        5 => (CreateMode::Ttl, false, Some(ttl()?)),
        6 => (CreateMode::Ttl, true, Some(ttl()?)),
        _ => return Err(code::BAD_ARGUMENTS),
    })
}

/// A ZooKeeper version (-1: any) as Cairn's.
fn version(version: i32) -> Option<u32> {
    u32::try_from(version).ok()
}

fn create(create: &Create) -> Result<Action, i32> {
    let (mode, sequential, ttl_ms) = create_mode(create.flags, create.ttl_ms)?;
    if (create.op == op::CREATE_TTL) != ttl_ms.is_some() {
        return Err(code::BAD_ARGUMENTS);
    }
    if (create.op == op::CREATE_CONTAINER) != (mode == CreateMode::Container) {
        return Err(code::BAD_ARGUMENTS);
    }
    // ZooKeeper refuses an empty ACL; Cairn would read it as "the parent's".
    if create.acl.is_empty() {
        return Err(code::INVALID_ACL);
    }
    Ok(Action::Create(CreateRequest {
        path: create.path.clone(),
        data: create.data.clone().unwrap_or_default(),
        null_data: create.data.is_none(),
        mode,
        sequential,
        ttl_ms,
        acl: Some(acl_entries(&create.acl)?),
    }))
}

/// A `multi`'s operation as Cairn's.
fn multi_op(request: &Request) -> Result<MultiOp, i32> {
    match request {
        Request::Create(c) => match create(c)? {
            Action::Create(request) => Ok(MultiOp::Create(request)),
            _ => Err(code::SYSTEM_ERROR),
        },
        Request::Delete { path, version: v } => {
            Ok(MultiOp::Delete(DeleteRequest { path: path.clone(), version: version(*v) }))
        }
        Request::SetData { path, data, version: v } => Ok(MultiOp::Set(SetRequest {
            path: path.clone(),
            data: data.clone().unwrap_or_default(),
            null_data: data.is_none(),
            version: version(*v),
        })),
        // ZooKeeper's -1 (Curator's default) checks only that the znode exists.
        Request::Check { path, version: v } => {
            Ok(MultiOp::Check { path: path.clone(), version: version(*v) })
        }
        _ => Err(code::BAD_ARGUMENTS),
    }
}

/// A `multiRead`'s operation as a Cairn read (watch flags are ignored, as ZooKeeper does).
fn read_op(request: &Request) -> Result<CairnRequest, i32> {
    match request {
        Request::GetData { path, .. } => {
            Ok(CairnRequest::Get { path: path.clone(), watch: false, local: true })
        }
        Request::GetChildren { path, .. } => Ok(CairnRequest::Children {
            path: path.clone(),
            with_stats: false,
            watch: false,
            local: true,
        }),
        _ => Err(code::BAD_ARGUMENTS),
    }
}

/// A ZooKeeper watcher type (`Watcher.WatcherType`) as what Cairn removes.
pub fn remove_kind(kind: i32) -> Option<RemoveKind> {
    match kind {
        1 => Some(RemoveKind::Children),
        2 => Some(RemoveKind::Data),
        3 => Some(RemoveKind::Any),
        4 => Some(RemoveKind::Persistent),
        5 => Some(RemoveKind::PersistentRecursive),
        _ => None,
    }
}

/// A reconnecting client's watches as Cairn's.
fn watch_specs(lists: [(&[String], WatchKind); 5]) -> Vec<WatchSpec> {
    lists
        .iter()
        .flat_map(|(paths, kind)| {
            paths.iter().map(|path| WatchSpec { path: path.clone(), kind: *kind })
        })
        .collect()
}

/// What `request` becomes.
pub fn plan(request: &Request) -> Plan {
    let write = |action: Result<Action, i32>| match action {
        Ok(action) => Plan::Write(action),
        Err(code) => Plan::Refuse(code),
    };
    match request {
        Request::Create(c) => write(create(c)),
        Request::Delete { path, version: v } => {
            write(Ok(Action::Delete(DeleteRequest { path: path.clone(), version: version(*v) })))
        }
        Request::SetData { path, data, version: v } => write(Ok(Action::Set(SetRequest {
            path: path.clone(),
            data: data.clone().unwrap_or_default(),
            null_data: data.is_none(),
            version: version(*v),
        }))),
        // ZooKeeper refuses an empty ACL.
        Request::SetAcl { acl, .. } if acl.is_empty() => Plan::Refuse(code::INVALID_ACL),
        Request::SetAcl { path, acl, version: v } => {
            write(acl_entries(acl).map(|acl| Action::SetAcl {
                path: path.clone(),
                acl,
                version: version(*v),
            }))
        }
        Request::GetData { path, watch } => {
            Plan::Read(CairnRequest::Get { path: path.clone(), watch: *watch, local: true })
        }
        Request::Exists { path, watch } => {
            Plan::Read(CairnRequest::Exists { path: path.clone(), watch: *watch, local: true })
        }
        Request::GetChildren { path, watch, with_stat: _ } => Plan::Read(CairnRequest::Children {
            path: path.clone(),
            with_stats: false,
            watch: *watch,
            local: true,
        }),
        Request::GetAcl { path } => Plan::Read(CairnRequest::GetAcl { path: path.clone() }),
        Request::WhoAmI => Plan::Read(CairnRequest::WhoAmI {}),
        Request::Multi(ops) => {
            write(ops.iter().map(multi_op).collect::<Result<_, _>>().map(Action::Multi))
        }
        Request::MultiRead(ops) => match ops.iter().map(read_op).collect() {
            Ok(reads) => Plan::Reads(reads),
            Err(code) => Plan::Refuse(code),
        },
        Request::Check { .. } => Plan::Refuse(code::BAD_ARGUMENTS),
        Request::SetWatches { relative_zxid, data, exist, child, persistent, recursive } => {
            Plan::Read(CairnRequest::SetWatches {
                since_zxid: u64::try_from(*relative_zxid).unwrap_or(0),
                watches: watch_specs([
                    (data, WatchKind::Data),
                    (exist, WatchKind::Exists),
                    (child, WatchKind::Children),
                    (persistent, WatchKind::Persistent),
                    (recursive, WatchKind::PersistentRecursive),
                ]),
            })
        }
        Request::AddWatch { path, mode } => match mode {
            0 | 1 => {
                Plan::Read(CairnRequest::AddWatch { path: path.clone(), recursive: *mode == 1 })
            }
            _ => Plan::Refuse(code::BAD_ARGUMENTS),
        },
        Request::CheckWatches { path, kind, remove: true } => match remove_kind(*kind) {
            Some(kind) => Plan::Read(CairnRequest::RemoveWatches { path: path.clone(), kind }),
            None => Plan::Refuse(code::BAD_ARGUMENTS),
        },
        // Membership changes go through Cairn's own `cluster add`/`remove`.
        Request::Unimplemented { op: op::RECONFIG } => Plan::Refuse(code::RECONFIG_DISABLED),
        Request::Unimplemented { .. } => Plan::Refuse(code::UNIMPLEMENTED),
        // The connection serves these itself.
        Request::CheckWatches { remove: false, .. }
        | Request::Sync { .. }
        | Request::Ping
        | Request::CloseSession
        | Request::GetAllChildrenNumber { .. }
        | Request::Auth { .. }
        | Request::GetEphemerals { .. } => Plan::Refuse(code::UNIMPLEMENTED),
    }
}

/// The reply frame to `request` (xid `xid`) whose answer was `reply`, at `zxid`.
pub fn reply_frame(
    xid: i32,
    zxid: u64,
    request: &Request,
    reply: Result<Reply, ApiError>,
) -> Vec<u8> {
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => return proto::bare_reply(xid, zxid, proto::zk_code(error.code)),
    };
    let mut writer = Writer::new();
    proto::reply_header(&mut writer, xid, zxid, code::OK);
    match (request, reply) {
        (Request::Create(c), Reply::Created { path, stat }) => {
            writer.string(&path);
            if c.op != op::CREATE {
                proto::stat(&mut writer, &stat);
            }
        }
        (Request::Delete { .. }, Reply::Deleted {}) => {}
        (Request::SetData { .. } | Request::SetAcl { .. }, Reply::Stat { stat }) => {
            proto::stat(&mut writer, &stat);
        }
        (Request::GetData { .. }, Reply::Data { data, null, stat }) => {
            writer.buffer((!null).then_some(data.as_slice()));
            proto::stat(&mut writer, &stat);
        }
        (Request::Exists { .. }, Reply::Exists { stat: Some(stat) }) => {
            proto::stat(&mut writer, &stat);
        }
        // ZooKeeper answers `exists` of a missing znode with no-node (and sets the watch).
        (Request::Exists { .. }, Reply::Exists { stat: None }) => {
            return proto::bare_reply(xid, zxid, code::NO_NODE);
        }
        (Request::GetChildren { with_stat, .. }, Reply::Children { stat, children }) => {
            let names: Vec<&str> = children.iter().map(|child| child.name.as_str()).collect();
            writer.strings(&names);
            if *with_stat {
                proto::stat(&mut writer, &stat);
            }
        }
        (Request::GetAcl { .. }, Reply::Acl { acl, stat }) => {
            let acl = zk_acl(&acl);
            writer.int(acl.len() as i32);
            for entry in &acl {
                writer.int(entry.perms).string(&entry.scheme).string(&entry.id);
            }
            proto::stat(&mut writer, &stat);
        }
        (Request::Multi(ops), Reply::Multi { results }) => {
            multi_results(&mut writer, ops, &results)
        }
        (Request::SetWatches { .. }, Reply::Watching {}) => {}
        // ZooKeeper answers addWatch with an ErrorResponse of 0, which clients read.
        (Request::AddWatch { .. }, Reply::Watching {}) => {
            writer.int(code::OK);
        }
        (Request::CheckWatches { .. }, Reply::WatchesRemoved { count }) => {
            if count == 0 {
                return proto::bare_reply(xid, zxid, code::NO_WATCHER);
            }
        }
        (Request::WhoAmI, Reply::Identity { principal, .. }) => {
            // One ClientInfo {authScheme, user}.
            writer.int(1).string("cairn").string(&principal);
        }
        (_, other) => {
            let error = ApiError::new(ErrorCode::Internal)
                .with_detail(format!("unexpected answer {other:?} to {request:?}"));
            tracing::error!(%error, "zookeeper front end");
            return proto::bare_reply(xid, zxid, code::SYSTEM_ERROR);
        }
    }
    writer.framed()
}

/// A `multi`'s results as ZooKeeper gives them. When one operation failed, nothing was
/// applied: ZooKeeper answers each earlier operation with error 0, the failing one with its
/// code, each later one with runtime-inconsistency, and the header's error stays 0.
fn multi_results(writer: &mut Writer, ops: &[Request], results: &[MultiResult]) {
    let failed = results.iter().position(
        |result| matches!(result, MultiResult::Error(error) if error.code != ErrorCode::RolledBack),
    );
    for (index, (op, result)) in ops.iter().zip(results).enumerate() {
        if let Some(failed) = failed {
            let err = match index.cmp(&failed) {
                std::cmp::Ordering::Less => code::OK,
                std::cmp::Ordering::Equal => match result {
                    MultiResult::Error(error) => proto::zk_code(error.code),
                    MultiResult::Ok(_) => code::SYSTEM_ERROR,
                },
                std::cmp::Ordering::Greater => code::RUNTIME_INCONSISTENCY,
            };
            proto::multi_header(writer, op::ERROR, false, err);
            writer.int(err);
            continue;
        }
        match result {
            MultiResult::Ok(OpResult::Created { path, stat }) => {
                let Request::Create(create) = op else { continue };
                // A plain create answers with its path; the others with the stat too.
                let kind = if create.op == op::CREATE { op::CREATE } else { op::CREATE2 };
                proto::multi_header(writer, kind, false, code::OK);
                writer.string(path);
                if kind == op::CREATE2 {
                    proto::stat(writer, stat);
                }
            }
            MultiResult::Ok(OpResult::Set { stat }) => {
                proto::multi_header(writer, op::SET_DATA, false, code::OK);
                proto::stat(writer, stat);
            }
            MultiResult::Ok(OpResult::Deleted {}) => {
                proto::multi_header(writer, op::DELETE, false, code::OK)
            }
            MultiResult::Ok(OpResult::Checked {}) => {
                proto::multi_header(writer, op::CHECK, false, code::OK)
            }
            MultiResult::Error(error) => {
                let err = proto::zk_code(error.code);
                proto::multi_header(writer, op::ERROR, false, err);
                writer.int(err);
            }
        }
    }
    proto::multi_header(writer, op::ERROR, true, -1);
}

/// The reply to a `multiRead`: each read's result or error, on its own.
pub fn multi_read_frame(xid: i32, zxid: u64, replies: Vec<Result<Reply, ApiError>>) -> Vec<u8> {
    let mut writer = Writer::new();
    proto::reply_header(&mut writer, xid, zxid, code::OK);
    for reply in replies {
        match reply {
            Ok(Reply::Data { data, null, stat }) => {
                proto::multi_header(&mut writer, op::GET_DATA, false, code::OK);
                writer.buffer((!null).then_some(data.as_slice()));
                proto::stat(&mut writer, &stat);
            }
            Ok(Reply::Children { children, .. }) => {
                proto::multi_header(&mut writer, op::GET_CHILDREN, false, code::OK);
                let names: Vec<&str> = children.iter().map(|child| child.name.as_str()).collect();
                writer.strings(&names);
            }
            other => {
                let err = match other {
                    Err(error) => proto::zk_code(error.code),
                    Ok(_) => code::SYSTEM_ERROR,
                };
                proto::multi_header(&mut writer, op::ERROR, false, err);
                writer.int(err);
            }
        }
    }
    proto::multi_header(&mut writer, op::ERROR, true, -1);
    writer.framed()
}

/// The watch event type of a Cairn event, if ZooKeeper has one for it.
pub fn event_type(kind: EventKind) -> Option<i32> {
    match kind {
        EventKind::Created => Some(event::NODE_CREATED),
        EventKind::Deleted => Some(event::NODE_DELETED),
        EventKind::DataChanged => Some(event::NODE_DATA_CHANGED),
        EventKind::ChildrenChanged => Some(event::NODE_CHILDREN_CHANGED),
        EventKind::ResyncNeeded | EventKind::SessionExpired | EventKind::Notification => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_request(op: i32, flags: i32, ttl_ms: Option<i64>) -> Request {
        let acl = vec![Acl { perms: 31, scheme: "world".into(), id: "anyone".into() }];
        Request::Create(Create { op, path: "/a".into(), data: None, acl, flags, ttl_ms })
    }

    #[test]
    fn create_modes_map_to_cairns() {
        let mode = |op, flags, ttl| match plan(&create_request(op, flags, ttl)) {
            Plan::Write(Action::Create(c)) => Ok((c.mode, c.sequential, c.ttl_ms)),
            Plan::Refuse(code) => Err(code),
            other => panic!("{other:?}"),
        };
        assert_eq!(mode(op::CREATE, 0, None), Ok((CreateMode::Persistent, false, None)));
        assert_eq!(mode(op::CREATE2, 3, None), Ok((CreateMode::Ephemeral, true, None)));
        assert_eq!(mode(op::CREATE_CONTAINER, 4, None), Ok((CreateMode::Container, false, None)));
        assert_eq!(mode(op::CREATE_TTL, 6, Some(500)), Ok((CreateMode::Ttl, true, Some(500))));
        assert_eq!(mode(op::CREATE, 4, None), Err(code::BAD_ARGUMENTS), "container by create");
        assert_eq!(mode(op::CREATE_TTL, 5, Some(0)), Err(code::BAD_ARGUMENTS), "no TTL");
        assert_eq!(mode(op::CREATE, 9, None), Err(code::BAD_ARGUMENTS));
    }

    #[test]
    fn acls_map_both_ways() {
        // kazoo's make_digest_acl("alice", "secret"): base64 of SHA-1 of "alice:secret".
        let zk = vec![
            Acl {
                perms: 1,
                scheme: "digest".into(),
                id: "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=".into(),
            },
            Acl { perms: 31, scheme: "x509".into(), id: "CN=bob,O=example".into() },
            Acl { perms: 3, scheme: "world".into(), id: "anyone".into() },
        ];
        let cairn = acl_entries(&zk).expect("maps");
        let alice = digest_identity(b"alice:secret").expect("a digest identity");
        assert_eq!(
            cairn,
            vec![AclEntry::user(&alice, 1), AclEntry::user("bob", 31), AclEntry::anyone(3)]
        );
        assert_eq!(zk_acl(&cairn)[0], zk[0], "a digest identity reads back as it was given");
        assert_ne!(digest_identity(b"alice:guess"), Some(alice), "the password is the proof");
        assert_eq!(digest_identity(b"no colon"), None);
        let bad = vec![Acl { perms: 1, scheme: "digest".into(), id: "alice:not base64!".into() }];
        assert_eq!(acl_entries(&bad), Err(code::INVALID_ACL));
        assert_eq!(
            zk_acl(&cairn)[1],
            Acl { perms: 31, scheme: "x509".into(), id: "CN=bob".into() }
        );
        let ip = vec![Acl { perms: 1, scheme: "ip".into(), id: "10.0.0.1".into() }];
        assert_eq!(acl_entries(&ip), Err(code::INVALID_ACL));
        let bad = vec![Acl { perms: 64, scheme: "world".into(), id: "anyone".into() }];
        assert_eq!(acl_entries(&bad), Err(code::INVALID_ACL));
    }

    #[test]
    fn a_digest_user_may_have_any_name_zookeeper_allows() {
        use base64::Engine;
        use sha1::Digest;
        // kazoo's own: a backslash, a slash and "ä" in the name.
        let credentials = "xe4/\\hm\u{e4}:/\\pw".as_bytes();
        let proved = digest_identity(credentials).expect("a digest identity");
        let hash =
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(credentials));
        let id = format!("xe4/\\hm\u{e4}:{hash}");
        let acl = vec![Acl { perms: 31, scheme: "digest".into(), id: id.clone() }];
        let cairn = acl_entries(&acl).expect("maps");
        assert_eq!(cairn, vec![AclEntry::user(&proved, 31)], "the ACL names who proved it");
        assert_eq!(zk_acl(&cairn)[0].id, id, "and reads back as it was given");
        // A plain name that looks like an encoded one is still itself.
        let plain = digest_identity(b"u40:pw").expect("plain");
        assert!(plain.starts_with("u40@digest."), "{plain}");
        assert_ne!(digest_identity(b"@40:pw"), digest_identity(b"u40:pw"));
    }

    #[test]
    fn digest_hashes_are_hidden_from_who_may_not_administer() {
        let alice = digest_identity(b"alice:secret").expect("a digest identity");
        let mut acl =
            vec![AclEntry::user(&alice, 31), AclEntry::user("bob", 1), AclEntry::anyone(1)];
        redact_digests(&mut acl);
        let zk = zk_acl(&acl);
        assert_eq!(zk[0], Acl { perms: 31, scheme: "digest".into(), id: "alice:x".into() });
        assert_eq!(zk[1].id, "CN=bob", "not a digest identity: as it was");
        assert_eq!(zk[2].id, "anyone");
    }

    #[test]
    fn add_watch_answers_with_an_error_response_of_zero() {
        let request = Request::AddWatch { path: "/a".into(), mode: 1 };
        let frame = reply_frame(3, 9, &request, Ok(Reply::Watching {}));
        let mut body = proto::bare_reply(3, 9, code::OK)[4..].to_vec();
        body.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(&frame[4..], body.as_slice(), "the header, then err 0");
    }

    #[test]
    fn errors_keep_the_xid_and_use_zookeepers_codes() {
        let request = Request::GetData { path: "/x".into(), watch: false };
        let frame = reply_frame(7, 9, &request, Err(ApiError::new(ErrorCode::NoNode)));
        assert_eq!(frame, proto::bare_reply(7, 9, code::NO_NODE));
        let exists = Request::Exists { path: "/x".into(), watch: true };
        let frame = reply_frame(8, 9, &exists, Ok(Reply::Exists { stat: None }));
        assert_eq!(frame, proto::bare_reply(8, 9, code::NO_NODE));
    }
}
