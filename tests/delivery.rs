//! What happens to one-way sends and to liveness when connections break:
//! resent across a brief disconnect, reported when a peer freezes, `busy:`
//! when its queue is full, no false "silent" after this node was stopped,
//! and loads over the node links.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A copy of `cluster` in which node `name` has address `to`, written next
/// to it as `file`.
fn with_addr(cluster: &Path, name: &str, to: std::net::SocketAddr, file: &str) -> PathBuf {
    let from = addr_of(cluster, name).to_string();
    let text = std::fs::read_to_string(cluster).unwrap();
    assert!(text.contains(&from));
    let path = cluster.with_file_name(file);
    std::fs::write(&path, text.replace(&from, &to.to_string())).unwrap();
    path
}

/// Copies bytes both ways between clients of `listener` and `target`; `cut`
/// breaks every connection open at the time.
struct Proxy {
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(listener: TcpListener, target: std::net::SocketAddr) -> Proxy {
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let open2 = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                {
                    let mut o = open2.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { open }
    }

    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Records `Event.Server.SendsLost` in the globals `lost_total` and `lost_events`.
fn record_lost(n: &luahost::NodeHandle) {
    eval(
        n,
        "lost_total, lost_events = 0, {}
         EventMng:subscribe(Event.Server.SendsLost, function(sid, stype, name, counts, cause)
           for m, k in pairs(counts) do
             lost_total = lost_total + k
             lost_events[#lost_events + 1] = name .. ' ' .. m .. ' ' .. k .. ' ' .. cause
           end
         end)
         return true",
    );
}

#[test]
fn sends_across_brief_disconnects_are_resent_once_and_none_is_lost() {
    let dir = TempDir::new("resend");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    // a_1 reaches b_1 through a proxy that the test cuts.
    let proxy_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = with_addr(&cluster, "b_1", proxy_listener.local_addr().unwrap(), "via-proxy.lua");
    let proxy = Proxy::start(proxy_listener, addr_of(&cluster, "b_1"));
    let b = Proc::run_node(&cluster, "b_1");
    assert!(b.wait_log("listening", Duration::from_secs(15)), "{}", b.log());
    let a = start(&via, "a_1");
    wait_live(&a, &["b_1"]);
    record_lost(&a);
    const N: u64 = 40_000;
    eval(
        &a,
        &format!(
            "sent = 0
             rpcco.fork(function()
               local b = to(sidOf('b_1'))
               while sent < {N} do
                 for i = 1, 200 do b.note(1, {{}}) end
                 sent = sent + 200
                 rpcco.sleep(0.002)
               end
             end)
             return true"
        ),
    );
    let mut cuts = 0;
    while eval(&a, "return sent").parse::<u64>().unwrap() < N && cuts < 10 {
        std::thread::sleep(Duration::from_millis(250));
        proxy.cut();
        cuts += 1;
    }
    assert!(cuts >= 2, "the stream ended before two cuts ({cuts})");
    let count = || {
        a.eval("return to(sidOf('b_1')).count()", Duration::from_secs(10))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(30), || count() == Some(N)),
        "b_1 handled {:?} of {N} sends after {cuts} cuts; lost: {}\n{}",
        count(),
        eval(&a, "return table.concat(lost_events, '; ')"),
        b.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), Some(N), "duplicates were handled");
    assert_eq!(eval(&a, "return lost_total"), "0");
    a.shutdown();
}

#[test]
fn sends_to_a_frozen_peer_are_reported_by_method_and_a_full_queue_is_busy() {
    let dir = TempDir::new("frozen");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2)],
        "liveness = 2, verify_timeout = 1, max_queue = 1000000,",
    );
    let b = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    record_lost(&a);
    // 1,001 per note: n = 1 plus 1,000 rids (about 9 KB each)
    eval(
        &a,
        "rids = {} for i = 1, 1000 do rids[i] = 1000000000 + i end return true",
    );
    eval(&a, "for i = 1, 10 do to(sidOf('b_1')).note(1, rids) end return true");
    assert!(wait_until(Duration::from_secs(10), || eval(
        &a,
        "return to(sidOf('b_1')).count()"
    ) == "10010"));
    // the acknowledgement of those goes out 10 ms after they were handled
    std::thread::sleep(Duration::from_millis(300));
    b.signal(libc::SIGSTOP);
    eval(
        &a,
        "accepted, refusals = 0, {}
         for i = 1, 300 do
           local ok, e = pcall(to(sidOf('b_1')).note, 1, rids)
           if ok then accepted = accepted + 1 else refusals[#refusals + 1] = tostring(e) end
         end
         return true",
    );
    let accepted: u64 = eval(&a, "return accepted").parse().unwrap();
    let refusals = eval(&a, "return table.concat(refusals, '\\n')");
    assert!(accepted > 0 && accepted < 300, "accepted {accepted}");
    assert!(
        refusals.lines().all(|e| e.contains("busy: b_1")),
        "a full queue is busy, not node down: {refusals}"
    );
    // Liveness drops the connection, the next attempt cannot verify: every
    // accepted send is reported, by method.
    assert!(
        wait_until(Duration::from_secs(15), || eval(&a, "return lost_total")
            == accepted.to_string()),
        "reported {} of {accepted}: {}",
        eval(&a, "return lost_total"),
        eval(&a, "return table.concat(lost_events, '; ')")
    );
    let events = eval(&a, "return table.concat(lost_events, '; ')");
    assert!(events.starts_with(&format!("b_1 Echo.note {accepted} ")), "{events}");
    b.signal(libc::SIGCONT);
    // What b_1 may still have handled from its socket after waking is among
    // the reported ones ("may or may not have been handled"), never more.
    assert!(wait_until(Duration::from_secs(15), || live(&a, "b_1")));
    let after: u64 = eval(&a, "return to(sidOf('b_1')).count()").parse().unwrap();
    assert!(after >= 10_010 && (after - 10_010) / 1001 <= accepted, "{after}");
    a.shutdown();
}

#[test]
fn a_node_resumed_after_sigstop_reads_what_waits_before_judging_liveness() {
    let dir = TempDir::new("resume");
    // a_1 judges liveness at 2 s; b_1 (its own file) at 30 s, so only a_1
    // can wrongly declare the other silent.
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "liveness = 2,");
    let text = std::fs::read_to_string(&cluster).unwrap();
    let patient = cluster.with_file_name("patient.lua");
    std::fs::write(&patient, text.replace("liveness = 2,", "liveness = 30,")).unwrap();
    let a = Proc::run_node(&cluster, "a_1");
    let b = start(&patient, "b_1");
    wait_live(&b, &["a_1"]);
    record_offline(&b);
    eval(
        &b,
        "timer.every(0.05, function() to(sidOf('a_1')).note(1, {}) end) return true",
    );
    std::thread::sleep(Duration::from_millis(500));
    a.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    a.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));
    let log = a.log();
    assert!(!log.contains("no traffic for"), "a_1 judged a peer silent:\n{log}");
    assert!(!log.contains("lost connection"), "{log}");
    assert_eq!(offline_seen(&b), "", "b_1 saw a_1 go offline");
    let n: u64 = eval(&b, "return to(sidOf('a_1')).count()").parse().unwrap();
    assert!(n > 40, "a_1 handled {n} notes");
    b.shutdown();
}

#[test]
fn loads_travel_over_node_links_without_zookeeper() {
    let dir = TempDir::new("load");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    wait_live(&b, &["a_1"]);
    eval(&a, "router.setLoad(42) return true");
    assert!(
        wait_until(Duration::from_secs(5), || eval(
            &b,
            "return router.node(sidOf('a_1')).load"
        ) == "42"),
        "b_1 reads a_1's load"
    );
    let listed = eval(
        &b,
        "for _, n in ipairs(router.nodes()) do if n.name == 'a_1' then return n.load end end",
    );
    assert_eq!(listed, "42", "router.nodes() entries carry the load");
    eval(&a, "router.setLoad(7) return true");
    assert!(wait_until(Duration::from_secs(5), || eval(
        &b,
        "return router.node(sidOf('a_1')).load"
    ) == "7"));
    a.shutdown();
    b.shutdown();
}

#[test]
fn sends_refused_by_a_stopping_node_are_reported_by_their_sender() {
    let dir = TempDir::new("stopping");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "stop_grace = 1,");
    let mut b = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    record_lost(&a);
    // a call in flight keeps b_1 in its graceful stop for a while
    eval(
        &a,
        "rpcco.fork(function() pcall(to(sidOf('b_1')).slow, 0.8) end) return true",
    );
    std::thread::sleep(Duration::from_millis(100));
    b.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || eval(
            &a,
            "local ok, e = pcall(to(sidOf('b_1')).echo, 'x', 1) return tostring(e)"
        )
        .contains("stopping")),
        "b_1 did not start stopping"
    );
    eval(&a, "for i = 1, 50 do to(sidOf('b_1')).note(1, {}) end return true");
    assert!(b.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    assert!(
        wait_until(Duration::from_secs(10), || eval(&a, "return lost_total") == "50"),
        "reported {}: {}",
        eval(&a, "return lost_total"),
        eval(&a, "return table.concat(lost_events, '; ')")
    );
    a.shutdown();
}
