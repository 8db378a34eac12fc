-- A bot script for tests/bot.rs: typed calls, a send that makes the server
-- push back, and checks on what comes back.
function bot.run(client)
    local i = 0
    while client:running() do
        i = i + 1
        local s, n = client:call("echo", client.account, i)
        assert(s == client.account and n == i, "echo came back wrong")
        local p = client:call("pair", { a = i, b = "x" })
        assert(p == "x:" .. i, "pair: " .. tostring(p))
        if i % 10 == 1 then
            client:send("ping", 2)
            for k = 1, 2 do
                local name, text, m = client:wait_push(5)
                if name == nil then return end -- time up
                assert(name == "onEvent" and text == "ping" and m == k, "push: " .. tostring(name))
            end
        end
    end
end
