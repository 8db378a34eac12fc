//! Crashes around the DB node (issue 16), on both backends: kill -9 of a
//! Hall after and before a flush of its persistent entities, and kill -9 of
//! the DB node in the middle of writes. The DB node (a_1) and the Hall
//! (b_1) run as processes of their own; c_1 runs in this process and looks
//! at the store through DBProxy.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pg::PgServer;
use common::*;

/// Where the DB node keeps its documents.
enum Backend {
    Sqlite,
    Postgres(PgServer),
}

impl Backend {
    fn postgres(tag: &str) -> Backend {
        Backend::Postgres(PgServer::start(tag, "pw-of-the-crash-tests"))
    }

    /// The `store` table of a_1's entry.
    fn store(&self) -> String {
        match self {
            Backend::Sqlite => "store = { sqlite = \"game.db\" }".into(),
            Backend::Postgres(pg) => format!("store = {{ postgres = {:?} }}", pg.params("postgres")),
        }
    }

    /// The environment of the DB node's process.
    fn env(&self) -> Vec<(&str, &str)> {
        match self {
            Backend::Sqlite => vec![],
            Backend::Postgres(pg) => vec![("LUAHOST_PG_PASSWORD", pg.password.as_str())],
        }
    }
}

fn cluster(dir: &Path, backend: &Backend) -> PathBuf {
    let path = write_cluster(dir, &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)], "");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "a_1 = { type",
        &format!("a_1 = {{ {}, type", backend.store()),
        1,
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn db_node(path: &Path, backend: &Backend) -> Proc {
    Proc::run_node_env(path, "a_1", &backend.env())
}

fn wait_seen(c: &luahost::NodeHandle, name: &str, p: &Proc) {
    let seen = wait_until(Duration::from_secs(20), || live(c, name));
    assert!(seen, "{name} never came online: {}", p.log());
}

fn gold(c: &luahost::NodeHandle) -> String {
    eval(
        c,
        "local v = DBProxy.load('heroes', 1) return v and tostring(v.gold) or 'none'",
    )
}

/// The Hall's script (tests/cluster/scripts/main.lua, LUAHOST_TEST_HERO)
/// flushes hero 1 with 100 gold, then sets 200 without a flush. Killed
/// then, with an interval far away, the store has 100: the change since the
/// last flush is lost, nothing before it. With a short interval, the 200
/// is written by the periodic flush and is there after a kill.
fn a_hall_killed_loses_at_most_one_interval(backend: Backend) {
    let dir = TempDir::new("dbcrash-hall");
    let path = cluster(&dir.0, &backend);
    let a = db_node(&path, &backend);
    let c = start(&path, "c_1");
    wait_seen(&c, "a_1", &a);
    let hall = |interval: &str| {
        Proc::run_node_env(
            &path,
            "b_1",
            &[("LUAHOST_TEST_HERO", "1"), ("LUAHOST_TEST_HERO_INTERVAL", interval)],
        )
    };
    let b = hall("3600");
    assert!(b.wait_log("CHANGED 200", Duration::from_secs(20)), "{}", b.log());
    b.signal(libc::SIGKILL);
    drop(b);
    assert_eq!(gold(&c), "100", "the flushed value is there, the later change is lost");

    let b = hall("0.5");
    assert!(b.wait_log("CHANGED 200", Duration::from_secs(20)), "{}", b.log());
    let flushed = wait_until(Duration::from_secs(10), || gold(&c) == "200");
    assert!(flushed, "the periodic flush never wrote 200: {}", gold(&c));
    b.signal(libc::SIGKILL);
    drop(b);
    assert_eq!(gold(&c), "200");
}

/// c_1 writes documents of 20 KB (each says what it must hold) as fast as
/// it can from 8 coroutines, noting each acknowledged version; the DB node
/// is killed with SIGKILL in the middle. After a restart every document is
/// whole, and none is older than what was acknowledged.
fn the_db_node_killed_mid_write_tears_nothing(backend: Backend) {
    let dir = TempDir::new("dbcrash-db");
    let path = cluster(&dir.0, &backend);
    let a = db_node(&path, &backend);
    let c = start(&path, "c_1");
    wait_seen(&c, "a_1", &a);
    eval(
        &c,
        r#"
        acked, writers, failures = {}, 0, {}
        for k = 1, 8 do
            writers = writers + 1
            rpcco.fork(function()
                local n = 0
                while n < 100000 do
                    n = n + 1
                    local doc = { n = n, key = k, pad = string.rep(string.char(65 + n % 26), 20000) }
                    local ok, ver = pcall(DBProxy.save, "docs", "k" .. k, doc)
                    if not ok then failures[#failures + 1] = ver break end
                    acked[k] = { n = n, version = ver }
                end
                writers = writers - 1
            end)
        end
        return ""
        "#,
    );
    let writing = wait_until(Duration::from_secs(20), || {
        eval(&c, "local t = 0 for _, a in pairs(acked) do t = t + a.n end return t")
            .parse::<u64>()
            .unwrap()
            >= 200
    });
    assert!(writing, "the writes never got going");
    a.signal(libc::SIGKILL);
    drop(a);
    let stopped = wait_until(Duration::from_secs(20), || eval(&c, "return writers") == "0");
    assert!(stopped, "writers still running after the DB node died");
    let why = eval(&c, "return failures[1]");
    assert!(why.starts_with("node down: "), "{why}");

    let a = db_node(&path, &backend);
    wait_seen(&c, "a_1", &a);
    let out = eval(
        &c,
        r#"
        local out = {}
        for k = 1, 8 do
            local doc, ver = DBProxy.load("docs", "k" .. k)
            local a = acked[k]
            if a == nil then
                out[#out + 1] = k .. ": nothing acknowledged"
            elseif doc == nil then
                out[#out + 1] = k .. ": lost"
            elseif doc.key ~= k or doc.pad ~= string.rep(string.char(65 + doc.n % 26), 20000) then
                out[#out + 1] = k .. ": torn"
            elseif ver < a.version or (ver == a.version and doc.n ~= a.n) then
                out[#out + 1] = k .. ": older than acknowledged"
            end
        end
        return #out == 0 and "whole" or table.concat(out, "; ")
        "#,
    );
    assert_eq!(out, "whole");
}

#[test]
fn sqlite_a_hall_killed_loses_at_most_one_interval() {
    a_hall_killed_loses_at_most_one_interval(Backend::Sqlite);
}

#[test]
fn postgres_a_hall_killed_loses_at_most_one_interval() {
    a_hall_killed_loses_at_most_one_interval(Backend::postgres("pg-crash-hall"));
}

#[test]
fn sqlite_the_db_node_killed_mid_write_tears_nothing() {
    the_db_node_killed_mid_write_tears_nothing(Backend::Sqlite);
}

#[test]
fn postgres_the_db_node_killed_mid_write_tears_nothing() {
    the_db_node_killed_mid_write_tears_nothing(Backend::postgres("pg-crash-db"));
}

/// A graceful stop of the DB node completes the DbCtl calls it is serving:
/// c_1 has 20 saves in flight, held up by a write lock this test keeps on
/// the SQLite file; the DB node is stopped (SIGTERM) while they wait, then
/// the lock is let go. Every caller gets its save's version, not `node
/// down`, and the documents are there after a restart.
#[test]
fn a_graceful_stop_of_the_db_node_answers_the_calls_in_flight() {
    let backend = Backend::Sqlite;
    let dir = TempDir::new("dbcrash-stop");
    let path = cluster(&dir.0, &backend);
    let a = db_node(&path, &backend);
    let c = start(&path, "c_1");
    wait_seen(&c, "a_1", &a);
    assert_eq!(eval(&c, "return DBProxy.save('docs', 'warm', { n = 0 })"), "1");
    // the store's writer now waits on this lock (up to its busy timeout, 5 s)
    let file = rusqlite::Connection::open(dir.0.join("game.db")).unwrap();
    file.execute_batch("BEGIN IMMEDIATE").unwrap();
    eval(
        &c,
        r#"
        results = {}
        for k = 1, 20 do
            rpcco.fork(function()
                local ok, ver = pcall(DBProxy.save, "docs", "s" .. k, { n = k })
                results[k] = tostring(ok) .. " " .. tostring(ver)
            end)
        end
        return ""
        "#,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(eval(&c, "return #results"), "0", "the saves did not wait for the lock");
    a.signal(libc::SIGTERM);
    assert!(a.wait_log("stopping", Duration::from_secs(5)), "{}", a.log());
    std::thread::sleep(Duration::from_millis(500));
    file.execute_batch("ROLLBACK").unwrap();
    let answered = wait_until(Duration::from_secs(20), || {
        eval(&c, "local n = 0 for _ in pairs(results) do n = n + 1 end return n") == "20"
    });
    assert!(answered, "not every save was answered: {}", a.log());
    let out = eval(
        &c,
        r#"local bad = {} for k = 1, 20 do if results[k] ~= "true 1" then bad[#bad + 1] = k .. ": " .. results[k] end end
        return #bad == 0 and "all saved" or table.concat(bad, "; ")"#,
    );
    assert_eq!(out, "all saved");
    let mut a = a;
    let st = a.wait_exit(Duration::from_secs(20)).expect("a_1 did not stop");
    assert!(st.success(), "{}", a.log());
    drop(a);
    let a = db_node(&path, &backend);
    wait_seen(&c, "a_1", &a);
    assert_eq!(
        eval(
            &c,
            "local v, ver = DBProxy.load('docs', 's20') return v.n .. ' ' .. ver"
        ),
        "20 1"
    );
}
