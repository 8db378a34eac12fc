-- FriendMgr as a Hall node serves it.
local FriendMgr = Global.FriendMgr or {}
Global.FriendMgr = FriendMgr

local function db()
    return router.route(ServerType.DB, 0) or error("no DB server online")
end

-- Tells every hall that has online friends of rid, one message per hall.
-- Returns how many friends are online.
local function tellFriends(self, rid, online)
    local friends = self:db(db()).db_setOnline(rid, online and conf.ServerID or 0)
    local byHall = {}
    for _, f in ipairs(friends) do
        byHall[f.hall] = byHall[f.hall] or {}
        table.insert(byHall[f.hall], f.rid)
    end
    for sid, rids in pairs(byHall) do
        if not router.isLive(sid) then goto continue end
        self:hall(sid).hall_notifyFriendOnlineStatus(rid, online, rpctype.Types.array.build("int48", rids))
        INFO("player %d %s: told %s about friends %s", rid, online and "online" or "offline",
            router.nodeName(sid), table.concat(rids, ","))
        ::continue::
    end
    return #friends
end

function FriendMgr:hall_login(rid)
    INFO("player %d logged in here", rid)
    return tellFriends(self, rid, true)
end

function FriendMgr:hall_logout(rid)
    INFO("player %d logged out", rid)
    return tellFriends(self, rid, false)
end

--- (rid, online): tells rid's online friends, wherever they are (player.lua).
function FriendMgr.tellFriends(rid, online)
    return tellFriends(base.global("FriendMgr"), rid, online)
end

function FriendMgr:hall_notifyFriendOnlineStatus(rid, online, rids)
    INFO("friends %s hear that %d is %s", table.concat(rids, ","), rid, online and "online" or "offline")
    -- each friend's client gets a push
    for _, f in ipairs(rids) do
        local p = Entity.get(f)
        if p and p.client then p.client.onFriendOnline(rid, online) end
    end
end

return FriendMgr
