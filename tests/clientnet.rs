//! Client connections (`net::client`) over real loopback sockets: TCP, WS,
//! TCP+TLS and WSS, both sides, with certificates made here by rcgen.
//!
//! No sleeps: every wait is on a socket, and every test runs under an
//! overall timeout so a hang fails instead of blocking the run.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use luahost::codec::wire::{self, Message};
use luahost::net::client::{
    client_tls_trusting, client_tls_trusting_pem, connect, server_tls, ClientConn, ClientListener, ClientNetError,
    ClientTls, Incoming, Target, TlsFiles, Transport,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Bound on anything that should happen promptly.
const PROMPT: Duration = Duration::from_secs(10);
/// What a Gate accepts before a client verifies (protocol.md).
const BEFORE_VERIFY: usize = 4096;
/// 100 KiB: four fragments.
const BIG: usize = 100 * 1024;

/// Runs a test body under [`PROMPT`] * 3.
async fn bounded<F: Future<Output = ()>>(body: F) {
    timeout(PROMPT * 3, body).await.expect("test timed out");
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "luahost-clientnet-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `localhost`, as PEM files.
struct Certs {
    dir: TempDir,
    files: TlsFiles,
    cert_pem: String,
}

fn make_certs(tag: &str) -> Certs {
    // Each its own issuer name, as certificates of two CAs would have.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("luahost test {tag}"));
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let ck = rcgen::CertifiedKey {
        cert: params.self_signed(&signing_key).unwrap(),
        signing_key,
    };
    let dir = TempDir::new(tag);
    let files = TlsFiles {
        cert: dir.0.join("cert.pem"),
        key: dir.0.join("key.pem"),
    };
    let cert_pem = ck.cert.pem();
    std::fs::write(&files.cert, &cert_pem).unwrap();
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
    Certs { dir, files, cert_pem }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Ws,
    Tls,
    Wss,
}

const KINDS: [Kind; 4] = [Kind::Tcp, Kind::Ws, Kind::Tls, Kind::Wss];

impl Kind {
    fn transport(self) -> Transport {
        match self {
            Kind::Tcp | Kind::Tls => Transport::Tcp,
            Kind::Ws | Kind::Wss => Transport::Ws,
        }
    }

    fn tls(self) -> bool {
        matches!(self, Kind::Tls | Kind::Wss)
    }

    fn target(self, addr: SocketAddr) -> Target {
        match self {
            Kind::Tcp | Kind::Tls => Target::Tcp(addr),
            Kind::Ws => Target::Ws(format!("ws://{addr}/game")),
            Kind::Wss => Target::Ws(format!("wss://{addr}/")),
        }
    }
}

/// A listener of `kind` on 127.0.0.1 and what a client needs to reach it.
struct Setup {
    kind: Kind,
    listener: ClientListener,
    certs: Option<Certs>,
}

impl Setup {
    async fn new(kind: Kind) -> Setup {
        let certs = kind.tls().then(|| make_certs(&format!("{kind:?}")));
        let tls = certs.as_ref().map(|c| server_tls(&c.files).unwrap());
        let listener = ClientListener::bind("127.0.0.1:0".parse().unwrap(), kind.transport(), tls)
            .await
            .unwrap();
        assert_eq!(listener.transport(), kind.transport());
        assert_eq!(listener.is_tls(), kind.tls());
        Setup { kind, listener, certs }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    fn target(&self) -> Target {
        self.kind.target(self.addr())
    }

    fn client_tls(&self) -> Option<ClientTls> {
        self.certs
            .as_ref()
            .map(|c| client_tls_trusting(&c.files.cert, "localhost").unwrap())
    }

    /// What dials it (taken before the listener moves to its server task).
    fn dialer(&self) -> Dialer {
        Dialer {
            target: self.target(),
            tls: self.client_tls(),
        }
    }
}

/// A client's way to one listener.
struct Dialer {
    target: Target,
    tls: Option<ClientTls>,
}

impl Dialer {
    async fn connect(&self) -> Result<ClientConn, ClientNetError> {
        timeout(PROMPT, connect(&self.target, self.tls.clone()))
            .await
            .expect("connect in time")
    }
}

async fn open(incoming: Incoming, max: usize) -> Result<ClientConn, ClientNetError> {
    timeout(PROMPT, incoming.open(max)).await.expect("open in time")
}

/// Serves one client: opens it, raises the limit to `max_after`, echoes
/// every message until the client closes, then closes. Returns how many
/// messages it echoed, or the error that ended it.
async fn echo_one(listener: ClientListener, max_after: usize) -> Result<usize, ClientNetError> {
    let (incoming, peer) = listener.accept().await?;
    assert_eq!(incoming.peer_addr(), peer);
    let mut conn = open(incoming, BEFORE_VERIFY).await?;
    assert_eq!(conn.peer_addr(), peer);
    conn.set_max_message(max_after);
    let mut n = 0;
    while let Some(m) = conn.next().await? {
        conn.send(m.session, &m.data).await?;
        n += 1;
    }
    conn.close().await?;
    Ok(n)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn recv(conn: &mut ClientConn) -> Message {
    timeout(PROMPT, conn.next())
        .await
        .expect("a message in time")
        .expect("no error")
        .expect("not closed")
}

async fn echo_round_trips(kind: Kind) {
    let setup = Setup::new(kind).await;
    let (dialer, addr) = (setup.dialer(), setup.addr());
    let server = tokio::spawn(echo_one(setup.listener, 1 << 20));
    let mut client = dialer.connect().await.unwrap();
    assert_eq!(client.peer_addr(), addr);

    client.send(0, b"hello").await.unwrap();
    let m = recv(&mut client).await;
    assert_eq!((m.session, &m.data[..]), (0, &b"hello"[..]));

    // Several messages in one write: over WebSocket, one binary message each.
    let mut frames = BytesMut::new();
    wire::put_message(&mut frames, 1, b"one");
    wire::put_message(&mut frames, 2, b"two");
    client.write(&frames).await.unwrap();
    assert_eq!(&recv(&mut client).await.data[..], b"one");
    assert_eq!(recv(&mut client).await.session, 2);

    // 100 KiB, fragmented, both ways.
    let big = pattern(BIG, 7);
    client.send(42, &big).await.unwrap();
    let m = recv(&mut client).await;
    assert_eq!(m.session, 42);
    assert_eq!(&m.data[..], &big[..]);

    client.close().await.unwrap();
    let end = timeout(PROMPT, client.next()).await.expect("close answered in time");
    assert!(matches!(end, Ok(None)), "{kind:?}: clean close, got {end:?}");
    assert_eq!(server.await.unwrap().unwrap(), 4, "{kind:?}");
}

#[tokio::test]
async fn echo_over_tcp() {
    bounded(echo_round_trips(Kind::Tcp)).await;
}

#[tokio::test]
async fn echo_over_ws() {
    bounded(echo_round_trips(Kind::Ws)).await;
}

#[tokio::test]
async fn echo_over_tcp_tls() {
    bounded(echo_round_trips(Kind::Tls)).await;
}

#[tokio::test]
async fn echo_over_wss() {
    bounded(echo_round_trips(Kind::Wss)).await;
}

#[tokio::test]
async fn oversize_is_refused_over_every_transport() {
    bounded(async {
        for kind in KINDS {
            // Before verify: 5000 bytes against the 4 KiB limit.
            let setup = Setup::new(kind).await;
            let dialer = setup.dialer();
            let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
            let mut client = dialer.connect().await.unwrap();
            client.send(1, &[0u8; 5000]).await.unwrap();
            let err = server.await.unwrap().unwrap_err();
            assert!(
                matches!(err, ClientNetError::Oversize { max: BEFORE_VERIFY, .. }),
                "{kind:?}: {err}"
            );

            // A fragmented message over the raised limit is refused too.
            let setup = Setup::new(kind).await;
            let dialer = setup.dialer();
            let server = tokio::spawn(echo_one(setup.listener, 40_000));
            let mut client = dialer.connect().await.unwrap();
            client.send(1, &pattern(BIG, 1)).await.unwrap();
            let err = server.await.unwrap().unwrap_err();
            assert!(
                matches!(err, ClientNetError::Oversize { max: 40_000, .. }),
                "{kind:?}: {err}"
            );
        }
    })
    .await;
}

/// A raw WebSocket client on `addr` (plain ws only).
async fn raw_ws(addr: SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .unwrap();
    ws
}

fn frames(msgs: &[(u32, &[u8])]) -> Bytes {
    let mut out = BytesMut::new();
    for (session, data) in msgs {
        wire::put_message(&mut out, *session, data);
    }
    out.freeze()
}

#[tokio::test]
async fn a_ws_text_message_is_refused() {
    bounded(async {
        let setup = Setup::new(Kind::Ws).await;
        let addr = setup.addr();
        let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
        let mut ws = raw_ws(addr).await;
        ws.send(WsMessage::text("[0, \"me\"]")).await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientNetError::TextMessage), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_ws_binary_message_may_hold_several_whole_frames() {
    bounded(async {
        let setup = Setup::new(Kind::Ws).await;
        let addr = setup.addr();
        let server = tokio::spawn(echo_one(setup.listener, 1 << 20));
        let mut ws = raw_ws(addr).await;
        ws.send(WsMessage::Binary(frames(&[(1, b"a"), (2, b"bb")])))
            .await
            .unwrap();
        // An empty binary message holds no frame: ignored.
        ws.send(WsMessage::Binary(Bytes::new())).await.unwrap();
        // A fragmented message may be cut between binary messages at frame
        // boundaries (here: every fragment but the last in one message).
        let big = pattern(BIG, 3);
        let all = frames(&[(3, &big)]);
        // The last fragment carries BIG % FRAGMENT bytes after its header.
        let last = all.len() - (wire::HEADER + BIG % wire::FRAGMENT);
        assert_eq!(all[last + 2], wire::FLAG_LAST);
        ws.send(WsMessage::Binary(all.slice(..last))).await.unwrap();
        ws.send(WsMessage::Binary(all.slice(last..))).await.unwrap();
        // The server echoes one frame per binary message.
        let mut got = Vec::new();
        while got.len() < 2 + 4 {
            match ws.next().await.unwrap().unwrap() {
                WsMessage::Binary(b) => {
                    assert!(wire::has_frame(&b));
                    assert_eq!(b.len(), 2 + u16::from_be_bytes([b[0], b[1]]) as usize, "one frame each");
                    got.push(b);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(&got[0][7..], b"a");
        assert_eq!(&got[1][7..], b"bb");
        let flags: Vec<u8> = got[2..].iter().map(|b| b[2]).collect();
        assert_eq!(
            flags,
            vec![wire::FLAG_FIRST, wire::FLAG_MIDDLE, wire::FLAG_MIDDLE, wire::FLAG_LAST]
        );
        let data: Vec<u8> = got[2..].iter().flat_map(|b| b[7..].to_vec()).collect();
        assert_eq!(data, big);
        ws.close(None).await.unwrap();
        assert_eq!(server.await.unwrap().unwrap(), 3);
    })
    .await;
}

#[tokio::test]
async fn a_frame_cut_across_ws_messages_is_refused() {
    bounded(async {
        let setup = Setup::new(Kind::Ws).await;
        let addr = setup.addr();
        let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
        let mut ws = raw_ws(addr).await;
        let f = frames(&[(1, b"hello")]);
        ws.send(WsMessage::Binary(f.slice(..4))).await.unwrap();
        ws.send(WsMessage::Binary(f.slice(4..))).await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientNetError::SplitFrame), "{err}");
    })
    .await;
}

#[tokio::test]
async fn an_oversize_ws_message_is_refused_by_the_websocket_layer() {
    bounded(async {
        let setup = Setup::new(Kind::Ws).await;
        let addr = setup.addr();
        let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
        let mut ws = raw_ws(addr).await;
        // 8 whole 32 KiB frames in one binary message: 256 KiB, over the
        // WebSocket limit (4 KiB / one frame + 64 KiB) whatever the frames.
        let junk = frames(&[(1, &pattern(8 * wire::FRAGMENT, 0))]);
        // The server may close while this is being written.
        let _ = ws.send(WsMessage::Binary(junk)).await;
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientNetError::Oversize { .. }), "{err}");
    })
    .await;
}

#[tokio::test]
async fn ws_pings_are_answered() {
    bounded(async {
        let setup = Setup::new(Kind::Ws).await;
        let addr = setup.addr();
        let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
        let mut ws = raw_ws(addr).await;
        // Answered by the reading side alone: the server writes nothing else.
        ws.send(WsMessage::Ping(Bytes::from_static(b"p"))).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            WsMessage::Pong(p) => assert_eq!(&p[..], b"p"),
            other => panic!("expected a pong, got {other:?}"),
        }
        ws.send(WsMessage::Binary(frames(&[(5, b"after ping")]))).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            WsMessage::Binary(b) => assert_eq!(&b[7..], b"after ping"),
            other => panic!("expected the echo, got {other:?}"),
        }
        ws.close(None).await.unwrap();
        assert_eq!(server.await.unwrap().unwrap(), 1);
    })
    .await;
}

/// A client that connects and never speaks holds `open` pending (it is the
/// caller's timeout that ends it), and dropping the future closes the socket.
#[tokio::test]
async fn a_silent_client_leaves_open_pending_until_dropped() {
    bounded(async {
        for kind in [Kind::Ws, Kind::Tls, Kind::Wss] {
            let setup = Setup::new(kind).await;
            let mut silent = TcpStream::connect(setup.addr()).await.unwrap();
            let (incoming, _) = setup.listener.accept().await.unwrap();
            let pending = timeout(Duration::from_millis(200), incoming.open(BEFORE_VERIFY)).await;
            assert!(pending.is_err(), "{kind:?}: open() must still be waiting");
            // The future (and the socket in it) is gone: the client sees the
            // end of the stream.
            let mut buf = [0u8; 16];
            let n = timeout(PROMPT, silent.read(&mut buf)).await.expect("closed in time");
            assert!(matches!(n, Ok(0)) || n.is_err(), "{kind:?}: socket closed, got {n:?}");
        }
        // Plain TCP has nothing to wait for: open() is immediate.
        let setup = Setup::new(Kind::Tcp).await;
        let _silent = TcpStream::connect(setup.addr()).await.unwrap();
        let (incoming, _) = setup.listener.accept().await.unwrap();
        let conn = timeout(Duration::from_millis(200), incoming.open(BEFORE_VERIFY)).await;
        assert!(matches!(conn, Ok(Ok(_))));
    })
    .await;
}

#[tokio::test]
async fn a_client_trusting_another_certificate_fails_the_handshake() {
    bounded(async {
        let other = make_certs("other");
        for kind in [Kind::Tls, Kind::Wss] {
            let setup = Setup::new(kind).await;
            let wrong = client_tls_trusting_pem(other.cert_pem.as_bytes(), "localhost").unwrap();
            let target = setup.target();
            let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
            let err = connect(&target, Some(wrong)).await.unwrap_err();
            match &err {
                ClientNetError::Tls(t) => {
                    assert!(
                        t.contains("handshake with localhost") && t.contains("UnknownIssuer"),
                        "{kind:?}: {t}"
                    );
                }
                other => panic!("{kind:?}: expected a TLS error, got {other}"),
            }
            let server_err = server.await.unwrap().unwrap_err();
            eprintln!("{kind:?}: client: {err}; server: {server_err}");
            assert!(matches!(server_err, ClientNetError::Tls(_)), "{kind:?}: {server_err}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_the_handshake() {
    bounded(async {
        let setup = Setup::new(Kind::Tls).await;
        let certs = setup.certs.as_ref().unwrap();
        let wrong_name = client_tls_trusting(&certs.files.cert, "gate.example").unwrap();
        let target = setup.target();
        let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
        let err = connect(&target, Some(wrong_name)).await.unwrap_err();
        assert!(
            matches!(&err, ClientNetError::Tls(t) if t.contains("not valid for name \"gate.example\"")),
            "{err}"
        );
        assert!(server.await.unwrap().is_err());
    })
    .await;
}

#[tokio::test]
async fn a_plain_client_against_a_tls_listener_fails_cleanly() {
    bounded(async {
        // Frames in the clear to TLS over TCP.
        let setup = Setup::new(Kind::Tls).await;
        let target = setup.target();
        let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
        let mut client = connect(&target, None).await.unwrap();
        client.send(0, b"hello").await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientNetError::Tls(_)), "{err}");
        let answer = timeout(PROMPT, client.next()).await.unwrap();
        eprintln!("plain to TLS: server: {err}; client: {answer:?}");
        assert!(!matches!(answer, Ok(Some(_))), "no message, got {answer:?}");

        // A ws:// upgrade to a wss:// listener.
        let setup = Setup::new(Kind::Wss).await;
        let plain = Kind::Ws.target(setup.addr());
        let server = tokio::spawn(echo_one(setup.listener, BEFORE_VERIFY));
        let err = timeout(PROMPT, connect(&plain, None)).await.unwrap().unwrap_err();
        assert!(
            matches!(err, ClientNetError::WebSocket(_) | ClientNetError::Io(_)),
            "{err}"
        );
        let server_err = server.await.unwrap().unwrap_err();
        eprintln!("ws to wss: client: {err}; server: {server_err}");
        assert!(matches!(server_err, ClientNetError::Tls(_)), "{server_err}");
    })
    .await;
}

#[tokio::test]
async fn targets_and_tls_must_agree() {
    bounded(async {
        let certs = make_certs("agree");
        let tls = client_tls_trusting(&certs.files.cert, "localhost").unwrap();
        let err = connect(&Target::Ws("wss://127.0.0.1:1/".into()), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientNetError::Target { .. }), "{err}");
        let err = connect(&Target::Ws("ws://127.0.0.1:1/".into()), Some(tls))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientNetError::Target { .. }), "{err}");
        let err = connect(&Target::Ws("http://127.0.0.1:1/".into()), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientNetError::Target { .. }), "{err}");
    })
    .await;
}

#[test]
fn tls_files_are_checked_with_clear_errors() {
    let certs = make_certs("files");
    let other = make_certs("files-other");
    let dir = &certs.dir.0;
    let cert_path = |e: &ClientNetError| match e {
        ClientNetError::Cert { path, .. } => path.clone(),
        other => panic!("expected a certificate error, got {other}"),
    };

    let missing = TlsFiles {
        cert: dir.join("nope.pem"),
        key: certs.files.key.clone(),
    };
    let e = server_tls(&missing).unwrap_err();
    assert_eq!(cert_path(&e), missing.cert);
    assert!(
        e.to_string().contains("nope.pem") && e.to_string().contains("cannot read"),
        "{e}"
    );

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let e = server_tls(&TlsFiles {
        cert: garbage.clone(),
        key: certs.files.key.clone(),
    })
    .unwrap_err();
    assert_eq!(cert_path(&e), garbage);
    assert!(e.to_string().contains("no PEM certificate"), "{e}");

    // The certificate file given as the key: no key in it.
    let e = server_tls(&TlsFiles {
        cert: certs.files.cert.clone(),
        key: certs.files.cert.clone(),
    })
    .unwrap_err();
    assert!(e.to_string().contains("no PEM private key"), "{e}");

    // Another certificate's key.
    let e = server_tls(&TlsFiles {
        cert: certs.files.cert.clone(),
        key: other.files.key.clone(),
    })
    .unwrap_err();
    assert_eq!(cert_path(&e), other.files.key);
    assert!(e.to_string().contains("does not belong"), "{e}");

    let e = client_tls_trusting(dir.join("nope.pem"), "localhost").unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
    let e = client_tls_trusting(&certs.files.key, "localhost").unwrap_err();
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    assert!(client_tls_trusting(&certs.files.cert, "not a name!").is_err());
    assert!(server_tls(&certs.files).is_ok());
}

/// The Gate's way: a current-thread runtime with a LocalSet, the reader and
/// the writer of one connection in two tasks; the writer pushes while the
/// reader waits, and the reader hands what it reads to the writer.
#[test]
fn the_halves_work_from_two_local_tasks() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        bounded(async {
            for kind in KINDS {
                let setup = Setup::new(kind).await;
                let dialer = setup.dialer();
                let (client, conn) = tokio::join!(dialer.connect(), async {
                    let (incoming, _) = setup.listener.accept().await?;
                    open(incoming, BEFORE_VERIFY).await
                });
                let (mut client, conn) = (client.unwrap(), conn.unwrap());
                let (mut rd, mut wr) = conn.into_split();
                assert_eq!(rd.peer_addr(), wr.peer_addr());
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
                let reader = tokio::task::spawn_local(async move {
                    rd.set_max_message(1 << 20);
                    while let Some(m) = rd.next().await? {
                        let _ = tx.send(m);
                    }
                    Ok::<_, ClientNetError>(())
                });
                let writer = tokio::task::spawn_local(async move {
                    // A push before the client said anything.
                    wr.send(0, b"push").await?;
                    while let Some(m) = rx.recv().await {
                        wr.send(m.session, &m.data).await?;
                    }
                    wr.close().await
                });
                assert_eq!(&recv(&mut client).await.data[..], b"push", "{kind:?}");
                let big = pattern(BIG, 9);
                client.send(9, &big).await.unwrap();
                assert_eq!(&recv(&mut client).await.data[..], &big[..], "{kind:?}");
                client.close().await.unwrap();
                reader.await.unwrap().unwrap();
                writer.await.unwrap().unwrap();
                let end = timeout(PROMPT, client.next()).await.unwrap();
                assert!(matches!(end, Ok(None)), "{kind:?}: {end:?}");
            }
        })
        .await;
    });
}
