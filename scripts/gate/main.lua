-- Gate node: simulated players log in and out; router.route picks each
-- player's Hall by consistent hash of the role id.
local timer = require "timer"

base.init("Gate")

local fm = base.global("FriendMgr")
local online = {}
local first, last = 1001, 1020

local function tick()
    local halls = router.list(ServerType.Hall)
    if #halls == 0 or not router.route(ServerType.DB, 0) then
        INFO("waiting for Hall and DB servers")
        return
    end
    local rid = math.random(first, last)
    local sid = router.route(ServerType.Hall, rid)
    local name = router.nodeName(sid)
    if online[rid] then
        online[rid] = nil
        local told = fm:hall(sid).hall_logout(rid)
        INFO("player %d logged out of %s (%d friends online)", rid, name, told)
    else
        online[rid] = sid
        INFO("player %d logs in: router.route(Hall, %d) chose %s", rid, rid, name)
        local told = fm:hall(sid).hall_login(rid)
        INFO("player %d is on %s; %d friends online were told", rid, name, told)
    end
end

timer.every(conf.DemoTick or 0.3, function()
    local ok, err = pcall(tick)
    if not ok then WARN("tick failed: %s", err) end
end)
