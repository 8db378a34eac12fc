//! The daemon <-> ctl protocol, free of I/O: frames, the messages, and the
//! state machine of each end of a connection (login, then sealed requests
//! and replies). The drivers ([`super::conn`]) read
//! and write frames and feed them here.
//!
//! A frame is a 4-byte big-endian length and that many bytes. Until the
//! login ends a frame may hold at most [`HANDSHAKE_MAX`] bytes and the
//! login must end within [`HANDSHAKE_TIMEOUT`]; after it, at most
//! [`SESSION_MAX`]. The login messages are JSON in clear (they hold no
//! secret, see [`super::auth`]); every later frame is a JSON [`Request`]
//! or [`Reply`] sealed with the session's keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::auth::{self, AuthError, ClientAuth, ClientPending, Hello, Proof, ServerAuth, Session, Verdict, Verifier};
use super::roles::{Role, Verb};

/// The largest frame before the login ends.
pub const HANDSHAKE_MAX: usize = 4 * 1024;
/// The largest frame after it.
pub const SESSION_MAX: usize = 4 * 1024 * 1024;
/// How long a connection may take to log in.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A frame's announced length is over the limit of the connection's state.
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Announced.
        len: usize,
        /// Allowed now.
        limit: usize,
    },
    /// A message does not parse.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message that does not belong in the connection's state.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// The login failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The daemon refused the login, saying why.
    #[error("refused: {0}")]
    Refused(String),
    /// The login did not end in time.
    #[error("no login within {0:?}")]
    Timeout(Duration),
    /// A request got no reply in time.
    #[error("no reply within {0:?}")]
    NoReply(Duration),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(String),
}

/// The length prefix for a frame of `len` bytes.
pub fn frame_header(len: usize) -> [u8; 4] {
    (len as u32).to_be_bytes()
}

/// Checks an announced frame length against `limit`.
///
/// # Errors
/// [`WireError::TooLarge`].
pub fn check_len(header: [u8; 4], limit: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        Err(WireError::TooLarge { len, limit })
    } else {
        Ok(len)
    }
}

/// `all` or one process by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Every configured process of the machine.
    All,
    /// The one of this name.
    Name(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Name(n) => f.write_str(n),
        }
    }
}

/// What `list` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListWhat {
    /// The regions.
    World,
    /// The machines.
    Machine,
    /// The processes of one machine.
    Ip(String),
    /// One process by pid.
    Pid(u32),
    /// Every process (what `top` shows).
    Procs,
}

/// A command of `luahost ctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// `list ...`.
    List {
        /// What.
        what: ListWhat,
    },
    /// `start <ip> all|<name>`.
    Start {
        /// The machine.
        ip: String,
        /// Which processes.
        target: Target,
    },
    /// `stop <ip> all|<name>` (gracefully).
    Stop {
        /// The machine.
        ip: String,
        /// Which processes.
        target: Target,
    },
    /// `restart <ip> all|<name>`: stop gracefully, start again.
    Restart {
        /// The machine.
        ip: String,
        /// Which processes.
        target: Target,
    },
    /// `kill <ip> <pid>`: SIGKILL, not restarted.
    Kill {
        /// The machine.
        ip: String,
        /// The process.
        pid: u32,
    },
    /// `reload <ip> all|<name>`: hot-reload scripts and the cluster file.
    Reload {
        /// The machine.
        ip: String,
        /// Which processes.
        target: Target,
    },
    /// `user add <name> --role R`; the verifier is made on the ctl side,
    /// so the new password never leaves it.
    UserAdd {
        /// Login name.
        name: String,
        /// Role.
        role: Role,
        /// The new user's verifier.
        verifier: Verifier,
    },
    /// `user list`.
    UserList,
    /// `user del <name>`.
    UserDel {
        /// Login name.
        name: String,
    },
    /// `audit [--last N]`.
    Audit {
        /// How many of the latest entries.
        last: usize,
    },
}

impl Command {
    /// Its kind, for the rights table.
    pub fn verb(&self) -> Verb {
        match self {
            Command::List { .. } => Verb::List,
            Command::Start { .. } => Verb::Start,
            Command::Stop { .. } => Verb::Stop,
            Command::Restart { .. } => Verb::Restart,
            Command::Kill { .. } => Verb::Kill,
            Command::Reload { .. } => Verb::Reload,
            Command::UserAdd { .. } => Verb::UserAdd,
            Command::UserList => Verb::UserList,
            Command::UserDel { .. } => Verb::UserDel,
            Command::Audit { .. } => Verb::Audit,
        }
    }

    /// The machine that must carry it out, if it acts on one.
    pub fn machine(&self) -> Option<&str> {
        match self {
            Command::Start { ip, .. }
            | Command::Stop { ip, .. }
            | Command::Restart { ip, .. }
            | Command::Kill { ip, .. }
            | Command::Reload { ip, .. } => Some(ip),
            _ => None,
        }
    }

    /// As typed (for the audit log; a verifier is not written).
    pub fn describe(&self) -> String {
        match self {
            Command::List { what } => match what {
                ListWhat::World => "list world".into(),
                ListWhat::Machine => "list machine".into(),
                ListWhat::Ip(ip) => format!("list {ip}"),
                ListWhat::Pid(p) => format!("list {p}"),
                ListWhat::Procs => "top".into(),
            },
            Command::Start { ip, target } => format!("start {ip} {target}"),
            Command::Stop { ip, target } => format!("stop {ip} {target}"),
            Command::Restart { ip, target } => format!("restart {ip} {target}"),
            Command::Kill { ip, pid } => format!("kill {ip} {pid}"),
            Command::Reload { ip, target } => format!("reload {ip} {target}"),
            Command::UserAdd { name, role, .. } => format!("user add {name} --role {role}"),
            Command::UserList => "user list".into(),
            Command::UserDel { name } => format!("user del {name}"),
            Command::Audit { last } => format!("audit --last {last}"),
        }
    }
}

/// A request on a logged-in connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// For a command routed by another daemon (only `@daemon` may set
    /// it): the user who typed it, and the daemon's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf: Option<(String, String)>,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "output", rename_all = "lowercase")]
pub enum Output {
    /// A sentence.
    Done {
        /// What happened.
        message: String,
    },
    /// Rows under headers.
    Table {
        /// Column names.
        headers: Vec<String>,
        /// Cells.
        rows: Vec<Vec<String>>,
    },
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "lowercase")]
pub enum Reply {
    /// Done.
    Ok(Output),
    /// Not allowed (role, bootstrap), or asks for something that is not
    /// there (unknown machine or process).
    Refused {
        /// Said to the user.
        reason: String,
    },
    /// Allowed, but it failed.
    Failed {
        /// Said to the user.
        reason: String,
    },
}

impl Reply {
    /// For the audit log: `ok`, `refused: ...`, `failed: ...`.
    pub fn summary(&self) -> String {
        match self {
            Reply::Ok(_) => "ok".into(),
            Reply::Refused { reason } => format!("refused: {reason}"),
            Reply::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

/// Who is logged in on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user of the store, with the role it had at login.
    User {
        /// Login name.
        name: String,
        /// Role.
        role: Role,
    },
    /// Another daemon of the cluster (routing a command).
    Daemon,
    /// The holder of the bootstrap token (may only add the first admin).
    Bootstrap,
}

/// What a daemon knows of the name in a [`Hello`].
#[derive(Debug, Clone)]
pub enum Known {
    /// Its verifier and who it is.
    Yes(Verifier, Principal),
    /// No such name (a decoy challenge follows).
    No,
}

fn parse<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, WireError> {
    serde_json::from_slice(b).map_err(|e| WireError::Malformed(e.to_string()))
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("our messages serialise")
}

enum SState {
    Hello,
    Proof(ServerAuth, Principal),
    Decoy(ServerAuth),
    Open(Box<Session>, Principal),
    Closed,
}

/// The daemon's end of a connection.
pub struct ServerConn {
    state: SState,
}

/// What the daemon's end wants done after a frame.
#[derive(Debug)]
pub enum ServerEvent {
    /// Look up the name in this hello and call [`ServerConn::challenge`].
    Lookup(Hello),
    /// Send this frame (the login failed, saying why) and close.
    Refuse(Vec<u8>, AuthError),
    /// Logged in: send this frame; requests follow.
    LoggedIn(Vec<u8>, Principal),
    /// A request to carry out; answer with [`ServerConn::reply`].
    Request(Request),
}

impl Default for ServerConn {
    fn default() -> Self {
        ServerConn { state: SState::Hello }
    }
}

impl ServerConn {
    /// A connection just accepted.
    pub fn new() -> ServerConn {
        ServerConn::default()
    }

    /// The largest frame accepted now.
    pub fn limit(&self) -> usize {
        match self.state {
            SState::Open(..) => SESSION_MAX,
            _ => HANDSHAKE_MAX,
        }
    }

    /// True once logged in (the handshake deadline no longer applies).
    pub fn is_open(&self) -> bool {
        matches!(self.state, SState::Open(..))
    }

    /// Who is logged in, once someone is.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            SState::Open(_, p) => Some(p),
            _ => None,
        }
    }

    /// Feeds a frame.
    ///
    /// # Errors
    /// A malformed or unexpected message, or a frame that does not open:
    /// the connection must close.
    pub fn on_frame(&mut self, frame: &[u8]) -> Result<ServerEvent, WireError> {
        match std::mem::replace(&mut self.state, SState::Closed) {
            SState::Hello => {
                let h: Hello = parse(frame)?;
                self.state = SState::Hello;
                Ok(ServerEvent::Lookup(h))
            }
            SState::Proof(auth, who) => {
                let p: Proof = parse(frame)?;
                match auth.verify(&p) {
                    Ok(acc) => {
                        let role = match &who {
                            Principal::User { role, .. } => Some(*role),
                            _ => None,
                        };
                        let frame = to_json(&Verdict::Welcome {
                            signature: acc.signature,
                            role,
                        });
                        self.state = SState::Open(Box::new(acc.session), who.clone());
                        Ok(ServerEvent::LoggedIn(frame, who))
                    }
                    Err(e) => Ok(refuse(e)),
                }
            }
            SState::Decoy(auth) => {
                let p: Proof = parse(frame)?;
                let e = auth.verify(&p).err().unwrap_or(AuthError::WrongPassword);
                Ok(refuse(e))
            }
            SState::Open(mut s, who) => {
                let plain = s.open(frame)?;
                let r: Request = parse(&plain)?;
                self.state = SState::Open(s, who);
                Ok(ServerEvent::Request(r))
            }
            SState::Closed => Err(WireError::Unexpected("a frame after the connection ended")),
        }
    }

    /// The challenge for the [`Hello`] that [`ServerEvent::Lookup`]
    /// carried, knowing `known`.
    ///
    /// # Errors
    /// No randomness.
    pub fn challenge(&mut self, h: &Hello, known: Known, decoy_key: &[u8; 32]) -> Result<Vec<u8>, WireError> {
        match known {
            Known::Yes(v, who) => {
                let (ch, auth) = auth::challenge(h, Some(v), decoy_key)?;
                self.state = SState::Proof(auth, who);
                Ok(to_json(&ch))
            }
            Known::No => {
                let (ch, auth) = auth::challenge(h, None, decoy_key)?;
                self.state = SState::Decoy(auth);
                Ok(to_json(&ch))
            }
        }
    }

    /// The sealed frame of `reply`.
    ///
    /// # Errors
    /// [`WireError::Unexpected`] before the login.
    pub fn reply(&mut self, reply: &Reply) -> Result<Vec<u8>, WireError> {
        match &mut self.state {
            SState::Open(s, _) => Ok(s.seal(&to_json(reply))),
            _ => Err(WireError::Unexpected("a reply before the login")),
        }
    }
}

fn refuse(e: AuthError) -> ServerEvent {
    ServerEvent::Refuse(to_json(&Verdict::Refused { reason: e.to_string() }), e)
}

enum CState {
    Challenge(ClientAuth),
    Verdict(ClientPending),
    Open(Box<Session>),
    Closed,
}

/// The ctl's (or a routing daemon's) end of a connection.
pub struct ClientConn {
    state: CState,
}

impl ClientConn {
    /// Starts a login as `user`; returns the first frame to send.
    ///
    /// # Errors
    /// No randomness.
    pub fn start(user: &str) -> Result<(ClientConn, Vec<u8>), WireError> {
        let (c, hello) = ClientAuth::new(user)?;
        Ok((
            ClientConn {
                state: CState::Challenge(c),
            },
            to_json(&hello),
        ))
    }

    /// The largest frame accepted now.
    pub fn limit(&self) -> usize {
        match self.state {
            CState::Open(_) => SESSION_MAX,
            _ => HANDSHAKE_MAX,
        }
    }

    /// Answers the challenge knowing `secret`; returns the proof frame.
    ///
    /// # Errors
    /// A malformed challenge, unreasonable parameters, or out of order.
    pub fn on_challenge(&mut self, frame: &[u8], secret: &[u8]) -> Result<Vec<u8>, WireError> {
        let CState::Challenge(c) = std::mem::replace(&mut self.state, CState::Closed) else {
            return Err(WireError::Unexpected("a challenge out of order"));
        };
        if let Ok(Verdict::Refused { reason }) = serde_json::from_slice::<Verdict>(frame) {
            return Err(WireError::Refused(reason));
        }
        let (proof, pending) = c.answer(&parse(frame)?, secret)?;
        self.state = CState::Verdict(pending);
        Ok(to_json(&proof))
    }

    /// Takes the verdict; the role on success (none for `@daemon`, `@bootstrap`).
    ///
    /// # Errors
    /// [`WireError::Refused`] with the daemon's reason, or
    /// [`AuthError::BadServer`] when the daemon cannot prove itself.
    pub fn on_verdict(&mut self, frame: &[u8]) -> Result<Option<Role>, WireError> {
        let CState::Verdict(p) = std::mem::replace(&mut self.state, CState::Closed) else {
            return Err(WireError::Unexpected("a verdict out of order"));
        };
        match parse::<Verdict>(frame)? {
            Verdict::Refused { reason } => Err(WireError::Refused(reason)),
            Verdict::Welcome { signature, role } => {
                self.state = CState::Open(Box::new(p.finish(&signature)?));
                Ok(role)
            }
        }
    }

    /// The sealed frame of `req`.
    ///
    /// # Errors
    /// [`WireError::Unexpected`] before the login.
    pub fn request(&mut self, req: &Request) -> Result<Vec<u8>, WireError> {
        match &mut self.state {
            CState::Open(s) => Ok(s.seal(&to_json(req))),
            _ => Err(WireError::Unexpected("a request before the login")),
        }
    }

    /// Opens a reply frame.
    ///
    /// # Errors
    /// A frame that does not open or parse.
    pub fn on_reply(&mut self, frame: &[u8]) -> Result<Reply, WireError> {
        match &mut self.state {
            CState::Open(s) => parse(&s.open(frame)?),
            _ => Err(WireError::Unexpected("a reply before the login")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::auth::Kdf;

    const FAST: Kdf = Kdf::Argon2id { m: 64, t: 1, p: 1 };

    fn lookup(name: &str, v: &Verifier) -> Known {
        if name == "alice" {
            Known::Yes(
                v.clone(),
                Principal::User {
                    name: "alice".into(),
                    role: Role::Operator,
                },
            )
        } else {
            Known::No
        }
    }

    /// Runs a login between the two ends; the daemon's last event.
    fn login(user: &str, pw: &[u8], v: &Verifier) -> (ClientConn, ServerConn, Result<Option<Role>, WireError>) {
        let mut s = ServerConn::new();
        let (mut c, hello) = ClientConn::start(user).unwrap();
        assert!(hello.len() <= HANDSHAKE_MAX);
        let ServerEvent::Lookup(h) = s.on_frame(&hello).unwrap() else {
            panic!("a lookup first")
        };
        let ch = s.challenge(&h, lookup(&h.user, v), &[1; 32]).unwrap();
        let proof = c.on_challenge(&ch, pw).unwrap();
        let verdict = match s.on_frame(&proof).unwrap() {
            ServerEvent::LoggedIn(f, who) => {
                assert_eq!(
                    who,
                    Principal::User {
                        name: "alice".into(),
                        role: Role::Operator
                    }
                );
                f
            }
            ServerEvent::Refuse(f, _) => f,
            e => panic!("{e:?}"),
        };
        let r = c.on_verdict(&verdict);
        (c, s, r)
    }

    #[test]
    fn login_then_sealed_requests() {
        let v = Verifier::new(b"pw", FAST).unwrap();
        let (mut c, mut s, r) = login("alice", b"pw", &v);
        assert_eq!(r.unwrap(), Some(Role::Operator));
        assert!(s.is_open());
        assert_eq!(s.limit(), SESSION_MAX);
        let req = Request {
            command: Command::Stop {
                ip: "127.0.0.2".into(),
                target: Target::Name("hall_1".into()),
            },
            on_behalf: None,
        };
        let f = c.request(&req).unwrap();
        let ServerEvent::Request(got) = s.on_frame(&f).unwrap() else {
            panic!()
        };
        assert_eq!(got, req);
        let reply = Reply::Refused {
            reason: "viewer may not stop".into(),
        };
        let f = s.reply(&reply).unwrap();
        assert_eq!(c.on_reply(&f).unwrap(), reply);
    }

    #[test]
    fn wrong_password_and_unknown_user_get_the_same_refusal() {
        let v = Verifier::new(b"pw", FAST).unwrap();
        let (_, s, r) = login("alice", b"nope", &v);
        assert!(
            matches!(r, Err(WireError::Refused(ref m)) if m == "wrong user or password"),
            "{r:?}"
        );
        assert!(!s.is_open());
        let (_, _, r) = login("bob", b"pw", &v);
        assert!(
            matches!(r, Err(WireError::Refused(ref m)) if m == "wrong user or password"),
            "{r:?}"
        );
    }

    #[test]
    fn frames_out_of_state_are_errors() {
        let mut s = ServerConn::new();
        assert!(matches!(s.on_frame(b"{not json"), Err(WireError::Malformed(_))));
        let mut s = ServerConn::new();
        assert!(
            s.reply(&Reply::Failed { reason: "x".into() }).is_err(),
            "no reply before login"
        );
        // a sealed-looking frame before the login is not a hello
        assert!(s.on_frame(&[0u8; 40]).is_err());
        assert!(matches!(
            check_len(frame_header(HANDSHAKE_MAX + 1), HANDSHAKE_MAX),
            Err(WireError::TooLarge { .. })
        ));
        assert_eq!(check_len(frame_header(10), HANDSHAKE_MAX).unwrap(), 10);
    }

    #[test]
    fn commands_know_their_machine_and_read_as_typed() {
        let c = Command::Kill {
            ip: "127.0.0.3".into(),
            pid: 77,
        };
        assert_eq!(c.machine(), Some("127.0.0.3"));
        assert_eq!(c.describe(), "kill 127.0.0.3 77");
        assert_eq!(c.verb(), Verb::Kill);
        let add = Command::UserAdd {
            name: "bob".into(),
            role: Role::Viewer,
            verifier: Verifier::for_secret(&[0; 32]),
        };
        assert_eq!(
            add.describe(),
            "user add bob --role viewer",
            "no verifier in the audit log"
        );
        assert_eq!(add.machine(), None);
    }
}
