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
