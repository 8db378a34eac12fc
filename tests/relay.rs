//! `topology = "router"`: nodes that reach each other through Router nodes
//! (real nodes, real TCP on 127.0.0.1, real `luahost` processes).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn calls_and_sends_go_through_the_routers() {
    let dir = TempDir::new("relay-basic");
    let cluster = write_cluster_on(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "", Topo::Router);
    let _routers = start_routers(&cluster, Topo::Router);
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    wait_live(&b, &["a_1"]);
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('hello', 5)"), "hello\t5");
    eval(&a, "to(sidOf('b_1')).note(3, {1, 2}) return true");
    assert!(wait_until(Duration::from_secs(10), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "5"));
    assert_eq!(eval(&b, "return to(sidOf('a_1')).echo('back', -1)"), "back\t-1");
    // by type and to all: every live server that implements it (the
    // Routers, a_1 itself and b_1; Echo.note is on every type)
    assert_eq!(
        eval(
            &a,
            "return router.sendByType(ServerType.B, false, rpcdef.iface('B', 'Echo'), 1, 'note', 10, {})"
        ),
        "1"
    );
    assert!(wait_until(Duration::from_secs(10), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "15"));
    assert_eq!(eval(&a, "return router.sendAll(true, 'Echo', 1, 'note', 100, {})"), "3");
    // a Router serves calls to itself like any node
    assert_eq!(eval(&a, "return to(sidOf('r_1')).echo('router', 4)"), "router\t4");
    assert!(wait_until(Duration::from_secs(10), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "115"));
}

/// A raw client proves the secret as node a_1 (legitimately: it knows the
/// secret and the digest), relays a send to b_1 as itself (delivered), then
/// one claiming to be c_1: the Router closes that connection, nothing
/// reaches b_1, and c_1 and b_1 go on talking through it.
#[test]
fn a_router_refuses_a_spoofed_source_and_closes_only_that_connection() {
    use bytes::BytesMut;
    use luahost::codec::{mpack, proto, relay, wire};
    let dir = TempDir::new("relay-spoof");
    let cluster = write_cluster(
        &dir.0,
        &[
            ("a_1", "A", 1),
            ("b_1", "B", 2),
            ("c_1", "C", 3),
            ("r_1", "Router", 901),
        ],
        "  topology = \"router\",",
    );
    let _r = start(&cluster, "r_1");
    let b = start(&cluster, "b_1");
    let c = start(&cluster, "c_1");
    wait_live(&c, &["b_1"]);
    let digest: u32 = eval(&b, "return rpcdef.Digi").parse().unwrap();
    let note: u32 = eval(&b, "return rpcdef.rpcB.Echo.note.id").parse().unwrap();
    let mut s = std::net::TcpStream::connect(addr_of(&cluster, "r_1")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let (_, answer) = node_handshake(&mut s, "a_1", 1, "A", digest, "test-secret").expect("a challenge");
    assert!(matches!(
        proto::parse(&answer.data),
        Ok(proto::Envelope::VerifyOk { .. })
    ));
    wait_live(&b, &["a_1"]);
    let send = |src: u32, seq: u32, n: i64| {
        let mut env = BytesMut::new();
        let start = proto::begin_request(&mut env, false, 1, note, 2);
        mpack::put_int(&mut env, n);
        mpack::put_array_len(&mut env, 0);
        wire::finish_message(&mut env, start, seq);
        let mut out = BytesMut::new();
        assert_eq!(relay::relay_frames(&mut out, &env, 2, src), env.len());
        out
    };
    use std::io::Write;
    s.write_all(&send(1, 1, 7)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "7"));
    s.write_all(&send(3, 1, 100)).unwrap();
    // the Router closes the connection: reads end (after the Router's
    // announcements and the ack of the first send)
    let mut dec = wire::FrameDecoder::default();
    let mut buf = BytesMut::new();
    while read_frame(&mut s, &mut dec, &mut buf).is_some() {}
    // and b_1 hears a_1 leave, never the spoofed send
    assert!(wait_until(Duration::from_secs(10), || !live(&b, "a_1")));
    assert_eq!(eval(&b, "return base.global('Echo'):count()"), "7");
    assert_eq!(eval(&c, "return to(sidOf('b_1')).echo('still', 1)"), "still\t1");
}

/// kill -9 of a Router while 100 calls are in flight: each call completes
/// or fails with `node down` naming that Router, none is left to time out,
/// and calls go on through the other Router at once.
#[test]
fn router_kill_9_with_100_calls_in_flight_loses_no_call_silently() {
    let dir = TempDir::new("relay-kill");
    let cluster = write_cluster_on(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2)],
        "  call_timeout = 20,",
        Topo::Router,
    );
    let mut r1 = Proc::run_node(&cluster, "r_1");
    let _r2 = Proc::run_node(&cluster, "r_2");
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    wait_live(&b, &["a_1"]);
    // both Routers announced both nodes
    assert!(wait_until(Duration::from_secs(10), || r1.log().contains("joined")));
    assert!(r1.wait_log("b_1 (sid 2) joined", Duration::from_secs(10)));
    eval(
        &a,
        "outcomes = {} for i = 1, 100 do rpcco.fork(function()
             local ok, e = pcall(to(sidOf('b_1')).slow, 1.0)
             outcomes[#outcomes + 1] = ok and 'ok' or tostring(e)
         end) end return true",
    );
    // all 100 are in flight (b_1 is running their handlers)
    std::thread::sleep(Duration::from_millis(300));
    r1.signal(9);
    assert!(r1.wait_exit(Duration::from_secs(5)).is_some());
    // every call ends well before its 20 s timeout
    assert!(
        wait_until(Duration::from_secs(8), || eval(&a, "return #outcomes") == "100"),
        "calls still waiting: {}",
        eval(&a, "return #outcomes")
    );
    let outcomes = eval(&a, "return table.concat(outcomes, '\\n')");
    let mut failed = 0;
    for o in outcomes.lines() {
        if o != "ok" {
            assert!(o.contains("node down") && o.contains("r_1"), "{o}");
            failed += 1;
        }
    }
    assert!(failed > 0, "no call went through r_1: {outcomes}");
    // b_1 stayed online (through r_2) and calls go on
    assert!(live(&a, "b_1"));
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('after', 2)"), "after\t2");
    assert_eq!(eval(&b, "return to(sidOf('a_1')).echo('back', 3)"), "back\t3");
}

/// DB nodes are reached directly (seed 000: every node connects to the
/// Router and to the DB) and reach every node directly; both ways work, and
/// so do the others' calls through the Router.
#[test]
fn db_nodes_are_direct_both_ways_and_the_rest_goes_through_the_router() {
    let dir = TempDir::new("relay-db");
    let cluster = write_cluster(
        &dir.0,
        &[
            ("a_1", "A", 1),
            ("b_1", "B", 2),
            ("d_1", "DB", 6),
            ("r_1", "Router", 901),
        ],
        "  topology = \"router\",",
    );
    let r = Proc::run_node(&cluster, "r_1");
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    let d = start(&cluster, "d_1");
    wait_live(&a, &["b_1", "d_1"]);
    wait_live(&d, &["a_1", "b_1"]);
    assert_eq!(eval(&d, "return to(sidOf('a_1')).echo('from db', 1)"), "from db\t1");
    assert_eq!(eval(&a, "return to(sidOf('d_1')).echo('to db', 2)"), "to db\t2");
    assert_eq!(
        eval(&a, "return to(sidOf('b_1')).nest({sidOf('d_1'), sidOf('a_1')})"),
        "b_1>d_1>a_1"
    );
    // the Router saw the nodes; a and b talk through it: without it, they
    // lose each other but keep the DB
    assert!(r.wait_log("b_1 (sid 2) joined", Duration::from_secs(10)));
    drop(r);
    assert!(wait_until(Duration::from_secs(10), || !live(&a, "b_1")));
    assert!(live(&a, "d_1"));
    assert_eq!(eval(&b, "return to(sidOf('d_1')).echo('still', 3)"), "still\t3");
}

/// Through one Router: a node that restarts is seen offline then online
/// again (its new incarnation), and a Router that stops and starts again
/// brings every node back.
#[test]
fn restarted_nodes_and_a_restarted_router_come_back() {
    let dir = TempDir::new("relay-restart");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("r_1", "Router", 901)],
        "  topology = \"router\",",
    );
    let r = start(&cluster, "r_1");
    let a = start(&cluster, "a_1");
    record_offline(&a);
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    let inc = |n: &luahost::NodeHandle| eval(n, "return to(sidOf('b_1')).echo('x', 1)");
    assert_eq!(inc(&a), "x\t1");
    b.shutdown();
    assert!(wait_until(Duration::from_secs(10), || offline_seen(&a) == "b_1"));
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    assert_eq!(inc(&a), "x\t1");
    // the Router goes: a and b lose each other; it comes back: they meet again
    r.shutdown();
    assert!(wait_until(Duration::from_secs(10), || !live(&a, "b_1")));
    let _r = start(&cluster, "r_1");
    wait_live(&a, &["b_1"]);
    wait_live(&b, &["a_1"]);
    assert_eq!(inc(&a), "x\t1");
    assert_eq!(eval(&b, "return to(sidOf('a_1')).echo('y', 2)"), "y\t2");
}

/// A node that does not read what a Router queues for it is cut off at
/// `max_queue`: the Router closes its connection, announces it offline,
/// and the calls waiting on it fail with `node down` naming the Router
/// instead of piling up in the Router's memory.
#[test]
fn a_router_closes_the_connection_of_a_node_that_does_not_read() {
    let dir = TempDir::new("relay-slow");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("r_1", "Router", 901)],
        "  topology = \"router\",\n  max_queue = 65536,\n  call_timeout = 30,",
    );
    let r = Proc::run_node(&cluster, "r_1");
    let a = start(&cluster, "a_1");
    let digest: u32 = eval(&a, "return rpcdef.Digi").parse().unwrap();
    // b_1 proves the secret, then never reads again
    let mut s = std::net::TcpStream::connect(addr_of(&cluster, "r_1")).unwrap();
    node_handshake(&mut s, "b_1", 2, "B", digest, "test-secret").expect("a challenge");
    wait_live(&a, &["b_1"]);
    eval(
        &a,
        "outcomes = {} local big = string.rep('x', 32768)
         for i = 1, 400 do rpcco.fork(function()
             local ok, e = pcall(to(sidOf('b_1')).blob, big)
             outcomes[#outcomes + 1] = ok and 'ok' or tostring(e)
         end) end return true",
    );
    assert!(
        wait_until(Duration::from_secs(20), || eval(&a, "return #outcomes") == "400"),
        "calls still waiting: {}",
        eval(&a, "return #outcomes")
    );
    let outcomes = eval(&a, "return table.concat(outcomes, '\\n')");
    for o in outcomes.lines() {
        assert!(o.contains("node down: b_1") && o.contains("router r_1"), "{o}");
    }
    assert!(r.wait_log("too slow to keep up", Duration::from_secs(5)), "{}", r.log());
    assert!(!live(&a, "b_1"));
}
