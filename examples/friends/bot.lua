-- Demo players for `luahost bot` (see README): each logs in at a random
-- moment in the first two seconds, asks for its friends, then waits for its
-- friends to come online (pushes: onFriendOnline) and now and then makes a
-- new friend.
function bot.run(client)
    local rid = tonumber(client.account)
    client:sleep(math.random() * 2)
    local friends = client:call("hall_getFriends")
    local online = 0
    for _, f in ipairs(friends) do
        if f.hall ~= 0 then online = online + 1 end
    end
    print(string.format("bot %d: %d friends, %d online", rid, #friends, online))
    while client:running() do
        local name, a, b = client:wait_push(1)
        if name == "onFriendOnline" then
            print(string.format("bot %d: friend %d is %s", rid, a, b and "online" or "offline"))
        elseif name == "closed" then
            return
        elseif name == nil and math.random() < 0.1 then
            local other = math.random(1001, 1020)
            if other ~= rid and client:call("hall_addFriend", other) then
                print(string.format("bot %d: made friends with %d", rid, other))
            end
        end
    end
end
