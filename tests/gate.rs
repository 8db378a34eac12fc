//! Game clients through a Gate (docs/protocol.md): verify, relay both ways
//! over TCP and WebSocket, refusals, limits, duplicate logins, resume.
//! Real nodes, real sockets, the Rust client library.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use luahost::client::{Client, ClientError, Event, Login, Target};
use luahost::codec::mpack;
use luahost::net::client::client_tls_trusting;
use tokio::runtime::Runtime;

use common::*;

fn gate_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gate/scripts")
}

struct Cluster {
    _dir: TempDir,
    gate: luahost::NodeHandle,
    halls: Vec<luahost::NodeHandle>,
    /// Hall nodes run as `luahost run` processes (`cluster_with`), by index.
    procs: Vec<Proc>,
    tcp: std::net::SocketAddr,
    ws: std::net::SocketAddr,
    digi: u32,
    rt: Runtime,
}

/// A Gate and `halls` Hall nodes in this process; `gate_extra` goes into
/// the Gate's `gate` table.
fn cluster(tag: &str, halls: usize, gate_extra: &str) -> Cluster {
    cluster_with(tag, halls, gate_extra, false)
}

/// As [`cluster`]; with `hall_procs` the Halls run as separate processes
/// (in `Cluster::procs`, so they can be killed) and `Cluster::halls` is empty.
fn cluster_with(tag: &str, halls: usize, gate_extra: &str, hall_procs: bool) -> Cluster {
    let dir = TempDir::new(tag);
    let scripts = gate_scripts();
    let port = |_| free_port();
    let (tcp, ws) = (port(0), port(1));
    let mut nodes = format!(
        "    gate_1 = {{ type = \"Gate\", id = 1, addr = \"127.0.0.1:{}\", main = {:?},\n      gate = {{ tcp = \"127.0.0.1:{tcp}\", ws = \"127.0.0.1:{ws}\", {gate_extra} }} }},\n",
        free_port(),
        scripts.join("main.lua").display().to_string()
    );
    for i in 0..halls {
        nodes.push_str(&format!(
            "    hall_{n} = {{ type = \"Hall\", id = {id}, addr = \"127.0.0.1:{}\", main = {:?} }},\n",
            free_port(),
            scripts.join("main.lua").display().to_string(),
            n = i + 1,
            id = 11 + i,
        ));
    }
    let text = format!(
        "return {{\n  secret = \"gate-test-secret-0123\",\n  call_timeout = 3,\n  liveness = 2,\n  scripts = {{ {:?} }},\n  nodes = {{\n{nodes}  }},\n}}\n",
        scripts.display().to_string()
    );
    let file = dir.0.join("cluster.lua");
    std::fs::write(&file, text).unwrap();
    let procs: Vec<Proc> = if hall_procs {
        (0..halls)
            .map(|i| Proc::run_node(&file, &format!("hall_{}", i + 1)))
            .collect()
    } else {
        Vec::new()
    };
    let gate = start(&file, "gate_1");
    let names: Vec<String> = (0..halls).map(|i| format!("hall_{}", i + 1)).collect();
    let halls: Vec<_> = if hall_procs {
        Vec::new()
    } else {
        names.iter().map(|n| start(&file, n)).collect()
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_live(&gate, &names);
    let digi: u32 = eval(&gate, "return rpcdef.ClientDigi").parse().unwrap();
    Cluster {
        _dir: dir,
        gate,
        halls,
        procs,
        tcp: format!("127.0.0.1:{tcp}").parse().unwrap(),
        ws: format!("127.0.0.1:{ws}").parse().unwrap(),
        digi,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    }
}

impl Cluster {
    fn login(&self, account: &str) -> Login {
        let token = eval(&self.gate, &format!("return gate_mod.token({account:?}, 600)"));
        Login {
            account: account.into(),
            token,
            client_digi: self.digi,
        }
    }

    fn cid(&self, method: &str) -> u32 {
        eval(
            &self.gate,
            &format!("return rpcdef.iface('Hall', 'Player').{method}.cid"),
        )
        .parse()
        .unwrap()
    }

    fn connect(&self, target: &Target, login: &Login) -> Result<Client, ClientError> {
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), Client::connect(target, None, login, None)).await
            })
            .expect("connect hung")
    }

    fn tcp(&self) -> Target {
        Target::Tcp(self.tcp)
    }

    fn ws(&self) -> Target {
        Target::Ws(format!("ws://{}/", self.ws))
    }
}

fn args(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    f(&mut b);
    b
}

/// echo(s, n) through the Gate: returns what came back.
fn echo(c: &Cluster, client: &Client, s: &str, n: i64) -> Result<(String, i64), ClientError> {
    let a = args(|b| {
        mpack::put_str(b, s.as_bytes());
        mpack::put_int(b, n);
    });
    let (nvals, vals) = c.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), client.call_raw(c.cid("echo"), 2, &a))
            .await
            .expect("call hung")
    })?;
    assert_eq!(nvals, 2);
    let mut r = mpack::Reader::new(&vals);
    let s = String::from_utf8(r.read_bytes().unwrap().to_vec()).unwrap();
    Ok((s, r.read_i64().unwrap()))
}

fn call0(
    c: &Cluster,
    client: &Client,
    method: &str,
    a: &[u8],
    nargs: usize,
) -> Result<(usize, bytes::Bytes), ClientError> {
    let cid = c.cid(method);
    c.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), client.call_raw(cid, nargs, a))
            .await
            .expect("call hung")
    })
}

/// The next event within `limit`.
fn next_event(c: &Cluster, client: &mut Client, limit: Duration) -> Option<Event> {
    c.rt.block_on(async { tokio::time::timeout(limit, client.next_event()).await.ok().flatten() })
}

fn push_of(ev: &Event) -> (u32, String, i64) {
    match ev {
        Event::Push { seq, args, nargs, .. } => {
            assert_eq!(*nargs, 2);
            let mut r = mpack::Reader::new(args);
            let t = String::from_utf8(r.read_bytes().unwrap().to_vec()).unwrap();
            (*seq, t, r.read_i64().unwrap())
        }
        other => panic!("expected a push, got {other:?}"),
    }
}

#[test]
fn verify_ok_and_every_refusal() {
    let c = cluster("gate-verify", 1, "verify_timeout = 0.5");
    // ok, over both transports
    for target in [c.tcp(), c.ws()] {
        let client = c.connect(&target, &c.login("ann")).unwrap();
        assert!(!client.session().resumed);
        assert_eq!(echo(&c, &client, "hi", 7).unwrap(), ("hi".into(), 7));
    }
    // a token for another account, a forged one, an expired one
    let mut l = c.login("bob");
    l.account = "eve".into();
    let e = c.connect(&c.tcp(), &l).err().unwrap();
    assert_eq!(e.code(), Some("bad_token"), "{e}");
    let mut l = c.login("bob");
    l.token.push('x');
    assert_eq!(c.connect(&c.tcp(), &l).err().unwrap().code(), Some("bad_token"));
    let key = luahost::codec::token::TokenKey::from_secret("gate-test-secret-0123");
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 10;
    let l = Login {
        account: "bob".into(),
        token: luahost::codec::token::make(&key, "bob", past, [1; 8]),
        client_digi: c.digi,
    };
    assert_eq!(c.connect(&c.tcp(), &l).err().unwrap().code(), Some("expired"));
    // a client built for another schema
    let mut l = c.login("bob");
    l.client_digi ^= 1;
    let e = c.connect(&c.ws(), &l).err().unwrap();
    assert_eq!(e.code(), Some("digest"), "{e}");
    assert!(e.to_string().contains("update the client"), "{e}");
    // a connection that never verifies is closed after verify_timeout
    let t0 = std::time::Instant::now();
    let closed = c.rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(c.tcp).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .is_ok()
    });
    assert!(closed, "an unverified connection stayed open");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn calls_sends_and_pushes_relay_both_ways_over_tcp_and_websocket() {
    let c = cluster("gate-relay", 2, "");
    for (i, target) in [c.tcp(), c.ws()].into_iter().enumerate() {
        let account = format!("player{i}");
        let mut client = c.connect(&target, &c.login(&account)).unwrap();
        // the call reaches the account's Player on the Hall the router picked
        let (n, vals) = call0(&c, &client, "whoami", &[], 0).unwrap();
        assert_eq!(n, 2);
        let mut r = mpack::Reader::new(&vals);
        assert_eq!(r.read_bytes().unwrap(), account.as_bytes());
        let node = String::from_utf8(r.read_bytes().unwrap().to_vec()).unwrap();
        let sid = eval(&c.gate, &format!("return router.route(ServerType.Hall, {account:?})"));
        assert_eq!(eval(&c.gate, &format!("return router.nodeName({sid})")), node);
        // structs travel as the client wrote them
        let p = args(|b| {
            mpack::put_array_len(b, 2);
            mpack::put_int(b, 5);
            mpack::put_str(b, b"five");
        });
        let (_, vals) = call0(&c, &client, "pair", &p, 1).unwrap();
        assert_eq!(mpack::Reader::new(&vals).read_bytes().unwrap(), b"five:5");
        // a one-way send that makes the server push three events back
        client
            .send_raw(c.cid("ping"), 1, &args(|b| mpack::put_int(b, 3)))
            .unwrap();
        for i in 1..=3 {
            let ev = next_event(&c, &mut client, Duration::from_secs(5)).expect("no push");
            assert_eq!(push_of(&ev), (i as u32, "ping".into(), i));
        }
        // a push started on the backend itself (player.client.onEvent)
        let hall = c.halls.iter().find(|h| h.name() == node).unwrap();
        assert_eq!(eval(hall, &format!("return pushTo({account:?}, 2)")), "ok");
        for i in 1..=2 {
            let ev = next_event(&c, &mut client, Duration::from_secs(5)).expect("no push");
            assert_eq!(push_of(&ev), (3 + i as u32, "push".into(), i));
        }
        assert_eq!(client.last_seq(), 5);
    }
}

#[test]
fn clients_reach_only_exposed_methods_with_the_right_types_and_see_no_internals() {
    let c = cluster("gate-refuse", 1, "");
    let client = c.connect(&c.tcp(), &c.login("mallory")).unwrap();
    // a method not exposed to clients: no client id at all, so any id that
    // is not a client method is refused
    let secret_cid = eval(&c.gate, "return tostring(rpcdef.iface('Hall', 'Player').secret.cid)");
    assert!(secret_cid == "nil" || secret_cid == "0", "{secret_cid}");
    let e = c.rt.block_on(client.call_raw(9999, 0, &[])).err().unwrap();
    assert_eq!(e.code(), Some("bad_request"), "{e}");
    // a push method is not callable
    let push_cid: u32 = eval(&c.gate, "return rpcdef.clientIface('Player').onEvent.cid")
        .parse()
        .unwrap();
    let two = args(|b| {
        mpack::put_str(b, b"x");
        mpack::put_int(b, 1);
    });
    let e = c.rt.block_on(client.call_raw(push_cid, 2, &two)).err().unwrap();
    assert_eq!(e.code(), Some("bad_request"), "{e}");
    // wrong argument types: named, refused by the backend's schema check
    let bad = args(|b| {
        mpack::put_int(b, 1);
        mpack::put_int(b, 2);
    });
    let e = call0(&c, &client, "echo", &bad, 2).err().unwrap();
    assert_eq!(e.code(), Some("bad_request"), "{e}");
    assert!(e.to_string().contains("'s'"), "{e}");
    // wrong count
    let e = call0(&c, &client, "echo", &[], 0).err().unwrap();
    assert_eq!(e.code(), Some("bad_request"), "{e}");
    // a handler's chosen text reaches the client; an internal error does not
    let e = call0(&c, &client, "fail", &args(|b| mpack::put_str(b, b"not enough gold")), 1)
        .err()
        .unwrap();
    assert_eq!(
        e,
        ClientError::Reply {
            code: "error".into(),
            text: "not enough gold".into()
        }
    );
    let e = call0(&c, &client, "crash", &[], 0).err().unwrap();
    assert_eq!(
        e,
        ClientError::Reply {
            code: "error".into(),
            text: "internal error".into()
        }
    );
    // and the connection is still fine
    assert_eq!(echo(&c, &client, "still", 1).unwrap().0, "still");
}

#[test]
fn floods_are_limited_per_client() {
    let c = cluster("gate-flood", 1, "rate = 5, burst = 5");
    let flooder = c.connect(&c.tcp(), &c.login("flood")).unwrap();
    let calm = c.connect(&c.tcp(), &c.login("calm")).unwrap();
    let cid = c.cid("echo");
    let a = args(|b| {
        mpack::put_str(b, b"x");
        mpack::put_int(b, 1);
    });
    let results = c.rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..30 {
            v.push(flooder.call_raw(cid, 2, &a));
        }
        futures_join_all(v).await
    });
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code() == Some("rate_limited")))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(limited >= 20, "limited {limited}, ok {ok}");
    assert!(ok >= 5, "ok {ok}");
    // the other client is not affected
    assert_eq!(echo(&c, &calm, "calm", 2).unwrap().0, "calm");
}

async fn futures_join_all<F: std::future::Future>(v: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(v.len());
    let handles: Vec<_> = v.into_iter().map(Box::pin).collect();
    for h in handles {
        out.push(h.await);
    }
    out
}

#[test]
fn the_newest_login_always_wins_in_a_reconnect_loop() {
    let c = cluster("gate-dup", 1, "");
    let mut previous: Option<Client> = None;
    let mut last_session = 0;
    for i in 0..30 {
        let target = if i % 2 == 0 { c.tcp() } else { c.ws() };
        let client = c.connect(&target, &c.login("twin")).unwrap();
        last_session = client.session().id;
        if let Some(mut old) = previous.take() {
            // the older session is told and closed
            let ev = next_event(&c, &mut old, Duration::from_secs(5));
            assert!(
                matches!(&ev, Some(Event::Notice { code, closing: true, .. }) if code == "replaced"),
                "round {i}: {ev:?}"
            );
        }
        // the newest one works
        assert_eq!(echo(&c, &client, "me", i).unwrap().1, i);
        previous = Some(client);
    }
    // the backend has exactly the newest session bound, one Player, no logout
    let hall = &c.halls[0];
    assert_eq!(
        eval(hall, "return tostring(gate_mod.client('twin').session)"),
        last_session.to_string()
    );
    assert_eq!(eval(hall, "return #losses"), "0");
    // quick reconnects racing each other: all at once, the last to verify
    // wins and every other is told
    let logins: Vec<Login> = (0..8).map(|_| c.login("twin")).collect();
    let clients: Vec<Client> = c.rt.block_on(async {
        let target = Target::Tcp(c.tcp);
        let mut v = Vec::new();
        for l in &logins {
            v.push(Client::connect(&target, None, l, None));
        }
        let mut out = Vec::new();
        for f in v {
            if let Ok(cl) = f.await {
                out.push(cl);
            }
        }
        out
    });
    assert!(!clients.is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let bound = eval(hall, "return tostring(gate_mod.client('twin').session)");
    let mut working = 0;
    for cl in &clients {
        if echo(&c, cl, "x", 1).is_ok() {
            working += 1;
            assert_eq!(
                cl.session().id.to_string(),
                bound,
                "a session that is not the bound one still works"
            );
        }
    }
    assert_eq!(working, 1, "exactly one session of the account works");
}

#[test]
fn resume_replays_missed_pushes_and_keeps_the_player() {
    let c = cluster("gate-resume", 1, "resume_grace = 1.5");
    let login = c.login("roamer");
    let mut client = c.connect(&c.tcp(), &login).unwrap();
    let hall = &c.halls[0];
    assert_eq!(eval(hall, "return pushTo('roamer', 3)"), "ok");
    for _ in 0..3 {
        next_event(&c, &mut client, Duration::from_secs(5)).expect("push");
    }
    let session = client.session().clone();
    let seen = client.last_seq();
    assert_eq!(seen, 3);
    drop(client); // the connection drops
    std::thread::sleep(Duration::from_millis(200));
    // pushes while the client is away are kept
    assert_eq!(eval(hall, "return pushTo('roamer', 2)"), "ok");
    let mut back =
        c.rt.block_on(Client::resume(&c.ws(), None, &login, &session, seen))
            .unwrap();
    assert!(back.session().resumed);
    assert_eq!(back.session().id, session.id);
    let a = next_event(&c, &mut back, Duration::from_secs(5)).expect("replay");
    let b = next_event(&c, &mut back, Duration::from_secs(5)).expect("replay");
    assert_eq!(push_of(&a), (4, "push".into(), 1));
    assert_eq!(push_of(&b), (5, "push".into(), 2));
    // same Player, no logout
    assert_eq!(echo(&c, &back, "back", 9).unwrap().1, 9);
    assert_eq!(eval(hall, "return #losses .. ' ' .. #logins"), "0 1");
    // too late: the session is gone and the Player was told
    drop(back);
    std::thread::sleep(Duration::from_millis(2500));
    let e =
        c.rt.block_on(Client::resume(&c.tcp(), None, &login, &session, 5))
            .err()
            .unwrap();
    assert_eq!(e.code(), Some("resume_expired"), "{e}");
    assert!(wait_until(Duration::from_secs(5), || eval(
        hall,
        "return table.concat(losses, ',')"
    ) == "roamer:lost"));
    // a fresh login works
    let again = c.connect(&c.tcp(), &login).unwrap();
    assert_eq!(echo(&c, &again, "new", 1).unwrap().0, "new");
}

/// A self-signed certificate for "localhost" in `dir`: (cert, key) paths.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

impl Cluster {
    fn connect_tls(&self, target: &Target, ca: &Path, login: &Login) -> Result<Client, ClientError> {
        let tls = client_tls_trusting(ca, "localhost").unwrap();
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), Client::connect(target, Some(tls), login, None)).await
            })
            .expect("connect hung")
    }

    /// `gate.stats()[key]` on the Gate.
    fn stat(&self, key: &str) -> u64 {
        eval(&self.gate, &format!("return gate_mod.stats().{key}"))
            .parse()
            .unwrap()
    }
}

#[test]
fn tls_on_tcp_and_websocket() {
    let certs = TempDir::new("gate-tls-certs");
    let (cert, key) = self_signed(&certs.0, "gate");
    let (other, _) = self_signed(&certs.0, "other");
    let c = cluster(
        "gate-tls",
        1,
        &format!(
            "tls = {{ cert = {:?}, key = {:?} }}",
            cert.display().to_string(),
            key.display().to_string()
        ),
    );
    let wss = Target::Ws(format!("wss://127.0.0.1:{}/", c.ws.port()));
    for (i, target) in [c.tcp(), wss.clone()].into_iter().enumerate() {
        let client = c.connect_tls(&target, &cert, &c.login(&format!("secure{i}"))).unwrap();
        assert_eq!(
            echo(&c, &client, "sealed", i as i64).unwrap(),
            ("sealed".into(), i as i64)
        );
    }
    // a client that trusts another certificate fails (an error, not a hang)
    for target in [c.tcp(), wss.clone()] {
        let t0 = std::time::Instant::now();
        let e = c
            .connect_tls(&target, &other, &c.login("doubter"))
            .err()
            .expect("connected");
        assert!(matches!(e, ClientError::Connect(_)), "{target}: {e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{target}: {:?}", t0.elapsed());
    }
    // a plaintext client on the TLS listeners fails too
    for target in [c.tcp(), c.ws()] {
        assert!(c.connect(&target, &c.login("plain")).is_err(), "{target}");
    }
    // the Gate still serves trusting clients
    let client = c.connect_tls(&c.tcp(), &cert, &c.login("secure9")).unwrap();
    assert_eq!(echo(&c, &client, "again", 9).unwrap().1, 9);
}

#[test]
fn a_client_that_does_not_read_is_disconnected_without_growing_memory() {
    use luahost::codec::client::{parse_server, put_verify, ServerMsg};
    use luahost::codec::wire::FrameDecoder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_OUT: u64 = 65536;
    let c = cluster("gate-slow", 1, &format!("max_out = {MAX_OUT}"));
    let hall = &c.halls[0];
    let steady = c.connect(&c.tcp(), &c.login("steady")).unwrap();
    // the sloth verifies by hand, then never reads again
    let login = c.login("sloth");
    let mut sloth = c.rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(c.tcp).await.unwrap();
        let mut out = BytesMut::new();
        put_verify(&mut out, &login.account, &login.token, login.client_digi, None);
        s.write_all(&out).await.unwrap();
        let mut dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let msg = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(m) = dec.decode(&mut buf).unwrap() {
                    return m;
                }
                assert!(s.read_buf(&mut buf).await.unwrap() > 0, "closed before verify-ok");
            }
        })
        .await
        .expect("no verify-ok");
        assert!(
            matches!(parse_server(&msg.data).unwrap(), ServerMsg::VerifyOk { .. }),
            "{msg:?}"
        );
        s
    });
    assert!(wait_until(Duration::from_secs(5), || eval(
        hall,
        "return tostring(gate_mod.client('sloth') ~= nil)"
    ) == "true"));
    assert_eq!(c.stat("conns"), 2);
    // a client that reads is not closed for a burst bigger than max_out
    // (it is queued before the Gate's writer has its turn)
    let mut steady = steady;
    assert_eq!(eval(hall, "return pushBig('steady', 20, 8000)"), "ok");
    for i in 1..=20 {
        match next_event(&c, &mut steady, Duration::from_secs(5)) {
            Some(Event::Push { seq, .. }) => assert_eq!(seq, i),
            other => panic!("a reading client lost its pushes: {other:?}"),
        }
    }
    assert_eq!(c.stat("conns"), 2);
    // the Hall pushes 80 KB a round at the sloth (16 MB at most), until the
    // Gate gives up on it; what the Gate holds is sampled every round
    const SIZE: u64 = 8000;
    const PER_ROUND: u64 = 10;
    let mut pushed = 0;
    let mut max_queued = 0;
    let mut closed_after = None;
    let mut ping = BytesMut::new();
    {
        let start = luahost::codec::wire::begin_message(&mut ping);
        mpack::put_array_len(&mut ping, 1);
        mpack::put_uint(&mut ping, 6);
        luahost::codec::wire::finish_message(&mut ping, start, 0);
    }
    let t0 = std::time::Instant::now();
    for round in 0..200 {
        // pings keep the sloth from being closed as idle: only `slow` applies
        c.rt.block_on(sloth.write_all(&ping)).unwrap();
        assert_eq!(
            eval(hall, &format!("return pushBig('sloth', {PER_ROUND}, {SIZE})")),
            "ok"
        );
        pushed += PER_ROUND * SIZE;
        max_queued = max_queued.max(c.stat("queued"));
        // the other client is served throughout
        assert_eq!(echo(&c, &steady, "steady", round).unwrap().1, round);
        if c.stat("conns") == 1 {
            closed_after = Some(round);
            break;
        }
    }
    if closed_after.is_none() && wait_until(Duration::from_secs(2), || c.stat("conns") == 1) {
        closed_after = Some(200);
    }
    let round = closed_after.expect("the Gate never closed a client that does not read");
    eprintln!(
        "slow client closed after round {round} ({:?}): {pushed} bytes pushed, at most {max_queued} queued",
        t0.elapsed()
    );
    assert!(pushed > MAX_OUT, "closed after only {pushed} bytes");
    // the Gate never held more than its bound for the two clients
    assert!(max_queued <= 4 * MAX_OUT + 2 * SIZE, "queued {max_queued}");
    // reading again: what the kernel held, then the end (EOF or reset), in bounded time
    let ended = c.rt.block_on(async {
        let mut buf = vec![0u8; 1 << 16];
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match sloth.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    });
    assert!(ended, "the slow client's socket never ended");
    assert!(c.stat("queued") <= MAX_OUT);
    assert_eq!(echo(&c, &steady, "after", 1).unwrap().0, "after");
}

#[test]
fn backend_killed_while_100_clients_are_bound() {
    use futures_util::future::join_all;
    let mut c = cluster_with("gate-kill", 2, "", true);
    let accounts: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    let on_hall: Vec<String> = accounts
        .iter()
        .map(|a| {
            eval(
                &c.gate,
                &format!("return router.nodeName(router.route(ServerType.Hall, {a:?}))"),
            )
        })
        .collect();
    let mut clients: Vec<Client> = accounts
        .iter()
        .map(|a| c.connect(&c.tcp(), &c.login(a)).unwrap())
        .collect();
    for (i, cl) in clients.iter().enumerate() {
        assert_eq!(echo(&c, cl, "bound", i as i64).unwrap().1, i as i64);
    }
    let doomed: Vec<usize> = (0..100).filter(|&i| on_hall[i] == "hall_1").collect();
    let safe: Vec<usize> = (0..100).filter(|&i| on_hall[i] == "hall_2").collect();
    assert_eq!(doomed.len() + safe.len(), 100);
    assert!(
        !doomed.is_empty() && !safe.is_empty(),
        "{} / {}",
        doomed.len(),
        safe.len()
    );

    let t0 = std::time::Instant::now();
    c.procs[0].signal(libc::SIGKILL);
    assert!(c.procs[0].wait_exit(Duration::from_secs(5)).is_some());
    // a call from every client right after the kill returns (ok or an error) in time
    let cid = c.cid("echo");
    let a = args(|b| {
        mpack::put_str(b, b"k");
        mpack::put_int(b, 1);
    });
    let results = c.rt.block_on(join_all(clients.iter().map(|cl| async {
        tokio::time::timeout(Duration::from_secs(10), cl.call_raw(cid, 2, &a)).await
    })));
    for (i, r) in results.iter().enumerate() {
        let r = r
            .as_ref()
            .unwrap_or_else(|_| panic!("client {i} ({}): call hung", on_hall[i]));
        if on_hall[i] == "hall_2" {
            assert!(r.is_ok(), "client {i} on the surviving Hall: {r:?}");
        }
    }
    // every client of the killed Hall is told, then works again or is closed
    let deadline = t0 + Duration::from_secs(2 + 10);
    let (mut rebound, mut closed) = (0, 0);
    let mut told_at = Vec::new();
    for &i in &doomed {
        let mut saw_lost = false;
        let outcome = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ev = next_event(&c, &mut clients[i], left);
            match ev {
                Some(Event::Notice {
                    code, closing: false, ..
                }) if code == "backend_lost" => {
                    saw_lost = true;
                    told_at.push(t0.elapsed());
                }
                Some(Event::Notice {
                    code, closing: false, ..
                }) if code == "rebound" => {
                    assert!(saw_lost, "client {i}: rebound without backend_lost");
                    break "rebound";
                }
                Some(Event::Notice { closing: true, .. }) | Some(Event::Closed) => break "closed",
                Some(Event::Push { .. }) | Some(Event::Notice { .. }) => {}
                None => panic!("client {i}: not told within {:?} of the kill", deadline - t0),
            }
        };
        if outcome == "rebound" {
            rebound += 1;
            let (_, n) =
                echo(&c, &clients[i], "again", i as i64).unwrap_or_else(|e| panic!("client {i} after rebound: {e}"));
            assert_eq!(n, i as i64);
        } else {
            closed += 1;
        }
    }
    told_at.sort();
    eprintln!(
        "{} clients on the killed Hall: {rebound} rebound, {closed} closed; told backend_lost {:?}..{:?} after the kill; all settled by {:?}",
        doomed.len(),
        told_at.first(),
        told_at.last(),
        t0.elapsed()
    );
    // the survivors kept working throughout
    for &i in &safe {
        assert_eq!(echo(&c, &clients[i], "safe", i as i64).unwrap().1, i as i64);
    }
}

#[test]
fn an_entity_hands_its_client_to_another_node_without_a_reconnect() {
    let c = cluster("gate-handoff", 2, "");
    let mut client = c.connect(&c.tcp(), &c.login("heir")).unwrap();
    let (_, vals) = call0(&c, &client, "whoami", &[], 0).unwrap();
    let mut r = mpack::Reader::new(&vals);
    r.read_bytes().unwrap();
    let first = String::from_utf8(r.read_bytes().unwrap().to_vec()).unwrap();
    let other = c.halls.iter().find(|h| h.name() != first).unwrap();
    assert_eq!(eval(other, "return makePlayer(7777, 'heir')"), "ok");
    let sid: u32 = eval(other, &format!("return sidOf('{}')", other.name()))
        .parse()
        .unwrap();
    let a = args(|b| {
        mpack::put_uint(b, sid as u64);
        mpack::put_int(b, 7777);
    });
    let (_, vals) = call0(&c, &client, "handoff", &a, 2).unwrap();
    assert!(mpack::Reader::new(&vals).read_bool().unwrap());
    // the same connection now reaches the other node's entity
    let (_, vals) = call0(&c, &client, "whoami", &[], 0).unwrap();
    let mut r = mpack::Reader::new(&vals);
    assert_eq!(r.read_bytes().unwrap(), b"heir");
    assert_eq!(r.read_bytes().unwrap(), other.name().as_bytes());
    assert_eq!(eval(other, "return given"), "1");
    // and pushes come from there
    assert_eq!(eval(other, "return pushTo('heir', 1)"), "ok");
    let ev = next_event(&c, &mut client, Duration::from_secs(5)).expect("push from the new node");
    assert_eq!(push_of(&ev).1, "push");
    let first_hall = c.halls.iter().find(|h| h.name() == first).unwrap();
    assert_eq!(eval(first_hall, "return pushTo('heir', 1)"), "no client");
}

#[test]
fn broadcasts_reach_listed_accounts_or_every_client_in_one_message_per_gate() {
    let c = cluster("gate-broadcast", 1, "");
    let mut a = c.connect(&c.tcp(), &c.login("a")).unwrap();
    let mut b = c.connect(&c.ws(), &c.login("b")).unwrap();
    let mut z = c.connect(&c.tcp(), &c.login("z")).unwrap();
    let hall = &c.halls[0];
    eval(
        hall,
        "gate_mod.broadcast('Player', 'onEvent', {'a', 'b', 'nobody'}, 'listed', 1) return 1",
    );
    for cl in [&mut a, &mut b] {
        let ev = next_event(&c, cl, Duration::from_secs(5)).expect("broadcast");
        assert_eq!(push_of(&ev), (1, "listed".into(), 1));
    }
    eval(hall, "gate_mod.broadcast('Player', 'onEvent', nil, 'all', 2) return 1");
    for (cl, seq) in [(&mut a, 2), (&mut b, 2), (&mut z, 1)] {
        let ev = next_event(&c, cl, Duration::from_secs(5)).expect("broadcast to all");
        assert_eq!(push_of(&ev), (seq, "all".into(), 2));
    }
    // z was not in the list: its first push is the one to all
    assert!(next_event(&c, &mut z, Duration::from_millis(300)).is_none());
}

#[test]
fn a_custom_login_checks_the_clients_ticket_in_lua() {
    let c = cluster("gate-custom", 1, "verify = \"lua\"");
    let login = |ticket: &str| Login {
        account: "platform-user-9".into(),
        token: ticket.into(),
        client_digi: c.digi,
    };
    let client = c.connect(&c.tcp(), &login("open-sesame")).unwrap();
    assert_eq!(echo(&c, &client, "in", 1).unwrap().0, "in");
    let e = c.connect(&c.ws(), &login("guess")).err().unwrap();
    assert_eq!(
        e,
        ClientError::Refused {
            code: "refused".into(),
            text: "wrong ticket".into()
        }
    );
    // a signed token means nothing here: the hook decides
    let e = c.connect(&c.tcp(), &c.login("platform-user-9")).err().unwrap();
    assert_eq!(e.code(), Some("refused"));
}

#[test]
fn connections_verifying_at_once_are_bounded_per_address_and_oversize_messages_close_only_their_client() {
    let c = cluster("gate-admit", 1, "max_verifying_per_ip = 2, verify_timeout = 3");
    let (held, third_closed_at_once) = c.rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let s1 = tokio::net::TcpStream::connect(c.tcp).await.unwrap();
        let s2 = tokio::net::TcpStream::connect(c.tcp).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut s3 = tokio::net::TcpStream::connect(c.tcp).await.unwrap();
        let mut buf = [0u8; 16];
        let closed = matches!(
            tokio::time::timeout(Duration::from_secs(1), s3.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        ((s1, s2), closed)
    });
    assert!(
        third_closed_at_once,
        "a third unverified connection from one address was kept"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    // with the places free again, clients get in
    let mut big = c.connect(&c.tcp(), &c.login("big")).unwrap();
    let fine = c.connect(&c.tcp(), &c.login("fine")).unwrap();
    // a message over max_message (64 KiB) closes that client alone
    let huge = "x".repeat(100 * 1024);
    let e = echo(&c, &big, &huge, 1).err().unwrap();
    assert_eq!(e, ClientError::Closed, "{e}");
    let mut saw_notice = false;
    while let Some(ev) = next_event(&c, &mut big, Duration::from_secs(2)) {
        if let Event::Notice {
            code, closing: true, ..
        } = &ev
        {
            saw_notice |= code == "bad_frame";
        }
        if ev == Event::Closed {
            break;
        }
    }
    assert!(saw_notice, "the oversize client was not told why");
    assert_eq!(echo(&c, &fine, "fine", 2).unwrap().0, "fine");
}

#[test]
fn typed_calls_from_the_schema() {
    use luahost::client::typed::{ClientSchema, Val};
    let c = cluster("gate-typed", 1, "");
    let schema = ClientSchema::load(&gate_scripts().join("entitydef.lua")).unwrap();
    assert_eq!(
        schema.client_digi, c.digi,
        "the client computes the server's ClientDigi"
    );
    let mut client = c.connect(&c.tcp(), &c.login("typed")).unwrap();
    let r =
        c.rt.block_on(client.call_typed(&schema, "echo", &[Val::Str("hi".into()), Val::Int(3)]))
            .unwrap();
    assert_eq!(r, vec![Val::Str("hi".into()), Val::Int(3)]);
    let p = Val::Struct(vec![("a".into(), Val::Int(4)), ("b".into(), Val::Str("four".into()))]);
    let r = c.rt.block_on(client.call_typed(&schema, "Player.pair", &[p])).unwrap();
    assert_eq!(r, vec![Val::Str("four:4".into())]);
    // checked before anything is sent
    let e =
        c.rt.block_on(client.call_typed(&schema, "echo", &[Val::Int(1), Val::Int(3)]))
            .unwrap_err();
    assert!(
        e.to_string()
            .contains("bad argument #1 's' to Player.echo: expected string"),
        "{e}"
    );
    let e =
        c.rt.block_on(client.call_typed(&schema, "echo", &[Val::Str("x".into()), Val::Int(1 << 40)]))
            .unwrap_err();
    assert!(e.to_string().contains("out of range for int32"), "{e}");
    assert!(
        schema.encode("secret", &[]).is_err(),
        "a server-only method has no client id"
    );
    // pushes decode by their types
    client.send_typed(&schema, "ping", &[Val::Int(1)]).unwrap();
    match next_event(&c, &mut client, Duration::from_secs(5)).expect("push") {
        Event::Push {
            method, nargs, args, ..
        } => {
            let (name, vals) = schema.decode_push(method, nargs, &args).unwrap();
            assert_eq!(name, "Player.onEvent");
            assert_eq!(vals, vec![Val::Str("ping".into()), Val::Int(1)]);
        }
        other => panic!("{other:?}"),
    }
}

/// Reads whole messages from a raw client socket until `limit`; returns the
/// server messages' kinds and codes (as text) and whether the socket closed.
async fn read_raw(s: &mut tokio::net::TcpStream, limit: Duration) -> (Vec<String>, bool) {
    use luahost::codec::client::{parse_server, ServerMsg};
    use tokio::io::AsyncReadExt;
    let mut dec = luahost::codec::wire::FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let end = tokio::time::Instant::now() + limit;
    loop {
        while let Ok(Some(m)) = dec.decode(&mut buf) {
            seen.push(match parse_server(&m.data) {
                Ok(ServerMsg::VerifyOk { .. }) => "verify-ok".to_string(),
                Ok(ServerMsg::VerifyFailed { code, .. }) => format!("verify-failed {code}"),
                Ok(ServerMsg::Notice { code, closing, .. }) => format!("notice {code} {closing}"),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("bad: {e}"),
            });
        }
        match tokio::time::timeout_at(end, s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(_)) => {}
            Err(_) => return (seen, false),
        }
    }
}

#[test]
fn unverified_calls_silent_clients_and_clients_too_far_behind_are_told() {
    use luahost::codec::client::{put_call, put_verify};
    use tokio::io::AsyncWriteExt;
    let c = cluster("gate-life", 1, "heartbeat = 0.3, replay_max = 4, resume_grace = 10");
    let login = c.login("quiet");
    let digi = c.digi;
    let (before_verify, idle) = c.rt.block_on(async {
        // a call before verify: refused, closed
        let mut s = tokio::net::TcpStream::connect(c.tcp).await.unwrap();
        let mut out = BytesMut::new();
        put_call(&mut out, 1, 1, 0, &[]);
        s.write_all(&out).await.unwrap();
        let before = read_raw(&mut s, Duration::from_secs(5)).await;
        // a verified client that then sends nothing: closed as idle after
        // three heartbeats (about 0.9 s), told why
        let mut s = tokio::net::TcpStream::connect(c.tcp).await.unwrap();
        let mut out = BytesMut::new();
        put_verify(&mut out, &login.account, &login.token, digi, None);
        s.write_all(&out).await.unwrap();
        let t0 = std::time::Instant::now();
        let idle = read_raw(&mut s, Duration::from_secs(5)).await;
        (before, (idle, t0.elapsed()))
    });
    assert_eq!(before_verify, (vec!["verify-failed malformed".to_string()], true));
    let ((seen, closed), took) = idle;
    assert_eq!(seen, vec!["verify-ok".to_string(), "notice idle true".to_string()]);
    assert!(closed);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // too far behind: more pushes while away than the Gate keeps
    let login = c.login("behind");
    let client = c.connect(&c.tcp(), &login).unwrap();
    let session = client.session().clone();
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    // (a call to the Gate after the pushes, on the same connection: when it
    // returns, the Gate has handled them)
    assert_eq!(
        eval(
            &c.halls[0],
            "local r = pushTo('behind', 10)
             rpcstub.mailbox(rpcdef.rpcStaticServer.ClientCtl, sidOf('gate_1'), 0).adopt(0, 'x', 0, 0, 424242)
             return r"
        ),
        "ok"
    );
    let e =
        c.rt.block_on(Client::resume(&c.tcp(), None, &login, &session, 0))
            .err()
            .unwrap();
    assert_eq!(e.code(), Some("resume_expired"), "{e}");
    // the Gate counted the refusal
    let refused: u64 = eval(&c.gate, "return gate_mod.stats().refused").parse().unwrap();
    assert!(refused >= 2, "refused {refused}");
}
