-- FriendMgr as the DB node serves it: the friend lists live in the DB node's
-- store (the friends collection, through DBProxy), who is online where in
-- memory (it is rebuilt as players log in again).
local FriendMgr = Global.FriendMgr or {}
Global.FriendMgr = FriendMgr

Online = Online or {} -- rid -> the sid of the Hall it is online on

local FIRST, LAST = 1001, 1020

--- Stores the demo's fixed friend graph unless it is there already:
--- players 1001..1020, each a friend of the next one and of the one five
--- further on (both ways). Returns how many players were created.
function FriendMgr.seed()
    if DBProxy.load("friends", FIRST) ~= nil then return 0 end
    local lists = {}
    for rid = FIRST, LAST do lists[rid] = {} end
    local function link(a, b)
        if lists[a] and lists[b] then
            table.insert(lists[a], b)
            table.insert(lists[b], a)
        end
    end
    for rid = FIRST, LAST do
        link(rid, rid + 1)
        link(rid, rid + 5)
    end
    local n = 0
    for rid = FIRST, LAST do
        -- (false: only where there is nothing yet)
        if pcall(DBProxy.save, "friends", rid, { rid = rid, friends = lists[rid] }, false) then n = n + 1 end
    end
    return n
end

local function friends_of(rid)
    local rec = DBProxy.load("friends", rid)
    if rec == nil then error("no player " .. rid) end
    return rec.friends
end

function FriendMgr:db_setOnline(rid, hall)
    local friends = friends_of(rid)
    Online[rid] = (hall ~= 0) and hall or nil
    local out = {}
    for _, f in ipairs(friends) do
        local where = Online[f]
        if where then out[#out + 1] = { rid = f, hall = where } end
    end
    return out
end

function FriendMgr:db_getFriends(rid)
    local out = {}
    for _, f in ipairs(friends_of(rid)) do out[#out + 1] = { rid = f, hall = Online[f] or 0 } end
    return out
end

-- adds b to a's list; false when a is no player or b is on it already
local function add(a, b)
    local added = false
    DBProxy.update("friends", a, function(rec)
        added = false
        if rec == nil then return nil end
        for _, f in ipairs(rec.friends) do
            if f == b then return nil end
        end
        table.insert(rec.friends, b)
        added = true
        return rec
    end)
    return added
end

function FriendMgr:db_addFriend(a, b)
    if a == b then return false end
    if DBProxy.load("friends", a) == nil or DBProxy.load("friends", b) == nil then return false end
    local ok = add(a, b)
    add(b, a)
    return ok
end

-- Players on a Hall that went away are offline.
if not FriendMgr.watching then
    FriendMgr.watching = true
    EventMng:subscribe(Event.Server.Offline, function(sid, tname, name)
        if tname ~= "Hall" then return end
        local n = 0
        for rid, hall in pairs(Online) do
            if hall == sid then
                Online[rid] = nil
                n = n + 1
            end
        end
        if n > 0 then WARN("%s went offline: %d players on it are offline now", name, n) end
    end)
end

return FriendMgr
