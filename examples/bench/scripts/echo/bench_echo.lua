-- The echo side's handlers (a module, so `luahost bench reload` can edit it).
local Bench = Global.Bench or {}
Global.Bench = Bench

local received = 0
local version = 0 -- `luahost bench reload` rewrites the use below

function Bench:hello(s, n) return s, n + version end
function Bench:blob(b) return b end
function Bench:note(n) received = received + n end
function Bench:count() return received end
function Bench:reset() received = 0 end

return Bench
