//! Hot reload with real files, the real watcher and real nodes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use luahost::{ClusterConfig, NodeHandle, NodeOptions};

fn start_watching(cluster: &Path, name: &str) -> NodeHandle {
    let cfg = Arc::new(ClusterConfig::load(cluster).unwrap());
    luahost::start_with(
        cfg,
        name,
        NodeOptions {
            watch_scripts: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("start {name}: {e}"))
}

/// Writes a file the way many editors save: to a temp file, then rename.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("lua.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The test cluster's handlers.lua (as shipped) with `body` added.
fn handlers_with(_scripts: &Path, body: &str) -> String {
    let base = std::fs::read_to_string(scripts_dir().join("handlers.lua")).unwrap();
    base.replace("return Echo\n", &format!("{body}\nreturn Echo\n"))
}

const V1: &str = r#"
local sleep = rpcco.sleep
local waiting = {}
local now = require("luahost.core").now
function Echo:queued() waiting[#waiting + 1] = now() sleep(0.01) return #waiting end
local hits = 0
function Echo:echo(s, n) hits = hits + 1 return s .. ":v1", hits end
Player = Player or declareObject({})
function Player:describe() return "v1 " .. self.name end
function Echo:slow(secs) rpcco.sleep(secs) return true end
"#;

#[test]
fn edits_change_behaviour_and_keep_state_identities_and_calls_in_flight() {
    let dir = TempDir::new("reload");
    let scripts = copy_scripts(&dir.0);
    std::fs::write(scripts.join("handlers.lua"), handlers_with(&scripts, V1)).unwrap();
    let cluster = write_cluster_with(
        &dir.0,
        &scripts,
        &[("a_1", "A", 1), ("b_1", "B", 2)],
        "call_timeout = 20,",
    );
    let a = start_watching(&cluster, "a_1");
    let b = start_watching(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    let call = "return to(sidOf('b_1')).echo('x', 0)";
    assert_eq!(eval(&a, call), "x:v1\t1");
    assert_eq!(eval(&a, call), "x:v1\t2");
    // an entity created before the edit
    assert_eq!(
        eval(
            &b,
            "p = Player.new(0, 0, 77) p.name = 'ann' Entity.set(77, p) return p:describe()"
        ),
        "v1 ann"
    );
    let mod_before = eval(
        &b,
        "return tostring(package.loaded.handlers) .. ' ' .. tostring(Player)",
    );
    // a slow call in flight across the reload
    eval(
        &a,
        "slow_result = nil rpcco.fork(function() slow_result = tostring(to(sidOf('b_1')).slow(1.0)) end) return true",
    );
    std::thread::sleep(Duration::from_millis(200));

    let v2 = V1.replace(":v1", ":v2").replace("\"v1 \"", "\"v2 \"");
    save(&scripts.join("handlers.lua"), &handlers_with(&scripts, &v2));
    assert!(
        wait_until(Duration::from_secs(10), || eval(&a, call).starts_with("x:v2")),
        "the edit never took effect: {}",
        eval(&a, call)
    );
    // the local upvalue kept counting across the reload
    let n: i64 = eval(&a, call).split('\t').nth(1).unwrap().parse().unwrap();
    assert!(n >= 4, "hits restarted: {n}");
    assert_eq!(eval(&b, "return p:describe() .. ' ' .. p.eid"), "v2 ann 77");
    assert_eq!(
        eval(
            &b,
            "return tostring(package.loaded.handlers) .. ' ' .. tostring(Player)"
        ),
        mod_before,
        "module and class tables keep their identity"
    );
    assert!(wait_until(Duration::from_secs(5), || eval(
        &a,
        "return tostring(slow_result)"
    ) == "true"));

    // a syntax error: the old code keeps answering, and the error names the line
    let broken = handlers_with(&scripts, &v2.replace("hits = hits + 1", "hits = = 1"));
    save(&scripts.join("handlers.lua"), &broken);
    std::thread::sleep(Duration::from_millis(300));
    assert!(eval(&a, call).starts_with("x:v2"));
    let e = eval(
        &b,
        "return select(2, hotfix.reload({conf.MainScript:gsub('main.lua', 'handlers.lua')}))",
    );
    assert!(e.contains("handlers.lua:") && e.contains("unexpected symbol"), "{e}");
    let line = e.split("handlers.lua:").nth(1).unwrap().split(':').next().unwrap();
    assert!(line.parse::<u32>().unwrap() > 40, "line number {line} in {e}");

    // a runtime error in the chunk: same
    let raising = handlers_with(
        &scripts,
        &format!("{}\nerror('boom at load')\n", v2.replace(":v2", ":v3")),
    );
    save(&scripts.join("handlers.lua"), &raising);
    std::thread::sleep(Duration::from_millis(300));
    assert!(eval(&a, call).starts_with("x:v2"), "a chunk that raised must not apply");
    let e = eval(
        &b,
        "return select(2, hotfix.reload({conf.MainScript:gsub('main.lua', 'handlers.lua')}))",
    );
    assert!(e.contains("boom at load") && e.contains("handlers.lua:"), "{e}");

    // the fixed file applies
    let v4 = V1.replace(":v1", ":v4");
    save(&scripts.join("handlers.lua"), &handlers_with(&scripts, &v4));
    assert!(
        wait_until(Duration::from_secs(10), || eval(&a, call).starts_with("x:v4")),
        "the fixed file never took effect"
    );
    b.shutdown();
    a.shutdown();
}

#[test]
fn schema_edit_keeps_two_nodes_talking() {
    let dir = TempDir::new("schema");
    let scripts = copy_scripts(&dir.0);
    let cluster = write_cluster_with(&dir.0, &scripts, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let a = start_watching(&cluster, "a_1");
    let b = start_watching(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    let digest = "return string.format('%08x', rpcdef.Digi)";
    let d0 = eval(&a, digest);
    // one save changes the schema and the handlers together
    let def = std::fs::read_to_string(scripts.join("entitydef.lua")).unwrap();
    let def2 = def.replace(
        "        badresult =",
        "        twice = { args = { { \"n\", \"int64\" } }, results = { { \"n\", \"int64\" } } },\n        badresult =",
    );
    assert_ne!(def, def2);
    std::fs::write(
        scripts.join("handlers.lua"),
        handlers_with(&scripts, "function Echo:twice(n) return 2 * n end"),
    )
    .unwrap();
    std::fs::write(scripts.join("entitydef.lua"), def2).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || eval(&a, digest) != d0
            && eval(&b, digest) != d0),
        "digests did not change"
    );
    assert_eq!(eval(&a, digest), eval(&b, digest));
    // connections verified under the old schema were closed and verify again
    assert!(wait_until(Duration::from_secs(10), || eval(
        &a,
        "return router.isLive(sidOf('b_1'))"
    ) == "true"));
    assert_eq!(eval(&a, "return to(sidOf('b_1')).twice(21)"), "42");
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('still', 5)"), "still\t5");
    b.shutdown();
    a.shutdown();
}

#[test]
fn a_schema_edit_that_changes_server_types_or_does_not_load_is_refused_whole() {
    let dir = TempDir::new("schema-refused");
    let scripts = copy_scripts(&dir.0);
    let cluster = write_cluster_with(&dir.0, &scripts, &[("a_1", "A", 1)], "");
    // no watcher: each edit is reloaded by an explicit hotfix.reload
    let a = start(&cluster, "a_1");
    // the summary, or the error
    let reload = "local s, e = require('hotfix').reload({ \
                  conf.MainScript:gsub('main.lua', 'entitydef.lua'), \
                  (conf.MainScript:gsub('main.lua', 'handlers.lua')) }) return s or e";
    let state = "return string.format('%08x', rpcdef.Digi), tostring(ServerType.D), \
                 tostring(Global.Echo.twice), tostring(rpcdef.iface('A', 'Echo').twice)";
    let before = eval(&a, state);
    let def = std::fs::read_to_string(scripts.join("entitydef.lua")).unwrap();
    let twice =
        "        twice = { args = { { \"n\", \"int64\" } }, results = { { \"n\", \"int64\" } } },\n        badresult =";
    // each edit comes with a handler edit, which must not apply either
    std::fs::write(
        scripts.join("handlers.lua"),
        handlers_with(&scripts, "function Echo:twice(n) return 2 * n end"),
    )
    .unwrap();
    for (edit, why) in [
        (
            def.replace("A = 1, B = 2, C = 3", "A = 1, B = 2, C = 3, D = 4")
                .replace("        badresult =", twice),
            "entitydef: ServerType changed (D); that needs a restart",
        ),
        (
            def.replace("C = 3", "C = 5").replace("        badresult =", twice),
            "entitydef: ServerType changed (C); that needs a restart",
        ),
        (
            def.replace("        badresult =", twice).replace(
                "{ \"n\", \"int64\" } } },\n        badresult",
                "{ \"n\", \"int99\" } } },\n        badresult",
            ),
            "int99",
        ),
    ] {
        assert_ne!(edit, def);
        std::fs::write(scripts.join("entitydef.lua"), edit).unwrap();
        let e = eval(&a, reload);
        assert!(e.contains(why), "{e}");
        assert_eq!(eval(&a, state), before, "a refused reload changed something");
    }
    // the same edit without the refused part applies, schema and handler together
    std::fs::write(scripts.join("entitydef.lua"), def.replace("        badresult =", twice)).unwrap();
    let e = eval(&a, reload);
    assert!(e.contains("hot reload: entitydef, handlers"), "{e}");
    assert_eq!(eval(&a, "return to(sidOf('a_1')).twice(21)"), "42");
    assert_eq!(eval(&a, "return ServerType.A, ServerType.D"), "1\tnil");
    a.shutdown();
}
