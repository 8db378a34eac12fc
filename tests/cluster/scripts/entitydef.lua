-- Schema of the test cluster: three server types that all serve the Echo
-- global entity.
local def = {
    ServerType = { A = 1, B = 2, C = 3, Router = 4, Olap = 5, DB = 6 },
    GlobalEntity = { Echo = 1 },
    Struct = {
        Pair = { { "k", "string" }, { "v", "int32" } },
        Item = { { "id", "int32" }, { "tag", "string?" } },
        -- every schema type, for DBProxy's round trip
        AllTypes = {
            { "i8", "int8" }, { "i16", "int16" }, { "i32", "int32" }, { "i48", "int48" }, { "i64", "int64" },
            { "u8", "uint8" }, { "u16", "uint16" }, { "u32", "uint32" }, { "u64", "uint64" },
            { "f", "float" }, { "d", "double" }, { "b", "bool" }, { "s", "string" }, { "by", "bytes" },
            { "arr", "array<int48>" }, { "m", "map<string,int32>" }, { "item", "Item" }, { "opt", "string?" },
            { "items", "array<Item>" },
        },
        HeroRec = { { "name", "string" }, { "gold", "int64" } },
        PlayerRec = { { "name", "string" }, { "level", "int32" }, { "friends", "array<int64>" } },
    },
    -- DBProxy's collections (the DB node of the test cluster is a_1, type A)
    Collection = {
        blobs = { key = "string", value = "bytes" },
        nums = { key = "int64", value = "bytes" },
        counters = { key = "string", value = "int64" },
        typed = { key = "int64", value = "AllTypes" },
        players = { key = "int64", value = "PlayerRec", index = { byName = "name", byFriend = "friends" } },
        docs = { key = "string", value = "msgpack", index = { byTag = "tag" } },
        heroes = { key = "int64", value = "HeroRec" },
    },
    Static = {
        System = {
            Server = { ping = { args = { { "t", "int64" } }, results = { { "t", "int64" } } } },
            Client = { pong = { args = { { "t", "int64" } } } },
        },
    },
    Entity = { Echo = {} },
}

for t in pairs(def.ServerType) do
    def.Entity.Echo[t] = {
        echo = { args = { { "s", "string" }, { "n", "int64" } }, results = { { "s", "string" }, { "n", "int64" } } },
        note = { args = { { "n", "int64" }, { "rids", "array<int48>" } } },
        count = { results = { { "n", "int64" } } },
        fail = { args = { { "msg", "string" } }, results = {} },
        nest = { args = { { "path", "array<uint32>" } }, results = { { "trail", "string" } } },
        slow = { args = { { "secs", "double" } }, results = { { "ok", "bool" } } },
        blob = { args = { { "b", "bytes" } }, results = { { "n", "int64" }, { "b", "bytes" } } },
        sum = { args = { { "ps", "array<Pair>" }, { "m", "map<string,int32>" } }, results = { { "sum", "int64" } } },
        badresult = { results = { { "n", "int8" } } },
    }
end

-- A node started with LUAHOST_TEST_SCHEMA_EXTRA set has one more method, so
-- its digest differs (used to test the digest check of the handshake).
if os.getenv("LUAHOST_TEST_SCHEMA_EXTRA") then
    def.Entity.Echo.A.extra = { args = { { "x", "int32" } } }
end

return def
