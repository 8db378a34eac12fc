//! What a script sees of the Lua API: error texts and kinds, argument
//! checks, per-node settings, the clock, lualib without a build folder, and
//! graceful stop. Real nodes, real processes.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Starts `program` with `args` in folder `cwd`, collecting its stderr.
fn spawn_in(program: &Path, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("LUAHOST_LUALIB")
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Proc::spawn_command(cmd)
}

#[test]
fn call_errors_start_with_their_kind_and_errkind_reads_every_form() {
    let dir = TempDir::new("errkind");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3)],
        "call_timeout = 3,",
    );
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    // The text a script catches after `local r = mb.method(...)` starts with
    // its kind, for each kind (c_1 is in the file but not running; 999 is
    // not in the cluster).
    let caught = |call: &str| {
        eval(
            &a,
            &format!("local ok, e = pcall(function() local r = {call} return r end) return e"),
        )
    };
    let e = caught("to(sidOf('c_1')).echo('x', 1)");
    assert!(e.starts_with("node down: c_1: "), "{e}");
    let e = caught("rpcstub.mailbox(rpcdef.rpcB.Echo, 999, 1).echo('x', 1)");
    assert!(e.starts_with("no such node: 999"), "{e}");
    let e = caught("rpcco.timeout(0.2, function() return to(sidOf('b_1')).slow(1) end)");
    assert!(e.starts_with("timeout: Echo.slow to b_1"), "{e}");
    let e = caught("to(sidOf('b_1')).fail('boom 42')");
    assert!(e.starts_with("remote error: b_1: Echo.fail: "), "{e}");
    assert!(e.contains("boom 42"), "{e}");
    // ... so scripts can match the documented form
    assert_eq!(
        eval(
            &a,
            "local ok, e = pcall(function() local r = to(sidOf('c_1')).echo('x', 1) return r end)
             return tostring(e:find('^node down:') == 1)"
        ),
        "true"
    );
    // A one-way send to an unknown node raises the same way.
    let e = eval(
        &a,
        "local ok, e = pcall(function() rpcstub.mailbox(rpcdef.rpcB.Echo, 999, 1).note(1, {}) end) return e",
    );
    assert!(e.starts_with("no such node: 999"), "{e}");

    // errkind on every form a script can meet: the method passed to pcall
    // directly (the remote handler's own file:line must not confuse it),
    // called inside a function, and re-raised with error(e) (which adds the
    // re-raiser's position), once or twice.
    let kind = |call: &str| eval(&a, &format!("return tostring(rpcco.errkind(select(2, {call})))"));
    let remote = "pcall(to(sidOf('b_1')).fail, 'boom')";
    assert_eq!(kind(remote), "remote error");
    assert_eq!(
        kind("pcall(function() return to(sidOf('b_1')).fail('boom') end)"),
        "remote error"
    );
    assert_eq!(
        kind("pcall(function() local ok, e = pcall(to(sidOf('b_1')).fail, 'boom') error(e) end)"),
        "remote error"
    );
    assert_eq!(kind("pcall(to(sidOf('c_1')).echo, 'x', 1)"), "node down");
    assert_eq!(
        kind("pcall(function() local ok, e = pcall(to(sidOf('c_1')).echo, 'x', 1) error(e) end)"),
        "node down"
    );
    assert_eq!(
        kind("pcall(function() local ok, e = pcall(function() local ok, e = pcall(to(sidOf('c_1')).echo, 'x', 1) error(e) end) error(e) end)"),
        "node down"
    );
    assert_eq!(kind("pcall(rpcco.timeout, 0.2, to(sidOf('b_1')).slow, 1)"), "timeout");
    assert_eq!(
        kind("pcall(rpcstub.mailbox(rpcdef.rpcB.Echo, 999, 1).echo, 'x', 1)"),
        "no such node"
    );
    // texts as the host writes them, including the fifth kind
    let errkind = |text: &str| eval(&a, &format!("return tostring(rpcco.errkind({text:?}))"));
    assert_eq!(errkind("busy: b_1: 70000 bytes wait in its queue (Echo.echo)"), "busy");
    assert_eq!(errkind("main.lua:7: busy: b_1: queue full (Echo.echo)"), "busy");
    assert_eq!(
        errkind("[string \"x: y\"]:1: timeout: Echo.slow to b_1: no reply within 1 ms"),
        "timeout"
    );
    assert_eq!(
        errkind("remote error: b_1: Echo.nest: handlers.lua:5: timeout: Echo.slow to c_1"),
        "remote error"
    );
    // other errors have no kind, even when their text mentions one later
    assert_eq!(errkind("handlers.lua:17: boom"), "nil");
    assert_eq!(errkind("main.lua:3: cannot load: handlers.lua:5: timeout: x"), "nil");
    assert_eq!(eval(&a, "return tostring(rpcco.errkind(nil))"), "nil");
    b.shutdown();
    a.shutdown();
}

#[test]
fn refused_calls_name_the_refusing_node_once() {
    let dir = TempDir::new("refused");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    // refused by the host: A's Echo.echo sent to a B node
    let e = eval(
        &a,
        "local ok, e = pcall(rpcstub.mailbox(rpcdef.rpcA.Echo, sidOf('b_1'), 1).echo, 'x', 1) return e",
    );
    assert_eq!(e, "remote error: b_1: Echo.echo is not served by B nodes");
    // refused by lualib: no entity 77 on b_1
    let e = eval(
        &a,
        "local ok, e = pcall(rpcstub.mailbox(rpcdef.rpcB.Echo, sidOf('b_1'), 77).echo, 'x', 1) return e",
    );
    assert_eq!(e, "remote error: b_1: Echo.echo: no handler on entity 77");
    b.shutdown();
    a.shutdown();
}

#[test]
fn tables_that_are_not_arrays_and_unknown_struct_fields_are_refused_at_the_call_site() {
    let dir = TempDir::new("shapes");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    let err = |call: &str| eval(&a, &format!("local ok, e = pcall({call}) return tostring(e)"));
    // array<int48> argument 'rids' of Echo.note
    let e = err("to(sidOf('b_1')).note, 1, {x = 1, y = 2}");
    assert!(
        e.starts_with("bad argument #2 'rids' to Echo.note: expected array<int48>, got a table with key '"),
        "{e}"
    );
    let e = err("to(sidOf('b_1')).note, 1, {1, 2, x = 3}");
    assert!(
        e.contains("bad argument #2 'rids' to Echo.note: expected array<int48>, got a table with key 'x'"),
        "{e}"
    );
    let e = err("to(sidOf('b_1')).note, 1, {1, 2, [9] = 3}");
    assert!(e.contains("'rids' to Echo.note") && e.contains("key 9"), "{e}");
    // a struct field that the struct does not have, inside an array
    let e = err("to(sidOf('b_1')).sum, {{k = 'a', v = 1}, {k = 'b', v = 2, vv = 3}}, {}");
    assert!(
        e.contains("bad argument #1 'ps' to Echo.sum: at [2]: Pair has no field 'vv'"),
        "{e}"
    );
    // a misspelt optional field no longer arrives as nil
    assert_eq!(
        eval(&a, "return select(2, rpctype.check('Item', {id = 1, tga = 'x'}))"),
        "expected Item: Item has no field 'tga'"
    );
    assert_eq!(
        eval(&a, "return select(2, rpctype.check('array<int48>', {x = 1}))"),
        "expected array<int48>: expected array<int48>, got a table with key 'x'"
    );
    // nothing of the refused calls arrived; valid shapes still go through:
    // an empty table is an empty array, holes are fine for optional elements
    assert_eq!(eval(&b, "return base.global('Echo'):count()"), "0");
    eval(
        &a,
        "to(sidOf('b_1')).note(1, {}) to(sidOf('b_1')).note(1, {5, 6}) return true",
    );
    assert!(wait_until(Duration::from_secs(5), || eval(
        &b,
        "return base.global('Echo'):count()"
    ) == "4"));
    assert_eq!(
        eval(&a, "return to(sidOf('b_1')).sum({{k = 'a', v = 1}}, {x = 2})"),
        "3"
    );
    assert_eq!(
        eval(
            &a,
            "return rpctype.check('array<int48?>', {1, nil, 3}), rpctype.check('Item', {id = 1}), #rpctype.Types.array.build('int48', {})"
        ),
        "true\ttrue\t0"
    );
    b.shutdown();
    a.shutdown();
}

/// The globals of Lua 5.4 itself (a node has the safe standard libraries and `debug`).
const LUA_GLOBALS: &str = "_G _VERSION assert collectgarbage coroutine debug dofile error \
    getmetatable io ipairs load loadfile math next os package pairs pcall print rawequal rawget \
    rawlen rawset require select setmetatable string table tonumber tostring type utf8 warn xpcall";

/// The globals luahost gives a script: the names of seed 000, and `conf`.
const LUAHOST_GLOBALS: &str = "base rpcdef rpcstub rpctype router Entity declareObject EventMng \
    Event ServerType Global DBProxy conf LOG INFO WARN ERROR";

#[test]
fn a_node_has_the_seed_globals_and_those_its_script_makes_and_no_other() {
    let dir = TempDir::new("globals");
    let scripts = dir.0.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::copy(scripts_dir().join("entitydef.lua"), scripts.join("entitydef.lua")).unwrap();
    std::fs::write(
        scripts.join("main.lua"),
        "before = ServerType.B\n\
         early = rpcdef.iface('B', 'Echo')\n\
         Global.Echo = { echo = function(self, s, n) return s, n end }\n\
         base.init(conf.NodeType)\n\
         fm = base.global('Echo')\n",
    )
    .unwrap();
    let cluster = write_cluster_with(&dir.0, &scripts, &[("a_1", "A", 1)], "");
    let a = start(&cluster, "a_1");
    let names = eval(
        &a,
        "local n = {} for k in pairs(_G) do n[#n + 1] = k end table.sort(n) return table.concat(n, ' ')",
    );
    let want = format!("{LUA_GLOBALS} {LUAHOST_GLOBALS} before early fm");
    let mut want: Vec<&str> = want.split_whitespace().collect();
    want.sort_unstable();
    assert_eq!(names, want.join(" "));
    // ServerType is the schema's, before base.init too, and is rpcdef's
    // table; so are interfaces
    assert_eq!(
        eval(
            &a,
            "return before, rawequal(ServerType, rpcdef.ServerType), \
             rawequal(early, rpcdef.iface('B', 'Echo')), early.echo.name"
        ),
        "2\ttrue\ttrue\techo"
    );
    // the modules that are not globals are reached by require
    assert_eq!(
        eval(
            &a,
            "local n = 0 for _, m in ipairs({'rpcco', 'timer', 'hotfix', 'event', 'entity', 'log'}) do \
             if type(require(m)) == 'table' then n = n + 1 end end return n"
        ),
        "6"
    );

    // rpcdef.iface and the seed's rpcdef.rpc<Type>.<Class> give the same interface
    assert_eq!(
        eval(
            &a,
            "local i = rpcdef.iface('B', 'Echo') \
             return rawequal(i, rpcdef.rpcB.Echo), rawequal(i, rpcdef.iface('B', 'Echo')), \
             rawequal(i.echo, rpcdef.rpcB.Echo.echo), i.echo.id, i.note.call"
        ),
        format!(
            "true\ttrue\ttrue\t{}\tfalse",
            eval(&a, "return rpcdef.rpcB.Echo.echo.id")
        )
    );
    // a class a type serves no method of: an empty interface, the alias too
    assert_eq!(
        eval(
            &a,
            "local i = rpcdef.iface('C', 'Nobody') return next(i), rawequal(i, rpcdef.rpcC.Nobody)"
        ),
        "nil\ttrue"
    );
    // an unknown server type is an error naming it
    let e = eval(&a, "return select(2, pcall(rpcdef.iface, 'Hall', 'Echo'))");
    assert!(e.contains("no server type Hall"), "{e}");
    // a mailbox from either name calls the same method
    assert_eq!(
        eval(
            &a,
            "local s, n = rpcstub.mailbox(rpcdef.iface('A', 'Echo'), conf.ServerID, 1).echo('i', 1) \
             return s, n, rpcstub.mailbox(rpcdef.rpcA.Echo, conf.ServerID, 1).echo('a', 2)"
        ),
        "i\t1\ta\t2"
    );
    a.shutdown();
}

#[test]
fn cluster_and_node_settings_reach_conf() {
    let dir = TempDir::new("settings");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2)],
        r#"settings = { DemoTick = 0.5, Mode = "cluster", Retries = 3, Db = { host = "db.local", port = 5432, tags = { "x", "y" } } },"#,
    );
    let text = std::fs::read_to_string(&cluster).unwrap().replace(
        "a_1 = { type",
        r#"a_1 = { settings = { Mode = "node", Extra = true, Db = { host = "other" } }, type"#,
    );
    std::fs::write(&cluster, text).unwrap();
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    let probe = "return conf.DemoTick, conf.Mode, conf.Retries, tostring(conf.Extra), conf.Db.host, tostring(conf.Db.port), conf.Db.tags and conf.Db.tags[2], math.type(conf.Retries)";
    // the node's own settings replace the cluster's, key by key at the top
    assert_eq!(eval(&a, probe), "0.5\tnode\t3\ttrue\tother\tnil\tnil\tinteger");
    assert_eq!(eval(&b, probe), "0.5\tcluster\t3\tnil\tdb.local\t5432\ty\tinteger");
    // built-in fields of conf are still there
    assert_eq!(eval(&a, "return conf.NodeName, conf.ServerID"), "a_1\t1");
    b.shutdown();
    a.shutdown();

    // `up` (a LocalCluster following its file) restarts a node whose
    // settings changed, so its conf shows them
    let mut up = luahost::cluster::LocalCluster::start(&cluster, &[]).unwrap();
    assert_eq!(eval(up.node("b_1").unwrap(), "return conf.Mode"), "cluster");
    let text = std::fs::read_to_string(&cluster)
        .unwrap()
        .replace(r#"Mode = "cluster""#, r#"Mode = "edited""#);
    std::fs::write(&cluster, text).unwrap();
    up.follow();
    assert_eq!(eval(up.node("b_1").unwrap(), "return conf.Mode"), "edited");
    assert_eq!(eval(up.node("a_1").unwrap(), "return conf.Mode"), "node");
    up.shutdown();

    // settings that cannot become conf fields are refused when the file loads
    let refused = |settings: &str| {
        let f = write_cluster(&dir.0, &[("a_1", "A", 1)], settings);
        luahost::ClusterConfig::load(&f).unwrap_err().to_string()
    };
    let e = refused("settings = { NodeName = 'x' },");
    assert!(e.contains("settings.NodeName") && e.contains("reserved"), "{e}");
    let e = refused("settings = { Hook = { on = function() end } },");
    assert!(e.contains("settings.Hook.on") && e.contains("function"), "{e}");
    let e = refused("settings = { [1] = 'x' },");
    assert!(e.contains("settings") && e.contains("names"), "{e}");
    let e = refused("settings = 5,");
    assert!(e.contains("settings must be a table"), "{e}");
}

#[test]
fn an_installed_binary_without_lualib_beside_it_runs_a_node() {
    let dir = TempDir::new("installed");
    // "Install" the binary: a copy in a folder of its own, with the build
    // folder's lualib made unreachable to it (as on a machine that never
    // had this checkout: any path to it compiled in now names a folder that
    // does not exist).
    let bin = dir.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let mut image = std::fs::read(env!("CARGO_BIN_EXE_luahost")).unwrap();
    let build_lualib = concat!(env!("CARGO_MANIFEST_DIR"), "/lualib").as_bytes();
    let mut gone = build_lualib.to_vec();
    *gone.last_mut().unwrap() = b'#';
    assert!(!Path::new(std::str::from_utf8(&gone).unwrap()).exists());
    let mut i = 0;
    while let Some(at) = image[i..].windows(build_lualib.len()).position(|w| w == build_lualib) {
        image[i + at..i + at + gone.len()].copy_from_slice(&gone);
        i += at + gone.len();
    }
    let exe = bin.join("luahost");
    std::fs::write(&exe, &image).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let pb = spawn_in(
        &exe,
        &["run", "--cluster", cluster.to_str().unwrap(), "--node", "b_1"],
        &bin,
        &[],
    );
    let a = start(&cluster, "a_1");
    assert!(
        wait_until(Duration::from_secs(20), || live(&a, "b_1")),
        "the installed node never came up:\n{}",
        pb.log()
    );
    // its lualib works: a call served through rpcco, an error kind from rpcco
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('installed', 7)"), "installed\t7");
    assert_eq!(
        eval(&a, "return rpcco.errkind(select(2, pcall(to(sidOf('b_1')).fail, 'x')))"),
        "remote error"
    );
    drop(pb);
    a.shutdown();
}

#[test]
fn base_now_is_monotonic_seconds_and_base_time_the_wall_clock() {
    let dir = TempDir::new("clock");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1)], "");
    let a = start(&cluster, "a_1");
    let got = eval(
        &a,
        "local t0, w0 = base.now(), base.time() rpcco.sleep(0.2) return base.now() - t0, base.time() - w0, w0",
    );
    let v: Vec<f64> = got.split('\t').map(|x| x.parse().unwrap()).collect();
    assert!(v[0] >= 0.19 && v[0] < 2.0, "now advanced {}", v[0]);
    assert!(v[1] >= 0.1 && v[1] < 2.0, "time advanced {}", v[1]);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((wall - v[2]).abs() < 5.0, "base.time() {} vs {wall}", v[2]);
    a.shutdown();
}

#[test]
fn an_explicit_lualib_folder_is_used_and_hot_reloaded_under_up() {
    let dir = TempDir::new("lualibdir");
    let lualib = dir.0.join("mylualib");
    std::fs::create_dir_all(&lualib).unwrap();
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("lualib")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), lualib.join(e.file_name())).unwrap();
    }
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1)],
        &format!("lualib = {:?},", lualib.display().to_string()),
    );
    let cfg = Arc::new(luahost::ClusterConfig::load(&cluster).unwrap());
    let opts = luahost::NodeOptions {
        watch_scripts: true,
        ..Default::default()
    };
    let up = luahost::cluster::LocalCluster::start_opts(cfg, &[], opts).unwrap();
    let a = up.node("a_1").unwrap();
    let src = eval(a, "return debug.getinfo(rpctype.check, 'S').source");
    assert_eq!(src, format!("@{}", lualib.join("rpctype.lua").display()));
    // edit a lualib module the way an editor saves
    let file = lualib.join("rpctype.lua");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\nreturn M\n", "\nfunction M.probe() return 'edited' end\n\nreturn M\n");
    let tmp = lualib.join("rpctype.lua.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || eval(
            a,
            "return rpctype.probe and rpctype.probe() or 'old'"
        ) == "edited"),
        "the lualib edit was not hot-reloaded"
    );
    up.shutdown();
}

/// A cluster of a_1 and b_1 where b_1's onStop handler writes to the file
/// returned second.
fn stop_cluster(dir: &Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let saved = dir.join("saved.txt");
    let cluster = write_cluster(dir, &[("a_1", "A", 1), ("b_1", "B", 2)], extra);
    let text = std::fs::read_to_string(&cluster).unwrap().replace(
        "b_1 = { type",
        &format!(
            "b_1 = {{ settings = {{ StopFile = {:?} }}, type",
            saved.display().to_string()
        ),
    );
    std::fs::write(&cluster, text).unwrap();
    (cluster, saved)
}

#[test]
fn sigterm_lets_calls_in_flight_finish_runs_on_stop_and_exits_0() {
    let dir = TempDir::new("stop");
    let (cluster, saved) = stop_cluster(&dir.0, "stop_grace = 3,");
    let mut pb = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    // a call in flight that sleeps 0.5 s in b_1's handler
    eval(
        &a,
        "slow = 'waiting' rpcco.fork(function() local ok, r = pcall(to(sidOf('b_1')).slow, 0.5) slow = tostring(ok) .. ' ' .. tostring(r) end) return true",
    );
    std::thread::sleep(Duration::from_millis(100));
    pb.signal(libc::SIGTERM);
    // meanwhile b_1 takes no new calls
    let mut refused = String::new();
    assert!(
        wait_until(Duration::from_secs(2), || {
            refused = eval(
                &a,
                "local ok, e = pcall(to(sidOf('b_1')).echo, 'x', 1) return tostring(e)",
            );
            refused.starts_with("node down:")
        }),
        "last answer: {refused}\n{}",
        pb.log()
    );
    assert_eq!(refused, "node down: b_1: stopping (Echo.echo)");
    assert_eq!(
        eval(
            &a,
            "return rpcco.errkind(select(2, pcall(to(sidOf('b_1')).echo, 'x', 1)))"
        ),
        "node down"
    );
    // the call in flight got its reply
    assert!(
        wait_until(Duration::from_secs(5), || eval(&a, "return slow") == "true true"),
        "slow call: {}",
        eval(&a, "return slow")
    );
    let status = pb.wait_exit(Duration::from_secs(10)).expect("b_1 did not exit");
    assert!(status.success(), "{status:?}\n{}", pb.log());
    // onStop ran after the handlers, and its call to a_1 was answered
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "saved by b_1; a_1 answered: bye"
    );
    a.shutdown();
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let dir = TempDir::new("stop2");
    let (cluster, saved) = stop_cluster(&dir.0, "stop_grace = 30,");
    let mut pb = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    eval(
        &a,
        "slow = 'waiting' rpcco.fork(function() local ok, r = pcall(to(sidOf('b_1')).slow, 20) slow = tostring(r) end) return true",
    );
    std::thread::sleep(Duration::from_millis(100));
    pb.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(pb.child.try_wait().unwrap().is_none(), "b_1 must wait for its handler");
    pb.signal(libc::SIGTERM);
    let status = pb.wait_exit(Duration::from_secs(5)).expect("b_1 did not stop at once");
    assert!(status.success(), "{status:?}\n{}", pb.log());
    assert!(
        wait_until(Duration::from_secs(5), || eval(&a, "return slow")
            .starts_with("node down: b_1")),
        "{}",
        eval(&a, "return slow")
    );
    assert!(!saved.exists(), "onStop does not run after a second stop");
    a.shutdown();
}

#[test]
fn ctrl_c_stops_up_gracefully() {
    let dir = TempDir::new("stopup");
    let (cluster, saved) = stop_cluster(&dir.0, "");
    let mut up = Proc::spawn(&["up", "--no-watch", cluster.to_str().unwrap()]);
    assert!(up.wait_log(" up: ", Duration::from_secs(20)), "{}", up.log());
    up.signal(libc::SIGINT);
    let status = up.wait_exit(Duration::from_secs(10)).expect("up did not exit");
    assert!(status.success(), "{status:?}\n{}", up.log());
    // a_1 was stopping too, so b_1's call in onStop was refused
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "saved by b_1; a_1 answered: node down"
    );
}

#[test]
fn a_graceful_stop_leaves_zookeeper_at_once() {
    let zk = common::zk::ZkServer::start();
    let dir = TempDir::new("stopzk");
    let cluster = write_cluster(
        &dir.0,
        &[("a_1", "A", 1), ("b_1", "B", 2)],
        &format!(
            "zookeeper = {{ hosts = {:?}, root = \"/luahost/stoptest\", session_timeout = 20 }},",
            zk.addr()
        ),
    );
    // children of <root>/servers/B as a plain ZooKeeper client sees them
    let registered = || common::zk::registered_at(&zk, "/luahost/stoptest/servers/B", None);
    let mut pb = Proc::run_node(&cluster, "b_1");
    let a = start(&cluster, "a_1");
    wait_live(&a, &["b_1"]);
    assert_eq!(registered(), vec!["b_1".to_string()]);
    pb.signal(libc::SIGTERM);
    let status = pb.wait_exit(Duration::from_secs(10)).expect("b_1 did not exit");
    assert!(status.success(), "{status:?}\n{}", pb.log());
    // gone now, not when its 20 s session expires
    assert!(registered().is_empty(), "{:?}\n{}", registered(), pb.log());
    a.shutdown();
}

#[test]
fn the_host_decides_call_or_send_and_router_refuses_calls() {
    let dir = TempDir::new("decide");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    let a = start(&cluster, "a_1");
    let b = start(&cluster, "b_1");
    wait_live(&a, &["b_1"]);
    // one stub for both kinds: a call returns its results, a send nothing
    assert_eq!(eval(&a, "return to(sidOf('b_1')).echo('x', 7)"), "x\t7");
    assert_eq!(
        eval(&a, "return select('#', to(sidOf('b_1')).note(1, {}))"),
        "0",
        "a send returns nothing"
    );
    // router's one-way sends: a call method is refused by the host, nothing sent
    let e = eval(
        &a,
        "local ok, e = pcall(router.sendByType, ServerType.B, false, rpcdef.iface('B', 'Echo'), 1, 'slow', 0.1) return tostring(e)",
    );
    assert!(
        e.contains("Echo.slow is a call") && e.contains("router sends only one-way methods"),
        "{e}"
    );
    assert_eq!(eval(&a, "return rpcco.errkind(select(2, pcall(router.sendByType, ServerType.B, false, rpcdef.iface('B', 'Echo'), 1, 'slow', 0.1)))"), "nil", "a call-site error has no kind");
    a.shutdown();
    b.shutdown();
}

#[test]
fn ctrl_c_while_up_is_starting_stops_it_gracefully() {
    let dir = TempDir::new("earlyint");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1), ("b_1", "B", 2)], "");
    // b_1 takes a second to start (its main script spins first)
    let main = scripts_dir().join("main.lua");
    let slow = dir.0.join("slow.lua");
    std::fs::write(
        &slow,
        format!(
            "local t = os.clock() while os.clock() - t < 1 do end\ndofile({:?})\n",
            main.display().to_string()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&cluster).unwrap();
    let b_line = text.lines().find(|l| l.contains("b_1 =")).unwrap().to_string();
    let slow_line = b_line.replace(
        &format!("{:?}", main.display().to_string()),
        &format!("{:?}", slow.display().to_string()),
    );
    std::fs::write(&cluster, text.replace(&b_line, &slow_line)).unwrap();
    let mut up = Proc::spawn(&["up", "--no-watch", cluster.to_str().unwrap()]);
    // a_1 is up, b_1 is still starting
    assert!(up.wait_log("node a_1", Duration::from_secs(20)), "{}", up.log());
    up.signal(libc::SIGINT);
    let status = up.wait_exit(Duration::from_secs(10)).expect("up did not exit");
    assert!(status.success(), "{status:?}\n{}", up.log());
}

/// Lua helpers for the client-schema test: `copy(t)` (deep copy) and
/// `def(edit)`, the test schema plus an entity class Player served by A
/// (two exposed methods, one server-only) with a Client section, after
/// `edit(d)` if given.
const CLIENT_SCHEMA: &str = r#"
local function copy(t)
    if type(t) ~= 'table' then return t end
    local c = {}
    for k, v in pairs(t) do c[k] = copy(v) end
    return c
end
local plain = copy(require 'entitydef')
function def(edit)
    local d = copy(plain)
    d.Entity.Player = {
        A = {
            a_get = { results = { { 'items', 'array<Item>' } }, client = true },
            a_add = { args = { { 'rid', 'int48' } }, results = { { 'ok', 'bool' } }, client = true },
            a_kick = { args = { { 'why', 'string' } } },
            a_note = { args = { { 'n', 'int32' } }, client = false },
        },
        Client = {
            onNotice = { args = { { 'text', 'string' } } },
            onOnline = { args = { { 'rid', 'int48' }, { 'online', 'bool' } } },
        },
    }
    if edit then edit(d) end
    return d
end
function plainDef() return copy(plain) end
-- 'cid key' of every client-visible method, in cid order
function cids()
    local out = {}
    for cid, m in ipairs(rpcdef.clientMethods) do out[#out + 1] = cid .. ' ' .. m.key end
    return table.concat(out, ',')
end
function digests() return string.format('%08x %08x', rpcdef.Digi, rpcdef.ClientDigi) end
function initErr(d)
    local ok, e = pcall(rpcdef.init, d)
    return ok and 'accepted' or e
end
return true
"#;

#[test]
fn client_ids_are_dense_over_client_visible_methods_and_only_they_move_client_digi() {
    let dir = TempDir::new("cids");
    let cluster = write_cluster(&dir.0, &[("a_1", "A", 1)], "");
    let a = start(&cluster, "a_1");
    eval(&a, CLIENT_SCHEMA);
    // the test schema has no client-visible method; its Static Client side
    // (System.pong) stays node-to-node
    assert_eq!(eval(&a, "return #rpcdef.clientMethods"), "0");
    assert_eq!(
        eval(
            &a,
            "local p = rpcdef.rpcStaticClient.System.pong return tostring(p.client), tostring(p.push), p.cid"
        ),
        "false\tfalse\t0"
    );

    eval(&a, "rpcdef.init(def()) return true");
    // 1..n over the sorted keys of the client-visible methods only
    let before = eval(&a, "return cids()");
    assert_eq!(
        before,
        "1 Entity.Player.A.a_add,2 Entity.Player.A.a_get,3 Entity.Player.Client.onNotice,4 Entity.Player.Client.onOnline"
    );
    // every method has client, push and cid; only client-visible ones a cid
    assert_eq!(
        eval(
            &a,
            "local n, bad = 0, {}
             for id, m in ipairs(rpcdef.methods) do
                 if type(m.client) ~= 'boolean' or type(m.push) ~= 'boolean' then bad[#bad + 1] = m.key end
                 if (m.client or m.push) ~= (m.cid ~= 0) then bad[#bad + 1] = m.key end
                 if m.cid ~= 0 then
                     n = n + 1
                     if rpcdef.clientMethods[m.cid] ~= m then bad[#bad + 1] = m.key end
                 end
             end
             return n, #rpcdef.clientMethods, table.concat(bad, ' ')"
        ),
        "4\t4\t"
    );
    let p = "local P = rpcdef.iface('A', 'Player') local C = rpcdef.clientIface('Player') \
             return tostring(P.a_add.client), tostring(P.a_kick.client), tostring(P.a_note.client), \
             tostring(C.onNotice.push), tostring(C.onNotice.client), P.a_kick.cid, tostring(C.onNotice.call), \
             C.onNotice.id > 0, C.onNotice.stype";
    assert_eq!(eval(&a, p), "true\tfalse\tfalse\ttrue\tfalse\t0\tfalse\ttrue\t0");
    let first = eval(&a, "return digests()");
    let ids = "return rpcdef.iface('A', 'Player').a_add.id, rpcdef.clientIface('Player').onNotice.id";
    let ids_before = eval(&a, ids);

    // a server-only method added (before every client method, so node ids
    // move), a server-only method changed, a struct no client method uses:
    // Digi changes, ClientDigi and every cid stay
    let server_only = "rpcdef.init(def(function(d)
             d.Entity.Aardvark = { A = { a_x = { args = { { 'x', 'int32' } } } } }
             d.Entity.Player.A.a_kick.args = { { 'why', 'string' }, { 'secs', 'int32' } }
             d.Struct.Unused = { { 'z', 'bool' } }
         end)) return digests(), cids()";
    let after = eval(&a, server_only);
    let (digests, cids) = after.split_once('\t').unwrap();
    assert_ne!(&digests[..8], &first[..8], "Digi must change");
    assert_eq!(&digests[9..], &first[9..], "ClientDigi must not change");
    assert_eq!(cids, before);
    assert_ne!(eval(&a, ids), ids_before, "the node ids did move");
    // marking a method exposed changes both
    let marked = eval(
        &a,
        "rpcdef.init(def(function(d) d.Entity.Player.A.a_kick.client = true end)) return digests(), cids()",
    );
    assert_ne!(&marked[9..17], &first[9..], "ClientDigi must change");
    assert!(marked.contains("3 Entity.Player.A.a_kick"), "{marked}");

    // a Client method added: ClientDigi changes, cids after it move
    let added = eval(
        &a,
        "rpcdef.init(def(function(d) d.Entity.Player.Client.onBye = { args = { { 'why', 'string' } } } end))
         return digests(), cids()",
    );
    assert_ne!(&added[9..17], &first[9..], "ClientDigi must change");
    assert!(
        added.ends_with("3 Entity.Player.Client.onBye,4 Entity.Player.Client.onNotice,5 Entity.Player.Client.onOnline"),
        "{added}"
    );
    // so does a changed argument of a client-visible method, or a struct it uses
    for edit in [
        "d.Entity.Player.Client.onNotice.args = { { 'text', 'bytes' } }",
        "d.Entity.Player.A.a_add.results = { { 'ok', 'bool' }, { 'why', 'string?' } }",
        "d.Struct.Item = { { 'id', 'int32' }, { 'tag', 'string?' }, { 'n', 'int8' } }",
    ] {
        let changed = eval(
            &a,
            &format!("rpcdef.init(def(function(d) {edit} end)) return digests()"),
        );
        assert_ne!(&changed[9..], &first[9..], "ClientDigi must change for {edit}");
    }
    // back to the same schema: the same digests and cids
    assert_eq!(
        eval(&a, "rpcdef.init(def()) return digests(), cids()"),
        format!("{first}\t{before}")
    );

    // clientIface keeps its identity across re-inits; a removed push is
    // dropped from it and its method table marked
    assert_eq!(
        eval(
            &a,
            "local C = rpcdef.clientIface('Player') local old = C.onNotice
             rpcdef.init(def(function(d) d.Entity.Player.Client.onNotice = nil end))
             local gone = tostring(C.onNotice) .. ' ' .. tostring(old.removed) .. ' ' .. old.cid
             rpcdef.init(def())
             return rawequal(C, rpcdef.clientIface('Player')), rawequal(C, rpcdef.rpcClient.Player), gone,
                    C.onNotice.cid, rawequal(rpcdef.clientMethods[3], C.onNotice)"
        ),
        "true\ttrue\tnil true 0\t3\ttrue"
    );
    assert_eq!(eval(&a, "return next(rpcdef.clientIface('Nobody'))"), "nil");

    // errors name the method; the schema in force stays
    let cases = [
        (
            "d.Entity.Player.Client.onNotice.results = {}",
            "entitydef.Entity.Player.Client.onNotice: a Client method is a one-way push: results are not allowed",
        ),
        (
            "d.Static.System.Server.ping.client = true",
            "entitydef.Static.System.Server.ping: client = true is only for methods an entity class's server types serve (Entity.<Class>.<Type>), not for Static interfaces",
        ),
        (
            "d.Entity.Player.A.a_kick.client = 'yes'",
            "entitydef.Entity.Player.A.a_kick: client must be true or false, got string",
        ),
        (
            "d.Entity.Player.Client.onNotice.client = true",
            "entitydef.Entity.Player.Client.onNotice: client does not apply to a Client method (the client implements it)",
        ),
        (
            "d.ServerType.Client = 9",
            "entitydef.ServerType: Client cannot be a server type name (it names the methods an entity class's clients implement: Entity.<Class>.Client)",
        ),
    ];
    for (edit, want) in cases {
        assert_eq!(eval(&a, &format!("return initErr(def(function(d) {edit} end))")), want);
    }
    assert_eq!(
        eval(&a, "return digests(), cids()"),
        format!("{first}\t{before}"),
        "refused schemas change nothing"
    );
    // declareTypes refuses a Client server type too
    let e = eval(
        &a,
        "local ok, e = pcall(rpcdef.declareTypes, {A = 1, B = 2, C = 3, Client = 4}) return e",
    );
    assert!(e.contains("Client cannot be a server type name"), "{e}");
    eval(&a, "rpcdef.init(plainDef()) return true");
    a.shutdown();
}

#[test]
fn annotate_writes_luals_files_for_the_sample_schema() {
    let dir = TempDir::new("annotate");
    let out_dir = dir.0.join("meta");
    let entitydef = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/entitydef.lua");
    let out = Command::new(env!("CARGO_BIN_EXE_luahost"))
        .args(["annotate", "--entitydef"])
        .arg(&entitydef)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |name: &str| std::fs::read_to_string(out_dir.join(name)).unwrap();
    let (types, server, client) = (
        read("luahost_types.lua"),
        read("luahost_server.lua"),
        read("luahost_client.lua"),
    );
    for text in [&types, &server, &client] {
        assert!(text.starts_with("---@meta\n"), "{text}");
    }
    assert!(
        types.contains("---@class FriendPlace\n---@field rid integer # int48\n"),
        "{types}"
    );
    assert!(
        server.contains("---@class HallFriendMgrStub\n")
            && server.contains("---@field hall_login fun(rid: integer): (told: integer)\n")
            && server.contains("---@field hall fun(self: FriendMgrGhosts, sid: integer): HallFriendMgrStub\n")
            && server.contains("---@class PlayerClient\n")
            && server.contains("---@field onNotice fun(text: string)\n")
            && server.contains("---@field hall_kick fun(reason: string)\n"),
        "{server}"
    );
    assert!(
        client.contains("---@class PlayerServer\n")
            && client.contains("---@field hall_getFriends fun(): (friends: FriendPlace[])\n")
            && client.contains("---@field hall_addFriend fun(rid: integer): (ok: boolean)\n")
            && client.contains("---@class PlayerPushes\n")
            && client.contains("---@field onFriendOnline fun(rid: integer, online: boolean)\n")
            && !client.contains("hall_kick")
            && !client.contains("hall_login"),
        "{client}"
    );
    // a schema error is reported as a node would, and nothing is written
    let bad = dir.0.join("bad.lua");
    std::fs::write(
        &bad,
        "return { ServerType = { Hall = 1 }, Entity = { P = { Client = { onX = { results = {} } } } } }",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_luahost"))
        .args(["annotate", "--entitydef"])
        .arg(&bad)
        .arg("--out")
        .arg(dir.0.join("none"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entitydef.Entity.P.Client.onX: a Client method is a one-way push: results are not allowed"),
        "{err}"
    );
    assert!(!dir.0.join("none").exists());
}
