//! Reading an `entitydef.lua` outside a node (`luahost annotate`): the file
//! runs in a bare Lua state with the built-in lualib, and `rpcdef.init`
//! compiles it exactly as a node would (the same checks, ids, client ids and
//! digests); the result is a plain [`SchemaDesc`].

use std::path::Path;

use mlua::{Function, Lua, Table};

use crate::rpc::ring;
use crate::schema::annotate::{MethodDesc, SchemaDesc, Section};
use crate::schema::{field_list, Schema};

/// Loads `path` (an `entitydef.lua`) and describes its schema.
///
/// # Errors
///
/// The file cannot be read or run, or `rpcdef.init` refuses it (the text says
/// why, as a node would).
pub fn describe_entitydef(path: &Path) -> Result<SchemaDesc, String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    describe(&src, path).map_err(|e| e.to_string())?
}

/// Runs the file and `rpcdef.init`; the outer error is the host's (mlua),
/// the inner one the text the schema's own error raised.
fn describe(src: &str, path: &Path) -> mlua::Result<Result<SchemaDesc, String>> {
    let lua = Lua::new();
    // luahost.core: only what rpcdef needs outside a node
    let core = lua.create_table()?;
    core.set(
        "hash32",
        lua.create_function(|_, s: mlua::LuaString| Ok(ring::fnv1a32(&s.as_bytes())))?,
    )?;
    core.set(
        "set_schema",
        lua.create_function(
            |_, (digest, methods, structs, _cd): (u32, Table, Option<Table>, Option<u32>)| match Schema::from_lua(
                digest,
                &methods,
                structs.as_ref(),
            ) {
                Ok(_) => Ok((Some(true), None)),
                Err(e) => Ok((None, Some(e.to_string()))),
            },
        )?,
    )?;
    let package: Table = lua.globals().get("package")?;
    let loaded: Table = package.get("loaded")?;
    loaded.set("luahost.core", core)?;
    let preload: Table = package.get("preload")?;
    for (name, text) in super::lualib::MODULES {
        let f = lua
            .load(*text)
            .set_name(format!("=lualib/{name}.lua"))
            .into_function()?;
        preload.set(*name, f)?;
    }
    // modules beside the schema file may be required from it
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        package.set("path", dir.join("?.lua").display().to_string())?;
    }
    // errors as a node logs them: the message, no traceback
    let driver: Function = lua
        .load(
            r#"local src, name = ...
            local f, err = load(src, name, "t")
            if not f then return nil, err end
            local ok, def = pcall(f)
            if not ok then return nil, tostring(def) end
            if type(def) ~= "table" then return nil, name:sub(2) .. ": must return the entitydef table" end
            local rpcdef = require "rpcdef"
            local ok2, e = pcall(rpcdef.init, def)
            if not ok2 then return nil, tostring(e) end
            return def, rpcdef"#,
        )
        .set_name("=describe")
        .into_function()?;
    let (def, rpcdef): (Option<Table>, mlua::Value) = driver.call((src, format!("@{}", path.display())))?;
    let (def, rpcdef) = match (def, rpcdef) {
        (Some(def), mlua::Value::Table(r)) => (def, r),
        (_, err) => return Ok(Err(err.to_string().unwrap_or_default())),
    };

    let mut d = SchemaDesc {
        digest: rpcdef.get("Digi")?,
        client_digest: rpcdef.get("ClientDigi")?,
        ..Default::default()
    };
    for pair in rpcdef.get::<Table>("GlobalEntity")?.pairs::<String, mlua::Value>() {
        d.global_entities.push(pair?.0);
    }
    d.global_entities.sort();
    if let Some(st) = def.get::<Option<Table>>("Struct")? {
        for pair in st.pairs::<String, Table>() {
            let (name, fields) = pair?;
            d.structs.push((name, field_list(&fields)?));
        }
    }
    d.structs.sort();
    for m in rpcdef.get::<Table>("methods")?.sequence_values::<Table>() {
        let m = m?;
        let section = if let Some(side) = m.get::<Option<String>>("side")? {
            Section::Static(side)
        } else if m.get::<bool>("push")? {
            Section::Client
        } else {
            Section::Type(m.get("tname")?)
        };
        d.methods.push(MethodDesc {
            class: m.get("iface")?,
            section,
            name: m.get("name")?,
            args: field_list(&m.get::<Table>("args")?)?,
            results: match m.get::<Option<Table>>("results")? {
                Some(t) => Some(field_list(&t)?),
                None => None,
            },
            client: m.get("client")?,
            cid: m.get("cid")?,
        });
    }
    Ok(Ok(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("luahost-describe-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("entitydef.lua");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_sample_schema_is_described() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/entitydef.lua");
        let d = describe_entitydef(&p).unwrap();
        assert_eq!(d.global_entities, vec!["FriendMgr".to_string()]);
        let structs: Vec<&str> = d.structs.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(structs, ["FriendList", "FriendPlace", "PlayerRec"]);
        let visible: Vec<String> = {
            let mut v: Vec<&MethodDesc> = d.methods.iter().filter(|m| m.cid != 0).collect();
            v.sort_by_key(|m| m.cid);
            v.iter().map(|m| format!("{} {}", m.cid, m.key())).collect()
        };
        assert_eq!(
            visible,
            [
                "1 Entity.Player.Client.onFriendOnline",
                "2 Entity.Player.Client.onNotice",
                "3 Entity.Player.Hall.hall_addFriend",
                "4 Entity.Player.Hall.hall_getFriends",
            ]
        );
        let kick = d.methods.iter().find(|m| m.name == "hall_kick").unwrap();
        assert_eq!(kick.section, Section::Type("Hall".into()));
        assert!(!kick.client && kick.cid == 0);
        let ping = d.methods.iter().find(|m| m.name == "ping").unwrap();
        assert_eq!(ping.section, Section::Static("Server".into()));
    }

    #[test]
    fn schema_errors_come_back_as_text() {
        let p = write(
            "bad",
            "return { ServerType = { Hall = 1 }, Entity = { P = { Client = { onX = { results = {} } } } } }",
        );
        let e = describe_entitydef(&p).unwrap_err();
        assert_eq!(
            e,
            "entitydef.Entity.P.Client.onX: a Client method is a one-way push: results are not allowed"
        );
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
        let e = describe_entitydef(Path::new("/nonexistent/entitydef.lua")).unwrap_err();
        assert!(e.starts_with("/nonexistent/entitydef.lua: "), "{e}");
    }
}
