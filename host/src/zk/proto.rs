//! ZooKeeper's client records (`zookeeper.jute`, ZooKeeper 3.8): the connect handshake, every
//! request Cairn decodes, every reply it encodes, and the numbers of opcodes, error codes,
//! create modes, event types and states. Pure: frames in, frames out.

use cairn_wire::{ErrorCode, MULTI_OPS_MAX, Stat};

use super::jute::{JuteError, Reader, Writer};

/// ZooKeeper's opcodes (`ZooDefs.OpCode`).
pub mod op {
    pub const NOTIFICATION: i32 = 0;
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const DELETE_CONTAINER: i32 = 20;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CREATE_SESSION: i32 = -10;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

/// Reserved xids (`ClientCnxn`): what the header's xid means when it is not a request's own.
pub mod xid {
    /// A watch notification (server to client).
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
    pub const AUTH: i32 = -4;
    pub const SET_WATCHES: i32 = -8;
}

/// ZooKeeper's error codes (`KeeperException.Code`).
pub mod code {
    pub const OK: i32 = 0;
    pub const SYSTEM_ERROR: i32 = -1;
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    pub const MARSHALLING_ERROR: i32 = -5;
    pub const UNIMPLEMENTED: i32 = -6;
    pub const OPERATION_TIMEOUT: i32 = -7;
    pub const BAD_ARGUMENTS: i32 = -8;
    pub const API_ERROR: i32 = -100;
    pub const NO_NODE: i32 = -101;
    pub const NO_AUTH: i32 = -102;
    pub const BAD_VERSION: i32 = -103;
    pub const NO_CHILDREN_FOR_EPHEMERALS: i32 = -108;
    pub const NODE_EXISTS: i32 = -110;
    pub const NOT_EMPTY: i32 = -111;
    pub const SESSION_EXPIRED: i32 = -112;
    pub const INVALID_ACL: i32 = -114;
    pub const AUTH_FAILED: i32 = -115;
    pub const NO_WATCHER: i32 = -121;
    pub const RECONFIG_DISABLED: i32 = -123;
    pub const QUOTA_EXCEEDED: i32 = -125;
    pub const THROTTLED_OP: i32 = -127;
}

/// Watch event types (`Watcher.Event.EventType`).
pub mod event {
    pub const NONE: i32 = -1;
    pub const NODE_CREATED: i32 = 1;
    pub const NODE_DELETED: i32 = 2;
    pub const NODE_DATA_CHANGED: i32 = 3;
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
    pub const DATA_WATCH_REMOVED: i32 = 5;
    pub const CHILD_WATCH_REMOVED: i32 = 6;
    pub const PERSISTENT_WATCH_REMOVED: i32 = 7;
}

/// The connection state a watch event carries (`Watcher.Event.KeeperState`).
pub const STATE_SYNC_CONNECTED: i32 = 3;

/// An opcode's name as ZooKeeper's `ZooDefs.OpCode` spells it, for metrics; `unknown` for one
/// it does not name.
pub fn op_name(opcode: i32) -> &'static str {
    match opcode {
        op::CREATE => "create",
        op::DELETE => "delete",
        op::EXISTS => "exists",
        op::GET_DATA => "getData",
        op::SET_DATA => "setData",
        op::GET_ACL => "getACL",
        op::SET_ACL => "setACL",
        op::GET_CHILDREN => "getChildren",
        op::SYNC => "sync",
        op::PING => "ping",
        op::GET_CHILDREN2 => "getChildren2",
        op::CHECK => "check",
        op::MULTI => "multi",
        op::CREATE2 => "create2",
        op::RECONFIG => "reconfig",
        op::CHECK_WATCHES => "checkWatches",
        op::REMOVE_WATCHES => "removeWatches",
        op::CREATE_CONTAINER => "createContainer",
        op::DELETE_CONTAINER => "deleteContainer",
        op::CREATE_TTL => "createTTL",
        op::MULTI_READ => "multiRead",
        op::AUTH => "auth",
        op::SET_WATCHES => "setWatches",
        op::SASL => "sasl",
        op::GET_EPHEMERALS => "getEphemerals",
        op::GET_ALL_CHILDREN_NUMBER => "getAllChildrenNumber",
        op::SET_WATCHES2 => "setWatches2",
        op::ADD_WATCH => "addWatch",
        op::WHO_AM_I => "whoAmI",
        op::CREATE_SESSION => "createSession",
        op::CLOSE_SESSION => "closeSession",
        _ => "unknown",
    }
}

/// An error code's name as ZooKeeper's `KeeperException.Code` spells it (lower case), for
/// metrics: `ok`, or `other` for one Cairn never answers.
pub fn code_name(err: i32) -> &'static str {
    match err {
        code::OK => "ok",
        code::SYSTEM_ERROR => "systemerror",
        code::RUNTIME_INCONSISTENCY => "runtimeinconsistency",
        code::MARSHALLING_ERROR => "marshallingerror",
        code::UNIMPLEMENTED => "unimplemented",
        code::OPERATION_TIMEOUT => "operationtimeout",
        code::BAD_ARGUMENTS => "badarguments",
        code::API_ERROR => "apierror",
        code::NO_NODE => "nonode",
        code::NO_AUTH => "noauth",
        code::BAD_VERSION => "badversion",
        code::NO_CHILDREN_FOR_EPHEMERALS => "nochildrenforephemerals",
        code::NODE_EXISTS => "nodeexists",
        code::NOT_EMPTY => "notempty",
        code::SESSION_EXPIRED => "sessionexpired",
        code::INVALID_ACL => "invalidacl",
        code::AUTH_FAILED => "authfailed",
        code::NO_WATCHER => "nowatcher",
        code::RECONFIG_DISABLED => "reconfigdisabled",
        code::QUOTA_EXCEEDED => "quotaexceeded",
        code::THROTTLED_OP => "throttledop",
        _ => "other",
    }
}

/// The ZooKeeper error code for a Cairn error.
pub fn zk_code(code: ErrorCode) -> i32 {
    match code {
        ErrorCode::NoNode => code::NO_NODE,
        ErrorCode::NodeExists => code::NODE_EXISTS,
        ErrorCode::BadVersion => code::BAD_VERSION,
        ErrorCode::NotEmpty => code::NOT_EMPTY,
        ErrorCode::NoChildrenForEphemerals => code::NO_CHILDREN_FOR_EPHEMERALS,
        ErrorCode::SessionExpired | ErrorCode::NoSession => code::SESSION_EXPIRED,
        ErrorCode::NoAuth => code::NO_AUTH,
        ErrorCode::AuthFailed => code::AUTH_FAILED,
        ErrorCode::InvalidAcl => code::INVALID_ACL,
        ErrorCode::QuotaExceeded | ErrorCode::TooManyWatches | ErrorCode::TooManySessions => {
            code::QUOTA_EXCEEDED
        }
        ErrorCode::RolledBack => code::RUNTIME_INCONSISTENCY,
        ErrorCode::InvalidPath
        | ErrorCode::InvalidArgument
        | ErrorCode::TooLarge
        | ErrorCode::SequenceOverflow
        | ErrorCode::MalformedRequest
        | ErrorCode::RequestTooLarge => code::BAD_ARGUMENTS,
        ErrorCode::Unavailable | ErrorCode::NotLeader => code::OPERATION_TIMEOUT,
        _ => code::SYSTEM_ERROR,
    }
}

/// The handshake a connection opens with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    /// 0 for a new session.
    pub session_id: i64,
    pub passwd: Vec<u8>,
    /// Whether the client sent the trailing read-only byte (3.4+ clients do), and its value:
    /// the reply carries the byte only if the request did.
    pub read_only: Option<bool>,
}

impl ConnectRequest {
    pub fn decode(frame: &[u8]) -> Result<ConnectRequest, JuteError> {
        let mut reader = Reader::new(frame);
        let request = ConnectRequest {
            protocol_version: reader.int("protocolVersion")?,
            last_zxid_seen: reader.long("lastZxidSeen")?,
            timeout_ms: reader.int("timeOut")?,
            session_id: reader.long("sessionId")?,
            passwd: reader.buffer("passwd")?.unwrap_or_default(),
            read_only: if reader.remaining() > 0 {
                Some(reader.boolean("readOnly")?)
            } else {
                None
            },
        };
        Ok(request)
    }
}

/// The handshake's answer: `timeout_ms` 0 says the session has expired.
pub fn connect_response(
    timeout_ms: i32,
    session_id: i64,
    passwd: &[u8],
    read_only: Option<bool>,
) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.int(0).int(timeout_ms).long(session_id).buffer(Some(passwd));
    if read_only.is_some() {
        writer.boolean(false);
    }
    writer.framed()
}

/// One entry of a ZooKeeper ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub perms: i32,
    pub scheme: String,
    pub id: String,
}

fn acl(reader: &mut Reader<'_>) -> Result<Acl, JuteError> {
    Ok(Acl {
        perms: reader.int("perms")?,
        scheme: reader.string("scheme")?,
        // kazoo writes an empty id (the `auth` scheme's) as null; ZooKeeper reads it as empty.
        id: reader.ustring("id")?.unwrap_or_default(),
    })
}

/// A create, of any of the four opcodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    pub op: i32,
    pub path: String,
    /// `None` is null data, which ZooKeeper keeps apart from empty.
    pub data: Option<Vec<u8>>,
    pub acl: Vec<Acl>,
    /// The create mode (`CreateMode.toFlag`): 0 persistent, 1 ephemeral, 2 persistent
    /// sequential, 3 ephemeral sequential, 4 container, 5 persistent with TTL, 6 persistent
    /// sequential with TTL.
    pub flags: i32,
    pub ttl_ms: Option<i64>,
}

/// A request, decoded by its opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create(Create),
    Delete {
        path: String,
        version: i32,
    },
    Exists {
        path: String,
        watch: bool,
    },
    GetData {
        path: String,
        watch: bool,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    GetAcl {
        path: String,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    /// `getChildren` (`with_stat` false) and `getChildren2`.
    GetChildren {
        path: String,
        watch: bool,
        with_stat: bool,
    },
    Sync {
        path: String,
    },
    /// `setWatches` (the first three lists) and `setWatches2`: a reconnecting client's watches,
    /// each to fire at once if its znode changed after `relative_zxid`.
    SetWatches {
        relative_zxid: i64,
        data: Vec<String>,
        exist: Vec<String>,
        child: Vec<String>,
        persistent: Vec<String>,
        recursive: Vec<String>,
    },
    /// `addWatch`: mode 0 persistent, 1 persistent and recursive.
    AddWatch {
        path: String,
        mode: i32,
    },
    /// `checkWatches` and `removeWatches`, of a watcher type: 1 children, 2 data, 3 any, 4
    /// persistent, 5 persistent recursive.
    CheckWatches {
        path: String,
        kind: i32,
        remove: bool,
    },
    /// `check`, inside a `multi` only: the znode is at `version`.
    Check {
        path: String,
        version: i32,
    },
    /// `multi`: creates, deletes, sets and checks, all or none.
    Multi(Vec<Request>),
    /// `multiRead`: getData and getChildren, each on its own.
    MultiRead(Vec<Request>),
    Ping,
    CloseSession,
    /// `auth` (xid -4): a scheme and its credentials.
    Auth {
        scheme: String,
        auth: Vec<u8>,
    },
    GetAllChildrenNumber {
        path: String,
    },
    GetEphemerals {
        prefix: String,
    },
    WhoAmI,
    /// An opcode Cairn does not serve: answered `unimplemented`, the connection stays.
    Unimplemented {
        op: i32,
    },
}

/// The most bytes of one frame (`jute.maxbuffer`'s default, 1 MiB, less the 4-byte length):
/// a longer one closes the connection, as ZooKeeper's server does.
pub const FRAME_BYTES_MAX: usize = 1024 * 1024;

impl Request {
    /// The request of a frame whose header said `op`.
    pub fn decode(op: i32, reader: &mut Reader<'_>) -> Result<Request, JuteError> {
        Ok(match op {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
                let path = reader.string("path")?;
                let data = reader.buffer("data")?;
                let acl = reader.vector("acl", 12, acl)?;
                let flags = reader.int("flags")?;
                let ttl_ms = if op == op::CREATE_TTL { Some(reader.long("ttl")?) } else { None };
                Request::Create(Create { op, path, data, acl, flags, ttl_ms })
            }
            op::DELETE => {
                Request::Delete { path: reader.string("path")?, version: reader.int("version")? }
            }
            op::EXISTS => {
                Request::Exists { path: reader.string("path")?, watch: reader.boolean("watch")? }
            }
            op::GET_DATA => {
                Request::GetData { path: reader.string("path")?, watch: reader.boolean("watch")? }
            }
            op::SET_DATA => Request::SetData {
                path: reader.string("path")?,
                data: reader.buffer("data")?,
                version: reader.int("version")?,
            },
            op::GET_ACL => Request::GetAcl { path: reader.string("path")? },
            op::SET_ACL => Request::SetAcl {
                path: reader.string("path")?,
                acl: reader.vector("acl", 12, acl)?,
                version: reader.int("version")?,
            },
            op::GET_CHILDREN | op::GET_CHILDREN2 => Request::GetChildren {
                path: reader.string("path")?,
                watch: reader.boolean("watch")?,
                with_stat: op == op::GET_CHILDREN2,
            },
            op::SYNC => Request::Sync { path: reader.string("path")? },
            op::SET_WATCHES | op::SET_WATCHES2 => Request::SetWatches {
                relative_zxid: reader.long("relativeZxid")?,
                data: reader.strings("dataWatches")?,
                exist: reader.strings("existWatches")?,
                child: reader.strings("childWatches")?,
                persistent: if op == op::SET_WATCHES2 {
                    reader.strings("persistentWatches")?
                } else {
                    Vec::new()
                },
                recursive: if op == op::SET_WATCHES2 {
                    reader.strings("persistentRecursiveWatches")?
                } else {
                    Vec::new()
                },
            },
            op::ADD_WATCH => {
                Request::AddWatch { path: reader.string("path")?, mode: reader.int("mode")? }
            }
            op::CHECK_WATCHES | op::REMOVE_WATCHES => Request::CheckWatches {
                path: reader.string("path")?,
                kind: reader.int("type")?,
                remove: op == op::REMOVE_WATCHES,
            },
            op::MULTI | op::MULTI_READ => {
                let ops = multi_ops(op, reader)?;
                if op == op::MULTI { Request::Multi(ops) } else { Request::MultiRead(ops) }
            }
            op::PING => Request::Ping,
            op::CLOSE_SESSION => Request::CloseSession,
            op::AUTH => {
                let _type = reader.int("type")?;
                Request::Auth {
                    scheme: reader.string("scheme")?,
                    auth: reader.buffer("auth")?.unwrap_or_default(),
                }
            }
            op::GET_ALL_CHILDREN_NUMBER => {
                Request::GetAllChildrenNumber { path: reader.string("path")? }
            }
            op::GET_EPHEMERALS => Request::GetEphemerals { prefix: reader.string("prefixPath")? },
            op::WHO_AM_I => Request::WhoAmI,
            op => Request::Unimplemented { op },
        })
    }
}

/// The operations of a `multi` or `multiRead` (`MultiOperationRecord`): each after a header
/// {type, done, err}, until a header with `done`. At most [`MULTI_OPS_MAX`], of the kinds the
/// request allows.
fn multi_ops(op: i32, reader: &mut Reader<'_>) -> Result<Vec<Request>, JuteError> {
    let mut ops = Vec::new();
    loop {
        let kind = reader.int("type")?;
        let done = reader.boolean("done")?;
        let _err = reader.int("err")?;
        if done {
            return Ok(ops);
        }
        if ops.len() == MULTI_OPS_MAX {
            let why = format!("more than {MULTI_OPS_MAX} operations");
            return Err(JuteError::Invalid { field: "multi", why });
        }
        let allowed = match op {
            op::MULTI => matches!(
                kind,
                op::CREATE
                    | op::CREATE2
                    | op::CREATE_TTL
                    | op::CREATE_CONTAINER
                    | op::DELETE
                    | op::SET_DATA
                    | op::CHECK
            ),
            _ => matches!(kind, op::GET_DATA | op::GET_CHILDREN),
        };
        if !allowed {
            let why = format!("operation {kind} may not be part of operation {op}");
            return Err(JuteError::Invalid { field: "multi", why });
        }
        ops.push(match kind {
            op::CHECK => {
                Request::Check { path: reader.string("path")?, version: reader.int("version")? }
            }
            // Never a multi: the kinds above exclude it, so this recursion is one level deep.
            kind => Request::decode(kind, reader)?,
        });
    }
}

/// A `multi` result's header.
pub fn multi_header(writer: &mut Writer, kind: i32, done: bool, err: i32) {
    writer.int(kind).boolean(done).int(err);
}

/// The reply header: the request's xid, the zxid the reply reflects, the error code.
pub fn reply_header(writer: &mut Writer, xid: i32, zxid: u64, err: i32) {
    writer.int(xid).long(zxid as i64).int(err);
}

/// A reply that is only its header (an error, or a request with no reply body).
pub fn bare_reply(xid: i32, zxid: u64, err: i32) -> Vec<u8> {
    let mut writer = Writer::new();
    reply_header(&mut writer, xid, zxid, err);
    writer.framed()
}

/// A znode's stat, in ZooKeeper's field order.
pub fn stat(writer: &mut Writer, stat: &Stat) {
    writer
        .long(stat.czxid as i64)
        .long(stat.mzxid as i64)
        .long(stat.ctime as i64)
        .long(stat.mtime as i64)
        .int(stat.version as i32)
        .int(stat.cversion as i32)
        .int(stat.aversion as i32)
        .long(stat.ephemeral_owner as i64)
        .int(stat.data_length as i32)
        .int(stat.num_children as i32)
        .long(stat.pzxid as i64);
}

/// A watch notification: xid -1, the event's type, state connected, and the path.
pub fn watcher_event(zxid: u64, kind: i32, path: &str) -> Vec<u8> {
    let mut writer = Writer::new();
    reply_header(&mut writer, xid::NOTIFICATION, zxid, code::OK);
    writer.int(kind).int(STATE_SYNC_CONNECTED).string(path);
    writer.framed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_request_with_and_without_the_read_only_byte() {
        let mut writer = Writer::new();
        writer.int(0).long(5).int(30_000).long(0).buffer(Some(&[0; 16]));
        let old = writer.into_bytes();
        let request = ConnectRequest::decode(&old).expect("decodes");
        assert_eq!(
            (request.timeout_ms, request.read_only, request.passwd.len()),
            (30_000, None, 16)
        );
        let mut new = old.clone();
        new.push(1);
        assert_eq!(ConnectRequest::decode(&new).expect("decodes").read_only, Some(true));
        // The answer carries the byte only to a client that sent it.
        assert_eq!(connect_response(10, 7, &[1; 16], None).len(), 4 + 4 + 4 + 8 + 4 + 16);
        assert_eq!(connect_response(10, 7, &[1; 16], Some(true)).len(), 4 + 4 + 4 + 8 + 4 + 16 + 1);
    }

    #[test]
    fn requests_decode_by_opcode() {
        let mut writer = Writer::new();
        writer
            .string("/a")
            .buffer(None)
            .int(1)
            .int(31)
            .string("world")
            .string("anyone")
            .int(3)
            .long(5000);
        let bytes = writer.into_bytes();
        let request = Request::decode(op::CREATE_TTL, &mut Reader::new(&bytes)).expect("decodes");
        let Request::Create(create) = request else { panic!("{request:?}") };
        assert_eq!(create.data, None, "null data stays null");
        assert_eq!(
            create.acl,
            vec![Acl { perms: 31, scheme: "world".into(), id: "anyone".into() }]
        );
        assert_eq!((create.flags, create.ttl_ms), (3, Some(5000)));
        assert_eq!(
            Request::decode(4242, &mut Reader::new(&[])).expect("decodes"),
            Request::Unimplemented { op: 4242 }
        );
        assert!(Request::decode(op::GET_DATA, &mut Reader::new(&[0, 0])).is_err());
    }

    #[test]
    fn an_acl_id_written_as_null_reads_as_empty() {
        let mut writer = Writer::new();
        writer.string("/a").buffer(Some(b"")).int(1).int(31).string("auth").buffer(None).int(0);
        let bytes = writer.into_bytes();
        let request = Request::decode(op::CREATE, &mut Reader::new(&bytes)).expect("decodes");
        let Request::Create(create) = request else { panic!("{request:?}") };
        assert_eq!(create.acl, vec![Acl { perms: 31, scheme: "auth".into(), id: String::new() }]);
    }

    #[test]
    fn a_multi_is_its_operations_until_done() {
        let mut writer = Writer::new();
        multi_header(&mut writer, op::CREATE, false, -1);
        writer.string("/a").buffer(Some(b"x")).int(0).int(0);
        multi_header(&mut writer, op::CHECK, false, -1);
        writer.string("/b").int(3);
        multi_header(&mut writer, -1, true, -1);
        let bytes = writer.into_bytes();
        let Request::Multi(ops) = Request::decode(op::MULTI, &mut Reader::new(&bytes)).expect("ok")
        else {
            panic!("not a multi");
        };
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[1], Request::Check { path: "/b".into(), version: 3 });
        // A read inside a multi, a multi inside a multi, or no end: refused.
        let mut writer = Writer::new();
        multi_header(&mut writer, op::GET_DATA, false, -1);
        writer.string("/a").boolean(false);
        let read = writer.into_bytes();
        assert!(Request::decode(op::MULTI, &mut Reader::new(&read)).is_err());
        let mut writer = Writer::new();
        multi_header(&mut writer, op::MULTI, false, -1);
        assert!(Request::decode(op::MULTI_READ, &mut Reader::new(&writer.into_bytes())).is_err());
        assert!(Request::decode(op::MULTI, &mut Reader::new(&bytes[..bytes.len() - 9])).is_err());
    }

    #[test]
    fn a_stat_is_68_bytes_in_zookeepers_order() {
        let mut writer = Writer::new();
        let s = Stat { czxid: 1, mzxid: 2, pzxid: 11, ephemeral_owner: 8, ..Stat::default() };
        stat(&mut writer, &s);
        let bytes = writer.into_bytes();
        assert_eq!(bytes.len(), 68);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.long("czxid"), Ok(1));
        assert_eq!(reader.long("mzxid"), Ok(2));
        let _times = (reader.long("ctime"), reader.long("mtime"));
        let _versions = (reader.int("version"), reader.int("cversion"), reader.int("aversion"));
        assert_eq!(reader.long("ephemeralOwner"), Ok(8));
        let _sizes = (reader.int("dataLength"), reader.int("numChildren"));
        assert_eq!(reader.long("pzxid"), Ok(11));
    }
}
