-- The echo side of `luahost bench`.
local Bench = Global.Bench or {}
Global.Bench = Bench

local received = 0

function Bench:hello(s, n) return s, n end
function Bench:blob(b) return b end
function Bench:note(n) received = received + n end
function Bench:count() return received end
function Bench:reset() received = 0 end

base.init("Echo")
