-- The Router of `luahost bench call --topology router`: the host relays.
base.init("Router")
