//! The friends demo, as a user runs it: `luahost up examples/friends`.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn friends_demo_notifies_friends_on_their_halls_and_stops_cleanly() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/friends");
    let mut p = Proc::spawn(&["up", demo.to_str().unwrap()]);
    // Wait until a Hall has told another node about a friend coming online,
    // and that node has logged hearing it.
    let mut matched = None;
    let found = wait_until(Duration::from_secs(40), || {
        let log = p.log();
        for line in log.lines() {
            // "... INFO hall_2 player 1009 online: told hall_1 about friends 1008"
            let Some(rest) = line.split(" player ").nth(1) else {
                continue;
            };
            let Some((rid, told)) = rest.split_once(" online: told ") else {
                continue;
            };
            let Some((hall, friends)) = told.split_once(" about friends ") else {
                continue;
            };
            let heard = format!(" {hall} friends {friends} hear that {rid} is online");
            if log.contains(&heard) {
                matched = Some(heard);
                return true;
            }
        }
        false
    });
    assert!(found, "no friend notification was delivered; log:\n{}", p.log());
    let log = p.log();
    assert!(log.contains("router.route(Hall, "), "the gate logs the routing choice");
    assert!(log.contains("logged in here"), "a hall logs the login");
    assert!(!log.contains(" ERROR "), "errors in the demo log:\n{log}");
    eprintln!("matched:{}", matched.unwrap());
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
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_luahost"))
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
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_luahost"))
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
}
