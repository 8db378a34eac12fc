-- Hall node: players live here while online; it tells their friends.
require "friendmgr"
base.init("Hall")
