//! Unit tests of the Router membership and the next-hop table.
use super::*;

const R1: u32 = 100;
const R2: u32 = 101;
const R3: u32 = 102;

fn on(sid: u32, incarnation: u64) -> Change {
    Change::Online { sid, incarnation }
}

fn off(sid: u32, incarnation: u64) -> Change {
    Change::Offline { sid, incarnation }
}

/// Two live Routers, both announcing nodes 1..=n (incarnation 7).
fn two_routers(n: u32) -> RouterMembership {
    let mut m = RouterMembership::new();
    m.router_up(R1);
    m.router_up(R2);
    for sid in 1..=n {
        m.online(R1, sid, 7);
        m.online(R2, sid, 7);
    }
    m
}

#[test]
fn a_node_announced_by_two_routers_goes_online_once() {
    let mut m = RouterMembership::new();
    m.router_up(R1);
    m.router_up(R2);
    assert_eq!(m.online(R1, 5, 7), vec![on(5, 7)]);
    assert_eq!(m.online(R2, 5, 7), vec![]);
    assert!(m.is_online(5));
    assert_eq!(m.incarnation(5), Some(7));
    assert_eq!(m.routers_for(5), vec![R1, R2]);
}

#[test]
fn one_router_dies_and_the_nodes_stay_online_through_the_other() {
    let mut m = two_routers(3);
    assert_eq!(m.router_down(R1), vec![]);
    assert_eq!(m.online_nodes(), vec![1, 2, 3]);
    assert_eq!(m.routers_for(2), vec![R2]);
    assert!(!m.is_live(R1));
    assert_eq!(m.routers(), vec![R2]);
}

#[test]
fn a_node_seen_only_by_the_dead_router_goes_offline_with_it() {
    let mut m = two_routers(2);
    m.online(R1, 9, 3);
    assert_eq!(m.router_down(R1), vec![off(9, 3)]);
    assert_eq!(m.online_nodes(), vec![1, 2]);
    // the last Router going takes every node
    assert_eq!(m.router_down(R2), vec![off(1, 7), off(2, 7)]);
    assert!(m.online_nodes().is_empty());
    // a Router down twice changes nothing
    assert_eq!(m.router_down(R2), vec![]);
}

#[test]
fn offline_when_every_router_that_knew_it_says_so() {
    let mut m = two_routers(1);
    assert_eq!(m.offline(R1, 1, 7), vec![]);
    assert!(m.is_online(1));
    assert_eq!(m.offline(R2, 1, 7), vec![off(1, 7)]);
    assert!(!m.is_online(1));
    // an offline of a node nobody knows is nothing
    assert_eq!(m.offline(R2, 1, 7), vec![]);
}

#[test]
fn flapping_at_one_router_is_invisible_while_another_holds_the_node() {
    let mut m = two_routers(1);
    for _ in 0..5 {
        assert_eq!(m.offline(R1, 1, 7), vec![]);
        assert_eq!(m.online(R1, 1, 7), vec![]);
    }
    assert_eq!(m.routers_for(1), vec![R1, R2]);
}

#[test]
fn flapping_at_the_only_router_is_reported_each_time() {
    let mut m = RouterMembership::new();
    m.router_up(R1);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(m.online(R1, 4, 1));
        seen.extend(m.offline(R1, 4, 1));
    }
    assert_eq!(
        seen,
        vec![on(4, 1), off(4, 1), on(4, 1), off(4, 1), on(4, 1), off(4, 1)]
    );
}

#[test]
fn a_router_flapping_itself_takes_only_its_own_nodes() {
    let mut m = two_routers(1);
    m.online(R1, 2, 1);
    assert_eq!(m.router_down(R1), vec![off(2, 1)]);
    assert_eq!(m.snapshot(R1, &[(1, 7), (2, 1)]), vec![on(2, 1)]);
    assert_eq!(m.router_down(R1), vec![off(2, 1)]);
    assert_eq!(m.online_nodes(), vec![1]);
}

#[test]
fn a_newer_incarnation_is_a_restart_and_the_old_one_is_forgotten_everywhere() {
    let mut m = two_routers(1);
    // node 1 restarted; R1 sees the new process first
    assert_eq!(m.online(R1, 1, 8), vec![off(1, 7), on(1, 8)]);
    assert_eq!(m.routers_for(1), vec![R1]);
    // R2's late word about the old process changes nothing
    assert_eq!(m.offline(R2, 1, 7), vec![]);
    assert_eq!(m.online(R2, 1, 7), vec![]);
    assert_eq!(m.incarnation(1), Some(8));
    assert_eq!(m.online(R2, 1, 8), vec![]);
    assert_eq!(m.routers_for(1), vec![R1, R2]);
}

#[test]
fn an_offline_of_an_older_incarnation_does_not_take_the_new_one() {
    let mut m = RouterMembership::new();
    m.router_up(R1);
    m.online(R1, 1, 7);
    m.online(R1, 1, 8);
    assert_eq!(m.offline(R1, 1, 7), vec![]);
    assert!(m.is_online(1));
    assert_eq!(m.offline(R1, 1, 8), vec![off(1, 8)]);
}

#[test]
fn announcements_of_a_router_not_live_are_ignored() {
    let mut m = RouterMembership::new();
    assert_eq!(m.online(R1, 1, 1), vec![]);
    assert!(!m.is_online(1));
    m.router_up(R1);
    m.online(R1, 1, 1);
    m.router_down(R1);
    assert_eq!(m.offline(R1, 1, 1), vec![]);
    assert_eq!(m.online(R1, 1, 1), vec![]);
}

#[test]
fn a_snapshot_replaces_the_routers_view() {
    let mut m = RouterMembership::new();
    assert_eq!(m.snapshot(R1, &[(1, 1), (2, 1)]), vec![on(1, 1), on(2, 1)]);
    assert!(m.is_live(R1));
    assert_eq!(m.snapshot(R1, &[(2, 1), (3, 1)]), vec![off(1, 1), on(3, 1)]);
    assert_eq!(m.online_nodes(), vec![2, 3]);
}

#[test]
fn the_preferred_router_is_stable_and_spread() {
    let routers = [R1, R2, R3];
    let mut share = BTreeMap::new();
    for dst in 0..3000 {
        let p = preferred(dst, &routers).unwrap();
        // the order of the list does not matter
        assert_eq!(preferred(dst, &[R3, R1, R2]), Some(p));
        // removing another Router does not move it
        let others: Vec<u32> = routers.iter().copied().filter(|&r| r != p).collect();
        for gone in others {
            let rest: Vec<u32> = routers.iter().copied().filter(|&r| r != gone).collect();
            assert_eq!(preferred(dst, &rest), Some(p));
        }
        *share.entry(p).or_insert(0) += 1;
    }
    for r in routers {
        assert!((800..1200).contains(&share[&r]), "router {r}: {share:?}");
    }
    assert_eq!(preferred(1, &[]), None);
}

#[test]
fn a_destination_goes_through_a_router_that_reaches_it() {
    let mut m = two_routers(2);
    m.online(R2, 9, 1);
    let mut t = NextHop::new();
    assert_eq!(t.route(9, &m), Some(R2));
    assert_eq!(t.route(42, &m), None);
    let p = preferred(1, &[R1, R2]);
    assert_eq!(t.route(1, &m), p);
    assert_eq!(t.current(1), p);
}

#[test]
fn a_router_coming_up_does_not_move_a_destination_until_it_settles() {
    let mut m = RouterMembership::new();
    m.router_up(R1);
    m.online(R1, 1, 7);
    // find a destination that prefers R2 over R1
    let dst = (1..1000).find(|&d| preferred(d, &[R1, R2]) == Some(R2)).unwrap();
    m.online(R1, dst, 7);
    let mut t = NextHop::new();
    assert_eq!(t.begin_call(11, dst, &m), Some(R1));
    m.router_up(R2);
    m.online(R2, dst, 7);
    // sticky while R1 is live
    assert_eq!(t.route(dst, &m), Some(R1));
    // a call is waiting: settling does not move it
    assert_eq!(t.settle(dst, &m), None);
    assert!(t.end_call(11));
    assert_eq!(t.settle(dst, &m), Some(R2));
    assert_eq!(t.route(dst, &m), Some(R2));
    assert_eq!(t.settle(dst, &m), None);
}

#[test]
fn a_dead_router_returns_its_calls_and_destinations_and_traffic_moves() {
    let mut m = two_routers(40);
    let mut t = NextHop::new();
    let mut through = BTreeMap::new();
    for dst in 1..=40 {
        let r = t.begin_call(1000 + dst, dst, &m).unwrap();
        through.insert(dst, r);
    }
    assert!(through.values().any(|&r| r == R1) && through.values().any(|&r| r == R2));
    let mut lost = t.router_down(R1);
    assert_eq!(m.router_down(R1), vec![]);
    let want: Vec<u32> = through.iter().filter(|(_, &r)| r == R1).map(|(&d, _)| d).collect();
    assert_eq!(lost.dsts, want);
    assert_eq!(lost.calls, want.iter().map(|&d| (1000 + d, d)).collect::<Vec<_>>());
    assert_eq!(lost.why, LostWhy::RouterDown);
    assert_eq!(
        lost.cause("router_1"),
        "relayed through router router_1, which went down"
    );
    // the calls through R2 still wait; their replies end them
    for &d in want.iter() {
        assert_eq!(t.waiting(d), 0);
        assert_eq!(t.route(d, &m), Some(R2));
    }
    assert!(!t.end_call(1000 + want[0]));
    let kept = through.iter().find(|(_, &r)| r == R2).map(|(&d, _)| d).unwrap();
    assert_eq!(t.waiting(kept), 1);
    assert!(t.end_call(1000 + kept));
    // a second report of the same death loses nothing
    lost = t.router_down(R1);
    assert!(lost.is_empty());
}

#[test]
fn a_destination_the_router_lost_fails_only_its_own_calls() {
    let mut m = two_routers(2);
    let mut t = NextHop::new();
    let r = t.begin_call(1, 1, &m).unwrap();
    let other = if r == R1 { R2 } else { R1 };
    let r2 = t.begin_call(2, 2, &m).unwrap();
    // the Router says node 1 is offline: node 1 stays online through the other
    assert_eq!(m.offline(r, 1, 7), vec![]);
    let lost = t.unreachable(r, 1);
    assert_eq!(lost.calls, vec![(1, 1)]);
    assert_eq!(lost.dsts, vec![1]);
    assert_eq!(lost.cause("r"), "router r lost its connection to it");
    assert_eq!(t.route(1, &m), Some(other));
    // node 2's call is untouched
    assert_eq!(t.waiting(2), 1);
    assert_eq!(t.current(2), Some(r2));
}

#[test]
fn a_call_keeps_the_router_it_went_through_when_its_destination_moves() {
    let mut m = two_routers(1);
    let mut t = NextHop::new();
    let r = t.begin_call(5, 1, &m).unwrap();
    let other = if r == R1 { R2 } else { R1 };
    // membership already dropped it at r; the runtime routes before it
    // handles the loss
    m.offline(r, 1, 7);
    assert_eq!(t.begin_call(6, 1, &m), Some(other));
    let lost = t.unreachable(r, 1);
    assert_eq!(lost.calls, vec![(5, 1)]);
    assert_eq!(lost.dsts, vec![1]);
    assert_eq!(t.current(1), Some(other));
    assert_eq!(t.waiting(1), 1);
}

#[test]
fn no_live_router_means_no_route() {
    let mut m = two_routers(1);
    let mut t = NextHop::new();
    assert!(t.route(1, &m).is_some());
    t.router_down(R1);
    t.router_down(R2);
    m.router_down(R1);
    m.router_down(R2);
    assert_eq!(t.route(1, &m), None);
    assert_eq!(t.begin_call(1, 1, &m), None);
    assert_eq!(t.waiting(1), 0);
}

#[test]
fn a_reused_call_id_does_not_leak_a_waiting_count() {
    let m = two_routers(2);
    let mut t = NextHop::new();
    t.begin_call(1, 1, &m);
    t.begin_call(1, 2, &m);
    assert_eq!(t.waiting(1), 0);
    assert_eq!(t.waiting(2), 1);
    assert!(t.end_call(1));
    assert_eq!(t.waiting(2), 0);
}

#[test]
fn a_hundred_calls_in_flight_through_a_killed_router_all_fail_or_stay() {
    let mut m = two_routers(10);
    let mut t = NextHop::new();
    for id in 1..=100u32 {
        t.begin_call(id, 1 + id % 10, &m).unwrap();
    }
    let lost = t.router_down(R1);
    m.router_down(R1);
    let after: usize = (1..=10).map(|d| t.waiting(d)).sum();
    // every call either failed now or still waits (through R2): none is lost silently
    assert_eq!(lost.calls.len() + after, 100);
    for d in 1..=10 {
        assert_eq!(t.route(d, &m), Some(R2));
    }
}

#[test]
fn who_dials_whom_in_each_topology() {
    use super::Topology;
    let t = Topology::Router;
    // nodes dial Routers and DB nodes, DB nodes dial everyone but Routers
    // dial nobody; the rest goes through Routers
    assert!(t.direct("Hall", "Router") && t.direct("Hall", "DB") && t.direct("DB", "Hall"));
    assert!(!t.direct("Hall", "Gate") && !t.direct("Gate", "Hall"));
    assert!(!t.direct("Router", "Hall") && !t.direct("Router", "Router"));
    assert!(t.relays("Router") && !t.relays("Hall"));
    assert!(Topology::Mesh.direct("Hall", "Gate") && !Topology::Mesh.relays("Router"));
}
