-- DBProxy: the documents of this node's store (its cluster entry has
-- `store = { sqlite = "game.db" }`). Every function runs inside a coroutine
-- (handlers already do; elsewhere use rpcco.fork): it suspends only that
-- coroutine until the database answers, like a remote call.
--
--   db.load(coll, key)                  -> value | nil, version | nil
--   db.save(coll, key, value, expect)   -> version
--       expect: nil (write whatever is there), false (only if absent),
--       or the version loaded (only if still that one)
--   db.delete(coll, key, expect)        -> true if there was a document
--   db.update(coll, key, fn)            -> new value, version
--       fn(value | nil, version | nil) -> new value; saved only if nobody
--       wrote in between, else loaded and fn run again (at most
--       db.RETRIES times, then "conflict: ..." is raised)
--
-- Keys are integers or strings; values are Lua strings (bytes) in this first
-- step. Errors are raised with their kind first: "conflict: ...",
-- "stale epoch: ...", "busy: ...", "closed: ...", "backend: ...",
-- "no store: ...".
local core = require "luahost.core"
local rpcco = require "rpcco"

local M = {}

M.RETRIES = 5

local running = coroutine.running

local function co_of(what)
    local co, main = running()
    if main then error("dbproxy." .. what .. " must run inside a coroutine: handlers already do; elsewhere use rpcco.fork", 3) end
    return co
end

local function check_value(what, value)
    if type(value) ~= "string" then
        error("dbproxy." .. what .. ": value must be a string, got " .. type(value), 3)
    end
end

function M.load(coll, key)
    local co = co_of("load")
    local id, err, kind = core.db_load(coll, key)
    return rpcco.await(co, id, err, kind)
end

function M.save(coll, key, value, expect)
    local co = co_of("save")
    check_value("save", value)
    local id, err, kind = core.db_save(coll, key, value, expect)
    return rpcco.await(co, id, err, kind)
end

function M.delete(coll, key, expect)
    local co = co_of("delete")
    local id, err, kind = core.db_delete(coll, key, expect)
    return rpcco.await(co, id, err, kind)
end

local function is_conflict(err)
    return type(err) == "string" and err:sub(1, 9) == "conflict:"
end

function M.update(coll, key, fn)
    co_of("update")
    local last
    for _ = 1, M.RETRIES do
        local value, version = M.load(coll, key)
        local new = fn(value, version)
        check_value("update", new)
        local ok, res = pcall(M.save, coll, key, new, version or false)
        if ok then return new, res end
        if not is_conflict(res) then error(res, 0) end
        last = res
    end
    error(last, 0)
end

return M
