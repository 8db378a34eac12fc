-- DB node: owns the store (players and friend lists) and who is online where.
require "friendmgr"
base.init("DB")
require("rpcco").fork(function()
    local n = Global.FriendMgr.seed()
    if n > 0 then
        INFO("DB ready: %d players created", n)
    else
        INFO("DB ready: players loaded from the store")
    end
end)
