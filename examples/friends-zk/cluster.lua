-- The friends demo on ZooKeeper discovery: the same scripts, but the nodes
-- find each other through ZooKeeper instead of this file's node list (which
-- here only gives each node its own type and address).
--   ./examples/friends-zk/zookeeper.sh &        # a throw-away ZooKeeper on 127.0.0.1:2181
--   cargo run --release -- up examples/friends-zk
-- LUAHOST_ZK=host:port overrides `hosts`; LUAHOST_ZK_AUTH=user:password overrides `auth`.
-- With `auth` every znode the nodes create (the root and its parents too) is
-- readable and writable only by that digest identity; without it anyone who
-- can reach ZooKeeper could register a fake node or delete a real one.
return {
    secret = "friends-demo-secret",
    call_timeout = 5,
    scripts = { "../../scripts" },
    zookeeper = {
        hosts = "127.0.0.1:2181",
        root = "/luahost/friends",
        session_timeout = 10,
        auth = "luahost:change-me",      -- digest auth: znodes only this identity may read or write
    },
    nodes = {
        db_1   = { type = "DB",   id = 1,  addr = "127.0.0.1:7201", store = { sqlite = "friends.db" } },
        gate_1 = { type = "Gate", id = 21, addr = "127.0.0.1:7202",
                   gate = { tcp = "127.0.0.1:7310", ws = "127.0.0.1:7311" } },
        hall_1 = { type = "Hall", id = 11, addr = "127.0.0.1:7203" },
        hall_2 = { type = "Hall", id = 12, addr = "127.0.0.1:7204" },
    },
}
