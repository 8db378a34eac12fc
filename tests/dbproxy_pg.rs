//! DBProxy on PostgreSQL (issue 16): the DB node's cluster entry has
//! `store = { postgres = "host=... user=... dbname=..." }` and its password
//! comes from `LUAHOST_PG_PASSWORD`; a real server (tests/common/pg.rs) is
//! made for each test and restarted under running nodes.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pg::PgServer;
use common::*;

/// A cluster of a_1 (type A, the DB node, on `pg`'s database `postgres`)
/// and b_1.
fn cluster(dir: &Path, pg: &PgServer) -> PathBuf {
    let path = write_cluster(dir, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "a_1 = { type",
        &format!(
            "a_1 = {{ store = {{ postgres = {:?}, pool = 4 }}, type",
            pg.params("postgres")
        ),
        1,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The DB node as a process of its own with the password in its
/// environment, and b_1 in this process, seeing it.
fn up(path: &Path, pg: &PgServer) -> (Proc, luahost::NodeHandle) {
    let a = Proc::run_node_env(path, "a_1", &[("LUAHOST_PG_PASSWORD", &pg.password)]);
    let b = start(path, "b_1");
    let seen = wait_until(Duration::from_secs(20), || live(&b, "a_1"));
    assert!(seen, "a_1 never came up: {}", a.log());
    (a, b)
}

#[test]
fn without_the_password_the_db_node_does_not_start_and_says_why() {
    let pg = PgServer::start("pg-nopw", "pw-of-this-test");
    let dir = TempDir::new("dbproxy-pg-nopw");
    let path = cluster(&dir.0, &pg);
    let mut a = Proc::run_node(&path, "a_1");
    let st = a
        .wait_exit(Duration::from_secs(20))
        .expect("a_1 kept running without a password");
    assert!(!st.success());
    // (the log is read by a thread of its own: wait for it)
    assert!(
        a.wait_log("LUAHOST_PG_PASSWORD is not set", Duration::from_secs(5)),
        "{}",
        a.log()
    );
    assert!(a.log().contains("store.postgres"), "{}", a.log());
    let mut a = Proc::run_node_env(&path, "a_1", &[("LUAHOST_PG_PASSWORD", "wrong")]);
    assert!(a.wait_exit(Duration::from_secs(20)).is_some_and(|s| !s.success()));
    assert!(
        a.wait_log("password authentication failed", Duration::from_secs(5)),
        "{}",
        a.log()
    );
}

/// Typed round trip, a conflict and a query through DbCtl to a DB node on
/// PostgreSQL; then the server is stopped under the running nodes (calls
/// fail at once with `unavailable: ...`) and started again (calls work
/// again, the data is there).
#[test]
fn round_trip_conflict_and_a_restart_of_postgres() {
    let pg = PgServer::start("pg-restart", "pw-of-this-test");
    let dir = TempDir::new("dbproxy-pg");
    let path = cluster(&dir.0, &pg);
    let (_a, b) = up(&path, &pg);
    // every schema type, compared field by field after the round trip
    let out = eval(
        &b,
        &(LUA_DUMP.to_string()
            + r#"
        local v = { i8 = -128, i16 = 32767, i32 = -2147483648, i48 = 140737488355327, i64 = math.mininteger,
            u8 = 255, u16 = 65535, u32 = 4294967295, u64 = math.maxinteger, f = 1.5, d = 1e300, b = true,
            s = "héllo", by = "\0\1\255", arr = { 1, -2, 3 }, m = { x = 1, y = -1 }, item = { id = 5, tag = "t" },
            items = { { id = 1 }, { id = 2, tag = "two" } } }
        assert(DBProxy.save("typed", 1, v) == 1)
        local w, ver = DBProxy.load("typed", 1)
        assert(dump(w) == dump(v), dump(w) .. " ~= " .. dump(v))
        DBProxy.save("players", 1, { name = "ann", level = 1, friends = { 2 } })
        DBProxy.save("players", 2, { name = "bob", level = 1, friends = { 1 } })
        local ok, err = pcall(DBProxy.save, "players", 1, { name = "ann", level = 9, friends = {} }, false)
        local q = DBProxy.query("players", "byFriend", 1)
        return ver .. " " .. tostring(ok) .. " " .. err:sub(1, 9) .. " " .. #q .. ":" .. q[1].value.name
        "#),
    );
    assert_eq!(out, "1 false conflict: 1:bob");

    pg.pg_ctl("stop");
    let probe =
        r#"local ok, err = pcall(DBProxy.load, "players", 2) return tostring(ok) .. " " .. (ok and err.name or err)"#;
    let out = eval(&b, probe);
    assert!(
        out.starts_with("false unavailable: the database cannot be reached"),
        "{out}"
    );
    let out = eval(
        &b,
        r#"local ok, err = pcall(DBProxy.save, "players", 3, { name = "cy", level = 1, friends = {} }) return tostring(ok) .. " " .. tostring(err)"#,
    );
    assert!(out.starts_with("false unavailable: "), "{out}");

    pg.pg_ctl("start");
    let mut last = String::new();
    let back = wait_until(Duration::from_secs(20), || {
        last = eval(&b, probe);
        last == "true bob"
    });
    assert!(back, "never recovered: {last}");
    assert_eq!(
        eval(
            &b,
            r#"return DBProxy.save("players", 3, { name = "cy", level = 1, friends = {} })"#
        ),
        "1"
    );
}

/// A DB node whose PostgreSQL server is down when it boots starts all the
/// same: DbCtl answers `unavailable: ...` until the server is started, then
/// everything works (the tables are made by the first connection).
#[test]
fn a_db_node_booted_before_postgres_serves_once_it_is_up() {
    let pg = PgServer::create("pg-late", "pw-of-this-test");
    let dir = TempDir::new("dbproxy-pg-late");
    let path = cluster(&dir.0, &pg);
    let (a, b) = up(&path, &pg);
    assert!(
        a.wait_log(
            "DbCtl answers `unavailable` until the server can be reached",
            Duration::from_secs(5)
        ),
        "{}",
        a.log()
    );
    let save = r#"local ok, err = pcall(DBProxy.save, "players", 1, { name = "ann", level = 3, friends = { 2 } })
        return tostring(ok) .. " " .. tostring(err)"#;
    let out = eval(&b, save);
    assert!(
        out.starts_with("false unavailable: the database cannot be reached"),
        "{out}"
    );
    let probe = r#"local ok, err = pcall(DBProxy.load, "players", 1) return tostring(ok) .. " " .. (ok and tostring(err and err.level) or err)"#;
    let out = eval(&b, probe);
    assert!(out.starts_with("false unavailable: "), "{out}");

    pg.pg_ctl("start");
    let mut last = String::new();
    let back = wait_until(Duration::from_secs(20), || {
        last = eval(&b, probe);
        last == "true nil"
    });
    assert!(back, "never served: {last}");
    assert_eq!(eval(&b, save), "true 1");
    assert_eq!(eval(&b, probe), "true 3");
    assert_eq!(
        eval(
            &b,
            r#"local q = DBProxy.query("players", "byFriend", 2) return #q .. ":" .. q[1].value.name"#
        ),
        "1:ann"
    );
}
