use super::*;

const MS: Duration = Duration::from_millis(1);
const GRACE: Duration = Duration::from_secs(30);

fn config() -> SessionConfig {
    SessionConfig {
        resume_grace: GRACE,
        replay_max: 100,
        replay_bytes: 1 << 20,
    }
}

fn tok(n: u8) -> [u8; RESUME_TOKEN_LEN] {
    [n; RESUME_TOKEN_LEN]
}

/// The frame of push `seq` in these tests: its number as text.
fn frame(seq: u32) -> Bytes {
    Bytes::from(format!("push {seq}"))
}

/// Pushes `n` frames on `id`; returns their sequence numbers.
fn push_n(s: &mut Sessions, id: u64, n: usize) -> Vec<u32> {
    (0..n).map(|_| s.push(id, frame).unwrap().0).collect()
}

fn frames(seqs: impl IntoIterator<Item = u32>) -> Vec<Bytes> {
    seqs.into_iter().map(frame).collect()
}

#[test]
fn a_login_opens_an_attached_session() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 1);
    assert!(s.is_empty());
    let l = s.login("alice", 7, tok(1), t);
    assert_eq!(l.replaced, None);
    assert_eq!(s.len(), 1);
    assert_eq!(s.by_account("alice"), Some(l.id));
    assert_eq!(s.by_account("bob"), None);
    let x = s.get(l.id).unwrap();
    assert_eq!(
        (x.id(), x.account(), x.conn(), x.detached_since(), x.binding()),
        (l.id, "alice", Some(7), None, None)
    );
    assert_eq!(
        (x.last_seq(), x.acked(), x.buffered(), x.buffered_bytes()),
        (0, 0, 0, 0)
    );
    let b = s.login("bob", 8, tok(2), t);
    assert_ne!(b.id, l.id);
    assert_eq!(s.len(), 2);
    assert_eq!(s.iter().count(), 2);
    assert_eq!(s.next_deadline(), None, "attached sessions do not expire");
}

#[test]
fn ids_are_nonzero_fit_javascript_depend_on_the_seed_and_are_not_reused() {
    let t = Instant::now();
    let mut seen = HashSet::new();
    for seed in 0..50u64 {
        let mut s = Sessions::new(config(), seed);
        let id = s.login("a", 1, tok(0), t).id;
        assert!((1..=MAX_SESSION_ID).contains(&id));
        assert!(seen.insert(id), "seed {seed} repeats an id");
    }
    let mut s = Sessions::new(config(), 99);
    let mut ids = HashSet::new();
    for i in 0..1000u64 {
        let l = s.login(&format!("p{}", i % 10), i, tok(0), t);
        assert!(ids.insert(l.id), "id {} handed out twice", l.id);
    }
    // at the top, ids wrap to 1 and skip those in use
    let mut s = Sessions::new(config(), 5);
    s.next_id = MAX_SESSION_ID;
    let top = s.login("x", 1, tok(0), t).id;
    assert_eq!(top, MAX_SESSION_ID);
    s.next_id = MAX_SESSION_ID;
    assert_eq!(s.login("y", 2, tok(0), t).id, 1, "MAX_SESSION_ID is in use");
}

#[test]
fn the_newest_login_always_wins_over_1000_alternating_connections() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let other = s.login("bob", 1, tok(9), t).id;
    let mut prev: Option<(u64, u64)> = None; // (session, conn)
    for i in 0..1000u64 {
        // two devices take turns; every connection is new
        let conn = 10 + i;
        let now = t + (i as u32) * MS;
        // sometimes the previous connection dropped before the new login
        let detached = i % 3 == 1;
        if detached {
            let (pid, pconn) = prev.unwrap();
            assert!(s.detach(pid, pconn, now));
            assert!(s.next_deadline().is_some());
        }
        if i % 5 == 2 {
            s.bind(prev.unwrap().0, Binding { sid: 4, eid: i as i64 });
        }
        let l = s.login("alice", conn, tok(i as u8), now);
        match prev {
            None => assert_eq!(l.replaced, None),
            Some((pid, pconn)) => {
                let r = l.replaced.clone().expect("the previous session is replaced");
                assert_eq!(r.id, pid);
                assert_eq!(r.conn, if detached { None } else { Some(pconn) });
                assert_eq!(r.binding, (i % 5 == 2).then_some(Binding { sid: 4, eid: i as i64 }));
                // the old connection closes late: nothing happens to the new session
                assert!(!s.detach(pid, pconn, now), "the replaced session is gone");
                assert!(!s.detach(l.id, pconn, now), "not the new session's connection");
                assert_eq!(
                    s.resume(pid, &tok((i - 1) as u8), 0, pconn, now),
                    Err(ResumeError::Unknown)
                );
            }
        }
        assert_eq!(s.by_account("alice"), Some(l.id));
        assert_eq!(s.get(l.id).unwrap().conn(), Some(conn));
        assert_eq!(s.len(), 2, "alice's one session and bob's");
        assert_eq!(
            s.next_deadline(),
            None,
            "a replaced detached session does not expire later"
        );
        assert!(s.bound_to(4).is_empty(), "the replaced session left the index");
        prev = Some((l.id, conn));
    }
    assert_eq!(s.by_account("bob"), Some(other));
    let (id, conn) = prev.unwrap();
    assert!(
        s.detach(id, conn, t),
        "the newest connection still detaches its session"
    );
}

#[test]
fn a_login_on_the_same_connection_replaces_with_that_connection() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let a = s.login("alice", 5, tok(1), t).id;
    let l = s.login("alice", 5, tok(2), t);
    assert_eq!(
        l.replaced.unwrap().conn,
        Some(5),
        "the driver must not close its own connection"
    );
    assert!(s.get(a).is_none());
}

#[test]
fn resume_replays_exactly_the_pushes_after_last_seq() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let id = s.login("alice", 1, tok(7), t).id;
    assert_eq!(push_n(&mut s, id, 10), (1..=10).collect::<Vec<_>>());
    assert!(s.detach(id, 1, t));
    // pushes while detached are only kept
    let (seq, f, conn) = s.push(id, frame).unwrap();
    assert_eq!((seq, f, conn), (11, frame(11), None));
    let r = s.resume(id, &tok(7), 6, 2, t + 5 * MS).unwrap();
    assert_eq!(r.account, "alice");
    assert_eq!(r.replay, frames(7..=11));
    assert_eq!(r.previous_conn, None);
    assert_eq!(r.last_seq, 11);
    let x = s.get(id).unwrap();
    assert_eq!(
        (x.conn(), x.detached_since(), x.acked(), x.buffered()),
        (Some(2), None, 6, 5)
    );
    assert_eq!(s.next_deadline(), None);
    // after the resume pushes go to the new connection, numbered on
    assert_eq!(s.push(id, frame).unwrap(), (12, frame(12), Some(2)));
    // the replayed pushes stay kept: a second drop replays them again
    assert!(s.detach(id, 2, t));
    let r = s.resume(id, &tok(7), 8, 3, t).unwrap();
    assert_eq!(r.replay, frames(9..=12));
    // a client that has everything gets nothing to replay
    assert!(s.detach(id, 3, t));
    let r = s.resume(id, &tok(7), 12, 4, t).unwrap();
    assert!(r.replay.is_empty());
    assert_eq!(r.last_seq, 12);
}

#[test]
fn resume_of_a_session_without_pushes() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let id = s.login("alice", 1, tok(7), t).id;
    assert!(s.detach(id, 1, t));
    let r = s.resume(id, &tok(7), 0, 2, t).unwrap();
    assert_eq!((r.replay.len(), r.last_seq), (0, 0));
    assert!(s.detach(id, 2, t));
    assert_eq!(s.resume(id, &tok(7), 1, 3, t), Err(ResumeError::TooFarBehind));
}

#[test]
fn resume_after_acks_trimmed_the_buffer() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let id = s.login("alice", 1, tok(7), t).id;
    push_n(&mut s, id, 20);
    assert_eq!(s.ack(id, 15), Ok(15));
    assert_eq!(s.get(id).unwrap().buffered(), 5);
    assert_eq!(s.get(id).unwrap().acked(), 15);
    assert!(s.detach(id, 1, t));
    // the client got 17 before the drop, acked only 15
    let r = s.resume(id, &tok(7), 17, 2, t).unwrap();
    assert_eq!(r.replay, frames(18..=20));
    assert_eq!(s.get(id).unwrap().buffered(), 3);
    // a client claiming fewer than it acknowledged cannot be served
    assert!(s.detach(id, 2, t));
    assert_eq!(s.resume(id, &tok(7), 14, 3, t), Err(ResumeError::TooFarBehind));
    // exactly at the oldest kept push still works
    let r = s.resume(id, &tok(7), 17, 3, t).unwrap();
    assert_eq!(r.replay, frames(18..=20));
}

#[test]
fn too_far_behind_is_refused_and_changes_nothing() {
    let t = Instant::now();
    let mut s = Sessions::new(
        SessionConfig {
            replay_max: 4,
            ..config()
        },
        3,
    );
    let id = s.login("alice", 1, tok(7), t).id;
    push_n(&mut s, id, 10); // 7..=10 kept
    assert!(s.detach(id, 1, t));
    let deadline = s.next_deadline();
    assert_eq!(
        s.resume(id, &tok(7), 5, 2, t),
        Err(ResumeError::TooFarBehind),
        "6 was dropped"
    );
    assert_eq!(s.resume(id, &tok(7), 0, 2, t), Err(ResumeError::TooFarBehind));
    assert_eq!(
        s.resume(id, &tok(7), 11, 2, t),
        Err(ResumeError::TooFarBehind),
        "beyond the last push sent"
    );
    assert_eq!(s.resume(id, &tok(7), u32::MAX, 2, t), Err(ResumeError::TooFarBehind));
    let x = s.get(id).unwrap();
    assert_eq!((x.conn(), x.buffered()), (None, 4));
    assert_eq!(s.next_deadline(), deadline, "still expiring as before");
    let r = s.resume(id, &tok(7), 6, 2, t).unwrap();
    assert_eq!(r.replay, frames(7..=10));
}

#[test]
fn a_bad_token_or_an_unknown_id_is_refused() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let id = s.login("alice", 1, tok(7), t).id;
    push_n(&mut s, id, 3);
    assert!(s.detach(id, 1, t));
    let mut wrong = tok(7);
    for i in 0..RESUME_TOKEN_LEN {
        wrong[i] ^= 1;
        assert_eq!(s.resume(id, &wrong, 3, 2, t), Err(ResumeError::BadToken), "byte {i}");
        wrong[i] ^= 1;
    }
    assert_eq!(s.resume(id, &tok(7)[..15], 3, 2, t), Err(ResumeError::BadToken));
    assert_eq!(s.resume(id, &[7; 17], 3, 2, t), Err(ResumeError::BadToken));
    assert_eq!(s.resume(id, &[], 3, 2, t), Err(ResumeError::BadToken));
    assert_eq!(s.resume(id + 1, &tok(7), 3, 2, t), Err(ResumeError::Unknown));
    assert_eq!(s.resume(0, &tok(7), 3, 2, t), Err(ResumeError::Unknown));
    assert_eq!(s.get(id).unwrap().conn(), None, "still detached");
    assert!(s.resume(id, &tok(7), 3, 2, t).is_ok());
    // a session that was removed cannot be resumed
    s.remove(id);
    assert_eq!(s.resume(id, &tok(7), 3, 3, t), Err(ResumeError::Unknown));
}

#[test]
fn a_resume_while_attached_moves_the_connection() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let id = s.login("alice", 1, tok(7), t).id;
    push_n(&mut s, id, 2);
    // the client saw its connection die; the Gate did not notice yet
    let r = s.resume(id, &tok(7), 1, 2, t).unwrap();
    assert_eq!(r.previous_conn, Some(1));
    assert_eq!(r.replay, frames([2]));
    assert_eq!(s.get(id).unwrap().conn(), Some(2));
    assert!(!s.detach(id, 1, t), "the old connection closing later changes nothing");
    assert_eq!(s.get(id).unwrap().conn(), Some(2));
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.push(id, frame).unwrap().2, Some(2));
    // resuming again on the same connection names no previous one
    let r = s.resume(id, &tok(7), 3, 2, t).unwrap();
    assert_eq!(r.previous_conn, None);
    assert!(s.detach(id, 2, t));
    assert!(!s.detach(id, 2, t), "already detached");
}

#[test]
fn detached_sessions_expire_after_the_grace_and_not_before() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let a = s.login("alice", 1, tok(1), t).id;
    let b = s.login("bob", 2, tok(2), t).id;
    let c = s.login("carol", 3, tok(3), t).id;
    s.bind(a, Binding { sid: 9, eid: 100 });
    assert!(s.detach(a, 1, t));
    assert!(s.detach(b, 2, t + 10 * MS));
    assert!(s.detach(c, 3, t + 20 * MS));
    assert_eq!(s.get(a).unwrap().detached_since(), Some(t));
    assert_eq!(s.next_deadline(), Some(t + GRACE));
    assert!(s.expire(t + GRACE - MS).is_empty(), "not before the grace");
    assert_eq!(s.len(), 3);
    // carol comes back in time
    s.resume(c, &tok(3), 0, 4, t + GRACE).unwrap();
    let gone = s.expire(t + GRACE);
    assert_eq!(
        gone,
        vec![Expired {
            id: a,
            account: "alice".into(),
            binding: Some(Binding { sid: 9, eid: 100 })
        }]
    );
    assert_eq!(s.by_account("alice"), None);
    assert!(s.bound_to(9).is_empty());
    assert_eq!(s.next_deadline(), Some(t + GRACE + 10 * MS));
    let gone = s.expire(t + Duration::from_secs(3600));
    assert_eq!(gone.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
    assert_eq!(s.next_deadline(), None);
    assert_eq!(s.len(), 1);
    assert!(s.expire(t + Duration::from_secs(7200)).is_empty(), "carol is attached");
    // a resumed then dropped again session gets a fresh grace
    assert!(s.detach(c, 4, t + Duration::from_secs(7200)));
    assert_eq!(s.next_deadline(), Some(t + Duration::from_secs(7200) + GRACE));
}

#[test]
fn expiry_is_sorted_by_deadline_and_a_removed_session_leaves_its_slot() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let ids: Vec<u64> = (0..20u64).map(|i| s.login(&format!("p{i}"), i, tok(0), t).id).collect();
    for (i, id) in ids.iter().enumerate().rev() {
        assert!(s.detach(*id, i as u64, t + (i as u32) * MS));
    }
    s.remove(ids[0]);
    s.remove(ids[5]);
    assert_eq!(s.next_deadline(), Some(t + GRACE + MS));
    let gone: Vec<u64> = s.expire(t + GRACE + 10 * MS).into_iter().map(|e| e.id).collect();
    let want: Vec<u64> = ids[1..=10].iter().copied().filter(|&i| i != ids[5]).collect();
    assert_eq!(gone, want);
    assert_eq!(s.len(), 9);
}

#[test]
fn an_unreachable_grace_never_expires() {
    let t = Instant::now();
    let mut s = Sessions::new(
        SessionConfig {
            resume_grace: Duration::MAX,
            ..config()
        },
        3,
    );
    let id = s.login("alice", 1, tok(0), t).id;
    assert!(s.detach(id, 1, t));
    assert_eq!(s.next_deadline(), None);
    assert!(s.expire(t + Duration::from_secs(1 << 40)).is_empty());
    assert!(s.resume(id, &tok(0), 0, 2, t).is_ok());
}

#[test]
fn the_replay_buffer_is_bounded_by_count() {
    let t = Instant::now();
    let mut s = Sessions::new(
        SessionConfig {
            replay_max: 5,
            ..config()
        },
        3,
    );
    let id = s.login("alice", 1, tok(0), t).id;
    push_n(&mut s, id, 12);
    let x = s.get(id).unwrap();
    assert_eq!(x.buffered(), 5);
    assert_eq!(
        x.buffered_bytes(),
        frames(8..=12).iter().map(|f| f.len()).sum::<usize>()
    );
    assert_eq!(x.last_seq(), 12);
    let r = s.resume(id, &tok(0), 7, 2, t).unwrap();
    assert_eq!(r.replay, frames(8..=12));
    // nothing kept at all
    let mut s = Sessions::new(
        SessionConfig {
            replay_max: 0,
            ..config()
        },
        3,
    );
    let id = s.login("alice", 1, tok(0), t).id;
    assert_eq!(s.push(id, frame).unwrap().0, 1, "still sent");
    assert_eq!(s.get(id).unwrap().buffered(), 0);
    assert_eq!(s.resume(id, &tok(0), 0, 2, t), Err(ResumeError::TooFarBehind));
    assert!(s.resume(id, &tok(0), 1, 2, t).is_ok());
}

#[test]
fn the_replay_buffer_is_bounded_by_bytes() {
    let t = Instant::now();
    let mut s = Sessions::new(
        SessionConfig {
            replay_bytes: 100,
            ..config()
        },
        3,
    );
    let id = s.login("alice", 1, tok(0), t).id;
    let sized = |n: usize| move |_seq: u32| Bytes::from(vec![0u8; n]);
    s.push(id, sized(40)).unwrap(); // 1
    s.push(id, sized(40)).unwrap(); // 2
    s.push(id, sized(20)).unwrap(); // 3: exactly 100
    assert_eq!(
        (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
        (3, 100)
    );
    s.push(id, sized(1)).unwrap(); // 4: 101, drops 1
    assert_eq!(
        (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
        (3, 61)
    );
    s.push(id, sized(90)).unwrap(); // 5: drops 2 and 3 (4 and 5 make 91)
    assert_eq!(
        (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
        (2, 91)
    );
    // a frame larger than the whole budget is sent but not kept
    let (seq, f, conn) = s.push(id, sized(101)).unwrap();
    assert_eq!((seq, f.len(), conn), (6, 101, Some(1)));
    assert_eq!(
        (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
        (0, 0)
    );
    assert_eq!(s.resume(id, &tok(0), 5, 2, t), Err(ResumeError::TooFarBehind));
    assert!(s.resume(id, &tok(0), 6, 2, t).is_ok());
}

#[test]
fn acks_drop_what_the_client_has_and_refuse_what_was_never_sent() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let id = s.login("alice", 1, tok(0), t).id;
    assert_eq!(s.ack(id, 0), Ok(0), "nothing sent, nothing acknowledged");
    assert_eq!(s.ack(id, 1), Err(AckError::Ahead { seq: 1, last_sent: 0 }));
    push_n(&mut s, id, 10);
    let bytes = s.get(id).unwrap().buffered_bytes();
    assert_eq!(s.ack(id, 4), Ok(4));
    assert_eq!(
        s.get(id).unwrap().buffered_bytes(),
        bytes - (1..=4).map(|i| frame(i).len()).sum::<usize>()
    );
    assert_eq!(s.ack(id, 4), Ok(0), "again");
    assert_eq!(s.ack(id, 2), Ok(0), "backwards");
    assert_eq!(s.get(id).unwrap().acked(), 4);
    assert_eq!(s.ack(id, 11), Err(AckError::Ahead { seq: 11, last_sent: 10 }));
    assert_eq!(
        s.ack(id, u32::MAX),
        Err(AckError::Ahead {
            seq: u32::MAX,
            last_sent: 10
        })
    );
    assert_eq!(s.get(id).unwrap().buffered(), 6, "a refused ack drops nothing");
    assert_eq!(s.ack(id, 10), Ok(6));
    assert_eq!(s.get(id).unwrap().buffered_bytes(), 0);
    assert_eq!(s.ack(id + 1, 1), Err(AckError::Unknown));
}

#[test]
fn pushes_to_unknown_or_exhausted_sessions_are_refused() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    assert!(s
        .push(42, |_| unreachable!("no frame for an unknown session"))
        .is_none());
    let id = s.login("alice", 1, tok(0), t).id;
    s.sessions.get_mut(&id).unwrap().next_seq = u32::MAX as u64;
    assert_eq!(s.push(id, frame).unwrap().0, u32::MAX, "the last number is usable");
    assert_eq!(s.get(id).unwrap().last_seq(), u32::MAX);
    assert!(s.push(id, |_| unreachable!()).is_none(), "then none is left");
    assert_eq!(s.ack(id, u32::MAX), Ok(1));
}

#[test]
fn the_backend_index_follows_bind_rebind_unbind_remove_replace_and_expire() {
    let t = Instant::now();
    let mut s = Sessions::new(config(), 3);
    let a = s.login("a", 1, tok(0), t).id;
    let b = s.login("b", 2, tok(0), t).id;
    let c = s.login("c", 3, tok(0), t).id;
    assert!(s.bind(a, Binding { sid: 1, eid: 10 }));
    assert!(s.bind(b, Binding { sid: 1, eid: 11 }));
    assert!(s.bind(c, Binding { sid: 2, eid: 12 }));
    assert!(!s.bind(999, Binding { sid: 1, eid: 0 }), "no such session");
    let mut ab = vec![a, b];
    ab.sort_unstable();
    assert_eq!(s.bound_to(1), ab);
    assert_eq!(s.bound_to(2), vec![c]);
    assert!(s.bound_to(3).is_empty());
    // rebind to another node and to another entity on the same node
    assert!(s.bind(a, Binding { sid: 2, eid: 20 }));
    assert_eq!(s.bound_to(1), vec![b]);
    let mut ac = vec![a, c];
    ac.sort_unstable();
    assert_eq!(s.bound_to(2), ac);
    assert!(s.bind(a, Binding { sid: 2, eid: 21 }));
    assert_eq!(s.bound_to(2), ac);
    assert_eq!(s.binding(a), Some(Binding { sid: 2, eid: 21 }));
    // unbind
    assert_eq!(s.unbind(b), Some(Binding { sid: 1, eid: 11 }));
    assert_eq!(s.unbind(b), None);
    assert_eq!(s.binding(b), None);
    assert!(s.bound_to(1).is_empty());
    assert!(!s.by_sid.contains_key(&1), "an empty node is forgotten");
    // remove
    let gone = s.remove(c).unwrap();
    assert_eq!(gone.binding(), Some(Binding { sid: 2, eid: 12 }));
    assert_eq!(s.bound_to(2), vec![a]);
    assert!(s.remove(c).is_none());
    assert_eq!(s.by_account("c"), None);
    // replaced by a newer login
    let a2 = s.login("a", 5, tok(0), t);
    assert_eq!(a2.replaced.unwrap().binding, Some(Binding { sid: 2, eid: 21 }));
    assert!(s.bound_to(2).is_empty());
    assert_eq!(s.binding(a2.id), None, "a new session starts unbound");
    // expired
    assert!(s.bind(a2.id, Binding { sid: 3, eid: 1 }));
    assert!(s.bind(b, Binding { sid: 3, eid: 2 }));
    assert!(s.detach(a2.id, 5, t));
    s.expire(t + GRACE);
    assert_eq!(s.bound_to(3), vec![b]);
    assert_eq!(s.binding(a2.id), None);
    // the index agrees with the sessions
    let total: usize = s.by_sid.values().map(|v| v.len()).sum();
    assert_eq!(total, s.iter().filter(|x| x.binding().is_some()).count());
    // a detached session keeps its binding
    assert!(s.detach(b, 2, t));
    assert_eq!(s.bound_to(3), vec![b]);
}
