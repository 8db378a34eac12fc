-- Timers: timer.after(secs, fn, ...), timer.every(secs, fn, ...), timer.cancel(h).
-- Each callback runs in its own coroutine, so it may make remote calls.
local core = require "luahost.core"
local rpcco = require "rpcco"

local M = {}

--- Calls fn(...) once after secs seconds. Returns a handle for timer.cancel.
function M.after(secs, fn, ...)
    assert(type(secs) == "number" and secs >= 0, "timer.after: secs must be a number >= 0")
    assert(type(fn) == "function", "timer.after: fn must be a function")
    local args = table.pack(...)
    local h = {}
    h.id = core.timer(secs)
    rpcco.on_timer(h.id, function()
        h.id = nil
        fn(table.unpack(args, 1, args.n))
    end)
    return h
end

--- Calls fn(...) every secs seconds until cancelled.
function M.every(secs, fn, ...)
    assert(type(secs) == "number" and secs > 0, "timer.every: secs must be a number > 0")
    assert(type(fn) == "function", "timer.every: fn must be a function")
    local args = table.pack(...)
    local h = {}
    local function tick()
        if h.cancelled then return end
        h.id = core.timer(secs)
        rpcco.on_timer(h.id, tick)
        fn(table.unpack(args, 1, args.n))
    end
    h.id = core.timer(secs)
    rpcco.on_timer(h.id, tick)
    return h
end

--- Stops a timer made by after or every.
function M.cancel(h)
    if h == nil then return end
    h.cancelled = true
    if h.id then rpcco.cancel_timer(h.id) end
end

return M
