-- The caller side of `luahost bench`. Run as a process, it reads its
-- workload from LUAHOST_BENCH ("workload conc payload secs"), starts when the
-- Echo node is online, logs "BENCHDATA ..." and stops its process.
base.init("Caller")
bench = require "benchlib"

local spec = os.getenv("LUAHOST_BENCH")
if spec then
    local workload, conc, payload, secs = spec:match("^(%S+) (%d+) (%d+) ([%d.]+)$")
    assert(workload, "LUAHOST_BENCH must be 'workload conc payload secs'")
    local started = false
    EventMng:subscribe(Event.Server.Online, function(sid, tname)
        if tname ~= "Echo" or started then return end
        started = true
        local ok, res = pcall(bench.run, workload, tonumber(conc), tonumber(payload), tonumber(secs))
        if ok then
            INFO("BENCHDATA %s", res)
        else
            ERROR("BENCHFAIL %s", tostring(res))
        end
    end)
end
