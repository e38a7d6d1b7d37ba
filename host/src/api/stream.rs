//! One client connection and its request streams: framing in, dispatch, framing out.

use std::sync::Arc;
use std::time::Duration;

use cairn_wire::{
    ApiError, CLOSE_PROTOCOL_VIOLATION, ErrorCode, FRAME_HEADER_BYTES, REQUEST_BYTES_MAX,
    RESPONSE_BYTES_MAX, Request, RequestFrame, Response, ResponseFrame, encode_frame, frame_length,
};
use quinn::{Connection, Incoming, ReadExactError, RecvStream, SendStream};
use tokio::sync::{Semaphore, mpsc, watch};

use super::{Frontend, REQUESTS_IN_FLIGHT_PER_STREAM_MAX};
use crate::raft::ApplyReply;
use crate::store::Action;

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
    tracing::debug!("client connected");
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                let frontend = frontend.clone();
                let connection = connection.clone();
                tokio::spawn(async move { serve_stream(connection, send, recv, frontend).await });
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
) {
    let (responses, queue) = mpsc::channel(REQUESTS_IN_FLIGHT_PER_STREAM_MAX);
    let writer = tokio::spawn(write_responses(send, queue));
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_PER_STREAM_MAX));
    // Writes of this stream proposed and completed: a read waits for the writes sent before it,
    // so a client always reads its own writes (ZooKeeper's FIFO client order).
    let mut writes_proposed: u64 = 0;
    let (writes_completed, writes_seen) = watch::channel(0u64);
    let writes_completed = Arc::new(writes_completed);

    loop {
        let body = match read_frame(&mut recv).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(FrameReadError::TooLong(error)) => {
                tracing::warn!(%error, "closing connection: frame over the limit");
                let error =
                    ApiError::new(ErrorCode::RequestTooLarge).with_detail(error.to_string());
                let _ = responses.send(respond(0, frontend.applied_zxid(), Err(error))).await;
                drop(responses);
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
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let frame = match RequestFrame::decode(&body) {
            Ok(frame) => frame,
            Err(malformed) => {
                tracing::debug!(reason = %malformed.reason, "malformed request");
                let error =
                    ApiError::new(ErrorCode::MalformedRequest).with_detail(malformed.reason);
                let zxid = frontend.applied_zxid();
                if responses
                    .send(respond(malformed.id.unwrap_or(0), zxid, Err(error)))
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        let id = frame.id;
        let responses = responses.clone();
        match into_write(frame.request) {
            Ok(action) => {
                writes_proposed += 1;
                let writes_completed = writes_completed.clone();
                match frontend.propose(action).await {
                    Ok(applied) => {
                        tokio::spawn(async move {
                            let (zxid, reply) = applied.await;
                            writes_completed.send_modify(|done| *done += 1);
                            let _ = responses.send(respond(id, zxid, reply)).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        writes_completed.send_modify(|done| *done += 1);
                        let zxid = frontend.applied_zxid();
                        let _ = responses.send(respond(id, zxid, Err(error))).await;
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
                    let (zxid, reply) = frontend.read(&read).await;
                    let _ = responses.send(respond(id, zxid, reply)).await;
                    drop(permit);
                });
            }
        }
    }
    drop(responses);
    let _ = writer.await;
}

/// Splits writes (which go through Raft) from reads (which do not).
fn into_write(request: Request) -> Result<Action, Request> {
    match request {
        Request::Create(create) => Ok(Action::Create(create)),
        Request::Set(set) => Ok(Action::Set(set)),
        Request::Delete(delete) => Ok(Action::Delete(delete)),
        Request::Multi { ops } => Ok(Action::Multi(ops)),
        read => Err(read),
    }
}

/// Encodes a response frame. A reply too large for a frame becomes a `too-large` error.
fn respond(id: u64, zxid: u64, reply: ApplyReply) -> Vec<u8> {
    let response = match reply {
        Ok(reply) => Response::Ok(reply),
        Err(error) => Response::Error(error),
    };
    let frame = ResponseFrame { id, zxid, response };
    match encode_frame(&frame) {
        Ok(bytes) if bytes.len() - FRAME_HEADER_BYTES <= RESPONSE_BYTES_MAX => bytes,
        Ok(bytes) => error_frame(
            id,
            zxid,
            ApiError::new(ErrorCode::TooLarge)
                .with_detail(format!("reply of {} bytes, limit {RESPONSE_BYTES_MAX}", bytes.len())),
        ),
        Err(error) => {
            error_frame(id, zxid, ApiError::new(ErrorCode::Internal).with_detail(error.to_string()))
        }
    }
}

fn error_frame(id: u64, zxid: u64, error: ApiError) -> Vec<u8> {
    let frame = ResponseFrame { id, zxid, response: Response::Error(error) };
    // A frame of an id, a zxid and a short error always encodes.
    encode_frame(&frame).unwrap_or_default()
}

/// Writes response frames until the stream's reader is done, then finishes the stream and waits
/// (boundedly) for the client to acknowledge the last of them, so closing the connection right
/// after does not throw a final error reply away.
async fn write_responses(mut send: SendStream, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = queue.recv().await {
        if send.write_all(&frame).await.is_err() {
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
