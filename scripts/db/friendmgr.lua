-- FriendMgr as the DB node serves it.
local FriendMgr = Global.FriendMgr or {}
Global.FriendMgr = FriendMgr

FriendDB = FriendDB or { friends = {}, online = {}, count = 0 }

-- A fixed friend graph: players 1001..1020, each a friend of the next one and
-- of the one five further on (both ways).
if FriendDB.count == 0 then
    local first, last = 1001, 1020
    for rid = first, last do FriendDB.friends[rid] = {} end
    local function link(a, b)
        if FriendDB.friends[a] and FriendDB.friends[b] then
            table.insert(FriendDB.friends[a], b)
            table.insert(FriendDB.friends[b], a)
        end
    end
    for rid = first, last do
        link(rid, rid + 1)
        link(rid, rid + 5)
    end
    FriendDB.count = last - first + 1
end

function FriendMgr:db_setOnline(rid, hall)
    local friends = FriendDB.friends[rid]
    if not friends then error("no player " .. rid) end
    FriendDB.online[rid] = (hall ~= 0) and hall or nil
    local out = {}
    for _, f in ipairs(friends) do
        local where = FriendDB.online[f]
        if where then out[#out + 1] = { rid = f, hall = where } end
    end
    return out
end

function FriendMgr:db_getFriends(rid)
    local friends = FriendDB.friends[rid]
    if not friends then error("no player " .. rid) end
    local out = {}
    for _, f in ipairs(friends) do out[#out + 1] = { rid = f, hall = FriendDB.online[f] or 0 } end
    return out
end

function FriendMgr:db_addFriend(a, b)
    local fa, fb = FriendDB.friends[a], FriendDB.friends[b]
    if not fa or not fb or a == b then return false end
    for _, f in ipairs(fa) do
        if f == b then return false end
    end
    table.insert(fa, b)
    table.insert(fb, a)
    return true
end

-- Players on a Hall that went away are offline.
if not FriendDB.watching then
    FriendDB.watching = true
    EventMng:subscribe(Event.Server.Offline, function(sid, tname, name)
        if tname ~= "Hall" then return end
        local n = 0
        for rid, hall in pairs(FriendDB.online) do
            if hall == sid then
                FriendDB.online[rid] = nil
                n = n + 1
            end
        end
        if n > 0 then WARN("%s went offline: %d players on it are offline now", name, n) end
    end)
end

return FriendMgr
