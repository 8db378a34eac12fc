-- The friends demo through two Routers: the same nodes and scripts as
-- examples/friends, but the Gate and the Halls do not connect to each other;
-- every node connects to both Routers (and to the DB), and the Routers relay
-- their messages by destination. Kill one Router and the demo goes on
-- through the other. `luahost up examples/friends-router` runs it; players
-- log in through the Gate on 127.0.0.1:7310 (`luahost bot`, see README).
return {
    secret = "friends-demo-secret",
    topology = "router",
    call_timeout = 5,
    scripts = { "../../scripts" },
    lualib = "../../lualib",
    nodes = {
        router_1 = { type = "Router", id = 91, addr = "127.0.0.1:7119" },
        router_2 = { type = "Router", id = 92, addr = "127.0.0.1:7120" },
        db_1     = { type = "DB",     id = 1,  addr = "127.0.0.1:7111", store = { sqlite = "friends.db" } },
        gate_1   = { type = "Gate",   id = 21, addr = "127.0.0.1:7112",
                     gate = { tcp = "127.0.0.1:7310", ws = "127.0.0.1:7311",
                              http = "127.0.0.1:7390", web = "../friends/web", resume_grace = 5 } },
        hall_1   = { type = "Hall",   id = 11, addr = "127.0.0.1:7113" },
        hall_2   = { type = "Hall",   id = 12, addr = "127.0.0.1:7114" },
    },
}
