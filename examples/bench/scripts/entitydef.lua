-- Schema of the benchmark: an Echo node serving the Bench entity, and a
-- Caller node that drives it; for `bench gate-idle` / `gate-rtt`, a Gate and
-- a Hall holding one Player entity per game client, whose `echo` clients
-- call; for `bench db`, a DB node whose store holds the bench collection.
-- Same stubs and typed codec as any game.
return {
    ServerType = { Echo = 1, Caller = 2, Gate = 3, Hall = 4, DB = 5, Router = 6 },
    Struct = { BenchRec = { { "n", "int64" }, { "s", "string" } } },
    Collection = { bench = { key = "int64", value = "BenchRec" } },
    GlobalEntity = { Bench = 1 },
    Entity = {
        Bench = {
            Echo = {
                hello = { args = { { "s", "string" }, { "n", "int64" } }, results = { { "s", "string" }, { "n", "int64" } } },
                blob = { args = { { "b", "bytes" } }, results = { { "b", "bytes" } } },
                note = { args = { { "n", "int64" } } },
                count = { results = { { "n", "int64" } } },
                reset = { results = {} },
            },
        },
        Player = {
            Hall = {
                echo = { args = { { "s", "string" }, { "n", "int64" } }, results = { { "s", "string" }, { "n", "int64" } }, client = true },
            },
        },
    },
}
