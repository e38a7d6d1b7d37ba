//! One client connection and its request streams: framing in, dispatch, framing out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_wire::{
    ApiError, CLOSE_BAD_IDENTITY, CLOSE_PROTOCOL_VIOLATION, CLOSE_QUOTA_EXCEEDED,
    CLOSE_SLOW_READER, ErrorCode, FRAME_HEADER_BYTES, REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX, Reply,
    Request, RequestFrame, Response, ResponseFrame, ServerFrame, encode_frame, frame_length,
};
use quinn::{Connection, Incoming, ReadExactError, RecvStream, SendStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::identity::Identity;
use super::{Frontend, REQUESTS_IN_FLIGHT_PER_STREAM_MAX};
use crate::cluster::Served;
use crate::cluster::{ApplyReply, Member, MembershipChange};
use crate::store::{Action, Principal, SecretHash, SessionId, TokenHash, Write, Zxid};
use crate::watch::{Outbox, OutboxLoad, Outgoing};

/// How long a finished stream waits for the client to acknowledge its last responses, in
/// milliseconds.
const STREAM_FINISH_ACK_WAIT_MS: u64 = 2_000;

/// Runs one connection: completes the handshake and serves every stream the client opens.
pub(super) async fn serve_connection(incoming: Incoming, frontend: Arc<Frontend>) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            return;
        }
    };
    let principal = match crate::tls::client_principal(&connection) {
        Ok(Some(name)) => Principal::Certificate(name),
        Ok(None) => Principal::Anonymous,
        Err(why) => {
            tracing::info!(%why, "client refused");
            connection.close(CLOSE_BAD_IDENTITY.into(), why.as_bytes());
            return;
        }
    };
    let slot = frontend.connections.take(&principal, &frontend.cluster.state.read().tree);
    let slot = match slot {
        Ok(slot) => slot,
        Err(error) => {
            tracing::info!(%error, "client refused");
            connection.close(CLOSE_QUOTA_EXCEEDED.into(), error.to_string().as_bytes());
            return;
        }
    };
    tracing::debug!(principal = principal.name(), "client connected");
    let identity = Arc::new(Identity::new(principal, slot));
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let frontend = frontend.clone();
                let connection = connection.clone();
                let identity = identity.clone();
                tokio::spawn(async move {
                    serve_stream(connection, send, recv, frontend, identity).await;
                });
            }
            Err(error) => {
                tracing::debug!(%error, "client gone");
                return;
            }
        }
    }
}

/// Serves one request stream until the client finishes it or the connection ends.
async fn serve_stream(
    connection: Connection,
    send: SendStream,
    mut recv: RecvStream,
    frontend: Arc<Frontend>,
    identity: Arc<Identity>,
) {
    let (outbox, queue, load) = Outbox::new();
    let writer = tokio::spawn(write_outgoing(send, queue, load.clone()));
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_PER_STREAM_MAX));
    // Writes of this stream proposed and completed: a read waits for the writes sent before it,
    // so a client always reads its own writes (ZooKeeper's FIFO client order).
    let mut writes_proposed: u64 = 0;
    let (writes_completed, writes_seen) = watch::channel(0u64);
    let writes_completed = Arc::new(writes_completed);
    // The session this stream is bound to.
    let mut session: Option<SessionId> = None;

    loop {
        // A client that sends requests but does not read the replies would have them pile up
        // here: stop reading its requests until it drains the outbox, and give up on it if it
        // does not.
        if !load.wait_for_room().await {
            close_slow_reader(&connection, &load);
            return;
        }
        // A reply that gave up waiting for room means the client does not read, even if it
        // has stopped sending too.
        let frame = tokio::select! {
            frame = read_frame(&mut recv) => frame,
            () = load.abandoned() => {
                close_slow_reader(&connection, &load);
                return;
            }
        };
        let body = match frame {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(FrameReadError::TooLong(error)) => {
                tracing::warn!(%error, "closing connection: frame over the limit");
                let error =
                    ApiError::new(ErrorCode::RequestTooLarge).with_detail(error.to_string());
                let asked = Asked::new(0, "malformed");
                outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), Err(error)));
                drop(outbox);
                let _ = writer.await;
                connection
                    .close(CLOSE_PROTOCOL_VIOLATION.into(), b"request frame over the size limit");
                return;
            }
            Err(FrameReadError::Truncated) => {
                tracing::debug!("stream ended inside a frame");
                break;
            }
            Err(FrameReadError::Lost) => break,
        };
        // Requests in flight wait for room in the outbox too: if they are all waiting and one
        // gives up, the client is not reading.
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => permit.ok(),
            () = load.abandoned() => {
                close_slow_reader(&connection, &load);
                return;
            }
        };
        let Some(permit) = permit else { break };
        let frame = match RequestFrame::decode(&body) {
            Ok(frame) => frame,
            Err(malformed) => {
                tracing::debug!(reason = %malformed.reason, "malformed request");
                let error =
                    ApiError::new(ErrorCode::MalformedRequest).with_detail(malformed.reason);
                let zxid = frontend.cluster.applied_zxid();
                let asked = Asked::new(malformed.id.unwrap_or(0), "malformed");
                if !outbox.send_frame(asked.answer(zxid, Err(error))) {
                    break;
                }
                continue;
            }
        };
        let asked = Asked::new(frame.id, frame.request.kind());
        if let Some(bound) = session {
            if frontend.cluster.state.read().tree.session(bound).is_none()
                && !matches!(frame.request, Request::OpenSession { .. })
            {
                let error = ApiError::new(ErrorCode::SessionExpired)
                    .with_detail(format!("session {bound} has ended"));
                outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), Err(error)));
                continue;
            }
            frontend.cluster.sessions.touch(bound);
        }
        let principal = identity.principal();
        // Checked against everything committed before the request: a right revoked a moment
        // ago on another node is gone here too.
        if matches!(frame.request, Request::AddMember { .. } | Request::RemoveMember { .. })
            && let Err(refused) = match frontend.cluster.linearize().await {
                Ok(()) => frontend.require_admin(&principal, "changing the members"),
                Err(error) => Err(error),
            }
        {
            outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), Err(refused)));
            continue;
        }
        let request = match frame.request {
            // A change of principal holds the stream like a session request does: what is
            // read next speaks for the new one.
            Request::Authenticate { token } => {
                let (zxid, reply) = authenticate(&frontend, &identity, &token).await;
                outbox.send_frame(asked.answer(zxid, reply));
                continue;
            }
            // Membership changes take as long as a new member needs to catch up: they run on
            // their own, not holding up this stream.
            Request::AddMember { node_id, peer_addr, client_addr, voter } => {
                // Its runtime is known once it announces itself.
                let member = Member { client_addr, peer_addr, ..Member::default() };
                let change = MembershipChange::Add(node_id, member, voter);
                let (frontend, outbox) = (frontend.clone(), outbox.clone());
                tokio::spawn(async move {
                    let reply = frontend.cluster.change_membership(change).await;
                    if let Some(_turn) = outbox.room_for_reply().await {
                        outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), reply));
                    }
                    // In flight until answered, like any request.
                    drop(permit);
                });
                continue;
            }
            Request::RemoveMember { node_id } => {
                let change = MembershipChange::Remove(node_id);
                let (frontend, outbox) = (frontend.clone(), outbox.clone());
                tokio::spawn(async move {
                    let reply = frontend.cluster.change_membership(change).await;
                    if let Some(_turn) = outbox.room_for_reply().await {
                        outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), reply));
                    }
                    drop(permit);
                });
                continue;
            }
            // Session requests change what this loop knows, so each finishes before the next
            // request is read.
            Request::OpenSession { timeout_ms } => {
                let (zxid, reply) =
                    open_session(&frontend, session, &principal, timeout_ms, &outbox).await;
                if let Ok(Reply::Session { session_id, .. }) = &reply {
                    session = Some(SessionId(*session_id));
                    identity.settle();
                }
                outbox.send_frame(asked.answer(zxid, reply));
                continue;
            }
            Request::ResumeSession { session_id, secret } => {
                let (zxid, reply) =
                    resume_session(&frontend, SessionId(session_id), secret, &principal, &outbox)
                        .await;
                if reply.is_ok() {
                    session = Some(SessionId(session_id));
                    identity.settle();
                }
                outbox.send_frame(asked.answer(zxid, reply));
                continue;
            }
            Request::CloseSession {} => {
                let Some(bound) = session else {
                    let error = ApiError::new(ErrorCode::NoSession);
                    outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), Err(error)));
                    continue;
                };
                // Unbound first: the client asked for the end, it needs no news of it.
                frontend.watches.unbind(bound, &outbox);
                let write =
                    Write { session, principal: principal.clone(), action: Action::CloseSession };
                let (zxid, reply) = match frontend.cluster.propose(write).await {
                    Ok(applied) => applied.await,
                    Err(error) => (frontend.cluster.applied_zxid(), Err(error)),
                };
                if reply.is_ok() {
                    session = None;
                }
                outbox.send_frame(asked.answer(zxid, reply));
                continue;
            }
            other => other,
        };
        let outbox = outbox.clone();
        let write = match request {
            Request::AdoptRecipeRuntime {} => match frontend.cluster.adopt_runtime_write() {
                Ok(action) => Ok(action),
                Err(refused) => {
                    outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), Err(refused)));
                    continue;
                }
            },
            other => into_write(other),
        };
        // A token is chosen here and only its hash logged; the reply carries the token.
        let mut token = None;
        let write = match write {
            Ok(Action::CreateToken { name, .. }) => match random_token() {
                Ok(chosen) => {
                    let hash = TokenHash::of(&chosen);
                    token = Some(chosen);
                    Ok(Action::CreateToken { name, hash })
                }
                Err(error) => {
                    outbox.send_frame(asked.answer(frontend.cluster.applied_zxid(), Err(error)));
                    continue;
                }
            },
            other => other,
        };
        match write {
            Ok(action) => {
                writes_proposed += 1;
                let writes_completed = writes_completed.clone();
                match frontend.cluster.propose(Write { session, principal, action }).await {
                    Ok(applied) => {
                        tokio::spawn(async move {
                            let (zxid, mut reply) = applied.await;
                            if let (Ok(Reply::Token { token: answered, .. }), Some(token)) =
                                (&mut reply, token)
                            {
                                *answered = token;
                            }
                            writes_completed.send_modify(|done| *done += 1);
                            if let Some(_turn) = outbox.room_for_reply().await {
                                outbox.send_frame(asked.answer(zxid, reply));
                            }
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        writes_completed.send_modify(|done| *done += 1);
                        outbox
                            .send_frame(asked.answer(frontend.cluster.applied_zxid(), Err(error)));
                    }
                }
            }
            Err(read) => {
                let frontend = frontend.clone();
                let mut writes_seen = writes_seen.clone();
                let writes_before = writes_proposed;
                tokio::spawn(async move {
                    // The sender lives as long as the stream's reader loop; if it is gone, the
                    // stream is over and so is the wait.
                    let _ = writes_seen.wait_for(|done| *done >= writes_before).await;
                    frontend.serve_local(asked, &read, session, &principal, &outbox).await;
                    drop(permit);
                });
            }
        }
    }
    if let Some(bound) = session {
        frontend.watches.unbind(bound, &outbox);
    }
    drop(outbox);
    let _ = writer.await;
}

/// Closes the connection of a client whose stream's outbox stayed full past the deadline.
fn close_slow_reader(connection: &Connection, load: &OutboxLoad) {
    tracing::warn!(
        queued_bytes = load.bytes(),
        "closing connection: the client does not read its replies"
    );
    connection
        .close(CLOSE_SLOW_READER.into(), b"replies not read: the stream's outbox stayed full");
}

/// Makes the connection speak for the principal `token` names, if the cluster knows the token
/// (as of everything committed before now). Only before any stream of the connection has a
/// session: a session belongs to the principal that opened it.
async fn authenticate(frontend: &Frontend, identity: &Identity, token: &str) -> Served {
    if identity.is_settled() {
        let error = ApiError::new(ErrorCode::InvalidArgument)
            .with_detail("authenticate before opening or resuming a session on this connection");
        return (frontend.cluster.applied_zxid(), Err(error));
    }
    if let Err(error) = frontend.cluster.linearize().await {
        return (frontend.cluster.applied_zxid(), Err(error));
    }
    let state = frontend.cluster.state.read();
    let zxid = state.applied_zxid();
    let hash = TokenHash::of(token);
    let Some(name) = state.tree.access().token_owner(&hash) else {
        return (
            zxid,
            Err(ApiError::new(ErrorCode::AuthFailed)
                .with_detail("the cluster knows no such token (never issued, or revoked)")),
        );
    };
    let principal = Principal::Token { name: name.to_string(), hash };
    let reply = frontend.connections.take(&principal, &state.tree).and_then(|slot| {
        let caller = state.tree.caller(&principal)?;
        identity.replace(principal, slot);
        Ok(Reply::Identity { principal: caller.name.to_string(), admin: caller.admin })
    });
    (zxid, reply)
}

/// A new token: 32 bytes from the operating system's random source, as hex.
fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        ApiError::new(ErrorCode::Internal).with_detail(format!("no randomness for a token: {e}"))
    })?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Opens a session through the log and binds this stream to it.
pub(crate) async fn open_session(
    frontend: &Frontend,
    bound: Option<SessionId>,
    principal: &Principal,
    timeout_ms: u64,
    outbox: &Outbox,
) -> Served {
    if let Some(bound) = bound
        && frontend.cluster.state.read().tree.session(bound).is_some()
    {
        let error = ApiError::new(ErrorCode::InvalidArgument)
            .with_detail(format!("this stream already has session {bound}"));
        return (frontend.cluster.applied_zxid(), Err(error));
    }
    let secret = match random_u64() {
        Ok(secret) => secret,
        Err(error) => return (frontend.cluster.applied_zxid(), Err(error)),
    };
    let secret_hash = SecretHash::of(secret);
    let action = Action::OpenSession { timeout_ms, secret_hash };
    let write = Write { session: None, principal: principal.clone(), action };
    let (zxid, mut reply) = match frontend.cluster.propose(write).await {
        Ok(applied) => applied.await,
        Err(error) => return (frontend.cluster.applied_zxid(), Err(error)),
    };
    if let Ok(Reply::Session { session_id, secret: answered, .. }) = &mut reply {
        // The entry carried only the secret's hash; the client gets the secret from us.
        *answered = secret;
        let id = SessionId(*session_id);
        match frontend.cluster.state.read().tree.caller(principal) {
            Ok(reader) => frontend.watches.bind(id, outbox.clone(), principal.clone(), reader),
            Err(error) => return (zxid, Err(error)),
        }
        frontend.cluster.sessions.touch(id);
        tracing::debug!(session = %id, timeout_ms, "session opened");
    }
    (zxid, reply)
}

/// Binds this stream to an existing session whose secret the client proves it knows, if the
/// session is its principal's.
pub(crate) async fn resume_session(
    frontend: &Frontend,
    id: SessionId,
    secret: u64,
    principal: &Principal,
    outbox: &Outbox,
) -> Served {
    if let Err(error) = frontend.cluster.linearize().await {
        return (frontend.cluster.applied_zxid(), Err(error));
    }
    let state = frontend.cluster.state.read();
    let zxid = state.applied_zxid();
    let reply = match state.tree.session(id) {
        Some(session) if session.secret_hash == SecretHash::of(secret) => {
            match state.tree.caller(principal) {
                Ok(reader) if *reader.name == session.principal => {
                    frontend.watches.bind(id, outbox.clone(), principal.clone(), reader);
                    frontend.cluster.sessions.touch(id);
                    Ok(Reply::Session { session_id: id.0, secret, timeout_ms: session.timeout_ms })
                }
                Ok(reader) => Err(ApiError::new(ErrorCode::AuthFailed).with_detail(format!(
                    "session {id} is {}'s, not {}'s",
                    session.principal, reader.name
                ))),
                Err(error) => Err(error),
            }
        }
        // A wrong secret reads as an ended session: nothing tells a guesser which ids are live.
        _ => Err(ApiError::new(ErrorCode::SessionExpired)
            .with_detail(format!("session {id} has ended or the secret is wrong"))),
    };
    (zxid, reply)
}

/// A session secret from the operating system's random source.
fn random_u64() -> Result<u64, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        ApiError::new(ErrorCode::Internal)
            .with_detail(format!("no randomness for a session secret: {e}"))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

/// Splits writes (which go through Raft) from reads (which do not).
fn into_write(request: Request) -> Result<Action, Request> {
    match request {
        Request::Create(create) => Ok(Action::Create(create)),
        Request::Set(set) => Ok(Action::Set(set)),
        Request::Delete(delete) => Ok(Action::Delete(delete)),
        Request::Multi { ops } => Ok(Action::Multi(ops)),
        Request::DeployRecipe { name, version, component, owner } => {
            let runtime = crate::recipe::RUNTIME_VERSION.to_string();
            Ok(Action::DeployRecipe { name, version, component, runtime, owner })
        }
        Request::SetAcl { path, acl, version } => Ok(Action::SetAcl { path, acl, version }),
        // The hash is filled in by the stream, which keeps the token for the reply.
        Request::CreateToken { name } => Ok(Action::CreateToken { name, hash: TokenHash([0; 32]) }),
        Request::RevokeToken { name } => Ok(Action::RevokeToken { name }),
        Request::SetAdmin { name, admin } => Ok(Action::SetAdmin { name, admin }),
        Request::SetQuota { name, quota } => Ok(Action::SetQuota { name, quota }),
        Request::RetireRecipe { name, version } => Ok(Action::RetireRecipe { name, version }),
        Request::FreezeRecipes {} => Ok(Action::FreezeRecipes),
        Request::Invoke { name, version, op, args } => {
            Ok(Action::InvokeRecipe { name, version, op, args })
        }
        read => Err(read),
    }
}

/// A request being served: its id, its kind and when it arrived, for the answer's metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    pub id: u64,
    pub kind: &'static str,
    pub started: Instant,
}

impl Asked {
    /// Request `id` of `kind`, arrived now.
    pub(crate) fn new(id: u64, kind: &'static str) -> Asked {
        Asked { id, kind, started: Instant::now() }
    }

    /// Encodes the answer and counts it under the outcome it carries.
    pub(crate) fn answer(self, zxid: Zxid, reply: ApplyReply) -> Vec<u8> {
        let (frame, refused) = encode_response(self.id, zxid, reply);
        let outcome = refused.map_or("ok", ErrorCode::as_str);
        crate::metrics::get().request("quic", self.kind, outcome, self.started.elapsed());
        frame
    }
}

/// Encodes a response frame, and the error code it carries if it is an error. A reply too
/// large for a frame becomes a `too-large` error.
fn encode_response(id: u64, zxid: Zxid, reply: ApplyReply) -> (Vec<u8>, Option<ErrorCode>) {
    let (response, refused) = match reply {
        Ok(reply) => (Response::Ok(reply), None),
        Err(error) => {
            let code = error.code;
            (Response::Error(error), Some(code))
        }
    };
    let frame = ServerFrame::Response(ResponseFrame { id, zxid: zxid.0, response });
    match encode_frame(&frame) {
        Ok(bytes) if bytes.len() - FRAME_HEADER_BYTES <= RESPONSE_BYTES_MAX => (bytes, refused),
        Ok(bytes) => {
            let detail = format!("reply of {} bytes, limit {RESPONSE_BYTES_MAX}", bytes.len());
            let error = ApiError::new(ErrorCode::TooLarge).with_detail(detail);
            (error_frame(id, zxid, error), Some(ErrorCode::TooLarge))
        }
        Err(error) => {
            let error = ApiError::new(ErrorCode::Internal).with_detail(error.to_string());
            (error_frame(id, zxid, error), Some(ErrorCode::Internal))
        }
    }
}

fn error_frame(id: u64, zxid: Zxid, error: ApiError) -> Vec<u8> {
    let response = Response::Error(error);
    let frame = ServerFrame::Response(ResponseFrame { id, zxid: zxid.0, response });
    // A frame of an id, a zxid and a short error always encodes.
    encode_frame(&frame).unwrap_or_default()
}

/// Writes responses and events in the order they were queued until the stream's reader is
/// done, then finishes the stream and waits (boundedly) for the client to acknowledge the last
/// of them, so closing the connection right after does not throw a final error reply away.
async fn write_outgoing(
    mut send: SendStream,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    load: Arc<OutboxLoad>,
) {
    while let Some(outgoing) = queue.recv().await {
        let (bytes, event) = (outgoing.bytes(), matches!(outgoing, Outgoing::Event(_)));
        let frame = match outgoing {
            Outgoing::Frame(frame) => Some(frame),
            Outgoing::Event(event) => match encode_frame(&ServerFrame::Event(event)) {
                Ok(frame) => Some(frame),
                Err(error) => {
                    tracing::error!(%error, "cannot encode an event");
                    None
                }
            },
        };
        let written = match frame {
            Some(frame) => send.write_all(&frame).await.is_ok(),
            None => true,
        };
        load.written(bytes, event);
        if !written {
            return;
        }
    }
    if send.finish().is_ok() {
        let acknowledged = Duration::from_millis(STREAM_FINISH_ACK_WAIT_MS);
        let _ = tokio::time::timeout(acknowledged, send.stopped()).await;
    }
}

enum FrameReadError {
    TooLong(cairn_wire::FrameError),
    Truncated,
    Lost,
}

/// Reads one frame body; `None` when the client finished the stream between frames.
async fn read_frame(recv: &mut RecvStream) -> Result<Option<Vec<u8>>, FrameReadError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(_)) => return Err(FrameReadError::Truncated),
        Err(ReadExactError::ReadError(_)) => return Err(FrameReadError::Lost),
    }
    let length = frame_length(header, REQUEST_BYTES_MAX).map_err(FrameReadError::TooLong)?;
    let mut body = vec![0; length];
    match recv.read_exact(&mut body).await {
        Ok(()) => Ok(Some(body)),
        Err(ReadExactError::FinishedEarly(_)) => Err(FrameReadError::Truncated),
        Err(ReadExactError::ReadError(_)) => Err(FrameReadError::Lost),
    }
}
