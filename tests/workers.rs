//! Nodes sharing worker threads (`luahost up --threads W`): placement, calls
//! between nodes of one worker, and what a busy handler does to the other
//! nodes of its worker.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use luahost::cluster::LocalCluster;
use luahost::runtime::Workers;

fn pool_cluster(tag: &str, workers: usize, extra_node: &str) -> (TempDir, LocalCluster) {
    let dir = TempDir::new(tag);
    let file = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)],
        "liveness = 4,",
    );
    if !extra_node.is_empty() {
        // e.g. place c_1 with `thread = 1`
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.replace("    c_1 = { ", &format!("    c_1 = {{ {extra_node}, "));
        std::fs::write(&file, text).unwrap();
    }
    let config = Arc::new(luahost::ClusterConfig::load(&file).unwrap());
    let opts = luahost::NodeOptions {
        pool: Some(Workers::new(workers).unwrap()),
        ..Default::default()
    };
    let c = LocalCluster::start_opts(config, &[], opts).unwrap();
    (dir, c)
}

#[test]
fn nodes_are_dealt_out_to_workers_and_thread_k_places_one() {
    let (_d, c) = pool_cluster("workers-place", 2, "");
    let w: Vec<Option<usize>> = ["a_1", "b_1", "c_1"]
        .iter()
        .map(|n| c.node(n).unwrap().worker())
        .collect();
    assert_eq!(w, vec![Some(0), Some(1), Some(0)], "dealt out in name order");
    drop(c);
    let (_d, c) = pool_cluster("workers-place-k", 2, "thread = 1");
    assert_eq!(c.node("c_1").unwrap().worker(), Some(1));
    // a node started alone has a thread of its own
    let dir = TempDir::new("workers-own");
    let file = write_cluster(&dir.0, &[("x_1", "A", 9)], "");
    let x = start(&file, "x_1");
    assert_eq!(x.worker(), None);
}

#[test]
fn nodes_of_one_worker_call_each_other_and_a_busy_handler_only_delays_them() {
    let (_d, c) = pool_cluster("workers-busy", 1, "");
    let (a, b) = (c.node("a_1").unwrap(), c.node("b_1").unwrap());
    assert_eq!(b.worker(), Some(0));
    wait_live(b, &["a_1", "c_1"]);
    wait_live(a, &["b_1", "c_1"]);
    // calls between nodes of the one worker
    assert_eq!(eval(b, "return to(sidOf('c_1')).echo('hi', 1)"), "hi\t1");
    assert_eq!(eval(a, "return to(sidOf('b_1')).echo('yo', 2)"), "yo\t2");
    record_offline(b);
    record_offline(a);
    // a_1's Lua keeps the worker busy for 1 s; meanwhile b_1 calls c_1
    std::thread::scope(|s| {
        let busy = s.spawn(|| eval(a, "local t = os.clock() while os.clock() - t < 1 do end return 'done'"));
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let r = eval(b, "return to(sidOf('c_1')).echo('late', 3)");
        let took = t0.elapsed();
        assert_eq!(r, "late\t3", "the call between the other nodes completed");
        assert!(
            took >= Duration::from_millis(500),
            "it waited for the busy handler: {took:?}"
        );
        assert!(
            took < Duration::from_secs(4),
            "but not for the liveness bound: {took:?}"
        );
        assert_eq!(busy.join().unwrap(), "done");
    });
    // nobody was declared down by the stall
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(offline_seen(b), "");
    assert_eq!(offline_seen(a), "");
    assert_eq!(eval(b, "return to(sidOf('a_1')).echo('after', 4)"), "after\t4");
}

#[test]
fn calls_between_nodes_of_two_workers_lose_no_wake_up_with_the_hand_off_on() {
    let dir = TempDir::new("workers-handoff");
    let file = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "liveness = 4,");
    let config = Arc::new(luahost::ClusterConfig::load(&file).unwrap());
    let pool = Workers::with_spin(2, Duration::from_micros(200)).unwrap();
    let opts = luahost::NodeOptions {
        pool: Some(pool.clone()),
        ..Default::default()
    };
    let c = LocalCluster::start_opts(config, &[], opts).unwrap();
    let (a, b) = (c.node("a_1").unwrap(), c.node("b_1").unwrap());
    assert_eq!((a.worker(), b.worker()), (Some(0), Some(1)));
    wait_live(a, &["b_1"]);
    wait_live(b, &["a_1"]);
    let before = pool.handoffs();
    // 2000 calls one after the other: each request and each reply crosses
    // workers, and the receiving worker is idle (spinning) when it arrives
    let r = eval(
        a,
        "local p = to(sidOf('b_1')) local n = 0 \
         for i = 1, 2000 do local s, k = p.echo('x', i) if k == i then n = n + 1 end end \
         return n",
    );
    assert_eq!(r, "2000", "every call answered, in order");
    // How many went through the hand-off is printed, not asserted: it is
    // bimodal (nearly all, or none when the spins keep ending just before
    // the next message arrives: docs/performance.md, "Hand-off between
    // workers"). What must hold either way is above: no wake-up is lost.
    let taken = pool.handoffs() - before;
    eprintln!("{taken} of 4000 messages were handed over without a wake-up");
}
