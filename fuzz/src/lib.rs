//! Shared set-up of the fuzz targets: one schema (built through
//! `Schema::from_lua`, as `rpcdef.init` does) whose structs and methods cover
//! every kind of type, and a flat list of type expressions parsed with
//! `schema::parse_type`.

use std::collections::HashMap;
use std::rc::Rc;

use luahost::schema::{self, Schema, StructDef, Ty};
use mlua::{Lua, Table};

/// The structs and methods handed to `Schema::from_lua`.
const SCHEMA_LUA: &str = r#"
local structs = {
    Vec3 = { {"x", "float"}, {"y", "float"}, {"z", "float"} },
    Item = { {"id", "int48"}, {"name", "string"}, {"count", "uint16?"}, {"tags", "array<string>"} },
    -- nested structs (Vec3, Item), an optional struct and optional scalars
    Player = {
        {"pid", "uint64"}, {"pos", "Vec3"}, {"items", "array<Item>"},
        {"attrs", "map<string,double>"}, {"guild", "string?"}, {"best", "Item?"},
    },
}
local methods = {
    { id = 1, name = "T.ints", stype = 0,
      args = { {"a","int8"}, {"b","int16"}, {"c","int32"}, {"d","int48"}, {"e","int64"} },
      results = { {"r","int64"} } },
    { id = 2, name = "T.uints", stype = 0,
      args = { {"a","uint8"}, {"b","uint16"}, {"c","uint32"}, {"d","uint64"} } },
    { id = 3, name = "T.scalars", stype = 0,
      args = { {"f","float"}, {"d","double"}, {"b","bool"}, {"s","string"}, {"y","bytes"} },
      results = { {"ok","bool"}, {"why","string?"} } },
    { id = 4, name = "T.containers", stype = 0,
      args = { {"a","array<int32>"}, {"m","map<string,int64>"}, {"n","map<int32,Item>"} } },
    { id = 5, name = "T.player", stype = 0,
      args = { {"p","Player"}, {"q","Player?"} },
      results = { {"p","Player"} } },
    { id = 6, name = "T.nested", stype = 0,
      args = { {"aa","array<array<int8>>"}, {"mb","map<uint8,array<bytes>>"}, {"o","int48?"} } },
    { id = 7, name = "T.keys", stype = 0,
      args = { {"a","map<bool,double>"}, {"b","map<double,string>"}, {"c","map<float,bool>"},
               {"d","map<array<int8>,int8>"}, {"e","map<string?,int8>"} } },
    -- positional form of field lists ({"type", ...})
    { id = 8, name = "T.positional", stype = 0, args = { "Vec3", "Item?", "array<uint8?>" } },
    { id = 9, name = "T.none", stype = 0, args = {}, results = {} },
}
return methods, structs
"#;

/// Type expressions, one of every kind and the interesting combinations.
#[rustfmt::skip]
pub const TYPE_NAMES: &[&str] = &[
    "int8", "int16", "int32", "int48", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "float", "double", "bool", "string", "bytes",
    "array<int32>", "array<string>", "array<Item>", "array<array<int8>>", "array<uint8?>",
    "map<string,int64>", "map<int32,Item>", "map<uint8,array<bytes>>", "map<bool,double>",
    "map<double,string>", "map<float,bool>", "map<int64,string?>",
    "map<array<int8>,int8>", "map<string?,int8>",
    "Vec3", "Item", "Player", "Player?", "Item?", "int48?", "map<string, array<Vec3?>>",
];

/// Number of methods in [`SCHEMA_LUA`] (ids 1..=METHODS).
pub const METHODS: u32 = 9;

/// Everything a target needs, built once per thread.
pub struct Ctx {
    /// The Lua state values are decoded into.
    pub lua: Lua,
    /// The schema built with `Schema::from_lua`.
    pub schema: Schema,
    /// [`TYPE_NAMES`] parsed.
    pub types: Vec<Ty>,
    /// The argument type lists of the methods, by id - 1.
    pub lists: Vec<Vec<Ty>>,
}

/// Builds the context; panics if the schema is refused (a harness bug).
pub fn build() -> Ctx {
    let lua = Lua::new();
    // A runaway decode should fail as a Lua error, not exhaust the machine.
    lua.set_memory_limit(512 * 1024 * 1024).expect("memory limit");
    let (methods, structs): (Table, Table) = lua.load(SCHEMA_LUA).eval().expect("schema chunk");
    let schema = Schema::from_lua(0x1234_5678, &methods, Some(&structs)).expect("schema accepted");
    let types = TYPE_NAMES
        .iter()
        .map(|n| schema::parse_type(n, &schema.structs).unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect();
    let lists = (1..=METHODS)
        .map(|id| {
            schema
                .method(id)
                .expect("method present")
                .args
                .iter()
                .map(|(_, t)| t.clone())
                .collect()
        })
        .collect();
    drop((methods, structs));
    Ctx {
        lua,
        schema,
        types,
        lists,
    }
}

/// The struct map of a context (for callers that parse more types).
pub fn structs(ctx: &Ctx) -> &HashMap<String, Rc<StructDef>> {
    &ctx.schema.structs
}
