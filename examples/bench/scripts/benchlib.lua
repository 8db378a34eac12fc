-- The load generator of `luahost bench`, in ordinary luahost Lua.
local core = require "luahost.core"
local rpcco = require "rpcco"

local M = {}

local function percentile(hist, total, p)
    local keys = {}
    for k in pairs(hist) do keys[#keys + 1] = k end
    table.sort(keys)
    local want, seen = math.ceil(total * p), 0
    for _, k in ipairs(keys) do
        seen = seen + hist[k]
        if seen >= want then return k end
    end
    return keys[#keys] or 0
end

-- Runs conc copies of worker(done) in their own coroutines; worker calls
-- done() when it ends. Returns a function that waits for all of them.
local function spawn(conc, worker)
    local me, finished = coroutine.running(), 0
    local function done()
        finished = finished + 1
        if finished == conc then rpcco.wakeup(me) end
    end
    for _ = 1, conc do rpcco.fork(worker, done) end
    return rpcco.wait
end

local function run_calls(mb, conc, payload, warm, secs)
    local now = core.now
    local arg = payload > 0 and string.rep("x", payload) or nil
    local start = now()
    local t_start, t_end = start + warm, start + warm + secs
    local hist, count = {}, 0
    local function worker(done)
        while true do
            local t0 = now()
            if arg then
                local b = mb.blob(arg)
                if #b ~= payload then error("echo returned " .. #b .. " bytes") end
            else
                local s, n = mb.hello("hello", 12345)
                if n ~= 12345 then error("bad echo") end
            end
            local t1 = now()
            if t1 >= t_end then break end
            if t0 >= t_start then
                local us = (t1 - t0) * 1e6 // 1
                hist[us] = (hist[us] or 0) + 1
                count = count + 1
            end
        end
        done()
    end
    local wait_all = spawn(conc, worker)
    rpcco.sleep(warm)
    INFO("BENCH measure start")
    wait_all()
    INFO("BENCH measure end")
    return string.format("rate=%.0f p50_us=%d p99_us=%d count=%d",
        count / secs, percentile(hist, count, 0.5), percentile(hist, count, 0.99), count)
end

local BATCH = 10000

local function run_sends(mb, conc, warm, secs)
    local now = core.now
    mb.reset()
    local start = now()
    local t_start, t_end = start + warm, start + warm + secs
    local sent, sent_at_start = 0, nil
    local function worker(done)
        while now() < t_end do
            for _ = 1, BATCH do mb.note(1) end
            sent = sent + BATCH
            local got = mb.count() -- barrier: every send before it has been counted
            if conc == 1 and got ~= sent then
                error(string.format("send lost: sent %d, receiver counted %d", sent, got))
            end
            if sent_at_start == nil and now() >= t_start then
                sent_at_start = got
                INFO("BENCH measure start")
            end
        end
        done()
    end
    spawn(conc, worker)()
    local elapsed = now() - t_start
    INFO("BENCH measure end")
    local got = mb.count()
    if got ~= sent then
        error(string.format("send lost: sent %d, receiver counted %d", sent, got))
    end
    return string.format("rate=%.0f p50_us=0 p99_us=0 count=%d", (sent - (sent_at_start or 0)) / elapsed, sent)
end

--- `bench db`: conc coroutines doing DBProxy saves (of a BenchRec under
--- one of KEYS keys) for secs seconds, then loads for secs seconds.
--- Returns "saves=<rate> loads=<rate>".
function M.db(conc, secs, keys)
    local function phase(op)
        local t_end = core.now() + secs
        local n, errors = 0, 0
        local rec = { n = 0, s = "a bench record of a few dozen bytes" }
        local function worker(done, w)
            local i = w
            while core.now() < t_end do
                i = i + conc
                local key = i % keys
                local ok
                if op == "save" then
                    rec.n = i
                    ok = pcall(DBProxy.save, "bench", key, rec)
                else
                    ok = pcall(DBProxy.load, "bench", key)
                end
                if ok then n = n + 1 else errors = errors + 1 end
            end
            done()
        end
        local me, finished = coroutine.running(), 0
        local function done()
            finished = finished + 1
            if finished == conc then rpcco.wakeup(me) end
        end
        local t0 = core.now()
        for w = 1, conc do rpcco.fork(worker, done, w) end
        rpcco.wait()
        if errors > 0 then error(string.format("bench db: %d %ss failed", errors, op)) end
        return n / (core.now() - t0)
    end
    local saves = phase("save")
    local loads = phase("load")
    return string.format("saves=%.0f loads=%.0f", saves, loads)
end

--- Runs one workload against the echo server and returns
--- "rate=<n> p50_us=<n> p99_us=<n> count=<n>".
function M.run(workload, conc, payload, secs, warm)
    local echo = router.list(ServerType.Echo)[1] or error("no Echo server online")
    local mb = base.global("Bench"):echo(echo)
    warm = warm or 0.5
    if workload == "send" then
        return run_sends(mb, conc, warm, secs)
    end
    return run_calls(mb, conc, payload, warm, secs)
end

return M
