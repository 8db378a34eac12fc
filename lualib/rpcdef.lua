-- The schema: rpcdef.init(entitydef) numbers every method, computes the
-- digests and hands the typed method list to the host.
--
-- entitydef (scripts/entitydef.lua) holds:
--   ServerType   = { Router = 1, DB = 2, ... }
--   GlobalEntity = { FriendMgr = 1, ... }          class name -> entity id
--   Struct       = { Name = { {"field", "type"}, ... } }
--   Static       = { Iface = { Server = { m = {args=..., results=...} },
--                              Client = { ... } } }
--   Entity       = { Class = { ServerTypeName = { m = {args=..., results=...,
--                                                     client=true|nil} },
--                              Client = { m = {args=...} } } }
--   Collection   = { name = { key = "int64" | "string", value = <type> | "msgpack",
--                             index = { indexName = "field", ... } } }
--                  the documents DBProxy stores (lualib/dbproxy.lua)
-- A method with `results` (possibly {}) is a call; without, a one-way send.
-- args/results are lists of {"name", "type"} (or bare "type").
--
-- Clients (through a Gate) see two kinds of method: those of a server type
-- marked `client = true` (exposed: a client may call or send them), and
-- those of an entity class's `Client` section (pushes: the client
-- implements them; one-way only). "Client" is therefore no server type name.
--
-- Method ids are the positions of the sorted method keys, and Digi is a hash
-- of the canonical text of the whole schema: the same schema gives the same
-- ids and digest on every node and every run. Client-visible methods also
-- get a client id (cid): their position among the sorted keys of the
-- client-visible methods only, and ClientDigi hashes only them and the
-- structs they use, so a change of a server-only method changes neither.
local core = require "luahost.core"
local hotfix = require "hotfix"

local M = {}

M.Digi, M.ClientDigi = 0, 0
M.methods = {}          -- id -> method
M.GlobalEntity = {}     -- class name -> eid
M.rpcStaticServer = {}  -- iface -> { method name -> method }
M.rpcStaticClient = {}
M.ServerType = {}
M.clientMethods = {}    -- cid -> client-visible method (exposed or push)
M.collections = {}      -- collection name -> { name, key, value, index = { name -> field } }
M.structs = {}          -- struct name -> { {"field", "type"}, ... }

local impls = {}
local by_key = {} -- method key -> method table, kept across re-inits
-- server type name -> entity class name -> { method name -> method }; each
-- type's table is also M["rpc" .. type name] (the seed's rpcdef.rpcHall)
local ifaces = {}
-- entity class name -> { method name -> push method } (its Client section);
-- also M.rpcClient ("Client" is never a server type name)
local clientIfaces = {}
M.rpcClient = clientIfaces

local function normalize(list, where)
    local out = {}
    if list == nil then return nil end
    assert(type(list) == "table", where .. " must be a list")
    for i, f in ipairs(list) do
        if type(f) == "string" then
            out[i] = { "#" .. i, f }
        elseif type(f) == "table" and type(f[1]) == "string" and type(f[2]) == "string" then
            out[i] = { f[1], f[2] }
        else
            error(string.format("%s #%d must be {\"name\", \"type\"}", where, i), 0)
        end
    end
    return out
end

local function sig(list)
    if list == nil then return "-" end
    local parts = {}
    for i, f in ipairs(list) do parts[i] = f[1] .. ":" .. f[2] end
    return "(" .. table.concat(parts, ",") .. ")"
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t or {}) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    return keys
end

-- Why types cannot replace M.ServerType, or nil if they can: the server
-- types are set once (the first time) and never change while the node runs.
local function types_refused(types)
    if type(types) ~= "table" then return "entitydef.ServerType is missing" end
    if types.Client ~= nil then
        return "entitydef.ServerType: Client cannot be a server type name (it names the methods "
            .. "an entity class's clients implement: Entity.<Class>.Client)"
    end
    if next(M.ServerType) == nil then return nil end
    for k, v in pairs(types) do
        if M.ServerType[k] ~= v then
            return "entitydef: ServerType changed (" .. tostring(k) .. "); that needs a restart"
        end
    end
    for k in pairs(M.ServerType) do
        if types[k] == nil then
            return "entitydef: ServerType changed (" .. k .. " removed); that needs a restart"
        end
    end
    return nil
end

-- Fills M.ServerType and gives each type its table of interfaces (and
-- the alias rpcdef.rpc<Type>), once types_refused(types) said yes.
local function set_types(types)
    for k, v in pairs(types) do
        M.ServerType[k] = v
        if ifaces[k] == nil then
            ifaces[k] = {}
            M["rpc" .. k] = ifaces[k] -- alias: rpcdef.rpcHall.FriendMgr
        end
    end
end

--- Fills rpcdef.ServerType (the table that is the global ServerType) from
--- the schema's ServerType before rpcdef.init, so that scripts may use
--- ServerType and rpcdef.iface before base.init (the prelude calls it).
--- Raises if the types were set before and differ.
function M.declareTypes(types)
    local err = types_refused(types)
    if err then error(err, 2) end
    set_types(types)
end

-- The interface between Gates and the nodes their clients are bound to
-- (lualib/gate.lua): part of every schema.
local CLIENT_CTL = {
    Server = {
        bind = {
            args = { { "session", "uint64" }, { "account", "string" }, { "gate", "uint32" }, { "stamp", "int64" } },
            results = { { "eid", "int64" }, { "code", "string" }, { "text", "string" } },
        },
        adopt = {
            args = { { "session", "uint64" }, { "account", "string" }, { "gate", "uint32" }, { "stamp", "int64" },
                { "eid", "int64" } },
            results = { { "ok", "bool" }, { "why", "string" } },
        },
        lost = { args = { { "session", "uint64" }, { "account", "string" }, { "reason", "string" } } },
        kick = { args = { { "session", "uint64" }, { "code", "string" }, { "text", "string" } } },
        give = { args = { { "session", "uint64" }, { "sid", "uint32" }, { "eid", "int64" } } },
    },
}

-- The interface between every node and the DB node (lualib/dbproxy.lua):
-- part of every schema. A key (and an index value) is an integer or a
-- string: two optional arguments, one of them set. expect: -1 anything,
-- 0 absent, v > 0 that version. err is "" or the store's error text.
local DB_STRUCTS = {
    DbIndex = { { "name", "string" }, { "ival", "int64?" }, { "sval", "string?" } },
    DbDoc = { { "ikey", "int64?" }, { "skey", "string?" }, { "value", "bytes" }, { "version", "int64" } },
}
local DB_CTL = {
    Server = {
        load = {
            args = { { "coll", "string" }, { "ikey", "int64?" }, { "skey", "string?" } },
            results = { { "err", "string" }, { "value", "bytes?" }, { "version", "int64" } },
        },
        save = {
            args = { { "coll", "string" }, { "ikey", "int64?" }, { "skey", "string?" }, { "value", "bytes" },
                { "expect", "int64" }, { "epoch", "int64" }, { "indexes", "array<DbIndex>" } },
            results = { { "err", "string" }, { "version", "int64" } },
        },
        delete = {
            args = { { "coll", "string" }, { "ikey", "int64?" }, { "skey", "string?" }, { "expect", "int64" },
                { "epoch", "int64" } },
            results = { { "err", "string" }, { "existed", "bool" } },
        },
        query = {
            args = { { "coll", "string" }, { "index", "string" }, { "ival", "int64?" }, { "sval", "string?" },
                { "limit", "int32" } },
            results = { { "err", "string" }, { "docs", "array<DbDoc>" } },
        },
        epoch = { results = { { "err", "string" }, { "epoch", "int64" } } },
    },
}

-- def with the built-in interfaces added (def itself is not changed).
local function with_builtins(def)
    for _, name in ipairs({ "ClientCtl", "DbCtl" }) do
        if def.Static and def.Static[name] then
            error("entitydef.Static." .. name .. " is reserved (a built-in interface)", 0)
        end
    end
    local static = {}
    for k, v in pairs(def.Static or {}) do static[k] = v end
    static.ClientCtl = CLIENT_CTL
    static.DbCtl = DB_CTL
    local structs = {}
    for k, v in pairs(def.Struct or {}) do structs[k] = v end
    for k, v in pairs(DB_STRUCTS) do
        if structs[k] ~= nil then error("entitydef.Struct." .. k .. " is reserved (DBProxy's)", 0) end
        structs[k] = v
    end
    local out = {}
    for k, v in pairs(def) do out[k] = v end
    out.Static = static
    out.Struct = structs
    return out
end

local BASE_TYPES = {
    int8 = true, int16 = true, int32 = true, int48 = true, int64 = true, uint8 = true, uint16 = true,
    uint32 = true, uint64 = true, float = true, double = true, bool = true, string = true, bytes = true,
    array = true, map = true,
}
local KEY_TYPES = {
    int8 = "int", int16 = "int", int32 = "int", int48 = "int", int64 = "int", uint8 = "int", uint16 = "int",
    uint32 = "int", uint64 = "int", string = "string",
}

-- The collections of def, checked (the value types against the structs),
-- and their lines for the digest; raises naming the entry at fault.
local function collections(def, structs, text)
    local out = {}
    for _, name in ipairs(sorted_keys(def.Collection)) do
        local c = def.Collection[name]
        local where = "entitydef.Collection." .. tostring(name)
        if type(name) ~= "string" or name:sub(1, 2) == "__" then
            error(where .. ": a collection's name is a string not starting with __", 0)
        end
        if type(c) ~= "table" then error(where .. " must be a table {key=..., value=...}", 0) end
        if KEY_TYPES[c.key] == nil then
            error(where .. ".key must be an integer type or string, got " .. tostring(c.key), 0)
        end
        if type(c.value) ~= "string" then error(where .. ".value must be a type or \"msgpack\"", 0) end
        if c.value ~= "msgpack" then
            for word in c.value:gmatch("[%w_]+") do
                if not BASE_TYPES[word] and structs[word] == nil then
                    error(string.format("%s.value: unknown type '%s'", where, word), 0)
                end
            end
        end
        local index = {}
        local parts = {}
        for _, iname in ipairs(sorted_keys(c.index)) do
            local field = c.index[iname]
            if type(iname) ~= "string" or type(field) ~= "string" then
                error(where .. ".index must map index names to field names", 0)
            end
            local st = structs[c.value]
            if st then
                local ok = false
                for _, f in ipairs(st) do if f[1] == field then ok = true end end
                if not ok then
                    error(string.format("%s.index.%s: struct %s has no field '%s'", where, iname, c.value, field), 0)
                end
            elseif c.value ~= "msgpack" then
                error(string.format("%s.index.%s: indexes need a struct or msgpack value", where, iname), 0)
            end
            index[iname] = field
            parts[#parts + 1] = iname .. "=" .. field
        end
        for k in pairs(c) do
            if k ~= "key" and k ~= "value" and k ~= "index" then
                error(string.format("%s.%s is not a collection setting (key, value, index)", where, tostring(k)), 0)
            end
        end
        out[name] = { name = name, key = c.key, keykind = KEY_TYPES[c.key], value = c.value, index = index }
        text[#text + 1] = "C " .. name .. "(" .. c.key .. "," .. c.value .. ")[" .. table.concat(parts, ",") .. "]"
    end
    return out
end

--- Loads the schema. May be called again (hot reload): the tables keep their
--- identity and are refilled; the server types must stay the same.
function M.init(def)
    assert(type(def) == "table", "rpcdef.init needs the entitydef table")
    def = with_builtins(def)
    local refused = types_refused(def.ServerType)
    if refused then error(refused, 0) end
    local entries = {}
    for _, iname in ipairs(sorted_keys(def.Static)) do
        for _, side in ipairs(sorted_keys(def.Static[iname])) do
            if side ~= "Server" and side ~= "Client" then
                error(string.format("entitydef.Static.%s.%s: side must be Server or Client", iname, side), 0)
            end
            for _, mname in ipairs(sorted_keys(def.Static[iname][side])) do
                entries[#entries + 1] = {
                    key = "Static." .. iname .. "." .. side .. "." .. mname,
                    iface = iname, side = side, name = mname, stype = 0,
                    def = def.Static[iname][side][mname],
                }
            end
        end
    end
    for _, cname in ipairs(sorted_keys(def.Entity)) do
        for _, tname in ipairs(sorted_keys(def.Entity[cname])) do
            -- Entity.<Class>.Client: the methods the class's clients implement
            local push = tname == "Client"
            local stype = 0
            if not push then
                stype = def.ServerType[tname]
                if not stype then
                    error(string.format("entitydef.Entity.%s.%s: no server type %s in ServerType", cname, tname, tname), 0)
                end
            end
            for _, mname in ipairs(sorted_keys(def.Entity[cname][tname])) do
                entries[#entries + 1] = {
                    key = "Entity." .. cname .. "." .. tname .. "." .. mname,
                    iface = cname, tname = (not push) and tname or nil, push = push,
                    name = mname, stype = stype,
                    def = def.Entity[cname][tname][mname],
                }
            end
        end
    end
    table.sort(entries, function(a, b) return a.key < b.key end)

    -- canonical text
    local text = {}
    for _, k in ipairs(sorted_keys(def.ServerType)) do text[#text + 1] = "T " .. k .. "=" .. def.ServerType[k] end
    for _, k in ipairs(sorted_keys(def.GlobalEntity)) do text[#text + 1] = "G " .. k .. "=" .. def.GlobalEntity[k] end
    local structs = {}
    for _, k in ipairs(sorted_keys(def.Struct)) do
        local fields = normalize(def.Struct[k], "entitydef.Struct." .. k)
        structs[k] = fields
        text[#text + 1] = "S " .. k .. sig(fields)
    end
    local colls = collections(def, structs, text)

    -- Build everything first; nothing is changed unless the host accepts it.
    local list, built, clist, ctext = {}, {}, {}, {}
    for id, e in ipairs(entries) do
        local d = e.def
        if type(d) ~= "table" then error(e.key .. " must be a table {args=..., results=...}", 0) end
        local client = d.client
        if client ~= nil and type(client) ~= "boolean" then
            error(string.format("entitydef.%s: client must be true or false, got %s", e.key, type(client)), 0)
        end
        if client and e.side then
            error(string.format("entitydef.%s: client = true is only for methods an entity class's server "
                .. "types serve (Entity.<Class>.<Type>), not for Static interfaces", e.key), 0)
        end
        if e.push and client ~= nil then
            error(string.format("entitydef.%s: client does not apply to a Client method "
                .. "(the client implements it)", e.key), 0)
        end
        if e.push and d.results ~= nil then
            error(string.format("entitydef.%s: a Client method is a one-way push: results are not allowed", e.key), 0)
        end
        local m = {
            id = id,
            key = e.key,
            name = e.name,
            iface = e.iface,
            full = e.iface .. "." .. e.name,
            stype = e.stype,
            tname = e.tname,
            side = e.side,
            args = normalize(d.args or {}, e.key .. ".args"),
            results = normalize(d.results, e.key .. ".results"),
            client = client == true,
            push = e.push == true,
            cid = 0,
        }
        m.call = m.results ~= nil
        local line = e.key .. sig(m.args) .. "->" .. sig(m.results)
        -- (an exposed method is marked in Digi only: ClientDigi lists nothing else)
        text[#text + 1] = m.client and (line .. " client") or line
        if m.client or m.push then
            m.cid = #clist + 1
            clist[m.cid] = m
            ctext[m.cid] = line
        end
        built[id] = { m = m, side = e.side, tname = e.tname }
        list[#list + 1] = {
            id = id, name = m.full, stype = m.stype, args = m.args, results = m.results,
            client = m.client, push = m.push, cid = m.cid,
        }
    end
    -- ClientDigi: the structs client-visible methods use (directly or
    -- through other structs), by name, then those methods in cid order.
    local used = {}
    local function use(ty)
        for word in ty:gmatch("[%w_]+") do
            if structs[word] and not used[word] then
                used[word] = true
                for _, f in ipairs(structs[word]) do use(f[2]) end
            end
        end
    end
    for _, m in ipairs(clist) do
        for _, a in ipairs(m.args) do use(a[2]) end
        for _, r in ipairs(m.results or {}) do use(r[2]) end
    end
    local ctop = {}
    for _, k in ipairs(sorted_keys(used)) do ctop[#ctop + 1] = "S " .. k .. sig(structs[k]) end
    for _, line in ipairs(ctext) do ctop[#ctop + 1] = line end
    local digi = core.hash32(table.concat(text, "\n"))
    local cdigi = core.hash32(table.concat(ctop, "\n"))
    local ok, err = core.set_schema(digi, list, structs, cdigi)
    if not ok then error("entitydef: " .. err, 2) end

    -- Commit. Method and interface tables keep their identity across
    -- re-inits (hot reload): stubs made before see the new ids.
    M.Digi, M.ClientDigi = digi, cdigi
    set_types(def.ServerType)
    for k in pairs(M.GlobalEntity) do M.GlobalEntity[k] = nil end
    for k, v in pairs(def.GlobalEntity or {}) do M.GlobalEntity[k] = v end
    for k in pairs(M.structs) do M.structs[k] = nil end
    for k, v in pairs(structs) do M.structs[k] = v end
    for k in pairs(M.collections) do M.collections[k] = nil end
    for k, v in pairs(colls) do M.collections[k] = v end
    local live = {}
    for k in pairs(M.methods) do M.methods[k] = nil end
    for k in pairs(M.clientMethods) do M.clientMethods[k] = nil end
    local function iface_table(group, name)
        local t = group[name]
        if t == nil then
            t = {}
            group[name] = t
        end
        return t
    end
    for id, b in ipairs(built) do
        local m = by_key[b.m.key]
        if m then
            for k in pairs(m) do m[k] = nil end
            for k, v in pairs(b.m) do m[k] = v end
        else
            m = b.m
            by_key[m.key] = m
        end
        live[m.key] = true
        M.methods[id] = m
        if m.cid ~= 0 then M.clientMethods[m.cid] = m end
        local group
        if b.side == "Server" then
            group = M.rpcStaticServer
        elseif b.side == "Client" then
            group = M.rpcStaticClient
        elseif m.push then
            group = clientIfaces
        else
            group = ifaces[b.tname]
        end
        iface_table(group, m.iface)[m.name] = m
    end
    -- methods gone from the schema: stubs that still hold them get a clear error
    for key, m in pairs(by_key) do
        if not live[key] then
            m.removed = true
            m.id = 0
            m.cid = 0
            local function drop(group)
                if group[m.iface] and group[m.iface][m.name] == m then group[m.iface][m.name] = nil end
            end
            drop(M.rpcStaticServer)
            drop(M.rpcStaticClient)
            drop(clientIfaces)
            for _, group in pairs(ifaces) do drop(group) end
            by_key[key] = nil
        end
    end
    return M
end

--- The methods the clients of entity class cname implement (its Client
--- section: pushes, by name), for building the stubs of player.client. The
--- same table on every call, also reachable as rpcdef.rpcClient[cname]; a
--- schema reload refills it in place. Empty while the class has no Client
--- section.
function M.clientIface(cname)
    if type(cname) ~= "string" then
        error("rpcdef.clientIface: the entity class name must be a string, got " .. type(cname), 2)
    end
    local t = clientIfaces[cname]
    if t == nil then
        t = {}
        clientIfaces[cname] = t
    end
    return t
end

--- The interface of entity class cname served by server type tname
--- (rpcdef.iface("Hall", "FriendMgr")): a table of its methods by name, for
--- rpcstub.mailbox. The same table on every call, also reachable as
--- rpcdef["rpc" .. tname][cname] (rpcdef.rpcHall.FriendMgr, the seed's
--- name); a schema reload refills it in place. A class that tname serves
--- no method of gets an empty interface (a later reload may fill it).
--- Raises if tname is not a server type of the schema.
function M.iface(tname, cname)
    local group = ifaces[tname]
    if group == nil then
        error(string.format("rpcdef.iface: no server type %s in the schema", tostring(tname)), 2)
    end
    if type(cname) ~= "string" then
        error("rpcdef.iface: the entity class name must be a string, got " .. type(cname), 2)
    end
    local t = group[cname]
    if t == nil then
        t = {}
        group[cname] = t
    end
    return t
end

--- Declares that impl serves the static interface iname (e.g. "System");
--- calls to it arrive as impl:method(args...).
function M.implements(iname, impl)
    assert(type(impl) == "table", "rpcdef.implements: impl must be a table")
    -- (a chunk being hot-reloaded passes the shadow of its table)
    impls[iname] = hotfix.original(impl)
end

--- The table implementing static interface iname, if any.
function M.impl(iname)
    return impls[iname]
end

--- Checks that this node's type exists in the schema (seed 000's setup step).
function M.setup(sname)
    assert(M.ServerType[sname], "rpcdef.setup: unknown server type " .. tostring(sname))
end

return M
