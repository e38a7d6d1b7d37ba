//! A small HTTP/1.1 client for the admin listener (plain HTTP, or HTTPS with the cluster CA and
//! a client certificate if it is given one): one request per connection, the whole answer
//! read, bounded in time and size.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// The largest answer read.
const ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// An answer: its status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The value of the header `name` (case-insensitive), if it is there.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `GET url` (an `http://HOST:PORT/...` URL), with extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
    request(None, "GET", url, headers, None).await
}

/// `POST url` with a JSON body.
pub async fn post_json(url: &str, headers: &[(&str, &str)], body: &str) -> anyhow::Result<Answer> {
    request(None, "POST", url, headers, Some(body)).await
}

/// An HTTPS client: the CA it trusts, and the certificate it presents, if any.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Trusts the CA in `ca` (PEM) and presents `identity` (certificate and key PEM files).
    pub fn new(ca: &Path, identity: Option<(&Path, &Path)>) -> anyhow::Result<Tls> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
                builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key)?)?
            }
        };
        Ok(Tls { config: Arc::new(config) })
    }

    /// `GET url` (an `https://` URL) over TLS.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
        request(Some(self), "GET", url, headers, None).await
    }

    /// `POST url` with a JSON body, over TLS.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<Answer> {
        request(Some(self), "POST", url, headers, Some(body)).await
    }
}

async fn request(
    tls: Option<&Tls>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> anyhow::Result<Answer> {
    let scheme = if tls.is_some() { "https://" } else { "http://" };
    let rest = url.strip_prefix(scheme).with_context(|| format!("not an {scheme} URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {authority}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(authority).await?;
        let mut stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
                let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        stream.write_all(head.as_bytes()).await?;
        if let Some(body) = body {
            stream.write_all(body.as_bytes()).await?;
        }
        let mut answer = Vec::new();
        // A TLS server may close without close_notify after `Connection: close`: what came is
        // the answer.
        match stream.take(ANSWER_BYTES_MAX).read_to_end(&mut answer).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(error) => return Err(error.into()),
        }
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(REQUEST_DEADLINE, exchange)
        .await
        .with_context(|| format!("{method} {url}: no answer within {REQUEST_DEADLINE:?}"))??;
    parse(&answer).with_context(|| format!("{method} {url}"))
}

/// A connection, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

fn parse(answer: &[u8]) -> anyhow::Result<Answer> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of the head")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok(Answer { status, headers, body })
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("a chunk without a size line")?;
        let size = usize::from_str_radix(size.trim(), 16).context("a bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            bail!("a chunk shorter than its size");
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
}
