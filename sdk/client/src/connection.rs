//! One QUIC connection under a [`Client`](crate::Client): one request stream, a writer task
//! that sends frames in the order requests were made, and a reader task that matches each
//! response to its waiting request by id and hands events to the session's supervisor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cairn_wire::{
    ALPN, ApiError, CLOSE_CLIENT_DONE, ErrorCode, EventFrame, FRAME_HEADER_BYTES,
    REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX, Reply, Request, RequestFrame, Response, ResponseFrame,
    ServerFrame, decode_body, encode_frame, frame_length,
};
use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::{mpsc, oneshot};

use crate::watches::Watchers;
use crate::{Credentials, Error};

/// Request frames waiting for the writer task; callers wait for room beyond this.
const OUTGOING_FRAMES_MAX: usize = 1024;

type Waiters = HashMap<u64, oneshot::Sender<ResponseFrame>>;

#[derive(Debug, Clone)]
pub(crate) struct Link {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: quinn::Connection,
    /// Kept so the endpoint's socket lives as long as the connection.
    _endpoint: quinn::Endpoint,
    outgoing: mpsc::Sender<Vec<u8>>,
    /// Requests sent and not yet answered. `None` once the connection is gone.
    waiting: Arc<Mutex<Option<Waiters>>>,
    next_id: AtomicU64,
    /// Resolves when the reader task ends: the connection is gone.
    reader_done: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.connection.close(CLOSE_CLIENT_DONE.into(), b"client done");
    }
}

impl Link {
    /// Connects and opens the request stream. Events go to `events`; every zxid seen raises
    /// `last_zxid`.
    pub(crate) async fn open(
        server: &str,
        credentials: &Credentials,
        events: EventRoute,
        last_zxid: Arc<AtomicU64>,
        idle_timeout: std::time::Duration,
    ) -> Result<Link, Error> {
        let connect_error = |reason: String| Error::Connect { server: server.to_string(), reason };
        let (host, addr) = resolve(server).await.map_err(connect_error)?;
        let mut client_config = quic_client_config(credentials)?;
        // A connection silent this long is dead: give up on it while the session can still be
        // resumed elsewhere.
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
        client_config.transport_config(Arc::new(transport));
        let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|e| connect_error(format!("{e}")))?;
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| connect_error(e.to_string()))?;
        endpoint.set_default_client_config(client_config);
        let connection = endpoint
            .connect(addr, &host)
            .map_err(|e| connect_error(e.to_string()))?
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let (send, recv) = connection.open_bi().await.map_err(|e| connect_error(e.to_string()))?;

        let (outgoing, queue) = mpsc::channel(OUTGOING_FRAMES_MAX);
        let waiting = Arc::new(Mutex::new(Some(HashMap::new())));
        let (done, reader_done) = tokio::sync::watch::channel(false);
        tokio::spawn(write_frames(send, queue));
        let reader = Reader { waiting: waiting.clone(), last_zxid, events };
        tokio::spawn(async move {
            reader.run(recv).await;
            let _ = done.send(true);
        });
        let link = Link {
            inner: Arc::new(Inner {
                connection,
                _endpoint: endpoint,
                outgoing,
                waiting,
                next_id: AtomicU64::new(1),
                reader_done,
            }),
        };
        if let Some(token) = &credentials.token {
            link.call(Request::Authenticate { token: token.clone() }).await?;
        }
        Ok(link)
    }

    /// Sends one request and waits for its response: the zxid it reflects and the reply.
    pub(crate) async fn call(&self, request: Request) -> Result<(u64, Reply), Error> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&RequestFrame { id, request })
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let body_bytes = frame.len() - FRAME_HEADER_BYTES;
        if body_bytes > REQUEST_BYTES_MAX {
            return Err(Error::Api(ApiError::new(ErrorCode::RequestTooLarge).with_detail(
                format!("request of {body_bytes} bytes, limit {REQUEST_BYTES_MAX}"),
            )));
        }
        let (reply, response) = oneshot::channel();
        {
            let mut waiting = self.inner.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(waiting) = waiting.as_mut() else {
                return Err(self.lost());
            };
            waiting.insert(id, reply);
        }
        if self.inner.outgoing.send(frame).await.is_err() {
            return Err(self.lost());
        }
        let frame = response.await.map_err(|_| self.lost())?;
        match frame.response {
            Response::Ok(reply) => Ok((frame.zxid, reply)),
            Response::Error(error) => Err(Error::Api(error)),
        }
    }

    /// Resolves once the connection is gone.
    pub(crate) async fn closed(&self) {
        let mut done = self.inner.reader_done.clone();
        let _ = done.wait_for(|done| *done).await;
    }

    pub(crate) fn close(&self) {
        self.inner.connection.close(CLOSE_CLIENT_DONE.into(), b"client closed");
    }

    fn lost(&self) -> Error {
        let reason = self
            .inner
            .connection
            .close_reason()
            .map_or_else(|| "the connection closed".to_string(), |reason| reason.to_string());
        Error::ConnectionLost(reason)
    }
}

/// Splits `host:port` (or `[v6]:port`) and resolves it.
async fn resolve(server: &str) -> Result<(String, SocketAddr), String> {
    let (host, _) =
        server.rsplit_once(':').ok_or_else(|| format!("{server:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "the name resolves to no address".to_string())?;
    // The certificate is checked against the name the user gave, or the IP when they gave one.
    let _: ServerName<'_> =
        ServerName::try_from(host.as_str()).map_err(|e| format!("{host:?}: {e}"))?;
    Ok((host, addr))
}

/// The QUIC client configuration Cairn's client protocol needs: TLS 1.3 trusting the CA
/// certificates of `credentials`, presenting its client certificate if it has one, and the
/// protocol's ALPN.
pub fn quic_client_config(credentials: &Credentials) -> Result<quinn::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&credentials.ca_pem) {
        let cert = cert.map_err(|e| Error::Tls(format!("bad CA certificate: {e}")))?;
        roots.add(cert).map_err(|e| Error::Tls(format!("bad CA certificate: {e}")))?;
        found += 1;
    }
    if found == 0 {
        return Err(Error::Tls("the CA file holds no certificate".into()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut tls = match &credentials.certificate {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Tls(format!("bad client certificate: {e}")))?;
            if chain.is_empty() {
                return Err(Error::Tls("the certificate file holds no certificate".into()));
            }
            let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| Error::Tls(format!("bad client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Tls(format!("unusable client certificate: {e}")))?
        }
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

async fn write_frames(mut send: quinn::SendStream, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = queue.recv().await {
        if send.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Where a connection's events go: watch events straight to their watchers, before the reader
/// looks at the next frame (so the application sees an event before any later reply); session
/// news to the supervisor.
#[derive(Debug, Clone)]
pub(crate) struct EventRoute {
    pub(crate) watchers: Arc<Mutex<Watchers>>,
    pub(crate) supervisor: mpsc::UnboundedSender<EventFrame>,
}

impl EventRoute {
    fn route(&self, event: EventFrame) {
        if event.watch.is_some() {
            self.watchers.lock().unwrap_or_else(PoisonError::into_inner).dispatch(event);
        } else {
            let _ = self.supervisor.send(event);
        }
    }
}

/// Reads the node's frames: responses to their waiting requests, events to their route.
struct Reader {
    waiting: Arc<Mutex<Option<Waiters>>>,
    last_zxid: Arc<AtomicU64>,
    events: EventRoute,
}

impl Reader {
    async fn run(self, mut recv: quinn::RecvStream) {
        loop {
            let mut header = [0u8; FRAME_HEADER_BYTES];
            if recv.read_exact(&mut header).await.is_err() {
                break;
            }
            let Ok(length) = frame_length(header, RESPONSE_BYTES_MAX) else {
                tracing::warn!("frame over the limit; dropping the connection");
                break;
            };
            let mut body = vec![0; length];
            if recv.read_exact(&mut body).await.is_err() {
                break;
            }
            match decode_body::<ServerFrame>(&body) {
                Ok(ServerFrame::Response(frame)) => self.answer(frame),
                Ok(ServerFrame::Event(event)) => {
                    self.last_zxid.fetch_max(event.zxid, Ordering::Relaxed);
                    self.events.route(event);
                }
                Err(error) => {
                    tracing::warn!(%error, "undecodable frame; dropping the connection");
                    break;
                }
            }
        }
        // Dropping the senders fails every request still waiting with "connection lost".
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn answer(&self, frame: ResponseFrame) {
        self.last_zxid.fetch_max(frame.zxid, Ordering::Relaxed);
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .and_then(|waiting| waiting.remove(&frame.id));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(frame);
            }
            None => {
                tracing::warn!(id = frame.id, response = ?frame.response, "response to no request")
            }
        }
    }
}
