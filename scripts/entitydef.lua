-- The schema of the sample game: server types, global entities, structs, the
-- methods each server type serves (those marked `client = true` clients may
-- call too) and the methods clients implement (an entity class's Client
-- section). rpcdef.init derives method ids, client ids and the digests from
-- it; every node loads the same file.
local entitydef = {}

entitydef.ServerType = {
    Router = 1,
    DB = 2,
    Gate = 3,
    Hall = 4,
}

entitydef.GlobalEntity = {
    FriendMgr = 1,
}

entitydef.Struct = {
    FriendPlace = { { "rid", "int48" }, { "hall", "uint32" } },
    -- a player's friends, as the DB node keeps them
    FriendList = { { "rid", "int48" }, { "friends", "array<int48>" } },
    -- what a Hall keeps of a player (a persistent entity: player.lua)
    PlayerRec = { { "rid", "int48" }, { "logins", "int32" }, { "lastLogin", "int64" } },
}

-- What DBProxy stores (the DB node's store: store = { sqlite = ... } in the
-- cluster file).
entitydef.Collection = {
    friends = { key = "int64", value = "FriendList", index = { byFriend = "friends" } },
    players = { key = "int64", value = "PlayerRec" },
}

entitydef.Static = {
    System = {
        Server = { ping = { args = { { "t", "int64" } }, results = { { "t", "int64" } } } },
        Client = { pong = { args = { { "t", "int64" } } } },
    },
}

entitydef.Entity = {
    FriendMgr = {
        DB = {
            -- marks rid online on hall (0 = offline); returns its friends that are online
            db_setOnline = {
                args = { { "rid", "int48" }, { "hall", "uint32" } },
                results = { { "friends", "array<FriendPlace>" } },
            },
            -- every friend of rid, with the hall each is online on (0: offline)
            db_getFriends = { args = { { "rid", "int48" } }, results = { { "friends", "array<FriendPlace>" } } },
            -- makes a and b friends; false when either is no player or they already are
            db_addFriend = { args = { { "a", "int48" }, { "b", "int48" } }, results = { { "ok", "bool" } } },
        },
        Hall = {
            hall_login = { args = { { "rid", "int48" } }, results = { { "told", "int32" } } },
            hall_logout = { args = { { "rid", "int48" } }, results = { { "told", "int32" } } },
            hall_notifyFriendOnlineStatus = {
                args = { { "rid", "int48" }, { "online", "bool" }, { "rids", "array<int48>" } },
            },
        },
    },
    -- A player logged in through a Gate; its entity lives on a Hall.
    Player = {
        Hall = {
            -- `client = true`: the player's client may call it (through the Gate)
            hall_getFriends = { results = { { "friends", "array<FriendPlace>" } }, client = true },
            hall_addFriend = { args = { { "rid", "int48" } }, results = { { "ok", "bool" } }, client = true },
            -- server-only: no client can call it
            hall_kick = { args = { { "reason", "string" } } },
        },
        -- what the client implements: pushes from the server (one-way)
        Client = {
            onFriendOnline = { args = { { "rid", "int48" }, { "online", "bool" } } },
            onNotice = { args = { { "text", "string" } } },
        },
    },
}

return entitydef
