-- Mailboxes: stubs whose methods encode and send. A method declared with
-- results is a call (returns them, or raises "timeout: ...", "node down:
-- ...", "no such node: ...", "remote error: ...", "busy: ..."); the others
-- are one-way.
--   local mb = rpcstub.mailbox(rpcdef.iface("Hall", "FriendMgr"), sid, eid)
--   mb.hall_notifyFriendOnlineStatus(rid, true, rids)
local core = require "luahost.core"
local rpcco = require "rpcco"

local M = {}

local core_request, timeout_of, await, own = core.request, rpcco.timeout_of, rpcco.await, rpcco.own_timeouts
local running = coroutine.running

local function removed(m)
    error(m.full .. " is no longer in the schema", 3)
end

-- Calls and sends alike: the host decides which from the schema (this is
-- rpcco.request written out, without its extra frame: a send returns at
-- once, a call waits in rpcco.await).
local function method_fn(mb, m, name)
    return function(...)
        local sid = rawget(mb, "__from")
        if sid == nil then error("mailbox has no server id for " .. m.full, 2) end
        if m.removed then removed(m) end
        local co, main = running()
        -- how long it may wait: false outside a coroutine, else nil (the
        -- cluster's call_timeout) unless rpcco.timeout says otherwise
        local wait = false
        if not main then
            wait = nil
            if own.n ~= 0 then wait = timeout_of(co) end
        end
        local id, err, kind = core_request(sid, mb.__eid, m.id, wait, ...)
        if id == 0 then return end
        return await(co, id, err, kind)
    end
end

local mt = {
    __index = function(mb, name)
        if type(name) == "string" and name:sub(1, 2) == "__" then return nil end
        local m = rawget(mb, "__iface")[name]
        if m == nil then
            error(string.format("no method '%s' in this mailbox's interface", tostring(name)), 2)
        end
        local f = method_fn(mb, m, name)
        rawset(mb, name, f)
        return f
    end,
}

--- A mailbox for entity eid (0 for static interfaces) on server sid, whose
--- methods are those of iface (a table from rpcdef, e.g. rpcdef.iface("Hall", "FriendMgr")).
function M.mailbox(iface, sid, eid)
    assert(type(iface) == "table", "rpcstub.mailbox: iface must be an interface table from rpcdef")
    return setmetatable({ __iface = iface, __from = sid, __eid = eid or 0 }, mt)
end

--- Seed 000 calls it after rpcdef.setup; nothing to prepare here.
function M.setup() end

return M
