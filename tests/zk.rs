//! ZooKeeper discovery against a real ZooKeeper server (Debian's package,
//! started per test by tests/common/zk.rs): registration, watches, the
//! routing ring, kill -9, late joiners, outages, freezes, digest auth.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::zk::{registered_at, registration, zk_client, znode, ZkServer};
use common::*;
use luahost::NodeHandle;
use zookeeper_client::{Acl, Acls, AuthId, CreateMode, Permission};

fn zk_extra(zk: &ZkServer, session: u32, auth: Option<&str>) -> String {
    let auth = auth.map(|a| format!(", auth = {a:?}")).unwrap_or_default();
    format!(
        "zookeeper = {{ hosts = {:?}, root = \"/luahost/test\", session_timeout = {session}{auth} }},",
        zk.addr()
    )
}

fn live_list(n: &NodeHandle) -> String {
    eval(n, "local t = {} for _, s in ipairs(router.list(ServerType.B)) do t[#t+1] = router.nodeName(s) end return table.concat(t, ',')")
}

/// Children of <root>/servers/<ty> as seen by a plain ZooKeeper client.
fn registered(zk: &ZkServer, ty: &str, auth: Option<&str>) -> Vec<String> {
    registered_at(zk, &format!("/luahost/test/servers/{ty}"), auth)
}

/// A listener that claims to be whatever node it is asked to be, without
/// knowing the cluster secret: it answers the first message of each
/// connection, alternately, with a verify-ok as `name`/`sid` and with a
/// challenge as that node carrying a made-up proof, then reads until the
/// other side hangs up.
struct FakeNode {
    addr: std::net::SocketAddr,
    /// Connections the other side closed.
    closed: Arc<AtomicUsize>,
}

impl FakeNode {
    fn start(name: &'static str, sid: u32, stype: &'static str, digest: u32) -> FakeNode {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        let count = closed.clone();
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                let count = count.clone();
                std::thread::spawn(move || {
                    let mut dec = luahost::codec::wire::FrameDecoder::default();
                    let mut inbuf = bytes::BytesMut::new();
                    if read_frame(&mut s, &mut dec, &mut inbuf).is_some() {
                        let mut out = bytes::BytesMut::new();
                        if n % 2 == 0 {
                            luahost::codec::proto::put_verify_ok(&mut out, name, sid);
                        } else {
                            let me = identity(name, sid, stype, digest, 7);
                            luahost::codec::proto::put_challenge(
                                &mut out,
                                &me,
                                &[0x5a; luahost::codec::auth::PROOF_LEN],
                            );
                        }
                        let _ = s.write_all(&out);
                    }
                    let mut sink = [0u8; 4096];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                    count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        FakeNode { addr, closed }
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// a_1 in this process and b_1 as a process, registered with session timeout
/// `session` (and digest `auth`); a_1 sees b_1 and records Offline events.
fn a_and_b1(zk: &ZkServer, tag: &str, session: u32, auth: Option<&str>) -> (TempDir, Proc, NodeHandle) {
    let dir = TempDir::new(tag);
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 21)],
        &zk_extra(zk, session, auth),
    );
    let b1 = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    assert!(wait_until(Duration::from_secs(20), || live_list(&a) == "b_1"));
    record_offline(&a);
    (dir, b1, a)
}

/// What a node started on ZooKeeper without `auth` logs (once).
const NO_AUTH_WARNING: &str = "ZooKeeper without auth: anyone who can reach";

const ROUTES: &str =
    "local t = {} for k = 1, 2000 do t[#t+1] = router.route(ServerType.B, k) end return table.concat(t, ',')";

#[test]
fn nodes_register_see_each_other_and_follow_kills_and_joins() {
    let zk = ZkServer::start();
    let dir = TempDir::new("zk-ring");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 21), ("b_2", "B", 22), ("b_3", "B", 23)],
        &zk_extra(&zk, 4, None),
    );
    let b1 = Proc::run_node(&cluster, "b_1");
    let b2 = Proc::run_node(&cluster, "b_2");
    let a = start(&cluster, "a_1");
    assert!(
        wait_until(Duration::from_secs(20), || live_list(&a) == "b_1,b_2"),
        "a_1 sees {}",
        live_list(&a)
    );
    // ZooKeeper without auth: each node says so, once
    assert_eq!(b1.log().matches(NO_AUTH_WARNING).count(), 1, "{}", b1.log());
    assert_eq!(registered(&zk, "B", None), vec!["b_1", "b_2"]);
    assert_eq!(registered(&zk, "A", None), vec!["a_1"]);
    assert_eq!(eval(&a, "return to(sidOf('b_2')).echo('zk', 2)"), "zk\t2");
    // the registration carries address, pid, digest and the load the node publishes
    eval(&a, "router.setLoad(42) return true");
    let reg = || registration(&zk, "/luahost/test/servers/A/a_1");
    assert!(wait_until(Duration::from_secs(10), || reg().load == 42), "{:?}", reg());
    let r = reg();
    assert_eq!(
        (r.name.as_str(), r.sid, r.stype.as_str(), r.pid),
        ("a_1", 1, "A", std::process::id())
    );
    assert_eq!(
        format!("{:08x}", r.digest),
        eval(&a, "return string.format('%08x', rpcdef.Digi)")
    );
    assert_eq!(
        eval(
            &a,
            "return router.node(sidOf('b_1')).load .. ' ' .. router.node(sidOf('a_1')).load"
        ),
        "0 42"
    );
    // the others see each other too (b_1 calls b_2 and a_1)
    let before: Vec<String> = eval(&a, ROUTES).split(',').map(String::from).collect();
    assert!(before.iter().any(|s| s == "22") && before.iter().any(|s| s == "21"));

    // kill -9 of b_2: offline within the session timeout, its keys go to b_1
    record_offline(&a);
    b2.signal(libc::SIGKILL);
    let t = Instant::now();
    assert!(wait_until(Duration::from_secs(10), || live_list(&a) == "b_1"));
    assert!(t.elapsed() < Duration::from_secs(5), "offline after {:?}", t.elapsed());
    assert_eq!(offline_seen(&a), "b_2");
    let after: Vec<String> = eval(&a, ROUTES).split(',').map(String::from).collect();
    for (x, y) in before.iter().zip(&after) {
        if x == "21" {
            assert_eq!(y, "21", "a key of b_1 moved");
        } else {
            assert_eq!(y, "21", "b_2's keys go to b_1");
        }
    }
    // its znode goes when its session times out, and so does the peer
    assert!(
        wait_until(Duration::from_secs(15), || registered(&zk, "B", None) == vec!["b_1"]),
        "{:?}",
        registered(&zk, "B", None)
    );
    assert!(wait_until(Duration::from_secs(5), || !eval(
        &a,
        "local t = {} for _, n in ipairs(router.nodes()) do t[#t+1] = n.name end return table.concat(t, ',')"
    )
    .contains("b_2")));

    // a node started later is routed to
    let _b3 = Proc::run_node(&cluster, "b_3");
    assert!(
        wait_until(Duration::from_secs(20), || live_list(&a) == "b_1,b_3"),
        "{}",
        live_list(&a)
    );
    let later: Vec<String> = eval(&a, ROUTES).split(',').map(String::from).collect();
    assert!(later.iter().any(|s| s == "23"), "no key routed to b_3");
    assert_eq!(eval(&a, "return to(sidOf('b_3')).echo('late', 3)"), "late\t3");
    a.shutdown();
}

#[test]
fn zookeeper_outage_longer_than_the_session_timeout_reregisters_exactly_once() {
    let mut zk = ZkServer::start();
    let (_dir, b1, a) = a_and_b1(&zk, "zk-outage", 4, None);
    zk.stop();
    // traffic between known nodes goes on while ZooKeeper is away
    for i in 0..3 {
        assert_eq!(
            eval(&a, &format!("return to(sidOf('b_1')).echo('down', {i})")),
            format!("down\t{i}")
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    zk.restart();
    assert!(
        b1.wait_log("registered in ZooKeeper", Duration::from_secs(1))
            && wait_until(Duration::from_secs(30), || {
                registered(&zk, "B", None) == vec!["b_1"] && registered(&zk, "A", None) == vec!["a_1"]
            }),
        "B: {:?} A: {:?}\nb_1 log:\n{}",
        registered(&zk, "B", None),
        registered(&zk, "A", None),
        b1.log()
    );
    // registered again: more than one registration line in b_1's log, and
    // (after the old sessions' ephemerals are gone) exactly one znode each
    assert!(wait_until(Duration::from_secs(20), || b1
        .log()
        .matches("registered in ZooKeeper")
        .count()
        >= 2));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        b1.log().matches(NO_AUTH_WARNING).count(),
        1,
        "warned again on re-registering"
    );
    assert_eq!(registered(&zk, "B", None), vec!["b_1"]);
    assert_eq!(registered(&zk, "A", None), vec!["a_1"]);
    assert_eq!(live_list(&a), "b_1");
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('up', 1)"), "up\t1");
    // nobody was reported offline, a_1 itself included (its session expired)
    assert_eq!(offline_seen(&a), "", "Offline events during the outage");
    a.shutdown();
}

#[test]
fn a_short_zookeeper_freeze_causes_no_offline_events() {
    let mut zk = ZkServer::start();
    let (_dir, _b1, a) = a_and_b1(&zk, "zk-freeze", 8, None);
    zk.freeze();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('frozen', 1)"), "frozen\t1");
    zk.thaw();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(offline_seen(&a), "", "no Offline events");
    assert_eq!(live_list(&a), "b_1");
    assert_eq!(registered(&zk, "B", None), vec!["b_1"]);
    a.shutdown();
}

#[test]
fn a_zookeeper_freeze_past_the_session_timeout_reports_nobody_offline() {
    // the client declares its session expired on its own (~1.4 x the
    // timeout without an answer) and the thawed server expires it too:
    // each node registers again with a new session, and is never Offline,
    // neither to its peers nor to itself
    let mut zk = ZkServer::start();
    let (_dir, b1, a) = a_and_b1(&zk, "zk-long-freeze", 4, None);
    // b_1 has listed a_1: no request of its own is under way when the
    // server freezes (one would end the session as failed, not expired)
    assert!(
        b1.wait_log("added [a_1]", Duration::from_secs(10)),
        "b_1 never listed a_1:\n{}",
        b1.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    zk.freeze();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('frozen', 1)"), "frozen\t1");
    zk.thaw();
    assert!(
        b1.wait_log("session expired", Duration::from_secs(10)),
        "b_1's session did not expire:\n{}",
        b1.log()
    );
    assert!(
        wait_until(Duration::from_secs(20), || b1
            .log()
            .matches("registered in ZooKeeper")
            .count()
            >= 2
            && registered(&zk, "B", None) == vec!["b_1"]
            && registered(&zk, "A", None) == vec!["a_1"]),
        "not registered again: B {:?} A {:?}\n{}",
        registered(&zk, "B", None),
        registered(&zk, "A", None),
        b1.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(offline_seen(&a), "", "Offline events");
    assert_eq!(live_list(&a), "b_1");
    assert_eq!(eval(&a, "return router.isLive(sidOf('a_1')) and 'yes' or 'no'"), "yes");
    a.shutdown();
}

#[test]
fn digest_auth_protects_registrations_and_refuses_wrong_credentials() {
    let zk = ZkServer::start();
    let dir = TempDir::new("zk-auth");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 21), ("b_2", "B", 22)],
        &zk_extra(&zk, 4, Some("luahost:right")),
    );
    let a = start(&cluster, "a_1");
    let b1 = Proc::run_node(&cluster, "b_1");
    assert!(wait_until(Duration::from_secs(20), || live_list(&a) == "b_1"));
    assert_eq!(registered(&zk, "B", Some("luahost:right")), vec!["b_1"]);
    assert!(!b1.log().contains(NO_AUTH_WARNING), "{}", b1.log());
    // without the credentials nothing can be listed (creator-only ACLs)
    assert!(registered(&zk, "B", None).is_empty());
    // a node with wrong credentials is refused and says so
    let mut b2 = Proc::run_node_env(&cluster, "b_2", &[("LUAHOST_ZK_AUTH", "luahost:wrong")]);
    let status = b2
        .wait_exit(Duration::from_secs(20))
        .expect("b_2 should stop on its own");
    assert!(!status.success());
    let log = b2.log();
    assert!(
        log.contains("ZooKeeper refused") && log.contains("credentials"),
        "{log}"
    );
    assert!(
        !log.contains("luahost:wrong") && !log.contains("luahost:right"),
        "credentials were logged"
    );
    assert_eq!(live_list(&a), "b_1");
    a.shutdown();
}

#[test]
fn auth_refuses_a_root_others_may_write_and_fixes_one_the_cluster_owns() {
    const AUTH: &str = "luahost:right";
    let zk = ZkServer::start();
    let dir = TempDir::new("zk-acl");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 21)],
        &zk_extra(&zk, 4, Some(AUTH)),
    );
    // someone without credentials created the root first: world-writable
    let (rt, anon) = zk_client(&zk, None);
    rt.block_on(anon.mkdir("/luahost/test", &CreateMode::Persistent.with_acls(Acls::anyone_all())))
        .unwrap();
    let mut b1 = Proc::run_node(&cluster, "b_1");
    let status = b1
        .wait_exit(Duration::from_secs(20))
        .expect("b_1 should stop on its own");
    assert!(!status.success());
    let log = b1.log();
    assert!(
        log.contains("/luahost/test is not protected by zookeeper.auth: its ACL grants world:anyone ALL"),
        "{log}"
    );
    // nothing was registered or created under it
    assert!(registered_at(&zk, "/luahost/test", None).is_empty());

    // a root that the cluster's identity owns but that also lets anyone
    // create under it is made creator-only again, and the node starts
    rt.block_on(anon.delete("/luahost/test", None)).unwrap();
    let (rt2, authed) = zk_client(&zk, Some(AUTH));
    let acl = [
        Acl::new(Permission::ALL, AuthId::authed()),
        Acl::new(Permission::READ | Permission::CREATE, AuthId::anyone()),
    ];
    rt2.block_on(authed.create("/luahost/test", &[], &CreateMode::Persistent.with_acls(Acls::new(&acl))))
        .unwrap();
    let a = start(&cluster, "a_1");
    assert!(
        wait_until(Duration::from_secs(20), || registered(&zk, "A", Some(AUTH))
            == vec!["a_1"]),
        "a_1 did not register"
    );
    let (now, _) = rt2.block_on(authed.get_acl("/luahost/test")).unwrap();
    assert_eq!(
        now.iter().map(|a| (a.scheme(), a.permission())).collect::<Vec<_>>(),
        vec![("digest", Permission::ALL)],
        "{now:?}"
    );
    a.shutdown();
}

#[test]
fn an_anonymous_fake_znode_never_joins_the_ring() {
    let zk = ZkServer::start();
    let (_dir, _b1, a) = a_and_b1(&zk, "zk-fake", 4, None);
    // a stranger without credentials registers a B pointing at its listener,
    // copying everything a real node publishes (the digest included)
    let digest = u32::from_str_radix(&eval(&a, "return string.format('%08x', rpcdef.Digi)"), 16).unwrap();
    let fake = FakeNode::start("b_fake", 29, "B", digest);
    let reg = luahost::discovery::zk::Registration {
        name: "b_fake".into(),
        sid: 29,
        stype: "B".into(),
        addr: fake.addr.to_string(),
        pid: 1,
        digest,
        version: env!("CARGO_PKG_VERSION").into(),
        load: 0,
        incarnation: 7,
    };
    let (rt, c) = zk_client(&zk, None);
    rt.block_on(c.create(
        "/luahost/test/servers/B/b_fake",
        &rmp_serde::to_vec_named(&reg).unwrap(),
        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
    ))
    .unwrap();
    // a_1 and b_1 keep trying it and hanging up on it; meanwhile it is never
    // listed nor routed to
    let tried = wait_until(Duration::from_secs(30), || {
        assert_eq!(live_list(&a), "b_1", "the fake joined the ring");
        assert!(
            eval(&a, ROUTES).split(',').all(|s| s == "21"),
            "a key was routed to the fake"
        );
        fake.closed() >= 4
    });
    assert!(tried, "the fake was tried {} times", fake.closed());
    // calls keep going to the real B
    for k in 0..20 {
        assert_eq!(
            eval(
                &a,
                &format!("return to(router.route(ServerType.B, {k})).echo('real', {k})")
            ),
            format!("real\t{k}")
        );
    }
    assert_eq!(live_list(&a), "b_1");
    a.shutdown();
}

#[test]
fn a_deleted_registration_comes_back_and_peers_keep_routing_to_it() {
    const AUTH: &str = "luahost:right";
    let zk = ZkServer::start();
    let (_dir, b1, a) = a_and_b1(&zk, "zk-restore", 4, Some(AUTH));
    let path = "/luahost/test/servers/B/b_1";
    let (_, before) = znode(&zk, path, Some(AUTH)).expect("b_1 is registered");
    // someone with the cluster's credentials deletes b_1's znode
    let (rt, c) = zk_client(&zk, Some(AUTH));
    rt.block_on(c.delete(path, None)).unwrap();
    // b_1 puts it back, from the same session
    assert!(
        wait_until(Duration::from_secs(5), || znode(&zk, path, Some(AUTH))
            .is_some_and(|(_, s)| s.czxid > before.czxid)),
        "not registered again:\n{}",
        b1.log()
    );
    let (reg, after) = znode(&zk, path, Some(AUTH)).unwrap();
    assert_eq!(after.ephemeral_owner, before.ephemeral_owner);
    assert_eq!((reg.name.as_str(), reg.pid), ("b_1", b1.child.id()));
    assert!(b1.log().contains("was deleted while this node runs"), "{}", b1.log());
    // a_1 keeps it past its grace of one session timeout, and routes to it
    let until = Instant::now() + Duration::from_secs(6);
    let mut k = 0;
    while Instant::now() < until {
        assert_eq!(live_list(&a), "b_1");
        assert_eq!(
            eval(
                &a,
                &format!("return to(router.route(ServerType.B, {k})).echo('kept', {k})")
            ),
            format!("kept\t{k}")
        );
        k += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(offline_seen(&a), "", "b_1 went offline");
    a.shutdown();
}

#[test]
fn a_node_whose_registration_another_process_took_stops() {
    const AUTH: &str = "luahost:right";
    let zk = ZkServer::start();
    let (_dir, mut b1, a) = a_and_b1(&zk, "zk-taken", 4, Some(AUTH));
    let path = "/luahost/test/servers/B/b_1";
    // another process of b_1 replaces its znode (in one step)
    let other = luahost::discovery::zk::Registration {
        name: "b_1".into(),
        sid: 21,
        stype: "B".into(),
        addr: "127.0.0.1:9".into(),
        pid: 4242,
        digest: 0,
        version: env!("CARGO_PKG_VERSION").into(),
        load: 0,
        incarnation: 99,
    };
    let (rt, c) = zk_client(&zk, Some(AUTH));
    let mut w = c.new_multi_writer();
    w.add_delete(path, None).unwrap();
    w.add_create(
        path,
        &rmp_serde::to_vec_named(&other).unwrap(),
        &CreateMode::Ephemeral.with_acls(Acls::creator_all()),
    )
    .unwrap();
    rt.block_on(w.commit()).unwrap();
    // b_1 does not fight over it: it stops, naming the other process
    let status = b1
        .wait_exit(Duration::from_secs(20))
        .expect("b_1 should stop on its own");
    assert!(!status.success());
    let log = b1.log();
    assert!(
        log.contains("was taken over by another process") && log.contains("addr 127.0.0.1:9, pid 4242"),
        "{log}"
    );
    assert_eq!(znode(&zk, path, Some(AUTH)).unwrap().0.pid, 4242);
    a.shutdown();
}

#[test]
fn a_second_process_of_a_running_node_refuses_to_start() {
    const AUTH: &str = "luahost:right";
    let zk = ZkServer::start();
    let (dir, b1, a) = a_and_b1(&zk, "zk-twice", 4, Some(AUTH));
    let path = "/luahost/test/servers/B/b_1";
    let (first, before) = znode(&zk, path, Some(AUTH)).unwrap();
    // the same node name started again, listening elsewhere
    let cluster2 = with_addr(&dir.0.join("cluster.lua"), "b_1", &format!("127.0.0.1:{}", free_port()));
    let mut again = Proc::run_node(&cluster2, "b_1");
    let status = again
        .wait_exit(Duration::from_secs(20))
        .expect("the second b_1 should stop on its own");
    assert!(!status.success());
    let log = again.log();
    assert!(
        log.contains(&format!(
            "node b_1 already runs: {path} is registered by a live process at {} (pid {})",
            first.addr,
            b1.child.id()
        )),
        "{log}"
    );
    // the first keeps its registration and keeps serving
    let (now, after) = znode(&zk, path, Some(AUTH)).unwrap();
    assert_eq!((now.pid, after.czxid), (b1.child.id(), before.czxid));
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('first', 1)"), "first\t1");
    assert_eq!(live_list(&a), "b_1");
    assert_eq!(offline_seen(&a), "");
    a.shutdown();
}

#[test]
fn a_quick_restart_after_kill_9_replaces_the_leftover_registration() {
    const AUTH: &str = "luahost:right";
    let zk = ZkServer::start();
    // a long session timeout: the killed process's znode outlives the restart
    let (dir, mut b1, a) = a_and_b1(&zk, "zk-restart", 20, Some(AUTH));
    let path = "/luahost/test/servers/B/b_1";
    let (old, _) = znode(&zk, path, Some(AUTH)).unwrap();
    b1.signal(libc::SIGKILL);
    // restarted as soon as it is gone (its port is free again)
    b1.wait_exit(Duration::from_secs(10)).expect("b_1 killed");
    let b1 = Proc::run_node(&dir.0.join("cluster.lua"), "b_1");
    assert!(
        wait_until(Duration::from_secs(15), || znode(&zk, path, Some(AUTH))
            .is_some_and(|(r, _)| r.pid == b1.child.id())),
        "{}",
        b1.log()
    );
    let log = b1.log();
    assert!(
        log.contains(&format!(
            "{path} is still registered by a process that is gone (addr {}, pid {}",
            old.addr, old.pid
        )),
        "{log}"
    );
    assert_eq!(registered(&zk, "B", Some(AUTH)), vec!["b_1"]);
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('again', 2)"), "again\t2");
    assert_eq!(b1.log().matches("registered in ZooKeeper").count(), 1, "{}", b1.log());
    a.shutdown();
}

/// A copy of cluster file `file` (next to it) in which node `name` listens on `addr`.
fn with_addr(file: &std::path::Path, name: &str, addr: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(file).unwrap();
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(&format!("{name} = ")) {
                let i = l.find("addr = \"").unwrap() + "addr = \"".len();
                let j = i + l[i..].find('"').unwrap();
                format!("{}{addr}{}", &l[..i], &l[j..])
            } else {
                l.to_string()
            }
        })
        .collect();
    let path = file.with_file_name("cluster2.lua");
    std::fs::write(&path, out.join("\n")).unwrap();
    path
}

#[test]
fn friends_demo_runs_on_zookeeper() {
    let zk = ZkServer::start();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/friends-zk");
    let p = Proc::spawn_env(&["up", demo.to_str().unwrap()], &[("LUAHOST_ZK", &zk.addr())]);
    // players log in through the Gate once it sees both Halls
    assert!(
        wait_until(Duration::from_secs(40), || {
            let log = p.log();
            [
                "gate_1 hall_1 (Hall",
                "gate_1 hall_2 (Hall",
                "hall_1 db_1 (DB",
                "hall_2 db_1 (DB",
            ]
            .iter()
            .all(|s| log.contains(s))
        }),
        "the Gate never saw both Halls, or a Hall the DB:\n{}",
        p.log()
    );
    let (_, out, err) = demo_bots("127.0.0.1:7310", &demo, 3);
    assert!(out.contains("connected=20 failed=0"), "{out}\n{err}");
    assert!(
        p.wait_log("hear that", Duration::from_secs(10)),
        "no notification on the ZooKeeper demo:\n{}",
        p.log()
    );
    assert!(p
        .log()
        .contains("registered in ZooKeeper as /luahost/friends/servers/Hall/hall_1"));
    // the demo runs with digest auth: its znodes are not listed anonymously
    assert!(!p.log().contains(NO_AUTH_WARNING), "{}", p.log());
    assert_eq!(
        registered_at(&zk, "/luahost/friends/servers/Hall", Some("luahost:change-me")),
        vec!["hall_1", "hall_2"]
    );
    assert!(registered_at(&zk, "/luahost/friends/servers/Hall", None).is_empty());
}
