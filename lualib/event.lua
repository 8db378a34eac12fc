-- Events inside one node: EventMng:subscribe/publish, and the names the host
-- publishes: Event.Server.Online/Offline with (sid, type name, node name), and
-- Event.Server.SendsLost with (sid, type name, node name, {[method] = count},
-- cause) for one-way sends to that node that will not be delivered, or were
-- written and never acknowledged (so may or may not have been handled).
local log = require "log"

local M = {}

M.Event = {
    Server = { Online = "Server.Online", Offline = "Server.Offline", SendsLost = "Server.SendsLost" },
}

local EventMng = {}
M.EventMng = EventMng

local handlers = {} -- event -> list of handlers

--- Calls fn(...) for every later publish of ev. Returns fn (for unsubscribe).
function EventMng:subscribe(ev, fn)
    assert(ev ~= nil, "EventMng:subscribe: event is nil")
    assert(type(fn) == "function", "EventMng:subscribe: handler must be a function")
    local list = handlers[ev]
    if not list then
        list = {}
        handlers[ev] = list
    end
    list[#list + 1] = fn
    return fn
end

--- Removes a handler added with subscribe.
function EventMng:unsubscribe(ev, fn)
    local list = handlers[ev]
    if not list then return end
    for i = #list, 1, -1 do
        if list[i] == fn then table.remove(list, i) end
    end
end

--- Calls every handler of ev with the arguments. A handler that raises is
--- logged with its traceback; the others still run.
function EventMng:publish(ev, ...)
    local list = handlers[ev]
    if not list then return end
    for _, fn in ipairs({ table.unpack(list) }) do
        local ok, err = xpcall(fn, debug.traceback, ...)
        if not ok then
            log.ERROR("event %s handler failed: %s", tostring(ev), err)
        end
    end
end

return M
