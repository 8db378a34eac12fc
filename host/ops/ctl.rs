//! `luahost ctl`: what it sends and how it shows the answers (aligned
//! tables with comfy-table, or JSON).

use std::time::Duration;

use super::conn::Client;
use super::wire::{Command, ListWhat, Output, Reply, Request, Target, WireError};

/// `list world | machine | <ip> | <pid>`.
///
/// # Errors
/// Anything else, said so.
pub fn parse_list(arg: &str) -> Result<ListWhat, String> {
    match arg {
        "world" => Ok(ListWhat::World),
        "machine" | "machines" => Ok(ListWhat::Machine),
        a if a.parse::<std::net::IpAddr>().is_ok() => Ok(ListWhat::Ip(a.to_string())),
        a => a
            .parse::<u32>()
            .map(ListWhat::Pid)
            .map_err(|_| format!("list what? '{a}' is not world, machine, an ip or a pid")),
    }
}

/// `all` or a process name.
pub fn parse_target(arg: &str) -> Target {
    if arg == "all" {
        Target::All
    } else {
        Target::Name(arg.to_string())
    }
}

/// The text of an output: an aligned table, or JSON (a table as an array
/// of objects keyed by the headers).
pub fn render(out: &Output, json: bool) -> String {
    match (out, json) {
        (Output::Done { message }, false) => message.clone(),
        (Output::Done { message }, true) => serde_json::json!({ "message": message }).to_string(),
        (Output::Table { headers, rows }, true) => {
            let objs: Vec<serde_json::Map<String, serde_json::Value>> = rows
                .iter()
                .map(|r| {
                    headers
                        .iter()
                        .zip(r)
                        .map(|(h, c)| (h.clone(), serde_json::Value::String(c.clone())))
                        .collect()
                })
                .collect();
            serde_json::to_string_pretty(&objs).unwrap_or_default()
        }
        (Output::Table { headers, rows }, false) => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::NOTHING);
            t.set_header(headers.clone());
            for r in rows {
                t.add_row(r.clone());
            }
            t.to_string()
        }
    }
}

/// How a reply ends the ctl process: its text and whether it succeeded.
pub fn outcome(reply: &Reply, json: bool) -> (String, bool) {
    match reply {
        Reply::Ok(o) => (render(o, json), true),
        Reply::Refused { reason } => (format!("refused: {reason}"), false),
        Reply::Failed { reason } => (format!("failed: {reason}"), false),
    }
}

/// Logs in to `addr` as `user` and sends `cmd`.
///
/// # Errors
/// The connection or the login failed.
pub async fn once(addr: &str, user: &str, secret: &[u8], cmd: Command) -> Result<Reply, WireError> {
    let mut c = Client::connect(addr, user, secret).await?;
    c.call(&Request {
        command: cmd,
        on_behalf: None,
    })
    .await
}

/// `top`: every process, `count` times, `every` apart (one login).
///
/// # Errors
/// The connection or the login failed.
pub async fn top(
    addr: &str,
    user: &str,
    secret: &[u8],
    count: u32,
    every: Duration,
    mut show: impl FnMut(&Reply, u32),
) -> Result<(), WireError> {
    let mut c = Client::connect(addr, user, secret).await?;
    for i in 0..count.max(1) {
        if i > 0 {
            tokio::time::sleep(every).await;
        }
        let r = c
            .call(&Request {
                command: Command::List { what: ListWhat::Procs },
                on_behalf: None,
            })
            .await?;
        show(&r, i);
        if !matches!(r, Reply::Ok(_)) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_arguments() {
        assert_eq!(parse_list("world").unwrap(), ListWhat::World);
        assert_eq!(parse_list("machine").unwrap(), ListWhat::Machine);
        assert_eq!(parse_list("127.0.0.2").unwrap(), ListWhat::Ip("127.0.0.2".into()));
        assert_eq!(parse_list("4242").unwrap(), ListWhat::Pid(4242));
        assert!(parse_list("everything").unwrap_err().contains("'everything'"));
        assert_eq!(parse_target("all"), Target::All);
        assert_eq!(parse_target("hall_1"), Target::Name("hall_1".into()));
    }

    #[test]
    fn tables_align_and_json_keys_by_header() {
        let t = Output::Table {
            headers: vec!["name".into(), "pid".into()],
            rows: vec![vec!["hall_1".into(), "7".into()], vec!["g".into(), "12345".into()]],
        };
        let text = render(&t, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let col = |l: &str, w: &str| l.find(w).unwrap();
        assert_eq!(col(lines[0], "pid"), col(lines[1], "7"), "aligned:\n{text}");
        assert_eq!(col(lines[1], "7"), col(lines[2], "12345"), "aligned:\n{text}");
        let v: serde_json::Value = serde_json::from_str(&render(&t, true)).unwrap();
        assert_eq!(v[1]["pid"], "12345");
        let (text, ok) = outcome(&Reply::Refused { reason: "no".into() }, false);
        assert_eq!((text.as_str(), ok), ("refused: no", false));
    }
}
