-- The schema of the sample game: server types, global entities, structs and
-- the methods each server type serves. rpcdef.init derives method ids and the
-- digests from it; every node loads the same file.
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
        },
        Hall = {
            hall_login = { args = { { "rid", "int48" } }, results = { { "told", "int32" } } },
            hall_logout = { args = { { "rid", "int48" } }, results = { { "told", "int32" } } },
            hall_notifyFriendOnlineStatus = {
                args = { { "rid", "int48" }, { "online", "bool" }, { "rids", "array<int48>" } },
            },
        },
    },
}

return entitydef
