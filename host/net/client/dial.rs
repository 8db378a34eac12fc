//! The connecting side of a client connection: a target (TCP or a
//! WebSocket URL), dialing, TLS, the WebSocket handshake.

use super::*;

/// Where a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Frames over TCP to this address (TLS when [`connect`] is given a
    /// [`ClientTls`]).
    Tcp(SocketAddr),
    /// A WebSocket URL, `ws://host:port/path` or `wss://host:port/path`
    /// (the scheme decides TLS; the Gate ignores the path).
    Ws(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "tcp://{addr}"),
            Target::Ws(url) => f.write_str(url),
        }
    }
}

/// The host, port and TLS-ness of a WebSocket URL.
pub(super) fn parse_ws_url(url: &str) -> Result<(String, u16, bool), String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        Some(other) => return Err(format!("scheme {other}:// is neither ws:// nor wss://")),
        None => return Err("no scheme (ws:// or wss://)".into()),
    };
    let host = uri.host().filter(|h| !h.is_empty()).ok_or("no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Ok((host, port, secure))
}

async fn dial(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = io::Error::new(e.kind(), format!("connect to {addr}: {e}")),
        }
    }
    Err(last)
}

async fn wrap_tls(stream: TcpStream, tls: Option<ClientTls>) -> Result<Io, ClientNetError> {
    let Some(tls) = tls else {
        return Ok(Io::Plain(stream));
    };
    let name = tls.server_name.to_str().into_owned();
    let s = TlsConnector::from(tls.config)
        .connect(tls.server_name, stream)
        .await
        .map_err(|e| handshake_error(e, &format!("handshake with {name}")))?;
    Ok(Io::Tls(Box::new(TlsStream::Client(s))))
}

/// Connects to a Gate: TCP (inside TLS when `tls` is given) or WebSocket
/// (`wss://` needs `tls`, `ws://` refuses it). The connection's reader
/// accepts messages up to [`wire::DEFAULT_MAX_MESSAGE`] bytes
/// ([`ClientConn::set_max_message`] changes it).
///
/// Not bounded in time: wrap it in a timeout.
///
/// # Errors
///
/// [`ClientNetError::Target`] for a bad URL or a scheme that does not match
/// `tls`, [`ClientNetError::Io`] when the connection fails,
/// [`ClientNetError::Tls`] when the handshake does (e.g. the server's
/// certificate is not trusted), [`ClientNetError::WebSocket`] when the
/// upgrade does.
pub async fn connect(target: &Target, tls: Option<ClientTls>) -> Result<ClientConn, ClientNetError> {
    let max = wire::DEFAULT_MAX_MESSAGE;
    match target {
        Target::Tcp(addr) => {
            let stream = dial(&[*addr]).await?;
            let peer = stream.peer_addr()?;
            Ok(ClientConn::bytes(wrap_tls(stream, tls).await?, peer, max))
        }
        Target::Ws(url) => {
            let bad = |why: String| ClientNetError::Target {
                target: url.clone(),
                why,
            };
            let (host, port, secure) = parse_ws_url(url).map_err(bad)?;
            match (secure, tls.is_some()) {
                (true, false) => return Err(bad("wss:// needs a TLS setting".into())),
                (false, true) => return Err(bad("a TLS setting was given for a ws:// URL (use wss://)".into())),
                _ => {}
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
                .collect();
            let stream = dial(&addrs).await?;
            let peer = stream.peer_addr()?;
            let io = wrap_tls(stream, tls).await?;
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(ws_config(ws_limit(max))))
                    .await
                    .map_err(|e| match ClientNetError::from(e) {
                        ClientNetError::WebSocket(t) => ClientNetError::WebSocket(format!("upgrade: {t}")),
                        other => other,
                    })?;
            Ok(ClientConn::ws(ws, peer, max))
        }
    }
}
