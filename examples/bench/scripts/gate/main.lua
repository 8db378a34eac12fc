-- The Gate of `luahost bench gate-idle` / `gate-rtt`: gate.lua's defaults
-- (each client is bound to a Hall, chosen by its account).
require "gate"
base.init("Gate")
