//! The ZooKeeper front end: ZooKeeper's own client protocol over TCP, so that existing
//! ZooKeeper clients (kazoo, Curator, zkCli) work against Cairn.
//!
//! Request path: [`serve`] accepts TCP connections; each opens with ZooKeeper's connect
//! handshake, which opens or resumes a Cairn session (a ZooKeeper session *is* a Cairn session:
//! ephemerals, expiry, watches and recipes' session hooks are the same whichever protocol made
//! them). Then each frame (`jute`, `proto`) is translated (`translate`) into a write through
//! the cluster layer or a read of this node's state, one request at a time: ZooKeeper clients
//! rely on replies coming in request order. Replies and watch events share the connection's
//! outbox, so a write's event is written before its reply, as ZooKeeper does.

pub mod jute;
pub mod proto;
pub mod translate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_wire::{ApiError, ErrorCode, Reply, SESSION_TIMEOUT_MS_MAX, SESSION_TIMEOUT_MS_MIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::api::{Frontend, open_session, resume_session};
use crate::store::{Action, Principal, SessionId, Write, Zxid};
use crate::watch::{Outbox, OutboxLoad, Outgoing};
use jute::Reader;
use proto::{ConnectRequest, FRAME_BYTES_MAX, Request, code};
use translate::Plan;

/// Most ZooKeeper connections a node serves at once; more are closed at once.
pub const ZK_CONNECTIONS_MAX: usize = 20_000;

/// How long a new connection may take to send its handshake.
pub const ZK_HANDSHAKE_MS_MAX: u64 = 10_000;

/// Bytes of a session password Cairn hands out: the session's secret (8 bytes) and 8 zero
/// bytes, the 16 ZooKeeper's clients expect.
const PASSWD_BYTES: usize = 16;

/// Accepts ZooKeeper connections on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(ZK_CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (socket, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "zookeeper front end: accept failed");
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "zookeeper connection refused: {ZK_CONNECTIONS_MAX} open");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let frontend = frontend.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let (read, write) = socket.into_split();
            tokio::select! {
                () = serve_connection(read, write, frontend, remote) => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
            drop(permit);
        });
    }
}

/// Reads one frame: its 4-byte length, then that many bytes. `Ok(None)` at a clean end.
async fn read_frame(read: &mut OwnedReadHalf) -> std::io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match read.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes, over jute.maxbuffer ({FRAME_BYTES_MAX})"),
        ));
    }
    let mut body = vec![0u8; length];
    read.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// The session a handshake opens or resumes, and its answer.
struct Handshake {
    session: SessionId,
    timeout_ms: u64,
    secret: u64,
}

/// A session's password as the client keeps it.
fn passwd(secret: u64) -> Vec<u8> {
    let mut passwd = secret.to_be_bytes().to_vec();
    passwd.resize(PASSWD_BYTES, 0);
    passwd
}

/// The secret a client's password carries, if it is one Cairn handed out.
fn secret_of(passwd: &[u8]) -> Option<u64> {
    if passwd.len() != PASSWD_BYTES || passwd[8..].iter().any(|byte| *byte != 0) {
        return None;
    }
    let mut secret = [0u8; 8];
    secret.copy_from_slice(&passwd[..8]);
    Some(u64::from_be_bytes(secret))
}

/// Opens or resumes the handshake's session, bound to `outbox`; `None` if it has expired (or
/// never was), which the client hears as a timeout of 0.
async fn handshake(
    frontend: &Frontend,
    connect: &ConnectRequest,
    principal: &Principal,
    outbox: &Outbox,
) -> Result<Option<Handshake>, ApiError> {
    if connect.session_id == 0 {
        // ZooKeeper bounds the timeout a client asks for rather than refusing it.
        let timeout_ms = u64::try_from(connect.timeout_ms)
            .unwrap_or(0)
            .clamp(SESSION_TIMEOUT_MS_MIN, SESSION_TIMEOUT_MS_MAX);
        let (_, reply) = open_session(frontend, None, principal, timeout_ms, outbox).await;
        return match reply? {
            Reply::Session { session_id, secret, timeout_ms } => {
                Ok(Some(Handshake { session: SessionId(session_id), timeout_ms, secret }))
            }
            other => Err(ApiError::new(ErrorCode::Internal)
                .with_detail(format!("open-session answered {other:?}"))),
        };
    }
    let Some(secret) = secret_of(&connect.passwd) else { return Ok(None) };
    let id = SessionId(connect.session_id as u64);
    let (_, reply) = resume_session(frontend, id, secret, principal, outbox).await;
    match reply {
        Ok(Reply::Session { session_id, secret, timeout_ms }) => {
            Ok(Some(Handshake { session: SessionId(session_id), timeout_ms, secret }))
        }
        Ok(other) => Err(ApiError::new(ErrorCode::Internal)
            .with_detail(format!("resume-session answered {other:?}"))),
        Err(error) if error.code == ErrorCode::SessionExpired => Ok(None),
        Err(error) => Err(error),
    }
}

async fn serve_connection(
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    frontend: Arc<Frontend>,
    remote: SocketAddr,
) {
    let handshake_deadline = Duration::from_millis(ZK_HANDSHAKE_MS_MAX);
    let first = match tokio::time::timeout(handshake_deadline, read_frame(&mut read)).await {
        Ok(Ok(Some(frame))) => frame,
        _ => return,
    };
    let Ok(connect) = ConnectRequest::decode(&first) else {
        tracing::debug!(%remote, "zookeeper handshake does not decode");
        return;
    };
    // A client that has seen a later state than this node's must not go back in time.
    let applied = frontend.cluster.applied_zxid();
    if connect.last_zxid_seen > applied.0 as i64 {
        tracing::info!(%remote, seen = connect.last_zxid_seen, %applied, "refusing a zookeeper client ahead of this node");
        return;
    }
    let principal = Principal::Anonymous;
    let (outbox, queue, load) = Outbox::new();
    let session = match handshake(&frontend, &connect, &principal, &outbox).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            let answer = proto::connect_response(0, 0, &[0; PASSWD_BYTES], connect.read_only);
            let _ = write.write_all(&answer).await;
            return;
        }
        Err(error) => {
            tracing::info!(%remote, %error, "zookeeper handshake refused");
            return;
        }
    };
    let answer = proto::connect_response(
        session.timeout_ms as i32,
        session.session.0 as i64,
        &passwd(session.secret),
        connect.read_only,
    );
    if write.write_all(&answer).await.is_err() {
        frontend.watches.unbind(session.session, &outbox);
        return;
    }
    let writer = tokio::spawn(write_outgoing(write, queue, load));
    let closed = serve_requests(&mut read, &frontend, session.session, &principal, &outbox).await;
    if !closed {
        frontend.watches.unbind(session.session, &outbox);
    }
    drop(outbox);
    let _ = writer.await;
}

/// Serves requests in order until the client closes its session (true) or goes away (false).
async fn serve_requests(
    read: &mut OwnedReadHalf,
    frontend: &Frontend,
    session: SessionId,
    principal: &Principal,
    outbox: &Outbox,
) -> bool {
    loop {
        let frame = match read_frame(read).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return false,
            Err(error) => {
                tracing::debug!(%error, "zookeeper connection ends");
                return false;
            }
        };
        frontend.cluster.sessions.touch(session);
        let mut reader = Reader::new(&frame);
        let (Ok(xid), Ok(opcode)) = (reader.int("xid"), reader.int("type")) else { return false };
        let request = match Request::decode(opcode, &mut reader) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%error, "zookeeper request does not decode; closing");
                return false;
            }
        };
        let zxid = || frontend.cluster.applied_zxid().0;
        match &request {
            Request::Ping => {
                outbox.send_frame(proto::bare_reply(xid, zxid(), code::OK));
                continue;
            }
            Request::CloseSession => {
                frontend.watches.unbind(session, outbox);
                let write = Write {
                    session: Some(session),
                    principal: principal.clone(),
                    action: Action::CloseSession,
                };
                let (zxid, _) = propose(frontend, write).await;
                outbox.send_frame(proto::bare_reply(xid, zxid.0, code::OK));
                return true;
            }
            Request::Sync { path } => {
                let frame = match frontend.cluster.linearize().await {
                    Ok(()) => {
                        let mut writer = jute::Writer::new();
                        proto::reply_header(&mut writer, xid, zxid(), code::OK);
                        writer.string(path);
                        writer.framed()
                    }
                    Err(error) => proto::bare_reply(xid, zxid(), proto::zk_code(error.code)),
                };
                outbox.send_frame(frame);
                continue;
            }
            _ => {}
        }
        match translate::plan(&request) {
            Plan::Refuse(code) => {
                outbox.send_frame(proto::bare_reply(xid, zxid(), code));
            }
            Plan::Write(action) => {
                let write = Write { session: Some(session), principal: principal.clone(), action };
                let (zxid, reply) = propose(frontend, write).await;
                // Reads after this write are served here: wait to have applied it.
                if let Err(error) =
                    crate::cluster::wait_applied(&frontend.cluster.raft, zxid.0).await
                {
                    tracing::warn!(%error, "zookeeper client's write not applied here yet");
                }
                if let Some(_turn) = outbox.room_for_reply().await {
                    outbox.send_frame(translate::reply_frame(xid, zxid.0, &request, reply));
                }
            }
            Plan::Reads(reads) => {
                let Some(_turn) = outbox.room_for_reply().await else { return false };
                let state = frontend.cluster.state.read();
                let zxid = state.applied_zxid();
                let replies = match state.tree.caller(principal) {
                    Ok(caller) => reads
                        .iter()
                        .map(|read| {
                            frontend.local_reply(&state.tree, read, Some(session), &caller, zxid)
                        })
                        .collect(),
                    Err(error) => vec![Err(error); reads.len()],
                };
                outbox.send_frame(translate::multi_read_frame(xid, zxid.0, replies));
            }
            Plan::Read(cairn_request) => {
                let Some(_turn) = outbox.room_for_reply().await else { return false };
                // Under the state's lock, so no event of a later change overtakes the reply.
                let state = frontend.cluster.state.read();
                let zxid = state.applied_zxid();
                let reply = state.tree.caller(principal).and_then(|caller| {
                    frontend.local_reply(&state.tree, &cairn_request, Some(session), &caller, zxid)
                });
                outbox.send_frame(translate::reply_frame(xid, zxid.0, &request, reply));
            }
        }
    }
}

/// Proposes `write` and waits for it to be applied.
async fn propose(frontend: &Frontend, write: Write) -> (Zxid, Result<Reply, ApiError>) {
    match frontend.cluster.propose(write).await {
        Ok(applied) => applied.await,
        Err(error) => (frontend.cluster.applied_zxid(), Err(error)),
    }
}

/// Writes replies and events, in the order they were queued, until the outbox is dropped.
async fn write_outgoing(
    mut write: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    load: Arc<OutboxLoad>,
) {
    while let Some(outgoing) = queue.recv().await {
        let (bytes, is_event) = (outgoing.bytes(), matches!(outgoing, Outgoing::Event(_)));
        let frame = match outgoing {
            Outgoing::Frame(frame) => Some(frame),
            Outgoing::Event(event) => translate::event_type(event.kind)
                .map(|kind| proto::watcher_event(event.zxid, kind, &event.path)),
        };
        let written = match frame {
            Some(frame) => write.write_all(&frame).await.is_ok(),
            None => true,
        };
        load.written(bytes, is_event);
        if !written {
            return;
        }
    }
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::proto::op;
    use super::*;

    #[test]
    fn a_password_carries_the_secret_and_nothing_else_passes() {
        let passwd = passwd(0x0102_0304_0506_0708);
        assert_eq!(passwd.len(), PASSWD_BYTES);
        assert_eq!(secret_of(&passwd), Some(0x0102_0304_0506_0708));
        assert_eq!(secret_of(&passwd[..8]), None, "too short");
        let mut forged = passwd.clone();
        forged[15] = 1;
        assert_eq!(secret_of(&forged), None, "not one Cairn handed out");
    }

    #[test]
    fn an_opcode_cairn_does_not_serve_is_unimplemented() {
        assert_eq!(
            translate::plan(&Request::Unimplemented { op: op::RECONFIG }),
            Plan::Refuse(code::UNIMPLEMENTED)
        );
    }
}
