-- Picking servers: by consistent hash, at random, as lists; and sending to
-- several (seed 002's SendOne / SendByType / SendByID / SendAll).
local core = require "luahost.core"
local raise = require("rpcco").raise

local M = {}

--- The live server of type stype that owns key (integer or string), by
--- consistent hash: only keys of a server that comes or goes move. nil if
--- none is live.
M.route = core.route
--- A live server of type stype chosen at random, or nil.
M.random = core.random
--- The live servers of type stype (sorted ids).
M.list = core.list
--- Every live server (this node included).
M.all = core.all
--- True when server sid is live.
M.isLive = core.live

--- The cluster-file name of server sid (e.g. "hall_1"), or its id as text.
function M.nodeName(sid)
    local n = sid and core.node(sid)
    return n and n.name or tostring(sid)
end

--- Sets the load figure this node publishes (with ZooKeeper, in its znode;
--- other nodes read it as router.node(sid).load).
M.setLoad = core.set_load

--- What is known of server sid: {name=, type=, id=, addr=, load=}, or nil.
M.node = core.node
--- Every node of the cluster file, live or not (list of M.node tables).
M.nodes = core.nodes

--- Re-reads the cluster file now (it is also re-read when it changes on
--- disk). Returns a summary of what changed; raises if the file is broken,
--- in which case the previous cluster stays in force.
function M.reload()
    local summary, err = core.reload_cluster()
    if not summary then error(err, 2) end
    return summary
end

--- Seed 000 calls it from base.init; routing state lives in the host.
function M.init() end

-- level: how far up the user's call is from send_to
local function send_to(level, sid, iface, eid, method, ...)
    local m = iface[method]
    if m == nil then error("no method '" .. tostring(method) .. "' in the interface", level) end
    -- wait = false: a call (nothing here waits for its reply) is refused by the host
    local ok, err, kind = core.request(sid, eid, m.id, false, ...)
    if not ok then raise(err, level, kind) end
end

--- Sends iface.method(...) to entity eid on server sid if it is live;
--- returns whether it was sent.
function M.sendById(sid, iface, eid, method, ...)
    if not core.live(sid) then return false end
    send_to(3, sid, iface, eid, method, ...)
    return true
end

--- Sends to one live server of stype chosen at random; returns its sid or nil.
function M.sendOne(stype, iface, eid, method, ...)
    local sid = core.random(stype)
    if sid then send_to(3, sid, iface, eid, method, ...) end
    return sid
end

--- Sends to every live server of stype (this node left out when
--- excludeSelf); returns how many were sent.
local function by_type(level, stype, excludeSelf, iface, eid, method, ...)
    local me, n = core.sid(), 0
    for _, sid in ipairs(core.list(stype)) do
        if not (excludeSelf and sid == me) then
            send_to(level + 1, sid, iface, eid, method, ...)
            n = n + 1
        end
    end
    return n
end

function M.sendByType(stype, excludeSelf, iface, eid, method, ...)
    local n = by_type(3, stype, excludeSelf, iface, eid, method, ...)
    return n
end

--- Sends method of entity class cname to every live server whose type
--- implements it (rpcdef.iface(Type, cname)); returns how many were sent.
function M.sendAll(excludeSelf, cname, eid, method, ...)
    local rpcdef = require "rpcdef"
    local n = 0
    for tname, stype in pairs(rpcdef.ServerType) do
        local iface = rpcdef.iface(tname, cname)
        if iface[method] then
            n = n + by_type(3, stype, excludeSelf, iface, eid, method, ...)
        end
    end
    return n
end

return M
