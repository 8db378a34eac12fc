//! The friends demo, as a user runs it: `luahost up examples/friends`.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn friends_demo_players_log_in_through_the_gate_and_hear_of_their_friends() {
    friends_demo("examples/friends", "127.0.0.1:7300", &[]);
}

/// The same demo through two Routers (`topology = "router"`), same assertions.
#[test]
fn friends_demo_through_two_routers() {
    friends_demo(
        "examples/friends-router",
        "127.0.0.1:7310",
        &["router: gate_1 (sid 21) joined", "router: hall_2 (sid 12) joined"],
    );
}

/// Runs the demo in `example` and its bots against `gate`; the log must
/// also have each of `lines`.
fn friends_demo(example: &str, gate: &str, lines: &[&str]) {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(example);
    let mut p = Proc::spawn(&["up", demo.to_str().unwrap()]);
    assert!(
        p.wait_log(&format!("accepting clients on {gate}"), Duration::from_secs(30)),
        "the demo's Gate did not listen; log:\n{}",
        p.log()
    );
    // the Gate sees both Halls, and each Hall the DB
    assert!(wait_until(Duration::from_secs(20), || {
        let log = p.log();
        [
            "gate_1 hall_1 (Hall",
            "gate_1 hall_2 (Hall",
            "hall_1 db_1 (DB",
            "hall_2 db_1 (DB",
        ]
        .iter()
        .all(|s| log.contains(s))
    }));
    // 20 players log in through the Gate, as the README says
    let (ok, stdout, stderr) = demo_bots(gate, &demo, 4);
    assert!(ok, "bot failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("RESULT workload=bot clients=20 connected=20 failed=0"),
        "{stdout}\n{stderr}"
    );
    // their clients heard of friends coming online (pushes)
    assert!(
        stdout.contains(" is online"),
        "no onFriendOnline push reached a bot:\n{stdout}"
    );
    let log = p.log();
    assert!(log.contains("router.route(Hall, "), "the gate logs the routing choice");
    assert!(log.contains("logged in here"), "a hall logs the login");
    assert!(log.contains(" hear that "), "a hall hears of a friend online:\n{log}");
    assert!(!log.contains(" ERROR "), "errors in the demo log:\n{log}");
    for l in lines {
        assert!(log.contains(l), "no '{l}' in the log:\n{log}");
    }
    // Ctrl-C stops it cleanly
    p.signal(libc::SIGINT);
    let status = p
        .wait_exit(Duration::from_secs(15))
        .expect("luahost up did not stop on SIGINT");
    assert!(status.success(), "exit status {status:?}");
    assert!(p.log().contains("node hall_1 stopping"));
}

/// The value of `key=` in a RESULT line.
fn result_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
fn bench_gate_workloads_run_end_to_end() {
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(luahost_bin())
            .args(args)
            .env("LUAHOST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stdout = run(&["bench", "gate-idle", "--clients", "50"]);
    let idle = stdout
        .lines()
        .find(|l| l.starts_with("RESULT workload=gate-idle "))
        .expect("a gate-idle RESULT line");
    assert_eq!(result_field(idle, "clients"), "50", "{idle}");
    assert_eq!(result_field(idle, "connected"), "50", "{idle}");
    let per: u64 = result_field(idle, "bytes_per_client").parse().unwrap();
    assert!(per < 1 << 20, "{idle}");

    for ws in [false, true] {
        let mut args = vec!["bench", "gate-rtt", "--clients", "20", "--secs", "0.5"];
        if ws {
            args.push("--ws");
        }
        let stdout = run(&args);
        let rtt = stdout
            .lines()
            .find(|l| l.starts_with("RESULT workload=gate-rtt "))
            .expect("a gate-rtt RESULT line");
        assert_eq!(result_field(rtt, "transport"), if ws { "ws" } else { "tcp" });
        assert_eq!(result_field(rtt, "clients"), "20", "{rtt}");
        assert_eq!(result_field(rtt, "connected"), "20", "{rtt}");
        assert_eq!(result_field(rtt, "errors"), "0", "{rtt}");
        let rate: f64 = result_field(rtt, "rate").parse().unwrap();
        assert!(rate > 0.0, "{rtt}");
        for k in ["p50_us", "p99_us"] {
            let _: u64 = result_field(rtt, k).parse().unwrap();
        }
        assert!(
            stdout.lines().any(|l| l.starts_with("RESULT workload=call conc=20 ")),
            "{stdout}"
        );
        let ratio = stdout
            .lines()
            .find(|l| l.starts_with("RESULT workload=gate-vs-call "))
            .expect("a gate-vs-call RESULT line");
        let r: f64 = result_field(ratio, "ratio").parse().unwrap();
        assert!(r > 0.0, "{ratio}");
    }
}

#[test]
fn bench_command_prints_result_lines_and_checks_every_send() {
    for args in [
        &["bench", "send", "--secs", "0.5"][..],
        &["bench", "call", "--conc", "4", "--secs", "0.5"][..],
    ] {
        let out = std::process::Command::new(luahost_bin())
            .args(args)
            .env("LUAHOST_LOG", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .expect("a RESULT line");
        let rate: f64 = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("rate="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rate > 0.0, "{line}");
        assert!(line.contains(&format!("workload={}", args[1])), "{line}");
    }
    // through one Router and in a mesh, side by side, with the ratio
    let out = std::process::Command::new(luahost_bin())
        .args(["bench", "call", "--conc", "4", "--secs", "0.3", "--topology", "router"])
        .env("LUAHOST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("RESULT workload=call topology=router conc=4 "),
        "{stdout}"
    );
    let ratio = stdout
        .lines()
        .find(|l| l.starts_with("RESULT workload=relay-vs-mesh "))
        .expect("a relay-vs-mesh RESULT line");
    let r: f64 = result_field(ratio, "ratio").parse().unwrap();
    assert!(r > 0.0, "{ratio}");
    assert_eq!(
        result_field(ratio, "met"),
        if r >= 0.6 { "yes" } else { "no" },
        "{ratio}"
    );
}

#[test]
fn bench_raw_and_compare_print_rates_and_ratios() {
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(luahost_bin())
            .args(args)
            .env("LUAHOST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stdout = run(&["bench", "raw", "--conc", "4", "--secs", "0.3"]);
    let raw = stdout
        .lines()
        .find(|l| l.starts_with("RESULT workload=raw "))
        .expect("a raw RESULT line");
    assert_eq!(result_field(raw, "conc"), "4", "{raw}");
    assert_eq!(result_field(raw, "payload"), "0", "{raw}");
    let rate: f64 = result_field(raw, "rate").parse().unwrap();
    assert!(rate > 0.0, "{raw}");
    for k in ["p50_us", "p99_us"] {
        let _: u64 = result_field(raw, k).parse().unwrap();
    }
    let _: f64 = result_field(raw, "cpu_pct").parse().unwrap();

    // skynet's figures as the harness writes them, and one of skynet's own lines
    let dir = std::env::temp_dir().join(format!("luahost-compare-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let figures = dir.join("skynet.txt");
    std::fs::write(
        &figures,
        "workload=call conc=1 rate=4000\nworkload=call conc=100 rate=20000\nworkload=send rate=60000\n\
         workload=local-call conc=1 rate=100000\n\
         RESULT mode=lcall conc=100 payload=0 n=1 elapsed=1 rate=120000 p50_us=0 p99_us=0\n",
    )
    .unwrap();
    for skynet in [false, true] {
        let mut args = vec!["bench", "compare", "--secs", "0.3", "--rounds", "1"];
        if skynet {
            args.extend(["--skynet", figures.to_str().unwrap()]);
        }
        let stdout = run(&args);
        let ratios: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("RESULT ") && l.contains(" ratio="))
            .collect();
        let want: &[(&str, &str, &str, &str)] = if skynet {
            &[
                ("call", "1", "raw", "0.9"),
                ("call", "100", "raw", "0.5"),
                ("local-call", "1", "skynet", "1.5"),
                ("local-call", "100", "skynet", "10"),
                ("send", "1", "skynet", "20"),
                ("call", "1", "skynet", "none"),
                ("call", "100", "skynet", "none"),
            ]
        } else {
            &[("call", "1", "raw", "0.9"), ("call", "100", "raw", "0.5")]
        };
        assert_eq!(ratios.len(), want.len(), "{stdout}");
        for (line, (w, conc, r, goal)) in ratios.iter().zip(want) {
            assert_eq!(result_field(line, "workload"), *w, "{line}");
            assert_eq!(result_field(line, "conc"), *conc, "{line}");
            assert_eq!(result_field(line, "ref"), *r, "{line}");
            assert_eq!(result_field(line, "goal"), *goal, "{line}");
            let ratio: f64 = result_field(line, "ratio").parse().unwrap();
            let (l, rf): (f64, f64) = (
                result_field(line, "luahost").parse().unwrap(),
                result_field(line, "reference").parse().unwrap(),
            );
            assert!(ratio > 0.0 && l > 0.0 && rf > 0.0, "{line}");
            let met = result_field(line, "met");
            if *goal == "none" {
                assert_eq!(met, "-", "{line}");
            } else {
                let g: f64 = goal.parse().unwrap();
                assert_eq!(met, if ratio >= g { "yes" } else { "no" }, "{line}");
            }
        }
        // every run of the rounds is printed too
        assert!(stdout.contains("RESULT workload=raw conc=100 "), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The demo keeps players and friend lists in its DB node's store (SQLite,
/// `friends.db` beside the cluster file): a friend made and a login
/// counted before a restart are there after it. (A copy of the demo's
/// cluster file in a temporary folder, on free ports.)
#[test]
fn the_demo_keeps_players_and_friends_across_a_restart() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("demo-restart");
    let mut text = std::fs::read_to_string(root.join("examples/friends/cluster.lua"))
        .unwrap()
        .replace(
            "\"../../scripts\"",
            &format!("{:?}", root.join("scripts").display().to_string()),
        )
        .replace(
            "\"../../lualib\"",
            &format!("{:?}", root.join("lualib").display().to_string()),
        )
        .replace(
            "web = \"web\"",
            &format!("web = {:?}", root.join("examples/friends/web").display().to_string()),
        );
    for port in ["7101", "7102", "7103", "7104", "7300", "7301", "7380"] {
        text = text.replace(&format!("127.0.0.1:{port}\""), &format!("127.0.0.1:{}\"", free_port()));
    }
    let gate = text
        .split("tcp = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let cluster = dir.0.join("cluster.lua");
    std::fs::write(&cluster, text).unwrap();
    let bot = |script: &str| {
        let file = dir.0.join("bot.lua");
        std::fs::write(&file, script).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_luahost"))
            .args(["bot", "--gate", &gate, "--cluster"])
            .arg(&cluster)
            .args([
                "--account-prefix",
                "",
                "--first-account",
                "1001",
                "--clients",
                "1",
                "--secs",
                "3",
                "--script",
            ])
            .arg(&file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    const SHOW: &str = "
        local friends = client:call('hall_getFriends')
        local list = {}
        for _, f in ipairs(friends) do list[#list + 1] = f.rid end
        table.sort(list)
        print('FRIENDS ' .. client.account .. ': ' .. table.concat(list, ','))
    ";
    let up = |expect: &str| {
        let p = Proc::spawn(&["up", cluster.to_str().unwrap(), "--no-watch"]);
        assert!(
            p.wait_log(expect, Duration::from_secs(30)) && p.wait_log("accepting clients", Duration::from_secs(30)),
            "{}",
            p.log()
        );
        assert!(wait_until(Duration::from_secs(20), || {
            let log = p.log();
            log.contains("gate_1 hall_1 (Hall")
                && log.contains("gate_1 hall_2 (Hall")
                && log.contains("hall_1 db_1 (DB")
                && log.contains("hall_2 db_1 (DB")
        }));
        p
    };
    let mut p = up("DB ready: 20 players created");
    let out = bot(&format!(
        "function bot.run(client) assert(client:call('hall_addFriend', 1010)) {SHOW} end"
    ));
    assert!(out.contains("FRIENDS 1001: 1002,1006,1010"), "{out}");
    assert!(
        p.wait_log("player 1001 logged in here (login #1)", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    p.signal(libc::SIGINT);
    assert!(
        p.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()),
        "{}",
        p.log()
    );
    assert!(dir.0.join("friends.db").exists());

    let p = up("DB ready: players loaded from the store");
    let out = bot(&format!("function bot.run(client) {SHOW} end"));
    assert!(out.contains("FRIENDS 1001: 1002,1006,1010"), "{out}");
    assert!(
        p.wait_log("player 1001 logged in here (login #2)", Duration::from_secs(5)),
        "{}",
        p.log()
    );
    assert!(!p.log().contains(" ERROR "), "{}", p.log());
}
