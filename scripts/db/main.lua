-- DB node: owns the friend graph and who is online where.
require "friendmgr"
base.init("DB")
INFO("DB ready: %d players", FriendDB.count)
