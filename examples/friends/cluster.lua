-- The demo cluster: one DB, two Halls, one Gate, all on this machine.
-- `luahost up examples/friends` runs it in one process; `luahost run
-- --cluster examples/friends --node hall_1` runs one node as its own process.
-- Players log in through the Gate: `luahost bot` (see README) or a browser.
return {
    secret = "friends-demo-secret",
    call_timeout = 5,
    scripts = { "../../scripts" },
    -- this checkout's lualib, so that editing it hot-reloads under `up`
    -- (leave it out to use the lualib built into luahost)
    lualib = "../../lualib",
    nodes = {
        -- the DB node: players and friend lists live in friends.db (SQLite,
        -- in this folder); `store = { postgres = "host=... dbname=..." }`
        -- puts them in PostgreSQL (password from LUAHOST_PG_PASSWORD)
        db_1   = { type = "DB",   id = 1,  addr = "127.0.0.1:7101", store = { sqlite = "friends.db" } },
        -- the Gate: game clients connect to its tcp and ws listeners; its
        -- http listener serves the browser page in web/ (open
        -- http://127.0.0.1:7380/?player=1001), config.json and the login
        gate_1 = { type = "Gate", id = 21, addr = "127.0.0.1:7102",
                   gate = { tcp = "127.0.0.1:7300", ws = "127.0.0.1:7301",
                            http = "127.0.0.1:7380", web = "web", resume_grace = 5 } },
        hall_1 = { type = "Hall", id = 11, addr = "127.0.0.1:7103" },
        hall_2 = { type = "Hall", id = 12, addr = "127.0.0.1:7104" },
    },
}
