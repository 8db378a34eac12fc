//! The folder store (embedded default): one JSON file per key under a
//! folder, written atomically (a temporary file renamed over the old one,
//! so a reader in another process sees the old value or the new one); the
//! audit log is one file of JSON lines, each appended with one `write` on
//! a file opened for appending (entries of several processes do not mix).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::kv::{Kv, OpsError};

/// A folder holding the store.
#[derive(Debug)]
pub struct FileKv {
    dir: PathBuf,
    tmp: AtomicU64,
    nonce: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OpsError + '_ {
    move |source| OpsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FileKv {
    /// Opens (creating) the folder `dir`.
    ///
    /// # Errors
    /// [`OpsError::Io`].
    pub fn open(dir: impl AsRef<Path>) -> Result<FileKv, OpsError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(FileKv {
            dir,
            tmp: AtomicU64::new(0),
            nonce: u64::from_le_bytes(super::auth::random::<8>().unwrap_or_default()),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// A temporary file beside `path` with `value` written and synced.
    fn staged(&self, path: &Path, value: &[u8]) -> Result<PathBuf, OpsError> {
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        // unique among processes (pid), handles (random) and writes (counter)
        let tmp = parent.join(format!(
            ".tmp-{}-{:x}-{}",
            std::process::id(),
            self.nonce,
            self.tmp.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = open_private(&tmp, false).map_err(io(&tmp))?;
        f.write_all(value).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
        Ok(tmp)
    }
}

/// Opens for writing, readable by the owner alone (the store holds
/// verifiers and the daemons' secret).
fn open_private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).mode(0o600);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    o.open(path)
}

impl Kv for FileKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, OpsError> {
        let p = self.path(key);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), OpsError> {
        let p = self.path(key);
        let tmp = self.staged(&p, value)?;
        std::fs::rename(&tmp, &p).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&p)(e)
        })
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<bool, OpsError> {
        let p = self.path(key);
        let tmp = self.staged(&p, value)?;
        // a hard link fails if the name exists: only one creator wins
        let r = std::fs::hard_link(&tmp, &p);
        let _ = std::fs::remove_file(&tmp);
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io(&p)(e)),
        }
    }

    fn delete(&self, key: &str) -> Result<bool, OpsError> {
        let p = self.path(key);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&p)(e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, OpsError> {
        let d = self.dir.join(dir);
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&d)(e)),
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json")
                    .filter(|_| !n.starts_with('.'))
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn append(&self, log: &str, entry: &[u8]) -> Result<(), OpsError> {
        let p = self.dir.join(format!("{log}.log"));
        let mut line = entry.to_vec();
        line.retain(|&b| b != b'\n');
        line.push(b'\n');
        let mut f = open_private(&p, true).map_err(io(&p))?;
        f.write_all(&line).map_err(io(&p))
    }

    fn tail(&self, log: &str, n: usize) -> Result<Vec<Vec<u8>>, OpsError> {
        let p = self.dir.join(format!("{log}.log"));
        let all = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&p)(e)),
        };
        let lines: Vec<Vec<u8>> = all
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        Ok(lines[lines.len().saturating_sub(n)..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::*;
    use super::*;

    fn tmp(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(tag).tempdir().unwrap()
    }

    #[test]
    fn keys_round_trip_and_create_wins_once() {
        let d = tmp("kv");
        let kv = FileKv::open(d.path()).unwrap();
        assert_eq!(kv.get("procs/a").unwrap(), None);
        kv.put("procs/a", b"1").unwrap();
        kv.put("procs/a", b"2").unwrap();
        assert_eq!(kv.get("procs/a").unwrap().unwrap(), b"2");
        assert!(kv.create("users/x", b"u").unwrap());
        assert!(!kv.create("users/x", b"v").unwrap());
        assert_eq!(kv.get("users/x").unwrap().unwrap(), b"u");
        assert_eq!(kv.list("procs").unwrap(), vec!["a"]);
        assert!(kv.delete("procs/a").unwrap());
        assert!(!kv.delete("procs/a").unwrap());
        assert!(kv.list("procs").unwrap().is_empty(), "no temporary file is left");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("users/x.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "records are private to their owner");
    }

    #[test]
    fn several_writers_never_leave_a_torn_record() {
        let d = tmp("race");
        let path = d.path().to_path_buf();
        let writers: Vec<_> = (0..4)
            .map(|i| {
                let p = path.clone();
                std::thread::spawn(move || {
                    let kv = FileKv::open(&p).unwrap();
                    for j in 0..200 {
                        let v = format!("{{\"w\":{i},\"j\":{j},\"pad\":\"{}\"}}", "x".repeat(4000));
                        kv.put("procs/k", v.as_bytes()).unwrap();
                        kv.append("audit", format!("{{\"w\":{i},\"j\":{j}}}").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        let kv = FileKv::open(&path).unwrap();
        for _ in 0..200 {
            if let Some(v) = kv.get("procs/k").unwrap() {
                serde_json::from_slice::<serde_json::Value>(&v).expect("a whole record");
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        let log = kv.tail("audit", 10_000).unwrap();
        assert_eq!(log.len(), 800);
        for l in &log {
            serde_json::from_slice::<serde_json::Value>(l).expect("whole lines");
        }
        assert_eq!(kv.tail("audit", 3).unwrap().len(), 3);
    }

    #[test]
    fn the_typed_store_over_a_folder() {
        let d = tmp("store");
        let s = OpsStore::open(d.path().to_str().unwrap()).unwrap();
        let mut w = World::default();
        w.regions.entry("r1".into()).or_default().insert(
            "127.0.0.2".into(),
            vec![ProcConfig {
                name: "hall_1".into(),
                cluster: "c.lua".into(),
                stype: None,
                addr: None,
            }],
        );
        s.set_world(&w).unwrap();
        assert_eq!(s.world().unwrap(), w);
        assert_eq!(s.world().unwrap().machine("127.0.0.2").unwrap().0, "r1");
        assert!(s.world().unwrap().machine("127.0.0.9").is_none());
        let secret = s.secret().unwrap();
        assert_eq!(
            OpsStore::open(d.path().to_str().unwrap()).unwrap().secret().unwrap(),
            secret
        );
        let u = UserRecord {
            name: "alice".into(),
            role: crate::ops::roles::Role::Admin,
            verifier: crate::ops::auth::Verifier::for_secret(&[1; 32]),
            created: now_ms(),
        };
        s.add_user(&u).unwrap();
        assert!(matches!(s.add_user(&u), Err(OpsError::Exists(_))));
        assert_eq!(s.users().unwrap(), vec![u]);
        assert!(matches!(s.user("../x"), Err(OpsError::BadName(_))));
        assert!(s.del_user("alice").unwrap());
        let e = AuditEntry {
            at: 1,
            user: "alice".into(),
            via: "127.0.0.2".into(),
            command: "list world".into(),
            result: "ok".into(),
        };
        s.audit(&e).unwrap();
        assert_eq!(s.audit_log(10).unwrap(), vec![e]);
        let v = crate::ops::auth::Verifier::for_secret(&[2; 32]);
        assert!(s.offer_bootstrap(&v).unwrap());
        assert!(!s.offer_bootstrap(&v).unwrap());
        assert_eq!(s.bootstrap().unwrap(), Some(v));
        assert!(s.end_bootstrap().unwrap());
        assert_eq!(s.bootstrap().unwrap(), None);
        assert!(matches!(OpsStore::open("http://x"), Err(OpsError::BadLocation(_))));
    }

    #[test]
    fn a_world_with_a_bad_or_repeated_name_is_refused() {
        let mut w = World::default();
        let p = ProcConfig {
            name: "a".into(),
            cluster: "c".into(),
            stype: None,
            addr: None,
        };
        w.regions
            .entry("r".into())
            .or_default()
            .insert("1.2.3.4".into(), vec![p.clone(), p.clone()]);
        assert!(matches!(w.check(), Err(OpsError::Exists(_))));
        let mut bad = p;
        bad.name = "a/b".into();
        w.regions.get_mut("r").unwrap().insert("1.2.3.4".into(), vec![bad]);
        assert!(matches!(w.check(), Err(OpsError::BadName(_))));
    }
}
