-- Every node of the test cluster runs this: an Echo entity with handlers the
-- integration tests drive through NodeHandle::eval.
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

base.init(conf.NodeType)

--- The Echo stub aimed at server sid, whatever its type.
function to(sid)
    local info = router.node(sid)
    local echo = base.global("Echo")
    if not info then return rpcstub.mailbox(rpcdef.rpcA.Echo, sid, 1) end
    return echo[string.lower(info.type)](echo, sid)
end

--- sid of a node by name.
function sidOf(name)
    for _, n in ipairs(router.nodes()) do
        if n.name == name then return n.id end
    end
    error("no node " .. name)
end
