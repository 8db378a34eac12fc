//! Unit tests of the membership plans.
use super::*;

const S: Duration = Duration::from_secs(1);

fn spec(name: &str, sid: u32, port: u16) -> NodeSpec {
    NodeSpec {
        name: name.to_string(),
        stype: "Hall".to_string(),
        sid,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        main: "scripts/hall/main.lua".into(),
    }
}

fn known(s: &NodeSpec) -> Known {
    Known {
        spec: s.clone(),
        connected: true,
        missing_since: None,
    }
}

fn me() -> NodeSpec {
    spec("me", 1, 7001)
}

fn file(known: &[Known], nodes: &[NodeSpec]) -> Plan {
    from_cluster_file(&me(), known, nodes, None)
}

fn disconnect(sid: u32, name: &str, reason: Reason) -> Action {
    Action::Disconnect {
        sid,
        name: name.to_string(),
        reason,
    }
}

#[test]
fn new_nodes_are_connected_in_listing_order() {
    let (a, b) = (spec("b_node", 3, 7003), spec("a_node", 2, 7002));
    let p = file(&[known(&me())], &[me(), a.clone(), b.clone()]);
    assert_eq!(p.actions, vec![Action::Connect(a), Action::Connect(b)]);
    assert_eq!(p.added, vec!["b_node", "a_node"]);
    assert_eq!(
        p.summary(),
        "cluster file: added [b_node, a_node], removed [], changed []"
    );
}

#[test]
fn a_node_gone_from_the_file_is_disconnected_at_once() {
    let a = spec("a", 2, 7002);
    let p = file(&[known(&me()), known(&a)], &[me()]);
    assert_eq!(
        p.actions,
        vec![disconnect(2, "a", Reason::Removed(Source::ClusterFile))]
    );
    assert_eq!(p.removed, vec!["a"]);
    assert_eq!(p.summary(), "cluster file: added [], removed [a], changed []");
}

#[test]
fn reasons_read_as_the_node_down_causes_of_today() {
    assert_eq!(
        Reason::Removed(Source::ClusterFile).to_string(),
        "removed from the cluster file"
    );
    assert_eq!(
        Reason::Removed(Source::ZooKeeper).to_string(),
        "removed from the ZooKeeper"
    );
    assert_eq!(
        Reason::Changed(Source::ClusterFile).to_string(),
        "its entry in the cluster file changed"
    );
    assert_eq!(
        Reason::Changed(Source::ZooKeeper).to_string(),
        "its entry in the ZooKeeper changed"
    );
}

#[test]
fn a_new_address_is_a_reconnect() {
    let old = spec("a", 2, 7002);
    let new = spec("a", 2, 7102);
    let p = file(&[known(&old)], std::slice::from_ref(&new));
    assert_eq!(
        p.actions,
        vec![
            disconnect(2, "a", Reason::Changed(Source::ClusterFile)),
            Action::Connect(new)
        ]
    );
    assert_eq!(p.changed, vec!["a"]);
    assert!(p.added.is_empty(), "a changed node is not also listed as added");
}

#[test]
fn a_new_type_or_sid_is_a_reconnect_too() {
    let old = spec("a", 2, 7002);
    let mut typed = old.clone();
    typed.stype = "Gate".into();
    let p = file(&[known(&old)], &[typed.clone()]);
    assert_eq!(p.changed, vec!["a"]);
    assert_eq!(p.actions.last(), Some(&Action::Connect(typed)));
    let mut moved = old.clone();
    moved.sid = 9;
    let p = file(&[known(&old)], &[moved.clone()]);
    assert_eq!(
        p.actions,
        vec![
            disconnect(2, "a", Reason::Changed(Source::ClusterFile)),
            Action::Connect(moved)
        ]
    );
}

#[test]
fn a_new_main_script_changes_nothing_for_peers() {
    let old = spec("a", 2, 7002);
    let mut new = old.clone();
    new.main = "elsewhere/main.lua".into();
    let p = file(&[known(&old)], &[new]);
    assert!(p.actions.is_empty());
    assert!(p.log_summary(), "a file reload is always logged");
    assert_eq!(p.summary(), "cluster file: added [], removed [], changed []");
}

#[test]
fn this_node_is_never_removed_changed_or_added() {
    let mut moved_me = me();
    moved_me.addr = "127.0.0.1:9999".parse().unwrap();
    // missing from the file
    assert!(file(&[known(&me())], &[]).actions.is_empty());
    // changed in the file
    assert!(file(&[known(&me())], &[moved_me]).actions.is_empty());
    // not known yet, listed (ZooKeeper lists this node too)
    assert!(from_listing(&me(), &[], &[me()], S, Instant::now(), None)
        .actions
        .is_empty());
    // another name claiming this node's sid, or this name with another sid
    let p = file(&[], &[spec("impostor", 1, 7009), spec("me", 5, 7001)]);
    assert!(p.actions.is_empty());
}

#[test]
fn a_missing_peer_still_connected_is_kept_for_the_grace() {
    let t = Instant::now();
    let a = spec("a", 2, 7002);
    let p = from_listing(&me(), &[known(&a)], &[me()], 10 * S, t, None);
    assert_eq!(p.actions, vec![Action::KeepMissing { sid: 2, since: t }]);
    assert!(p.removed.is_empty());
    assert!(p.has_missing());
    assert!(!p.log_summary(), "a quiet listing is not logged");
    // later listings keep the first instant it went missing
    let mut k = known(&a);
    k.missing_since = Some(t);
    let p = from_listing(&me(), &[k.clone()], &[], 10 * S, t + 9 * S, None);
    assert_eq!(p.actions, vec![Action::KeepMissing { sid: 2, since: t }]);
    // ... until the grace has passed (at exactly the grace: gone)
    let p = from_listing(&me(), &[k], &[], 10 * S, t + 10 * S, None);
    assert_eq!(p.actions, vec![disconnect(2, "a", Reason::Removed(Source::ZooKeeper))]);
    assert_eq!(p.removed, vec!["a"]);
    assert!(!p.has_missing());
    assert_eq!(p.summary(), "ZooKeeper: added [], removed [a], changed []");
}

#[test]
fn a_missing_peer_not_connected_goes_at_once() {
    let t = Instant::now();
    let a = spec("a", 2, 7002);
    let mut k = known(&a);
    k.connected = false;
    let p = from_listing(&me(), &[k.clone()], &[], 10 * S, t, None);
    assert_eq!(p.actions, vec![disconnect(2, "a", Reason::Removed(Source::ZooKeeper))]);
    // even one that was in its grace and has just lost its connection
    k.missing_since = Some(t);
    let p = from_listing(&me(), &[k], &[], 10 * S, t + S, None);
    assert_eq!(p.removed, vec!["a"]);
}

#[test]
fn without_grace_a_connected_peer_goes_at_once() {
    let a = spec("a", 2, 7002);
    let p = file(&[known(&a)], &[]);
    assert_eq!(p.removed, vec!["a"]);
}

#[test]
fn a_missing_peer_listed_again_is_no_longer_missing() {
    let t = Instant::now();
    let a = spec("a", 2, 7002);
    let mut k = known(&a);
    k.missing_since = Some(t);
    let p = from_listing(&me(), &[k], std::slice::from_ref(&a), 10 * S, t + S, None);
    assert_eq!(p.actions, vec![Action::Listed { sid: 2 }]);
    assert!(!p.has_missing());
    // a peer that was never missing needs nothing
    let p = from_listing(&me(), &[known(&a)], &[a], 10 * S, t, None);
    assert!(p.actions.is_empty());
}

#[test]
fn a_missing_peer_listed_again_with_a_new_address_is_reconnected() {
    let t = Instant::now();
    let a = spec("a", 2, 7002);
    let moved = spec("a", 2, 7102);
    let mut k = known(&a);
    k.missing_since = Some(t);
    let p = from_listing(&me(), &[k], std::slice::from_ref(&moved), 10 * S, t, None);
    assert_eq!(
        p.actions,
        vec![
            disconnect(2, "a", Reason::Changed(Source::ZooKeeper)),
            Action::Connect(moved)
        ]
    );
}

#[test]
fn unknown_types_are_ignored_once_registered() {
    let mut g = spec("g", 4, 7004);
    g.stype = "Nope".into();
    let h = spec("h", 5, 7005);
    let types = |t: &str| t == "Hall";
    let p = from_cluster_file(&me(), &[], &[g.clone(), h.clone()], Some(&types));
    assert_eq!(
        p.actions,
        vec![Action::IgnoreUnknownType(g.clone()), Action::Connect(h.clone())]
    );
    assert_eq!(p.added, vec!["h"]);
    assert_eq!(
        p.unknown_type(&g),
        "node g (cluster file) has type 'Nope', which ServerType of the schema does not define; ignored"
    );
    // before registration nothing is checked
    let p = from_cluster_file(&me(), &[], &[g.clone()], None);
    assert_eq!(p.actions, vec![Action::Connect(g)]);
}

#[test]
fn a_sid_freed_by_a_removal_is_taken_in_the_same_plan() {
    let a = spec("a", 2, 7002);
    let b = spec("b", 2, 7003);
    let p = file(&[known(&a)], std::slice::from_ref(&b));
    assert_eq!(
        p.actions,
        vec![
            disconnect(2, "a", Reason::Removed(Source::ClusterFile)),
            Action::Connect(b)
        ]
    );
}

#[test]
fn a_new_node_on_the_sid_of_a_peer_in_its_grace_waits() {
    let t = Instant::now();
    let a = spec("a", 2, 7002);
    let b = spec("b", 2, 7003);
    let p = from_listing(&me(), &[known(&a)], &[b], 10 * S, t, None);
    assert_eq!(p.actions, vec![Action::KeepMissing { sid: 2, since: t }]);
    assert!(p.added.is_empty());
}

#[test]
fn a_changed_node_whose_new_sid_is_taken_is_only_disconnected() {
    // today's behaviour: it shows as changed, and is not added back
    let a = spec("a", 2, 7002);
    let c = spec("c", 3, 7003);
    let mut moved = a.clone();
    moved.sid = 3;
    let p = file(&[known(&a), known(&c)], &[moved, c]);
    assert_eq!(
        p.actions,
        vec![disconnect(2, "a", Reason::Changed(Source::ClusterFile))]
    );
    assert_eq!(p.changed, vec!["a"]);
}

#[test]
fn of_two_listed_nodes_with_one_sid_the_first_is_added() {
    let a = spec("a", 2, 7002);
    let b = spec("b", 2, 7003);
    let p = file(&[], &[a.clone(), b]);
    assert_eq!(p.actions, vec![Action::Connect(a)]);
    assert_eq!(p.added, vec!["a"]);
}

#[test]
fn two_listed_nodes_with_one_name_flap() {
    // today's behaviour: the last one of the name is compared with, so a
    // peer added from the first is taken out and added again each time
    let first = spec("x", 2, 7002);
    let second = spec("x", 3, 7003);
    let listed = [first.clone(), second.clone()];
    let p = from_listing(&me(), &[], &listed, S, Instant::now(), None);
    assert_eq!(
        p.actions,
        vec![Action::Connect(first.clone()), Action::Connect(second.clone())]
    );
    let now_known = [known(&first), known(&second)];
    let p = from_listing(&me(), &now_known, &listed, S, Instant::now(), None);
    assert_eq!(
        p.actions,
        vec![
            disconnect(2, "x", Reason::Changed(Source::ZooKeeper)),
            Action::Connect(first)
        ]
    );
}

#[test]
fn removed_and_changed_are_listed_by_name() {
    let peers = [spec("c", 4, 7004), spec("a", 2, 7002), spec("b", 3, 7003)];
    let ks: Vec<Known> = peers.iter().map(known).collect();
    let p = file(&ks, &[spec("b", 3, 7103)]);
    assert_eq!(p.removed, vec!["a", "c"]);
    assert_eq!(p.changed, vec!["b"]);
    assert_eq!(
        p.actions
            .iter()
            .filter(|a| matches!(a, Action::Disconnect { .. }))
            .count(),
        3
    );
    assert!(matches!(p.actions.last(), Some(Action::Connect(s)) if s.name == "b"));
}

#[test]
fn a_quiet_listing_is_not_logged_a_changed_one_is() {
    let a = spec("a", 2, 7002);
    let t = Instant::now();
    assert!(!from_listing(&me(), &[known(&a)], std::slice::from_ref(&a), S, t, None).log_summary());
    assert!(from_listing(&me(), &[], &[a], S, t, None).log_summary());
}

#[test]
fn file_notices_about_this_node() {
    let m = me();
    assert!(file_notices(&m, false, false, Some(&m), false).is_empty());
    assert_eq!(
        file_notices(&m, false, true, Some(&m), false),
        vec![FileNotice::DiscoverySwitch]
    );
    assert_eq!(
        file_notices(&m, false, false, None, false),
        vec![FileNotice::SelfRemoved]
    );
    assert!(
        file_notices(&m, true, true, None, false).is_empty(),
        "with ZooKeeper the file need not list this node"
    );
    let mut moved = m.clone();
    moved.main = "other.lua".into();
    assert_eq!(
        file_notices(&m, false, false, Some(&moved), true),
        vec![FileNotice::SelfChanged, FileNotice::SelfSettingsChanged]
    );
}

#[test]
fn file_notice_texts_are_apply_clusters() {
    assert_eq!(
        FileNotice::DiscoverySwitch.to_string(),
        "the cluster file switches discovery (static / ZooKeeper): that takes effect on restart"
    );
    assert_eq!(
        FileNotice::SelfRemoved.to_string(),
        "this node is no longer in the cluster file; it keeps running until stopped"
    );
    assert_eq!(
        FileNotice::SelfChanged.to_string(),
        "this node's own entry changed in the cluster file; that takes effect on restart"
    );
    assert_eq!(
        FileNotice::SelfSettingsChanged.to_string(),
        "this node's settings changed in the cluster file; conf shows them after a restart"
    );
    assert_eq!(ZK_FILE_RELOADED, "cluster file reloaded (peers come from ZooKeeper)");
}
