-- What a node of tests/hosts.rs sees, for the test to read through eval:
-- Online/Offline events with their times, the outcomes of probe calls, and
-- steady traffic to every node it knows. `require "seen"` starts recording.
local rpcco = require "rpcco"

local M = {}

local t0 = base.now()
local events = {} -- { kind = "on"|"off", name =, t = seconds since t0 }

EventMng:subscribe(Event.Server.Online, function(_, _, name)
    events[#events + 1] = { kind = "on", name = name, t = base.now() - t0 }
end)
EventMng:subscribe(Event.Server.Offline, function(_, _, name)
    events[#events + 1] = { kind = "off", name = name, t = base.now() - t0 }
end)

--- Starts a new epoch: events and times from now on.
function M.mark()
    t0 = base.now()
    events = {}
    return true
end

--- The events since mark(), "on:name@ms,off:name@ms,...", in order.
function M.events()
    local t = {}
    for _, e in ipairs(events) do
        t[#t + 1] = string.format("%s:%s@%d", e.kind, e.name, math.floor(e.t * 1000))
    end
    return table.concat(t, ",")
end

--- Names of the live nodes of every type, sorted, "a_1,b_1,...".
function M.live()
    local t = {}
    for _, n in ipairs(router.nodes()) do
        if n.name ~= conf.NodeName and router.isLive(n.id) then t[#t + 1] = n.name end
    end
    table.sort(t)
    return table.concat(t, ",")
end

--- Names of every node known (live or not), sorted, with a count when one
--- appears more than once ("a_1,b_1x2,...").
function M.known()
    local count, names = {}, {}
    for _, n in ipairs(router.nodes()) do
        if not count[n.name] then names[#names + 1] = n.name end
        count[n.name] = (count[n.name] or 0) + 1
    end
    table.sort(names)
    for i, n in ipairs(names) do
        if count[n] > 1 then names[i] = n .. "x" .. count[n] end
    end
    return table.concat(names, ",")
end

--- router.route(B, k) for k = 1..n, comma-separated sids.
function M.routes(n)
    local t = {}
    for k = 1, n do t[#t + 1] = tostring(router.route(ServerType.B, k)) end
    return table.concat(t, ",")
end

local function sids(names)
    local t = {}
    for name in string.gmatch(names, "[^,]+") do t[#t + 1] = { name = name, sid = sidOf(name) } end
    return t
end

local probe = {}

--- Calls echo on each of the named nodes at once, each call allowed `secs`;
--- probe_result() tells how each ended.
function M.probe(names, secs)
    probe = {}
    local started = base.now()
    for i, n in ipairs(sids(names)) do
        probe[i] = { name = n.name }
        rpcco.fork(function()
            local ok, err = pcall(rpcco.timeout, secs, to(n.sid).echo, "probe", i)
            probe[i].kind = ok and "ok" or (rpcco.errkind(err) or tostring(err))
            probe[i].ms = math.floor((base.now() - started) * 1000)
        end)
    end
    return true
end

--- "name=kind@ms,..." once every probe call has ended, else "".
function M.probe_result()
    local t = {}
    for _, p in ipairs(probe) do
        if not p.kind then return "" end
        t[#t + 1] = string.format("%s=%s@%d", p.name, p.kind, p.ms)
    end
    return table.concat(t, ",")
end

local traffic = { run = false, ok = 0, errs = {}, max_ms = 0 }

--- Calls echo on each named node, one after another, every `period`
--- seconds until stop_traffic(), each call allowed `secs`; counts outcomes.
function M.traffic(names, period, secs)
    traffic = { run = true, ok = 0, errs = {}, max_ms = 0 }
    local mine = traffic
    local targets = sids(names)
    rpcco.fork(function()
        while mine.run do
            for i, n in ipairs(targets) do
                local t = base.now()
                local ok, err = pcall(rpcco.timeout, secs, to(n.sid).echo, "traffic", i)
                local ms = math.floor((base.now() - t) * 1000)
                if ms > mine.max_ms then mine.max_ms = ms end
                if ok then
                    mine.ok = mine.ok + 1
                else
                    local k = n.name .. ":" .. (rpcco.errkind(err) or tostring(err))
                    mine.errs[k] = (mine.errs[k] or 0) + 1
                end
            end
            rpcco.sleep(period)
        end
    end)
    return true
end

--- Stops the traffic; returns "ok=N max_ms=M errs=name:kind=count;...".
function M.stop_traffic()
    traffic.run = false
    local e = {}
    for k, v in pairs(traffic.errs) do e[#e + 1] = k .. "=" .. v end
    table.sort(e)
    return string.format("ok=%d max_ms=%d errs=%s", traffic.ok, traffic.max_ms, table.concat(e, ";"))
end

--- Calls slow(work) on the named node, allowing `secs`; "ok@ms" or
--- "<error kind>@ms" with the time the call took.
function M.timed(name, secs, work)
    local t = base.now()
    local ok, err = pcall(rpcco.timeout, secs, to(sidOf(name)).slow, work)
    local kind = ok and "ok" or (rpcco.errkind(err) or tostring(err))
    return string.format("%s@%d", kind, math.floor((base.now() - t) * 1000))
end

return M
