//! DBProxy on the node that owns the store (issue 16, first slice): a node
//! whose cluster entry has `store = { sqlite = "game.db" }` opens it at boot
//! and its Lua reaches it through `require "dbproxy"`; each operation
//! suspends only its coroutine and comes back like a call's reply.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A cluster of a_1 (with a store, `game.db` beside the cluster file) and
/// b_1 (without).
fn cluster(dir: &Path) -> PathBuf {
    let path = write_cluster(dir, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("a_1 = { type", "a_1 = { store = { sqlite = \"game.db\" }, type", 1);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn round_trip_of_bytes_under_string_and_integer_keys() {
    let dir = TempDir::new("dbproxy-rt");
    let a = start(&cluster(&dir.0), "a_1");
    let out = eval(
        &a,
        r#"
        local db = require "dbproxy"
        local parts = {}
        local function add(...)
            for i = 1, select('#', ...) do parts[#parts + 1] = tostring((select(i, ...))) end
        end
        add(db.load("players", "alice"))                 -- nil nil: nothing yet
        add(db.save("players", "alice", "hp=10\0\255"))  -- 1
        local v, ver = db.load("players", "alice")
        add(v == "hp=10\0\255", ver)                     -- true 1
        add(db.save("players", "alice", "hp=9", 1))      -- 2
        add(db.save("players", 7, "seven", false))       -- 1 (absent expected)
        add(db.load("players", 7))                       -- seven 1
        add(db.load("players", "7"))                     -- nil nil: "7" is another key
        add(db.delete("players", "alice"))               -- true
        add(db.load("players", "alice"))                 -- nil nil
        add(db.delete("players", "alice"))               -- false
        add(db.save("players", "alice", "back"))         -- 4: versions go on after a delete
        return table.concat(parts, " ")
        "#,
    );
    assert_eq!(out, "nil nil 1 true 1 2 1 seven 1 nil nil true nil nil false 4");
    assert!(
        dir.0.join("game.db").exists(),
        "the file is relative to the cluster file"
    );
}

#[test]
fn a_stale_write_fails_with_a_conflict_and_writes_nothing() {
    let dir = TempDir::new("dbproxy-conflict");
    let a = start(&cluster(&dir.0), "a_1");
    let out = eval(
        &a,
        r#"
        local db = require "dbproxy"
        db.save("c", 1, "one")
        db.save("c", 1, "two")
        local ok, err = pcall(db.save, "c", 1, "stale", 1)
        local ok2, err2 = pcall(db.save, "c", 1, "stale", false)
        local v, ver = db.load("c", 1)
        return tostring(ok) .. "|" .. err .. "|" .. tostring(ok2) .. "|" .. err2 .. "|" .. v .. " " .. ver
        "#,
    );
    let parts: Vec<&str> = out.split('|').collect();
    assert_eq!(parts[0], "false", "{out}");
    assert!(parts[1].starts_with("conflict: "), "{out}");
    assert!(parts[1].contains("expected version 1, found version 2"), "{out}");
    assert_eq!(parts[2], "false", "{out}");
    assert!(
        parts[3].starts_with("conflict: ") && parts[3].contains("expected absent"),
        "{out}"
    );
    assert_eq!(parts[4], "two 2", "{out}");
    // a wrong value is an error at the call site
    let err = a
        .eval(
            r#"return require("dbproxy").save("c", 1, {})"#,
            std::time::Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("value must be a string"), "{err}");
}

#[test]
fn lua_does_not_wait_for_the_database() {
    let dir = TempDir::new("dbproxy-async");
    let a = start(&cluster(&dir.0), "a_1");
    let out = eval(
        &a,
        r#"
        local db = require "dbproxy"
        local done = {}
        -- each fork runs until its save suspends it; the eval goes on at once
        rpcco.fork(function() done[1] = db.save("k", "x", "1") end)
        rpcco.fork(function() done[2] = db.save("k", "y", "2") end)
        local before = tostring(done[1]) .. tostring(done[2])
        local n = 0
        while not (done[1] and done[2]) do rpcco.sleep(0.005); n = n + 1; assert(n < 2000, "saves never completed") end
        return before .. " " .. done[1] .. done[2] .. " " .. db.load("k", "x") .. db.load("k", "y")
        "#,
    );
    assert_eq!(out, "nilnil 11 12");
}

#[test]
fn concurrent_updates_both_apply() {
    let dir = TempDir::new("dbproxy-update");
    let a = start(&cluster(&dir.0), "a_1");
    let out = eval(
        &a,
        r#"
        local db = require "dbproxy"
        local runs, finished = 0, 0
        local function bump()
            db.update("counters", "c", function(v)
                runs = runs + 1
                return tostring((tonumber(v) or 0) + 1)
            end)
            finished = finished + 1
        end
        rpcco.fork(bump)
        rpcco.fork(bump)
        local n = 0
        while finished < 2 do rpcco.sleep(0.005); n = n + 1; assert(n < 2000, "updates never completed") end
        local v, ver = db.load("counters", "c")
        return v .. " " .. ver .. " " .. runs
        "#,
    );
    let parts: Vec<&str> = out.split(' ').collect();
    assert_eq!(&parts[..2], &["2", "2"], "{out}");
    let runs: u32 = parts[2].parse().unwrap();
    assert!((2..=10).contains(&runs), "{out}");
    // an update that always loses raises the conflict after its retries
    let out = eval(
        &a,
        r#"
        local db = require "dbproxy"
        local tries = 0
        local ok, err = pcall(db.update, "counters", "c", function(v, ver)
            tries = tries + 1
            db.save("counters", "c", "someone else")  -- a write in between, every time
            return "mine"
        end)
        return tostring(ok) .. " " .. tries .. " " .. err:sub(1, 9)
        "#,
    );
    assert_eq!(out, "false 5 conflict:");
}

#[test]
fn data_survives_a_restart_of_the_node() {
    let dir = TempDir::new("dbproxy-restart");
    let path = cluster(&dir.0);
    let a = start(&path, "a_1");
    assert_eq!(eval(&a, r#"return require("dbproxy").save("p", 42, "kept")"#), "1");
    a.stop();
    drop(a);
    let a = start(&path, "a_1");
    assert_eq!(
        eval(
            &a,
            r#"local v, ver = require("dbproxy").load("p", 42) return v .. " " .. ver"#
        ),
        "kept 1"
    );
}

#[test]
fn a_node_without_a_store_says_so() {
    let dir = TempDir::new("dbproxy-nostore");
    let b = start(&cluster(&dir.0), "b_1");
    let out = eval(
        &b,
        r#"local ok, err = pcall(require("dbproxy").load, "p", 1) return tostring(ok) .. " " .. err"#,
    );
    assert!(out.starts_with("false no store: node b_1 has no store"), "{out}");
}

#[test]
fn a_bad_store_entry_names_the_field() {
    let dir = TempDir::new("dbproxy-badcfg");
    let path = cluster(&dir.0);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("sqlite = \"game.db\"", "sqlite = 3", 1);
    std::fs::write(&path, text).unwrap();
    let err = luahost::ClusterConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("node a_1: store.sqlite must be a file name"), "{err}");
}
