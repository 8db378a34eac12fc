-- The Hall of `luahost bench gate-idle` / `gate-rtt`: one Player entity per
-- client, whose echo answers what it is given.
local gate = require "gate"

Player = {}
declareObject(Player, Entity, "Player")

local next_eid = 1000

function Player:__init(account)
    self.account = account
end

function Player:echo(s, n) return s, n end

gate.onLogin(function(client, old)
    if old then return old end
    next_eid = next_eid + 1
    local p = Player.new(conf.ServerID, 0, next_eid, client.account)
    Entity.set(p.eid, p)
    return p
end)

base.init("Hall")
