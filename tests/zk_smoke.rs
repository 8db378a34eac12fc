//! Pins down how the zookeeper-client 0.11 crate behaves against a real ZooKeeper server
//! (Debian's 3.8, started per test by `common::zk::ZkServer`), so that service discovery can be
//! written against verified facts. Every wait is bounded; timing bounds are in seconds.
//!
//! Observed values (latencies, state sequences) are printed with the prefix `OBSERVED`
//! (`cargo test --test zk_smoke -- --nocapture`).

mod common;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::zk::ZkServer;
use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, Error, EventType, SessionState};

/// Session timeout asked for by every client here (the minimum the server allows with tickTime=2000).
const SESSION: Duration = Duration::from_secs(4);
/// Bound for a single operation or event that should take milliseconds.
const OP: Duration = Duration::from_secs(10);
/// Bound for connecting (3.8 s seen with 8 servers starting at once on 2 loaded cores).
const CONNECT: Duration = Duration::from_secs(20);

const HALL: &str = "/luahost/servers/Hall";

/// Awaits `f` for at most `limit`; panics with `what` on timeout.
async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Connects without auth.
async fn connect(addr: &str) -> Client {
    within(
        CONNECT,
        "connect",
        Client::connector().with_session_timeout(SESSION).connect(addr),
    )
    .await
    .expect("connect")
}

/// Connects with digest auth `user:password` (sent with every (re)connect).
async fn connect_auth(addr: &str, user_pass: &str) -> Client {
    within(
        CONNECT,
        "connect with auth",
        Client::connector()
            .with_session_timeout(SESSION)
            .with_auth("digest", user_pass.as_bytes())
            .connect(addr),
    )
    .await
    .expect("connect with auth")
}

/// `mkdir -p` with persistent, world-writable nodes; existing nodes are fine.
async fn ensure_path(c: &Client, path: &str) -> Result<(), Error> {
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        match c
            .create(&cur, b"", &CreateMode::Persistent.with_acls(Acls::anyone_all()))
            .await
        {
            Ok(_) | Err(Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Polls until `path` does not exist (as seen by `c`), up to `limit`; returns the time it took.
async fn wait_gone(c: &Client, path: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if within(OP, "check_stat", c.check_stat(path))
            .await
            .expect("check_stat")
            .is_none()
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Records every state a `StateWatcher` reports (with the time since `t0`) until a terminal
/// state or `limit`.
fn record_states(c: &Client, t0: Instant, limit: Duration) -> Arc<Mutex<Vec<(SessionState, Duration)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut sw = c.state_watcher();
    let sink = log.clone();
    tokio::spawn(async move {
        let end = tokio::time::Instant::now() + limit;
        loop {
            let Ok(state) = tokio::time::timeout_at(end, sw.changed()).await else {
                break;
            };
            sink.lock().unwrap().push((state, t0.elapsed()));
            if state.is_terminated() {
                break;
            }
        }
    });
    log
}

// a. connect, ensure path, ephemeral with data, list, get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_create_list_get() {
    let zk = ZkServer::start();
    let t = Instant::now();
    let c = connect(&zk.addr()).await;
    println!(
        "OBSERVED connect took {:?}, session {} timeout {:?}",
        t.elapsed(),
        c.session_id(),
        c.session_timeout()
    );
    assert_eq!(c.session_timeout(), SESSION, "negotiated session timeout");
    assert_eq!(c.state(), SessionState::SyncConnected);

    ensure_path(&c, HALL).await.unwrap();
    ensure_path(&c, HALL).await.unwrap(); // idempotent
                                          // The crate's own mkdir -p does the same (no NodeExists either).
    c.mkdir(HALL, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
        .await
        .unwrap();
    c.mkdir(
        "/luahost/servers/Gate",
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    )
    .await
    .unwrap();
    // mkdir refuses ephemeral modes.
    assert!(matches!(
        c.mkdir("/x/y", &CreateMode::Ephemeral.with_acls(Acls::anyone_all()))
            .await,
        Err(Error::BadArguments(_))
    ));

    let node = format!("{HALL}/1");
    let eph = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let (stat, seq) = c.create(&node, b"127.0.0.1:7001", &eph).await.unwrap();
    assert_eq!(stat.ephemeral_owner, c.session_id().0);
    assert_eq!(seq.into_i64(), -1, "non-sequential create has no sequence");
    assert_eq!(c.create(&node, b"again", &eph).await.unwrap_err(), Error::NodeExists);
    assert_eq!(c.create("/luahost/nope/1", b"", &eph).await.unwrap_err(), Error::NoNode);
    assert_eq!(
        c.create(&format!("{node}/sub"), b"", &eph).await.unwrap_err(),
        Error::NoChildrenForEphemerals
    );

    // Sequential ephemerals: the server appends a 10-digit counter (the parent's cversion).
    let (_, seq) = c
        .create(
            &format!("{HALL}/n-"),
            b"seq",
            &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    let seq_name = format!("n-{seq}");
    println!("OBSERVED sequential child name {seq_name}");
    assert_eq!(seq_name.len(), 12);

    let mut children = c.list_children(HALL).await.unwrap();
    children.sort();
    assert_eq!(children, vec!["1".to_string(), seq_name.clone()]);
    let (_, stat) = c.get_children(HALL).await.unwrap();
    assert_eq!(stat.num_children, 2);
    assert_eq!(c.list_children("/luahost/servers").await.unwrap().len(), 2); // Gate, Hall

    let (data, stat) = c.get_data(&node).await.unwrap();
    assert_eq!(data, b"127.0.0.1:7001");
    assert_eq!(stat.ephemeral_owner, c.session_id().0);
    assert_eq!(stat.version, 0);
    // Another session sees the same (reads are served by the one server: no lag to tolerate here).
    let other = connect(&zk.addr()).await;
    assert_eq!(other.get_data(&node).await.unwrap().0, b"127.0.0.1:7001");
    let stat = c.set_data(&node, b"127.0.0.1:7002", Some(0)).await.unwrap();
    assert_eq!(stat.version, 1);
    assert_eq!(c.set_data(&node, b"x", Some(0)).await.unwrap_err(), Error::BadVersion);
    assert_eq!(other.get_data(&node).await.unwrap().0, b"127.0.0.1:7002");
    assert_eq!(other.get_data("/luahost/none").await.unwrap_err(), Error::NoNode);
    assert!(other.check_stat("/luahost/none").await.unwrap().is_none());
    // Ephemerals owned by this session (server 3.6+ getEphemerals).
    let mut mine = c.list_ephemerals("/luahost").await.unwrap();
    mine.sort();
    assert_eq!(mine, vec![node.clone(), format!("{HALL}/{seq_name}")]);
    assert!(other.list_ephemerals("/").await.unwrap().is_empty());
    assert_eq!(zk.mntr_value("zk_ephemerals_count"), Some(2));

    // Deleting a parent with children fails.
    assert_eq!(c.delete(HALL, None).await.unwrap_err(), Error::NotEmpty);
    c.delete(&node, None).await.unwrap();
    assert_eq!(c.delete(&node, None).await.unwrap_err(), Error::NoNode);
}

// b. digest auth and creator-only ACLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_digest_auth_creator_only_acl() {
    let zk = ZkServer::start();
    let addr = zk.addr();
    let owner = connect_auth(&addr, "user:pass").await;
    let same = connect_auth(&addr, "user:pass").await;
    let anon = connect(&addr).await;
    let wrong = connect_auth(&addr, "user:wrong").await; // digest auth never fails: it is just another id
    let other_user = connect_auth(&addr, "other:pass").await;
    assert_eq!(wrong.state(), SessionState::SyncConnected);

    let whoami = owner.list_auth_users().await.unwrap();
    println!("OBSERVED whoami of user:pass = {whoami:?}");
    assert!(whoami.iter().any(|u| u.scheme() == "digest" && u.user() == "user"));

    ensure_path(&owner, HALL).await.unwrap(); // world-open parents
    let node = format!("{HALL}/1");
    let creator_only = CreateMode::Ephemeral.with_acls(Acls::creator_all());
    owner.create(&node, b"127.0.0.1:7001", &creator_only).await.unwrap();
    let (acl, _) = owner.get_acl(&node).await.unwrap();
    println!("OBSERVED acl of creator_all node: {acl:?}");
    assert_eq!(acl.len(), 1);
    assert_eq!(acl[0].scheme(), "digest");
    assert!(acl[0].id().starts_with("user:"), "id is user:base64(sha1(user:pass))");

    // A session without auth cannot create with creator_all at all.
    assert_eq!(
        anon.create(&format!("{HALL}/2"), b"", &creator_only).await.unwrap_err(),
        Error::InvalidAcl
    );

    // Writes: only sessions with the same user:password.
    for (name, c) in [("anon", &anon), ("wrong password", &wrong), ("other user", &other_user)] {
        assert_eq!(
            c.set_data(&node, b"evil", None).await.unwrap_err(),
            Error::NoAuth,
            "set_data by {name}"
        );
        assert_eq!(
            c.set_acl(&node, &Acls::anyone_all(), None).await.unwrap_err(),
            Error::NoAuth,
            "set_acl by {name}"
        );
    }
    same.set_data(&node, b"127.0.0.1:7009", None).await.unwrap();

    // Reads: creator_all gives no READ to others; exists and list (of the open parent) work.
    for (name, c) in [("anon", &anon), ("wrong password", &wrong)] {
        assert_eq!(
            c.get_data(&node).await.unwrap_err(),
            Error::NoAuth,
            "get_data by {name}"
        );
        assert!(c.check_stat(&node).await.unwrap().is_some(), "exists by {name}");
        assert_eq!(
            c.list_children(HALL).await.unwrap(),
            vec!["1".to_string()],
            "list by {name}"
        );
    }
    assert_eq!(same.get_data(&node).await.unwrap().0, b"127.0.0.1:7009");
    println!("OBSERVED creator_all node: get_data by anon/wrong = NoAuth, exists and parent listing allowed");

    // Delete checks DELETE on the *parent*: under a world-open parent anyone can delete it.
    let (res_anon, res_wrong) = (anon.delete(&node, None).await, wrong.delete(&node, None).await);
    println!("OBSERVED delete of creator_all node under anyone_all parent: anon={res_anon:?} wrong={res_wrong:?}");
    assert_eq!(res_anon, Ok(()));
    assert_eq!(res_wrong.unwrap_err(), Error::NoNode);

    // A creator-only parent protects its children: no listing, no create, no delete by others.
    let secure = "/luahost/secure";
    owner
        .create(secure, b"", &CreateMode::Persistent.with_acls(Acls::creator_all()))
        .await
        .unwrap();
    let child = format!("{secure}/1");
    owner.create(&child, b"127.0.0.1:7001", &creator_only).await.unwrap();
    for (name, c) in [("anon", &anon), ("wrong password", &wrong)] {
        assert_eq!(
            c.delete(&child, None).await.unwrap_err(),
            Error::NoAuth,
            "delete by {name}"
        );
        assert_eq!(
            c.list_children(secure).await.unwrap_err(),
            Error::NoAuth,
            "list by {name}"
        );
        let open = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
        assert_eq!(
            c.create(&format!("{secure}/2"), b"", &open).await.unwrap_err(),
            Error::NoAuth,
            "create by {name}"
        );
    }
    assert_eq!(same.list_children(secure).await.unwrap(), vec!["1".to_string()]);

    // Auth added after connect works the same.
    let late = connect(&addr).await;
    late.auth("digest", b"user:pass").await.unwrap();
    assert_eq!(late.get_data(&child).await.unwrap().0, b"127.0.0.1:7001");

    // An unknown scheme: the server fails the session.
    let bogus = tokio::time::timeout(
        CONNECT,
        Client::connector()
            .with_session_timeout(SESSION)
            .with_auth("nosuchscheme", b"x")
            .connect(&addr),
    )
    .await;
    match bogus {
        Ok(Ok(c)) => {
            let r = c.get_data("/luahost").await;
            println!(
                "OBSERVED unknown auth scheme: connect Ok, state {:?}, then get_data {r:?}",
                c.state()
            );
            assert_eq!(r.unwrap_err(), Error::AuthFailed);
        }
        Ok(Err(e)) => {
            println!("OBSERVED unknown auth scheme: connect Err({e:?})");
            assert_eq!(e, Error::AuthFailed);
        }
        Err(_) => panic!("connect with an unknown auth scheme hung"),
    }
}

// c. one-shot children watch and persistent recursive watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_children_watch_and_persistent_recursive_watch() {
    let zk = ZkServer::start();
    let addr = zk.addr();
    let writer = connect(&addr).await;
    let watcher = connect(&addr).await;
    let rec = connect(&addr).await; // own session: see ZOOKEEPER-4466 (one-shot + persistent on one session)
    ensure_path(&writer, HALL).await.unwrap();
    let eph = CreateMode::Ephemeral.with_acls(Acls::anyone_all());

    // One-shot: fires once per arm; re-arm by listing again.
    let (children, _, w) = watcher.get_and_watch_children(HALL).await.unwrap();
    assert!(children.is_empty());
    let mut persistent = rec
        .watch("/luahost/servers", AddWatchMode::PersistentRecursive)
        .await
        .unwrap();

    let t = Instant::now();
    writer.create(&format!("{HALL}/1"), b"a", &eph).await.unwrap();
    let ev = within(OP, "one-shot children event (create)", w.changed()).await;
    let lat_add = t.elapsed();
    assert_eq!(ev.event_type, EventType::NodeChildrenChanged);
    assert_eq!(ev.path, HALL);
    assert_eq!(ev.session_state, SessionState::SyncConnected);
    let ev = within(OP, "persistent event (create)", persistent.changed()).await;
    let lat_add_p = t.elapsed();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeCreated, "/luahost/servers/Hall/1")
    );

    // A second change before re-arming is not reported by the (consumed) one-shot watch; the
    // re-list shows both children.
    writer.create(&format!("{HALL}/2"), b"b", &eph).await.unwrap();
    let ev = within(OP, "persistent event (create 2)", persistent.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeCreated, "/luahost/servers/Hall/2")
    );
    let (mut children, _, w) = watcher.get_and_watch_children(HALL).await.unwrap();
    children.sort();
    assert_eq!(children, vec!["1", "2"]);

    let t = Instant::now();
    writer.delete(&format!("{HALL}/1"), None).await.unwrap();
    let ev = within(OP, "one-shot children event (delete)", w.changed()).await;
    let lat_del = t.elapsed();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeChildrenChanged, HALL)
    );
    let ev = within(OP, "persistent event (delete)", persistent.changed()).await;
    let lat_del_p = t.elapsed();
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDeleted, "/luahost/servers/Hall/1")
    );

    // Recursive watches report data changes and new type directories, never NodeChildrenChanged.
    writer.set_data(&format!("{HALL}/2"), b"b2", None).await.unwrap();
    let ev = within(OP, "persistent event (data)", persistent.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDataChanged, "/luahost/servers/Hall/2")
    );
    writer
        .create(
            "/luahost/servers/Gate",
            b"",
            &CreateMode::Persistent.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    let ev = within(OP, "persistent event (new dir)", persistent.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeCreated, "/luahost/servers/Gate")
    );
    // An ephemeral removed because its session closed is reported like a delete.
    drop(writer);
    let ev = within(OP, "persistent event (owner closed)", persistent.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDeleted, "/luahost/servers/Hall/2")
    );
    // Nothing else is pending.
    assert!(tokio::time::timeout(Duration::from_millis(500), persistent.changed())
        .await
        .is_err());

    // A non-recursive persistent watch on the parent reports NodeChildrenChanged, repeatedly.
    let mut pw = rec.watch(HALL, AddWatchMode::Persistent).await.unwrap();
    let w2 = connect(&addr).await;
    for i in 0..3 {
        w2.create(&format!("{HALL}/p{i}"), b"", &eph).await.unwrap();
        let ev = within(OP, "persistent (non-recursive) event", pw.changed()).await;
        assert_eq!(
            (ev.event_type, ev.path.as_str()),
            (EventType::NodeChildrenChanged, HALL)
        );
    }
    println!(
        "OBSERVED watch latency: one-shot add {lat_add:?} del {lat_del:?}; persistent recursive add {lat_add_p:?} del {lat_del_p:?}"
    );
    for l in [lat_add, lat_del, lat_add_p, lat_del_p] {
        assert!(l < Duration::from_secs(5));
    }
}

// c'. ZOOKEEPER-4466: one-shot and persistent watches on the same path in the same session.
async fn oneshot_and_persistent(addr: &str, persistent_first: bool) -> (bool, bool) {
    let writer = connect(addr).await;
    let c = connect(addr).await;
    ensure_path(&writer, HALL).await.unwrap();
    let (mut pw, w) = if persistent_first {
        let pw = c.watch(HALL, AddWatchMode::PersistentRecursive).await.unwrap();
        (pw, c.get_and_watch_children(HALL).await.unwrap().2)
    } else {
        let w = c.get_and_watch_children(HALL).await.unwrap().2;
        (c.watch(HALL, AddWatchMode::PersistentRecursive).await.unwrap(), w)
    };
    let name = format!("{HALL}/{persistent_first}");
    writer
        .create(&name, b"", &CreateMode::Ephemeral.with_acls(Acls::anyone_all()))
        .await
        .unwrap();
    let p = tokio::time::timeout(OP, pw.changed()).await;
    // The persistent event has arrived: a one-shot event for the same change would be there too.
    let o = tokio::time::timeout(if persistent_first { OP } else { Duration::from_secs(3) }, w.changed()).await;
    println!("OBSERVED same session, persistent_first={persistent_first}: persistent {p:?}; one-shot {o:?}");
    writer.delete(&name, None).await.unwrap();
    // The persistent watch goes on either way.
    let ev = within(OP, "persistent after delete", pw.changed()).await;
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDeleted, name.as_str())
    );
    (p.is_ok(), o.is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2_oneshot_and_persistent_same_session() {
    let zk = ZkServer::start();
    let a = oneshot_and_persistent(&zk.addr(), true).await;
    let b = oneshot_and_persistent(&zk.addr(), false).await;
    println!("OBSERVED (persistent fired, one-shot fired): persistent first {a:?}, one-shot first {b:?}");
    assert_eq!(a, (true, true), "persistent watch added first: both fire");
    assert_eq!(
        b,
        (true, false),
        "one-shot added first: the one-shot event is lost (ZOOKEEPER-4466)"
    );
}

// d. session expiry through a frozen server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_session_expiry_frozen_server() {
    let mut zk = ZkServer::start();
    let addr = zk.addr();
    let c = connect(&addr).await;
    ensure_path(&c, HALL).await.unwrap();
    let node = format!("{HALL}/1");
    let eph = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    c.create(&node, b"127.0.0.1:7001", &eph).await.unwrap();
    let (_, _, oneshot) = c.get_and_watch_children(HALL).await.unwrap();
    let mut persistent = c.watch("/luahost", AddWatchMode::PersistentRecursive).await.unwrap();

    let t0 = Instant::now();
    let states = record_states(&c, t0, Duration::from_secs(60));
    let pevents = Arc::new(Mutex::new(Vec::new()));
    {
        let pevents = pevents.clone();
        tokio::spawn(async move {
            loop {
                let ev = persistent.changed().await;
                let end = ev.session_state.is_terminated() && ev.event_type == EventType::Session;
                pevents
                    .lock()
                    .unwrap()
                    .push((ev.event_type, ev.session_state, t0.elapsed()));
                if end {
                    break; // changed() panics after a terminal event
                }
            }
        });
    }
    let oneshot_task = tokio::spawn(async move {
        let ev = oneshot.changed().await;
        (ev, t0.elapsed())
    });

    zk.freeze();
    let freeze_for = SESSION * 3;
    // In flight when the connection is declared dead: fails with that cause (not ConnectionLoss).
    let op = within(freeze_for, "op in flight on a frozen server", c.get_data(&node)).await;
    println!(
        "OBSERVED get_data in flight on a frozen server: {op:?} after {:?}",
        t0.elapsed()
    );
    assert!(
        matches!(op, Err(Error::Custom(_)) | Err(Error::ConnectionLoss)),
        "{op:?}"
    );
    assert_eq!(c.state(), SessionState::Disconnected);
    // Issued while Disconnected: queued until reconnect or expiry (here: expiry).
    let queued = {
        let c = c.clone();
        let node = node.clone();
        tokio::spawn(async move {
            let r = c.get_data(&node).await;
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(freeze_for.saturating_sub(t0.elapsed())).await;
    let before_thaw = states.lock().unwrap().clone();
    zk.thaw();
    let thawed = t0.elapsed();

    // The client ends in Expired.
    let got_expired = common::wait_until(Duration::from_secs(30), || {
        states.lock().unwrap().iter().any(|(s, _)| s.is_terminated())
    });
    let seq = states.lock().unwrap().clone();
    println!("OBSERVED states (frozen {freeze_for:?}, thawed at {thawed:?}): before thaw {before_thaw:?}; all {seq:?}");
    assert!(got_expired, "no terminal state: {seq:?}");
    let kinds: Vec<SessionState> = seq.iter().map(|(s, _)| *s).collect();
    assert_eq!(kinds.last(), Some(&SessionState::Expired));
    assert_eq!(kinds.first(), Some(&SessionState::Disconnected));
    assert_eq!(c.state(), SessionState::Expired);
    let (r, at) = within(OP, "op queued while disconnected", queued).await.unwrap();
    println!("OBSERVED op issued while Disconnected: {r:?} at {at:?}");
    assert_eq!(r.unwrap_err(), Error::SessionExpired);
    // Expired is final: operations fail at once.
    let r = within(OP, "op after expiry", c.get_data(&node)).await;
    assert_eq!(r.unwrap_err(), Error::SessionExpired);
    let r = within(OP, "create after expiry", c.create(&format!("{HALL}/2"), b"", &eph)).await;
    assert_eq!(r.unwrap_err(), Error::SessionExpired);

    let (ev, at) = within(OP, "one-shot watcher after expiry", oneshot_task).await.unwrap();
    println!("OBSERVED one-shot watcher on expiry: {ev:?} at {at:?}");
    assert_eq!(
        (ev.event_type, ev.session_state),
        (EventType::Session, SessionState::Expired)
    );
    common::wait_until(OP, || pevents.lock().unwrap().iter().any(|(_, s, _)| s.is_terminated()));
    let pev = pevents.lock().unwrap().clone();
    println!("OBSERVED persistent watcher events around expiry: {pev:?}");
    assert_eq!(
        pev.last().map(|e| (e.0, e.1)),
        Some((EventType::Session, SessionState::Expired))
    );

    // The server drops the expired session's ephemerals; a new client can re-create them.
    let c2 = connect(&addr).await;
    let gone = wait_gone(&c2, &node, Duration::from_secs(20)).await;
    println!("OBSERVED ephemeral gone {gone:?} after a new client connected (thawed at {thawed:?})");
    assert!(gone.is_some(), "ephemeral of the expired session still there");
    c2.create(&node, b"127.0.0.1:7001", &eph).await.unwrap();
    assert_eq!(c2.get_data(&node).await.unwrap().1.ephemeral_owner, c2.session_id().0);
}

// d'. a server restart within the session timeout keeps the session and its ephemerals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_restart_within_session_timeout_keeps_session() {
    let mut zk = ZkServer::start();
    let addr = zk.addr();
    let c = within(
        CONNECT,
        "connect",
        Client::connector()
            .with_session_timeout(Duration::from_secs(20))
            .connect(&addr),
    )
    .await
    .unwrap();
    ensure_path(&c, HALL).await.unwrap();
    let node = format!("{HALL}/1");
    c.create(&node, b"x", &CreateMode::Ephemeral.with_acls(Acls::anyone_all()))
        .await
        .unwrap();
    let (_, _, oneshot) = c.get_and_watch_children(HALL).await.unwrap();
    let t0 = Instant::now();
    let states = record_states(&c, t0, Duration::from_secs(40));
    tokio::task::block_in_place(|| zk.stop());
    let down = common::wait_until(OP, || !states.lock().unwrap().is_empty());
    assert!(down, "no state change after the server stopped");
    // Issued while Disconnected: queued, completes after the reconnect.
    let queued = {
        let c = c.clone();
        let node = node.clone();
        tokio::spawn(async move { c.get_data(&node).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| zk.restart());
    let restarted = t0.elapsed();
    let ok = common::wait_until(Duration::from_secs(30), || {
        states
            .lock()
            .unwrap()
            .iter()
            .any(|(s, _)| *s == SessionState::SyncConnected)
    });
    let seq = states.lock().unwrap().clone();
    println!("OBSERVED restart (up again at {restarted:?}): states {seq:?}");
    assert!(ok, "no SyncConnected after restart: {seq:?}");
    assert_eq!(seq.first().map(|s| s.0), Some(SessionState::Disconnected));
    assert_eq!(c.get_data(&node).await.unwrap().1.ephemeral_owner, c.session_id().0);
    let r = within(OP, "op queued while disconnected", queued).await.unwrap();
    assert_eq!(r.unwrap().0, b"x");
    // The one-shot watch was re-armed by the client on reconnect.
    let other = connect(&addr).await;
    other
        .create(
            &format!("{HALL}/2"),
            b"",
            &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
        )
        .await
        .unwrap();
    let ev = within(OP, "one-shot watch after reconnect", oneshot.changed()).await;
    assert_eq!(ev.event_type, EventType::NodeChildrenChanged);
}

// e1. dropping the last Client clone closes the session: its ephemerals go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e1_ephemeral_gone_when_client_dropped() {
    let zk = ZkServer::start();
    let addr = zk.addr();
    let owner = connect(&addr).await;
    let observer = connect(&addr).await;
    ensure_path(&owner, HALL).await.unwrap();
    let node = format!("{HALL}/1");
    owner
        .create(&node, b"x", &CreateMode::Ephemeral.with_acls(Acls::anyone_all()))
        .await
        .unwrap();
    let clone = owner.clone();
    let (stat, w) = observer.check_and_watch_stat(&node).await.unwrap();
    assert!(stat.is_some());
    drop(owner);
    // A clone keeps the session alive.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), async { observer.check_stat(&node).await })
            .await
            .unwrap()
            .unwrap()
            .is_some()
    );
    let t = Instant::now();
    drop(clone);
    let ev = within(OP, "NodeDeleted after drop", w.changed()).await;
    let took = t.elapsed();
    println!("OBSERVED ephemeral deleted {took:?} after the last Client clone was dropped");
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDeleted, node.as_str())
    );
    assert!(took < SESSION, "closing should not wait for the session timeout");
}

const CHILD_ENV: &str = "LUAHOST_ZK_SMOKE_CHILD";

// e2. the owning process killed with -9: the ephemeral goes after the session timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2_ephemeral_gone_after_owner_killed() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        // Child role (re-exec'd by the parent below): own an ephemeral, then idle.
        let (addr, node) = spec.split_once(' ').unwrap();
        let c = connect(addr).await;
        c.create(node, b"child", &CreateMode::Ephemeral.with_acls(Acls::anyone_all()))
            .await
            .unwrap();
        println!("ZK_CHILD_READY {}", c.session_id());
        tokio::time::sleep(Duration::from_secs(60)).await; // bounded: the parent kills us long before
        return;
    }
    let zk = ZkServer::start();
    let addr = zk.addr();
    let observer = connect(&addr).await;
    ensure_path(&observer, HALL).await.unwrap();
    let node = format!("{HALL}/1");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "e2_ephemeral_gone_after_owner_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{addr} {node}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let child_log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = child_log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // libtest prints "test <name> ... " on the same line first.
            if let Some(i) = line.find("ZK_CHILD_READY") {
                let _ = tx.send(line[i..].trim().to_string());
            }
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let sink = child_log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    let ready = match ready {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "child did not create its ephemeral; its output:\n{}",
                child_log.lock().unwrap()
            );
        }
    };
    let (stat, w) = observer.check_and_watch_stat(&node).await.unwrap();
    let stat = stat.expect("child's ephemeral");
    assert_eq!(format!("ZK_CHILD_READY {:#x}", stat.ephemeral_owner), ready);

    let t = Instant::now();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let ev = within(Duration::from_secs(30), "NodeDeleted after kill -9", w.changed()).await;
    let took = t.elapsed();
    println!("OBSERVED ephemeral of a kill -9'd owner deleted after {took:?} (session timeout {SESSION:?})");
    assert_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDeleted, node.as_str())
    );
    // The server keeps the session until it times out (a closed TCP connection is not a close).
    assert!(took >= SESSION / 2, "deleted too early: {took:?}");
    assert!(took < SESSION * 4, "deleted too late: {took:?}");
}
