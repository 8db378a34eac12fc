-- base.init(sname): the start-up sequence of seed 000.
local core = require "luahost.core"
local rpcdef = require "rpcdef"
local rpcstub = require "rpcstub"
local rpcco = require "rpcco"
local router = require "router"
local entity = require "entity"
local event = require "event"
local hotfix = require "hotfix"
local log = require "log"

local M = {}

--- Monotonic seconds since the node started (never goes back): for
--- durations and deadlines.
M.now = core.now
--- Wall-clock time: seconds since 1970-01-01 UTC, with a fraction.
M.time = core.time

local globals = {} -- this node's global entities by class name (base.global)

--- The System interface every node serves.
local System = {}
function System:ping(t) return t end

local function createGlobalEntity(classname, eid)
    local cls = Global[classname]
    if cls == nil then
        cls = {}
        Global[classname] = cls
    end
    if not cls.new then
        entity.declareObject(cls, entity.Entity)
    end
    log.LOG("create global entity [%s, %d]", classname, eid)
    local e = cls.new(conf.ServerID, 0, eid)
    -- ghost mailboxes per server type: fm:hall(sid).method(...). Each sid
    -- gets its own mailbox, so one kept across a yield still aims where it did.
    for tname in pairs(rpcdef.ServerType) do
        local sname = string.lower(tname)
        local ghosts = string.format("__%sghost", sname)
        -- the interface table lives in rpcdef (refilled in place by a schema
        -- reload), so methods added later reach existing ghosts
        local iface = rpcdef.iface(tname, classname)
        e[ghosts] = {}
        if cls[sname] ~= nil then
            log.WARN("%s defines '%s', so %s:%s(sid) is not a ghost mailbox; use base.ghost(e, %q, sid)",
                classname, sname, classname, sname, tname)
        else
            e[sname] = function(self, sid)
                local cache = rawget(self, ghosts)
                local m = cache[sid]
                if m == nil then
                    if sid == nil then error("no server id given to " .. sname .. "(sid)", 2) end
                    m = rpcstub.mailbox(iface, sid, eid)
                    cache[sid] = m
                end
                return m
            end
        end
    end
    return e
end

local function initGlobalEntity()
    for classname, eid in pairs(rpcdef.GlobalEntity) do
        local e = createGlobalEntity(classname, eid)
        entity.Entity.set(eid, e)
        globals[classname] = e
    end
end

--- The ghost mailbox of entity e for server type tname aimed at server
--- sid: the same as e:hall(sid) for tname "Hall".
function M.ghost(e, tname, sid)
    local cache = rawget(e, string.format("__%sghost", string.lower(tname)))
    if not cache then error("no server type " .. tostring(tname), 2) end
    local m = cache[sid]
    if m == nil then
        local classname
        for k, v in pairs(rpcdef.GlobalEntity) do
            if v == e.eid then classname = k end
        end
        m = rpcstub.mailbox(rpcdef.iface(tname, classname), sid, e.eid)
        cache[sid] = m
    end
    return m
end

--- Registers fn to run when the node stops gracefully (SIGTERM or Ctrl-C
--- for `luahost run` and `up`, NodeHandle::stop): after the calls being
--- served have finished (or stop_grace passed), in a coroutine, so it may
--- make calls (to nodes that are not stopping themselves). Handlers run in
--- the order registered. A second stop skips them.
function M.onStop(fn)
    rpcco.on_stop(fn)
end

--- The global entity of class classname on this node.
function M.global(classname)
    return globals[classname] or error("no global entity " .. tostring(classname), 2)
end

local function onServerOnline(sid, tname, name)
    log.LOG("server online: %s (%s, sid %d)", name, tname, sid)
end

local function onServerOffline(sid, tname, name)
    log.LOG("server offline: %s (%s, sid %d)", name, tname, sid)
end

--- Starts the node as a server of type sname: schema, stubs, System,
--- global entities, Online/Offline, registration. Scripts call it once from
--- their main file, after defining their Global classes.
function M.init(sname)
    assert(sname, "base.init needs the server type name")
    local entitydef = require "entitydef"
    local sty = entitydef.ServerType[sname]
    if not sty then
        error(string.format("base.init(%q): ServerType in entitydef has no such type", sname), 2)
    end
    if sname ~= conf.NodeType then
        error(string.format("base.init(%q) on node %s, whose type in the cluster file is %s",
            sname, conf.NodeName, tostring(conf.NodeType)), 2)
    end
    math.randomseed(math.floor(core.time() * 1000) + conf.ServerID)
    conf.ServerTypeName = sname
    conf.ServerType = sty

    rpcdef.init(entitydef)
    -- the schema is data: a changed entitydef.lua is checked and applied
    -- by rpcdef.init (or the reload refused), then replaces the old one
    hotfix.data("entitydef", function(def) return rpcdef.init(def) end)
    log.INFO("Rpc version: %08x, client version: %08x", rpcdef.Digi, rpcdef.ClientDigi)
    rpcdef.setup(sname)
    rpcstub.setup()
    router.init(sname)
    rpcco.init()

    rpcdef.implements("System", System)
    require("gate").init()
    require("dbproxy").init(sname)
    require("persist").init()
    initGlobalEntity()
    event.EventMng:subscribe(event.Event.Server.Online, onServerOnline)
    event.EventMng:subscribe(event.Event.Server.Offline, onServerOffline)
    local ok, err = core.register(rpcdef.ServerType)
    if not ok then error(err, 2) end
    hotfix.snapshot()
end

return M
