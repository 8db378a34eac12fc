//! The suite on a real PostgreSQL server: a throw-away cluster made with
//! `initdb` in a temporary folder (as the `postgres` user when run as root),
//! listening only on a Unix socket there, stopped when the tests end. Needs
//! Debian's `postgresql` package.

use std::path::PathBuf;
use std::process::Command;

use super::*;

/// A throw-away PostgreSQL cluster.
pub(super) struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .filter(|b| b.join("initdb").exists())
        .expect("PostgreSQL's initdb not found under /usr/lib/postgresql: install Debian's postgresql package")
}

impl PgServer {
    pub(super) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        let server = PgServer {
            dir,
            bin: pg_bin(),
            root,
        };
        if root {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(server.dir.path())
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = server.dir.path().join("data");
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "luahost",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        server.pg_ctl("start");
        server
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if self.root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(super) fn pg_ctl(&self, what: &str) {
        let dir = self.dir.path().to_str().unwrap();
        let data = format!("{dir}/data");
        let opts = format!("-k {dir} -c listen_addresses= -p 5432");
        let log = format!("{dir}/log");
        let mut args = vec!["-D", &data, "-w", "-l", &log, "-o", &opts];
        if what != "start" {
            args.extend(["-m", "fast"]);
        }
        args.push(what);
        self.run("pg_ctl", &args);
    }

    /// Connection parameters for database `db`.
    pub(super) fn params(&self, db: &str) -> String {
        format!("host={} port=5432 user=luahost dbname={db}", self.dir.path().display())
    }

    /// A new empty database.
    pub(super) fn fresh_db(&self) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("t{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut admin = ::postgres::Client::connect(&self.params("postgres"), ::postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        name
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_string();
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", &format!("{dir}/data"), "-m", "immediate", "stop"];
        let _ = if self.root {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

/// The whole suite on one server (stopped at the end, also when a test
/// fails), each test on a database of its own.
#[test]
fn suite_on_postgres() {
    let server = PgServer::start();
    type Test = fn(Arc<dyn Backend>);
    let tests: [(&str, Test); 9] = [
        ("round_trip_and_versions", round_trip_and_versions),
        (
            "version_conflict_keeps_the_newer_data",
            version_conflict_keeps_the_newer_data,
        ),
        ("epochs_fence_superseded_writers", epochs_fence_superseded_writers),
        (
            "delete_with_expect_and_versions_go_on",
            delete_with_expect_and_versions_go_on,
        ),
        ("query_by_index_follows_updates", query_by_index_follows_updates),
        ("batch_is_all_or_nothing", batch_is_all_or_nothing),
        (
            "concurrent_saves_one_winner_per_version",
            concurrent_saves_one_winner_per_version,
        ),
        ("store_handle_races_and_closes", store_handle_races_and_closes),
        ("counters_never_repeat_under_races", counters_never_repeat_under_races),
    ];
    for (name, test) in tests {
        eprintln!("postgres: {name}");
        let db = Postgres::connect(&server.params(&server.fresh_db()), 8).unwrap();
        test(Arc::new(db));
    }
}

/// The server restarted under a connected store: operations on the broken
/// connections fail with the driver's text or are retried, and the store
/// recovers by itself.
#[test]
fn restart_of_the_server() {
    let server = PgServer::start();
    let db = Postgres::connect(&server.params("postgres"), 4).unwrap();
    db.save(&Save::new("p", 1, &b"before"[..])).unwrap();
    server.pg_ctl("stop");
    let err = db.load("p", &Key::Int(1)).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().starts_with("unavailable: "), "{err}");
    assert!(db.save(&Save::new("p", 1, &b"down"[..])).is_err());
    server.pg_ctl("start");
    // the pooled connection is dead: the load is retried on a new one
    assert_eq!(db.load("p", &Key::Int(1)).unwrap().unwrap().value, b"before");
    assert_eq!(db.save(&Save::new("p", 1, &b"after"[..])), Ok(2));
    assert_eq!(db.load("p", &Key::Int(1)).unwrap().unwrap().value, b"after");
}
