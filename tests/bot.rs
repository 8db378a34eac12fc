//! `luahost bot` against a Gate and a Hall in this process (the cluster of
//! tests/gate.rs): default workload over TCP and WebSocket, a typed script,
//! and a wrong cluster secret.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn gate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gate")
}

struct Cluster {
    dir: TempDir,
    file: PathBuf,
    tcp: String,
    ws: String,
    _nodes: Vec<luahost::NodeHandle>,
}

/// A Gate and one Hall (as tests/gate.rs `cluster`).
fn cluster(tag: &str) -> Cluster {
    let dir = TempDir::new(tag);
    let scripts = gate_dir().join("scripts");
    let main = scripts.join("main.lua").display().to_string();
    let (tcp, ws) = (free_port(), free_port());
    let text = format!(
        "return {{\n  secret = \"gate-test-secret-0123\",\n  call_timeout = 3,\n  liveness = 2,\n  scripts = {{ {:?} }},\n  nodes = {{\n    gate_1 = {{ type = \"Gate\", id = 1, addr = \"127.0.0.1:{}\", main = {main:?},\n      gate = {{ tcp = \"127.0.0.1:{tcp}\", ws = \"127.0.0.1:{ws}\", rate = 100000, burst = 10000 }} }},\n    hall_1 = {{ type = \"Hall\", id = 11, addr = \"127.0.0.1:{}\", main = {main:?} }},\n  }},\n}}\n",
        scripts.display().to_string(),
        free_port(),
        free_port(),
    );
    let file = dir.0.join("cluster.lua");
    std::fs::write(&file, text).unwrap();
    let gate = start(&file, "gate_1");
    let hall = start(&file, "hall_1");
    wait_live(&gate, &["hall_1"]);
    Cluster {
        dir,
        file,
        tcp: format!("127.0.0.1:{tcp}"),
        ws: format!("127.0.0.1:{ws}"),
        _nodes: vec![gate, hall],
    }
}

struct Outcome {
    result: String,
    stderr: String,
    ok: bool,
}

impl Outcome {
    fn field(&self, name: &str) -> u64 {
        let key = format!("{name}=");
        self.result
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&key))
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.result))
            .parse()
            .unwrap()
    }
}

fn bot(cluster_file: &Path, extra: &[&str]) -> Outcome {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_luahost"))
        .arg("bot")
        .args(["--clients", "20", "--secs", "2", "--cluster"])
        .arg(cluster_file)
        .args(extra)
        .env("LUAHOST_LOG", "warn")
        .output()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30), "bot ran {:?}", t0.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let result = stdout
        .lines()
        .find(|l| l.starts_with("RESULT workload=bot "))
        .unwrap_or_else(|| panic!("no RESULT line; stdout {stdout:?}, stderr {stderr:?}"))
        .to_string();
    eprintln!("{result}");
    Outcome {
        result,
        stderr,
        ok: out.status.success(),
    }
}

#[test]
fn bots_log_in_and_run_over_tcp_and_websocket_and_a_wrong_secret_fails_clearly() {
    let c = cluster("bot");
    // the default workload (echo in a loop), both transports
    for extra in [vec!["--gate", &c.tcp], vec!["--gate", &c.ws, "--ws"]] {
        let o = bot(&c.file, &extra);
        assert_eq!(o.field("clients"), 20, "{}", o.result);
        assert_eq!(o.field("connected"), 20, "{} {}", o.result, o.stderr);
        assert_eq!(o.field("failed"), 0, "{}", o.result);
        assert!(o.field("msgs") > 0, "{}", o.result);
        assert!(o.field("p50_us") > 0, "{}", o.result);
        assert_eq!(o.field("kicks"), 0, "{}", o.result);
        assert!(o.ok, "{}", o.stderr);
    }
    // a script: typed calls, structs, sends and pushes
    let script = gate_dir().join("bot.lua");
    let o = bot(
        &c.file,
        &[
            "--gate",
            &c.tcp,
            "--script",
            script.to_str().unwrap(),
            "--account-prefix",
            "s",
        ],
    );
    assert_eq!(o.field("connected"), 20, "{} {}", o.result, o.stderr);
    assert!(o.field("msgs") > 20, "{}", o.result);
    assert!(!o.stderr.contains("script:"), "{}", o.stderr);
    // a cluster file with another secret: every token is refused
    let wrong = c.dir.0.join("wrong.lua");
    let text = std::fs::read_to_string(&c.file)
        .unwrap()
        .replace("gate-test-secret-0123", "another-secret-456789");
    std::fs::write(&wrong, text).unwrap();
    let o = bot(&wrong, &["--gate", &c.tcp]);
    eprintln!("{}", o.stderr);
    assert_eq!(o.field("connected"), 0, "{}", o.result);
    assert_eq!(o.field("failed"), 20, "{}", o.result);
    assert_eq!(o.field("msgs"), 0, "{}", o.result);
    assert!(!o.ok);
    assert!(o.stderr.contains("bad_token"), "{}", o.stderr);
    assert!(o.stderr.contains("20 of 20 clients failed to log in"), "{}", o.stderr);
}
