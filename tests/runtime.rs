//! The node runtime and the Lua programming model, end to end: real nodes,
//! real TCP on 127.0.0.1, real `luahost` processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use luahost::NodeHandle;

// The scenarios below run on both topologies with the same assertions: a
// mesh, and through two Routers (`topology = "router"`).
macro_rules! on_both_topologies {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn mesh() {
                super::$name(super::Topo::Mesh)
            }
            #[test]
            fn router() {
                super::$name(super::Topo::Router)
            }
        }
    )*};
}

on_both_topologies!(
    in_process_cluster_delivers_ghost_sends_and_calls,
    separate_processes_deliver_sends_calls_and_nested_calls,
    calls_to_absent_nodes_fail_fast_with_distinct_errors,
    wrong_argument_types_raise_at_the_call_site_and_send_nothing,
    router_moves_only_the_keys_of_a_server_that_left,
    online_and_offline_events_reach_lua,
);

fn eval_err(n: &NodeHandle, code: &str) -> String {
    match n.eval(code, EVAL) {
        Ok(v) => panic!("expected an error from {code}, got {v}"),
        Err(e) => e.to_string(),
    }
}

fn in_process_cluster_delivers_ghost_sends_and_calls(topo: Topo) {
    let dir = TempDir::new("inproc");
    let cluster = write_cluster_on(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "", topo);
    let _routers = start_routers(&cluster, topo);
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    // a call with results through the ghost mailbox fm:b(sid)
    assert_eq!(
        eval(
            &a,
            "local e = base.global('Echo'); return e:b(sidOf('b_1')).echo('hello', 12345)"
        ),
        "hello\t12345"
    );
    // a one-way send through the ghost mailbox, with a typed array argument
    eval(
        &a,
        "local e = base.global('Echo'); e:b(sidOf('b_1')).note(3, rpctype.Types.array.build('int48', {1, 2})); return true",
    );
    assert!(wait_until(Duration::from_secs(10), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "5"));
    // a call to this node itself takes the same path
    assert_eq!(eval(&a, "return to(sidOf('a_1')).echo('me', -1)"), "me\t-1");
    // structs, maps, bytes and a 1 MiB argument
    assert_eq!(
        eval(
            &a,
            "return to(sidOf('b_1')).sum({{k='x', v=2}, {k='y', v=3}}, {a=10, b=20})"
        ),
        "35"
    );
    assert_eq!(
        eval(&a, "local n, b = to(sidOf('b_1')).blob(string.rep('\\0\\1', 512*1024)); return n, #b, b == string.rep('\\0\\1', 512*1024)"),
        "1048576\t1048576\ttrue"
    );
    // System.ping is served by every node
    assert_eq!(
        eval(
            &a,
            "return rpcstub.mailbox(rpcdef.rpcStaticServer.System, sidOf('b_1'), 0).ping(77)"
        ),
        "77"
    );
    b.shutdown();
    a.shutdown();
}

fn separate_processes_deliver_sends_calls_and_nested_calls(topo: Topo) {
    let dir = TempDir::new("procs");
    let cluster = write_cluster_on(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)], "", topo);
    let _routers = start_routers(&cluster, topo);
    let pb = Proc::run_node(&cluster, "b_1");
    let pc = Proc::run_node(&cluster, "c_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1", "c_1"]);
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('over tcp', 42)"), "over tcp\t42");
    eval(&a, "to(sidOf('c_1')).note(7, {}) return true");
    assert!(wait_until(Duration::from_secs(10), || eval(
        &a,
        "return to(sidOf('c_1')).count()"
    ) == "7"));
    // a -> b -> c -> a: each hop is a call made while serving a call, and the
    // last hop comes back to the node that is waiting for the first.
    assert_eq!(
        eval(&a, "return to(sidOf('b_1')).nest({sidOf('c_1'), sidOf('a_1')})"),
        "b_1>c_1>a_1"
    );
    // a Lua error in a remote handler reaches the caller as a remote error
    // with its message and traceback, and is logged on the remote side
    let e = eval(
        &a,
        "local ok, e = pcall(function() return to(sidOf('b_1')).fail('boom 42') end) return tostring(e)",
    );
    assert!(e.contains("remote error: b_1"), "{e}");
    assert!(e.contains("boom 42"), "{e}");
    assert!(e.contains("stack traceback"), "{e}");
    assert!(pb.wait_log("Echo.fail failed", Duration::from_secs(5)), "{}", pb.log());
    assert!(pb.log().contains("boom 42"));
    // a result that does not match its declared type is refused, not delivered
    let e = eval(
        &a,
        "local ok, e = pcall(function() return to(sidOf('b_1')).badresult() end) return tostring(e)",
    );
    assert!(e.contains("remote error") && e.contains("out of range for int8"), "{e}");
    drop(pc);
    drop(pb);
    a.shutdown();
}

fn calls_to_absent_nodes_fail_fast_with_distinct_errors(topo: Topo) {
    let dir = TempDir::new("absent");
    let cluster = write_cluster_on(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)],
        "call_timeout = 3,",
        topo,
    );
    let _routers = start_routers(&cluster, topo);
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    // c_1 is in the cluster file but not running
    let t = Instant::now();
    let e = eval(
        &a,
        "local ok, e = pcall(function() return to(sidOf('c_1')).echo('x', 1) end) return tostring(e)",
    );
    assert!(e.contains("node down: c_1"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert_eq!(
        eval(
            &a,
            "return rpcco.errkind(select(2, pcall(to(sidOf('c_1')).echo, 'x', 1)))"
        ),
        "node down"
    );
    // sid 999 is not in the cluster at all
    let e = eval(&a, "local ok, e = pcall(function() return rpcstub.mailbox(rpcdef.rpcB.Echo, 999, 1).echo('x', 1) end) return tostring(e)");
    assert!(e.contains("no such node: 999"), "{e}");
    // a handler slower than the call's timeout
    let e = eval(
        &a,
        "local ok, e = pcall(rpcco.timeout, 0.3, function() return to(sidOf('b_1')).slow(2) end) return tostring(e)",
    );
    assert!(e.contains("timeout: Echo.slow to b_1"), "{e}");
    // ... and the late reply does not disturb the next call
    std::thread::sleep(Duration::from_millis(1900));
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('after', 2)"), "after\t2");
    // the error text starts with its kind; the caller's line is in the traceback
    let e = eval_err(&a, "local r = to(sidOf('c_1')).echo('x', 1) return r");
    assert!(e.starts_with("node down: c_1") && e.contains("eval:1:"), "{e}");
    // a call outside a coroutine is refused with a clear message (the main
    // chunk of a node is not a coroutine); eval runs in one, so fork is fine
    assert_eq!(
        eval(
            &a,
            "local r; rpcco.fork(function() r = to(sidOf('a_1')).echo('f', 1) end) rpcco.sleep(0.2) return r"
        ),
        "f"
    );
    b.shutdown();
    a.shutdown();
}

fn wrong_argument_types_raise_at_the_call_site_and_send_nothing(topo: Topo) {
    let dir = TempDir::new("types");
    let cluster = write_cluster_on(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "", topo);
    let _routers = start_routers(&cluster, topo);
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    let cases = [
        ("int48", "140737488355327", true),
        ("int48", "140737488355328", false),
        ("int48", "-140737488355328", true),
        ("int48", "-140737488355329", false),
        ("int8", "127", true),
        ("int8", "128", false),
        ("uint8", "-1", false),
        ("uint32", "4294967295", true),
        ("uint32", "4294967296", false),
        ("int32", "1.5", false),
        ("int32", "2.0", true),
        ("int64", "'1'", false),
        ("string", "5", false),
        ("string", "'x'", true),
        ("bool", "0", false),
        ("double", "0.25", true),
        ("float", "'1'", false),
        ("array<int48>", "{1, 2, 3}", true),
        ("array<int48>", "{1, 'x'}", false),
        ("map<string,int32>", "{a = 1}", true),
        ("map<string,int32>", "{[1] = 1}", false),
        ("Pair", "{k = 'a', v = 1}", true),
        ("Pair", "{k = 'a'}", false),
        ("Pair?", "nil", true),
        ("nosuchtype", "1", false),
    ];
    for (ty, val, ok) in cases {
        let got = eval(&a, &format!("return (rpctype.check({ty:?}, {val})) == true"));
        assert_eq!(got, ok.to_string(), "rpctype.check({ty}, {val})");
    }
    assert_eq!(eval(&a, "return #rpctype.Types.array.build('int48', {1, 2})"), "2");
    let e = eval(
        &a,
        "local ok, e = pcall(rpctype.Types.array.build, 'int48', {1, 2^47}) return e",
    );
    assert!(e.contains("out of range for int48"), "{e}");
    // a wrong argument at the call site names method and argument, and nothing is sent
    let e = eval(
        &a,
        "local ok, e = pcall(function() to(sidOf('b_1')).note(1, {1, 1 << 47}) end) return e",
    );
    assert!(
        e.contains("Echo.note") && e.contains("'rids'") && e.contains("[2]") && e.contains("int48"),
        "{e}"
    );
    let e = eval(
        &a,
        "local ok, e = pcall(function() return to(sidOf('b_1')).echo(5, 1) end) return e",
    );
    assert!(
        e.contains("bad argument #1 's' to Echo.echo") && e.contains("expected string"),
        "{e}"
    );
    eval(&a, "to(sidOf('b_1')).note(1, {}) return true");
    assert!(wait_until(Duration::from_secs(5), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "1"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        eval(&b, "return base.global('Echo'):count()"),
        "1",
        "the refused send must not arrive"
    );
    b.shutdown();
    a.shutdown();
}

#[test]
fn schema_ids_and_digests_are_stable() {
    let dir = TempDir::new("digest");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let probe = "return string.format('%08x %08x %d %d', rpcdef.Digi, rpcdef.ClientDigi, rpcdef.rpcB.Echo.echo.id, rpcdef.rpcStaticServer.System.ping.id)";
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    let first = eval(&a, probe);
    assert_eq!(first, eval(&b, probe), "two nodes, same schema");
    a.shutdown();
    let a = start(&cluster, "a_1");
    assert_eq!(first, eval(&a, probe), "two runs, same schema");
    // a changed schema changes the digest; restoring it restores the digest
    let changed = eval(
        &a,
        "local def = require 'entitydef'
         def.Entity.Echo.A.extra = { args = { {'x', 'int32'} } }
         rpcdef.init(def); local d1 = rpcdef.Digi
         def.Entity.Echo.A.extra = nil
         rpcdef.init(def)
         return string.format('%08x %08x', d1, rpcdef.Digi)",
    );
    let mut parts = changed.split(' ');
    let (d1, d2) = (parts.next().unwrap(), parts.next().unwrap());
    assert_ne!(d1, &first[..8]);
    assert_eq!(d2, &first[..8]);
    b.shutdown();
    a.shutdown();
}

fn router_moves_only_the_keys_of_a_server_that_left(topo: Topo) {
    let dir = TempDir::new("ring");
    let cluster = write_cluster_on(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 21), ("b_2", "B", 22), ("b_3", "B", 23)],
        "",
        topo,
    );
    let _routers = start_routers(&cluster, topo);
    let a = start(&cluster, "a_1");
    let b1 = start(&cluster, "b_1");
    let b2 = start(&cluster, "b_2");
    let b3 = start(&cluster, "b_3");
    wait_live(&a, &["b_1", "b_2", "b_3"]);
    let routes =
        "local t = {} for k = 1, 3000 do t[#t+1] = router.route(ServerType.B, k) end return table.concat(t, ',')";
    let before: Vec<String> = eval(&a, routes).split(',').map(String::from).collect();
    assert!(before.iter().any(|s| s == "22"));
    b2.shutdown();
    assert!(wait_until(Duration::from_secs(10), || eval(
        &a,
        "return router.isLive(22)"
    ) == "false"));
    let after: Vec<String> = eval(&a, routes).split(',').map(String::from).collect();
    for (k, (x, y)) in before.iter().zip(&after).enumerate() {
        if x != "22" {
            assert_eq!(x, y, "key {} moved from {x} to {y}", k + 1);
        } else {
            assert_ne!(y, "22");
        }
    }
    // Offline was published to Lua
    assert_eq!(eval(&a, "return #router.list(ServerType.B)"), "2");
    b1.shutdown();
    b3.shutdown();
    a.shutdown();
}

fn online_and_offline_events_reach_lua(topo: Topo) {
    let dir = TempDir::new("events");
    let cluster = write_cluster_on(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "", topo);
    let _routers = start_routers(&cluster, topo);
    let a = start(&cluster, "a_1");
    eval(
        &a,
        "seen = {} EventMng:subscribe(Event.Server.Online, function(sid, t, name) if name ~= conf.NodeName and t ~= 'Router' then seen[#seen+1] = 'on:'..name end end)
         EventMng:subscribe(Event.Server.Offline, function(sid, t, name) if t ~= 'Router' then seen[#seen+1] = 'off:'..name end end) return true",
    );
    let b = start(&cluster, "b_1");
    let seen = || eval(&a, "return table.concat(seen, ' ')");
    assert!(wait_until(Duration::from_secs(10), || seen() == "on:b_1"), "{}", seen());
    b.shutdown();
    assert!(wait_until(Duration::from_secs(10), || eval(
        &a,
        "return table.concat(seen, ' ')"
    ) == "on:b_1 off:b_1"));
    a.shutdown();
}

#[test]
fn timers_sleep_and_wait_wakeup() {
    let dir = TempDir::new("timers");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1)], "");
    let a = start(&cluster, "a_1");
    eval(
        &a,
        "fired = {}
         timer.after(0.05, function(x) fired[#fired+1] = 'after:'..x end, 'x')
         ticks = 0
         tick = timer.every(0.02, function() ticks = ticks + 1 if ticks == 3 then timer.cancel(tick) end end)
         cancelled = timer.after(0.05, function() fired[#fired+1] = 'cancelled one fired' end)
         timer.cancel(cancelled)
         return true",
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(eval(&a, "return table.concat(fired, ',')"), "after:x");
    assert_eq!(eval(&a, "return ticks"), "3", "every stops after cancel");
    // sleep suspends only its coroutine; wait/wakeup hand over between coroutines
    assert_eq!(
        eval(
            &a,
            "local order = {}
             local waiter = rpcco.fork(function() order[#order+1] = 'wait' rpcco.wait() order[#order+1] = 'woken' end)
             rpcco.fork(function() rpcco.sleep(0.05) order[#order+1] = 'wake' rpcco.wakeup(waiter) end)
             order[#order+1] = 'forked'
             rpcco.sleep(0.2)
             return table.concat(order, ',')",
        ),
        "wait,forked,wake,woken"
    );
    // a wakeup that comes before the wait is not lost
    assert_eq!(
        eval(
            &a,
            "local done = false
             local co = rpcco.fork(function() rpcco.sleep(0.05) rpcco.wait() done = true end)
             rpcco.wakeup(co)
             rpcco.sleep(0.2)
             return tostring(done)",
        ),
        "true"
    );
    // a timer callback that raises is logged and does not stop the node
    eval(&a, "timer.after(0, function() error('timer boom') end) return true");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(eval(&a, "return 1 + 1"), "2");
    a.shutdown();
}
