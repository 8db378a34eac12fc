-- The schema of the Gate tests: a Player entity on Hall nodes, with methods
-- clients may call, one they may not, and pushes.
local entitydef = {}

entitydef.ServerType = { Gate = 1, Hall = 2 }

entitydef.GlobalEntity = {}

entitydef.Struct = {
    Pair = { { "a", "int32" }, { "b", "string" } },
}

entitydef.Entity = {
    Player = {
        Hall = {
            echo = { args = { { "s", "string" }, { "n", "int32" } }, results = { { "s", "string" }, { "n", "int32" } }, client = true },
            pair = { args = { { "p", "Pair" } }, results = { { "sum", "string" } }, client = true },
            fail = { args = { { "text", "string" } }, results = {}, client = true },
            crash = { args = {}, results = {}, client = true },
            slow = { args = { { "secs", "double" } }, results = { { "done", "bool" } }, client = true },
            -- a client asks for n pushes (one-way)
            ping = { args = { { "n", "int32" } }, client = true },
            whoami = { args = {}, results = { { "account", "string" }, { "node", "string" } }, client = true },
            -- hands the client to entity eid on node sid (giveClientTo)
            handoff = { args = { { "sid", "uint32" }, { "eid", "int64" } }, results = { { "ok", "bool" } }, client = true },
            -- not for clients
            secret = { args = {}, results = { { "s", "string" } } },
        },
        Client = {
            onEvent = { args = { { "text", "string" }, { "n", "int32" } } },
        },
    },
}

return entitydef
