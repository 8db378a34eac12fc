-- Hall node: players live here while online; it tells their friends.
require "friendmgr"
local player = require "player"
base.init("Hall")
player.init()
