//! DBProxy (issue 16): a node whose cluster entry has `store = { sqlite =
//! "game.db" }` is the DB node; every node reaches its store through
//! `DBProxy` (`require "dbproxy"`), the others through the built-in DbCtl
//! interface. Each operation suspends only its coroutine and comes back
//! like a call's reply. The collections are those of the test schema
//! (tests/cluster/scripts/entitydef.lua); the DB node's type there is A.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A cluster of a_1 (type A, the DB node: `game.db` beside the cluster
/// file), b_1 and c_1 (without a store).
fn cluster(dir: &Path) -> PathBuf {
    let path = write_cluster(dir, &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)], "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen("a_1 = { type", "a_1 = { store = { sqlite = \"game.db\" }, type", 1);
    std::fs::write(&path, text).unwrap();
    path
}

/// a_1 and b_1 running, b_1 seeing a_1.
fn two(dir: &Path) -> (luahost::NodeHandle, luahost::NodeHandle) {
    let path = cluster(dir);
    let a = start(&path, "a_1");
    let b = start(&path, "b_1");
    wait_live(&b, &["a_1"]);
    (a, b)
}

const ROUND_TRIP: &str = r#"
    local db = require "dbproxy"
    local parts = {}
    local function add(...)
        for i = 1, select('#', ...) do parts[#parts + 1] = tostring((select(i, ...))) end
    end
    add(db.load("blobs", "alice"))                 -- nil nil: nothing yet
    add(db.save("blobs", "alice", "hp=10\0\255"))  -- 1
    local v, ver = db.load("blobs", "alice")
    add(v == "hp=10\0\255", ver)                   -- true 1
    add(db.save("blobs", "alice", "hp=9", 1))      -- 2
    add(db.save("nums", 7, "seven", false))        -- 1 (absent expected)
    add(db.load("nums", 7))                        -- seven 1
    add(db.delete("blobs", "alice"))               -- true
    add(db.load("blobs", "alice"))                 -- nil nil
    add(db.delete("blobs", "alice"))               -- false
    add(db.save("blobs", "alice", "back"))         -- 4: versions go on after a delete
    return table.concat(parts, " ")
"#;

#[test]
fn round_trip_on_the_db_node_and_from_another_node() {
    let dir = TempDir::new("dbproxy-rt");
    let (a, b) = two(&dir.0);
    let expected = "nil nil 1 true 1 2 1 seven 1 true nil nil false 4";
    assert_eq!(eval(&a, ROUND_TRIP), expected);
    // the same from b_1, through DbCtl (on other keys: the counts start anew)
    let remote = ROUND_TRIP.replace("\"alice\"", "\"bob\"").replace(" 7", " 8");
    assert_eq!(eval(&b, &remote), expected);
    // each sees the other's writes: one store
    assert_eq!(
        eval(&b, r#"local v, ver = DBProxy.load("nums", 7) return v .. " " .. ver"#),
        "seven 1"
    );
    assert!(
        dir.0.join("game.db").exists(),
        "the file is relative to the cluster file"
    );
}

/// Every schema type through a struct, and a MessagePack document, saved
/// from b_1 and loaded back on both nodes, compared field by field.
#[test]
fn every_schema_type_and_documents_round_trip() {
    let dir = TempDir::new("dbproxy-types");
    let (a, b) = two(&dir.0);
    let value = r#"{
        i8 = -128, i16 = 32767, i32 = -2147483648, i48 = 140737488355327, i64 = math.mininteger,
        u8 = 255, u16 = 65535, u32 = 4294967295, u64 = math.maxinteger,
        f = 1.5, d = 1e300, b = true, s = "héllo", by = "\0\1\255",
        arr = { 1, -2, 3 }, m = { x = 1, y = -1 }, item = { id = 5, tag = "t" }, opt = nil,
        items = { { id = 1 }, { id = 2, tag = "two" } },
    }"#;
    let dump = LUA_DUMP;
    let saved = eval(
        &b,
        &format!(
            "{dump} local v = {value} assert(DBProxy.save('typed', 1, v) == 1)
             assert(DBProxy.save('docs', 'd', {{ tag = 'x', list = {{ 1, 2.5, 'three', false }}, nested = {{ a = {{ b = 'c' }} }}, [7] = 'seven' }}) == 1)
             return dump(v)"
        ),
    );
    let back = format!("{dump} local v, ver = DBProxy.load('typed', 1) return dump(v) .. ' ' .. ver");
    assert_eq!(eval(&b, &back), format!("{saved} 1"));
    assert_eq!(eval(&a, &back), format!("{saved} 1"));
    let doc = format!("{dump} return dump((DBProxy.load('docs', 'd')))");
    let expected = "{7=string:seven,list={1=number:1,2=number:2.5,3=string:three,4=boolean:false},nested={a={b=string:c}},tag=string:x}";
    assert_eq!(eval(&b, &doc), expected);
    assert_eq!(eval(&a, &doc), expected);
}

#[test]
fn a_stale_write_fails_with_a_conflict_and_writes_nothing() {
    let dir = TempDir::new("dbproxy-conflict");
    let (_a, b) = two(&dir.0);
    let out = eval(
        &b,
        r#"
        local db = require "dbproxy"
        db.save("blobs", "c", "one")
        db.save("blobs", "c", "two")
        local ok, err = pcall(db.save, "blobs", "c", "stale", 1)
        local ok2, err2 = pcall(db.save, "blobs", "c", "stale", false)
        local v, ver = db.load("blobs", "c")
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
}

/// Unknown collections, wrong values and keys are errors at the caller's
/// line, and nothing is written.
#[test]
fn bad_input_is_an_error_at_the_call_site() {
    let dir = TempDir::new("dbproxy-bad");
    let (_a, b) = two(&dir.0);
    // (no tail calls: the caller's line is the one named)
    let err_of = |code: &str| b.eval(code, EVAL).expect_err(code).to_string();
    let e = err_of("\n\nlocal r = DBProxy.save('nope', 1, 'x') return r");
    assert!(
        e.contains(":3: dbproxy.save: no collection 'nope' in entitydef.Collection"),
        "{e}"
    );
    let e = err_of("\nlocal r = DBProxy.save('players', 1, { name = 'x', level = 'high', friends = {} }) return r");
    assert!(
        e.contains(":2: dbproxy.save: players: expected PlayerRec: at .level: expected int32"),
        "{e}"
    );
    let e = err_of("local r = DBProxy.save('players', 'one', { name = 'x', level = 1, friends = {} }) return r");
    assert!(
        e.contains(":1: dbproxy.save: players's key must be an integer, got string"),
        "{e}"
    );
    let e = err_of("return DBProxy.save('docs', 'k', { f = print })");
    assert!(
        e.contains("dbproxy.save: docs: at [f]: a function cannot be stored"),
        "{e}"
    );
    let e = err_of("return DBProxy.query('players', 'byLevel', 1)");
    assert!(e.contains("collection players has no index 'byLevel'"), "{e}");
    let e = err_of("local r = DBProxy.update('counters', 'c', function() return 'many' end) return r");
    assert!(e.contains(":1: dbproxy.update: counters: expected int64"), "{e}");
    assert_eq!(
        eval(&b, "local v = DBProxy.load('players', 1) local c = DBProxy.load('counters', 'c') return tostring(v) .. tostring(c)"),
        "nilnil"
    );
}

#[test]
fn query_by_index_follows_updates() {
    let dir = TempDir::new("dbproxy-query");
    let (_a, b) = two(&dir.0);
    let out = eval(
        &b,
        r#"
        local db = require "dbproxy"
        db.save("players", 1, { name = "ann", level = 3, friends = { 2, 3 } })
        db.save("players", 2, { name = "bob", level = 1, friends = { 1 } })
        db.save("players", 3, { name = "cy", level = 2, friends = { 1, 2 } })
        local function keys(list)
            local out = {}
            for _, d in ipairs(list) do out[#out + 1] = d.key .. ":" .. d.value.name .. "@" .. d.version end
            return table.concat(out, ",")
        end
        local r1 = keys(db.query("players", "byFriend", 1))
        local r2 = keys(db.query("players", "byName", "bob"))
        db.save("players", 3, { name = "cy", level = 2, friends = { 2 } })   -- no longer a friend of 1
        local r3 = keys(db.query("players", "byFriend", 1))
        local r4 = keys(db.query("players", "byFriend", 2, 1))                -- at most one
        return table.concat({ r1, r2, r3, r4 }, " | ")
        "#,
    );
    assert_eq!(out, "2:bob@1,3:cy@1 | 2:bob@1 | 2:bob@1 | 1:ann@1");
}

#[test]
fn lua_does_not_wait_for_the_database() {
    let dir = TempDir::new("dbproxy-async");
    let (a, b) = two(&dir.0);
    for n in [&a, &b] {
        let out = eval(
            n,
            r#"
            local db = require "dbproxy"
            local done = {}
            -- each fork runs until its save suspends it; the eval goes on at once
            rpcco.fork(function() done[1] = db.save("blobs", "x", "1") end)
            rpcco.fork(function() done[2] = db.save("blobs", "y", "2") end)
            local before = tostring(done[1]) .. tostring(done[2])
            local n = 0
            while not (done[1] and done[2]) do rpcco.sleep(0.005); n = n + 1; assert(n < 2000, "saves never completed") end
            return before .. " " .. db.load("blobs", "x") .. db.load("blobs", "y")
            "#,
        );
        assert_eq!(out, "nilnil 12");
    }
}

/// Updates from two nodes at once all apply (each retried on conflict);
/// one that always loses raises the conflict after its retries.
#[test]
fn concurrent_updates_from_two_nodes_all_apply() {
    let dir = TempDir::new("dbproxy-update");
    let (a, b) = two(&dir.0);
    let bump = r#"
        local finished, failed = 0, {}
        for _ = 1, 5 do
            rpcco.fork(function()
                local ok, err = pcall(DBProxy.update, "counters", "c", function(v) return (v or 0) + 1 end)
                if not ok then failed[#failed + 1] = err end
                finished = finished + 1
            end)
        end
        local n = 0
        while finished < 5 do rpcco.sleep(0.005); n = n + 1; assert(n < 4000, "updates never completed") end
        return #failed == 0 and "done" or table.concat(failed, "; ")
    "#;
    std::thread::scope(|s| {
        let t = s.spawn(|| eval(&a, bump));
        assert_eq!(eval(&b, bump), "done");
        assert_eq!(t.join().unwrap(), "done");
    });
    assert_eq!(
        eval(
            &b,
            r#"local v, ver = DBProxy.load("counters", "c") return v .. " " .. ver"#
        ),
        "10 10"
    );
    let out = eval(
        &b,
        r#"
        local tries = 0
        local ok, err = pcall(DBProxy.update, "counters", "c", function(v, ver)
            tries = tries + 1
            DBProxy.save("counters", "c", 0)  -- a write in between, every time
            return 99
        end)
        return tostring(ok) .. " " .. tries .. " " .. err:sub(1, 9)
        "#,
    );
    assert_eq!(out, "false 10 conflict:");
}

#[test]
fn data_survives_a_restart_of_the_db_node() {
    let dir = TempDir::new("dbproxy-restart");
    let path = cluster(&dir.0);
    let a = start(&path, "a_1");
    assert_eq!(eval(&a, r#"return DBProxy.save("nums", 42, "kept")"#), "1");
    a.stop();
    drop(a);
    let a = start(&path, "a_1");
    assert_eq!(
        eval(&a, r#"local v, ver = DBProxy.load("nums", 42) return v .. " " .. ver"#),
        "kept 1"
    );
}

/// With the DB node away, calls fail at once with `node down`; they work
/// again when it is back.
#[test]
fn db_node_down_is_a_clear_error() {
    let dir = TempDir::new("dbproxy-down");
    let path = cluster(&dir.0);
    let b = start(&path, "b_1");
    let probe = r#"local ok, err = pcall(DBProxy.load, "nums", 1) return tostring(ok) .. " " .. tostring(err)"#;
    let out = eval(&b, probe);
    assert!(out.starts_with("false node down: no A node is online"), "{out}");
    let a = start(&path, "a_1");
    wait_live(&b, &["a_1"]);
    assert_eq!(eval(&b, probe), "true nil");
    a.stop();
    drop(a);
    assert!(wait_until(std::time::Duration::from_secs(10), || !live(&b, "a_1")));
    let out = eval(&b, probe);
    assert!(out.starts_with("false node down: "), "{out}");
}

/// Owners get increasing epochs from the DB node; a write with an older
/// epoch than the stored one is refused and changes nothing.
#[test]
fn epochs_fence_a_superseded_writer() {
    let dir = TempDir::new("dbproxy-epoch");
    let (a, b) = two(&dir.0);
    let e1: i64 = eval(&b, "return DBProxy.epoch()").parse().unwrap();
    let e2: i64 = eval(&a, "return DBProxy.epoch()").parse().unwrap();
    assert!(e2 > e1, "{e1} {e2}");
    eval(&a, &format!("return DBProxy.save('nums', 5, 'new owner', nil, {e2})"));
    let out = eval(
        &b,
        &format!(
            "local ok, err = pcall(DBProxy.save, 'nums', 5, 'old owner', nil, {e1})
             return tostring(ok) .. ' ' .. err .. ' | ' .. DBProxy.load('nums', 5)"
        ),
    );
    assert!(out.starts_with("false stale epoch: "), "{out}");
    assert!(out.ends_with("| new owner"), "{out}");
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

/// A persistent entity (the test cluster's Hero: name and gold in the
/// heroes collection, flushed every 0.5 s): loading claims its record
/// (one write), an unchanged entity writes nothing, a change is written
/// within the interval, a release (logout) writes at once.
#[test]
fn persistent_entities_write_changes_only() {
    let dir = TempDir::new("dbproxy-persist");
    let (a, b) = two(&dir.0);
    let stored = |n: &luahost::NodeHandle, key: i64| {
        eval(
            n,
            &format!(
                "local v, ver = DBProxy.load('heroes', {key}) if not v then return 'none' end
                 return v.name .. ' ' .. v.gold .. ' v' .. ver"
            ),
        )
    };
    let out = eval(
        &b,
        "h7 = Hero.new(conf.ServerID, 0, 7) local found = persist.load(h7, 7) return tostring(found) .. ' ' .. persist.version(h7)",
    );
    assert_eq!(out, "false 1");
    assert_eq!(stored(&a, 7), " 0 v1", "the claim writes the first record");
    // two intervals later: nothing written, nothing changed
    eval(&b, "rpcco.sleep(1.1) return ''");
    assert_eq!(stored(&a, 7), " 0 v1");
    eval(&b, "h7.name, h7.gold = 'seven', 70 return ''");
    let flushed = wait_until(std::time::Duration::from_secs(5), || stored(&a, 7) == "seven 70 v2");
    assert!(flushed, "{}", stored(&a, 7));
    eval(&b, "rpcco.sleep(1.1) return ''");
    assert_eq!(stored(&a, 7), "seven 70 v2", "no write without a change");
    // a release writes at once and stops tracking
    let out = eval(
        &b,
        "h7.gold = 71 local wrote = persist.release(h7) return tostring(wrote) .. ' ' .. tostring(persist.version(h7))",
    );
    assert_eq!(out, "true nil");
    assert_eq!(stored(&a, 7), "seven 71 v3");
    // loading again on another node finds it
    let out = eval(
        &a,
        "local h = Hero.new(conf.ServerID, 0, 7) local found = persist.load(h, 7) return tostring(found) .. ' ' .. h.name .. ' ' .. h.gold",
    );
    assert_eq!(out, "true seven 71");
}

/// A second owner's load fences the first: the first one's next write
/// fails with `stale epoch`, it drops the entity (onPersistLost), and the
/// second one's state stays.
#[test]
fn a_superseded_owner_cannot_overwrite_its_successor() {
    let dir = TempDir::new("dbproxy-fence");
    let path = cluster(&dir.0);
    let a = start(&path, "a_1");
    let b = start(&path, "b_1");
    let c = start(&path, "c_1");
    wait_live(&b, &["a_1"]);
    wait_live(&c, &["a_1"]);
    eval(
        &b,
        "h9 = Hero.new(conf.ServerID, 0, 9) persist.load(h9, 9) h9.name = 'old owner'
         function h9:onPersistLost(err) lost = err end return ''",
    );
    eval(
        &c,
        "h9 = Hero.new(conf.ServerID, 0, 9) persist.load(h9, 9) h9.name, h9.gold = 'new owner', 9 persist.flush(h9) return ''",
    );
    let out = eval(
        &b,
        "h9.gold = 1000 local ok, err = pcall(persist.flush, h9)
         return tostring(ok) .. ' | ' .. err .. ' | ' .. tostring(lost ~= nil) .. ' ' .. tostring(persist.version(h9))",
    );
    assert!(out.starts_with("false | stale epoch: heroes/9"), "{out}");
    assert!(out.ends_with("| true nil"), "{out}");
    assert_eq!(
        eval(&a, "local v = DBProxy.load('heroes', 9) return v.name .. ' ' .. v.gold"),
        "new owner 9"
    );
}

/// A graceful stop of the owning node writes what changed.
#[test]
fn a_graceful_stop_writes_changed_entities() {
    let dir = TempDir::new("dbproxy-stop");
    let path = cluster(&dir.0);
    let a = start(&path, "a_1");
    let b = start(&path, "b_1");
    wait_live(&b, &["a_1"]);
    // an interval far beyond the test: only the stop can write it
    // (an onStop handler of the game changes one more: written too)
    eval(
        &b,
        "persist.declare(Hero, { coll = 'heroes', interval = 3600 })
         local last
         for i = 1, 20 do local h = Hero.new(conf.ServerID, 0, 100 + i) persist.load(h, 100 + i) h.gold = i last = h end
         last.gold = 0 base.onStop(function() last.gold = 20 end) return ''",
    );
    b.shutdown();
    let out = eval(
        &a,
        "local sum = 0 for i = 1, 20 do local v = DBProxy.load('heroes', 100 + i) sum = sum + v.gold end return sum",
    );
    assert_eq!(out, "210");
}

/// A node of the DB node's type without a store says so to the others.
#[test]
fn a_db_type_node_without_a_store_says_so() {
    let dir = TempDir::new("dbproxy-nostore");
    let path = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let a = start(&path, "a_1");
    let b = start(&path, "b_1");
    wait_live(&b, &["a_1"]);
    let probe = r#"local ok, err = pcall(DBProxy.load, "nums", 1) return tostring(ok) .. " " .. err"#;
    assert_eq!(
        eval(&b, probe),
        "false no store: node a_1 has no store (it is not the DB node)"
    );
    let out = eval(&a, probe);
    assert!(out.starts_with("false no store: node a_1 has no store"), "{out}");
}
