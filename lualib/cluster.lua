-- The cluster as a whole, for nodes that choose when to be part of it.
-- A node of server type Olap (analytics, one-off jobs; seed 000) starts
-- without joining: it runs its script but neither accepts nor makes
-- connections to other nodes, and no other node sees it online, until the
-- script calls cluster.join(). Every other node joins at start.
local core = require "luahost.core"

local M = {}

--- Joins the cluster now (after base.init): the node listens, connects to
--- its peers (or its Routers) and goes online for them. Returns true when it
--- joined now, false when it had joined already; raises before base.init.
function M.join()
    local ok, err = core.join()
    if ok == nil then error(err, 2) end
    return ok
end

return M
