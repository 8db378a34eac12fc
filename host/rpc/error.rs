//! The error of a remote call or send, as scripts see it.
//!
//! Every variant's `Display` is exactly the text a script gets today (see the
//! README, "call errors"): outcomes of a call start with their kind
//! (`timeout:`, `node down:`, `no such node:`, `busy:`, `remote error:`), which
//! is how `rpcco.errkind` recognises them and how `rpcco.raise` decides to
//! raise them as they are rather than at the caller's line. Call-site errors
//! (a wrong argument, a message too large, a method of the wrong kind) have
//! no kind and must never start with one.
//!
//! Pure values: building or formatting one touches no I/O.

use std::time::Duration;

/// How a backend's refusal of a client's request starts (a Gate answers its
/// client `bad_request` with the rest).
pub const BAD_REQUEST: &str = "bad_request: ";
/// How a backend's error reply to a client's call starts when the handler
/// chose the text the client sees (`gate.fail`); any other error reaches
/// the client as "internal error".
pub const CLIENT_ERROR: &str = "client: ";

/// The kinds of [`CallError`] a script can test with `rpcco.errkind`, in the
/// order of `rpcco.KINDS` (which `luahost.core` hands over as `error_kinds`).
pub const KINDS: [&str; 5] = ["timeout", "node down", "no such node", "remote error", "busy"];

/// Why a call or send failed.
///
/// The first five variants are outcomes with a kind (see [`CallError::kind`]);
/// the others are errors at the call site: nothing was sent, and lualib
/// raises them at the caller's line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No reply arrived within the call's timeout (the deadline sweep).
    #[error("timeout: {method} to {node}: no reply within {} ms", timeout.as_millis())]
    Timeout {
        /// The method's name (`Class.method`, or `method <id>` when the
        /// schema no longer has it).
        method: String,
        /// The node called.
        node: String,
        /// The call's timeout (after clamping).
        timeout: Duration,
    },
    /// The connection to the node was lost or could not be made, the node
    /// left the cluster, or (reported by the node itself) it is stopping.
    #[error("node down: {node}: {cause}{}", in_parens(method))]
    NodeDown {
        /// The node called.
        node: String,
        /// Why: a connection's cause (`connection closed`, `refused: ...`),
        /// a membership reason (`removed from the cluster file`) or
        /// `stopping`.
        cause: String,
        /// The method's name; empty only for a relayed text that named none
        /// (then no ` (...)` is shown).
        method: String,
    },
    /// The cluster has no node with that server id.
    #[error("no such node: {sid} ({method})")]
    NoSuchNode {
        /// The server id asked for.
        sid: u32,
        /// The method's name.
        method: String,
    },
    /// The node's queue (queued plus written and unacknowledged bytes) is
    /// over `max_queue`: nothing more is accepted for it until it drains.
    #[error(
        "busy: {node}: {held} bytes already wait in its queue or for acknowledgement (max_queue {max_queue}) ({method})"
    )]
    Busy {
        /// The node called.
        node: String,
        /// Bytes its link holds.
        held: usize,
        /// The configured bound.
        max_queue: usize,
        /// The method's name.
        method: String,
    },
    /// The remote side answered with an error, or its reply could not be
    /// read as the schema declares.
    #[error("remote error: {node}: {fault}")]
    Remote {
        /// The node that answered.
        node: String,
        /// What went wrong there.
        fault: RemoteFault,
    },
    /// `rpcdef.init` has not run on this node: there is no schema to encode
    /// with.
    #[error("rpcdef.init has not run: no schema")]
    NoSchema,
    /// The method id is not in this node's schema.
    #[error("unknown method id {0}")]
    UnknownMethod(u32),
    /// A call (the schema gives it results) where nothing can wait for its
    /// reply: outside a coroutine, or through router's one-way sends.
    #[error(
        "{method} is a call: its reply needs a coroutine to wait in (handlers run in one; elsewhere use rpcco.fork), and router sends only one-way methods"
    )]
    CannotWait {
        /// The method's name.
        method: String,
    },
    /// `client.<method>` on a method that is not in a `Client` section (only
    /// those are pushed to clients).
    #[error("{method} is not a client method (declare it in the entity class's Client section)")]
    NotAPush {
        /// The method's name.
        method: String,
    },
    /// An argument or result the schema refused, in the schema's words
    /// (`bad argument #1 's' to Echo.echo: ...`, `... arguments given`).
    #[error("{0}")]
    Encoding(String),
    /// The encoded message is larger than `max_message`.
    #[error("message too large: {method} to {node} is {size} bytes, max_message is {max}")]
    TooLarge {
        /// The method's name.
        method: String,
        /// The node called.
        node: String,
        /// Bytes of the encoded message (without the frame header).
        size: usize,
        /// The configured bound.
        max: usize,
    },
}

/// What went wrong on (or with the reply of) the remote side of a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteFault {
    /// The error text the remote node replied with, as it sent it: a handler
    /// that raised (`<method>: <message and traceback>`), or a refusal
    /// (`unknown method id 7`, `X is not served by Hall nodes`, ...).
    #[error("{0}")]
    Replied(String),
    /// The error text of the reply could not be read.
    #[error("unreadable error text: {0}")]
    Unreadable(String),
    /// The reply carries another number of results than declared.
    #[error("{method} replied {got} results, {declared} declared")]
    ResultCount {
        /// The method's name.
        method: String,
        /// Results in the reply.
        got: usize,
        /// Results declared.
        declared: usize,
    },
    /// A result does not decode as its declared type.
    #[error("bad result #{index} '{name}' of {method}: {error}")]
    BadResult {
        /// 1-based position.
        index: usize,
        /// Declared name.
        name: String,
        /// The method's name.
        method: String,
        /// What is wrong with it.
        error: String,
    },
}

/// ` (<method>)`, or nothing for an empty method.
fn in_parens(method: &str) -> String {
    if method.is_empty() {
        String::new()
    } else {
        format!(" ({method})")
    }
}

impl CallError {
    /// The kind a script sees through `rpcco.errkind`: `"timeout"`,
    /// `"node down"`, `"no such node"`, `"busy"`, `"remote error"`; `None`
    /// for call-site errors (lualib raises those at the caller's line).
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            CallError::Timeout { .. } => Some("timeout"),
            CallError::NodeDown { .. } => Some("node down"),
            CallError::NoSuchNode { .. } => Some("no such node"),
            CallError::Busy { .. } => Some("busy"),
            CallError::Remote { .. } => Some("remote error"),
            CallError::NoSchema
            | CallError::UnknownMethod(_)
            | CallError::CannotWait { .. }
            | CallError::NotAPush { .. }
            | CallError::Encoding(_)
            | CallError::TooLarge { .. } => None,
        }
    }

    /// The refusal a stopping node replies to a call with
    /// (`node down: <itself>: stopping (<method>)`).
    pub fn stopping(node: &str, method: &str) -> Self {
        CallError::NodeDown {
            node: node.to_string(),
            cause: "stopping".to_string(),
            method: method.to_string(),
        }
    }

    /// The error of a call that node `node` answered with the error text
    /// `text`. A text that starts with `node down: <node>: ` is that node's
    /// own refusal while stopping and is passed on as a node-down error, text
    /// unchanged (a handler's error starts with its method name, never so);
    /// any other text is a remote error.
    pub fn from_error_reply(node: &str, text: String) -> Self {
        let prefix = format!("node down: {node}: ");
        let Some(rest) = text.strip_prefix(&prefix) else {
            return CallError::Remote {
                node: node.to_string(),
                fault: RemoteFault::Replied(text),
            };
        };
        // `<cause> (<method>)`: the method is in the last parentheses.
        let (cause, method) = match rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
            Some((cause, method)) if !method.is_empty() => (cause.to_string(), method.to_string()),
            _ => (rest.to_string(), String::new()),
        };
        CallError::NodeDown {
            node: node.to_string(),
            cause,
            method,
        }
    }
}

/// The kind of an error text as `rpcco.errkind` reads it at its start
/// (without the re-raise positions it also strips): the kind whose name and
/// a colon begin the text.
#[cfg(test)]
pub fn kind_of_text(text: &str) -> Option<&'static str> {
    KINDS
        .into_iter()
        .find(|k| text.strip_prefix(k).is_some_and(|rest| rest.starts_with(':')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_string()
    }

    fn every_variant() -> Vec<CallError> {
        vec![
            CallError::Timeout {
                method: s("Hall.login"),
                node: s("hall_2"),
                timeout: Duration::from_millis(5000),
            },
            CallError::NodeDown {
                node: s("hall_2"),
                cause: s("connection closed"),
                method: s("Hall.login"),
            },
            CallError::NoSuchNode {
                sid: 42,
                method: s("Hall.login"),
            },
            CallError::Busy {
                node: s("hall_2"),
                held: 70_000_000,
                max_queue: 67_108_864,
                method: s("Hall.login"),
            },
            CallError::Remote {
                node: s("hall_2"),
                fault: RemoteFault::Replied(s("Hall.login: boom")),
            },
            CallError::NoSchema,
            CallError::UnknownMethod(7),
            CallError::CannotWait {
                method: s("Hall.login"),
            },
            CallError::NotAPush {
                method: s("Hall.login"),
            },
            CallError::Encoding(s("bad argument #1 'rid' to Hall.login: expected int32, got string")),
            CallError::TooLarge {
                method: s("Hall.login"),
                node: s("hall_2"),
                size: 20_000_000,
                max: 16_777_216,
            },
        ]
    }

    #[test]
    fn timeout_text_is_node_rs_expire_calls() {
        let e = CallError::Timeout {
            method: s("Hall.login"),
            node: s("hall_2"),
            timeout: Duration::from_millis(1500),
        };
        assert_eq!(e.to_string(), "timeout: Hall.login to hall_2: no reply within 1500 ms");
        // whole milliseconds, truncated (Duration::as_millis)
        let e = CallError::Timeout {
            method: s("method 9"),
            node: s("n"),
            timeout: Duration::from_micros(2999),
        };
        assert_eq!(e.to_string(), "timeout: method 9 to n: no reply within 2 ms");
    }

    #[test]
    fn node_down_text_is_fail_pending() {
        let e = CallError::NodeDown {
            node: s("hall_2"),
            cause: s("no traffic for 10.0 s (liveness bound)"),
            method: s("Hall.login"),
        };
        assert_eq!(
            e.to_string(),
            "node down: hall_2: no traffic for 10.0 s (liveness bound) (Hall.login)"
        );
        assert_eq!(e.kind(), Some("node down"));
    }

    #[test]
    fn stopping_text_is_on_request() {
        assert_eq!(
            CallError::stopping("hall_2", "Hall.login").to_string(),
            "node down: hall_2: stopping (Hall.login)"
        );
    }

    #[test]
    fn no_such_node_and_busy_texts_are_request() {
        assert_eq!(
            CallError::NoSuchNode {
                sid: 42,
                method: s("Hall.login")
            }
            .to_string(),
            "no such node: 42 (Hall.login)"
        );
        assert_eq!(
            CallError::Busy {
                node: s("hall_2"),
                held: 100,
                max_queue: 64,
                method: s("Hall.login")
            }
            .to_string(),
            "busy: hall_2: 100 bytes already wait in its queue or for acknowledgement (max_queue 64) (Hall.login)"
        );
    }

    #[test]
    fn remote_error_texts_are_on_reply() {
        let r = |fault| CallError::Remote {
            node: s("hall_2"),
            fault,
        };
        assert_eq!(
            r(RemoteFault::Replied(s("Hall.login: scripts/hall.lua:3: boom"))).to_string(),
            "remote error: hall_2: Hall.login: scripts/hall.lua:3: boom"
        );
        assert_eq!(
            r(RemoteFault::Unreadable(s("end of data"))).to_string(),
            "remote error: hall_2: unreadable error text: end of data"
        );
        assert_eq!(
            r(RemoteFault::ResultCount {
                method: s("Hall.login"),
                got: 1,
                declared: 2
            })
            .to_string(),
            "remote error: hall_2: Hall.login replied 1 results, 2 declared"
        );
        assert_eq!(
            r(RemoteFault::BadResult {
                index: 2,
                name: s("ok"),
                method: s("Hall.login"),
                error: s("expected bool")
            })
            .to_string(),
            "remote error: hall_2: bad result #2 'ok' of Hall.login: expected bool"
        );
    }

    #[test]
    fn call_site_texts_are_request() {
        assert_eq!(CallError::NoSchema.to_string(), "rpcdef.init has not run: no schema");
        assert_eq!(CallError::UnknownMethod(7).to_string(), "unknown method id 7");
        assert!(CallError::CannotWait {
            method: s("Hall.login")
        }
        .to_string()
        .starts_with("Hall.login is a call: its reply needs a coroutine"));
        assert_eq!(
            CallError::TooLarge {
                method: s("Hall.login"),
                node: s("hall_2"),
                size: 17,
                max: 16
            }
            .to_string(),
            "message too large: Hall.login to hall_2 is 17 bytes, max_message is 16"
        );
    }

    #[test]
    fn argument_texts_are_schema_encode_lists() {
        use crate::schema::{encode_list, parse_type, Method};
        let int32 = parse_type("int32", &Default::default()).unwrap();
        let m = Method {
            id: 1,
            name: s("Hall.login"),
            server_type: 0,
            args: vec![(s("rid"), int32.clone()), (s("zone"), int32)],
            results: Some(vec![]),
            client: false,
            push: false,
            cid: 0,
        };
        let mut out = bytes::BytesMut::new();
        let three = vec![
            mlua::Value::Integer(1),
            mlua::Value::Integer(2),
            mlua::Value::Integer(3),
        ];
        let want = encode_list(&mut out, &m, &m.args, "argument", &three).unwrap_err();
        assert_eq!(want, "Hall.login: 3 arguments given, 2 declared");
        let ours = CallError::Encoding(want.clone());
        assert_eq!(ours.to_string(), want);
        let bad = vec![mlua::Value::Boolean(true)];
        let want = encode_list(&mut out, &m, &m.args, "argument", &bad).unwrap_err();
        assert!(want.starts_with("bad argument #1 'rid' to Hall.login: "), "{want}");
        let ours = CallError::Encoding(want.clone());
        assert_eq!(ours.to_string(), want);
        assert_eq!(ours.kind(), None);
    }

    #[test]
    fn kinds_are_exactly_those_with_a_kind_prefix() {
        for e in every_variant() {
            let text = e.to_string();
            assert_eq!(kind_of_text(&text), e.kind(), "{text}");
            if let Some(k) = e.kind() {
                assert!(text.starts_with(&format!("{k}: ")), "{text}");
            }
        }
    }

    #[test]
    fn every_kind_is_produced_and_none_other() {
        let mut kinds: Vec<&str> = every_variant().iter().filter_map(CallError::kind).collect();
        kinds.sort_unstable();
        let mut all = KINDS.to_vec();
        all.sort_unstable();
        assert_eq!(kinds, all);
    }

    #[test]
    fn a_stopping_refusal_is_relayed_as_node_down_text_unchanged() {
        let text = s("node down: hall_2: stopping (Hall.login)");
        let e = CallError::from_error_reply("hall_2", text.clone());
        assert_eq!(e, CallError::stopping("hall_2", "Hall.login"));
        assert_eq!(e.to_string(), text);
        assert_eq!(e.kind(), Some("node down"));
    }

    #[test]
    fn a_relayed_node_down_keeps_odd_texts_exactly() {
        for text in [
            "node down: hall_2: stopping (a (b) c) (Hall.login)",
            "node down: hall_2: stopping",
            "node down: hall_2: stopping ()",
            "node down: hall_2: ",
        ] {
            let e = CallError::from_error_reply("hall_2", s(text));
            assert_eq!(e.to_string(), text);
            assert_eq!(e.kind(), Some("node down"), "{text}");
        }
    }

    #[test]
    fn another_nodes_name_or_a_handler_error_is_a_remote_error() {
        // only the answering node's own "node down" is passed on as one
        let e = CallError::from_error_reply("hall_2", s("node down: hall_3: stopping (Hall.login)"));
        assert_eq!(
            e.to_string(),
            "remote error: hall_2: node down: hall_3: stopping (Hall.login)"
        );
        assert_eq!(e.kind(), Some("remote error"));
        let e = CallError::from_error_reply("hall_2", s("Hall.login: no handler on entity 3"));
        assert_eq!(
            e.to_string(),
            "remote error: hall_2: Hall.login: no handler on entity 3"
        );
        // a node whose name is a prefix of another's
        let e = CallError::from_error_reply("hall", s("node down: hall_2: stopping (Hall.login)"));
        assert_eq!(e.kind(), Some("remote error"));
    }

    #[test]
    fn kind_of_text_needs_the_colon_right_after_the_kind() {
        assert_eq!(kind_of_text("timeout: x"), Some("timeout"));
        assert_eq!(kind_of_text("timeouts: x"), None);
        assert_eq!(kind_of_text("busy"), None);
        assert_eq!(kind_of_text("remote error:"), Some("remote error"));
        assert_eq!(kind_of_text(" timeout: x"), None);
    }
}
