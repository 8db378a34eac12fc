-- Every node of the Gate tests runs this. Halls keep a Player entity per
-- account; the Gate uses gate.lua's defaults (route by account to a Hall).
local gate = require "gate"
rpcco = require "rpcco"
gate_mod = gate

Player = {}
declareObject(Player, Entity, "Player")

-- what the tests read back
logins, losses = {}, {}
local next_eid = 1000

function Player:__init(account)
    self.account = account
end

function Player:echo(s, n) return s, n end
function Player:pair(p) return p.b .. ":" .. p.a end
function Player:fail(text) gate.fail(text) end
function Player:crash() local t = nil; return t.field end
function Player:slow(secs) rpcco.sleep(secs) return true end
function Player:secret() return "hidden" end
function Player:whoami() return self.account, conf.NodeName end
function Player:ping(n)
    for i = 1, n do self.client.onEvent("ping", i) end
end
function Player:handoff(sid, eid)
    self:giveClientTo(rpcstub.mailbox(rpcdef.iface("Hall", "Player"), sid, eid))
    return true
end
function Player:onClientGiven(client)
    given = (given or 0) + 1
end
function Player:onClientLost(reason)
    losses[#losses + 1] = self.account .. ":" .. reason
end

-- With verify = "lua" (tests/gate.rs custom_login) the token is a
-- ticket only this hook knows; with tokens it is not passed.
if conf.NodeType == "Gate" then
    gate.onVerify(function(account, addr, token)
        if token == nil then return true end
        return token == "open-sesame", "wrong ticket"
    end)
end

--- A Player not bound to any client yet (the heir of a handoff).
function makePlayer(eid, account)
    local p = Player.new(conf.ServerID, 0, eid, account)
    Entity.set(eid, p)
    return "ok"
end

if conf.NodeType == "Hall" then
    gate.onLogin(function(client, old)
        logins[#logins + 1] = client.account
        if old then return old end
        next_eid = next_eid + 1
        local p = Player.new(conf.ServerID, 0, next_eid, client.account)
        Entity.set(p.eid, p)
        return p
    end)
end

if conf.NodeType == "Gate" then
    -- the web login of tests/gateweb.rs: password "pw", anything else refused
    gate.onWebLogin(function(account, password, addr)
        if password == "pw" then return true end
        return false, "wrong password"
    end)
end

base.init(conf.NodeType)

--- Pushes n events to account's client (from a test's eval on its Hall).
function pushTo(account, n)
    local c = gate.client(account)
    if not c then return "no client" end
    for i = 1, n do c.onEvent("push", i) end
    return "ok"
end

--- sid of a node by name (the shared test helpers use it).
function sidOf(name)
    for _, n in ipairs(router.nodes()) do
        if n.name == name then return n.id end
    end
    error("no node " .. name)
end

--- Pushes n events of size bytes each to account's client (slow-reader test).
function pushBig(account, n, size)
    local c = gate.client(account)
    if not c then return "no client" end
    local s = string.rep("x", size)
    for i = 1, n do c.onEvent(s, i) end
    return "ok"
end
