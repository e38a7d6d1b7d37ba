//! What a client trusts and how it proves who it is: the CA that signed the nodes'
//! certificates, and a client certificate or a token (or neither: the anonymous principal).

use std::path::Path;

use crate::Error;

/// The CA a client trusts, and the identity it presents.
#[derive(Clone)]
pub struct Credentials {
    pub(crate) ca_pem: Vec<u8>,
    /// A client certificate chain and its private key, PEM.
    pub(crate) certificate: Option<(Vec<u8>, Vec<u8>)>,
    /// A token, presented with `authenticate` on every connection.
    pub(crate) token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the token.
        f.debug_struct("Credentials")
            .field("certificate", &self.certificate.is_some())
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Tls(format!("cannot read {what} file {}: {e}", path.display())))
}

impl Credentials {
    /// Trusts the CA certificates in `ca_pem` and speaks for nobody: the anonymous principal.
    pub fn anonymous(ca_pem: impl Into<Vec<u8>>) -> Credentials {
        Credentials { ca_pem: ca_pem.into(), certificate: None, token: None }
    }

    /// Trusts the CA certificates in the PEM file `ca_file`, anonymously.
    pub fn from_ca_file(ca_file: impl AsRef<Path>) -> Result<Credentials, Error> {
        Ok(Credentials::anonymous(read(ca_file.as_ref(), "CA")?))
    }

    /// Presents the client certificate `cert_pem` (a chain, leaf first) with its key: the
    /// connection speaks for the certificate's common name.
    pub fn with_certificate(
        self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Credentials {
        Credentials { certificate: Some((cert_pem.into(), key_pem.into())), ..self }
    }

    /// [`with_certificate`](Self::with_certificate), from PEM files.
    pub fn with_certificate_files(
        self,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<Credentials, Error> {
        let cert = read(cert_file.as_ref(), "certificate")?;
        let key = read(key_file.as_ref(), "key")?;
        Ok(self.with_certificate(cert, key))
    }

    /// Authenticates every connection with `token`: it speaks for the token's principal.
    pub fn with_token(self, token: impl Into<String>) -> Credentials {
        Credentials { token: Some(token.into()), ..self }
    }
}
