//! The store on real SQLite files in a temporary folder.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use super::*;

/// The tests every backend passes, as `fn(Arc<dyn Backend>)`; each gets a
/// fresh, empty store.
macro_rules! suite {
    ($make:expr) => {
        suite!(@ $make; round_trip_and_versions, version_conflict_keeps_the_newer_data,
            epochs_fence_superseded_writers, delete_with_expect_and_versions_go_on,
            query_by_index_follows_updates, batch_is_all_or_nothing,
            concurrent_saves_one_winner_per_version, store_handle_races_and_closes,
            counters_never_repeat_under_races, saves_at_once_succeed_or_fail_alone);
    };
    (@ $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (_keep, db) = $make;
                super::$name(db);
            }
        )*
    };
}

mod sqlite {
    use super::*;

    fn fresh() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions {
            synchronous: Synchronous::Normal,
            ..Default::default()
        };
        let db = Sqlite::open_with(dir.path().join("store.db"), opts).unwrap();
        (dir, Arc::new(db))
    }

    suite!(fresh());
}

mod postgres;

fn doc(value: &[u8], version: u64, epoch: u64) -> Doc {
    Doc {
        value: value.to_vec(),
        version,
        epoch,
    }
}

fn round_trip_and_versions(db: Arc<dyn Backend>) {
    assert_eq!(db.load("players", &Key::Int(1)).unwrap(), None);
    assert_eq!(db.save(&Save::new("players", 1, &b"\x91\x01"[..]).epoch(3)).unwrap(), 1);
    assert_eq!(db.save(&Save::new("players", 1, &b"\x91\x02"[..]).epoch(3)).unwrap(), 2);
    assert_eq!(db.load("players", &Key::Int(1)).unwrap(), Some(doc(b"\x91\x02", 2, 3)));
    // keys of both kinds, never confused; collections apart
    db.save(&Save::new("players", "1", &b"str"[..])).unwrap();
    db.save(&Save::new("guilds", 1, &b"guild"[..])).unwrap();
    assert_eq!(db.load("players", &Key::Int(1)).unwrap().unwrap().value, b"\x91\x02");
    assert_eq!(db.load("players", &"1".into()).unwrap().unwrap().value, b"str");
    assert_eq!(db.load("guilds", &Key::Int(1)).unwrap().unwrap().value, b"guild");
    // empty and large values
    db.save(&Save::new("blobs", 0, Vec::new())).unwrap();
    assert_eq!(db.load("blobs", &Key::Int(0)).unwrap().unwrap().value, b"");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    db.save(&Save::new("blobs", i64::MIN, big.clone())).unwrap();
    assert_eq!(db.load("blobs", &Key::Int(i64::MIN)).unwrap().unwrap().value, big);
}

fn version_conflict_keeps_the_newer_data(db: Arc<dyn Backend>) {
    db.save(&Save::new("p", 7, &b"v1"[..]).expect(Expect::Absent)).unwrap();
    // two writers load version 1
    let a = db.load("p", &Key::Int(7)).unwrap().unwrap();
    let b = db.load("p", &Key::Int(7)).unwrap().unwrap();
    assert_eq!(
        db.save(&Save::new("p", 7, &b"a"[..]).expect(Expect::Version(a.version))),
        Ok(2)
    );
    let err = db
        .save(&Save::new("p", 7, &b"b"[..]).expect(Expect::Version(b.version)))
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Conflict {
            coll: "p".into(),
            key: Key::Int(7),
            expected: Expect::Version(1),
            found: Some(2),
        }
    );
    assert_eq!(err.to_string(), "conflict: p/7: expected version 1, found version 2");
    assert_eq!(db.load("p", &Key::Int(7)).unwrap(), Some(doc(b"a", 2, 0)));
    // Absent on an existing document, a version on a missing one
    assert!(matches!(
        db.save(&Save::new("p", 7, &b"c"[..]).expect(Expect::Absent)),
        Err(StoreError::Conflict { found: Some(2), .. })
    ));
    assert!(matches!(
        db.save(&Save::new("p", 8, &b"c"[..]).expect(Expect::Version(1))),
        Err(StoreError::Conflict { found: None, .. })
    ));
    assert_eq!(db.load("p", &Key::Int(8)).unwrap(), None);
}

fn epochs_fence_superseded_writers(db: Arc<dyn Backend>) {
    db.save(&Save::new("p", "alice", &b"old owner"[..]).epoch(4)).unwrap();
    // the successor (epoch 5) takes over
    db.save(&Save::new("p", "alice", &b"new owner"[..]).epoch(5)).unwrap();
    // the node declared dead writes late, even with the right version
    let err = db
        .save(
            &Save::new("p", "alice", &b"late"[..])
                .epoch(4)
                .expect(Expect::Version(2)),
        )
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::StaleEpoch {
            coll: "p".into(),
            key: "alice".into(),
            epoch: 4,
            stored: 5
        }
    );
    assert_eq!(
        err.to_string(),
        "stale epoch: p/\"alice\": written with epoch 4, stored by epoch 5"
    );
    assert!(matches!(
        db.delete("p", &"alice".into(), Expect::Any, 4),
        Err(StoreError::StaleEpoch { .. })
    ));
    assert!(matches!(
        db.batch(&[
            Save::new("p", "bob", &b"x"[..]).epoch(4),
            Save::new("p", "alice", &b"x"[..]).epoch(4)
        ]),
        Err(StoreError::StaleEpoch { .. })
    ));
    assert_eq!(db.load("p", &"bob".into()).unwrap(), None);
    assert_eq!(db.load("p", &"alice".into()).unwrap(), Some(doc(b"new owner", 2, 5)));
    // the same epoch and later ones write
    assert_eq!(db.save(&Save::new("p", "alice", &b"again"[..]).epoch(5)), Ok(3));
    assert_eq!(db.save(&Save::new("p", "alice", &b"next"[..]).epoch(9)), Ok(4));
    assert_eq!(db.load("p", &"alice".into()).unwrap(), Some(doc(b"next", 4, 9)));
}

fn delete_with_expect_and_versions_go_on(db: Arc<dyn Backend>) {
    let k = Key::Int(1);
    assert_eq!(db.delete("p", &k, Expect::Any, 0), Ok(false));
    db.save(&Save::new("p", 1, &b"a"[..]).index("name", "a")).unwrap();
    db.save(&Save::new("p", 1, &b"b"[..]).index("name", "b")).unwrap();
    assert!(matches!(
        db.delete("p", &k, Expect::Version(1), 0),
        Err(StoreError::Conflict { found: Some(2), .. })
    ));
    assert!(matches!(
        db.delete("p", &k, Expect::Absent, 0),
        Err(StoreError::Conflict { found: Some(2), .. })
    ));
    assert_eq!(db.load("p", &k).unwrap().unwrap().value, b"b");
    assert_eq!(db.delete("p", &k, Expect::Version(2), 0), Ok(true));
    assert_eq!(db.load("p", &k).unwrap(), None);
    assert_eq!(db.query("p", "name", &"b".into(), 10).unwrap(), vec![]);
    assert_eq!(db.delete("p", &k, Expect::Any, 0), Ok(false));
    assert!(matches!(
        db.delete("p", &k, Expect::Version(2), 0),
        Err(StoreError::Conflict { found: None, .. })
    ));
    // written again: the version goes on after the tombstone's (3), so a
    // writer still holding version 1 or 2 can never match it
    assert_eq!(db.save(&Save::new("p", 1, &b"c"[..]).expect(Expect::Absent)), Ok(4));
    assert!(matches!(
        db.save(&Save::new("p", 1, &b"d"[..]).expect(Expect::Version(2))),
        Err(StoreError::Conflict { found: Some(4), .. })
    ));
}

fn query_by_index_follows_updates(db: Arc<dyn Backend>) {
    for (id, guild, level) in [(1, "red", 10), (2, "blue", 10), (3, "red", 20), (4, "red", 10)] {
        db.save(
            &Save::new("p", id, format!("player {id}").into_bytes())
                .index("guild", guild)
                .index("level", level)
                .index("tag", "a")
                .index("tag", "b"),
        )
        .unwrap();
    }
    let keys = |idx: &str, v: IndexValue, limit| -> Vec<Key> {
        db.query("p", idx, &v, limit)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    assert_eq!(
        keys("guild", "red".into(), 10),
        vec![Key::Int(1), Key::Int(3), Key::Int(4)]
    );
    assert_eq!(keys("guild", "red".into(), 2), vec![Key::Int(1), Key::Int(3)]);
    assert_eq!(
        keys("level", Key::Int(10), 10),
        vec![Key::Int(1), Key::Int(2), Key::Int(4)]
    );
    assert_eq!(keys("level", "10".into(), 10), vec![]);
    assert_eq!(keys("tag", "b".into(), 10).len(), 4);
    assert_eq!(keys("guild", "green".into(), 10), vec![]);
    assert_eq!(db.query("q", "guild", &"red".into(), 10).unwrap(), vec![]);
    let (_, d) = db.query("p", "guild", &"blue".into(), 10).unwrap().remove(0);
    assert_eq!(d, doc(b"player 2", 1, 0));
    // 3 moves to blue: gone from red, found under blue with its new value
    db.save(&Save::new("p", 3, &b"moved"[..]).index("guild", "blue"))
        .unwrap();
    assert_eq!(keys("guild", "red".into(), 10), vec![Key::Int(1), Key::Int(4)]);
    assert_eq!(keys("guild", "blue".into(), 10), vec![Key::Int(2), Key::Int(3)]);
    assert_eq!(keys("level", Key::Int(20), 10), vec![]);
    assert_eq!(keys("tag", "a".into(), 10), vec![Key::Int(1), Key::Int(2), Key::Int(4)]);
    let blue = db.query("p", "guild", &"blue".into(), 10).unwrap();
    assert_eq!(blue[1], (Key::Int(3), doc(b"moved", 2, 0)));
    // a failed write leaves the old entries
    assert!(db
        .save(
            &Save::new("p", 4, &b"x"[..])
                .expect(Expect::Absent)
                .index("guild", "green")
        )
        .is_err());
    assert_eq!(keys("guild", "green".into(), 10), vec![]);
    assert_eq!(keys("guild", "red".into(), 10), vec![Key::Int(1), Key::Int(4)]);
}

fn batch_is_all_or_nothing(db: Arc<dyn Backend>) {
    db.save(&Save::new("p", 2, &b"two"[..]).index("g", "x")).unwrap();
    let batch = vec![
        Save::new("p", 1, &b"one"[..]).index("g", "y"),
        Save::new("p", 2, &b"two'"[..]).index("g", "y"),
        Save::new("p", 3, &b"three"[..])
            .expect(Expect::Version(5))
            .index("g", "y"),
        Save::new("p", 4, &b"four"[..]),
    ];
    assert!(matches!(
        db.batch(&batch),
        Err(StoreError::Conflict {
            key: Key::Int(3),
            found: None,
            ..
        })
    ));
    assert_eq!(db.load("p", &Key::Int(1)).unwrap(), None);
    assert_eq!(db.load("p", &Key::Int(2)).unwrap(), Some(doc(b"two", 1, 0)));
    assert_eq!(db.load("p", &Key::Int(4)).unwrap(), None);
    assert_eq!(db.query("p", "g", &"y".into(), 10).unwrap(), vec![]);
    assert_eq!(db.query("p", "g", &"x".into(), 10).unwrap().len(), 1);
    // the same batch, fixed, writes everything; a key twice counts twice
    let mut batch = batch;
    batch[2].expect = Expect::Absent;
    batch.push(Save::new("p", 1, &b"one'"[..]).expect(Expect::Version(1)));
    assert_eq!(db.batch(&batch), Ok(vec![1, 2, 1, 1, 2]));
    assert_eq!(db.load("p", &Key::Int(1)).unwrap(), Some(doc(b"one'", 2, 0)));
    assert_eq!(db.query("p", "g", &"y".into(), 10).unwrap().len(), 2);
    assert_eq!(db.batch(&[]), Ok(vec![]));
}

#[test]
fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let store = Store::new(Sqlite::open(&path).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            store
                .save(Save::new("p", 1, &b"kept"[..]).epoch(2).index("g", "x"))
                .await
                .unwrap();
            store.save(Save::new("p", 2, &b"gone"[..])).await.unwrap();
            store.delete("p", 2, Expect::Any, 0).await.unwrap();
        });
        store.close();
    }
    let db = Sqlite::open(&path).unwrap();
    assert_eq!(db.load("p", &Key::Int(1)).unwrap(), Some(doc(b"kept", 1, 2)));
    assert_eq!(db.load("p", &Key::Int(2)).unwrap(), None);
    assert_eq!(db.query("p", "g", &"x".into(), 10).unwrap().len(), 1);
    assert_eq!(db.save(&Save::new("p", 2, &b"back"[..])), Ok(3));
}

#[test]
fn a_store_that_is_not_sqlite_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![0x55u8; 8192]).unwrap();
    let err = Sqlite::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
    assert!(err.to_string().starts_with("backend: "), "{err}");
    let err = Sqlite::open(dir.path().join("no/such/folder/x.db")).err().unwrap();
    assert!(matches!(err, StoreError::Backend(_)), "{err}");
}

/// Threads race on one key, each loading and saving with the version it
/// saw: exactly one save wins per version, the others conflict.
fn concurrent_saves_one_winner_per_version(db: Arc<dyn Backend>) {
    db.save(&Save::new("c", 0, vec![0])).unwrap();
    const THREADS: usize = 6;
    const TRIES: usize = 60;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (db, barrier) = (db.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                let mut lost = 0;
                for _ in 0..TRIES {
                    let seen = db.load("c", &Key::Int(0)).unwrap().unwrap();
                    let save = Save::new("c", 0, vec![t as u8]).expect(Expect::Version(seen.version));
                    match db.save(&save) {
                        Ok(v) => {
                            assert_eq!(v, seen.version + 1);
                            won.push((v, t as u8));
                        }
                        Err(StoreError::Conflict { .. }) => lost += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                (won, lost)
            })
        })
        .collect();
    let mut wins = Vec::new();
    let mut losses = 0;
    for h in handles {
        let (w, l) = h.join().unwrap();
        wins.extend(w);
        losses += l;
    }
    wins.sort();
    let versions: Vec<u64> = wins.iter().map(|w| w.0).collect();
    let expected: Vec<u64> = (2..2 + wins.len() as u64).collect();
    assert_eq!(versions, expected, "one winner per version, none skipped");
    assert_eq!(wins.len() + losses, THREADS * TRIES);
    let last = db.load("c", &Key::Int(0)).unwrap().unwrap();
    assert_eq!(last.version, *versions.last().unwrap());
    assert_eq!(last.value, vec![wins.last().unwrap().1]);
}

/// The same race through the asynchronous handle: many saves expecting the
/// same version at once, exactly one wins.
fn store_handle_races_and_closes(db: Arc<dyn Backend>) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(store_handle_races_and_closes_async(db))
}

async fn store_handle_races_and_closes_async(db: Arc<dyn Backend>) {
    let store = Store::with_options(db, StoreOptions::default());
    assert_eq!(store.save(Save::new("c", "k", vec![0])).await, Ok(1));
    for round in 1..=5u64 {
        let futs: Vec<_> = (0..20u8)
            .map(|i| store.save(Save::new("c", "k", vec![i]).expect(Expect::Version(round))))
            .collect();
        let mut ok = 0;
        for f in futs {
            match f.await {
                Ok(v) => {
                    assert_eq!(v, round + 1);
                    ok += 1
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 1, "round {round}");
    }
    let d = store.load("c", "k").await.unwrap().unwrap();
    assert_eq!(d.version, 6);
    assert_eq!(store.query("c", "none", 1, 10).await, Ok(vec![]));
    assert_eq!(store.batch(vec![Save::new("c", 1, vec![1])]).await, Ok(vec![1]));
    assert_eq!(store.delete("c", 1, Expect::Version(1), 0).await, Ok(true));
    let clone = store.clone();
    let late = store.load("c", "k");
    store.close();
    // queued before close: done; after: refused
    assert_eq!(late.await.unwrap().unwrap().version, 6);
    assert_eq!(clone.load("c", "k").await, Err(StoreError::Closed));
}

/// Many saves started at once (on SQLite: committed in groups), some of
/// them refused: each refused one leaves its document and index entries as
/// they were, every other one is written with its index entries; then as
/// many loads at once each find their own document.
fn saves_at_once_succeed_or_fail_alone(db: Arc<dyn Backend>) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store = Store::with_options(db, StoreOptions::default());
    rt.block_on(async {
        // key 0 stored by epoch 5: a save at epoch 1 is stale
        let fenced = Save::new("g", 0, b"old".to_vec()).epoch(5).index("tag", "old");
        assert_eq!(store.save(fenced).await, Ok(1));
        let futs: Vec<_> = (0..200i64)
            .map(|k| {
                let mut s = Save::new("g", k, k.to_be_bytes().to_vec()).epoch(1).index("tag", "new");
                if k % 50 == 7 {
                    s = s.expect(Expect::Version(9)); // never there: conflict
                }
                store.save(s)
            })
            .collect();
        let mut written = 0;
        for (k, f) in futs.into_iter().enumerate() {
            match f.await {
                Ok(v) => {
                    assert!(k != 0 && k % 50 != 7, "save {k} should have failed");
                    assert_eq!(v, 1);
                    written += 1;
                }
                Err(StoreError::StaleEpoch { .. }) => assert_eq!(k, 0),
                Err(StoreError::Conflict { .. }) => assert_eq!(k % 50, 7),
                Err(e) => panic!("save {k}: {e}"),
            }
        }
        assert_eq!(written, 200 - 1 - 4);
        let old = store.load("g", 0).await.unwrap().unwrap();
        assert_eq!((old.value.as_slice(), old.version, old.epoch), (&b"old"[..], 1, 5));
        assert_eq!(store.load("g", 7).await, Ok(None));
        let tagged = store.query("g", "tag", "new", 1000).await.unwrap();
        assert_eq!(tagged.len(), written);
        assert_eq!(store.query("g", "tag", "old", 10).await.unwrap().len(), 1);
        // as many loads at once (on SQLite: read in groups), each its own
        let loads: Vec<_> = (0..200i64).map(|k| store.load("g", k)).collect();
        for (k, f) in loads.into_iter().enumerate() {
            let k = k as i64;
            let got = f.await.unwrap();
            match got {
                Some(d) if k == 0 => assert_eq!(d.value, b"old"),
                Some(d) => assert_eq!((d.value, d.version, d.epoch), (k.to_be_bytes().to_vec(), 1, 1)),
                None => assert_eq!(k % 50, 7, "key {k} missing"),
            }
        }
    });
    store.close();
}

/// Many takers of one counter at once: every value is handed out once, and
/// they are 1..n with no gap.
fn counters_never_repeat_under_races(db: Arc<dyn Backend>) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let store = Store::with_options(db, StoreOptions::default());
    let futs: Vec<_> = (0..40).map(|_| store.next_counter("__meta", "epoch")).collect();
    let mut got: Vec<u64> = rt.block_on(async {
        let mut out = Vec::new();
        for f in futs {
            out.push(f.await.unwrap());
        }
        out
    });
    got.sort();
    assert_eq!(got, (1..=40).collect::<Vec<u64>>());
    assert_eq!(rt.block_on(store.next_counter("__meta", "epoch")), Ok(41));
}

#[test]
fn a_full_queue_is_busy() {
    // the same with and without groups (a group holds `queue` waiting
    // operations as the worker queue does)
    struct Slow(bool);
    impl Backend for Slow {
        fn load(&self, _: &str, _: &Key) -> Result<Option<Doc>, StoreError> {
            std::thread::sleep(std::time::Duration::from_millis(200));
            Ok(None)
        }
        fn save(&self, _: &Save) -> Result<u64, StoreError> {
            panic!("a backend that panics")
        }
        fn delete(&self, _: &str, _: &Key, _: Expect, _: u64) -> Result<bool, StoreError> {
            Ok(false)
        }
        fn query(&self, _: &str, _: &str, _: &IndexValue, _: usize) -> Result<Vec<(Key, Doc)>, StoreError> {
            Ok(vec![])
        }
        fn batch(&self, _: &[Save]) -> Result<Vec<u64>, StoreError> {
            Ok(vec![])
        }
        fn groups(&self) -> bool {
            self.0
        }
    }
    for grouped in [false, true] {
        let store = Store::with_options(Arc::new(Slow(grouped)), StoreOptions { threads: 1, queue: 2 });
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let first = store.load("c", 1);
        std::thread::sleep(std::time::Duration::from_millis(50)); // the worker took it
        let queued: Vec<_> = (0..2).map(|_| store.load("c", 1)).collect();
        assert_eq!(
            rt.block_on(store.load("c", 1)),
            Err(StoreError::Busy),
            "grouped: {grouped}"
        );
        assert_eq!(rt.block_on(first), Ok(None));
        for q in queued {
            assert_eq!(rt.block_on(q), Ok(None));
        }
        // a panic loses that operation only
        assert_eq!(
            rt.block_on(store.save(Save::new("c", 1, vec![]))),
            Err(StoreError::Closed)
        );
        assert_eq!(rt.block_on(store.delete("c", 1, Expect::Any, 0)), Ok(false));
        assert_eq!(rt.block_on(store.load("c", 2)), Ok(None), "grouped: {grouped}");
    }
}

/// Throughput figures: `cargo test --release --lib store::tests::throughput
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let server = postgres::PgServer::start();
    let db: Arc<dyn Backend> = Arc::new(Postgres::connect(&server.params("postgres"), 8).unwrap());
    let value = vec![0xa5u8; 200];
    let n = 5_000;
    let t = Instant::now();
    for i in 0..n {
        db.save(&Save::new("p", i as i64, value.clone()).index("g", i as i64 % 100))
            .unwrap();
    }
    let saves = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        db.load("p", &Key::Int(i as i64)).unwrap().unwrap();
    }
    let loads = n as f64 / t.elapsed().as_secs_f64();
    let store = Store::with_options(
        db.clone(),
        StoreOptions {
            threads: 8,
            queue: 1024,
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (async_saves, async_loads) = rt.block_on(async {
        let t = Instant::now();
        for r in 0..(n as i64 / 100) {
            let futs: Vec<_> = (0..100)
                .map(|k| store.save(Save::new("a", r * 100 + k, value.clone())))
                .collect();
            for f in futs {
                f.await.unwrap();
            }
        }
        let saves = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for r in 0..(n as i64 / 100) {
            let futs: Vec<_> = (0..100).map(|k| store.load("a", r * 100 + k)).collect();
            for f in futs {
                f.await.unwrap().unwrap();
            }
        }
        (saves, n as f64 / t.elapsed().as_secs_f64())
    });
    store.close();
    println!(
        "PostgreSQL (fsync on, local socket): saves {saves:.0}/s, loads {loads:.0}/s; \
         through Store (8 threads, 100 in flight): saves {async_saves:.0}/s, loads {async_loads:.0}/s"
    );
    let value = vec![0xa5u8; 200];
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            Sqlite::open_with(
                dir.path().join("store.db"),
                SqliteOptions {
                    synchronous: sync,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let n = if sync == Synchronous::Full { 2_000 } else { 20_000 };
        let t = Instant::now();
        for i in 0..n {
            db.save(&Save::new("p", i as i64, value.clone()).index("g", i as i64 % 100))
                .unwrap();
        }
        let saves = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for chunk in (0..20_000i64).collect::<Vec<_>>().chunks(100) {
            let batch: Vec<Save> = chunk
                .iter()
                .map(|i| Save::new("b", *i, value.clone()).index("g", *i % 100))
                .collect();
            db.batch(&batch).unwrap();
        }
        let batched = 20_000.0 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..50_000 {
            db.load("b", &Key::Int(i % 20_000)).unwrap().unwrap();
        }
        let loads = 50_000.0 / t.elapsed().as_secs_f64();
        // through the handle, 100 requests in flight
        let store = Store::with_options(db.clone(), StoreOptions::default());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (async_saves, async_loads) = rt.block_on(async {
            let t = Instant::now();
            let mut i = 0i64;
            while i < n as i64 {
                let futs: Vec<_> = (i..i + 100)
                    .map(|k| store.save(Save::new("a", k, value.clone()).index("g", k % 100)))
                    .collect();
                for f in futs {
                    f.await.unwrap();
                }
                i += 100;
            }
            let saves = n as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            for r in 0..500i64 {
                let futs: Vec<_> = (0..100).map(|k| store.load("b", r * 37 + k)).collect();
                for f in futs {
                    f.await.unwrap().unwrap();
                }
            }
            (saves, 50_000.0 / t.elapsed().as_secs_f64())
        });
        store.close();
        println!(
            "{sync:?}: saves {saves:.0}/s, batched saves (100 a transaction) {batched:.0}/s, loads {loads:.0}/s; \
             through Store (100 in flight): saves {async_saves:.0}/s, loads {async_loads:.0}/s"
        );
    }
}
