-- Every node of the test cluster runs this: an Echo entity with handlers the
-- integration tests drive through NodeHandle::eval.
require "handlers"

base.init(conf.NodeType)
-- the test cluster's DB node is of type A (a_1, when its entry has a store)
DBProxy.dbType = "A"

-- The tests' eval snippets use these modules by name.
rpcco = require "rpcco"
timer = require "timer"
hotfix = require "hotfix"

--- The Echo stub aimed at server sid, whatever its type.
function to(sid)
    local info = router.node(sid)
    local echo = base.global("Echo")
    if not info then return rpcstub.mailbox(rpcdef.iface("A", "Echo"), sid, 1) end
    return echo[string.lower(info.type)](echo, sid)
end

--- sid of a node by name.
function sidOf(name)
    for _, n in ipairs(router.nodes()) do
        if n.name == name then return n.id end
    end
    error("no node " .. name)
end

-- With settings.StopFile, the node saves a line there when it stops
-- gracefully, after a call to a_1 (onStop handlers may make calls).
if conf.StopFile then
    base.onStop(function()
        local f = assert(io.open(conf.StopFile, "w"))
        f:write("saved by ", conf.NodeName)
        f:flush()
        local ok, s = pcall(to(sidOf("a_1")).echo, "bye", 0)
        f:write("; a_1 answered: ", ok and s or tostring(rpcco.errkind(s)))
        f:close()
    end)
end

-- Persistent heroes (tests/dbproxy.rs): Hero instances keep name and gold
-- in the heroes collection, flushed every conf.HeroInterval (default 0.5) s.
Hero = Hero or {}
declareObject(Hero, Entity, "Hero")
function Hero:__init() self.name, self.gold = "", 0 end
persist = require "persist"
persist.declare(Hero, { coll = "heroes", interval = tonumber(os.getenv("LUAHOST_TEST_HERO_INTERVAL")) or 0.5 })

-- With LUAHOST_TEST_HERO set (a node run as a process by the crash tests),
-- the node loads hero 1 once the DB node is online, sets its gold to 100,
-- flushes and says "FLUSHED 100"; then sets it to 200 without a flush and
-- says "CHANGED 200".
if os.getenv("LUAHOST_TEST_HERO") then
    rpcco.fork(function()
        while not pcall(DBProxy.epoch) do rpcco.sleep(0.05) end
        local h = Hero.new(conf.ServerID, 0, 1)
        persist.load(h, 1)
        h.name, h.gold = "one", 100
        persist.flush(h)
        io.stderr:write("FLUSHED 100\n")
        h.gold = 200
        io.stderr:write("CHANGED 200\n")
    end)
end
