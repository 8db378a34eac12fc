//! LuaLS annotation files (`---@meta`) generated from the schema, for
//! completion and type checks in an editor: `luahost annotate`.
//!
//! The generator works on a plain description of the schema
//! ([`SchemaDesc`]); `luahost::describe_entitydef` makes one from an
//! `entitydef.lua` by running `rpcdef.init` on it. Three files come out:
//!
//! - [`TYPES_FILE`]: the structs, as classes (both sides need them);
//! - [`SERVER_FILE`]: what server scripts call: per entity class and server
//!   type the stub `<Type><Class>Stub` (`fm:hall(sid).`), the ghost
//!   mailboxes of global entities `<Class>Ghosts` (`fm:hall(sid)`), the
//!   pushes `<Class>Client` (`player.client.`), and the static interfaces
//!   `<Iface>ServerStub` / `<Iface>ClientStub`;
//! - [`CLIENT_FILE`]: what a game client sees: per entity class
//!   `<Class>Server` (the methods it may call) and `<Class>Pushes` (those it
//!   implements), each with its client id, and the ClientDigi.
//!
//! Schema types map to LuaLS types: integers to `integer`, `float` and
//! `double` to `number`, `bool` to `boolean`, `string` and `bytes` to
//! `string`, `array<T>` to `T[]`, `map<K,V>` to `table<K, V>`, structs to
//! their class, `T?` to `T|nil` (an optional struct field to `name? T`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The structs file's name.
pub const TYPES_FILE: &str = "luahost_types.lua";
/// The server file's name.
pub const SERVER_FILE: &str = "luahost_server.lua";
/// The client file's name.
pub const CLIENT_FILE: &str = "luahost_client.lua";

/// Where a method is declared in `entitydef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// `Static.<Iface>.<side>` (`side` is `Server` or `Client`).
    Static(String),
    /// `Entity.<Class>.<Type>`: served by server type `Type`.
    Type(String),
    /// `Entity.<Class>.Client`: a push, which clients implement.
    Client,
}

/// One method, as the generator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodDesc {
    /// The entity class, or the static interface.
    pub class: String,
    /// Where it is declared.
    pub section: Section,
    /// The method's name.
    pub name: String,
    /// Arguments: (name, schema type); unnamed ones are called `#i`.
    pub args: Vec<(String, String)>,
    /// Results; `None` for a one-way method.
    pub results: Option<Vec<(String, String)>>,
    /// Exposed to clients (`client = true`).
    pub client: bool,
    /// The client id; 0 when the method is not client-visible.
    pub cid: u32,
}

impl MethodDesc {
    /// Its key in the schema (`Entity.Player.Hall.hall_addFriend`).
    pub fn key(&self) -> String {
        match &self.section {
            Section::Static(side) => format!("Static.{}.{side}.{}", self.class, self.name),
            Section::Type(t) => format!("Entity.{}.{t}.{}", self.class, self.name),
            Section::Client => format!("Entity.{}.Client.{}", self.class, self.name),
        }
    }
}

/// A schema as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDesc {
    /// `rpcdef.Digi`.
    pub digest: u32,
    /// `rpcdef.ClientDigi`.
    pub client_digest: u32,
    /// The class names of the global entities.
    pub global_entities: Vec<String>,
    /// Structs: name and fields (name, schema type) in order.
    pub structs: Vec<(String, Vec<(String, String)>)>,
    /// Every method, in any order (the output is sorted).
    pub methods: Vec<MethodDesc>,
}

/// The LuaLS type of a schema type expression.
pub fn lua_type(ty: &str) -> String {
    let ty = ty.trim();
    if let Some(inner) = ty.strip_suffix('?') {
        return format!("{}|nil", lua_type(inner));
    }
    if let Some(inner) = ty.strip_prefix("array<").and_then(|r| r.strip_suffix('>')) {
        let t = lua_type(inner);
        return if t.contains('|') {
            format!("({t})[]")
        } else {
            format!("{t}[]")
        };
    }
    if let Some(inner) = ty.strip_prefix("map<").and_then(|r| r.strip_suffix('>')) {
        let mut depth = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                ',' if depth == 0 => {
                    return format!("table<{}, {}>", lua_type(&inner[..i]), lua_type(&inner[i + 1..]));
                }
                _ => {}
            }
        }
        return "table".into();
    }
    match ty {
        "int8" | "int16" | "int32" | "int48" | "int64" | "uint8" | "uint16" | "uint32" | "uint64" => "integer".into(),
        "float" | "double" => "number".into(),
        "bool" => "boolean".into(),
        "string" | "bytes" => "string".into(),
        other => other.to_string(),
    }
}

/// `fun(a: integer, b: string): (ok: boolean)`: unnamed arguments become
/// `arg<i>`, unnamed results have no name.
fn fun_type(args: &[(String, String)], results: Option<&[(String, String)]>) -> String {
    let mut s = String::from("fun(");
    for (i, (n, t)) in args.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let name = if n.starts_with('#') {
            format!("arg{}", i + 1)
        } else {
            n.clone()
        };
        let _ = write!(s, "{name}: {}", lua_type(t));
    }
    s.push(')');
    if let Some(rs) = results.filter(|r| !r.is_empty()) {
        s.push_str(": (");
        for (i, (n, t)) in rs.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            if n.starts_with('#') {
                s.push_str(&lua_type(t));
            } else {
                let _ = write!(s, "{n}: {}", lua_type(t));
            }
        }
        s.push(')');
    }
    s
}

fn header(out: &mut String, what: &str, d: &SchemaDesc) {
    let _ = writeln!(out, "---@meta");
    let _ = writeln!(out, "-- {what}");
    let _ = writeln!(
        out,
        "-- Generated by `luahost annotate` from the schema (Digi {:08x}, ClientDigi {:08x}): do not edit.",
        d.digest, d.client_digest
    );
}

/// One `---@field` line with its description line before it.
fn field(out: &mut String, m: &MethodDesc, with_cid: bool) {
    let kind = match (&m.section, &m.results) {
        (Section::Client, _) => "push",
        (_, Some(_)) => "call",
        (_, None) => "one-way send",
    };
    if with_cid && m.cid != 0 {
        let _ = writeln!(out, "---{kind}, client id {}: `{}`", m.cid, m.key());
    } else {
        let _ = writeln!(out, "---{kind}: `{}`", m.key());
    }
    let _ = writeln!(out, "---@field {} {}", m.name, fun_type(&m.args, m.results.as_deref()));
}

/// The methods `pick` chooses, sorted by key.
fn group(d: &SchemaDesc, pick: impl Fn(&MethodDesc) -> bool) -> Vec<&MethodDesc> {
    let mut v: Vec<&MethodDesc> = d.methods.iter().filter(|m| pick(m)).collect();
    v.sort_by_key(|m| m.key());
    v
}

/// The sorted, distinct values of `f` over the methods.
fn distinct<T: Ord + Clone>(d: &SchemaDesc, f: impl Fn(&MethodDesc) -> Option<T>) -> Vec<T> {
    let mut v: Vec<T> = d.methods.iter().filter_map(f).collect();
    v.sort();
    v.dedup();
    v
}

/// The structs file.
pub fn types_file(d: &SchemaDesc) -> String {
    let mut out = String::new();
    header(&mut out, "The structs of the schema.", d);
    let mut structs: Vec<&(String, Vec<(String, String)>)> = d.structs.iter().collect();
    structs.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, fields) in structs {
        let _ = writeln!(out, "\n---@class {name}");
        for (f, t) in fields {
            match t.trim().strip_suffix('?') {
                Some(inner) => {
                    let _ = writeln!(out, "---@field {f}? {} # {t}", lua_type(inner));
                }
                None => {
                    let _ = writeln!(out, "---@field {f} {} # {t}", lua_type(t));
                }
            }
        }
    }
    out
}

/// The server file: stubs, ghost mailboxes, push stubs, static interfaces.
pub fn server_file(d: &SchemaDesc) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "Server side: what node scripts call (structs are in luahost_types.lua).",
        d,
    );
    // entity classes by server type
    let served = distinct(d, |m| match &m.section {
        Section::Type(t) => Some((m.class.clone(), t.clone())),
        _ => None,
    });
    for (class, t) in &served {
        let _ = writeln!(
            out,
            "\n---Entity class {class} as server type {t} serves it: `e:{}(sid).<method>(...)`, \
             `rpcstub.mailbox(rpcdef.iface(\"{t}\", \"{class}\"), sid, eid)`.",
            t.to_lowercase()
        );
        let _ = writeln!(out, "---@class {t}{class}Stub");
        for m in group(d, |m| &m.class == class && m.section == Section::Type(t.clone())) {
            field(&mut out, m, true);
        }
    }
    // ghost mailboxes of global entities
    let mut globals = d.global_entities.clone();
    globals.sort();
    for class in &globals {
        let types: Vec<&String> = served.iter().filter(|(c, _)| c == class).map(|(_, t)| t).collect();
        if types.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n---The ghost mailboxes of global entity {class} (`base.global(\"{class}\")`): `e:hall(sid)`.\n\
             ---Give your class them with `---@class {class}: {class}Ghosts`."
        );
        let _ = writeln!(out, "---@class {class}Ghosts");
        for t in types {
            let _ = writeln!(
                out,
                "---@field {} fun(self: {class}Ghosts, sid: integer): {t}{class}Stub",
                t.to_lowercase()
            );
        }
    }
    // pushes, as the server sends them
    for class in distinct(d, |m| (m.section == Section::Client).then(|| m.class.clone())) {
        let _ = writeln!(
            out,
            "\n---The methods clients of {class} implement, as a server sends them (one-way): \
             `player.client.<method>(...)`, stubs over `rpcdef.clientIface(\"{class}\")`."
        );
        let _ = writeln!(out, "---@class {class}Client");
        for m in group(d, |m| m.class == class && m.section == Section::Client) {
            field(&mut out, m, true);
        }
    }
    // static interfaces
    let statics = distinct(d, |m| match &m.section {
        Section::Static(side) => Some((m.class.clone(), side.clone())),
        _ => None,
    });
    for (iface, side) in statics {
        let _ = writeln!(
            out,
            "\n---Static interface {iface}, {side} side: `rpcstub.mailbox(rpcdef.rpcStatic{side}.{iface}, sid)`."
        );
        let _ = writeln!(out, "---@class {iface}{side}Stub");
        for m in group(d, |m| m.class == iface && m.section == Section::Static(side.clone())) {
            field(&mut out, m, false);
        }
    }
    out
}

/// The client file: the methods a client may call and those it implements.
pub fn client_file(d: &SchemaDesc) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "Client side: what a game client calls and implements (structs are in luahost_types.lua).",
        d,
    );
    let _ = writeln!(
        out,
        "-- A client's verify carries ClientDigi {} (0x{:08x}); its messages name methods by client id.",
        d.client_digest, d.client_digest
    );
    let classes = distinct(d, |m| (m.cid != 0).then(|| m.class.clone()));
    for class in classes {
        let calls = group(d, |m| m.class == class && m.client);
        if !calls.is_empty() {
            let _ = writeln!(out, "\n---What a client of {class} may call on the server.");
            let _ = writeln!(out, "---@class {class}Server");
            for m in calls {
                field(&mut out, m, true);
            }
        }
        let pushes = group(d, |m| m.class == class && m.section == Section::Client);
        if !pushes.is_empty() {
            let _ = writeln!(
                out,
                "\n---What a client of {class} implements: the server's pushes (one-way)."
            );
            let _ = writeln!(out, "---@class {class}Pushes");
            for m in pushes {
                field(&mut out, m, true);
            }
        }
    }
    out
}

/// The three files: (file name, text).
pub fn generate(d: &SchemaDesc) -> Vec<(&'static str, String)> {
    vec![
        (TYPES_FILE, types_file(d)),
        (SERVER_FILE, server_file(d)),
        (CLIENT_FILE, client_file(d)),
    ]
}

/// Writes the three files into `dir` (created if missing); returns their paths.
///
/// # Errors
///
/// The folder or a file cannot be written.
pub fn write_files(d: &SchemaDesc, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for (name, text) in generate(d) {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        paths.push(p);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    fn m(
        class: &str,
        section: Section,
        name: &str,
        args: &[(&str, &str)],
        results: Option<&[(&str, &str)]>,
        client: bool,
        cid: u32,
    ) -> MethodDesc {
        MethodDesc {
            class: class.into(),
            section,
            name: name.into(),
            args: pairs(args),
            results: results.map(pairs),
            client,
            cid,
        }
    }

    fn small() -> SchemaDesc {
        SchemaDesc {
            digest: 0x1234_abcd,
            client_digest: 0xfeed_0001,
            global_entities: vec!["Mgr".into()],
            structs: vec![(
                "Place".into(),
                pairs(&[
                    ("rid", "int48"),
                    ("tag", "string?"),
                    ("scores", "map<string,array<float>>"),
                ]),
            )],
            methods: vec![
                m(
                    "Player",
                    Section::Type("Hall".into()),
                    "hall_get",
                    &[("rid", "int48"), ("#2", "array<uint8?>")],
                    Some(&[("places", "array<Place>"), ("#2", "bool?")]),
                    true,
                    1,
                ),
                m(
                    "Player",
                    Section::Type("Hall".into()),
                    "hall_kick",
                    &[("why", "string")],
                    None,
                    false,
                    0,
                ),
                m(
                    "Player",
                    Section::Client,
                    "onNotice",
                    &[("text", "bytes")],
                    None,
                    false,
                    2,
                ),
                m(
                    "Mgr",
                    Section::Type("DB".into()),
                    "db_put",
                    &[("v", "double")],
                    Some(&[]),
                    false,
                    0,
                ),
                m(
                    "System",
                    Section::Static("Server".into()),
                    "ping",
                    &[("t", "int64")],
                    Some(&[("t", "int64")]),
                    false,
                    0,
                ),
            ],
        }
    }

    #[test]
    fn types_map_to_luals() {
        assert_eq!(lua_type("int48"), "integer");
        assert_eq!(lua_type("uint64"), "integer");
        assert_eq!(lua_type("float"), "number");
        assert_eq!(lua_type("bool"), "boolean");
        assert_eq!(lua_type("bytes"), "string");
        assert_eq!(lua_type("array<FriendPlace>"), "FriendPlace[]");
        assert_eq!(lua_type("array<int32?>"), "(integer|nil)[]");
        assert_eq!(lua_type("array<int32>?"), "integer[]|nil");
        assert_eq!(lua_type("map<string,array<Item>>"), "table<string, Item[]>");
        assert_eq!(
            lua_type("map<int32,map<string,bool>>"),
            "table<integer, table<string, boolean>>"
        );
    }

    #[test]
    fn server_file_has_stubs_ghosts_pushes_and_statics() {
        let text = server_file(&small());
        assert!(text.starts_with("---@meta\n"), "{text}");
        assert!(text.contains("Digi 1234abcd, ClientDigi feed0001"), "{text}");
        assert!(
            text.contains(
                "---@class HallPlayerStub\n\
                 ---call, client id 1: `Entity.Player.Hall.hall_get`\n\
                 ---@field hall_get fun(rid: integer, arg2: (integer|nil)[]): (places: Place[], boolean|nil)\n\
                 ---one-way send: `Entity.Player.Hall.hall_kick`\n\
                 ---@field hall_kick fun(why: string)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("---@class DBMgrStub\n---call: `Entity.Mgr.DB.db_put`\n---@field db_put fun(v: number)\n"),
            "{text}"
        );
        assert!(
            text.contains("---@class MgrGhosts\n---@field db fun(self: MgrGhosts, sid: integer): DBMgrStub\n"),
            "{text}"
        );
        assert!(!text.contains("PlayerGhosts"), "Player is no global entity: {text}");
        assert!(
            text.contains(
                "---@class PlayerClient\n\
                 ---push, client id 2: `Entity.Player.Client.onNotice`\n\
                 ---@field onNotice fun(text: string)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "---@class SystemServerStub\n\
                 ---call: `Static.System.Server.ping`\n\
                 ---@field ping fun(t: integer): (t: integer)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn client_file_has_only_client_visible_methods() {
        let text = client_file(&small());
        assert!(text.starts_with("---@meta\n"), "{text}");
        assert!(text.contains("ClientDigi 4276944897 (0xfeed0001)"), "{text}");
        assert_eq!(
            text.split("\n\n").skip(1).collect::<Vec<_>>().join("\n\n"),
            "---What a client of Player may call on the server.\n\
             ---@class PlayerServer\n\
             ---call, client id 1: `Entity.Player.Hall.hall_get`\n\
             ---@field hall_get fun(rid: integer, arg2: (integer|nil)[]): (places: Place[], boolean|nil)\n\
             \n\
             ---What a client of Player implements: the server's pushes (one-way).\n\
             ---@class PlayerPushes\n\
             ---push, client id 2: `Entity.Player.Client.onNotice`\n\
             ---@field onNotice fun(text: string)\n"
        );
    }

    #[test]
    fn types_file_has_the_structs() {
        let text = types_file(&small());
        assert!(
            text.ends_with(
                "\n---@class Place\n\
                 ---@field rid integer # int48\n\
                 ---@field tag? string # string?\n\
                 ---@field scores table<string, number[]> # map<string,array<float>>\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn files_are_written() {
        let dir = std::env::temp_dir().join(format!("luahost-annotate-{}", std::process::id()));
        let paths = write_files(&small(), &dir).unwrap();
        assert_eq!(paths.len(), 3);
        for p in &paths {
            assert!(std::fs::read_to_string(p).unwrap().starts_with("---@meta\n"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
