//! Hostile and broken clients: each gets a clear error or a closed connection, and everyone
//! else goes on being served.

use std::sync::Arc;
use std::time::Duration;

use cairn_client::{CreateOptions, ErrorCode};
use cairn_tests::Server;
use cairn_wire::{
    CLOSE_PROTOCOL_VIOLATION, REQUEST_BYTES_MAX, Request, RequestFrame, Response, ResponseFrame,
    ServerFrame, ZNODE_DATA_BYTES_MAX, decode_body, encode_frame,
};

use crate::start_node;

/// Every read from a raw stream is bounded by this.
const READ_DEADLINE: Duration = Duration::from_secs(20);

/// A client that writes whatever bytes it likes.
struct Raw {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

impl Raw {
    async fn connect(node: &Server, alpn: Option<&[u8]>) -> anyhow::Result<Raw> {
        let ca = std::fs::read(node.ca_file())?;
        let admin = node.admin();
        let config = match alpn {
            None => {
                // Kept alive, as a real client keeps itself: a raw client that neither sends nor
                // reads must be closed by the node, not by its own idle timer.
                let mut config = cairn_client::quic_client_config(&admin)?;
                let mut transport = quinn::TransportConfig::default();
                transport.keep_alive_interval(Some(Duration::from_secs(1)));
                config.transport_config(Arc::new(transport));
                config
            }
            Some(alpn) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca) {
                    roots.add(cert?)?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                tls.alpn_protocols = vec![alpn.to_vec()];
                let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
                quinn::ClientConfig::new(Arc::new(quic))
            }
        };
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(config);
        let connection = endpoint.connect(node.addr(), "127.0.0.1")?.await?;
        let (send, recv) = connection.open_bi().await?;
        Ok(Raw { connection, send, recv, _endpoint: endpoint })
    }

    async fn send_body(&mut self, body: &[u8]) -> anyhow::Result<()> {
        self.send.write_all(&u32::try_from(body.len())?.to_be_bytes()).await?;
        self.send.write_all(body).await?;
        Ok(())
    }

    async fn send_request(&mut self, id: u64, request: Request) -> anyhow::Result<()> {
        let frame = encode_frame(&RequestFrame { id, request })?;
        self.send.write_all(&frame).await?;
        Ok(())
    }

    async fn response(&mut self) -> anyhow::Result<ResponseFrame> {
        read_response(&mut self.recv).await
    }
}

/// Reads one response frame from any stream, within the deadline.
async fn read_response(recv: &mut quinn::RecvStream) -> anyhow::Result<ResponseFrame> {
    tokio::time::timeout(READ_DEADLINE, async {
        let mut header = [0u8; 4];
        recv.read_exact(&mut header).await?;
        let mut body = vec![0; u32::from_be_bytes(header) as usize];
        recv.read_exact(&mut body).await?;
        match decode_body(&body)? {
            ServerFrame::Response(frame) => Ok(frame),
            ServerFrame::Event(event) => anyhow::bail!("unexpected event {event:?}"),
        }
    })
    .await?
}

fn error_code(frame: &ResponseFrame) -> Option<ErrorCode> {
    match &frame.response {
        Response::Error(error) => Some(error.code),
        Response::Ok(_) => None,
    }
}

/// A bystander's round trip, to show the node still serves others.
async fn bystander_round_trip(client: &cairn_client::Client, name: &str) -> anyhow::Result<()> {
    let path = format!("/bystander-{name}");
    client.create(&path, name.as_bytes().to_vec(), CreateOptions::persistent()).await?;
    anyhow::ensure!(client.get(&path).await?.0 == name.as_bytes());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_get_errors_and_the_stream_goes_on() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let mut raw = Raw::connect(&node, None).await?;

    // Not MessagePack at all: no id to answer to, so id 0.
    raw.send_body(&[0xc1, 0xff, 0x00]).await?;
    let reply = raw.response().await?;
    assert_eq!((reply.id, error_code(&reply)), (0, Some(ErrorCode::MalformedRequest)));

    // A well-formed frame of an unknown kind: answered under its own id, naming the kind.
    #[derive(serde::Serialize)]
    struct Unknown {
        id: u64,
        request: std::collections::BTreeMap<&'static str, u8>,
    }
    let body = rmp_serde::to_vec_named(&Unknown { id: 9, request: [("frobnicate", 1)].into() })?;
    raw.send_body(&body).await?;
    let reply = raw.response().await?;
    assert_eq!((reply.id, error_code(&reply)), (9, Some(ErrorCode::MalformedRequest)));
    assert!(format!("{:?}", reply.response).contains("frobnicate"), "{reply:?}");

    // A create missing its path.
    let body = rmp_serde::to_vec_named(&Unknown { id: 10, request: [("create", 1)].into() })?;
    raw.send_body(&body).await?;
    assert_eq!(error_code(&raw.response().await?), Some(ErrorCode::MalformedRequest));

    // The same stream still serves good requests, and refuses bad paths clearly.
    raw.send_request(11, Request::Get { path: "/".into(), local: false, watch: false }).await?;
    let reply = raw.response().await?;
    assert_eq!((reply.id, error_code(&reply)), (11, None));
    raw.send_request(12, Request::Get { path: "/a//b".into(), local: false, watch: false }).await?;
    let reply = raw.response().await?;
    assert_eq!((reply.id, error_code(&reply)), (12, Some(ErrorCode::InvalidPath)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_frame_closes_only_that_connection() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let bystander = node.client().await?;
    bystander_round_trip(&bystander, "before").await?;

    let mut raw = Raw::connect(&node, None).await?;
    // A header announcing 100 MiB: refused before any of it is read.
    raw.send.write_all(&(100u32 << 20).to_be_bytes()).await?;
    let reply = raw.response().await?;
    assert_eq!((reply.id, error_code(&reply)), (0, Some(ErrorCode::RequestTooLarge)));
    let closed = tokio::time::timeout(READ_DEADLINE, raw.connection.closed()).await?;
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, CLOSE_PROTOCOL_VIOLATION.into());
        }
        other => panic!("expected an application close, got {other:?}"),
    }

    bystander_round_trip(&bystander, "after").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_frames_and_wrong_alpn_harm_no_one() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let bystander = node.client().await?;

    // Half a frame, then the stream ends.
    let mut raw = Raw::connect(&node, None).await?;
    raw.send.write_all(&100u32.to_be_bytes()).await?;
    raw.send.write_all(&[0x82; 10]).await?;
    raw.send.finish()?;
    // The connection itself is still fine: a new stream on it is served.
    let (mut send, mut recv) = raw.connection.open_bi().await?;
    send.write_all(&encode_frame(&RequestFrame { id: 1, request: Request::Sync {} })?).await?;
    let reply = read_response(&mut recv).await?;
    assert_eq!((reply.id, error_code(&reply)), (1, None));

    // A client speaking another protocol fails the handshake.
    assert!(Raw::connect(&node, Some(b"not-cairn")).await.is_err());

    bystander_round_trip(&bystander, "still").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_give_clear_errors() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let client = node.client().await?;

    let over = client
        .create("/big", vec![0u8; ZNODE_DATA_BYTES_MAX + 1], CreateOptions::persistent())
        .await;
    let error = over.expect_err("over the data limit");
    assert_eq!(error.code(), Some(ErrorCode::TooLarge));
    assert!(error.to_string().starts_with("too large: /big"), "{error}");
    assert_eq!(client.exists("/big").await?, None);

    // Exactly at the limit is fine.
    client.create("/max", vec![7u8; ZNODE_DATA_BYTES_MAX], CreateOptions::persistent()).await?;
    assert_eq!(client.get("/max").await?.0.len(), ZNODE_DATA_BYTES_MAX);

    // A request over the frame limit is refused by the client before it is sent.
    let huge = client.set("/max", vec![0u8; REQUEST_BYTES_MAX + 1], None).await;
    assert_eq!(huge.expect_err("over the request limit").code(), Some(ErrorCode::RequestTooLarge));

    for bad in ["relative", "/trailing/", "/a//b", "/dot/.", "/nul\0"] {
        let error =
            client.create(bad, b"".to_vec(), CreateOptions::persistent()).await.expect_err(bad);
        assert_eq!(error.code(), Some(ErrorCode::InvalidPath), "{bad}");
    }
    let error = client
        .create("/t", b"".to_vec(), CreateOptions::ttl(Duration::ZERO))
        .await
        .expect_err("ttl 0");
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
    // The connection is still good after all of that.
    bystander_round_trip(&client, "limits").await?;
    Ok(())
}

/// Resident memory of a process, in KiB, from /proc.
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// A client that sends requests and never reads the replies. The node stops reading its
/// requests once the stream's outbox is full, so its memory stays within the outbox's bound
/// (before, every reply was queued: 0.5 → 4.5 GiB), and closes the connection once the outbox
/// has stayed full past its deadline; everyone else is served throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_is_bounded_and_cut_off() -> anyhow::Result<()> {
    use cairn_wire::CLOSE_SLOW_READER;
    let (_dir, node) = start_node(&[])?;
    let pid = node.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let client = node.client().await?;
    client.create("/big", vec![7; ZNODE_DATA_BYTES_MAX], CreateOptions::persistent()).await?;
    // Warm up what a read of /big costs once, so it is in the baseline.
    client.get("/big").await?;
    let baseline = resident_kib(pid)?;

    let mut raw = Raw::connect(&node, None).await?;
    let connection = raw.connection.clone();
    // 2,000 reads of 1 MiB: 2 GiB of replies, were they all queued.
    let requests = 2_000u64;
    let sender = tokio::spawn(async move {
        for id in 1..=requests {
            let get = Request::Get { path: "/big".into(), local: true, watch: false };
            if raw.send_request(id, get).await.is_err() {
                break;
            }
        }
        raw
    });
    let mut peak = baseline;
    let mut round = 0;
    let closed = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            peak = peak.max(resident_kib(pid)?);
            if let Some(reason) = connection.close_reason() {
                return anyhow::Ok(reason);
            }
            round += 1;
            bystander_round_trip(&client, &format!("while-full-{round}")).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await??;
    let grown_mib = peak.saturating_sub(baseline) / 1024;
    // The outbox's bound (8 MiB) and one reply past it, with room for the allocator.
    assert!(grown_mib < 128, "the node grew by {grown_mib} MiB for a client that never reads");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, CLOSE_SLOW_READER.into(), "{close:?}");
        }
        other => panic!("closed for another reason: {other:?}"),
    }
    drop(sender.await?);
    bystander_round_trip(&client, "after").await?;
    Ok(())
}

/// A connection's principal is settled once one of its streams has a session: a token
/// presented after that is refused, so a session never speaks for two principals.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cannot_change_principal_under_a_session() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let admin = node.client().await?;
    let token = admin.create_token("late").await?;
    let mut raw = Raw::connect(&node, None).await?;
    raw.send_request(1, Request::OpenSession { timeout_ms: 10_000 }).await?;
    assert_eq!(error_code(&raw.response().await?), None);
    raw.send_request(2, Request::Authenticate { token: token.clone() }).await?;
    assert_eq!(error_code(&raw.response().await?), Some(ErrorCode::InvalidArgument));
    raw.send_request(3, Request::WhoAmI {}).await?;
    let who = raw.response().await?;
    assert!(format!("{:?}", who.response).contains("\"admin\""), "{who:?}");

    // Before any session, the token is taken.
    let mut fresh = Raw::connect(&node, None).await?;
    fresh.send_request(1, Request::Authenticate { token }).await?;
    let reply = fresh.response().await?;
    assert!(format!("{:?}", reply.response).contains("\"late\""), "{reply:?}");
    Ok(())
}

/// A recipe op that needs the caller's session, on a stream without one, says so: `no-session`,
/// not the recipe's own error.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_without_a_session_is_no_session() -> anyhow::Result<()> {
    let (_dir, node) = start_node(&[])?;
    let mut raw = Raw::connect(&node, None).await?;
    let calls: [(&str, &str, &str); 7] = [
        ("fair-lock", "acquire", r#"{"lock":"jobs"}"#),
        ("fair-lock", "acquire-all", r#"{"locks":["a","b"]}"#),
        ("rw-lock", "acquire", r#"{"lock":"jobs","mode":"write","wait":false}"#),
        ("semaphore", "acquire", r#"{"sem":"s","permits":2,"count":1}"#),
        ("election", "campaign", r#"{"election":"e"}"#),
        ("queue", "take", r#"{"queue":"q","wait":true}"#),
        ("barrier", "enter", r#"{"barrier":"b","count":2}"#),
    ];
    for (id, (name, op, args)) in (1..).zip(calls) {
        let invoke = Request::Invoke {
            name: name.into(),
            version: None,
            op: op.into(),
            args: args.as_bytes().to_vec(),
        };
        raw.send_request(id, invoke).await?;
        let reply = raw.response().await?;
        assert_eq!(error_code(&reply), Some(ErrorCode::NoSession), "{name} {op}: {reply:?}");
    }
    Ok(())
}
