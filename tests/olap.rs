//! The Olap server type (seed 000): a node that joins the cluster only when
//! its script calls `cluster.join()`, on both topologies.

mod common;

use std::time::Duration;

use common::*;

fn olap_joins_only_when_its_script_asks(topo: Topo) {
    let dir = TempDir::new("olap");
    let cluster = write_cluster_on(
        &dir.0,
        &[("a_1", "A", 1), ("o_1", "Olap", 5)],
        "  call_timeout = 3,",
        topo,
    );
    let _routers = start_routers(&cluster, topo);
    let a = start(&cluster, "a_1");
    let o = start(&cluster, "o_1");
    // running its script, but not in the cluster: nobody sees it, it sees
    // nobody, and calls to it fail as to a node that is not there
    std::thread::sleep(Duration::from_millis(500));
    assert!(!live(&a, "o_1"));
    assert!(!live(&o, "a_1"));
    assert_eq!(
        eval(
            &a,
            "return rpcco.errkind(select(2, pcall(to(sidOf('o_1')).echo, 'x', 1)))"
        ),
        "node down"
    );
    // its own work runs meanwhile (a call to itself)
    assert_eq!(eval(&o, "return to(sidOf('o_1')).echo('alone', 1)"), "alone\t1");
    assert_eq!(eval(&o, "return require('cluster').join()"), "true");
    wait_live(&a, &["o_1"]);
    wait_live(&o, &["a_1"]);
    assert_eq!(eval(&o, "return to(sidOf('a_1')).echo('joined', 2)"), "joined\t2");
    assert_eq!(
        eval(&a, "return to(sidOf('o_1')).echo('hello olap', 3)"),
        "hello olap\t3"
    );
    assert_eq!(eval(&o, "return require('cluster').join()"), "false");
    // every other node is in the cluster from the start
    assert_eq!(eval(&a, "return require('cluster').join()"), "false");
}

#[test]
fn olap_joins_only_when_its_script_asks_mesh() {
    olap_joins_only_when_its_script_asks(Topo::Mesh);
}

#[test]
fn olap_joins_only_when_its_script_asks_through_routers() {
    olap_joins_only_when_its_script_asks(Topo::Router);
}
