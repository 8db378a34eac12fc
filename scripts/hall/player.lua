-- Players: a game client logged in through a Gate is bound to a Player
-- entity on the Hall that router.route(ServerType.Hall, account) picks. The
-- player's friends hear of it through FriendMgr (friendmgr.lua), and the
-- client through pushes (player.client.onFriendOnline). A Player is a
-- persistent entity: its record (logins, last login) is loaded from the DB
-- node when it logs in, written back every 10 s if it changed, and when it
-- leaves.
local gate = require "gate"
local persist = require "persist"

Player = Player or {}
declareObject(Player, Entity, "Player")
persist.declare(Player, { coll = "players", interval = 10 })

local fm -- the FriendMgr global entity (base.global, after base.init)

function Player:__init(rid)
    self.rid = rid
    self.logins = 0
    self.lastLogin = 0
end

local function db()
    return router.route(ServerType.DB, 0) or gate.fail("the friend service is not online")
end

-- the client may call these (client = true in entitydef)
function Player:hall_getFriends()
    return fm:db(db()).db_getFriends(self.rid)
end

function Player:hall_addFriend(rid)
    local ok = fm:db(db()).db_addFriend(self.rid, rid)
    if ok then INFO("player %d and %d are friends now", self.rid, rid) end
    return ok
end

-- server-only
function Player:hall_kick(reason)
    if self.client then gate.kick(self.client, reason) end
end

function Player:onClientLost(reason)
    INFO("player %d left (%s)", self.rid, reason)
    Entity.remove(self.eid)
    local saved, why = pcall(persist.release, self)
    if not saved then WARN("player %d: record not written: %s", self.rid, tostring(why)) end
    local ok, err = pcall(fm.tellFriends, self.rid, false)
    if not ok then WARN("player %d: friends not told: %s", self.rid, tostring(err)) end
end

-- A client of account "1001".."1020" logs in: its Player, kept when the
-- same account logs in again while it is here.
gate.onLogin(function(client, old)
    local rid = tonumber(client.account)
    if rid == nil or math.type(rid) ~= "integer" then return nil, "accounts are player ids such as 1001" end
    if old then
        INFO("player %d logged in here again (its previous session is replaced)", rid)
        return old
    end
    local p = Player.new(conf.ServerID, 0, rid, rid)
    local loaded, err = pcall(persist.load, p, rid)
    if not loaded then
        WARN("player %d: record not loaded: %s", rid, tostring(err))
        return nil, "the player's record could not be loaded"
    end
    p.logins = p.logins + 1
    p.lastLogin = os.time()
    Entity.set(rid, p)
    INFO("player %d logged in here (login #%d)", rid, p.logins)
    local ok, told = pcall(fm.tellFriends, rid, true)
    if ok then
        INFO("player %d: %d friends online were told", rid, told)
    else
        WARN("player %d: friends not told: %s", rid, tostring(told))
    end
    return p
end)

return {
    init = function() fm = base.global("FriendMgr") end,
}
