-- Gate node: game clients (bots, the browser page) connect here; gate.lua
-- binds each to a Player on the Hall that router.route(ServerType.Hall,
-- account) picks (the log says which).
local gate = require "gate"

base.init("Gate")

-- Demo accounts: the players of the friend graph, password "demo".
if gate.onWebLogin then
    gate.onWebLogin(function(account, password)
        local rid = tonumber(account)
        if not rid or rid < 1001 or rid > 1020 then return false, "demo players are 1001..1020" end
        if password ~= "demo" then return false, "the demo password is demo" end
        return true
    end)
end

gate.onVerify(function(account, addr)
    local rid = tonumber(account)
    if not rid then return false, "accounts are player ids such as 1001" end
    local sid = router.route(ServerType[gate.backendType], account)
    INFO("player %s from %s: router.route(Hall, %s) chose %s", account, tostring(addr), account,
        sid and router.nodeName(sid) or "no Hall")
    return true
end)
