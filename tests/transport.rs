//! Cluster transport under faults: handshake refusals, liveness, kill -9,
//! SIGSTOP, restarts, size limits, live cluster file, hostile sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use luahost::codec::{proto, wire};
use luahost::NodeHandle;

/// Starts 100 calls to `target` that each take `secs`; outcomes land in the
/// global `outcomes` of node `n`.
fn start_100_calls(n: &NodeHandle, target: &str, secs: f64) {
    eval(
        n,
        &format!(
            "outcomes = {{}}
             for i = 1, 100 do
               rpcco.fork(function()
                 local ok, e = pcall(function() return to(sidOf('{target}')).slow({secs}) end)
                 outcomes[#outcomes + 1] = ok and 'ok' or tostring(e)
               end)
             end
             return true"
        ),
    );
}

fn outcomes(n: &NodeHandle) -> Vec<String> {
    let s = eval(n, "return table.concat(outcomes, '\\n')");
    if s.is_empty() {
        Vec::new()
    } else {
        s.lines().map(String::from).collect()
    }
}

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let dir = TempDir::new("secret");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let b = Proc::run_node(&cluster, "b_1");
    let a = Proc::run_node_env(&cluster, "a_1", &[("LUAHOST_SECRET", "not-the-secret")]);
    assert!(
        b.wait_log("refused connection from a_1", Duration::from_secs(15)),
        "b_1 log:\n{}",
        b.log()
    );
    assert!(b.log().contains("wrong cluster secret"));
    assert!(
        a.wait_log("could not prove it knows the cluster secret", Duration::from_secs(15)),
        "a_1 log:\n{}",
        a.log()
    );
    assert!(
        !a.log().contains("not-the-secret") && !b.log().contains("test-secret"),
        "a secret was logged"
    );
}

#[test]
fn digest_mismatch_is_refused_naming_both_digests() {
    let dir = TempDir::new("digest");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let b = Proc::run_node_env(&cluster, "b_1", &[("LUAHOST_TEST_SCHEMA_EXTRA", "1")]);
    let a = start(&cluster, "a_1");
    assert!(b.wait_log("listening", Duration::from_secs(15)));
    let mine = eval(&a, "return string.format('%08x', rpcdef.Digi)");
    let e = eval(
        &a,
        "local ok, e = pcall(function() return to(sidOf('b_1')).echo('x', 1) end) return tostring(e)",
    );
    assert!(e.contains("node down: b_1") && e.contains("RPC digest mismatch"), "{e}");
    assert!(e.contains(&mine), "the message names a_1's digest {mine}: {e}");
    let theirs = e.split(" has ").nth(2).map(|s| &s[..8]).unwrap_or("");
    assert!(
        theirs.len() == 8 && theirs != mine,
        "the message names b_1's digest: {e}"
    );
    assert!(b.wait_log("RPC digest mismatch", Duration::from_secs(5)), "{}", b.log());
    a.shutdown();
}

#[test]
fn connections_that_do_not_verify_are_closed_and_never_delivered() {
    let dir = TempDir::new("verify");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "verify_timeout = 1,");
    let b = start(&cluster, "b_1");
    let addr = addr_of(&cluster, "b_1");
    // A silent connection is closed after the bound.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = silent.read_to_end(&mut buf);
    assert!(
        t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        t.elapsed()
    );
    // A call sent before any verify request is refused and not delivered.
    let mut sneaky = TcpStream::connect(addr).unwrap();
    sneaky.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let note_id: u32 = eval(&b, "return rpcdef.rpcB.Echo.note.id").parse().unwrap();
    let mut out = BytesMut::new();
    let start_at = proto::begin_request(&mut out, false, 1, note_id, 2);
    luahost::codec::mpack::put_int(&mut out, 1000);
    luahost::codec::mpack::put_array_len(&mut out, 0);
    wire::finish_message(&mut out, start_at, 0);
    sneaky.write_all(&out).unwrap();
    let mut answer = Vec::new();
    let _ = sneaky.read_to_end(&mut answer);
    let mut dec = wire::FrameDecoder::default();
    let mut ab = BytesMut::from(&answer[..]);
    let msg = dec.decode(&mut ab).unwrap().expect("a verify-failed answer");
    assert!(matches!(
        proto::parse(&msg.data),
        Ok(proto::Envelope::VerifyFailed { .. })
    ));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(eval(&b, "return base.global('Echo'):count()"), "0");
    b.shutdown();
}

#[test]
fn kill_9_with_100_calls_in_flight_fails_them_all_fast_and_restart_recovers() {
    let dir = TempDir::new("kill");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2)],
        "call_timeout = 60, liveness = 3,",
    );
    let mut b = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    start_100_calls(&a, "b_1", 30.0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(outcomes(&a).is_empty(), "calls finished early: {:?}", outcomes(&a));
    b.signal(libc::SIGKILL);
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || outcomes(&a).len() == 100),
        "only {} of 100 calls ended",
        outcomes(&a).len()
    );
    let elapsed = t.elapsed();
    let all = outcomes(&a);
    assert!(all.iter().all(|o| o.contains("node down: b_1")), "{:?}", &all[..3]);
    assert!(
        elapsed < Duration::from_secs(4),
        "took {elapsed:?}, liveness bound is 3 s"
    );
    assert!(wait_until(Duration::from_secs(5), || !live(&a, "b_1")));
    let _ = b.wait_exit(Duration::from_secs(5));
    // Restart the callee: calls succeed again without restarting the caller.
    let _b2 = Proc::run_node(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('back', 7)"), "back\t7");
    a.shutdown();
}

#[test]
fn sigstop_of_a_callee_is_detected_by_liveness() {
    let dir = TempDir::new("stop");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2)],
        "call_timeout = 60, liveness = 2,",
    );
    let b = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    record_offline(&a);
    start_100_calls(&a, "b_1", 30.0);
    std::thread::sleep(Duration::from_millis(300));
    b.signal(libc::SIGSTOP);
    let t = Instant::now();
    let done = wait_until(Duration::from_secs(15), || outcomes(&a).len() == 100);
    let elapsed = t.elapsed();
    b.signal(libc::SIGCONT);
    assert!(done, "only {} of 100 calls ended", outcomes(&a).len());
    let all = outcomes(&a);
    assert!(
        all.iter()
            .all(|o| o.contains("node down: b_1") && o.contains("liveness")),
        "{:?}",
        &all[..3]
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "took {elapsed:?}, liveness bound is 2 s"
    );
    assert_eq!(offline_seen(&a), "b_1");
    // Resumed, it is reconnected and serves again.
    wait_live(&a, &["b_1"]);
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('again', 8)"), "again\t8");
    a.shutdown();
}

#[test]
fn oversize_messages_are_refused_at_the_call_site() {
    let dir = TempDir::new("oversize");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "max_message = 65536,");
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    assert_eq!(
        eval(&a, "local n = to(sidOf('b_1')).blob(string.rep('x', 60000)) return n"),
        "60000"
    );
    let e = eval(
        &a,
        "local ok, e = pcall(function() return to(sidOf('b_1')).blob(string.rep('x', 70000)) end) return e",
    );
    assert!(e.contains("message too large") && e.contains("Echo.blob"), "{e}");
    let e = eval(
        &a,
        "local ok, e = pcall(function() to(sidOf('b_1')).note(1, {}) to(sidOf('b_1')).note(1, (function() local t = {} for i = 1, 40000 do t[i] = i end return t end)()) end) return e",
    );
    assert!(e.contains("message too large"), "{e}");
    assert!(wait_until(Duration::from_secs(5), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "1"));
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('still', 1)"), "still\t1");
    b.shutdown();
    a.shutdown();
}

#[test]
fn cluster_file_edits_add_and_remove_nodes_while_running() {
    let dir = TempDir::new("reload");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let original = std::fs::read_to_string(&cluster).unwrap();
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    eval(
        &a,
        "seen = {} EventMng:subscribe(Event.Server.Online, function(s, t, n) seen[#seen+1] = 'on:'..n end)
         EventMng:subscribe(Event.Server.Offline, function(s, t, n) seen[#seen+1] = 'off:'..n end) return true",
    );
    // add c_1
    let port = free_port();
    let main = scripts_dir().join("main.lua");
    let with_c = original.replace(
        "  nodes = {\n",
        &format!(
            "  nodes = {{\n    c_1 = {{ type = \"C\", id = 3, addr = \"127.0.0.1:{port}\", main = {:?} }},\n",
            main.display().to_string()
        ),
    );
    std::fs::write(&cluster, &with_c).unwrap();
    let c = Proc::run_node(&cluster, "c_1");
    assert!(
        wait_until(Duration::from_secs(15), || eval(&a, "return table.concat(seen, ' ')")
            .contains("on:c_1")),
        "a_1 never saw c_1: {}",
        eval(&a, "return table.concat(seen, ' ')")
    );
    assert_eq!(eval(&a, "return to(sidOf('c_1')).echo('new', 3)"), "new\t3");
    assert_eq!(eval(&a, "return router.route(ServerType.C, 42)"), "3");
    // a broken file leaves the cluster as it was, and says where it broke
    std::fs::write(&cluster, "return { nodes = {\n  broken = \n").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let e = eval(&a, "local ok, e = pcall(router.reload) return tostring(e)");
    assert!(
        e.contains("cluster.lua:") && e.contains("previous cluster stays"),
        "{e}"
    );
    assert_eq!(eval(&a, "return to(sidOf('c_1')).echo('kept', 4)"), "kept\t4");
    // remove c_1: disconnected, reported offline, no longer routable
    std::fs::write(&cluster, &original).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || eval(&a, "return table.concat(seen, ' ')")
            .contains("off:c_1")),
        "a_1 never saw c_1 leave"
    );
    assert_eq!(eval(&a, "return tostring(router.route(ServerType.C, 42))"), "nil");
    let e = eval(
        &a,
        "local ok, e = pcall(function() return rpcstub.mailbox(rpcdef.rpcC.Echo, 3, 1).echo('x', 1) end) return e",
    );
    assert!(e.contains("no such node: 3"), "{e}");
    drop(c);
    b.shutdown();
    a.shutdown();
}

fn garbage(seed: u64, n: usize) -> Vec<u8> {
    // xorshift64*: reproducible noise
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn hostile_sockets_do_not_disturb_a_call_stream() {
    let dir = TempDir::new("garbage");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)], "");
    let b = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    let addr = addr_of(&cluster, "b_1");
    eval(
        &a,
        "replies, failures = 0, {}
         for w = 1, 20 do
           rpcco.fork(function()
             for i = 1, 150 do
               local ok, e = pcall(function() return to(sidOf('b_1')).echo('x', i) end)
               if ok then replies = replies + 1 else failures[#failures+1] = tostring(e) end
             end
           end)
         end
         return true",
    );
    let spew = std::thread::spawn(move || {
        let mut n = 0;
        for i in 0..40u64 {
            let Ok(mut s) = TcpStream::connect(addr) else { continue };
            let bytes = match i % 4 {
                // random bytes
                0 => garbage(i, 4096),
                // a frame with a bad flag
                1 => vec![0, 9, 0x42, 0, 0, 0, 0, 1, 2, 3, 4],
                // a verify request claiming to be c_1, then junk instead of a proof
                2 => {
                    let mut out = BytesMut::new();
                    let me = identity("c_1", 3, "C", 0, 1);
                    proto::put_verify(&mut out, &me);
                    out.extend_from_slice(&garbage(i, 512));
                    out.to_vec()
                }
                // a continuation fragment with no first fragment
                _ => vec![0, 6, 0x83, 0, 0, 0, 1, 7],
            };
            let _ = s.write_all(&bytes);
            n += 1;
        }
        n
    });
    assert!(spew.join().unwrap() > 30);
    assert!(
        wait_until(Duration::from_secs(30), || eval(&a, "return replies + #failures")
            == "3000"),
        "calls did not all end: {}",
        eval(&a, "return replies .. ' ' .. #failures")
    );
    assert_eq!(eval(&a, "return replies"), "3000", "{}", eval(&a, "return failures[1]"));
    let log = b.log();
    assert!(
        log.contains("closed: protocol error") || log.contains("closed before verifying"),
        "{log}"
    );
    // Verified but misbehaving peers get errors per message; the node keeps serving.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let digest: u32 = u32::from_str_radix(&eval(&a, "return string.format('%08x', rpcdef.Digi)"), 16).unwrap();
    let echo_id: u32 = eval(&a, "return rpcdef.rpcB.Echo.echo.id").parse().unwrap();
    let (_, ok) = node_handshake(&mut s, "c_1", 3, "C", digest, "test-secret").expect("a challenge");
    assert!(matches!(proto::parse(&ok.data), Ok(proto::Envelope::VerifyOk { .. })));
    let mut out = BytesMut::new();
    let st = proto::begin_request(&mut out, true, 1, 999_999, 0);
    wire::finish_message(&mut out, st, 11);
    let st = proto::begin_request(&mut out, true, 1, echo_id, 2);
    luahost::codec::mpack::put_int(&mut out, 5); // should be a string
    luahost::codec::mpack::put_int(&mut out, 5);
    wire::finish_message(&mut out, st, 12);
    s.write_all(&out).unwrap();
    let mut dec = wire::FrameDecoder::default();
    let mut inbuf = BytesMut::new();
    let mut answers = Vec::new();
    let t = Instant::now();
    while answers.len() < 2 && t.elapsed() < Duration::from_secs(5) {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        inbuf.extend_from_slice(&chunk[..n]);
        while let Ok(Some(m)) = dec.decode(&mut inbuf) {
            answers.push(m);
        }
    }
    assert_eq!(answers.len(), 2, "two error replies");
    let texts: Vec<String> = answers
        .iter()
        .map(|m| match proto::parse(&m.data).unwrap() {
            proto::Envelope::Reply {
                ok: false, mut vals, ..
            } => String::from_utf8_lossy(vals.read_bytes().unwrap()).into_owned(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(texts[0].contains("unknown method id 999999"), "{}", texts[0]);
    assert!(texts[1].contains("bad argument #1 's' to Echo.echo"), "{}", texts[1]);
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('fine', 1)"), "fine\t1");
    a.shutdown();
}
