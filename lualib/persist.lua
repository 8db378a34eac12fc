-- Persistent entities: an entity class declares which of its fields live in
-- a DBProxy collection; an entity claims its record when it is loaded, and
-- its changes are written back every `interval` seconds (spread over the
-- interval, not all at once), when it is released (logout) and when the
-- node stops gracefully. An entity whose persistent fields did not change
-- since its last write writes nothing (its record's MessagePack bytes are
-- compared with those written last).
--
--   persist.declare(Player, { coll = "players", interval = 30, fields = {...} })
--       fields: the persistent fields; by default those of the collection's
--       struct (a collection of msgpack documents must list them)
--   persist.load(entity, key)   -> true if a record was there (its fields are
--       copied into the entity), false if not (the entity's fields are
--       written as the first record)
--   persist.flush(entity)       -> true if something was written
--   persist.release(entity)     flushes and stops tracking (logout)
--   persist.flushAll()          flushes every entity (onStop does it)
--   persist.epoch(entity), persist.version(entity)
--
-- Ownership: load claims the record with a new epoch from the DB node
-- (DBProxy.epoch) and writes it at once with that epoch; every later write
-- carries it. When another node loads the same record (the player moved, or
-- this node was declared dead and replaced), its epoch is higher and this
-- node's writes fail with "stale epoch": the entity is dropped from
-- tracking, entity:onPersistLost(err) is called if it has one, and the
-- successor's state is never overwritten. A crash loses at most the changes
-- of the last interval.
--
-- All of these run in coroutines (handlers already do).
local core = require "luahost.core"
local rpcdef = require "rpcdef"
local rpcco = require "rpcco"
local dbproxy = require "dbproxy"
local timer = require "timer"
local log = require "log"

local M = {}

--- How many ticks an interval is cut into: each tracked entity is flushed
--- on one of them (round robin), so a node's writes are spread evenly.
M.SLOTS = 10

local classes = {} -- class table -> config
local tracked = {} -- entity -> { cfg, key, epoch, version, last, slot, busy, again, waiters }
local count = 0
local next_slot = 0
local tickers = {} -- interval -> { timer, tick }

local function fields_of(cfg)
    if cfg.fields then return cfg.fields end
    local c = rpcdef.collections[cfg.coll]
    local st = c and rpcdef.structs[c.value]
    if not st then return nil end
    local out = {}
    for i, f in ipairs(st) do out[i] = f[1] end
    return out
end

local function record_of(cfg, e)
    local rec = {}
    for _, f in ipairs(fields_of(cfg)) do rec[f] = e[f] end
    return rec
end

local function flush_slot(interval, slot)
    for e, t in pairs(tracked) do
        if t.cfg.interval == interval and t.slot == slot and not t.busy then
            rpcco.fork(function()
                local ok, err = pcall(M.flush, e)
                if not ok then log.WARN("persist: flushing %s/%s failed: %s", t.cfg.coll, tostring(t.key), tostring(err)) end
            end)
        end
    end
end

local function ensure_ticker(interval)
    if tickers[interval] then return end
    local tk = { tick = 0 }
    tk.timer = timer.every(interval / M.SLOTS, function()
        tk.tick = (tk.tick + 1) % M.SLOTS
        flush_slot(interval, tk.tick)
    end)
    tickers[interval] = tk
end

-- Checks cfg against the schema (once it is loaded); raises at level.
local function check(cfg, level)
    local c = rpcdef.collections[cfg.coll]
    if c == nil then error("persist: no collection '" .. cfg.coll .. "' in entitydef.Collection", level + 1) end
    cfg.value = c.value
    if fields_of(cfg) == nil then
        error("persist: collection " .. cfg.coll .. " holds no struct: list the fields (cfg.fields)", level + 1)
    end
    cfg.checked = true
end

--- Declares that instances of class cls persist in collection cfg.coll.
--- (It may come before base.init: the collection is then checked when the
--- first entity is loaded.)
function M.declare(cls, cfg)
    if type(cls) ~= "table" then error("persist.declare: cls must be a class table", 2) end
    if type(cfg) ~= "table" or type(cfg.coll) ~= "string" then
        error("persist.declare: cfg.coll must name a collection", 2)
    end
    local interval = cfg.interval or 30
    if type(interval) ~= "number" or interval <= 0 then error("persist.declare: interval must be > 0 seconds", 2) end
    local conf = { coll = cfg.coll, interval = interval, fields = cfg.fields }
    if rpcdef.Digi ~= 0 then check(conf, 2) end
    classes[cls] = conf
end

local function cfg_of(e)
    local mt = getmetatable(e)
    while mt do
        if classes[mt] then return classes[mt] end
        local up = getmetatable(mt)
        mt = up and up.__index
        if type(mt) ~= "table" then mt = nil end
    end
    return nil
end

--- Loads entity e's record under key and claims it (see above). Returns
--- whether a record was there.
function M.load(e, key)
    local cfg = cfg_of(e)
    if cfg == nil then error("persist.load: the entity's class was not declared with persist.declare", 2) end
    if tracked[e] then error("persist.load: this entity is loaded already", 2) end
    if not cfg.checked then check(cfg, 2) end
    local epoch = dbproxy.epoch()
    local found, version
    for _ = 1, dbproxy.RETRIES do
        local value, ver = dbproxy.load(cfg.coll, key)
        if value ~= nil then
            for _, f in ipairs(fields_of(cfg)) do e[f] = value[f] end
        end
        local ok, res = pcall(dbproxy.save, cfg.coll, key, record_of(cfg, e), ver or false, epoch)
        if ok then
            found, version = value ~= nil, res
            break
        end
        -- (someone wrote between the load and the claim: load again)
        if type(res) ~= "string" or res:sub(1, 9) ~= "conflict:" then error(res, 0) end
    end
    if version == nil then error("conflict: persist.load: " .. cfg.coll .. "/" .. tostring(key) .. " kept changing", 0) end
    local bytes = core.pack(cfg.value, record_of(cfg, e))
    tracked[e] = { cfg = cfg, key = key, epoch = epoch, version = version, last = bytes, slot = next_slot }
    next_slot = (next_slot + 1) % M.SLOTS
    count = count + 1
    ensure_ticker(cfg.interval)
    return found
end

local function forget(e)
    if tracked[e] then
        tracked[e] = nil
        count = count - 1
    end
end

local function wake(t)
    local ws = t.waiters
    t.waiters = nil
    for _, co in ipairs(ws or {}) do rpcco.wakeup(co) end
end

--- Writes entity e's persistent fields if they changed since the last
--- write. Returns true if it wrote. One write per entity at a time: a flush
--- asked for while one is in flight waits for it and then writes what is
--- newer.
function M.flush(e)
    local t = tracked[e]
    if t == nil then return false end
    if t.busy then
        t.again = true
        t.waiters = t.waiters or {}
        t.waiters[#t.waiters + 1] = coroutine.running()
        rpcco.wait()
        return true
    end
    t.busy = true
    local wrote = false
    repeat
        t.again = false
        local rec = record_of(t.cfg, e)
        local bytes, err = core.pack(t.cfg.value, rec)
        if not bytes then
            t.busy = false
            wake(t)
            error("persist.flush: " .. t.cfg.coll .. ": " .. err, 2)
        end
        if bytes ~= t.last then
            local ok, res = pcall(dbproxy.save, t.cfg.coll, t.key, rec, nil, t.epoch)
            if not ok then
                t.busy = false
                wake(t)
                if type(res) == "string" and res:sub(1, 12) == "stale epoch:" then
                    forget(e)
                    log.WARN("persist: %s/%s was taken over by a newer owner; this copy is dropped: %s",
                        t.cfg.coll, tostring(t.key), res)
                    if e.onPersistLost then e:onPersistLost(res) end
                end
                error(res, 0)
            end
            t.version, t.last, wrote = res, bytes, true
        end
    until not t.again
    t.busy = false
    wake(t)
    return wrote
end

--- Flushes entity e and stops tracking it (logout).
function M.release(e)
    local t = tracked[e]
    if t == nil then return false end
    local ok, res = pcall(M.flush, e)
    forget(e)
    if not ok then error(res, 0) end
    return res
end

--- Flushes every tracked entity at once and waits for them all. Returns
--- how many wrote and how many failed.
function M.flushAll()
    local me = coroutine.running()
    local pending, wrote, failed = 0, 0, 0
    local list = {}
    for e in pairs(tracked) do list[#list + 1] = e end
    for _, e in ipairs(list) do
        pending = pending + 1
        rpcco.fork(function()
            local ok, res = pcall(M.flush, e)
            if not ok then
                failed = failed + 1
                log.WARN("persist: flushing %s failed: %s", tostring(tracked[e] and tracked[e].key), tostring(res))
            elseif res then
                wrote = wrote + 1
            end
            pending = pending - 1
            if pending == 0 then rpcco.wakeup(me) end
        end)
    end
    if pending > 0 then rpcco.wait() end
    return wrote, failed
end

--- The epoch entity e writes with, or nil when it is not tracked.
function M.epoch(e)
    return tracked[e] and tracked[e].epoch
end

--- The version of e's record as last written by this node, or nil.
function M.version(e)
    return tracked[e] and tracked[e].version
end

--- How many entities are tracked.
function M.count()
    return count
end

-- on a graceful stop, everything changed is written (after the game's own
-- onStop handlers, so what they change is written too)
local installed = false
function M.init()
    if installed then return end
    installed = true
    rpcco.on_stop_last(function()
        if count == 0 then return end
        local wrote, failed = M.flushAll()
        log.INFO("persist: stop: %d entities written, %d failed", wrote, failed)
    end)
end

return M
