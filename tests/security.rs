//! Hostile parties: an impostor on a dead node's port, floods of refused
//! connections, a verified peer trickling a frame.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use luahost::codec::{proto, wire};

fn frame(m: &wire::Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    wire::put_message(&mut out, m.session, &m.data);
    out.to_vec()
}

#[test]
fn an_impostor_on_a_dead_nodes_port_gets_no_secret_and_no_call() {
    let dir = TempDir::new("impostor");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "verify_timeout = 1,");
    let addr = addr_of(&cluster, "b_1");
    // A real challenge of b_1, recorded on an earlier connection: an
    // impostor may replay it.
    let mut b = Proc::run_node(&cluster, "b_1");
    assert!(b.wait_log("listening", Duration::from_secs(15)), "{}", b.log());
    let digest = {
        let a = start(&cluster, "a_1");
        let d = u32::from_str_radix(&eval(&a, "return string.format('%08x', rpcdef.Digi)"), 16).unwrap();
        a.shutdown();
        d
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (challenge, ok) = node_handshake(&mut s, "a_1", 1, "A", digest, "test-secret").expect("a challenge");
    assert!(matches!(proto::parse(&ok.data), Ok(proto::Envelope::VerifyOk { .. })));
    drop(s);
    let recorded = frame(&challenge);
    let _ = b.child.kill();
    b.wait_exit(Duration::from_secs(5)).expect("b_1 exits");

    // The impostor takes the port and tries three ways in turn.
    let listener = TcpListener::bind(addr).expect("bind the dead node's port");
    listener.set_nonblocking(true).unwrap();
    let heard = Arc::new(Mutex::new(Vec::<u8>::new()));
    let tries = Arc::new(Mutex::new(0usize));
    let (heard2, tries2) = (heard.clone(), tries.clone());
    let impostor = std::thread::spawn(move || {
        let t = Instant::now();
        let mut n = 0usize;
        while t.elapsed() < Duration::from_secs(6) {
            let Ok((mut c, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            if let Ok(k) = c.read(&mut buf) {
                got.extend_from_slice(&buf[..k]);
            }
            let mut out = BytesMut::new();
            match n % 3 {
                // the old protocol: say yes, then forge replies
                0 => {
                    proto::put_verify_ok(&mut out, "b_1", 2);
                    for id in 1..200u32 {
                        let st = proto::begin_reply(&mut out, 2);
                        luahost::codec::mpack::put_str(&mut out, b"forged");
                        luahost::codec::mpack::put_int(&mut out, 1);
                        wire::finish_message(&mut out, st, id);
                    }
                }
                // replay a genuine challenge of b_1
                1 => out.extend_from_slice(&recorded),
                // a challenge with a made-up proof
                _ => {
                    let me = identity("b_1", 2, "B", digest, 5);
                    proto::put_challenge(&mut out, &me, &luahost::codec::auth::nonce());
                }
            }
            let _ = c.write_all(&out);
            while let Ok(k) = c.read(&mut buf) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..k]);
            }
            heard2.lock().unwrap().extend_from_slice(&got);
            n += 1;
            *tries2.lock().unwrap() = n;
        }
    });
    let a = start(&cluster, "a_1");
    eval(
        &a,
        "oks, errs, onlines = 0, {}, 0
         EventMng:subscribe(Event.Server.Online, function(sid) if sid == sidOf('b_1') then onlines = onlines + 1 end end)
         for w = 1, 5 do
           rpcco.fork(function()
             for i = 1, 400 do
               local ok, e = pcall(function() return to(sidOf('b_1')).echo('x', i) end)
               if ok then oks = oks + 1 else errs[#errs + 1] = tostring(e) end
               if #errs > 300 then return end
               rpcco.sleep(0.01)
             end
           end)
         end
         return true",
    );
    impostor.join().unwrap();
    let tries = *tries.lock().unwrap();
    assert!(tries >= 3, "the impostor was tried {tries} times");
    let heard = heard.lock().unwrap().clone();
    assert!(!heard.is_empty());
    assert!(
        !heard.windows(b"test-secret".len()).any(|w| w == b"test-secret"),
        "the secret reached the impostor"
    );
    assert_eq!(eval(&a, "return oks"), "0", "a forged reply was accepted");
    assert_eq!(eval(&a, "return onlines"), "0", "the impostor came online");
    assert!(!live(&a, "b_1"));
    let errs = eval(&a, "return table.concat(errs, '\\n')");
    assert!(errs.lines().count() > 0);
    assert!(
        errs.lines().all(|e| e.contains("node down: b_1")),
        "every call failed as node down: {errs}"
    );
    assert!(
        errs.contains("could not prove it knows the cluster secret"),
        "a failure names the missing proof: {errs}"
    );
    a.shutdown();
}

/// Counts lines of `log` that contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_flood_of_refused_connections_is_logged_a_few_times_then_summarised() {
    let dir = TempDir::new("flood");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "verify_timeout = 1,");
    let b = Proc::run_node(&cluster, "b_1");
    assert!(b.wait_log("listening", Duration::from_secs(15)), "{}", b.log());
    let addr = addr_of(&cluster, "b_1");
    let mut made = 0;
    for i in 0..600u32 {
        let Ok(mut s) = TcpStream::connect(addr) else { continue };
        made += 1;
        let _ = match i % 2 {
            // not a verify request
            0 => s.write_all(&[0, 6, 0x80, 0, 0, 0, 0, 0x91]),
            // a verify request from a node nobody knows
            _ => {
                let mut out = BytesMut::new();
                let me = identity("z_9", 99, "Z", 0, 1);
                proto::put_verify(&mut out, &me);
                s.write_all(&out)
            }
        };
        let mut sink = Vec::new();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let _ = s.read_to_end(&mut sink);
    }
    assert!(made > 500);
    assert!(
        b.wait_log("more in the last 10 s", Duration::from_secs(20)),
        "no summary:\n{}",
        b.log()
    );
    let lines = count(&b.log(), "refused connection from");
    std::thread::sleep(Duration::from_millis(1500));
    let log = b.log();
    assert!(lines <= 15, "{lines} lines for {made} refused connections:\n{log}");
    assert!(lines >= 2, "the first refusals are logged in full:\n{log}");
    let summed: u64 = log
        .lines()
        .filter(|l| l.contains("more in the last 10 s"))
        .filter_map(|l| {
            let before = &l[..l.find(" more in the last")?];
            before.rsplit(' ').next()?.replace(',', "").parse::<u64>().ok()
        })
        .sum();
    assert_eq!(
        summed as usize + lines,
        made,
        "every refusal is logged or counted:\n{log}"
    );
}

#[test]
fn a_verified_peer_trickling_a_frame_is_cut_off_at_the_liveness_bound() {
    let dir = TempDir::new("trickle");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)],
        "liveness = 2,",
    );
    let b = Proc::run_node(&cluster, "b_1");
    assert!(b.wait_log("listening", Duration::from_secs(15)), "{}", b.log());
    let digest = {
        let a = start(&cluster, "a_1");
        let d = u32::from_str_radix(&eval(&a, "return string.format('%08x', rpcdef.Digi)"), 16).unwrap();
        a.shutdown();
        d
    };
    let mut s = TcpStream::connect(addr_of(&cluster, "b_1")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (_, ok) = node_handshake(&mut s, "c_1", 3, "C", digest, "test-secret").expect("a challenge");
    assert!(matches!(proto::parse(&ok.data), Ok(proto::Envelope::VerifyOk { .. })));
    // A frame of 30,000 bytes, one byte every 100 ms (and the node's pings
    // left unanswered).
    s.write_all(&[0x75, 0x30, 0x80, 0, 0, 0, 0]).unwrap();
    s.set_nonblocking(true).unwrap();
    let t = Instant::now();
    let mut closed = None;
    let mut sink = [0u8; 256];
    while t.elapsed() < Duration::from_secs(12) {
        match s.read(&mut sink) {
            Ok(0) => {
                closed = Some(t.elapsed());
                break;
            }
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                closed = Some(t.elapsed());
                break;
            }
            _ => {}
        }
        if s.write_all(&[0x91]).is_err() {
            closed = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed = closed.unwrap_or_else(|| panic!("still open after 12 s:\n{}", b.log()));
    assert!(closed < Duration::from_secs(6), "closed after {closed:?}");
    assert!(b.wait_log("no traffic for", Duration::from_secs(5)), "{}", b.log());
}

#[test]
fn handler_errors_caused_by_a_peer_are_logged_a_few_times_then_summarised() {
    let dir = TempDir::new("handlerflood");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let b = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    // 200 calls whose handler raises, and 200 sends to an entity without one
    let failed = eval(
        &a,
        "local n = 0
         for i = 1, 200 do
           if not pcall(to(sidOf('b_1')).fail, 'boom') then n = n + 1 end
           rpcstub.mailbox(rpcdef.iface('B', 'Echo'), sidOf('b_1'), 77).note(1, {})
         end
         return n",
    );
    assert_eq!(failed, "200", "every caller still gets its error");
    assert!(
        b.wait_log(
            "errors in handlers of remote calls and sends: 195 more",
            Duration::from_secs(20)
        ),
        "{}",
        b.log()
    );
    assert!(
        b.wait_log("to entities without a handler: 195 more", Duration::from_secs(5)),
        "{}",
        b.log()
    );
    let log = b.log();
    assert_eq!(count(&log, "Echo.fail failed"), 5, "{log}");
    assert_eq!(count(&log, "dropped: no handler"), 5, "{log}");
    a.shutdown();
}
