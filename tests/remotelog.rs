//! RemoteLog: every node's Lua log lines also reach the cluster's log node
//! (`remote_log = "log_1"`), written there with the node's name, in order
//! per node, on both topologies; lines written while the log node is away
//! are kept up to a bound and the rest counted.

mod common;

use std::time::Duration;

use common::*;

fn lines_arrive_in_order_per_node(topo: Topo) {
    let dir = TempDir::new("remotelog");
    let cluster = write_cluster_on(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("log_1", "C", 3)],
        "  remote_log = \"log_1\",",
        topo,
    );
    let _routers = start_routers(&cluster, topo);
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    // while the log node is away: the first lines are kept (1024 with those
    // of base.init), the rest counted
    eval(&a, "for i = 0, 1099 do INFO('early %d', i) end return true");
    let log = Proc::run_node(&cluster, "log_1");
    wait_live(&a, &["log_1"]);
    // the kept lines, then a note where the gap is
    assert!(
        log.wait_log("lines dropped here", Duration::from_secs(20)),
        "{}",
        log.log()
    );
    eval(&a, "INFO('after the gap') return true");
    let code = |who: &str| format!("for i = 1, 300 do INFO('{who}-seq %d', i) end return true");
    eval(&a, &code("a"));
    eval(&b, &code("b"));
    assert!(
        log.wait_log("[b_1] b-seq 300", Duration::from_secs(20))
            && log.wait_log("[a_1] a-seq 300", Duration::from_secs(5)),
        "{}",
        log.log()
    );
    let text = log.log();
    for who in ["a", "b"] {
        let seen: Vec<u32> = text
            .lines()
            .filter_map(|l| l.split(&format!("[{who}_1] {who}-seq ")).nth(1))
            .map(|n| n.trim().parse().unwrap())
            .collect();
        assert_eq!(
            seen,
            (1..=300).collect::<Vec<_>>(),
            "lines of {who}_1 out of order or missing"
        );
    }
    let early: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split("[a_1] early ").nth(1))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let kept = early.len() as u32;
    assert!(kept > 1000 && kept < 1024, "{kept} early lines");
    assert_eq!(early, (0..kept).collect::<Vec<_>>());
    // the early lines not kept, and any other line a_1 wrote meanwhile
    let note = "[a_1] remote log: ";
    let dropped: u32 = text
        .split(note)
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no note of dropped lines in\n{text}"));
    assert!(
        (1100 - kept..1100 - kept + 10).contains(&dropped),
        "{dropped} dropped, {kept} kept"
    );
    let pos = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no {needle} in\n{text}"));
    assert!(pos(&format!("[a_1] early {}", kept - 1)) < pos(note));
    assert!(pos(note) < pos("[a_1] after the gap"));
    assert!(pos("[a_1] after the gap") < pos("[a_1] a-seq 1"));
}

#[test]
fn remote_log_lines_arrive_in_order_per_node_mesh() {
    lines_arrive_in_order_per_node(Topo::Mesh);
}

#[test]
fn remote_log_lines_arrive_in_order_per_node_through_routers() {
    lines_arrive_in_order_per_node(Topo::Router);
}
