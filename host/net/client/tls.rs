//! TLS for client connections: the Gate's server configuration from PEM
//! files, and a client's configuration trusting a given certificate.

use super::*;

/// The PEM files of a TLS server: its certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert: PathBuf,
    /// The private key (PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE
    /// KEY`).
    pub key: PathBuf,
}

fn read_file(path: &Path) -> Result<Vec<u8>, ClientNetError> {
    std::fs::read(path).map_err(|e| ClientNetError::Cert {
        path: path.to_path_buf(),
        why: format!("cannot read it: {e}"),
    })
}

fn certs_from_pem(pem_bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientNetError> {
    let certs = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientNetError::Cert {
            path: path.to_path_buf(),
            why: format!("not a valid PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ClientNetError::Cert {
            path: path.to_path_buf(),
            why: "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a server's certificate chain and key into a rustls configuration
/// for [`ClientListener::bind`].
///
/// # Errors
///
/// [`ClientNetError::Cert`] naming the file: missing or unreadable, not
/// PEM, no certificate or no private key in it, a key rustls cannot use, or
/// a key that does not belong to the certificate.
pub fn server_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ClientNetError> {
    let certs = certs_from_pem(&read_file(&files.cert)?, &files.cert)?;
    let key_pem = read_file(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ClientNetError::Cert {
        path: files.key.clone(),
        why: match e {
            pem::Error::NoItemsFound => {
                "no PEM private key in it (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)".into()
            }
            e => format!("not a valid PEM key file: {e}"),
        },
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientNetError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ClientNetError::Cert {
            path: files.key.clone(),
            why: match e {
                rustls::Error::InconsistentKeys(_) => {
                    format!(
                        "this key does not belong to the certificate in {}",
                        files.cert.display()
                    )
                }
                e => format!("unusable key: {e}"),
            },
        })?;
    Ok(Arc::new(config))
}

/// What a client needs to dial over TLS: the rustls configuration (its
/// trusted roots) and the name the server's certificate must carry.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The name checked against the server's certificate (for `wss://` too,
    /// whatever host the URL names).
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// A client TLS setting from a rustls configuration and a server name
    /// (a DNS name or an IP address).
    ///
    /// # Errors
    ///
    /// [`ClientNetError::Tls`] when `server_name` is neither.
    pub fn new(config: Arc<rustls::ClientConfig>, server_name: &str) -> Result<ClientTls, ClientNetError> {
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientNetError::Tls(format!("bad server name {server_name:?}: {e}")))?;
        Ok(ClientTls { config, server_name })
    }
}

/// A client TLS setting that trusts the certificate(s) in the PEM file at
/// `ca` (a self-signed server certificate, or the CA that signed it) and
/// expects the server to present `server_name`.
///
/// # Errors
///
/// [`ClientNetError::Cert`] naming the file (missing, not PEM, no
/// certificate, a certificate rustls refuses as a root);
/// [`ClientNetError::Tls`] for a bad server name.
pub fn client_tls_trusting(ca: impl AsRef<Path>, server_name: &str) -> Result<ClientTls, ClientNetError> {
    let path = ca.as_ref();
    client_tls_from(&read_file(path)?, path, server_name)
}

/// Like [`client_tls_trusting`], with the PEM given as bytes.
///
/// # Errors
///
/// As [`client_tls_trusting`].
pub fn client_tls_trusting_pem(ca_pem: &[u8], server_name: &str) -> Result<ClientTls, ClientNetError> {
    client_tls_from(ca_pem, Path::new(IN_MEMORY), server_name)
}

fn client_tls_from(ca_pem: &[u8], path: &Path, server_name: &str) -> Result<ClientTls, ClientNetError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, path)? {
        roots.add(cert).map_err(|e| ClientNetError::Cert {
            path: path.to_path_buf(),
            why: format!("cannot trust this certificate: {e}"),
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientNetError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    ClientTls::new(Arc::new(config), server_name)
}
