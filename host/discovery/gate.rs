//! A Gate node's settings: the `gate` table of its entry in the cluster
//! file.
//!
//! ```lua
//! gate_1 = { type = "Gate", addr = "127.0.0.1:7102",
//!            gate = { tcp = "127.0.0.1:7300", ws = "127.0.0.1:7301",
//!                     tls = { cert = "gate.crt", key = "gate.key" },
//!                     http = "127.0.0.1:7380", web = "web" } },
//! ```
//!
//! Every other field is optional (defaults below). Paths are relative to the
//! cluster file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::{Table, Value};

/// The certificate and key a Gate serves TLS with (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateTls {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// How a Gate serves clients.
#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// TCP listener for clients (`tcp`).
    pub tcp: Option<SocketAddr>,
    /// WebSocket listener for clients (`ws`).
    pub ws: Option<SocketAddr>,
    /// TLS on every listener (`tls = { cert =, key = }`).
    pub tls: Option<GateTls>,
    /// HTTP/1.1 listener for browsers (`http`; HTTPS with `tls`): the web
    /// page, `/luahost/config.json` and `/luahost/login`.
    pub http: Option<SocketAddr>,
    /// The folder whose files the HTTP listener serves (`web`, relative to
    /// the cluster file); without it only the `/luahost/` paths are served.
    pub web: Option<PathBuf>,
    /// Time a client has to connect and send its verify (`verify_timeout`,
    /// default 5 s).
    pub verify_timeout: Duration,
    /// The client's heartbeat period (`heartbeat`, default 10 s); a client
    /// silent for three of them is closed.
    pub heartbeat: Duration,
    /// How long a lost session waits for its client to resume
    /// (`resume_grace`, default 30 s).
    pub resume_grace: Duration,
    /// Largest message from a verified client (`max_message`, default 64 KiB).
    pub max_message: usize,
    /// Clients verifying at once, in all (`max_verifying`, default 1024).
    pub max_verifying: usize,
    /// Clients verifying at once from one address (`max_verifying_per_ip`,
    /// default 64).
    pub max_verifying_per_ip: usize,
    /// Messages per second a client may send on average (`rate`, default 200).
    pub rate: f64,
    /// Messages a client may send in a burst (`burst`, default 400).
    pub burst: f64,
    /// Bytes queued towards a client that does not read before it is closed
    /// (`max_out`, default 1 MiB): more than this while a write to it is
    /// pending, or four times this in one burst.
    pub max_out: usize,
    /// Pushes kept for a resume (`replay_max`, default 1024).
    pub replay_max: usize,
    /// Bytes of pushes kept for a resume (`replay_bytes`, default 1 MiB).
    pub replay_bytes: usize,
    /// How clients prove who they are (`verify`): `"token"` (default: a
    /// token from `gate.token`, checked by the Gate), or `"lua"` (the
    /// Gate's `gate.onVerify(account, addr, token)` decides alone: custom
    /// logins, e.g. a platform's session ticket checked on a backend).
    pub lua_verify: bool,
    /// The server type clients are bound to by default (`backend`, default
    /// "Hall"); the Gate's Lua may choose otherwise.
    pub backend: String,
}

impl GateConfig {
    /// Defaults, with no listener.
    pub fn new() -> Self {
        GateConfig {
            tcp: None,
            ws: None,
            tls: None,
            http: None,
            web: None,
            verify_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            resume_grace: Duration::from_secs(30),
            max_message: 64 * 1024,
            max_verifying: 1024,
            max_verifying_per_ip: 64,
            rate: 200.0,
            burst: 400.0,
            max_out: 1024 * 1024,
            replay_max: 1024,
            replay_bytes: 1024 * 1024,
            backend: "Hall".into(),
            lua_verify: false,
        }
    }

    /// Reads a node's `gate` table; `dir` is the cluster file's folder.
    ///
    /// # Errors
    ///
    /// A text naming the field at fault.
    pub fn parse(t: &Table, dir: &Path) -> Result<GateConfig, String> {
        let mut c = GateConfig::new();
        for pair in t.pairs::<String, Value>() {
            let (k, _) = pair.map_err(|e| e.to_string())?;
            const KNOWN: [&str; 18] = [
                "verify",
                "tcp",
                "ws",
                "tls",
                "http",
                "web",
                "verify_timeout",
                "heartbeat",
                "resume_grace",
                "max_message",
                "max_verifying",
                "max_verifying_per_ip",
                "rate",
                "burst",
                "max_out",
                "replay_max",
                "replay_bytes",
                "backend",
            ];
            if !KNOWN.contains(&k.as_str()) {
                return Err(format!("gate.{k} is not a gate setting (known: {})", KNOWN.join(", ")));
            }
        }
        let addr = |k: &str| -> Result<Option<SocketAddr>, String> {
            match t.get::<Option<String>>(k).map_err(|e| format!("gate.{k}: {e}"))? {
                None => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|e| format!("gate.{k} '{s}': {e}")),
            }
        };
        c.tcp = addr("tcp")?;
        c.ws = addr("ws")?;
        if c.tcp.is_none() && c.ws.is_none() {
            return Err("gate needs a listener: tcp = \"ip:port\" and/or ws = \"ip:port\"".into());
        }
        c.http = addr("http")?;
        if let Some(w) = t.get::<Option<String>>("web").map_err(|e| format!("gate.web: {e}"))? {
            if c.http.is_none() {
                return Err("gate.web needs gate.http (the listener that serves it)".into());
            }
            c.web = Some(dir.join(w));
        }
        if let Some(tls) = t.get::<Option<Table>>("tls").map_err(|e| format!("gate.tls: {e}"))? {
            let path = |k: &str| -> Result<PathBuf, String> {
                let s: Option<String> = tls.get(k).map_err(|e| format!("gate.tls.{k}: {e}"))?;
                s.map(|s| dir.join(s))
                    .ok_or_else(|| format!("gate.tls needs {k} (a PEM file)"))
            };
            c.tls = Some(GateTls {
                cert: path("cert")?,
                key: path("key")?,
            });
        }
        let secs = |k: &str, min: f64, max: f64, into: &mut Duration| -> Result<(), String> {
            if let Some(v) = t.get::<Option<f64>>(k).map_err(|e| format!("gate.{k}: {e}"))? {
                if !(min..=max).contains(&v) {
                    return Err(format!("gate.{k} {v} must be {min}..{max} seconds"));
                }
                *into = Duration::from_secs_f64(v);
            }
            Ok(())
        };
        secs("verify_timeout", 0.1, 300.0, &mut c.verify_timeout)?;
        secs("heartbeat", 0.1, 3600.0, &mut c.heartbeat)?;
        secs("resume_grace", 0.0, 86_400.0, &mut c.resume_grace)?;
        let count = |k: &str, min: usize, into: &mut usize| -> Result<(), String> {
            if let Some(v) = t.get::<Option<i64>>(k).map_err(|e| format!("gate.{k}: {e}"))? {
                if v < min as i64 {
                    return Err(format!("gate.{k} {v} must be at least {min}"));
                }
                *into = v as usize;
            }
            Ok(())
        };
        count("max_message", 1024, &mut c.max_message)?;
        count("max_verifying", 1, &mut c.max_verifying)?;
        count("max_verifying_per_ip", 1, &mut c.max_verifying_per_ip)?;
        count("max_out", 4096, &mut c.max_out)?;
        count("replay_max", 0, &mut c.replay_max)?;
        count("replay_bytes", 0, &mut c.replay_bytes)?;
        let rate = |k: &str, into: &mut f64| -> Result<(), String> {
            if let Some(v) = t.get::<Option<f64>>(k).map_err(|e| format!("gate.{k}: {e}"))? {
                if v.is_nan() || v <= 0.0 {
                    return Err(format!("gate.{k} {v} must be above 0"));
                }
                *into = v;
            }
            Ok(())
        };
        rate("rate", &mut c.rate)?;
        rate("burst", &mut c.burst)?;
        match t
            .get::<Option<String>>("verify")
            .map_err(|e| format!("gate.verify: {e}"))?
            .as_deref()
        {
            None | Some("token") => {}
            Some("lua") => c.lua_verify = true,
            Some(other) => return Err(format!("gate.verify '{other}' must be \"token\" or \"lua\"")),
        }
        if let Some(b) = t
            .get::<Option<String>>("backend")
            .map_err(|e| format!("gate.backend: {e}"))?
        {
            c.backend = b;
        }
        Ok(c)
    }
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<GateConfig, String> {
        let lua = mlua::Lua::new();
        let t: Table = lua.load(src).eval().unwrap();
        GateConfig::parse(&t, Path::new("/etc/game"))
    }

    #[test]
    fn listeners_tls_and_defaults() {
        let c = parse(r#"{ tcp = "127.0.0.1:7300", ws = "127.0.0.1:7301", tls = { cert = "g.crt", key = "g.key" }, heartbeat = 2 }"#)
            .unwrap();
        assert_eq!(c.tcp, Some("127.0.0.1:7300".parse().unwrap()));
        assert_eq!(c.ws, Some("127.0.0.1:7301".parse().unwrap()));
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("/etc/game/g.crt"));
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.resume_grace, Duration::from_secs(30));
        assert_eq!(c.backend, "Hall");
        assert_eq!(c.http, None);
        assert_eq!(c.web, None);
    }

    #[test]
    fn http_and_web() {
        let c = parse(r#"{ ws = "127.0.0.1:7301", http = "127.0.0.1:7380", web = "web" }"#).unwrap();
        assert_eq!(c.http, Some("127.0.0.1:7380".parse().unwrap()));
        assert_eq!(c.web, Some(PathBuf::from("/etc/game/web")));
        let c = parse(r#"{ ws = "127.0.0.1:7301", http = "127.0.0.1:7380" }"#).unwrap();
        assert_eq!(c.web, None);
        assert!(parse(r#"{ ws = "127.0.0.1:7301", web = "web" }"#)
            .unwrap_err()
            .contains("gate.web needs gate.http"));
        assert!(parse(r#"{ ws = "127.0.0.1:7301", http = "x" }"#)
            .unwrap_err()
            .contains("gate.http 'x'"));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse("{}").unwrap_err().contains("needs a listener"));
        assert!(parse(r#"{ tcp = "nope" }"#).unwrap_err().contains("gate.tcp 'nope'"));
        assert!(parse(r#"{ tcp = "127.0.0.1:1", hearbeat = 3 }"#)
            .unwrap_err()
            .contains("gate.hearbeat is not a gate setting"));
        assert!(parse(r#"{ tcp = "127.0.0.1:1", tls = { cert = "a" } }"#)
            .unwrap_err()
            .contains("needs key"));
        assert!(parse(r#"{ tcp = "127.0.0.1:1", rate = 0 }"#)
            .unwrap_err()
            .contains("gate.rate"));
        assert!(parse(r#"{ tcp = "127.0.0.1:1", max_message = 10 }"#)
            .unwrap_err()
            .contains("at least 1024"));
    }

    #[test]
    fn verify_is_token_or_lua() {
        assert!(!parse(r#"{ tcp = "127.0.0.1:1" }"#).unwrap().lua_verify);
        assert!(parse(r#"{ tcp = "127.0.0.1:1", verify = "lua" }"#).unwrap().lua_verify);
        assert!(parse(r#"{ tcp = "127.0.0.1:1", verify = "none" }"#)
            .unwrap_err()
            .contains("gate.verify 'none'"));
    }
}
