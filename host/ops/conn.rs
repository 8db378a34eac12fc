//! Thin tokio drivers of [`super::wire`]: the daemon's accept loop and
//! connections, and the client's connection (ctl, or a daemon routing a
//! command). They move frames; every decision is in `wire`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::roles::Role;
use super::wire::{
    check_len, frame_header, ClientConn, Known, Principal, Reply, Request, ServerConn, ServerEvent, WireError,
    HANDSHAKE_TIMEOUT,
};
use crate::rpc::ratelog::LogLimit;

/// How long a request may wait for its reply (commands answer at once:
/// a stop is begun, not waited for; a routed one adds a hop).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections a daemon serves at once (more are closed at once).
pub const MAX_CONNS: usize = 64;

/// What the daemon's connections need from the daemon. Both calls may block
/// (they read the store): they run on tokio's blocking threads.
pub trait Handler: Send + Sync + 'static {
    /// Who `user` is, to check a login.
    fn lookup(&self, user: &str) -> Known;
    /// The key of decoy challenges for unknown users.
    fn decoy_key(&self) -> [u8; 32];
    /// Carries out a request of a logged-in principal.
    fn handle(&self, who: &Principal, req: Request) -> Reply;
    /// A login was refused (wrong user or password); for metrics. Does
    /// nothing unless overridden.
    fn login_refused(&self) {}
    /// A connection was accepted (`true`) or closed; for metrics. Does
    /// nothing unless overridden.
    fn connection(&self, _open: bool) {}
}

fn io(e: std::io::Error) -> WireError {
    WireError::Io(e.to_string())
}

/// Reads one frame of at most `limit` bytes.
///
/// # Errors
/// [`WireError::TooLarge`], or the connection's failure.
pub async fn read_frame(s: &mut TcpStream, limit: usize) -> Result<Vec<u8>, WireError> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.map_err(io)?;
    let len = check_len(h, limit)?;
    let mut b = vec![0u8; len];
    s.read_exact(&mut b).await.map_err(io)?;
    Ok(b)
}

/// Writes one frame.
///
/// # Errors
/// The connection's failure.
pub async fn write_frame(s: &mut TcpStream, b: &[u8]) -> Result<(), WireError> {
    let mut out = Vec::with_capacity(4 + b.len());
    out.extend_from_slice(&frame_header(b.len()));
    out.extend_from_slice(b);
    s.write_all(&out).await.map_err(io)
}

/// Log lines about refused connections, rate-limited (a remote party causes them).
#[derive(Debug, Default)]
struct Refusals(Mutex<LogLimit>);

impl Refusals {
    fn warn(&self, cause: &'static str, line: impl FnOnce() -> String) {
        let now = Instant::now();
        let mut l = match self.0.lock() {
            Ok(l) => l,
            Err(_) => return,
        };
        for s in l.end_windows(now) {
            tracing::warn!("{s}");
        }
        if l.allow(cause, now) {
            tracing::warn!("{}", line());
        }
    }
}

/// Serves `listener` until the task is dropped.
pub async fn accept_loop(listener: TcpListener, h: Arc<dyn Handler>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    let refusals = Arc::new(Refusals::default());
    loop {
        let (s, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                refusals.warn("accept failed", || format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refusals.warn("too many ctl connections", || {
                format!("ctl connection from {peer} closed: {MAX_CONNS} connections already")
            });
            continue;
        };
        let h = h.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            h.connection(true);
            serve_conn(s, peer, h.clone(), &refusals).await;
            h.connection(false);
            drop(permit);
        });
    }
}

async fn login(s: &mut TcpStream, conn: &mut ServerConn, h: &Arc<dyn Handler>) -> Result<Principal, WireError> {
    loop {
        let f = read_frame(s, conn.limit()).await?;
        match conn.on_frame(&f)? {
            ServerEvent::Lookup(hello) => {
                let h2 = h.clone();
                let user = hello.user.clone();
                let known = tokio::task::spawn_blocking(move || h2.lookup(&user))
                    .await
                    .map_err(|e| WireError::Io(e.to_string()))?;
                let ch = conn.challenge(&hello, known, &h.decoy_key())?;
                write_frame(s, &ch).await?;
            }
            ServerEvent::Refuse(f, e) => {
                write_frame(s, &f).await?;
                return Err(e.into());
            }
            ServerEvent::LoggedIn(f, who) => {
                write_frame(s, &f).await?;
                return Ok(who);
            }
            ServerEvent::Request(_) => return Err(WireError::Unexpected("a request before the login")),
        }
    }
}

async fn serve_conn(mut s: TcpStream, peer: SocketAddr, h: Arc<dyn Handler>, refusals: &Refusals) {
    let _ = s.set_nodelay(true);
    let mut conn = ServerConn::new();
    let who = match tokio::time::timeout(HANDSHAKE_TIMEOUT, login(&mut s, &mut conn, &h)).await {
        Err(_) => {
            refusals.warn("ctl login timed out", || {
                format!("ctl connection from {peer}: no login within {HANDSHAKE_TIMEOUT:?}; closed")
            });
            return;
        }
        Ok(Err(e)) => {
            if matches!(e, WireError::Auth(_)) {
                h.login_refused();
            }
            refusals.warn("ctl login refused", || format!("ctl login from {peer} refused: {e}"));
            return;
        }
        Ok(Ok(who)) => who,
    };
    tracing::debug!("ctl {peer} logged in as {who:?}");
    loop {
        let f = match read_frame(&mut s, conn.limit()).await {
            Ok(f) => f,
            Err(WireError::Io(_)) => return,
            Err(e) => {
                refusals.warn("bad ctl frame", || format!("ctl {peer}: {e}; closed"));
                return;
            }
        };
        let req = match conn.on_frame(&f) {
            Ok(ServerEvent::Request(r)) => r,
            Ok(_) => return,
            Err(e) => {
                refusals.warn("bad ctl frame", || format!("ctl {peer}: {e}; closed"));
                return;
            }
        };
        let h2 = h.clone();
        let w = who.clone();
        let reply = match tokio::task::spawn_blocking(move || h2.handle(&w, req)).await {
            Ok(r) => r,
            Err(e) => Reply::Failed {
                reason: format!("the daemon failed on this command: {e}"),
            },
        };
        let Ok(out) = conn.reply(&reply) else { return };
        if write_frame(&mut s, &out).await.is_err() {
            return;
        }
    }
}

/// A logged-in connection to a daemon.
pub struct Client {
    s: TcpStream,
    conn: ClientConn,
    /// The role the daemon gave (none for `@daemon`, `@bootstrap`).
    pub role: Option<Role>,
}

impl Client {
    /// Connects to `addr` and logs in as `user` knowing `secret`, all
    /// within [`HANDSHAKE_TIMEOUT`].
    ///
    /// # Errors
    /// The connection's failure, a refusal ([`WireError::Refused`] with the
    /// daemon's reason), a daemon that cannot prove itself, or a timeout.
    pub async fn connect(addr: &str, user: &str, secret: &[u8]) -> Result<Client, WireError> {
        let go = async {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| WireError::Io(format!("cannot connect to the daemon at {addr}: {e}")))?;
            let _ = s.set_nodelay(true);
            let (mut conn, hello) = ClientConn::start(user)?;
            write_frame(&mut s, &hello).await?;
            let ch = read_frame(&mut s, conn.limit()).await?;
            let proof = conn.on_challenge(&ch, secret)?;
            write_frame(&mut s, &proof).await?;
            let v = read_frame(&mut s, conn.limit()).await.map_err(|e| match e {
                WireError::Io(_) => WireError::Io("the daemon closed the connection during the login".into()),
                e => e,
            })?;
            let role = conn.on_verdict(&v)?;
            Ok(Client { s, conn, role })
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, go)
            .await
            .map_err(|_| WireError::Timeout(HANDSHAKE_TIMEOUT))?
    }

    /// Sends a request and waits for its reply, up to [`REPLY_TIMEOUT`].
    ///
    /// # Errors
    /// The connection's failure, no reply in time, or a frame that does not open.
    pub async fn call(&mut self, req: &Request) -> Result<Reply, WireError> {
        self.call_within(req, REPLY_TIMEOUT).await
    }

    /// [`Client::call`] waiting up to `limit` (a daemon routing a command
    /// gives up before the ctl waiting on it does).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn call_within(&mut self, req: &Request, limit: Duration) -> Result<Reply, WireError> {
        let f = self.conn.request(req)?;
        let go = async {
            write_frame(&mut self.s, &f).await?;
            read_frame(&mut self.s, self.conn.limit()).await
        };
        let r = tokio::time::timeout(limit, go)
            .await
            .map_err(|_| WireError::NoReply(limit))??;
        self.conn.on_reply(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::auth::{Kdf, Verifier};
    use crate::ops::wire::{Command, Output};

    struct One(Verifier);

    impl Handler for One {
        fn lookup(&self, user: &str) -> Known {
            match user {
                "alice" => Known::Yes(
                    self.0.clone(),
                    Principal::User {
                        name: "alice".into(),
                        role: Role::Viewer,
                    },
                ),
                _ => Known::No,
            }
        }
        fn decoy_key(&self) -> [u8; 32] {
            [1; 32]
        }
        fn handle(&self, who: &Principal, req: Request) -> Reply {
            Reply::Ok(Output::Done {
                message: format!("{who:?} {}", req.command.describe()),
            })
        }
    }

    async fn daemon() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let v = Verifier::new(b"pw", Kdf::Argon2id { m: 64, t: 1, p: 1 }).unwrap();
        tokio::spawn(accept_loop(l, Arc::new(One(v))));
        addr
    }

    #[tokio::test]
    async fn login_request_reply_over_tcp() {
        let addr = daemon().await;
        let mut c = Client::connect(&addr, "alice", b"pw").await.unwrap();
        assert_eq!(c.role, Some(Role::Viewer));
        let r = c
            .call(&Request {
                command: Command::UserList,
                on_behalf: None,
            })
            .await
            .unwrap();
        assert!(
            matches!(r, Reply::Ok(Output::Done { ref message }) if message.contains("user list")),
            "{r:?}"
        );
        let e = Client::connect(&addr, "alice", b"wrong").await.err().unwrap();
        assert!(e.to_string().contains("wrong user or password"), "{e}");
    }

    /// Paused time: the clock jumps to the next deadline whenever every
    /// task waits, so the 10 s deadline passes at once, and the virtual
    /// time says when the connection was closed.
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_does_not_log_in_is_closed_at_the_deadline() {
        let addr = daemon().await;
        let t0 = Instant::now();
        let mut s = TcpStream::connect(&addr).await.unwrap();
        // a hello, then silence
        let (_c, hello) = crate::ops::wire::ClientConn::start("alice").unwrap();
        write_frame(&mut s, &hello).await.unwrap();
        let ch = read_frame(&mut s, crate::ops::wire::HANDSHAKE_MAX).await.unwrap();
        assert!(!ch.is_empty());
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await;
        assert!(matches!(n, Ok(0) | Err(_)), "closed: {n:?}");
        let waited = t0.elapsed();
        assert!(
            waited >= HANDSHAKE_TIMEOUT && waited < HANDSHAKE_TIMEOUT + Duration::from_secs(1),
            "closed after {waited:?}"
        );
    }

    #[tokio::test]
    async fn an_oversize_frame_before_login_closes_the_connection() {
        let addr = daemon().await;
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&frame_header(1 << 20)).await.unwrap();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "closed, nothing answered: {n:?}");
    }
}
