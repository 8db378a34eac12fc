//! What the host tells Lua: the kinds of event the Lua dispatcher
//! (`rpcco.dispatch(kind, ...)`) receives. Lua gets their ids from here
//! (`core.kinds`), so the numbers live in one place.

/// The first argument of every call into the Lua dispatcher, and what
/// follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum Dispatch {
    /// `(CALL, conn, session, eid, mid, args...)`: a call to serve.
    Call = 1,
    /// `(SEND, conn, seq, eid, mid, args...)`: a one-way send to handle.
    Send = 2,
    /// `(REPLY, id, true, results...)` or `(REPLY, id, false, text, kind)`:
    /// the outcome of a call this node made.
    Reply = 3,
    /// `(TIMER, id)`: a timer fired.
    Timer = 4,
    /// `(ONLINE, sid, type, name)`: a server came online.
    Online = 5,
    /// `(OFFLINE, sid, type, name)`: a server went offline.
    Offline = 6,
    /// `(EVAL, token, code)`: run a chunk for a controlling thread.
    Eval = 7,
    /// `(RELOAD, paths | nil)`: hot-reload changed modules now.
    Reload = 8,
    /// `(LOST, sid, type, name, {[method] = count}, cause)`: sends to that
    /// node that will not be delivered (or may not have been handled).
    Lost = 9,
    /// `(STOP, grace_secs)`: a graceful stop began.
    Stop = 10,
    /// `(CLIENT_CALL, conn, session, client_session, eid, mid, args...)`: a
    /// client's call relayed by a Gate, to serve like a call.
    ClientCall = 11,
    /// `(CLIENT_SEND, client_session, eid, mid, args...)`: a client's
    /// one-way send relayed by a Gate.
    ClientSend = 12,
    /// `(CLIENT, event, session, account, ...)`: on a Gate, something
    /// happened to a client session (`login`, `lost`, `backend_lost`), or
    /// `(CLIENT, "web_login", request_id, account, password, addr)`: a
    /// browser's login, answered by `core.gate_web_reply`.
    Client = 13,
}

impl Dispatch {
    /// Every kind, in id order.
    pub(crate) const ALL: [Dispatch; 13] = [
        Dispatch::Call,
        Dispatch::Send,
        Dispatch::Reply,
        Dispatch::Timer,
        Dispatch::Online,
        Dispatch::Offline,
        Dispatch::Eval,
        Dispatch::Reload,
        Dispatch::Lost,
        Dispatch::Stop,
        Dispatch::ClientCall,
        Dispatch::ClientSend,
        Dispatch::Client,
    ];

    /// The id Lua receives.
    pub(crate) fn id(self) -> i64 {
        self as i64
    }

    /// The name Lua knows it by (`core.kinds.CALL`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dispatch::Call => "CALL",
            Dispatch::Send => "SEND",
            Dispatch::Reply => "REPLY",
            Dispatch::Timer => "TIMER",
            Dispatch::Online => "ONLINE",
            Dispatch::Offline => "OFFLINE",
            Dispatch::Eval => "EVAL",
            Dispatch::Reload => "RELOAD",
            Dispatch::Lost => "LOST",
            Dispatch::Stop => "STOP",
            Dispatch::ClientCall => "CLIENT_CALL",
            Dispatch::ClientSend => "CLIENT_SEND",
            Dispatch::Client => "CLIENT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_in_order() {
        for (i, k) in Dispatch::ALL.iter().enumerate() {
            assert_eq!(k.id(), i as i64 + 1, "{}", k.name());
        }
    }

    #[test]
    fn lualib_takes_every_kind_from_the_host() {
        let src = include_str!("../../lualib/rpcco.lua");
        for k in Dispatch::ALL {
            assert!(
                src.contains(&format!("K.{}", k.name())),
                "rpcco.lua does not use K.{}",
                k.name()
            );
        }
        assert!(!src.contains("= 1, 2, 3"), "rpcco.lua still numbers the kinds itself");
    }
}
