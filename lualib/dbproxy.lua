-- DBProxy: typed documents in the DB node's store, from any node.
--
-- The DB node is the node whose cluster entry has a store
-- (`store = { sqlite = "game.db" }` or `{ postgres = "host=... dbname=..." }`);
-- it owns the connections. Other nodes reach it through the built-in static
-- interface DbCtl (rpcdef adds it to every schema), sent to the live node of
-- type DBProxy.dbType ("DB" unless changed); on the DB node itself the
-- store is used directly. Either way each function suspends only its
-- coroutine until the database answers, like a remote call (handlers run
-- in coroutines already; elsewhere use rpcco.fork).
--
-- Collections are declared in entitydef:
--   Collection = {
--       players = { key = "int64", value = "PlayerData", index = { byName = "name" } },
--       notes   = { key = "string", value = "msgpack" },
--   }
-- value is a schema type (a struct, array<...>, bytes, ...: checked like an
-- RPC argument, a wrong value is an error at the call site and nothing is
-- written) or "msgpack" (any plain Lua document: nil, booleans, numbers,
-- strings, tables). An index names a field of the value (a struct's or a
-- msgpack table's): its value (an integer or a string, or an array of them:
-- one entry each) is indexed for query.
--
--   DBProxy.load(coll, key)                     -> value | nil, version | nil
--   DBProxy.save(coll, key, value, expect, epoch) -> version
--       expect: nil (write whatever is there), false (only if absent),
--       or the version loaded (only if still that one)
--   DBProxy.delete(coll, key, expect, epoch)    -> true if there was a document
--   DBProxy.query(coll, index, value, limit)    -> { {key=, value=, version=}, ... } by key
--   DBProxy.update(coll, key, fn)               -> new value, version
--       fn(value | nil, version | nil) -> new value (nil: write nothing);
--       saved only if nobody wrote in between (a version check), else
--       loaded and fn run again after a short random pause (up to 5 ms
--       times the attempt, so that racing writers spread out), at most
--       DBProxy.RETRIES (10) times, then the "conflict: ..." error is
--       raised. fn must not have effects besides its result: it may run
--       several times.
--   DBProxy.epoch()                             -> a new owner epoch (persist.lua)
--
-- Errors are raised with their kind first: "conflict: ..." (a stale write:
-- nothing written), "stale epoch: ..." (the writer was superseded),
-- "busy: ...", "closed: ...", "backend: ..." (the database failed or is
-- unreachable), "no store: ...", and those of calls: "node down: ..." (the
-- DB node is not online or was lost during the call), "timeout: ...".
local core = require "luahost.core"
local rpcco = require "rpcco"
local rpcdef = require "rpcdef"
local rpcstub = require "rpcstub"

local M = {}

M.RETRIES = 10
--- The server type whose live node (the lowest id) serves DbCtl.
M.dbType = "DB"

local running = coroutine.running
local mtype = math.type

local function co_of(what)
    local co, main = running()
    if main then error("dbproxy." .. what .. " must run inside a coroutine: handlers already do; elsewhere use rpcco.fork", 3) end
    return co
end

local function coll_of(what, name)
    local c = rpcdef.collections[name]
    if c == nil then
        error(string.format("dbproxy.%s: no collection '%s' in entitydef.Collection", what, tostring(name)), 3)
    end
    return c
end

local function check_key(what, c, key)
    if c.keykind == "int" then
        if mtype(key) ~= "integer" then
            error(string.format("dbproxy.%s: %s's key must be an integer, got %s", what, c.name, type(key)), 3)
        end
    elseif type(key) ~= "string" then
        error(string.format("dbproxy.%s: %s's key must be a string, got %s", what, c.name, type(key)), 3)
    end
end

local function pack(what, c, value, level)
    local bytes, err = core.pack(c.value, value)
    if not bytes then error(string.format("dbproxy.%s: %s: %s", what, c.name, err), level + 1) end
    return bytes
end

local function unpack(c, bytes)
    if bytes == nil then return nil end
    local v, err = core.unpack(c.value, bytes)
    if err then error(string.format("backend: %s: %s", c.name, err), 0) end
    return v
end

-- the {name, value} index entries of value
local function index_entries(c, value)
    local out = {}
    if next(c.index) == nil or type(value) ~= "table" then return out end
    for iname, field in pairs(c.index) do
        local v = value[field]
        local t = type(v)
        if t == "string" or mtype(v) == "integer" then
            out[#out + 1] = { iname, v }
        elseif t == "table" then
            for _, x in ipairs(v) do
                if type(x) == "string" or mtype(x) == "integer" then out[#out + 1] = { iname, x } end
            end
        end
    end
    return out
end

-- nil (anything), false (absent), or a version; as DbCtl's integer
local function expect_num(what, expect)
    if expect == nil then return -1 end
    if expect == false then return 0 end
    if mtype(expect) == "integer" and expect > 0 then return expect end
    error("dbproxy." .. what .. ": expect must be nil, false or a version, got " .. tostring(expect), 3)
end

local function expect_val(n)
    if n < 0 then return nil end
    if n == 0 then return false end
    return n
end

local function split(k)
    if mtype(k) == "integer" then return k, nil end
    return nil, k
end

-- Where operations go ---------------------------------------------------------

local ctl_cache = {}
local current -- the sid of the DB node in use, while it is live

local function db_ctl()
    local sid = current
    if sid == nil or not core.live(sid) then
        local stype = rpcdef.ServerType[M.dbType]
        if stype == nil then
            error("no store: no server type " .. tostring(M.dbType) .. " in the schema (set dbproxy.dbType)", 0)
        end
        sid = core.list(stype)[1]
        if sid == nil then error("node down: no " .. M.dbType .. " node is online", 0) end
        current = sid
    end
    local mb = ctl_cache[sid]
    if mb == nil then
        mb = rpcstub.mailbox(rpcdef.rpcStaticServer.DbCtl, sid, 0)
        ctl_cache[sid] = mb
    end
    return mb
end

local function check(err, ...)
    if err ~= "" then error(err, 0) end
    return ...
end

-- The raw operations: bytes in, bytes out, here or on the DB node.
local raw = {}

function raw.load(co, coll, key)
    if core.has_store() then
        local id, err, kind = core.db_load(coll, key)
        return rpcco.await(co, id, err, kind)
    end
    local i, s = split(key)
    local value, version = check(db_ctl().load(coll, i, s))
    if value == nil then return nil, nil end
    return value, version
end

function raw.save(co, coll, key, bytes, expect, epoch, indexes)
    if core.has_store() then
        local id, err, kind = core.db_save(coll, key, bytes, expect_val(expect), epoch, indexes)
        return rpcco.await(co, id, err, kind)
    end
    local i, s = split(key)
    local list = {}
    for n, e in ipairs(indexes) do
        local iv, sv = split(e[2])
        list[n] = { name = e[1], ival = iv, sval = sv }
    end
    return check(db_ctl().save(coll, i, s, bytes, expect, epoch, list))
end

function raw.delete(co, coll, key, expect, epoch)
    if core.has_store() then
        local id, err, kind = core.db_delete(coll, key, expect_val(expect), epoch)
        return rpcco.await(co, id, err, kind)
    end
    local i, s = split(key)
    return check(db_ctl().delete(coll, i, s, expect, epoch))
end

-- -> { {key, bytes, version}, ... }
function raw.query(co, coll, index, value, limit)
    if core.has_store() then
        local id, err, kind = core.db_query(coll, index, value, limit)
        return rpcco.await(co, id, err, kind)
    end
    local i, s = split(value)
    local docs = check(db_ctl().query(coll, index, i, s, limit))
    local out = {}
    for n, d in ipairs(docs) do
        local k = d.ikey
        if k == nil then k = d.skey end
        out[n] = { k, d.value, d.version }
    end
    return out
end

function raw.epoch(co)
    if core.has_store() then
        local id, err, kind = core.db_epoch()
        return rpcco.await(co, id, err, kind)
    end
    return check(db_ctl().epoch())
end

-- The API ---------------------------------------------------------------------

function M.load(coll, key)
    local co = co_of("load")
    local c = coll_of("load", coll)
    check_key("load", c, key)
    local bytes, version = raw.load(co, coll, key)
    return unpack(c, bytes), version
end

local function save(what, co, c, key, value, expect, epoch, level)
    local bytes = pack(what, c, value, level + 1)
    if epoch ~= nil and (mtype(epoch) ~= "integer" or epoch < 0) then
        error("dbproxy." .. what .. ": epoch must be a non-negative integer", level + 1)
    end
    return raw.save(co, c.name, key, bytes, expect, epoch or 0, index_entries(c, value))
end

function M.save(coll, key, value, expect, epoch)
    local co = co_of("save")
    local c = coll_of("save", coll)
    check_key("save", c, key)
    -- (no tail call: pack's error names the caller's line)
    local version = save("save", co, c, key, value, expect_num("save", expect), epoch, 2)
    return version
end

function M.delete(coll, key, expect, epoch)
    local co = co_of("delete")
    local c = coll_of("delete", coll)
    check_key("delete", c, key)
    return raw.delete(co, coll, key, expect_num("delete", expect), epoch or 0)
end

function M.query(coll, index, value, limit)
    local co = co_of("query")
    local c = coll_of("query", coll)
    if c.index[index] == nil then
        error(string.format("dbproxy.query: collection %s has no index '%s'", coll, tostring(index)), 2)
    end
    if type(value) ~= "string" and mtype(value) ~= "integer" then
        error("dbproxy.query: an index value is an integer or a string, got " .. type(value), 2)
    end
    if limit ~= nil and (mtype(limit) ~= "integer" or limit < 1) then
        error("dbproxy.query: limit must be a positive integer", 2)
    end
    local out = {}
    for n, d in ipairs(raw.query(co, coll, index, value, limit or 1000)) do
        out[n] = { key = d[1], value = unpack(c, d[2]), version = d[3] }
    end
    return out
end

local function is_conflict(err)
    return type(err) == "string" and err:sub(1, 9) == "conflict:"
end

function M.update(coll, key, fn)
    local co = co_of("update")
    local c = coll_of("update", coll)
    check_key("update", c, key)
    if type(fn) ~= "function" then error("dbproxy.update: fn must be a function", 2) end
    local last
    for attempt = 1, M.RETRIES do
        if attempt > 1 then rpcco.sleep(math.random() * 0.005 * attempt) end
        local bytes, version = raw.load(co, coll, key)
        local value = unpack(c, bytes)
        local new = fn(value, version)
        if new == nil then return value, version end
        -- (a wrong value is the caller's error: raised at its line)
        local bytes2 = pack("update", c, new, 2)
        local ok, res = pcall(raw.save, co, coll, key, bytes2, version or 0, 0, index_entries(c, new))
        if ok then return new, res end
        if not is_conflict(res) then error(res, 0) end
        last = res
    end
    error(last, 0)
end

function M.epoch()
    return raw.epoch(co_of("epoch"))
end

-- DbCtl: the node that has a store serves it in the host (runtime/db.rs,
-- without Lua); a node without one that is called anyway (its type is
-- dbType, but its cluster entry has no store) answers this.
local Ctl = {}

local function no_store()
    return "no store: node " .. core.name() .. " has no store (it is not the DB node)"
end

function Ctl:load() return no_store(), nil, 0 end
function Ctl:save() return no_store(), 0 end
function Ctl:delete() return no_store(), false end
function Ctl:query() return no_store(), {} end
function Ctl:epoch() return no_store(), 0 end

--- Installs DbCtl (base.init calls it). sname: seed 000's argument, unused.
function M.init(sname)
    rpcdef.implements("DbCtl", Ctl)
end

return M
