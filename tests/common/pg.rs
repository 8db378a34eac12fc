//! A throw-away PostgreSQL server for the tests of the DB node: a cluster
//! made with `initdb` in a temporary folder (as the `postgres` user when
//! the tests run as root), with a password (scram-sha-256), listening only
//! on a Unix socket in that folder; stopped when dropped. Needs Debian's
//! `postgresql` package.

use std::path::PathBuf;
use std::process::Command;

use super::TempDir;

/// A throw-away PostgreSQL server.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    root: bool,
    /// The password of user `luahost`.
    pub password: String,
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
    /// Makes and starts a server whose user `luahost` has `password`.
    pub fn start(tag: &str, password: &str) -> Self {
        let server = Self::create(tag, password);
        server.pg_ctl("start");
        server
    }

    /// Makes a server whose user `luahost` has `password`, not started
    /// (`pg_ctl("start")` starts it).
    pub fn create(tag: &str, password: &str) -> Self {
        let dir = TempDir::new(tag);
        let root = unsafe { libc::geteuid() } == 0;
        let server = PgServer {
            dir,
            bin: pg_bin(),
            root,
            password: password.to_string(),
        };
        let pwfile = server.dir.0.join("pw");
        std::fs::write(&pwfile, password).unwrap();
        if root {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&server.dir.0)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let data = server.dir.0.join("data");
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "luahost",
                "-A",
                "scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--no-sync",
            ],
        );
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

    /// `pg_ctl start`, or `stop`/`restart` (fast: open connections are
    /// closed), waiting until it is done.
    pub fn pg_ctl(&self, what: &str) {
        let dir = self.dir.0.to_str().unwrap();
        let data = format!("{dir}/data");
        let opts = format!("-k {dir} -c listen_addresses= -p 5432 -c fsync=off");
        let log = format!("{dir}/log");
        let mut args = vec!["-D", &data, "-w", "-l", &log, "-o", &opts];
        if what != "start" {
            args.extend(["-m", "fast"]);
        }
        args.push(what);
        self.run("pg_ctl", &args);
    }

    /// Connection parameters (no password) for database `db`.
    pub fn params(&self, db: &str) -> String {
        format!("host={} port=5432 user=luahost dbname={db}", self.dir.0.display())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let dir = self.dir.0.to_str().unwrap().to_string();
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
