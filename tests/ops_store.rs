//! The ops store on a real ZooKeeper: the same typed interface as the
//! folder store, creator-only znodes under `<root>/ops` when credentials
//! are given.

mod common;

use common::zk::{zk_client, ZkServer};
use luahost::ops::auth::Verifier;
use luahost::ops::roles::Role;
use luahost::ops::store::*;

#[test]
fn the_store_in_zookeeper_is_private_to_its_credentials() {
    let zk = ZkServer::start();
    let loc = format!("zk://{}/game/ops-test", zk.addr());
    let s = OpsStore::open_with(&loc, Some("ops:s3cret".into())).expect("store opens");
    let mut w = World::default();
    w.regions.entry("east".into()).or_default().insert(
        "127.0.0.2".into(),
        vec![ProcConfig {
            name: "hall_1".into(),
            cluster: "/srv/game/cluster.lua".into(),
            stype: None,
            addr: None,
        }],
    );
    s.set_world(&w).unwrap();
    assert_eq!(s.world().unwrap(), w);
    let rec = ProcRecord {
        key: proc_key("east", "127.0.0.2", "hall_1"),
        pid: 42,
        startcount: 3,
        lastupdate: now_ms(),
        state: ProcState::Running,
        info: ProcStats::default(),
    };
    s.put_proc(&rec).unwrap();
    s.put_proc(&rec).unwrap();
    assert_eq!(s.procs().unwrap(), vec![rec.clone()]);
    let secret = s.secret().unwrap();
    let u = UserRecord {
        name: "alice".into(),
        role: Role::Operator,
        verifier: Verifier::for_secret(&[5; 32]),
        created: now_ms(),
    };
    s.add_user(&u).unwrap();
    assert!(matches!(s.add_user(&u), Err(OpsError::Exists(_))));
    for i in 0..3 {
        s.audit(&AuditEntry {
            at: i,
            user: "alice".into(),
            via: "127.0.0.2".into(),
            command: format!("list world {i}"),
            result: "ok".into(),
        })
        .unwrap();
    }
    let log = s.audit_log(2).unwrap();
    assert_eq!(
        log.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![1, 2],
        "the last two, oldest first"
    );

    // a second session with the same credentials sees the same store
    let again = OpsStore::open_with(&loc, Some("ops:s3cret".into())).unwrap();
    assert_eq!(again.secret().unwrap(), secret);
    assert_eq!(again.user("alice").unwrap(), Some(u));

    // without them, or with others: refused, nothing read
    for auth in [None, Some("ops:wrong".to_string())] {
        let other = OpsStore::open_with(&loc, auth.clone()).unwrap();
        assert!(
            matches!(other.user("alice"), Err(OpsError::Denied(_))),
            "{auth:?} reads a user"
        );
        assert!(
            matches!(other.secret(), Err(OpsError::Denied(_))),
            "{auth:?} reads the secret"
        );
    }
    // the znodes are where the docs say
    let (rt, c) = zk_client(&zk, Some("ops:s3cret"));
    let mut users = rt.block_on(c.list_children("/game/ops-test/ops/users")).unwrap();
    users.sort();
    assert_eq!(users, vec!["alice"]);
}
