-- Echo's handlers, in a module of their own so that hot reload tests can
-- edit them.
local rpcco = require "rpcco"

local Echo = Global.Echo or {}
Global.Echo = Echo

local received = 0

function Echo:echo(s, n) return s, n end

function Echo:note(n, rids)
    received = received + n + #rids
end

function Echo:count() return received end

function Echo:fail(msg) error(msg) end

-- Visits the servers in path one after another (each a nested call) and
-- returns the trail of node names.
function Echo:nest(path)
    if #path == 0 then return conf.NodeName end
    local nxt = table.remove(path, 1)
    return conf.NodeName .. ">" .. to(nxt).nest(path)
end

function Echo:slow(secs)
    rpcco.sleep(secs)
    return true
end

function Echo:blob(b) return #b, b end

function Echo:sum(ps, m)
    local s = 0
    for _, p in ipairs(ps) do s = s + p.v end
    for _, v in pairs(m) do s = s + v end
    return s
end

function Echo:badresult() return 1000 end

return Echo
