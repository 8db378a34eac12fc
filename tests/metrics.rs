//! Metrics endpoints as Prometheus sees them: real nodes with `metrics`
//! addresses on loopback ports, scraped over HTTP and read with a
//! Prometheus text parser (`prometheus-parse`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::prom::{exchange, scrape, value};
use common::*;
use prometheus_parse::{Scrape, Value};

/// Gives each named node of the cluster file a `metrics` address on a
/// fresh port; returns the addresses in the same order.
fn add_metrics(cluster: &Path, names: &[&str]) -> Vec<SocketAddr> {
    let mut text = std::fs::read_to_string(cluster).unwrap();
    let held: Vec<std::net::TcpListener> = names
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = held.iter().map(|l| l.local_addr().unwrap()).collect();
    for (name, a) in names.iter().zip(&addrs) {
        let entry = format!("    {name} = {{ ");
        assert!(text.contains(&entry), "no node {name} in {text}");
        text = text.replace(&entry, &format!("{entry}metrics = \"{a}\", "));
    }
    std::fs::write(cluster, text).unwrap();
    addrs
}

/// Scrapes `addr` until `metric{labels}` is `want` (up to 10 s).
fn wait_value(addr: SocketAddr, metric: &str, labels: &[(&str, &str)], want: f64) -> Scrape {
    prom::wait_value(addr, metric, labels, want, Duration::from_secs(10))
}

#[test]
fn a_scrape_counts_calls_sends_and_errors_by_method_and_kind() {
    let dir = TempDir::new("metrics");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let m = add_metrics(&cluster, &["a_1", "b_1"]);
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    wait_live(&b, &["a_1"]);
    eval(
        &a,
        r#"
        local b = to(sidOf('b_1'))
        for i = 1, 3 do assert(b.echo('x', i) == 'x') end
        b.note(1, {}) b.note(2, {})
        assert(rpcco.errkind(select(2, pcall(b.fail, 'boom'))) == 'remote error')
        assert(not pcall(b.echo, 5, 'not a number'))
        assert(rpcco.errkind(select(2, pcall(to(999).echo, 'x', 1))) == 'no such node')
        local ok, e = pcall(rpcco.timeout, 0.05, b.slow, 2)
        assert(not ok and rpcco.errkind(e) == 'timeout', e)
        return true"#,
    );

    let me = [("node", "a_1"), ("type", "A")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        me.iter().chain(extra).copied().collect()
    };
    let s = scrape(m[0]);
    assert_eq!(
        value(&s, "luahost_calls_total", &with(&[("method", "Echo.echo")])),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "luahost_calls_total", &with(&[("method", "Echo.fail")])),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "luahost_calls_total", &with(&[("method", "Echo.slow")])),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "luahost_sends_total", &with(&[("method", "Echo.note")])),
        Some(2.0)
    );
    for (kind, n) in [
        ("remote error", 1.0),
        ("call site", 1.0),
        ("no such node", 1.0),
        ("timeout", 1.0),
        ("busy", 0.0),
        ("node down", 0.0),
    ] {
        assert_eq!(
            value(&s, "luahost_errors_total", &with(&[("kind", kind)])),
            Some(n),
            "errors of kind {kind}"
        );
    }
    // latency: one observation per reply (3 echo, and fail's error reply)
    assert_eq!(
        value(
            &s,
            "luahost_call_duration_seconds_count",
            &with(&[("method", "Echo.echo")])
        ),
        Some(3.0)
    );
    let hist = s
        .samples
        .iter()
        .find(|x| x.metric == "luahost_call_duration_seconds" && x.labels.get("method") == Some("Echo.echo"))
        .expect("the latency histogram of Echo.echo");
    match &hist.value {
        Value::Histogram(buckets) => {
            // cumulative: never less than the bucket below, all 3 under +Inf
            assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "{buckets:?}");
            let last = buckets.last().unwrap();
            assert!(last.less_than.is_infinite() && last.count == 3.0, "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // the late reply of the timed-out call changes nothing
    assert_eq!(
        value(
            &s,
            "luahost_call_duration_seconds_count",
            &with(&[("method", "Echo.slow")])
        ),
        None
    );

    // the handling side, with its own node and type labels
    let sb = wait_value(
        m[1],
        "luahost_handled_total",
        &[
            ("node", "b_1"),
            ("type", "B"),
            ("method", "Echo.note"),
            ("kind", "send"),
        ],
        2.0,
    );
    assert_eq!(
        value(
            &sb,
            "luahost_handled_total",
            &[("method", "Echo.echo"), ("kind", "call")]
        ),
        Some(3.0)
    );
    assert_eq!(value(&sb, "luahost_calls_total", &[]), None, "b_1 made no calls");

    // gauges, sampled about once a second
    let s = wait_value(m[0], "luahost_peers_connected", &me, 1.0);
    assert_eq!(value(&s, "luahost_peers", &me), Some(1.0));
    assert_eq!(value(&s, "luahost_mailbox_depth", &me), Some(0.0));
    assert!(value(&s, "luahost_lua_memory_bytes", &me).unwrap() > 100_000.0);
    wait_value(m[0], "luahost_connections_inbound", &me, 1.0);
    assert_eq!(value(&s, "luahost_clients", &me), None, "a_1 is not a Gate");
    a.shutdown();
    b.shutdown();
}

#[test]
fn scripts_add_counters_and_gauges_with_a_cap_on_label_sets() {
    let dir = TempDir::new("metrics-lua");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1)], "");
    let m = add_metrics(&cluster, &["a_1"]);
    let a = start(&cluster, "a_1");
    let errors = eval(
        &a,
        r#"
        local metrics = require "metrics"
        local logins = metrics.counter("game_logins", "Logins accepted", { labels = { "platform" }, max_series = 2 })
        logins:inc(1, { platform = "ios" })
        logins:inc(2, { platform = "web" })
        logins:inc({ platform = "ios" })
        -- past the cap of 2 label sets: folded into platform="_overflow"
        logins:inc(5, { platform = "tv" })
        logins:inc(7, { platform = "car" })
        local online = metrics.gauge("game_online", "Players online", { "zone" })
        online:set(42, { zone = "north" })
        online:dec(2, { zone = "north" })
        local plain = metrics.gauge("game_rooms", "Rooms open")
        plain:set(3) plain:inc()
        -- a reloaded script asks again and gets the same counter
        assert(metrics.counter("game_logins", "again", { labels = { "platform" } }) ~= nil)
        local errs = {}
        for _, f in ipairs {
            function() metrics.gauge("game_logins", "x", { "platform" }) end,
            function() metrics.counter("luahost_mine", "x") end,
            function() logins:inc(-1, { platform = "ios" }) end,
            function() logins:set(1) end,
            function() logins:inc(1, { colour = "red" }) end,
        } do
            local ok, e = pcall(f)
            errs[#errs + 1] = ok and "accepted" or tostring(e):match("metrics: ([^\n]*)")
        end
        return table.concat(errs, "|")"#,
    );
    let errs: Vec<&str> = errors.split('|').collect();
    assert!(errs[0].contains("already exists as a counter"), "{errors}");
    assert!(errs[1].contains("host's own"), "{errors}");
    assert!(errs[2].contains("can only go up"), "{errors}");
    assert!(errs[3].contains("it has inc only"), "{errors}");
    assert!(errs[4].contains("no label 'colour'"), "{errors}");

    let s = scrape(m[0]);
    let me = |k: &'static str, v: &'static str| [("node", "a_1"), ("type", "A"), (k, v)];
    assert_eq!(value(&s, "game_logins_total", &me("platform", "ios")), Some(2.0));
    assert_eq!(value(&s, "game_logins_total", &me("platform", "web")), Some(2.0));
    assert_eq!(value(&s, "game_logins_total", &me("platform", "_overflow")), Some(12.0));
    assert_eq!(value(&s, "game_logins_total", &me("platform", "tv")), None);
    assert_eq!(value(&s, "game_online", &me("zone", "north")), Some(40.0));
    assert_eq!(value(&s, "game_rooms", &[("node", "a_1"), ("type", "A")]), Some(4.0));
    a.shutdown();
}

#[test]
fn up_serves_each_node_and_a_bad_request_closes_only_its_connection() {
    let dir = TempDir::new("metrics-up");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let m = add_metrics(&cluster, &["a_1", "b_1"]);
    let up = Proc::spawn(&["up", cluster.to_str().unwrap(), "--no-watch", "--threads", "1"]);
    assert!(
        wait_until(Duration::from_secs(20), || TcpStream::connect(m[1]).is_ok()),
        "no metrics endpoint: {}",
        up.log()
    );
    // two nodes of one process, each on its own address with its labels
    wait_value(m[0], "luahost_peers_connected", &[("node", "a_1"), ("type", "A")], 1.0);
    let sb = wait_value(m[1], "luahost_peers_connected", &[("node", "b_1"), ("type", "B")], 1.0);
    assert_eq!(
        value(&sb, "luahost_peers", &[("node", "a_1")]),
        None,
        "b_1's endpoint shows b_1 only"
    );

    // a request held half-written keeps its own connection only
    let mut slow = TcpStream::connect(m[0]).unwrap();
    slow.write_all(b"GET /met").unwrap();
    let garbage = exchange(m[0], b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 Bad Request"), "{garbage}");
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(64 * 1024, b'a');
    let answer = {
        let mut s = TcpStream::connect(m[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // the endpoint may close before all of it is written
        let _ = s.write_all(&big);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    for (req, status) in [
        (&b"POST /metrics HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 405"),
        (b"GET /secrets HTTP/1.1\r\n\r\n", "HTTP/1.1 404"),
    ] {
        let a = exchange(m[0], req);
        assert!(a.starts_with(status), "{a}");
    }
    // meanwhile scrapes and the cluster carry on
    let s = scrape(m[0]);
    assert_eq!(value(&s, "luahost_peers_connected", &[("node", "a_1")]), Some(1.0));
    assert!(value(&scrape(m[1]), "luahost_lua_memory_bytes", &[("node", "b_1")]).unwrap() > 0.0);
    slow.write_all(b"rics HTTP/1.1\r\n\r\n").unwrap();
    let mut out = String::new();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    slow.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    // (the line may reach the log just after the answer reached us)
    let t0 = std::time::Instant::now();
    while !up.log().contains("bad request") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        up.log().contains("bad request"),
        "a bad request is logged: {}",
        up.log()
    );
}

#[test]
fn run_serves_its_node_and_counts_reloads() {
    let dir = TempDir::new("metrics-run");
    let scripts = copy_scripts(&dir.0);
    // at boot, 50 label sets for a metric that holds 1
    let main = scripts.join("main.lua");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str(
        r#"
local spam = require("metrics").counter("spam", "Over its cap", { labels = { "who" }, max_series = 1 })
for i = 1, 50 do spam:inc(1, { who = tostring(i) }) end
"#,
    );
    std::fs::write(&main, text).unwrap();
    let cluster = write_cluster_with(&dir.0, &scripts, &[("a_1", "A", 1)], "");
    let m = add_metrics(&cluster, &["a_1"]);
    let node = Proc::run_node(&cluster, "a_1");
    assert!(
        wait_until(Duration::from_secs(20), || TcpStream::connect(m[0]).is_ok()),
        "no metrics endpoint: {}",
        node.log()
    );
    let me = [("node", "a_1"), ("type", "A")];
    let s = scrape(m[0]);
    assert_eq!(value(&s, "luahost_reloads_total", &[("outcome", "ok")]), Some(0.0));
    assert_eq!(value(&s, "spam_total", &[("who", "1")]), Some(1.0));
    assert_eq!(value(&s, "spam_total", &[("who", "_overflow")]), Some(49.0));
    // the warning names the metric and its cap, and is rate-limited: 49
    // updates over the cap, 5 lines (the rest are counted for a summary)
    let warned = node.log().matches("metric spam already has 1 label sets").count();
    assert_eq!(warned, 5, "{}", node.log());
    // SIGHUP hot-reloads edited scripts: one edit applied, one refused
    let handlers = scripts.join("handlers.lua");
    let text = std::fs::read_to_string(&handlers).unwrap();
    std::fs::write(&handlers, text.replace("return s, n", "return s .. '!', n")).unwrap();
    node.signal(libc::SIGHUP);
    let ok = [("node", "a_1"), ("type", "A"), ("outcome", "ok")];
    wait_value(m[0], "luahost_reloads_total", &ok, 1.0);
    std::thread::sleep(Duration::from_millis(100));
    std::fs::write(&handlers, text.replace("return s, n", "return s = n")).unwrap();
    node.signal(libc::SIGHUP);
    let failed = [("node", "a_1"), ("type", "A"), ("outcome", "failed")];
    let s = wait_value(m[0], "luahost_reloads_total", &failed, 1.0);
    assert_eq!(value(&s, "luahost_reloads_total", &ok), Some(1.0));
    assert!(value(&s, "luahost_lua_memory_bytes", &me).unwrap() > 0.0);
}

#[test]
fn a_gate_shows_its_clients_and_backends_count_client_calls() {
    use luahost::client::{Client, Login, Target};
    use luahost::codec::mpack;

    let dir = TempDir::new("metrics-gate");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gate/scripts");
    let main = scripts.join("main.lua").display().to_string();
    let (tcp, mg, mh) = (free_port(), free_port(), free_port());
    let text = format!(
        "return {{\n  secret = \"gate-test-secret-0123\",\n  scripts = {{ {:?} }},\n  nodes = {{\n    gate_1 = {{ type = \"Gate\", id = 1, addr = \"127.0.0.1:{}\", main = {main:?}, metrics = \"127.0.0.1:{mg}\",\n      gate = {{ tcp = \"127.0.0.1:{tcp}\" }} }},\n    hall_1 = {{ type = \"Hall\", id = 11, addr = \"127.0.0.1:{}\", main = {main:?}, metrics = \"127.0.0.1:{mh}\" }},\n  }},\n}}\n",
        scripts.display().to_string(),
        free_port(),
        free_port(),
    );
    let file = dir.0.join("cluster.lua");
    std::fs::write(&file, text).unwrap();
    let gate = start(&file, "gate_1");
    let hall = start(&file, "hall_1");
    wait_live(&gate, &["hall_1"]);
    let (mg, mh): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{mg}").parse().unwrap(),
        format!("127.0.0.1:{mh}").parse().unwrap(),
    );
    let g = [("node", "gate_1"), ("type", "Gate")];
    wait_value(mg, "luahost_clients", &g, 0.0);

    let login = Login {
        account: "ann".into(),
        token: eval(&gate, "return gate_mod.token('ann', 600)"),
        client_digi: eval(&gate, "return rpcdef.ClientDigi").parse().unwrap(),
    };
    let cid: u32 = eval(&gate, "return rpcdef.iface('Hall', 'Player').echo.cid")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let target = Target::Tcp(format!("127.0.0.1:{tcp}").parse().unwrap());
        let client = tokio::time::timeout(Duration::from_secs(10), Client::connect(&target, None, &login, None))
            .await
            .expect("connect hung")
            .expect("login");
        let mut a = bytes::BytesMut::new();
        mpack::put_str(&mut a, b"hi");
        mpack::put_int(&mut a, 7);
        tokio::time::timeout(Duration::from_secs(10), client.call_raw(cid, 2, &a))
            .await
            .expect("call hung")
            .expect("echo through the Gate");
        client
    });
    let s = wait_value(mg, "luahost_clients", &g, 1.0);
    assert_eq!(value(&s, "luahost_client_sessions", &g), Some(1.0));
    wait_value(
        mh,
        "luahost_handled_total",
        &[("node", "hall_1"), ("method", "Player.echo"), ("kind", "client_call")],
        1.0,
    );
    // the client goes (its runtime with it, which closes its socket)
    drop(client);
    drop(rt);
    wait_value(mg, "luahost_clients", &g, 0.0);
    gate.shutdown();
    hall.shutdown();
}
